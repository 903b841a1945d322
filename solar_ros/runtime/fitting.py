"""Model fitting between learning iterations, ROS-free: what the model fitting node runs.

* :func:`load_training_data` turns recorded episodes (``runtime.episode_store``: the recorder's
  ``index.jsonl`` and one ``episode.npz`` per episode) into arrays aligned per control step, with a
  :class:`FitError` that names the episode and the problem for missing, corrupt or inconsistent
  files.
* :class:`JointSpaceTaskCost` is the task's own cost model (defined on the simulator's full state:
  joints plus end-effector position and velocity) as a cost on the joint state ``[q, dq]``, by the
  chain rule through the arm's forward kinematics.
* The fit methods (:data:`METHODS`) share one life cycle, driven by the ``iteration`` of each
  FitModel goal:

  - iteration 0 starts a run: :meth:`FitMethod.initialize` builds the first policy (and, for the
    image methods, an untrained representation so that latents exist from the first episode);
  - iteration k >= 1: :meth:`FitMethod.update` takes the episodes collected with the current
    policy and returns the next one.

  ``lqr_joints``: LQR-FLM on [q, dq] with :class:`JointSpaceTaskCost` (fast; proves the loop
  through the nodes). ``solar``: SOLAR's structured VAE fitted on the recorded images (iteration 1:
  the random-action pretraining episodes), then LQR-FLM on the filtered latent with the model's
  LDS as dynamics prior and its learned latent cost.

Every method saves what the next iteration needs (:meth:`FitMethod.save` / :meth:`FitMethod.load`),
so a restarted fitting node continues the run.
"""
from __future__ import annotations

import json
import math
import os
import re
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..algos.common import LQRFLMLoop, initial_policy, policy_arrays, policy_from_arrays, save_npz_atomic
from ..core.types import CostExpansion
from .atomic import atomic_file
from .episode_store import load_episode, read_index
from .policy_msg import LatentPlanner, PolicyPackage

ProgressFn = Callable[[str, float, float, int], None]
"""``progress(stage, fraction 0..1, loss (NaN if none), step)``; may raise :class:`FitCancelled`."""


class FitError(ValueError):
    """A fit that cannot run: bad episodes, wrong settings, inconsistent run state (the message says which)."""


class FitCancelled(Exception):
    """Raised from a progress callback to stop a fit early."""


def check_device(device: str) -> str:
    """The torch device the fits run on: 'cpu' or 'cuda[:N]' where such a GPU is present (ValueError otherwise)."""
    if device == "cpu":
        return device
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    import torch
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but torch sees no CUDA GPU here; use device 'cpu'")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def fit_threads(requested: int) -> int:
    """The torch threads a fit runs on: ``requested`` where > 0, else (0) every core this process may run on.
    ValueError when negative."""
    if not isinstance(requested, int) or requested < 0:
        raise ValueError(f"num_threads must be an integer >= 0 (0: every core), got {requested!r}")
    if requested:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def set_thread_niceness(niceness: int) -> int:
    """Give the calling thread (and the threads it starts from now on) the CPU niceness ``niceness``
    (-20..19; Linux keeps one per thread). A model fit at a high niceness yields the cores to the
    real-time nodes whenever both want them, and takes all that is idle. Raising it needs no privilege;
    lowering it below the current value does (PermissionError). Returns the niceness now in effect."""
    if not isinstance(niceness, int) or not -20 <= niceness <= 19:
        raise ValueError(f"niceness must be an integer in [-20, 19], got {niceness!r}")
    import threading
    tid = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, tid, niceness)
    return os.getpriority(os.PRIO_PROCESS, tid)


def no_progress(stage: str, fraction: float, loss: float, step: int) -> None:
    """A progress callback that reports nothing (the default of the fit methods)."""


# ================================================================================================
# recorded episodes -> training arrays


@dataclass
class TrainingData:
    """Recorded episodes as arrays aligned per control step (row t of every array is the same instant)."""

    episode_ids: list[str]
    """Episode ids, in the order of the rows."""
    policy_ids: list[str]
    """The policy each episode ran."""
    states: np.ndarray
    """(N, T, dx) x_t as the controller saw it (latent, [q, dq] or both)."""
    actions: np.ndarray
    """(N, T, du) u_t: mean torque commanded over step t."""
    costs: np.ndarray
    """(N, T) task cost at each step (lower is better)."""
    distances: np.ndarray | None = None
    """(N, T) task distance at each step (e.g. hand to goal, m)."""
    joint_positions: np.ndarray | None = None
    """(N, T, 7) q."""
    joint_velocities: np.ndarray | None = None
    """(N, T, 7) dq."""
    images: np.ndarray | None = None
    """(N, T, H, W, C) uint8 model input images."""
    latents: np.ndarray | None = None
    """(N, T, n) latent means published by the encoder."""
    labels: np.ndarray | None = None
    """(N, T) success labels per step (the recorder's /solar/label_success: a person's "success now")."""
    successes: np.ndarray | None = None
    """(N, T) the task's own success criterion per step (the simulator's TaskCost ``success``)."""
    root: str = ""
    """The episode directory they were read from."""

    @property
    def N(self) -> int:
        return self.states.shape[0]

    @property
    def T(self) -> int:
        return self.states.shape[1]


