"""``sawyer_push``: the 7-DoF Sawyer pushes a mug across the table onto a coaster.

The paper's mug pushing (SOLAR, Zhang, Vikram et al., ICML 2019), learned there from a person's sparse
"success" key presses. The arm, its torque actuation and gravity compensation are those of ``sawyer_reach``
(:mod:`.sawyer_reach`); the scene adds :class:`~solar_ros.envs.sawyer_model.PushingScene`. All positions
are in the robot's base frame (x forward, y left, z up); the table top is at z = -0.24.

* Gripper: the palm of ``sawyer_stack``'s simplified gripper at the ``right_hand`` frame with two round
  fingers closed and nothing in them: capsules of radius 8 mm side by side along the hand's x axis
  (together 3.2 x 1.6 cm), 9.5 cm long, whose end (the tip, site ``gripper_tip``) is 0.125 m along the
  hand's z axis (:attr:`SawyerPushEnv.tip_offset`; on the real robot, forward kinematics of the joint
  angles gives it). With the tip 1.5 cm above the table the palm passes 1 cm above the mug. The gripper
  collides with the table and the mug.
* Mug: a free cylinder, radius 4 cm, 10 cm tall, 0.3 kg, bright yellow (the arm is Sawyer red), standing
  on the table (centre height -0.19 upright, :attr:`SawyerPushEnv.mug_rest_z`). Its contacts with the
  table, the gripper and the arm use friction 0.3 (the mug's, by geom priority), so a push at the height
  of the fingers slides it rather than tipping it (the scripted pushes of ``test/envs/test_env_push.py``
  tilt it by under 1 degree).
* Coaster: a green disk of radius 5 cm lying on the table, no contacts (a mocap body, moved with the goal).
* Goal: the mug's centre standing upright centred on the coaster, (0.65, 0.05, -0.19) by default, 16 cm
  from the mug's start (:attr:`SawyerPushEnv.push_goal`). It is fixed (``_sample_goal`` draws nothing); a
  ``goal`` passed to the constructor or to ``reset(options=...)`` is that centre (3 numbers, z = -0.19)
  or the coaster's x, y (2 numbers), with x in [0.45, 0.75], y in [-0.15, 0.25] (``goal_low``,
  ``goal_high``); the coaster is moved under it.
* Start: the hand pointing straight down with the tip 1.5 cm above the table at (0.434, 0.122)
  (:data:`START_TIP_POSITION`), 7 cm behind the mug's centre on the line from the coaster through the mug
  (2.2 cm between the fingers and the mug); the mug at (0.50, 0.10) plus a uniform offset in [-5, 5] mm
  per axis (``mug_start_noise``); the coaster 15.8 cm beyond it. Joint angles :data:`START_POSE` plus
  uniform noise in [-0.02, 0.02] rad per joint (``start_noise``), then a few least-norm joint steps put
  the tip back at its start point: the noise alone moves it by up to 3 cm, into the mug or the table. So
  the noise varies the arm's posture and the hand's orientation (by up to 3 degrees), not the tip's
  position; zero velocity, no contact.
* Wide start (reset option ``wide_start``, for pretraining data): the mug anywhere on the strip from its
  start to the goal (a uniform fraction of the way, plus a sideways offset uniform in +-3 cm), the hand
  pointing down with the tip at the start height behind it along the line from the mug's start to the
  goal (a gap of 0.5 to 4 cm between the fingers and the mug, a sideways offset of +-2 cm), at rest, by
  the reach task's inverse kinematics. Random pushes then start as often near the coaster as far from it
  (in 40 wide starts the mug began 1 to 16 cm from the default goal).
* State (26): ``[q (7), dq (7), mug centre (3), tip (3), mug velocity (3), tip velocity (3)]``: the mug's
  centre (entries 14..16, ``ee_pos_idx``: what the cost compares to the goal), the gripper tip (17..19)
  and their linear velocities (20..22 the mug's, ``ee_vel_idx``; 23..25 the tip's). The mug's orientation
  is not in the state; its centre height tells upright (-0.19) from lying on its side (-0.20).
* Action (7): joint torques added to gravity compensation, as in ``sawyer_reach`` (limits
  +-(80, 80, 40, 40, 9, 9, 9) N m, ``action_scale`` (2, 2, 1, 1, 0.25, 0.25, 0.25)).
* Horizon T = 50 steps of dt = 0.05 s (physics timestep 2 ms).
* Cost per step: 0.5 * l2 * d^2 + l1 * sqrt(1e-5 + d^2), d the distance of the mug's centre to the goal,
  l2 = 10, l1 = 1 (metres), plus 0.5 * 0.01 * sum_i (u_i / action_scale_i)^2: the form of ``sawyer_reach``
  on the mug. It is what ``info["cost"]`` reports and what a dense-cost baseline (PPO) learns from; SOLAR
  learns this task from sparse success labels only (``TASK_DEFAULTS["sawyer_push"]``).
* Success (:meth:`SawyerPushEnv.is_success`, ``info["success"]`` of the final step): the mug's centre
  within 3 cm of the goal horizontally (``success_threshold``) and standing: its centre within 3 mm of the
  upright height (``upright_tolerance``). A mug lying on its side (centre 1 cm lower) or leaning on its
  rim by 4.5 to 72 degrees fails; one propped against the gripper at 73 to 81 degrees from the vertical
  has its centre at the upright height again and is not told apart. ``info["distance"]`` is the 3D
  distance of the centre to the goal, so ``distance < success_threshold`` (what the labeller node checks)
  also holds for a fallen mug within 2.8 cm horizontally.
* Image: 64x64x3 uint8 from the fixed ``push`` camera (at the robot's right side, y < 0, 0.55 m from the
  goal, looking down at about 45 degrees): the mug, the coaster, the gripper and the forearm, at 1.7 and
  1.3 pixels per cm of motion along x and y at the goal (the 3 cm success radius is 4 to 5 pixels).
"""
from __future__ import annotations

