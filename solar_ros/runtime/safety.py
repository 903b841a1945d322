"""Input checks and torque safety for the controller: joint-name mapping, stamp gates (stale,
out-of-order, future stamps), torque clipping, and the state assembler that builds the policy's
state vector from the latest latent and joint state.

All times are integer nanoseconds of the controller's clock (ROS time; simulated time when
``use_sim_time`` is set), so the same code runs on the robot and in simulation.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SAWYER_JOINT_NAMES: tuple[str, ...] = tuple(f"right_j{i}" for i in range(7))
"""The arm's joints in command order (shoulder to wrist)."""


def _sawyer_model_module():
    """:mod:`solar_ros.envs.sawyer_model`, the loader of ``config/sawyer_parameters.yaml``.

    When the ``solar_ros.envs`` package is not imported yet, a private copy is loaded from the
    module's file: the package's ``__init__`` imports MuJoCo, which the controller does not need and
    the Intera relay's ROS 1 machine does not have; the module itself needs only numpy and yaml.
    """
    module = sys.modules.get("solar_ros.envs.sawyer_model")
    if module is not None:
        return module
    name = "solar_ros.runtime._sawyer_model_file"
    module = sys.modules.get(name)
    if module is None:
        path = Path(__file__).resolve().parents[1] / "envs" / "sawyer_model.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module


def arm_torque_limits(params_path: str | Path | None = None) -> tuple[float, ...]:
    """The Sawyer's joint torque limits (N m, ``SAWYER_JOINT_NAMES`` order): the joints' ``effort``
    limits in ``config/sawyer_parameters.yaml`` (or ``params_path``), read by the arm model's loader.

    The one source of the limits: the controller's default ``torque_limits``, the simulated arm's
    actuators and the Intera relay's clipping all come from it.
    """
    model = _sawyer_model_module()
    effort = model.joint_limits(model.load_sawyer_params(params_path))["effort"]
    return tuple(float(v) for v in effort)


SAWYER_TORQUE_LIMITS: tuple[float, ...] = arm_torque_limits()
"""Sawyer joint torque limits, N m, in ``SAWYER_JOINT_NAMES`` order (from ``sawyer_parameters.yaml``)."""

STATE_SOURCES: tuple[str, ...] = ("latent", "joints", "latent+joints")
"""What the policy's state x is: the latent mean, [q, dq] of the arm, or [latent, q, dq]."""


class JointNameError(ValueError):
    """A JointState whose names do not include every expected joint (or are inconsistent)."""


class JointStateMapper:
    """Picks the expected joints, in the expected order, out of JointState name/value lists.

    Extra joints (a head pan, a gripper) are ignored; a missing joint or duplicate names raise
    :class:`JointNameError`. The index map is cached for the last name list, as drivers send the
    same names every time.
    """

    def __init__(self, joint_names: Sequence[str]) -> None:
        if len(joint_names) == 0 or len(set(joint_names)) != len(joint_names):
            raise ValueError(f"joint names must be non-empty and unique, got {list(joint_names)}")
        self.joint_names = tuple(joint_names)
        self._cached_names: tuple[str, ...] | None = None
        self._index = np.zeros(len(joint_names), dtype=np.intp)

    def index(self, names: Sequence[str]) -> np.ndarray:
        """Positions of the expected joints in ``names`` (cached for repeated name lists)."""
        names = tuple(names)
        if names != self._cached_names:
            lookup = {n: i for i, n in enumerate(names)}
            if len(lookup) != len(names):
                raise JointNameError(f"JointState has duplicate joint names: {list(names)}")
            missing = [n for n in self.joint_names if n not in lookup]
            if missing:
                raise JointNameError(
                    f"JointState is missing joints {missing} (got {list(names)}, expected {list(self.joint_names)})")
            self._index[:] = [lookup[n] for n in self.joint_names]
            self._cached_names = names
        return self._index

    def extract(self, names: Sequence[str], values, out: np.ndarray, what: str = "position") -> None:
        """Write the expected joints' entries of ``values`` (aligned with ``names``) into ``out``."""
        if len(values) != len(names):
            raise JointNameError(f"JointState has {len(names)} names but {len(values)} {what} values")
        idx = self.index(names)
        np.take(np.asarray(values, dtype=np.float64), idx, out=out)


