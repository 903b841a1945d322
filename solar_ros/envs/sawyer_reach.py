"""``sawyer_reach``: the 7-DoF Sawyer moves its hand (the ``right_hand`` frame) to a target in front of it.

The MuJoCo model is generated from ``config/sawyer_parameters.yaml`` by
:func:`solar_ros.envs.sawyer_model.build_mjcf` (URDF joint origins, masses, centres of mass, full
inertia tensors, joint limits, torque limits, simplified collision shapes; joint damping and armature
are documented modelling choices there). All positions are in the robot's base frame (x forward, y
left, z up), as the real robot's ``endpoint_pose()`` reports them.

* State (20): ``[q (7), dq (7), ee_x, ee_y, ee_z, ee_vx, ee_vy, ee_vz]``: joint angles ``right_j0..6``
  (rad), joint velocities (rad/s), the ``right_hand`` position (m, entries 14..16) and its linear
  velocity (m/s, entries 17..19).
* Action (7): joint torques in N m added to gravity compensation, limits +-(80, 80, 40, 40, 9, 9, 9)
  (the real torque limits; ``action_space`` is this range, actions are clipped to it). As on the real
  robot, the controller adds gravity compensation to the commanded torque (on by default; constructor
  flag ``gravity_compensation``) and the sum is clamped to the torque limit. ``action_scale`` is
  (2, 2, 1, 1, 0.25, 0.25, 0.25) N m: white noise of this std moves the hand by roughly 0.05 to 0.3 m
  over an episode with joint speeds well inside the velocity limits, a sensible start for
  exploration; the action cost is normalised by it.
* Horizon T = 50 steps of dt = 0.05 s (physics timestep 2 ms, 25 sub-steps).
* Initial state: the neutral pose (0, -1.18, 0, 2.18, 0, 0.57, 3.3161) plus uniform noise in
  [-0.02, 0.02] rad per joint, zero velocity; the hand then starts near (0.45, 0.16, 0.22).
* Goal region: uniform in the box x in [0.40, 0.75], y in [-0.10, 0.40], z in [-0.05, 0.30] (drawn from
  the reset seed before the initial state), all reachable; a goal passed in must lie within 1.0 m of
  the shoulder (joint right_j1) and above the table top (z > -0.2).
* Cost per step: 0.5 * l2 * |ee - goal|^2 + l1 * sqrt(1e-5 + |ee - goal|^2) with l2 = 10, l1 = 1
  (metres), plus 0.5 * 0.01 * sum_i (u_i / action_scale_i)^2 (see ``TaskEnv.cost_model``).
* Success: the final hand position (after the last step) is within 0.05 m of the goal.
* Image: 64x64x3 uint8 from the fixed ``scene`` camera (front right of the robot, looking at the
  workspace): the arm, the table, and the target as a green sphere of radius 4 cm (not colliding).
"""
from __future__ import annotations

from typing import Sequence

import mujoco
import numpy as np

from .mujoco_base import MujocoTaskEnv
from .sawyer_model import ARM_JOINTS, SCENE_CAMERA, SceneCamera, build_mjcf, joint_limits, load_sawyer_params

ACTION_SCALE = (2.0, 2.0, 1.0, 1.0, 0.25, 0.25, 0.25)