from typing import Sequence

import mujoco
import numpy as np

from .sawyer_model import TABLE_TOP, PushingScene, build_mjcf
from .sawyer_reach import SawyerReachEnv

PUSHING = PushingScene()
"""The pushing scene of the task (mug, coaster, gripper, camera)."""

MUG_START: tuple[float, float] = PUSHING.mug_xy
"""Where the mug's centre starts (m, x and y; before the start offset)."""

TIP_HEIGHT = 0.015
"""Height (m) of the gripper tip above the table at the start and the wide start."""

START_TIP_POSITION: tuple[float, float, float] = (0.434, 0.122, TABLE_TOP + TIP_HEIGHT)
"""The gripper tip at the start (m): 7 cm behind the mug's start on the line from the coaster through it, 1.5 cm
above the table (to 0.1 mm at :data:`START_POSE`)."""

START_POSE: tuple[float, ...] = (-0.0802, -0.2930, -0.0078, 1.9255, -0.1186, -0.0612, 3.3520)
"""Joint angles (rad, right_j0..6) of the start: inverse kinematics of :data:`START_TIP_POSITION` with the
hand pointing straight down (its orientation at the neutral pose, :data:`DOWN_ROTATION`), rounded to
1e-4 rad."""

DOWN_ROTATION: tuple[tuple[float, float, float], ...] = ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0))
"""Orientation of the ``right_hand`` frame at the starts (hand to base frame; columns: its axes): pointing
straight down, its x axis along the world's y, as at the neutral pose."""


