"""The controller's core, ROS-free: runs one time-varying linear-Gaussian policy episode at a time.

Timing model. An episode starts at clock time ``start_ns``; its time index is
``t = floor((now - start_ns) / dt)`` and it ends when ``t`` reaches the horizon T. Commands are
computed far more often than the index advances (e.g. 500 Hz against 20 Hz): every command
evaluates ``u = K_t x + k_t + chol(Sigma_t) eps_t`` on the latest state x, with one standard-normal
draw ``eps_t`` per time index (the same noise for the whole step, drawn up front from the seed, so
a seed reproduces an episode's noise exactly even if a step is skipped; filtered over time when the
policy's ``noise_smoothing`` is > 0), then clips u to the torque limits. Every command is
allocation-free: the noise term is folded into a per-step bias at start.

Frame-locked episodes (``start(..., after_frame_ns=...)``, the controller's default when the policy
acts on the camera's latent): the index is the camera frame's, not the clock's. The episode begins
on the first frame captured after ``after_frame_ns`` (the newest frame at the start request), so
step 0 acts for a whole frame interval too; until then it is :attr:`waiting`. It is anchored on that
frame's capture stamp (``start_ns``): a command computed from the latent of the frame captured at
``start_ns + t*dt`` belongs to index t, from its arrival until the next frame's, and the episode
ends when frame T arrives. So each frame's latent acts with its own step's gains and noise for one
whole frame interval, as in the in-process loop. (Clock indices start at an arbitrary phase of the
camera: part of each index then acts on the next frame's latent, and the recorded action mixes two
frames' commands.)

Each finished time index yields a :class:`StepRecord`: x_t is the state at the index's first
command, u_t the mean of the torques actually commanded during it. These are the (x_t, u_t) pairs
the dynamics fit uses: the arm integrates the commanded torque over the step, so its mean is the
action of the equivalent discrete-time system.

Policies are swapped atomically between episodes: :meth:`offer` stores a pending policy and
:meth:`start` makes the newest pending one active.

A package with a planner (the MPC ablation, :class:`~solar_ros.runtime.policy_msg.LatentPlanner`) replans at
the first command of each time index, from that command's state: the plan's first action is added to the
policy's command for the whole index (the policy's gain and offset are zero, its noise is the exploration
noise). The planner's samples are seeded from the episode's noise seed (stream :data:`PLAN_STREAM`), so a
seed reproduces the episode's plans too. Planning allocates and takes milliseconds (once per index, not per
command).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.noise import standard_normal_sequence
from .policy_msg import PolicyPackage
from .safety import clip_torques


@dataclass
class StepRecord:
    """One completed time index of an episode."""

    time_index: int
    start_ns: int
    """Clock time at which the index began (start_ns + t*dt)."""
    source_ns: int
    """Stamp of the latent/joint state x_t was assembled from (0 if no command ran in this index)."""
    state: np.ndarray
    """x_t at the index's first command."""
    action: np.ndarray
    """Mean commanded (clipped) torque over the index."""
    noise: np.ndarray
    """The standard-normal draw eps_t (zeros when deterministic)."""
    commands: int
    """Commands published in this index (0: the controller missed the whole index)."""
    clipped: bool
    """Whether any command of this index was clipped to the torque limits."""


PLAN_STREAM = 1
"""The planner's generator of an episode is ``default_rng([noise_seed, PLAN_STREAM])``, apart from its noise's."""

WAITING = -2
"""Index of a frame-locked episode's commands before its first frame (see :meth:`PolicyExecutor.index`)."""


