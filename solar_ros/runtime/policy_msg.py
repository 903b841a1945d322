"""LinearGaussianPolicy <-> solar_ros/LinearGaussianPolicy message fields, with validation.

ROS-free: :func:`policy_to_msg` fills any object with the message's attributes (the generated
message class in the nodes, a ``SimpleNamespace`` in tests) and :func:`policy_from_msg` reads one.
Matrices are row-major and stacked over time: gain K is T*du*dx, offset k is T*du, covariance is
T*du*du (see msg/LinearGaussianPolicy.msg).
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.types import LinearGaussianPolicy
from .safety import STATE_SOURCES


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
                         wide_start=bool(getattr(msg, "wide_start", False)))
