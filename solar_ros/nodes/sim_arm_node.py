"""sim_arm_node: the MuJoCo Sawyer (:mod:`solar_ros.envs`) as a drop-in for Gazebo + ros2_control.

Same interface as the real stack: torques in on /effort_controller/commands (7 values, N m,
right_j0..right_j6 order, added to gravity compensation as on the robot), /joint_states out at the
control rate, /camera/image_raw (rgb8, sensor-data QoS) at ``camera_rate``, and /clock, which this
node owns: it advances simulated time itself, paced at ``real_time_factor`` x real time (0: as
fast as it can), and publishes it after every step or, with ``clock_rate``, at most that often (a
controller ticking on a timer in simulated time needs /clock at its own rate; one that ticks on the
joint states, as the sim profile's does, needs none). The newest command is held (zero-order hold)
until it is older than ``command_timeout`` simulated seconds, then the arm gets zero torque, like the robot's command
timeout. Commands with NaN/Inf or the wrong length are ignored (with a throttled error), and the
applied torque is clipped to the arm's torque limits (the task's actuator limits, for the Sawyer
``config/sawyer_parameters.yaml``'s effort limits, as the controller's). /solar/cost (TaskCost)
carries the task's cost, distance and success criterion with every camera frame (``cost_rate``), and /sim/reset
(ResetArm) resets the arm and goal from a seed (from the task's wide start distribution when asked).
The goal (PointStamped in the ``base`` frame) is
published on /solar/goal after every reset, and the Sawyer tasks' robot description (the URDF the
MuJoCo model is built from) once on /robot_description, both transient local, so a 3D view or a
recording that starts later still gets them.

Simulated time starts at ``start_time`` and only moves forward (a reset does not rewind it). /sim/pause
(std_srvs/SetBool, as Gazebo's pause_physics: true pauses, false resumes) stops it: no step, joint state,
frame, cost or /clock until it resumes or the next /sim/reset (a reset always leaves it running). The trainer
pauses it during model fits, so that the fits get the cores an idle arm would spend on being simulated, drawn
and encoded.

Camera frames are rendered by a worker thread (``render_thread``, default true) from a copy of the
state at the frame's step (joint positions and velocities, the mocap goal bodies), so the 2 ms a 64x64
render takes does not hold up the next physics step: with rendering in the loop every 25th joint
state at 500 Hz came about 2 ms late. The frame is stamped with its step's simulated time, as a
camera stamps its capture, and goes out when rendered (a few ms of wall time later).
"""
from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PointStamped
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool

from ..msg import TaskCost
from ..srv import ResetArm
from . import contract
from .common import ConfigError, StackNode, declare, run_node, set_stamp