class PolicyExecutor:
    """Runs episodes of a linear-Gaussian policy: time indexing, seeded noise, clipping, step records."""

    def __init__(self, torque_limits: np.ndarray) -> None:
        self.torque_limits = np.asarray(torque_limits, dtype=np.float64)
        self.n_joints = self.torque_limits.size
        self.pending: PolicyPackage | None = None
        """Newest policy offered; becomes active at the next episode start."""
        self.active: PolicyPackage | None = None
        """Policy of the running (or last) episode."""
        self.running = False
        self.episode_id = ""
        self.deterministic = False
        self.noise_seed = 0
        self.start_ns = 0
        self._dt_ns = 1
        self._K = np.zeros((1, self.n_joints, 1))
        self._bias = np.zeros((1, self.n_joints))
        self._eps = np.zeros((1, self.n_joints))
        self.frame_locked = False
        """Whether the running (or last) episode indexes time by camera frame (see the module docstring)."""
        self.waiting = False
        """A frame-locked episode waiting for its first frame."""
        self._after_ns = 0
        self._t = -1
        self._rec_state = np.zeros(1)
        self._rec_sum = np.zeros(self.n_joints)
        self._rec_count = 0
        self._rec_clipped = False
        self._rec_source_ns = 0
        self._last_u = np.zeros(self.n_joints)
        self._planner = None
        """The running episode's CEM controller (a package with a planner), else None."""
        self._plan_u = np.zeros(self.n_joints)
        """The current index's planned action (zeros without a planner)."""

    # ---- policies and episodes -------------------------------------------------------------------

    def offer(self, package: PolicyPackage) -> None:
        """Queue a policy for the next episode (``ValueError`` if its action size is not the arm's)."""
        if package.policy.du != self.n_joints:
            raise ValueError(f"policy {package.policy_id!r} has {package.policy.du} actions, "
                             f"the arm has {self.n_joints} joints")
        self.pending = package

    @property
    def latest_policy(self) -> PolicyPackage | None:
        """The policy the next episode would run."""
        return self.pending if self.pending is not None else self.active

    def start(self, now_ns: int, episode_id: str, deterministic: bool, noise_seed: int,
              after_frame_ns: int | None = None) -> PolicyPackage:
        """Start an episode with the newest policy; returns it (``RuntimeError`` if impossible).

        ``after_frame_ns``: for a frame-locked episode, the capture stamp of the newest frame's state (the
        first frame stamped later is index 0); None: the indices follow the clock from ``now_ns``.
        """
        if self.running:
            raise RuntimeError(f"episode {self.episode_id!r} is still running")
        if self.pending is not None:
            self.active, self.pending = self.pending, None
        if self.active is None:
            raise RuntimeError("no policy received yet")
        pkg = self.active
        p = pkg.policy
        rng = np.random.default_rng(int(noise_seed))
        self._eps = (np.zeros((p.T, p.du)) if deterministic
                     else standard_normal_sequence(rng, p.T, p.du, pkg.noise_smoothing))
        self._K = np.ascontiguousarray(p.K)
        self._bias = p.k + np.einsum("tij,tj->ti", p.chol, self._eps)
        self._planner = (None if pkg.planner is None else
                         pkg.planner.controller(-self.torque_limits, self.torque_limits,
                                                np.random.default_rng([int(noise_seed), PLAN_STREAM])))
        self._plan_u[:] = 0.0
        self._dt_ns = max(1, int(round(pkg.dt * 1e9)))
        self._rec_state = np.zeros(p.dx)
        self.episode_id = episode_id
        self.deterministic = bool(deterministic)
        self.noise_seed = int(noise_seed)
        self.frame_locked = self.waiting = after_frame_ns is not None
        self._after_ns = int(after_frame_ns or 0)
        self.start_ns = 0 if self.frame_locked else int(now_ns)
        self._t = -1
        self._rec_count = 0
        self._last_u[:] = 0.0
        self.running = True
        return pkg

    @property
    def horizon(self) -> int:
        return self.active.policy.T if self.active is not None else 0

    @property
    def state_dim(self) -> int:
        return self.active.policy.dx if self.active is not None else 0

    def time_index(self, now_ns: int) -> int:
        """Index for clock time ``now_ns`` (>= horizon: the episode is over; < 0: clock went back)."""
        d = now_ns - self.start_ns
        return d // self._dt_ns if d >= 0 else -1

    def index(self, now_ns: int, source_ns: int | None) -> int:
        """Index of a command at clock time ``now_ns`` on a state stamped ``source_ns`` (None: no usable
        state). Clock-indexed: the clock's. Frame-locked: the frame's, the nearest multiple of dt from the
        episode's first frame; :data:`WAITING` before that frame, which starts the episode when it comes
        (the first state stamped after ``after_frame_ns``). >= horizon: the episode is over; -1: time went
        backwards."""
        if not self.frame_locked:
            return self.time_index(now_ns)
        if source_ns is None:
            return WAITING if self.waiting else max(self._t, 0)
        if self.waiting:
            if source_ns <= self._after_ns:
                return WAITING
            self.waiting, self.start_ns = False, int(source_ns)
            return 0
        d = source_ns - self.start_ns
        return (d + self._dt_ns // 2) // self._dt_ns if d >= -(self._dt_ns // 2) else -1

    @property
    def steps_done(self) -> int:
        """Indices begun so far."""
        return self._t + 1

    # ---- the hot path ----------------------------------------------------------------------------

    def command(self, t: int, x: np.ndarray, source_ns: int, out: np.ndarray) -> tuple[bool, list[StepRecord]]:
        """Torque for index ``t`` (0 <= t < T) and state x into ``out``; returns (clipped, finished records).

        Records come back when ``t`` moves past the index being accumulated (usually an empty list).
        """
        records: list[StepRecord] = []
        if t != self._t:
            if t < self._t:
                raise ValueError(f"time index went backwards ({self._t} -> {t})")
            records = self._close_steps(t)
            self._t = t
            self._rec_state[:] = x
            self._rec_source_ns = source_ns
            self._rec_sum[:] = 0.0
            self._rec_count = 0
            self._rec_clipped = False
            if self._planner is not None:
                self._plan_u[:] = self._planner.act(t, x)
        np.dot(self._K[t], x, out=out)
        out += self._bias[t]
        out += self._plan_u
        clipped = clip_torques(out, self.torque_limits)
        self._rec_sum += out
        self._rec_count += 1
        self._rec_clipped |= clipped
        self._last_u[:] = out
        return clipped, records

    def _close_steps(self, upto: int) -> list[StepRecord]:
        """Records of the index in progress and of any indices skipped before ``upto``."""
        records = []
        if self._t >= 0:
            mean = self._rec_sum / max(1, self._rec_count)
            records.append(StepRecord(self._t, self.start_ns + self._t * self._dt_ns, self._rec_source_ns,
                                      self._rec_state.copy(), mean, self._eps[self._t].copy(),
                                      self._rec_count, self._rec_clipped))
        # Indices with no command at all (the controller stalled): the arm kept the last torque, and
        # the state is the last one seen (flagged by commands = 0).
        for s in range(self._t + 1, min(upto, self.horizon)):
            records.append(StepRecord(s, self.start_ns + s * self._dt_ns, 0, self._rec_state.copy(),
                                      self._last_u.copy(), self._eps[s].copy(), 0, False))
        return records

    def finish(self, now_ns: int) -> list[StepRecord]:
        """End the running episode; returns the records of the indices not yet reported.

        Clock-indexed: the indices that began before ``now_ns`` are reported even if no command ran in
        them; frame-locked: those up to the last frame acted on.
        """
        if not self.running:
            return []
        self.running = self.waiting = False
        last = min(self._t if self.frame_locked else self.time_index(now_ns), self.horizon - 1)
        records = self._close_steps(last + 1)
        self._t = max(self._t, last)
        return records