@dataclass
class StampGate:
    """Accepts a stream's messages only if their stamps move forward and are plausible.

    Rejects zero stamps (unstamped data), stamps older than the last accepted one (out of order:
    a late message must not overwrite a newer state) and stamps more than ``future_tolerance_ns``
    ahead of the clock (a clock mismatch between machines, or sim vs wall time).

    A clock that went backwards - the last accepted stamp is now more than ``future_tolerance_ns``
    ahead of it, which no accepted stamp can be otherwise - starts a new timeline: a restarted
    simulator publishes /clock and stamps from its start time again. The gate then forgets the
    old stamps (:attr:`clock_resets` counts this), instead of refusing the new timeline for good.
    """

    future_tolerance_ns: int = 500_000_000
    last_ns: int = 0
    """Stamp of the last accepted message (0: none yet)."""
    clock_resets: int = 0
    """Times the clock was found to have gone backwards (a new timeline; see the class docstring)."""

    def check(self, stamp_ns: int, now_ns: int) -> str | None:
        """None if the stamp is acceptable (and records it), else the reason it is not."""
        if stamp_ns <= 0:
            return "message has no stamp (header.stamp is zero)"
        if self.last_ns - now_ns > self.future_tolerance_ns:
            self.last_ns = 0
            self.clock_resets += 1
        if stamp_ns < self.last_ns:
            return (f"out-of-order stamp: {stamp_ns * 1e-9:.6f} s is older than the last accepted "
                    f"{self.last_ns * 1e-9:.6f} s")
        if stamp_ns - now_ns > self.future_tolerance_ns:
            return (f"stamp {stamp_ns * 1e-9:.6f} s is {(stamp_ns - now_ns) * 1e-9:.3f} s ahead of the clock "
                    "(clock mismatch, or use_sim_time differs between nodes?)")
        self.last_ns = stamp_ns
        return None

    def reset(self) -> None:
        self.last_ns = 0


def clip_torques(u: np.ndarray, limits: np.ndarray) -> bool:
    """Clip ``u`` in place to [-limits, limits]; True if any entry was outside.

    A NaN entry (which finite inputs and a validated policy never produce) becomes 0 and counts as
    clipped: a torque command must never carry NaN.
    """
    inside = bool(np.all(np.abs(u) <= limits))  # False for NaN too
    if not inside and not np.all(np.isfinite(u)):
        u[~np.isfinite(u)] = 0.0
    np.clip(u, -limits, limits, out=u)
    return not inside


def validate_torque_limits(limits: Sequence[float], n_joints: int) -> np.ndarray:
    """Torque limits as a float array; positive, finite, one per joint (``ValueError`` otherwise)."""
    arr = np.asarray(limits, dtype=np.float64)
    if arr.shape != (n_joints,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"torque limits must be {n_joints} positive finite numbers, got {list(limits)}")
    return arr