class SimArmNode(StackNode):
    """Steps a MuJoCo arm task and publishes it like a ros2_control robot (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("sim_arm_node", lean=True)
        self.realtime_priority = self.declare_realtime_priority()
        self.task = declare(self, "task", "sawyer_reach", "environment task name (solar_ros.envs.TASKS)")
        image_size = int(declare(self, "image_size", 64, "camera image width = height, pixels"))
        self.control_rate = float(declare(self, "control_rate", 500.0, "Hz of joint states and command sampling"))
        self.camera_rate = float(declare(self, "camera_rate", 20.0, "Hz of camera images"))
        self.cost_rate = float(declare(self, "cost_rate", 20.0, "Hz of /solar/cost"))
        self.clock_rate = float(declare(self, "clock_rate", 0.0, "Hz of /clock at most (0: after every step)"))
        self.rtf = float(declare(self, "real_time_factor", 1.0, "simulated s per wall s (0: as fast as possible)"))
        self.command_timeout = float(declare(self, "command_timeout", 0.2, "simulated s before a command goes stale"))
        seed = int(declare(self, "seed", 0, "seed of the first reset"))
        fixed_goal = bool(declare(self, "fixed_goal", False,
                                  "true: every reset uses `goal`; false: drawn from the seed"))
        goal = [float(g) for g in declare(self, "goal", [0.6, 0.1, 0.1], "the fixed goal (when fixed_goal)")]
        gravity_compensation = bool(declare(self, "gravity_compensation", True, "add gravity compensation"))
        self.frame_id = declare(self, "camera_frame_id", "scene_camera_optical", "frame_id of camera images")
        start_time = float(declare(self, "start_time", 0.0, "simulated time at start-up, s"))
        render_thread = bool(declare(self, "render_thread", True,
                                     "render camera frames in a worker thread from a copy of the state"))
        for name, v in (("control_rate", self.control_rate), ("camera_rate", self.camera_rate),
                        ("cost_rate", self.cost_rate), ("command_timeout", self.command_timeout)):
            if not (np.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be positive, got {v}")
        if not (np.isfinite(self.clock_rate) and self.clock_rate >= 0):
            raise ConfigError(f"clock_rate must be >= 0, got {self.clock_rate}")
        if not (np.isfinite(self.rtf) and self.rtf >= 0):
            raise ConfigError(f"real_time_factor must be >= 0, got {self.rtf}")

        from .. import envs  # imports MuJoCo; kept here so the module imports without it

        kwargs = {"image_obs": True, "image_size": image_size}
        if self.task == "sawyer_reach":
            kwargs["gravity_compensation"] = gravity_compensation
        try:
            self.env = envs.make(self.task, **kwargs)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"cannot build task {self.task!r}: {err}") from err
        self.model, self.data = self.env.model, self.env.data
        self.n_joints = self.env.action_dim
        self.joint_names = [self.model.joint(i).name for i in range(self.n_joints)]
        timestep = float(self.model.opt.timestep)
        ratio = 1.0 / (self.control_rate * timestep)
        self.substeps = int(round(ratio))
        if self.substeps < 1 or abs(ratio - self.substeps) > 1e-6:
            raise ConfigError(f"control_rate {self.control_rate:g} Hz must divide the physics rate {1 / timestep:g} Hz")
        self.period_ns = int(round(self.substeps * timestep * 1e9))
        self.camera_period_ns = int(round(1e9 / self.camera_rate))
        self.cost_period_ns = int(round(1e9 / self.cost_rate))
        self.clock_period_ns = int(round(1e9 / self.clock_rate)) if self.clock_rate > 0 else 0
        self.timeout_ns = int(round(self.command_timeout * 1e9))
        self.torque_limits = np.asarray(self.env.action_space.high, dtype=np.float64)

        self.sim_ns = int(round(start_time * 1e9))
        self.command = np.zeros(self.n_joints)
        self.command_ns: int | None = None  # sim time the newest command arrived
        self.applied = np.zeros(self.n_joints)
        self.bad_commands = 0
        self.steps = 0

        self.clock_pub = self.create_publisher(Clock, contract.CLOCK, contract.RELIABLE_QOS)
        self.joint_pub = self.create_publisher(JointState, contract.JOINT_STATES, contract.RELIABLE_QOS)
        self.image_pub = self.create_publisher(Image, contract.CAMERA_RAW, contract.SENSOR_QOS)
        self.cost_pub = self.create_publisher(TaskCost, contract.COST, contract.RELIABLE_QOS)
        self.goal_pub = self.create_publisher(PointStamped, contract.GOAL, contract.LATCHED_QOS)
        if self.task.startswith("sawyer"):
            from ..envs.sawyer_model import build_urdf

            self.create_publisher(String, contract.ROBOT_DESCRIPTION, contract.LATCHED_QOS).publish(
                String(data=build_urdf()))
        self.create_subscription(Float64MultiArray, contract.COMMANDS, self._on_command, contract.RELIABLE_QOS)
        self.create_service(ResetArm, contract.SIM_RESET, self._on_reset)
        self.paused = False
        self.create_service(SetBool, contract.SIM_PAUSE, self._on_pause)

        self._joint_msg = JointState()
        self._joint_msg.name = list(self.joint_names)
        self._clock_msg = Clock()
        self._frames = FrameWorker(self.env, image_size, self._send_image) if render_thread else None
        try:
            self.fixed_goal = goal if fixed_goal else None
            self._reset(seed, None)
        except ValueError as err:
            raise ConfigError(f"initial reset failed: {err}") from err
        self.next_camera_ns = self.sim_ns
        self.next_cost_ns = self.sim_ns
        self.next_clock_ns = self.sim_ns
        self.get_logger().info(
            f"sim arm: task {self.task}, {self.control_rate:g} Hz control ({self.substeps} physics steps), "
            f"camera {image_size}x{image_size} at {self.camera_rate:g} Hz, /clock "
            f"{'every step' if self.clock_rate == 0 else f'{self.clock_rate:g} Hz'}, real-time factor "
            f"{self.rtf:g}{' (as fast as possible)' if self.rtf == 0 else ''}, "
            f"goal {np.round(self.env.goal, 3).tolist()}")

    # ---- ROS callbacks -------------------------------------------------------------------------

    def _on_command(self, msg: Float64MultiArray) -> None:
        u = np.asarray(msg.data, dtype=np.float64)
        if u.shape != (self.n_joints,) or not np.all(np.isfinite(u)):
            self.bad_commands += 1
            self.get_logger().error(
                f"ignoring torque command: need {self.n_joints} finite values, got {u.size} "
                f"({self.bad_commands} bad so far)", throttle_duration_sec=2.0)
            return
        self.command[:] = u
        self.command_ns = self.sim_ns

    def _on_reset(self, request: ResetArm.Request, response: ResetArm.Response):
        goal = list(request.goal) if len(request.goal) else None
        try:
            self._reset(int(request.seed) if request.seed >= 0 else None, goal, bool(request.wide_start))
        except ValueError as err:
            response.success, response.message = False, str(err)
            return response
        response.success, response.message = True, "reset"
        response.joint_names = list(self.joint_names)
        response.joint_positions = self.data.qpos[:self.n_joints].tolist()
        response.goal = np.asarray(self.env.goal, dtype=np.float64).tolist()
        self.get_logger().info(f"reset (seed {request.seed}{', wide start' if request.wide_start else ''}): "
                               f"goal {np.round(self.env.goal, 3).tolist()}")
        return response

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response):
        if bool(request.data) != self.paused:
            self.paused = bool(request.data)
            self.get_logger().info(f"simulation {'paused' if self.paused else 'resumed'} at "
                                   f"{self.sim_ns * 1e-9:.3f} s")
        response.success, response.message = True, "paused" if self.paused else "running"
        return response

    def _reset(self, seed: int | None, goal, wide_start: bool = False) -> None:
        if self.paused:
            self.paused = False
            self.get_logger().info(f"simulation resumed by a reset at {self.sim_ns * 1e-9:.3f} s")
        goal = goal if goal is not None else self.fixed_goal
        self.env.reset(seed=seed, options={"goal": goal, "wide_start": wide_start})
        self.cost_model = self.env.cost_model()
        self.command[:] = 0.0
        self.command_ns = None  # commands sent before the reset do not carry over
        if self._frames is not None:
            # No frame of the state before the reset is sent after it.
            if not self._frames.drain():
                self.get_logger().warning("reset: the camera frame being rendered was not sent within 1 s; "
                                          "a frame of the state before the reset may follow it")
        # A fresh frame and cost sample right away, so that with equal rates every frame has the cost of
        # its own state (the schedules would otherwise keep their phases from before the reset).
        self.next_camera_ns = self.next_cost_ns = self.sim_ns
        goal = PointStamped()
        goal.header.frame_id = "base"  # the tasks' world frame is the robot's base frame
        set_stamp(goal.header.stamp, self.sim_ns)
        g = np.asarray(self.env.goal, dtype=np.float64).ravel()
        goal.point.x, goal.point.y, goal.point.z = (float(v) for v in np.pad(g[:3], (0, 3 - min(g.size, 3))))
        self.goal_pub.publish(goal)

    # ---- simulation ----------------------------------------------------------------------------

    def step_once(self) -> None:
        """Advance one control period and publish what is due."""
        import mujoco

        fresh = self.command_ns is not None and self.sim_ns - self.command_ns <= self.timeout_ns
        if fresh:
            np.clip(self.command, -self.torque_limits, self.torque_limits, out=self.applied)
        else:
            self.applied[:] = 0.0
        self.data.ctrl[:self.n_joints] = self.applied
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        self.sim_ns += self.period_ns
        self.steps += 1
        if self.sim_ns >= self.next_clock_ns:
            set_stamp(self._clock_msg.clock, self.sim_ns)
            self.clock_pub.publish(self._clock_msg)
            self.next_clock_ns = max(self.next_clock_ns + self.clock_period_ns, self.sim_ns + 1)
        js = self._joint_msg
        set_stamp(js.header.stamp, self.sim_ns)
        js.position = self.data.qpos[:self.n_joints].tolist()
        js.velocity = self.data.qvel[:self.n_joints].tolist()
        js.effort = self.data.actuator_force[:self.n_joints].tolist()
        self.joint_pub.publish(js)
        camera_due = self.sim_ns >= self.next_camera_ns
        cost_due = self.sim_ns >= self.next_cost_ns
        if camera_due or cost_due:
            # Full forward pass for the derived quantities (hand position, camera view) at this state.
            x = self.env.set_joint_state(self.data.qpos[:self.n_joints].copy(), self.data.qvel[:self.n_joints].copy())
            if camera_due:
                self._publish_image()
                self.next_camera_ns = max(self.next_camera_ns + self.camera_period_ns, self.sim_ns + 1)
            if cost_due:
                self._publish_cost(x)
                self.next_cost_ns = max(self.next_cost_ns + self.cost_period_ns, self.sim_ns + 1)

    def _publish_image(self) -> None:
        if self._frames is not None:
            self._frames.submit(self.data, self.sim_ns)
        else:
            self._send_image(self.env.render(), self.sim_ns)

    def _send_image(self, img: np.ndarray, stamp_ns: int) -> None:
        msg = Image()
        set_stamp(msg.header.stamp, stamp_ns)
        msg.header.frame_id = self.frame_id
        msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
        msg.encoding = "rgb8"
        msg.step = int(img.shape[1]) * 3
        msg.data = np.ascontiguousarray(img).tobytes()
        self.image_pub.publish(msg)

    def _publish_cost(self, x: np.ndarray) -> None:
        msg = TaskCost()
        set_stamp(msg.header.stamp, self.sim_ns)
        msg.task = self.task
        msg.cost = float(self.cost_model.eval(x[None, :], self.applied[None, :]).l[0])
        msg.distance = float(self.env.distance(x))
        msg.success = bool(self.env.is_success(x))
        self.cost_pub.publish(msg)

    def run(self, executor, stop: threading.Event) -> None:
        """The simulation loop: handle callbacks, step, pace to ``real_time_factor``."""
        wall_period = self.period_ns * 1e-9 / self.rtf if self.rtf > 0 else 0.0
        next_wall = time.monotonic()
        while not stop.is_set():
            if self.paused:  # serve callbacks only; the pacing starts afresh on resuming
                executor.spin_once(timeout_sec=0.05)
                next_wall = time.monotonic()
                continue
            if self.rtf > 0:
                # Wait for the next step's wall time, serving callbacks meanwhile; when already behind, still
                # serve what has arrived, or a torque command goes stale while the simulation catches up.
                served = False
                while not stop.is_set():
                    remaining = next_wall - time.monotonic()
                    if remaining <= 0:
                        break
                    executor.spin_once(timeout_sec=remaining)
                    served = True
                if not served:
                    executor.spin_once(timeout_sec=0.0)
                next_wall += wall_period
                lag = time.monotonic() - next_wall
                if lag > 0.1:
                    self.get_logger().warning(f"simulation runs {lag:.2f} s behind real time x {self.rtf:g}; "
                                              "catching up is skipped", throttle_duration_sec=5.0)
                    next_wall = time.monotonic()
            else:
                executor.spin_once(timeout_sec=0.0)
            self.step_once()


    def on_shutdown(self) -> None:
        if self._frames is not None:
            self._frames.stop()


class FrameWorker:
    """Renders camera frames in its own thread from a copy of the simulation state (see the module docstring).

    :meth:`submit` copies what a frame shows (qpos, qvel, the mocap bodies) into the worker's own MjData and
    returns at once; the worker computes the kinematics, renders with its own renderer (and OpenGL
    context) and calls ``send(image, stamp_ns)``. MuJoCo releases the GIL while it renders, so the physics
    loop runs on meanwhile. A frame submitted while the previous one is still being rendered replaces the
    waiting one (the newest state wins, as with a camera whose reader falls behind).
    """

    def __init__(self, env, image_size: int, send) -> None:
        import mujoco

        self._mujoco = mujoco
        self.model = env.model
        self.camera = env.camera_name
        self.size = int(image_size)
        self.send = send
        self.data = mujoco.MjData(self.model)
        self._pending: tuple[np.ndarray, ...] | None = None
        self._busy = False  # a frame is being rendered or sent
        self._cond = threading.Condition()
        self._stopped = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="frame_worker", daemon=True)
        self._thread.start()

    def submit(self, data, stamp_ns: int) -> None:
        state = (data.qpos.copy(), data.qvel.copy(), data.mocap_pos.copy(), data.mocap_quat.copy(), stamp_ns)
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = state
            self._cond.notify()

    def _run(self) -> None:
        renderer = self._mujoco.Renderer(self.model, height=self.size, width=self.size)
        try:
            while True:
                with self._cond:
                    while self._pending is None and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
                    qpos, qvel, mocap_pos, mocap_quat, stamp_ns = self._pending
                    self._pending, self._busy = None, True
                try:
                    d = self.data
                    d.qpos[:], d.qvel[:], d.mocap_pos[:], d.mocap_quat[:] = qpos, qvel, mocap_pos, mocap_quat
                    self._mujoco.mj_forward(self.model, d)
                    renderer.update_scene(d, camera=self.camera)
                    self.send(renderer.render(), stamp_ns)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            renderer.close()

    def drain(self, timeout: float = 1.0) -> bool:
        """Drop the waiting frame and wait until the one being rendered has been sent (at a reset, so that
        no frame of the old state follows it). Returns False if that took longer than ``timeout`` seconds."""
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = None
            return self._cond.wait_for(lambda: not self._busy or self._stopped, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=2.0)


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run solar_ros sim_arm_node``)."""
    return run_node(SimArmNode, args, loop=lambda node, executor, stop: node.run(executor, stop))


if __name__ == "__main__":
    raise SystemExit(main())