class SawyerReachEnv(MujocoTaskEnv):
    """Torque-controlled MuJoCo Sawyer reaching a target, with an external camera (see the module docstring)."""

    horizon = 50
    dt = 0.05
    state_names = (
        tuple(f"q_{j}" for j in ARM_JOINTS)
        + tuple(f"dq_{j}" for j in ARM_JOINTS)
        + ("ee_x", "ee_y", "ee_z", "ee_vx", "ee_vy", "ee_vz")
    )
    ee_pos_idx = (14, 15, 16)
    ee_vel_idx = (17, 18, 19)
    success_threshold = 0.05
    cost_l2 = 10.0
    cost_l1 = 1.0
    cost_action = 1e-2
    camera_name = "scene"
    scene_camera: SceneCamera = SCENE_CAMERA
    """Pose and field of view of the ``scene`` camera (constructor keyword ``camera``)."""
    hand_marker_radius = 0.0
    """Radius (m) of a yellow look-only sphere on the hand (0: none; constructor keyword
    ``hand_marker_radius``)."""

    goal_low = (0.40, -0.10, -0.05)
    goal_high = (0.75, 0.40, 0.30)
    """Random goals are uniform in the box [goal_low, goal_high] (m, base frame)."""
    start_noise = 0.02
    """Initial joint angles are the neutral pose plus uniform noise in [-start_noise, start_noise] (rad)."""
    wide_start_noise = 0.2
    """Wide start (reset option ``wide_start``): the arm at rest with its hand at a point drawn uniformly
    in the goal box, reached by inverse kinematics from the neutral pose plus uniform noise in
    [-wide_start_noise, wide_start_noise] (rad) per joint (see :meth:`_reset_physics_wide`)."""
    wide_start_tolerance = 0.01
    """The wide start's inverse kinematics stops when the hand is this close (m) to its drawn point."""
    max_reach = 1.0
    """A goal must lie within this distance (m) of the shoulder."""
    min_goal_z = -0.2

    def __init__(
        self,
        *,
        goal: Sequence[float] | None = None,
        image_obs: bool = True,
        image_size: int = 64,
        gravity_compensation: bool = True,
        params_path: str | None = None,
        camera: SceneCamera | None = None,
        hand_marker_radius: float | None = None,
        **kwargs,
    ) -> None:
        """``goal``: fixed goal for every episode (default: random per reset); ``image_obs``: render images
        into observations; ``image_size``: image side in pixels; ``gravity_compensation``: add gravity
        compensation to the commanded torques (as the real robot does); ``params_path``: the Sawyer facts
        yaml (default: the project's); ``camera``, ``hand_marker_radius``: the scene camera and the hand
        marker (default: the class attributes ``scene_camera``, ``hand_marker_radius``); other keywords
        (``cost_l2``, ``cost_l1``, ``cost_action``, ``render_mode``) go to :class:`~solar_ros.envs.base.TaskEnv`."""
        self.params = load_sawyer_params(params_path)
        self.image_shape = (int(image_size), int(image_size), 3)
        if camera is not None:
            if not isinstance(camera, SceneCamera):
                raise ValueError(f"camera must be a SceneCamera(pos, lookat, fovy), got {camera!r}")
            self.scene_camera = camera
        if hand_marker_radius is not None:
            self.hand_marker_radius = float(hand_marker_radius)
        self._init_mujoco(self._scene_mjcf(), self.dt)
        m = self.model
        self._qpos_adr = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self._dof_adr = np.array([m.jnt_dofadr[m.joint(j).id] for j in ARM_JOINTS])
        self._act_ids = np.array([m.actuator(j).id for j in ARM_JOINTS])
        if not (np.array_equal(self._qpos_adr, np.arange(7)) and np.array_equal(self._dof_adr, np.arange(7))
                and np.array_equal(self._act_ids, np.arange(7))):
            raise RuntimeError("the Sawyer model's joints/actuators are not in right_j0..right_j6 order")
        self._hand = m.site("right_hand").id
        self._shoulder = m.body("right_l1").id
        bodies = ("right_l0", "head", "right_l1", "right_l2", "right_l3", "right_l4", "right_l5", "right_l6",
                  "right_gripper")  # the gripper of the stacking and pushing scenes
        self._arm_bodies = np.array([m.body(n).id for n in bodies if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)
                                     >= 0])
        self.limits = joint_limits(self.params)
        """Arm joint limits from the yaml: lower, upper (rad), velocity (rad/s), effort (N m)."""
        self.neutral_pose = np.asarray(self.params["neutral_pose"], dtype=np.float64)
        self._jacp = np.zeros((3, m.nv))
        self._x = np.zeros(len(self.state_names))
        self.gravity_compensation = gravity_compensation
        mujoco.mj_forward(m, self.data)
        self._shoulder_pos = self.data.xpos[self._shoulder].copy()
        effort = self.limits["effort"]
        super().__init__(action_low=-effort, action_high=effort, action_scale=ACTION_SCALE, goal=goal,
                         image_obs=image_obs, **kwargs)

    def _scene_mjcf(self) -> str:
        """The MuJoCo model of the task's scene (here the reach scene: camera, target marker, hand marker); the
        stacking and pushing tasks put their own scene here."""
        return build_mjcf(self.params, image_size=self.image_shape[0], camera=self.scene_camera,
                          hand_marker_radius=self.hand_marker_radius)

    @property
    def gravity_compensation(self) -> bool:
        """Whether gravity compensation is added to the commanded torques (can be switched at any time)."""
        return bool(self.model.body_gravcomp[self._arm_bodies[0]] > 0)

    @gravity_compensation.setter
    def gravity_compensation(self, on: bool) -> None:
        self.model.body_gravcomp[self._arm_bodies] = 1.0 if on else 0.0

    @property
    def hand_position(self) -> np.ndarray:
        """Position of the ``right_hand`` frame (m, base frame)."""
        return self.data.site_xpos[self._hand].copy()

    @property
    def hand_rotation(self) -> np.ndarray:
        """Orientation of the ``right_hand`` frame as a 3x3 rotation matrix (hand to base)."""
        return self.data.site_xmat[self._hand].reshape(3, 3).copy()

    # ---- TaskEnv hooks --------------------------------------------------------------------------

    def _sample_goal(self, rng):
        return rng.uniform(self.goal_low, self.goal_high)

    def _check_goal(self, goal):
        r = float(np.linalg.norm(goal - self._shoulder_pos))
        if r > self.max_reach or goal[2] <= self.min_goal_z:
            raise ValueError(
                f"sawyer goal {goal} is out of reach: it must lie within {self.max_reach} m of the shoulder "
                f"{np.round(self._shoulder_pos, 3)} (got {r:.3f} m) and above z = {self.min_goal_z}"
            )

    def _noisy_neutral(self, rng, noise: float) -> np.ndarray:
        """The neutral pose plus uniform noise in [-noise, noise] per joint, within the limits."""
        q = self.neutral_pose + rng.uniform(-noise, noise, size=7)
        return np.clip(q, self.limits["lower"], self.limits["upper"])

    def _start_near_neutral(self, rng, noise: float) -> None:
        """:meth:`_noisy_neutral`, at rest."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._qpos_adr] = self._noisy_neutral(rng, noise)
        self._finish_start()

    def _place_goal_body(self) -> None:
        """Put the scene's goal body (the mocap body: here the target marker) where the goal says."""
        self.data.mocap_pos[0] = self.goal

    def _finish_start(self) -> None:
        """After the joint angles of a start are set: the goal body, the simulator's derived quantities, the state."""
        self._place_goal_body()
        mujoco.mj_forward(self.model, self.data)
        self._update_state()

    def _reset_physics(self, rng):
        self._start_near_neutral(rng, self.start_noise)

    def _reset_physics_wide(self, rng):
        """The hand anywhere in the goal box: exploration data that starts as often near one goal as near
        another (joint noise around the neutral pose leaves far goals rarely visited).

        A point is drawn uniformly in ``[goal_low, goal_high]`` and the joints start at the neutral pose
        plus uniform noise of ``wide_start_noise``; :meth:`_inverse_kinematics` moves the hand to the
        point. A point not reached to ``wide_start_tolerance`` is drawn again (at most 10 times; then the
        last pose is kept). The goal is unaffected."""
        self._start_at(rng, lambda: rng.uniform(self.goal_low, self.goal_high), self._hand)

    def _start_at(self, rng, draw_point, site: int, rotation: np.ndarray | None = None) -> None:
        """At rest with ``site`` at a point from ``draw_point()`` and, given, its frame in ``rotation``, by
        :meth:`_inverse_kinematics` from :meth:`_noisy_neutral` with ``wide_start_noise``; a point not reached
        is drawn again (at most 10 times; then the last pose stays)."""
        for _ in range(10):
            target = draw_point()
            q, reached = self._inverse_kinematics(site, target, self._noisy_neutral(rng, self.wide_start_noise),
                                                  rotation)
            if reached:
                break
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._qpos_adr] = q
        self._finish_start()

    def _inverse_kinematics(self, site: int, target: np.ndarray, rest: np.ndarray,
                            rotation: np.ndarray | None = None, steps: int = 100) -> tuple[np.ndarray, bool]:
        """Joint angles that put ``site`` within ``wide_start_tolerance`` of ``target`` (and, given, its frame in
        ``rotation``, each radian of error counting as 0.1 m), from ``rest``: damped least-squares steps on the
        site's Jacobian, the remaining freedom pulled towards ``rest``, within the joint limits. Returns the
        angles and whether they reach the target within ``steps`` steps. Changes the simulator's joint angles."""
        m, d = self.model, self.data
        lower, upper = self.limits["lower"], self.limits["upper"]
        jacr = np.zeros((3, m.nv))
        q = rest.copy()
        for _ in range(steps):
            d.qpos[self._qpos_adr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            error = target - d.site_xpos[site]
            if rotation is not None:
                R = d.site_xmat[site].reshape(3, 3)
                error = np.r_[error, 0.1 * 0.5 * np.cross(R, rotation, axis=0).sum(axis=1)]
            if np.linalg.norm(error) < self.wide_start_tolerance:
                return q, True
            mujoco.mj_jacSite(m, d, self._jacp, jacr, site)
            J = self._jacp[:, self._dof_adr]
            if rotation is not None:
                J = np.r_[J, 0.1 * jacr[:, self._dof_adr]]
            J_pinv = J.T @ np.linalg.inv(J @ J.T + 1e-4 * np.eye(J.shape[0]))
            step = J_pinv @ error + (np.eye(7) - J_pinv @ J) @ (0.1 * (rest - q))
            q = np.clip(q + np.clip(step, -0.2, 0.2), lower, upper)
        return q, False

    def _advance(self, u):
        self._physics_step(u)
        self._update_state()

    def _update_state(self) -> None:
        d = self.data
        mujoco.mj_jacSite(self.model, d, self._jacp, None, self._hand)
        self._x = np.concatenate([
            d.qpos[self._qpos_adr], d.qvel[self._dof_adr], d.site_xpos[self._hand], self._jacp @ d.qvel,
        ])

    def _state(self):
        return self._x
