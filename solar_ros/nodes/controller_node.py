"""controller_node: runs the current time-varying linear-Gaussian policy and streams joint torques.

* State x: the latest latent (/solar/latent), joint state [q, dq] (/joint_states), or both
  concatenated (parameter ``state_source``), validated by :class:`~solar_ros.runtime.safety.StateAssembler`
  (joint names mapped to right_j0..right_j6, NaN/Inf rejected, out-of-order stamps dropped).
* Command stream: a timer at ``rate`` Hz (default 500) on the node clock (simulated time when
  ``use_sim_time``) publishes 7 torques on /effort_controller/commands *all the time*: the policy's
  torques while an episode runs, zeros while idle (the Sawyer leaves torque mode when commands stop).
  With ``clock: joint_states`` the robot's joint-state stream is the clock instead, as in a
  ros2_control update loop (read, update, write): one command answers each joint state, at the
  joint state's stamp, with no timer and no /clock subscription. The simulation profile uses it (the
  simulator's joint states carry simulated time); a wall-clock watchdog (``hardware_timeout``) aborts a
  running episode and sends zero torque when the joint states stop.
* Episodes: started by /solar/controller/start_episode (StartEpisode), stopped by
  /solar/controller/stop_episode (Trigger) or at the policy's horizon; each start/stop is announced
  on /solar/episode (EpisodeEvent), each finished time index on /solar/controller/steps (PolicyStep).
  With a latent state and ``frame_locked`` (default) the time index is the camera frame's: the episode
  begins (and its START goes out, stamped with that frame's capture as ``start_stamp``) when the first
  frame after the start request arrives, with zero torque until then, and frame t's latent acts with
  step t's gains until frame t+1's arrives
  (:class:`~solar_ros.runtime.policy_executor.PolicyExecutor`); otherwise indices follow the clock.
* Policies arrive on /solar/policy (transient local) and are swapped in only at the next episode
  start (:class:`~solar_ros.runtime.policy_executor.PolicyExecutor`). A policy with a planner (the MPC
  ablation) is replanned by CEM at the first command of each time index, from that command's state.
* Safety: torques clipped to ``torque_limits``; stale (older than ``max_latent_age`` /
  ``max_joint_age``), NaN/Inf or mismatched inputs give zero torque and an error (and abort the
  episode when ``abort_on_fault``); /solar/controller/estop (SetBool) latches zero torque until
  released with ``data: false``. A NaN/Inf or mismatched input and the e-stop get their zero
  command at once, not at the next tick; a stale input is found at the next tick (within one
  period of going stale; ``test/nodes/test_controller_fault_timing.py`` measures both).
* Timing: every command is accompanied by a CommandInfo on /solar/controller/command_info carrying
  the stamp of the latent/joint state it was computed from (image stamp -> command latency).
  With ``command_on_latent`` (default) a fresh latent during an episode gets its command at once,
  through the same checks as a tick, so the frame-to-torque latency does not include waiting up to
  one tick; the fixed-rate stream goes on unchanged (these commands come in addition to it).
"""
from __future__ import annotations

import array
import time
import uuid

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from ..msg import CommandInfo, EpisodeEvent, LatentState, LinearGaussianPolicy, PolicyStep
from ..runtime.policy_executor import WAITING, PolicyExecutor, StepRecord
from ..runtime.policy_msg import policy_from_msg
from ..runtime.safety import (
    SAWYER_JOINT_NAMES,
    SAWYER_TORQUE_LIMITS,
    STATE_SOURCES,
    StateAssembler,
    validate_torque_limits,
)
from ..srv import StartEpisode
from . import contract
from .common import ConfigError, StackNode, Throttle, declare, run_node, set_stamp, stamp_to_ns

CLOCK_SOURCES = ("timer", "joint_states")
WATCHDOG_PERIOD = 0.02
"""s between two checks of the joint-state clock (``clock: joint_states``)."""


