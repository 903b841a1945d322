"""LinearGaussianPolicy <-> solar_ros/LinearGaussianPolicy message fields, with validation.

ROS-free: :func:`policy_to_msg` fills any object with the message's attributes (the generated
message class in the nodes, a ``SimpleNamespace`` in tests) and :func:`policy_from_msg` reads one.
Matrices are row-major and stacked over time: gain K is T*du*dx, offset k is T*du, covariance is
T*du*du (see msg/LinearGaussianPolicy.msg). A package may carry a planner (:class:`LatentPlanner`, the MPC
ablation's receding-horizon CEM on a learned latent model): its model, cost and settings travel in the
message's ``planner`` fields.
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.lqr_flm import QuadraticCost
from ..core.mpc import CEMController, CEMSettings, LinearModel
from ..core.types import LinearGaussianPolicy
from .safety import STATE_SOURCES

PLANNERS = ("", "cem")
"""The message's ``planner`` values: none, or receding-horizon CEM (:class:`LatentPlanner`)."""


@dataclass
class LatentPlanner:
    """Receding-horizon CEM on a linear latent model and a per-step quadratic latent cost (SOLAR's MPC ablation,
    :mod:`solar_ros.core.mpc`): the controller plans from each time index's state and adds the plan's first
    action to the policy's command."""

    model: LinearModel
    """Mean latent dynamics x' = A x + B u + c."""
    cost: QuadraticCost
    """The cost of each step, over z = [x; u] (T steps: the policy's horizon)."""
    settings: CEMSettings
    """Horizon, samples, elites, iterations and stds of the planner."""
    action_scale: np.ndarray
    """(du,) the units of the settings' stds."""

    def __post_init__(self) -> None:
        self.action_scale = np.asarray(self.action_scale, dtype=np.float64).ravel()
        dx, du = self.model.dx, self.model.du
        if self.cost.dxu != dx + du:
            raise ValueError(f"planner cost is over {self.cost.dxu} numbers, the model's [x; u] has {dx + du}")
        if self.action_scale.shape != (du,) or not np.all(np.isfinite(self.action_scale)) \
                or np.any(self.action_scale <= 0):
            raise ValueError(f"planner action_scale must be {du} positive numbers, got {self.action_scale}")

    def arrays(self, prefix: str = "planner") -> dict[str, np.ndarray]:
        """The planner as named arrays (for an npz; :meth:`from_arrays` reads them back)."""
        st = self.settings
        return {f"{prefix}_A": self.model.A, f"{prefix}_B": self.model.B, f"{prefix}_c": self.model.c,
                f"{prefix}_Cm": self.cost.Cm, f"{prefix}_cv": self.cost.cv, f"{prefix}_cc": self.cost.cc,
                f"{prefix}_action_scale": self.action_scale,
                f"{prefix}_settings": np.array([st.horizon, st.samples, st.elites, st.iterations, st.init_std,
                                                st.min_std], dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "planner") -> "LatentPlanner | None":
        """Inverse of :meth:`arrays`; None where ``arrays`` holds no planner."""
        if f"{prefix}_A" not in arrays:
            return None
        h, n, e, i, init_std, min_std = (float(v) for v in arrays[f"{prefix}_settings"])
        return cls(LinearModel(arrays[f"{prefix}_A"], arrays[f"{prefix}_B"], arrays[f"{prefix}_c"]),
                   QuadraticCost(arrays[f"{prefix}_Cm"], arrays[f"{prefix}_cv"], arrays[f"{prefix}_cc"]),
                   CEMSettings(horizon=int(h), samples=int(n), elites=int(e), iterations=int(i), init_std=init_std,
                               min_std=min_std),
                   arrays[f"{prefix}_action_scale"])

    def controller(self, low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> CEMController:
        """A fresh CEM controller of one episode, within the action limits [low, high]."""
        return CEMController(self.model, self.cost, self.settings, self.action_scale, low, high, rng)


@dataclass
class PolicyPackage:
    """A policy plus what the controller needs to run it."""

    policy: LinearGaussianPolicy
    """u_t = K_t x_t + k_t + N(0, cov_t), t = 0..T-1."""
    policy_id: str
    """Unique per policy; every update gets a new one."""
    dt: float
    """Seconds per time index."""
    state_source: str
    """What x is: "latent", "joints" or "latent+joints"."""
    iteration: int = 0
    """Learning iteration that produced it."""
    model_id: str = ""
    """Representation model whose latents the policy expects (empty: any)."""
    noise_smoothing: float = 0.0
    """0: white exploration noise (LQR-FLM's policies); > 0: each episode's standard-normal draws are
    filtered over time by a Gaussian of this std in time indices and rescaled to unit std
    (:func:`solar_ros.core.noise.standard_normal_sequence`; SOLAR's smoothed pretraining noise)."""
    wide_start: bool = False
    """Episodes of this policy start from the task's wide start distribution (a simulator reset option;
    SOLAR's pretraining with ``pretrain_wide_start``)."""
    planner: LatentPlanner | None = None
    """None: the policy alone. Given: at each time index the plan's first action is added to the policy's
    command (the MPC ablation; the policy's gain and offset are then zero and its covariance is the
    exploration noise)."""

    def __post_init__(self) -> None:
        if not self.policy_id:
            raise ValueError("policy_id must be a non-empty string")
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"policy dt must be a positive number of seconds, got {self.dt}")
        if self.state_source not in STATE_SOURCES:
            raise ValueError(f"policy state_source must be one of {STATE_SOURCES}, got {self.state_source!r}")
        if self.iteration < 0:
            raise ValueError(f"policy iteration must be >= 0, got {self.iteration}")
        if not (np.isfinite(self.noise_smoothing) and self.noise_smoothing >= 0):
            raise ValueError(f"policy noise_smoothing must be a finite number >= 0, got {self.noise_smoothing}")
        if self.planner is not None:
            p, m = self.policy, self.planner.model
            if (m.dx, m.du, self.planner.cost.T) != (p.dx, p.du, p.T):
                raise ValueError(f"planner has dx={m.dx}, du={m.du}, T={self.planner.cost.T}; the policy has "
                                 f"dx={p.dx}, du={p.du}, T={p.T}")


def _as_f64_array(a: np.ndarray) -> array.array:
    out = array.array("d")
    out.frombytes(np.ascontiguousarray(a, dtype="<f8").tobytes())
    return out


def policy_to_msg(package: PolicyPackage, msg: Any) -> Any:
    """Fill ``msg`` (a LinearGaussianPolicy message or any object with its fields) and return it."""
    p = package.policy
    msg.policy_id = package.policy_id
    msg.iteration = int(package.iteration)
    msg.horizon = p.T
    msg.state_dim = p.dx
    msg.action_dim = p.du
    msg.dt = float(package.dt)
    msg.state_source = package.state_source
    msg.model_id = package.model_id
    msg.gain = _as_f64_array(p.K)
    msg.offset = _as_f64_array(p.k)
    msg.covariance = _as_f64_array(p.cov)
    msg.noise_smoothing = float(package.noise_smoothing)
    msg.wide_start = bool(package.wide_start)
    planner = package.planner
    msg.planner = "" if planner is None else "cem"
    empty = array.array("d")
    if planner is None:
        msg.dynamics = msg.cost_matrix = msg.cost_vector = msg.cost_constant = msg.action_scale = empty
        msg.plan_horizon = msg.plan_samples = msg.plan_elites = msg.plan_iterations = 0
        msg.plan_init_std = msg.plan_min_std = 0.0
        return msg
    m, c, st = planner.model, planner.cost, planner.settings
    blocks = [a.reshape(m.steps, -1) for a in (m.A, m.B, m.c)]
    msg.dynamics = _as_f64_array(np.concatenate(blocks, axis=1))  # one [A, B, c] block per step, row-major
    msg.cost_matrix, msg.cost_vector, msg.cost_constant = (_as_f64_array(a) for a in (c.Cm, c.cv, c.cc))
    msg.action_scale = _as_f64_array(planner.action_scale)
    msg.plan_horizon, msg.plan_samples = int(st.horizon), int(st.samples)
    msg.plan_elites, msg.plan_iterations = int(st.elites), int(st.iterations)
    msg.plan_init_std, msg.plan_min_std = float(st.init_std), float(st.min_std)
    return msg


def _field(msg: Any, name: str, size: int, what: str) -> np.ndarray:
    values = np.asarray(getattr(msg, name), dtype=np.float64).ravel()
    if values.size != size:
        raise ValueError(f"policy message field {name!r} has {values.size} entries, expected {what} = {size}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"policy message field {name!r} contains NaN or Inf")
    return values


def policy_from_msg(msg: Any) -> PolicyPackage:
    """Decode and validate a policy message; ``ValueError`` says what is malformed."""
    T, dx, du = int(msg.horizon), int(msg.state_dim), int(msg.action_dim)
    if T <= 0 or dx <= 0 or du <= 0:
        raise ValueError(f"policy message needs horizon, state_dim, action_dim > 0, got T={T}, dx={dx}, du={du}")
    K = _field(msg, "gain", T * du * dx, "horizon*action_dim*state_dim").reshape(T, du, dx)
    k = _field(msg, "offset", T * du, "horizon*action_dim").reshape(T, du)
    cov = _field(msg, "covariance", T * du * du, "horizon*action_dim*action_dim").reshape(T, du, du)
    if not np.allclose(cov, np.swapaxes(cov, 1, 2), rtol=1e-6, atol=1e-9):
        raise ValueError("policy covariance is not symmetric at every time step")
    policy = LinearGaussianPolicy(K, k, cov)  # checks positive definiteness
    return PolicyPackage(policy=policy, policy_id=str(msg.policy_id), dt=float(msg.dt),
                         state_source=str(msg.state_source), iteration=int(msg.iteration),
                         model_id=str(getattr(msg, "model_id", "")),
                         noise_smoothing=float(getattr(msg, "noise_smoothing", 0.0)),
                         wide_start=bool(getattr(msg, "wide_start", False)), planner=_planner_from_msg(msg, T, dx, du))


def _planner_from_msg(msg: Any, T: int, dx: int, du: int) -> LatentPlanner | None:
    """The message's planner (None where ``planner`` is empty)."""
    kind = str(getattr(msg, "planner", ""))
    if kind not in PLANNERS:
        raise ValueError(f"policy message planner must be one of {PLANNERS}, got {kind!r}")
    if not kind:
        return None
    z = dx + du
    block = dx * (z + 1)
    n = len(msg.dynamics)
    if n == 0 or n % block:
        raise ValueError(f"policy message field 'dynamics' has {n} entries, expected a positive multiple of "
                         f"state_dim*(state_dim+action_dim+1) = {block} (one [A, B, c] block per step)")
    dyn = _field(msg, "dynamics", n, "").reshape(n // block, block)
    A, B, c = dyn[:, :dx * dx].reshape(-1, dx, dx), dyn[:, dx * dx:dx * z].reshape(-1, dx, du), dyn[:, dx * z:]
    model = LinearModel(A[0], B[0], c[0]) if len(dyn) == 1 else LinearModel(A, B, c)
    cost = QuadraticCost(_field(msg, "cost_matrix", T * z * z, "horizon*(state_dim+action_dim)^2").reshape(T, z, z),
                         _field(msg, "cost_vector", T * z, "horizon*(state_dim+action_dim)").reshape(T, z),
                         _field(msg, "cost_constant", T, "horizon"))
    settings = CEMSettings(horizon=int(msg.plan_horizon), samples=int(msg.plan_samples), elites=int(msg.plan_elites),
                           iterations=int(msg.plan_iterations), init_std=float(msg.plan_init_std),
                           min_std=float(msg.plan_min_std))
    return LatentPlanner(model, cost, settings, _field(msg, "action_scale", du, "action_dim"))