# npz key -> TrainingData field
_ARRAY_FIELDS = {
    "states": "states", "actions": "actions", "costs": "costs", "distances": "distances",
    "joint_positions": "joint_positions", "joint_velocities": "joint_velocities", "images": "images",
    "latent_mean": "latents", "success_labels": "labels", "successes": "successes",
}


def load_training_data(episode_dir: str | os.PathLike, episode_ids: list[str] | None = None,
                       require: tuple[str, ...] = ("states", "actions", "costs"),
                       horizon: int | None = None) -> TrainingData:
    """Load recorded episodes for a fit.

    ``episode_ids``: which episodes (None or empty: every ``complete`` episode in the index).
    ``require``: npz keys every episode must have (``images`` for the image methods). ``horizon``:
    the number of steps every episode must have (None: whatever the first one has). Raises
    :class:`FitError` for a missing directory or index entry, a missing or corrupt npz, a missing
    array, a wrong number of steps, or NaN/Inf in the numbers.
    """
    root = Path(episode_dir)
    try:
        index = read_index(root, status=None)
    except ValueError as err:
        raise FitError(str(err)) from err
    if episode_ids:
        by_id = {e["episode_id"]: e for e in index}
        missing = [i for i in episode_ids if i not in by_id]
        if missing:
            raise FitError(f"episodes {missing} are not in {root / 'index.jsonl'}")
        entries = [by_id[i] for i in episode_ids]
        unusable = [(e["episode_id"], e.get("status")) for e in entries if e.get("status") != "complete"]
        if unusable:
            raise FitError(f"episodes that did not complete cannot be fitted: {unusable}")
    else:
        entries = [e for e in index if e.get("status") == "complete"]
    if not entries:
        raise FitError(f"no complete episodes in {root}")

    columns: dict[str, np.ndarray] = {}
    optional = [k for k in _ARRAY_FIELDS if k not in require]
    present_everywhere = set(_ARRAY_FIELDS)
    loaded = []
    for entry in entries:
        try:
            arrays = load_episode(root, entry)
        except Exception as err:  # noqa: BLE001 - any unreadable file is that episode's problem
            message = str(err) if isinstance(err, ValueError) else f"cannot read its arrays: {err}"
            raise FitError(f"episode {entry.get('episode_id')!r}: {message}") from err
        lacking = [k for k in require if k not in arrays]
        if lacking:
            raise FitError(f"episode {entry['episode_id']!r} has no {lacking} array(s) "
                           f"(has {sorted(arrays)}); was every stream published while it ran?")
        steps = len(arrays["states"]) if "states" in arrays else 0
        if horizon is None:
            horizon = steps
        if steps != horizon:
            raise FitError(f"episode {entry['episode_id']!r} has {steps} steps, expected {horizon}")
        present_everywhere &= set(arrays)
        loaded.append(arrays)
    for key in list(require) + optional:
        if key not in present_everywhere:
            continue
        stack = [np.asarray(a[key]) for a in loaded]
        shapes = {s.shape for s in stack}
        if len(shapes) != 1:
            raise FitError(f"array {key!r} has different shapes across episodes: {sorted(shapes)}")
        arr = np.stack(stack)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            n, t = np.argwhere((~np.isfinite(arr.reshape(arr.shape[0], arr.shape[1], -1))).any(-1))[0]
            raise FitError(f"array {key!r} of episode {entries[n]['episode_id']!r} has NaN/Inf at step {t}")
        columns[_ARRAY_FIELDS[key]] = arr
    return TrainingData(episode_ids=[e["episode_id"] for e in entries], root=str(root.resolve()),
                        policy_ids=[str(e.get("policy_id", "")) for e in entries],
                        **{k: v.astype(np.float64) if k not in ("images",) else v for k, v in columns.items()})


# ================================================================================================
# the task cost on the joint state