class StateAssembler:
    """Keeps the latest latent and joint state and assembles the policy state x on demand.

    ``update_latent``/``update_joints`` validate a message (stamp order, finiteness, joint names) and
    return None or the reason it was rejected. A rejected message also invalidates that input (the
    controller must not keep acting on the state before a NaN), until the next good message.
    ``assemble`` fills x for ``state_source`` and returns (ok, reason, source_stamp_ns).
    """

    def __init__(self, state_source: str, joint_names: Sequence[str] = SAWYER_JOINT_NAMES,
                 max_latent_age: float = 0.25, max_joint_age: float = 0.05,
                 future_tolerance: float = 0.5) -> None:
        if state_source not in STATE_SOURCES:
            raise ValueError(f"state_source must be one of {STATE_SOURCES}, got {state_source!r}")
        for name, v in (("max_latent_age", max_latent_age), ("max_joint_age", max_joint_age)):
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {v}")
        self.state_source = state_source
        self.uses_latent = "latent" in state_source
        self.uses_joints = "joints" in state_source
        self.mapper = JointStateMapper(joint_names)
        nj = len(joint_names)
        self.max_latent_age_ns = int(max_latent_age * 1e9)
        self.max_joint_age_ns = int(max_joint_age * 1e9)
        tol = int(future_tolerance * 1e9)
        self.latent_gate = StampGate(tol)
        self.joint_gate = StampGate(tol)
        self.latent = np.zeros(0)
        self.latent_model_id = ""
        self.q = np.zeros(nj)
        self.dq = np.zeros(nj)
        self._q_new = np.zeros(nj)
        self._dq_new = np.zeros(nj)
        self.latent_error: str | None = "no latent received yet"
        self.joint_error: str | None = "no joint state received yet"

    @property
    def latent_dim(self) -> int:
        return self.latent.size

    def state_dim(self) -> int | None:
        """Dimension of x for ``state_source`` (None while the latent dimension is unknown)."""
        n = 0
        if self.uses_latent:
            if self.latent_error == "no latent received yet":
                return None
            n += self.latent.size
        if self.uses_joints:
            n += 2 * self.q.size
        return n

    def update_latent(self, stamp_ns: int, now_ns: int, mean, model_id: str = "", dim: int | None = None) -> str | None:
        mean = np.asarray(mean, dtype=np.float64)
        if dim is not None and dim != mean.size:
            return self._reject_latent(f"latent dim field says {dim} but mean has {mean.size} entries")
        if mean.ndim != 1 or mean.size == 0:
            return self._reject_latent(f"latent mean must be a non-empty vector, got shape {mean.shape}")
        if not np.all(np.isfinite(mean)):
            return self._reject_latent("latent mean contains NaN or Inf")
        reason = self.latent_gate.check(stamp_ns, now_ns)
        if reason is not None:
            # An out-of-order message is dropped but does not invalidate the newer state we hold.
            return reason
        if mean.size != self.latent.size:
            self.latent = np.zeros(mean.size)
        self.latent[:] = mean
        self.latent_model_id = model_id
        self.latent_error = None
        return None

    def _reject_latent(self, reason: str) -> str:
        self.latent_error = reason
        return reason

    def update_joints(self, stamp_ns: int, now_ns: int, names, position, velocity) -> str | None:
        try:
            self.mapper.extract(names, position, self._q_new, "position")
            if len(velocity) == 0:
                raise JointNameError("JointState has no velocities")
            self.mapper.extract(names, velocity, self._dq_new, "velocity")
        except JointNameError as err:
            self.joint_error = str(err)
            return self.joint_error
        if not (np.all(np.isfinite(self._q_new)) and np.all(np.isfinite(self._dq_new))):
            self.joint_error = "joint state contains NaN or Inf"
            return self.joint_error
        reason = self.joint_gate.check(stamp_ns, now_ns)
        if reason is not None:
            return reason
        self.q[:] = self._q_new
        self.dq[:] = self._dq_new
        self.joint_error = None
        return None

    def assemble(self, now_ns: int, out: np.ndarray, model_id: str = "") -> tuple[bool, str, int]:
        """Fill ``out`` with x; returns (ok, reason if not ok, stamp of the data x came from).

        ``model_id``: the representation model the policy expects; a latent from another model is
        rejected (its coordinates mean something else).
        """
        if self.uses_latent and self.latent_error is not None:
            return False, f"latent: {self.latent_error}", 0
        if self.uses_joints and self.joint_error is not None:
            return False, f"joints: {self.joint_error}", 0
        expected = (self.latent.size if self.uses_latent else 0) + (2 * self.q.size if self.uses_joints else 0)
        if expected != out.size:
            return False, f"state has {expected} entries but the policy expects {out.size}", 0
        source_ns = 0
        i = 0
        if self.uses_latent:
            age = now_ns - self.latent_gate.last_ns
            if age > self.max_latent_age_ns:
                return False, (f"latent is stale: {age * 1e-9:.3f} s old "
                               f"(limit {self.max_latent_age_ns * 1e-9:.3f} s)"), 0
            if model_id and self.latent_model_id != model_id:
                return False, f"latent comes from model {self.latent_model_id!r} but the policy expects {model_id!r}", 0
            n = self.latent.size
            out[:n] = self.latent
            i = n
            source_ns = self.latent_gate.last_ns
        if self.uses_joints:
            age = now_ns - self.joint_gate.last_ns
            if age > self.max_joint_age_ns:
                return False, (f"joint state is stale: {age * 1e-9:.3f} s old "
                               f"(limit {self.max_joint_age_ns * 1e-9:.3f} s)"), 0
            nj = self.q.size
            out[i:i + nj] = self.q
            out[i + nj:i + 2 * nj] = self.dq
            if not self.uses_latent:
                source_ns = self.joint_gate.last_ns
        return True, "", source_ns