class ControllerNode(StackNode):
    """Real-time torque controller (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("controller_node", lean=True)
        self.realtime_priority = self.declare_realtime_priority()
        self.state_source = declare(self, "state_source", "latent", "latent, joints or latent+joints")
        self.rate = float(declare(self, "rate", 500.0, "command rate, Hz (clock: timer)"))
        self.clock_source = declare(self, "clock", "timer",
                                    "timer: commands at `rate` on the node clock; joint_states: one command per joint "
                                    "state, at its stamp")
        self.hardware_timeout = float(declare(
            self, "hardware_timeout", 0.1,
            "s of wall time without a joint state before a running episode is aborted (clock: joint_states)"))
        joint_names = list(declare(self, "joint_names", list(SAWYER_JOINT_NAMES), "command order"))
        limits = list(declare(self, "torque_limits", list(SAWYER_TORQUE_LIMITS), "N m, per joint"))
        max_latent_age = float(declare(self, "max_latent_age", 0.25, "s; older latents are stale"))
        max_joint_age = float(declare(self, "max_joint_age", 0.05, "s; older joint states are stale"))
        future_tolerance = float(declare(self, "future_tolerance", 0.5, "s; stamps further ahead are rejected"))
        self.abort_on_fault = bool(declare(self, "abort_on_fault", True, "abort the episode on stale/NaN input"))
        self.publish_command_info = bool(declare(self, "publish_command_info", True,
                                                 "CommandInfo with every non-idle command (timing)"))
        self.stats_period = float(declare(self, "stats_period", 10.0, "s between timing summaries in the log (0: off)"))
        self.command_on_latent = bool(declare(
            self, "command_on_latent", True,
            "true: a fresh latent during an episode is acted on at once, besides the fixed-rate stream"))
        self.frame_locked = bool(declare(
            self, "frame_locked", True,
            "with a latent state: index time by camera frame (frame t's latent acts with step t's gains); "
            "false: by the clock"))
        self.publish_when_estopped = bool(declare(
            self, "publish_when_estopped", True,
            "true: stream zeros while e-stopped; false: go silent (a Sawyer then holds its pose)"))
        if self.state_source not in STATE_SOURCES:
            raise ConfigError(f"state_source must be one of {STATE_SOURCES}, got {self.state_source!r}")
        if not (np.isfinite(self.rate) and self.rate > 0):
            raise ConfigError(f"rate must be positive, got {self.rate}")
        if self.clock_source not in CLOCK_SOURCES:
            raise ConfigError(f"clock must be one of {CLOCK_SOURCES}, got {self.clock_source!r}")
        if not (np.isfinite(self.hardware_timeout) and self.hardware_timeout > 0):
            raise ConfigError(f"hardware_timeout must be positive, got {self.hardware_timeout}")
        try:
            self.torque_limits = validate_torque_limits(limits, len(joint_names))
            self.inputs = StateAssembler(self.state_source, joint_names, max_latent_age, max_joint_age,
                                         future_tolerance)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        self.n_joints = len(joint_names)
        self.executor_core = PolicyExecutor(self.torque_limits)

        # Preallocated hot-path buffers: the command lives in an array.array viewed by numpy.
        self._cmd_buf = array.array("d", [0.0] * self.n_joints)
        self._u = np.frombuffer(self._cmd_buf, dtype=np.float64)
        self._x = np.zeros(0)
        self._cmd_msg = Float64MultiArray()
        self._info_msg = CommandInfo()
        self.estopped = False
        self.commands_sent = 0
        self.latent_commands = 0
        """Commands sent on fresh latents, outside the fixed-rate stream."""
        self._throttle = Throttle(1.0)
        self._clock_resets = 0
        self._rejected_policies = 0
        # Per-command timing, kept in preallocated rings and summarised in the log.
        self._ring_n = 0
        self._gaps_ns = np.zeros(8192, dtype=np.int64)
        self._compute_ns = np.zeros(8192, dtype=np.int64)
        self._last_tick_wall = 0
        self._last_stats = time.monotonic()
        self._joint_clock = self.clock_source == "joint_states"
        self._hw_now = 0
        """With ``clock: joint_states``: the newest joint state's stamp, the controller's time."""
        self._hw_wall = 0.0
        """time.monotonic() of the newest joint state (the watchdog's reference)."""

        self.cmd_pub = self.create_publisher(Float64MultiArray, contract.COMMANDS, contract.RELIABLE_QOS)
        self.info_pub = self.create_publisher(CommandInfo, contract.COMMAND_INFO, contract.EVENT_QOS)
        self.episode_pub = self.create_publisher(EpisodeEvent, contract.EPISODE, contract.EVENT_QOS)
        self.step_pub = self.create_publisher(PolicyStep, contract.STEPS, contract.EVENT_QOS)
        if self.inputs.uses_latent:
            self.create_subscription(LatentState, contract.LATENT, self._on_latent, contract.LATEST_SENSOR_QOS)
        if self.inputs.uses_joints or self._joint_clock:
            self.create_subscription(JointState, contract.JOINT_STATES, self._on_joints, contract.LATEST_SENSOR_QOS)
        self.create_subscription(LinearGaussianPolicy, contract.POLICY, self._on_policy, contract.POLICY_QOS)
        self.create_service(StartEpisode, contract.START_EPISODE, self._on_start)
        self.create_service(Trigger, contract.STOP_EPISODE, self._on_stop)
        self.create_service(SetBool, contract.ESTOP, self._on_estop)
        if self._joint_clock:
            self.create_timer(WATCHDOG_PERIOD, self._watchdog)
            timing = "one command per joint state"
        else:
            self.create_timer(1.0 / self.rate, self._on_tick)
            timing = f"{self.rate:g} Hz"
        self.get_logger().info(
            f"controller: state_source={self.state_source}, {timing}, "
            f"torque limits {self.torque_limits.tolist()}")

    # ---- inputs --------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self._hw_now if self._joint_clock else self.get_clock().now().nanoseconds

    def _on_latent(self, msg: LatentState) -> None:
        now = self._now_ns()
        reason = self.inputs.update_latent(stamp_to_ns(msg.header.stamp), now, msg.mean, msg.model_id, int(msg.dim))
        if reason is not None:
            if self._throttle.ready("latent " + Throttle.key(reason)):
                self.get_logger().error(f"latent rejected: {reason}")
            if self.inputs.latent_error is not None:
                self._react_to_fault(now)
        elif self.command_on_latent and self.executor_core.running and not self.estopped:
            # Act on the new state now rather than at the next tick (up to 1/rate later).
            self._command(now, time.perf_counter_ns())
            self.latent_commands += 1

    def _on_joints(self, msg: JointState) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        if self._joint_clock and stamp > 0:
            # The joint states are the clock: it moves to each stamp; a stamp far behind it (a restarted
            # simulator) starts a new timeline, which the joint gate then accepts too.
            if stamp >= self._hw_now or self._hw_now - stamp > self.inputs.joint_gate.future_tolerance_ns:
                self._hw_now = stamp
                self._hw_wall = time.monotonic()
        now = self._now_ns()
        if self.inputs.uses_joints:
            reason = self.inputs.update_joints(stamp, now, msg.name, msg.position, msg.velocity)
        else:
            reason = None
        if self.inputs.joint_gate.clock_resets != self._clock_resets:
            self._clock_resets = self.inputs.joint_gate.clock_resets
            self.get_logger().warning("the clock went backwards (a restarted simulator?): joint states of the new "
                                      "timeline accepted")
        if reason is not None:
            if self._throttle.ready("joints " + Throttle.key(reason)):
                self.get_logger().error(f"joint state rejected: {reason}")
            if self.inputs.joint_error is not None:
                self._react_to_fault(now)
                return
        if self._joint_clock and reason is None and stamp == self._hw_now:
            self._on_tick()

    def _watchdog(self) -> None:
        """``clock: joint_states``: no joint state for ``hardware_timeout`` s of wall time ends a running episode
        (zero torque goes out; the robot's own command timeout holds the arm while nothing arrives)."""
        core = self.executor_core
        if core.running and time.monotonic() - self._hw_wall > self.hardware_timeout:
            self._end_episode(self._hw_now, EpisodeEvent.ABORT,
                              f"fault: no joint state for {self.hardware_timeout:g} s (the controller's clock)")
            self._publish_zero()

    def _react_to_fault(self, now: int) -> None:
        """An input was invalidated (NaN, wrong names) during an episode: command zero torque now, not
        at the next tick (an out-of-order message, which is only dropped, does not come here)."""
        if self.executor_core.running and not self.estopped:
            self._command(now, time.perf_counter_ns())

    def _on_policy(self, msg: LinearGaussianPolicy) -> None:
        try:
            package = policy_from_msg(msg)
            if package.state_source != self.state_source:
                raise ValueError(f"policy state_source {package.state_source!r} != controller's {self.state_source!r}")
            self.executor_core.offer(package)
        except ValueError as err:
            self._rejected_policies += 1
            if self._throttle.ready("policy " + Throttle.key(str(err))):  # a stray publisher must not flood the log
                self.get_logger().error(f"rejected policy {msg.policy_id!r}: {err} ({self._rejected_policies} "
                                        "rejected so far)")
            return
        when = "at the next episode start" if self.executor_core.running else "for the next episode"
        planner = ("" if package.planner is None else
                   f", replanned by CEM every step over {package.planner.settings.horizon} steps")
        self.get_logger().info(f"policy {package.policy_id!r} (iteration {package.iteration}, T={package.policy.T}, "
                               f"dx={package.policy.dx}, dt={package.dt:g}{planner}) received; used {when}")

    # ---- services ------------------------------------------------------------------------------

    def _on_start(self, request: StartEpisode.Request, response: StartEpisode.Response):
        core = self.executor_core
        now = self._now_ns()
        episode_id = request.episode_id or f"ep-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        response.episode_id = episode_id
        problem = None
        if self.estopped:
            problem = "e-stop engaged (release it with data: false)"
        elif core.running:
            problem = f"episode {core.episode_id!r} is still running"
        elif core.latest_policy is None:
            problem = f"no policy received on {contract.POLICY} yet"
        else:
            dx = core.latest_policy.policy.dx
            have = self.inputs.state_dim()
            x = np.zeros(dx)
            ok, reason, source_ns = self.inputs.assemble(now, x, core.latest_policy.model_id)
            if have is not None and have != dx:
                problem = f"policy expects state_dim {dx}, state_source {self.state_source!r} gives {have}"
            elif not ok:
                problem = f"no usable state: {reason}"
        if problem is not None:
            response.success, response.message = False, problem
            self.get_logger().warning(f"start_episode refused: {problem}")
            return response
        after_frame = source_ns if self.frame_locked and self.inputs.uses_latent else None
        package = core.start(now, episode_id, request.deterministic, request.noise_seed, after_frame)
        self._x = np.zeros(package.policy.dx)
        response.success = True
        response.message = "episode starts on the next camera frame" if core.waiting else "episode started"
        response.policy_id = package.policy_id
        response.horizon = package.policy.T
        response.dt = package.dt
        if not core.waiting:
            self._episode_started(now)
        return response

    def _episode_started(self, now: int) -> None:
        """Announce the running episode's start (a frame-locked one's when its first frame arrives)."""
        core = self.executor_core
        self._publish_event(EpisodeEvent.START, now, "")
        package = core.active
        noise = "deterministic" if core.deterministic else f"noise seed {core.noise_seed}"
        self.get_logger().info(f"episode {core.episode_id!r} started: policy {package.policy_id!r}, "
                               f"{package.policy.T} steps of {package.dt:g} s, {noise}"
                               + (", on camera frames" if core.frame_locked else ""))

    def _on_stop(self, _request: Trigger.Request, response: Trigger.Response):
        if not self.executor_core.running:
            response.success, response.message = False, "no episode is running"
            return response
        self._end_episode(self._now_ns(), EpisodeEvent.STOP, "stop requested")
        response.success, response.message = True, "episode stopped"
        return response

    def _on_estop(self, request: SetBool.Request, response: SetBool.Response):
        if request.data:
            self.estopped = True
            self._u[:] = 0.0
            now = self._now_ns()
            if self.executor_core.running:
                self._end_episode(now, EpisodeEvent.ABORT, "e-stop")
            # Zero torque goes out now, not at the next tick (nothing, with publish_when_estopped false).
            self._command(now, time.perf_counter_ns())
            self.get_logger().error("E-STOP engaged: zero torque until released")
            response.message = "e-stop engaged"
        else:
            was = self.estopped
            self.estopped = False
            self.get_logger().warning("e-stop released" if was else "e-stop release requested but it was not engaged")
            response.message = "e-stop released"
        response.success = True
        return response

    # ---- the command stream ----------------------------------------------------------------------

    def _on_tick(self) -> None:
        t0 = time.perf_counter_ns()
        if self._command(self._now_ns(), t0):
            self._record_timing(t0)

    def _command(self, now: int, t0: int) -> bool:
        """Compute, check and publish one command for clock time ``now``; False if none was sent (e-stop, silent)."""
        core = self.executor_core
        status, t, source_ns = CommandInfo.IDLE, -1, 0
        self._u[:] = 0.0
        if self.estopped:
            status = CommandInfo.ESTOP
            if not self.publish_when_estopped:
                return False
        elif core.running:
            ok, reason, source_ns = self.inputs.assemble(now, self._x, core.active.model_id)
            waiting = core.waiting
            t = core.index(now, source_ns if ok else None)
            if t == WAITING and ok:
                t = -1  # a frame-locked episode before its first frame: zero torque, as idle
            elif t < 0 and t != WAITING:
                self._end_episode(now, EpisodeEvent.ABORT, "clock jumped backwards")
                t = -1
            elif t >= core.horizon:
                self._end_episode(now, EpisodeEvent.STOP, "horizon reached")
                t = -1
            else:
                if ok:
                    if waiting:
                        self._episode_started(now)
                    status = CommandInfo.ACTIVE
                    _clipped, records = core.command(t, self._x, source_ns, self._u)
                    for rec in records:
                        self._publish_step(rec)
                else:
                    t = max(t, -1)
                    status = CommandInfo.FAULT
                    self._u[:] = 0.0
                    if self._throttle.ready("fault " + Throttle.key(reason)):
                        self.get_logger().error(f"zero torque: {reason}")
                    if self.abort_on_fault:
                        self._end_episode(now, EpisodeEvent.ABORT, f"fault: {reason}")
                        t = -1
        self._cmd_msg.data = self._cmd_buf
        self.cmd_pub.publish(self._cmd_msg)
        self.commands_sent += 1
        if self.publish_command_info and status != CommandInfo.IDLE:
            info = self._info_msg
            set_stamp(info.header.stamp, now)
            info.status = status
            info.time_index = int(t)
            set_stamp(info.source_stamp, source_ns)
            info.compute_ns = min(time.perf_counter_ns() - t0, 0xFFFFFFFF)
            self.info_pub.publish(info)
        return True

    def _record_timing(self, t0: int) -> None:
        """Wall-clock gap since the previous tick and compute time, into the rings; a periodic summary.

        Only the fixed-rate ticks are timed: the extra commands on fresh latents only shorten gaps.
        """
        end = time.perf_counter_ns()
        i = self._ring_n % self._gaps_ns.size
        self._gaps_ns[i] = t0 - self._last_tick_wall if self._last_tick_wall else 0
        self._compute_ns[i] = end - t0
        self._last_tick_wall = t0
        self._ring_n += 1
        if self.stats_period > 0 and time.monotonic() - self._last_stats >= self.stats_period:
            self._last_stats = time.monotonic()
            self.get_logger().info(self.timing_summary())

    def timing_summary(self) -> str:
        """Command rate, gap and compute-time percentiles over the last (up to 8192) commands."""
        n = min(self._ring_n, self._gaps_ns.size)
        gaps = self._gaps_ns[:n][self._gaps_ns[:n] > 0] * 1e-6
        compute = self._compute_ns[:n] * 1e-6
        if gaps.size == 0:
            return "timing: no commands yet"
        p50, p99 = np.percentile(gaps, [50, 99])
        c50, c99 = np.percentile(compute, [50, 99])
        return (f"timing over {n} commands: {1e3 / gaps.mean():.0f} Hz (wall), gap p50 {p50:.2f} ms, "
                f"p99 {p99:.2f} ms, max {gaps.max():.2f} ms; compute p50 {c50:.3f} ms, p99 {c99:.3f} ms; "
                f"{self.latent_commands} extra commands on fresh latents")

    # ---- episode bookkeeping -------------------------------------------------------------------

    def _end_episode(self, now: int, event: int, reason: str) -> None:
        core = self.executor_core
        for rec in core.finish(now):
            self._publish_step(rec)
        self._publish_event(event, now, reason)
        # One call site per severity: rclpy refuses a severity change at the same call site.
        if event == EpisodeEvent.STOP:
            self.get_logger().info(f"episode {core.episode_id!r} stopped after {core.steps_done} steps: {reason}")
        else:
            self.get_logger().error(f"episode {core.episode_id!r} ABORTED after {core.steps_done} steps: {reason}")

    def _publish_event(self, event: int, now: int, reason: str) -> None:
        core = self.executor_core
        msg = EpisodeEvent()
        set_stamp(msg.header.stamp, now)
        msg.event = event
        msg.episode_id = core.episode_id
        if core.active is not None:
            msg.policy_id = core.active.policy_id
            msg.horizon = core.active.policy.T
            msg.dt = core.active.dt
        msg.state_source = self.state_source
        msg.deterministic = core.deterministic
        msg.noise_seed = core.noise_seed
        set_stamp(msg.start_stamp, core.start_ns)
        msg.steps = core.steps_done if event != EpisodeEvent.START else 0
        msg.reason = reason
        self.episode_pub.publish(msg)

    def _publish_step(self, rec: StepRecord) -> None:
        msg = PolicyStep()
        set_stamp(msg.header.stamp, rec.start_ns)
        msg.episode_id = self.executor_core.episode_id
        msg.time_index = rec.time_index
        set_stamp(msg.source_stamp, rec.source_ns)
        msg.state = rec.state.tolist()
        msg.action = rec.action.tolist()
        msg.noise = rec.noise.tolist()
        msg.commands = rec.commands
        msg.clipped = rec.clipped
        self.step_pub.publish(msg)

    def on_shutdown(self) -> None:
        """Abort a running episode and leave the arm with a zero command."""
        if self.executor_core.running:
            self._end_episode(self._now_ns(), EpisodeEvent.ABORT, "controller shutting down")
        self._publish_zero()

    def _publish_zero(self) -> None:
        """One zero-torque command, outside the checks of :meth:`_command` (watchdog, shutdown)."""
        self._u[:] = 0.0
        self._cmd_msg.data = self._cmd_buf
        self.cmd_pub.publish(self._cmd_msg)


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run solar_ros controller_node``)."""
    return run_node(ControllerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