class JointSpaceTaskCost:
    """The task's cost model (on the simulator's full state) as a cost on the joint state x = [q, dq].

    The full state is s(x) (joints, end-effector position and velocity), computed by the task's
    MuJoCo model (``env.set_joint_state``); its Jacobian ds/dx is taken by central differences.
    The expansion is the chain rule: l_x = J^T l_s, l_ux = l_us J, and the Gauss-Newton Hessian
    l_xx = J^T l_ss J (positive semi-definite whenever the task's is, as LQR-FLM needs).
    """

    def __init__(self, env, cost_model, eps: float = 1e-6) -> None:
        """``env``: a MuJoCo task (after ``reset``) with ``set_joint_state``; ``cost_model``: its cost
        on the full state (``env.cost_model(goal)``); ``eps``: finite-difference step (rad, rad/s)."""
        if not hasattr(env, "set_joint_state"):
            raise ValueError(f"task {type(env).__name__} has no joint state (set_joint_state); "
                             "lqr_joints needs a MuJoCo arm task")
        self.env = env
        self.cost_model = cost_model
        self.eps = float(eps)
        self.n_joints = int(env.action_dim)  # torque-actuated arms: one motor per joint
        self.dx = 2 * self.n_joints

    def full_state(self, x: np.ndarray) -> np.ndarray:
        """Simulator state s(x) for one joint state x = [q, dq]."""
        n = self.n_joints
        return self.env.set_joint_state(x[:n], x[n:])

    def full_states(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """S (T, ds) and the Jacobians dS/dX (T, ds, dx) along a trajectory X (T, dx)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.dx:
            raise ValueError(f"joint states must have shape (T, {self.dx}), got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("joint states contain NaN or Inf")
        T = X.shape[0]
        S = np.stack([self.full_state(x) for x in X])
        J = np.empty((T, S.shape[1], self.dx))
        for i in range(self.dx):
            d = np.zeros(self.dx)
            d[i] = self.eps
            plus = np.stack([self.full_state(x + d) for x in X])
            minus = np.stack([self.full_state(x - d) for x in X])
            J[:, :, i] = (plus - minus) / (2 * self.eps)
        return S, J

    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        """Cost and derivatives along one trajectory X (T, 2 n_joints), U (T, du)."""
        S, J = self.full_states(X)
        e = self.cost_model.eval(S, np.asarray(U, dtype=np.float64))
        return CostExpansion(
            l=e.l,
            lx=np.einsum("ts,tsx->tx", e.lx, J),
            lu=e.lu,
            lxx=np.einsum("tsx,tsr,try->txy", J, e.lxx, J),
            luu=e.luu,
            lux=np.einsum("tus,tsx->tux", e.lux, J),
        )


def make_task(task: str, goal, image_obs: bool = False, **kwargs):
    """The simulated task reset to ``goal`` (FitError for an unknown task or an unreachable goal)."""
    from .. import envs  # imports MuJoCo

    try:
        env = envs.make(task, image_obs=image_obs, **kwargs)
        env.reset(seed=0, options={"goal": list(goal)} if goal is not None and len(goal) else None)
    except (ValueError, TypeError) as err:
        raise FitError(f"cannot build task {task!r} with goal {goal}: {err}") from err
    return env


# ================================================================================================
# fit methods


@dataclass
class FitOutput:
    """What one initialize/update returns to the node."""

    policy: PolicyPackage
    """The new policy (published on /solar/policy)."""
    model_path: str = ""
    """Checkpoint of the representation the policy's latents come from ('' for joint-state methods)."""
    new_model: bool = False
    """Whether ``model_path`` is a model the encoder has not been told about yet."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Diagnostics (KL, eta, losses, ...) for the action result and the log."""


@dataclass
class RunSettings:
    """What every method needs to know about the run (from the node's parameters and the goal's config_yaml)."""

    task: str = "sawyer_reach"
    """Simulated task (the cost model, horizon, action scale)."""
    goal: list[float] = field(default_factory=list)
    """The run's fixed goal (empty: the task's default draw for seed 0)."""
    horizon: int = 0
    """Policy horizon T (0: the task's)."""
    dt: float = 0.0
    """Seconds per policy step (0: the task's)."""
    seed: int = 0
    """Seed of the initial model weights and fits."""


@dataclass
class LQRJointsConfig:
    """Settings of the ``lqr_joints`` method (LQR-FLM on the joint state)."""

    init_noise: float = 1.0
    """Initial policy noise std, in units of the task's ``action_scale``."""
    kl_step: float = 1.0
    """Base KL bound per time step of the LQR-FLM update."""
    prior_strength: float = 1.0
    """Pseudo-count of the global linear dynamics prior."""
    adapt_step: bool = True
    """Adapt the KL step from predicted vs actual improvement."""
    dynamics_prior: str = "global"
    """Prior of the per-step dynamics fits: 'global' (one linear model of every rollout so far; the
    gravity-compensated arm's small motions are near linear, and it is fast) or 'gmm' (a mixture over the
    recent rollouts, Guided Policy Search's choice for strongly nonlinear motions; seconds per fit)."""

    def __post_init__(self) -> None:
        for name in ("init_noise", "kl_step", "prior_strength"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"lqr_joints {name} must be a positive number, got {value!r}")
        if self.dynamics_prior not in ("global", "gmm"):
            raise ValueError(f"lqr_joints dynamics_prior must be 'global' or 'gmm', got {self.dynamics_prior!r}")


def apply_config_overrides(config, overrides: dict[str, Any], what: str):
    """``config`` with the fields in ``overrides`` replaced (FitError naming ``what`` for unknown keys)."""
    names = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise FitError(f"unknown {what} setting(s) {unknown}; known: {sorted(names)}")
    try:
        return replace(config, **overrides)
    except (TypeError, ValueError) as err:
        raise FitError(f"bad {what} setting: {err}") from err


def new_id(prefix: str, iteration: int) -> str:
    """A fresh policy or model id: ``<prefix>-it<iteration>-<8 random hex digits>``."""
    return f"{prefix}-it{iteration:03d}-{uuid.uuid4().hex[:8]}"


class FitMethod:
    """Interface of a fit method (see the module docstring for the life cycle)."""

    name: str = ""
    state_source: str = ""
    STATE_FILE: str = ""
    required_arrays: tuple[str, ...] = ("states", "actions", "costs")

    def __init__(self, settings: RunSettings, overrides: dict[str, Any], out_dir: Path, device: str = "cpu") -> None:
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.device = device
        self.iteration = -1
        self.policy_id = ""
        """Id of the current policy (the one whose episodes the next update expects)."""

    @property
    def horizon(self) -> int:
        raise NotImplementedError

    def initialize(self, progress: ProgressFn = no_progress) -> FitOutput:
        raise NotImplementedError

    def update(self, data: TrainingData, iteration: int, progress: ProgressFn = no_progress,
               final: bool = False) -> FitOutput:
        """Fit on ``data`` (the episodes of the current policy) and return the next policy. ``final``: the
        trainer's last iteration, whose policy is evaluated and never rolled out for another update (a
        method may then answer with another policy than its update, e.g. SOLAR's ``final_policy``)."""
        raise NotImplementedError

    def check_on_policy(self, data: TrainingData) -> None:
        """Every episode must have run the current policy (LQR-FLM updates the policy that collected the data)."""
        off = sorted({p for p in data.policy_ids if p != self.policy_id})
        if off:
            raise FitError(f"episodes ran policies {off}, but the current policy is {self.policy_id!r}: "
                           "pass the episodes collected since the last update")

    def save(self) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, settings: RunSettings, overrides: dict[str, Any], out_dir: Path, device: str = "cpu") -> "FitMethod":
        raise NotImplementedError

    @classmethod
    def _read_saved_state(cls, out_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays and the metadata of the run saved in ``out_dir`` by :meth:`save`, or a clear FitError."""
        path = Path(out_dir) / cls.STATE_FILE
        if not path.is_file():
            raise FitError(f"no saved {cls.name} run in {out_dir}: start one with iteration 0")
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            return arrays, json.loads(str(arrays["meta"]))
        except (OSError, ValueError, KeyError) as err:
            raise FitError(f"cannot read the saved {cls.name} run {path}: {err}") from err


def save_policy(path: Path, package: PolicyPackage) -> Path:
    """The policy and its metadata as one npz (atomic), for offline use and the action result."""
    meta = {"policy_id": package.policy_id, "dt": package.dt, "state_source": package.state_source,
            "iteration": package.iteration, "model_id": package.model_id, "noise_smoothing": package.noise_smoothing,
            "wide_start": package.wide_start}
    planner = {} if package.planner is None else package.planner.arrays()
    with atomic_file(path) as f:
        np.savez(f, **policy_arrays("policy", package.policy), **planner, meta=np.array(json.dumps(meta)))
    return path


def load_policy(path: Path) -> PolicyPackage:
    """Inverse of :func:`save_policy`."""
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        policy = policy_from_arrays("policy", f)
        planner = LatentPlanner.from_arrays(f)
    return PolicyPackage(policy=policy, planner=planner, **meta)


class LQRJointsMethod(FitMethod):
    """LQR-FLM on the joint state [q, dq] with the task's cost through forward kinematics."""

    name = "lqr_joints"
    state_source = "joints"
    STATE_FILE = "lqr_joints_state.npz"

    def __init__(self, settings: RunSettings, overrides: dict[str, Any], out_dir: Path, device: str = "cpu") -> None:
        super().__init__(settings, overrides, out_dir, device)
        self.config = apply_config_overrides(LQRJointsConfig(), overrides, "lqr_joints")
        self.env = make_task(settings.task, settings.goal)
        self.cost = JointSpaceTaskCost(self.env, self.env.cost_model())
        self.loop = None
        self.dt = settings.dt or float(self.env.dt)

    @property
    def horizon(self) -> int:
        return self.settings.horizon or int(self.env.horizon)

    def _package(self, iteration: int) -> PolicyPackage:
        self.policy_id = new_id(self.name, iteration)
        return PolicyPackage(self.loop.policy, self.policy_id, self.dt, self.state_source, iteration)

    def initialize(self, progress: ProgressFn = no_progress) -> FitOutput:
        progress("policy", 0.5, math.nan, 0)
        cfg = self.config
        du = self.env.action_dim
        policy = initial_policy(self.horizon, self.cost.dx, du, cfg.init_noise * self.env.action_scale)
        self.loop = LQRFLMLoop(policy, self.cost, kl_step=cfg.kl_step, prior_strength=cfg.prior_strength,
                               adapt_step=cfg.adapt_step, prior=cfg.dynamics_prior, prior_seed=self.settings.seed)
        self.iteration = 0
        return FitOutput(self._package(0), metrics={"state_dim": float(self.cost.dx)})

    def update(self, data: TrainingData, iteration: int, progress: ProgressFn = no_progress,
               final: bool = False) -> FitOutput:
        if self.loop is None:
            raise FitError("no run in progress: start one with iteration 0")
        self.check_on_policy(data)
        if data.states.shape[2] != self.cost.dx or data.actions.shape[2] != self.env.action_dim:
            raise FitError(f"episodes have state/action dims {data.states.shape[2]}/{data.actions.shape[2]}, "
                           f"lqr_joints needs [q, dq] = {self.cost.dx} and {self.env.action_dim} torques")
        if data.T != self.horizon:
            raise FitError(f"episodes have {data.T} steps, the policy's horizon is {self.horizon}")
        progress("dynamics", 0.2, math.nan, 0)
        try:
            info = self.loop.iterate(data.states, data.actions)
        except (ValueError, np.linalg.LinAlgError) as err:
            raise FitError(f"LQR-FLM update failed: {err}") from err
        progress("policy", 0.9, math.nan, 1)
        self.iteration = iteration
        metrics = {k: float(v) for k, v in info.items()}
        metrics["episodes"] = float(data.N)
        metrics["mean_episode_cost"] = float(data.costs.sum(1).mean())
        return FitOutput(self._package(iteration), metrics=metrics)

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"method": self.name, "iteration": self.iteration, "policy_id": self.policy_id,
                "settings": asdict(self.settings), "config": asdict(self.config)}
        save_npz_atomic(self.out_dir / self.STATE_FILE,
                        {**self.loop.state_arrays(), "meta": np.array(json.dumps(meta))})

    @classmethod
    def load(cls, settings: RunSettings, overrides: dict[str, Any], out_dir: Path,
             device: str = "cpu") -> "LQRJointsMethod":
        arrays, meta = cls._read_saved_state(out_dir)
        method = cls(settings, overrides, out_dir, device)
        try:
            method.loop = LQRFLMLoop.from_state_arrays(arrays, method.cost)
        except (ValueError, KeyError) as err:
            raise FitError(f"cannot read the saved run in {out_dir}: {err}") from err
        if (meta["settings"]["task"] != settings.task
                or not np.allclose(meta["settings"]["goal"] or [0], settings.goal or [0])):
            raise FitError(f"the saved run in {out_dir} is for task {meta['settings']['task']} goal "
                           f"{meta['settings']['goal']}, not {settings.task} goal {settings.goal}")
        method.iteration, method.policy_id = int(meta["iteration"]), str(meta["policy_id"])
        return method


METHODS: dict[str, type[FitMethod]] = {"lqr_joints": LQRJointsMethod}
"""Method name (FitModel ``method``) -> class. ``solar`` is added by :mod:`.solar_fit` when importable."""