class SawyerPushEnv(SawyerReachEnv):
    """Torque-controlled MuJoCo Sawyer pushing a mug onto a coaster (see the module docstring)."""

    state_names = (
        SawyerReachEnv.state_names[:14]
        + ("mug_x", "mug_y", "mug_z", "tip_x", "tip_y", "tip_z")
        + ("mug_vx", "mug_vy", "mug_vz", "tip_vx", "tip_vy", "tip_vz")
    )
    """Joint angles and velocities, the mug's centre (``mug_*``) and the gripper tip (``tip_*``), then their
    linear velocities."""
    ee_pos_idx = (14, 15, 16)
    """The mug's centre: what the cost compares to the goal."""
    ee_vel_idx = (20, 21, 22)
    """The mug's velocity."""
    tip_pos_idx = (17, 18, 19)
    """The gripper tip's position in the state."""
    tip_vel_idx = (23, 24, 25)
    """The gripper tip's velocity in the state."""
    success_threshold = 0.03
    """Success: the mug's final horizontal distance to the goal is below this (m) ..."""
    upright_tolerance = 0.003
    """... and its centre's height within this (m) of the upright height."""
    camera_name = "push"

    goal_low = (0.45, -0.15)
    goal_high = (0.75, 0.25)
    """A goal passed in must have its x, y in this box (m) (and z = the upright mug's centre height)."""
    mug_start_noise = 0.005
    """The mug starts at :data:`MUG_START` plus a uniform offset in [-mug_start_noise, mug_start_noise] (m) per axis."""
    wide_start_side = 0.03
    """Wide start: the mug's sideways offset from the line from its start to the goal, uniform in +- this (m)."""
    wide_start_gap = (0.005, 0.04)
    """Wide start: the gap (m) between the fingers and the mug along the push, uniform in this range."""
    wide_start_tip_side = 0.02
    """Wide start: the tip's sideways offset from the line through the mug's centre, uniform in +- this (m)."""
    pushing = PUSHING

    def __init__(
        self,
        *,
        goal: Sequence[float] | None = None,
        image_obs: bool = True,
        image_size: int = 64,
        gravity_compensation: bool = True,
        params_path: str | None = None,
        **kwargs,
    ) -> None:
        """As :class:`SawyerReachEnv` (``goal``: the mug's centre standing on the table, or the coaster's x, y;
        see the module docstring)."""
        self.start_pose = np.array(START_POSE)
        """Joint angles of the start (before the noise)."""
        self.tip_offset = np.array(self.pushing.tip_offset)
        """The gripper tip in the ``right_hand`` frame (m)."""
        self.mug_rest_z = float(self.pushing.mug_rest_z)
        """Height (m) of the mug's centre when it stands upright on the table."""
        self.mug_start = np.array([*MUG_START, self.mug_rest_z])
        """The mug's centre at the start (before the offset)."""
        self.push_goal = np.array([*self.pushing.coaster_xy, self.mug_rest_z])
        """The default goal: the mug standing centred on the coaster at its default place."""
        self.down_rotation = np.array(DOWN_ROTATION)
        """The hand's orientation at the starts, see :data:`DOWN_ROTATION`."""
        super().__init__(goal=goal, image_obs=image_obs, image_size=image_size,
                         gravity_compensation=gravity_compensation, params_path=params_path, **kwargs)

    def _scene_mjcf(self) -> str:
        # the pushing scene: the same arm plus gripper, mug, coaster and camera
        return build_mjcf(self.params, image_size=self.image_shape[0], pushing=self.pushing)

    def _init_mujoco(self, xml: str, control_dt: float) -> None:
        super()._init_mujoco(xml, control_dt)
        m = self.model
        self._tip = m.site("gripper_tip").id
        self._mug = m.body("mug").id
        mug_joint = m.joint("mug").id
        self._mug_qpos = int(m.jnt_qposadr[mug_joint])
        self._mug_dof = int(m.jnt_dofadr[mug_joint])

    # ---- task quantities ------------------------------------------------------------------------

    @property
    def mug_position(self) -> np.ndarray:
        """Centre of the mug (m, base frame), from the simulation."""
        return self.data.xpos[self._mug].copy()

    @property
    def mug_rotation(self) -> np.ndarray:
        """Orientation of the mug (3x3, mug to base frame; its axis is the third column), from the simulation."""
        return self.data.xmat[self._mug].reshape(3, 3).copy()

    @property
    def tip_position(self) -> np.ndarray:
        """The gripper tip (m, base frame), from the simulation."""
        return self.data.site_xpos[self._tip].copy()

    @property
    def coaster_position(self) -> np.ndarray:
        """Centre of the coaster (m, base frame)."""
        return self.data.mocap_pos[0].copy()

    def tip_from_hand(self, hand_position: np.ndarray, hand_rotation: np.ndarray) -> np.ndarray:
        """The gripper tip from the ``right_hand`` pose (what forward kinematics gives on the robot)."""
        return np.asarray(hand_position) + np.asarray(hand_rotation) @ self.tip_offset

    def set_mug_pose(self, position: Sequence[float], quat: Sequence[float] = (1.0, 0.0, 0.0, 0.0)) -> np.ndarray:
        """Put the mug's centre at ``position`` with orientation ``quat`` (w, x, y, z), at rest; returns the new
        state vector. For tests and scripted setups; it does not advance the episode clock."""
        if self._t is None:
            raise RuntimeError("call reset() first")
        p, q = np.asarray(position, dtype=np.float64), np.asarray(quat, dtype=np.float64)
        if p.shape != (3,) or q.shape != (4,) or not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise ValueError(f"position must be 3 finite numbers and quat 4, got {p.shape} and {q.shape}")
        norm = np.linalg.norm(q)
        if norm < 1e-9:
            raise ValueError("quat must not be zero")
        self.data.qpos[self._mug_qpos:self._mug_qpos + 7] = np.r_[p, q / norm]
        self.data.qvel[self._mug_dof:self._mug_dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)
        self._update_state()
        return self._state().copy()

    def is_success(self, state: np.ndarray, goal: np.ndarray | None = None) -> bool | np.ndarray:
        """The mug's centre within ``success_threshold`` of the goal horizontally and within ``upright_tolerance``
        of the goal's height (standing upright), for a state (dx,) or states (..., dx)."""
        state, goal = self._states_and_goal(state, goal)
        err = state[..., 14:17] - goal
        ok = (np.linalg.norm(err[..., :2], axis=-1) < self.success_threshold) & (np.abs(err[..., 2])
                                                                                  < self.upright_tolerance)
        return bool(ok) if ok.ndim == 0 else ok

    # ---- TaskEnv hooks --------------------------------------------------------------------------

    def _sample_goal(self, rng):
        return self.push_goal.copy()  # fixed: nothing is drawn

    def _validated_goal(self, goal) -> np.ndarray:
        # A goal may be given as the coaster's x, y (2 numbers): it stands for the mug's centre standing there.
        try:
            g = np.asarray(goal, dtype=np.float64)
        except (TypeError, ValueError):
            g = None
        if g is not None and g.shape == (2,):
            goal = np.r_[g, self.mug_rest_z]
        elif g is not None and g.shape != (3,):
            raise ValueError(f"a sawyer_push goal is the mug's centre on the coaster (3,) or the coaster's x, y (2,), "
                             f"got shape {g.shape}")
        return super()._validated_goal(goal)

    def _check_goal(self, goal):
        x, y, z = goal
        if (abs(z - self.mug_rest_z) > 1e-6 or not self.goal_low[0] <= x <= self.goal_high[0]
                or not self.goal_low[1] <= y <= self.goal_high[1]):
            raise ValueError(
                f"sawyer_push goal {goal} is not a mug position on the table: it needs z = {self.mug_rest_z:.4f} "
                f"(the mug's centre standing upright) and x in [{self.goal_low[0]}, {self.goal_high[0]}], "
                f"y in [{self.goal_low[1]}, {self.goal_high[1]}]"
            )

    def _place_goal_body(self) -> None:
        """The coaster (the mocap body) on the table under the goal."""
        self.data.mocap_pos[0] = [self.goal[0], self.goal[1], TABLE_TOP + self.pushing.coaster_half_thickness]

    def _place_mug(self, xy: np.ndarray) -> None:
        """The mug standing upright at rest with its centre at ``xy`` (simulator state only)."""
        self.data.qpos[self._mug_qpos:self._mug_qpos + 7] = [xy[0], xy[1], self.mug_rest_z, 1.0, 0.0, 0.0, 0.0]
        self.data.qvel[self._mug_dof:self._mug_dof + 6] = 0.0

    def _reset_physics(self, rng):
        mujoco.mj_resetData(self.model, self.data)
        q = self.start_pose + rng.uniform(-self.start_noise, self.start_noise, size=7)
        self.data.qpos[self._qpos_adr] = np.clip(q, self.limits["lower"], self.limits["upper"])
        self._place_mug(self.mug_start[:2] + rng.uniform(-self.mug_start_noise, self.mug_start_noise, size=2))
        self._place_goal_body()
        mujoco.mj_forward(self.model, self.data)
        self._tip_to(np.array(START_TIP_POSITION))
        self._update_state()

    def _tip_to(self, target: np.ndarray) -> None:
        """Move the arm (least-norm joint steps) so that the gripper tip is at ``target`` (to 1e-6 m)."""
        m, d = self.model, self.data
        jac = np.zeros((3, m.nv))
        for _ in range(20):
            error = target - d.site_xpos[self._tip]
            if np.linalg.norm(error) < 1e-6:
                break
            mujoco.mj_jacSite(m, d, jac, None, self._tip)
            q = d.qpos[self._qpos_adr] + np.linalg.pinv(jac[:, self._dof_adr]) @ error
            d.qpos[self._qpos_adr] = np.clip(q, self.limits["lower"], self.limits["upper"])
            mujoco.mj_forward(m, d)

    def _push_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors on the table: along the push (the mug's start towards the goal) and to its left."""
        along = self.goal[:2] - self.mug_start[:2]
        norm = np.linalg.norm(along)
        along = along / norm if norm > 1e-9 else np.array([1.0, 0.0])
        return along, np.array([-along[1], along[0]])

    def _reset_physics_wide(self, rng):
        """The mug on the strip from its start to the goal, the gripper behind it (see the module docstring):
        the mug's fraction of the way and sideways offset are drawn, then the tip's gap and sideways offset,
        then the joints by :meth:`SawyerReachEnv._start_at` on the tip's position and the hand's orientation."""
        along, side = self._push_frame()
        length = float(np.linalg.norm(self.goal[:2] - self.mug_start[:2]))
        mug = self.mug_start[:2] + rng.uniform(0.0, length) * along + rng.uniform(-1, 1) * self.wide_start_side * side
        behind = self.pushing.mug_radius + self.pushing.finger_radius  # the fingers touching the mug

        drawn = []

        def draw_tip() -> np.ndarray:
            back = behind + rng.uniform(*self.wide_start_gap)
            xy = mug - back * along + rng.uniform(-1, 1) * self.wide_start_tip_side * side
            drawn.append(np.array([xy[0], xy[1], TABLE_TOP + TIP_HEIGHT]))
            return drawn[-1]

        self._start_at(rng, draw_tip, self._tip, self.down_rotation)
        self._tip_to(drawn[-1])  # from within the inverse kinematics' tolerance to the drawn point
        self._place_mug(mug)
        mujoco.mj_forward(self.model, self.data)
        self._update_state()

    def _update_state(self) -> None:
        d = self.data
        mujoco.mj_jacSite(self.model, d, self._jacp, None, self._tip)
        mug_v = d.qvel[self._mug_dof:self._mug_dof + 3]  # a free joint's first 3 velocities: its origin's, world frame
        self._x = np.concatenate([
            d.qpos[self._qpos_adr], d.qvel[self._dof_adr], d.xpos[self._mug], d.site_xpos[self._tip],
            mug_v, self._jacp @ d.qvel,
        ])
