"""``sawyer_stack``: the 7-DoF Sawyer sets the block it holds onto a base block on the table.

The paper's block stacking (SOLAR, Zhang, Vikram et al., ICML 2019: a yellow Lego block in the gripper
is stacked onto another block, from three starting arm poses, one of which needs a lift first). The
arm, its torque actuation and gravity compensation are those of ``sawyer_reach``
(:mod:`.sawyer_reach`); the scene adds :class:`~solar_ros.envs.sawyer_model.StackingScene`. All
positions are in the robot's base frame (x forward, y left, z up); the table top is at z = -0.24.

* Held block: a bright yellow 5 cm cube rigidly attached to a simplified gripper at the ``right_hand``
  frame, its centre 0.06 m along the hand's z axis (the approach direction). It has real contacts with
  the table and the base block (not with the arm or the gripper). Because it is rigidly attached, its
  position is ``right_hand`` pose * (0, 0, 0.06): on the real robot, forward kinematics from the joint
  angles gives it (:attr:`SawyerStackEnv.held_offset`, :meth:`SawyerStackEnv.block_position_from_hand`).
* Base block: a blue 8 x 8 x 5 cm box fixed on the table, centre (0.60, 0.05, -0.215).
* Stacked pose: the held block resting centred on the base block, centre (0.60, 0.05, -0.165)
  (:attr:`SawyerStackEnv.stacked_centre`), upright and axis-aligned with the base block, in the
  orientation it has at the starts (the hand pointing straight down, the block's x axis along the world's
  y, its y axis along the world's x, its z axis down: :data:`STACKED_ROTATION`), so no turn about the
  vertical is needed.
* Block points: the cost compares a pose, not only a position. As in Guided Policy Search (Finn et al.),
  the block's pose is represented by 3 points rigidly attached to it (:data:`BLOCK_POINTS`, block
  frame): its centre, a point 5 cm along its x axis and a point 5 cm along its y axis (:data:`POINT_ARM`,
  twice the block's half size: points beyond its side faces, so that a tilt costs about as much as a
  shift of the same length). Their positions are the ``right_hand`` pose * (``held_offset`` + point):
  forward kinematics from the joint angles gives them on the real robot
  (:meth:`SawyerStackEnv.block_points_from_hand`).
  Three non-collinear points fix the block's position and orientation; a block at the right centre but
  tilted or turned by an angle a has its two other points sqrt(2 - 2 cos a) * 5 cm away from theirs.
  With arms of 2.5 cm (the side faces' centres) LQR-FLM on the true state stacked 7 of the 9 start-seed pairs
  in 50 episodes; with 5 cm, 9 of 9 (docs/results.md).
* Goal: the 3 points of the stacked pose, a 9-vector ``[centre, x point, y point]``
  (:meth:`SawyerStackEnv.goal_points`); ``goal[:3]`` is the stacked centre (:attr:`SawyerStackEnv.goal_centre`).
  It is fixed by the geometry, not random (``_sample_goal`` draws nothing). As in the other tasks a
  ``goal`` can be passed to the constructor or to ``reset(options=...)``: either the stacked centre
  (3 numbers, expanded to the 9-vector) or the 9-vector itself, whose points must then be those of the
  stacked pose at its centre (to 1e-6 m). The centre must be a stacked position: z = -0.165 and x in
  [0.40, 0.80], y in [-0.20, 0.35]; the base block is then placed under it (the starts below stay
  where they are).
* Starts (constructor ``start``, or the task names ``sawyer_stack_0`` .. ``_2``; ``sawyer_stack`` is
  start 0), joint angles in :data:`START_POSES`, held block centre in :data:`START_BLOCK_POSITIONS`:

  ====  ============================  ===================================================================
  start held block centre (m)         what
  ====  ============================  ===================================================================
  0     (0.48, 0.22, 0.05)            in the air, above and to the left of the base (near the neutral pose)
  1     (0.70, -0.12, 0.02)           in the air, beyond and to the right of the base (another arm pose)
  2     (0.47, 0.05, -0.213)          on the table (2 mm above it) 13 cm in front of the base, on the
                                      robot's side: moving straight to the goal drags the block into the
                                      base's side, so the arm must lift it first
  ====  ============================  ===================================================================

  The initial state is the start's joint angles plus uniform noise in [-0.02, 0.02] rad per joint
  (``start_noise``), zero velocity. For start 2 the arm is then moved (a few least-norm joint steps)
  so that the block's lowest corner is again 2 mm above the table: it starts resting just above it,
  never inside it.
* Wide start (reset option ``wide_start``, for exploration data only): the arm at rest with the held block
  upright in the stacked orientation, its centre uniform in the goal box's x, y and z in ``wide_start_z``.
* State (32): ``[q (7), dq (7), centre (3), x point (3), y point (3), centre velocity (3), x point
  velocity (3), y point velocity (3)]``: joint angles, joint velocities, the 3 block points (entries
  14..22, ``ee_pos_idx``; the centre is 14..16) and their linear velocities (23..31, ``ee_vel_idx``).
* Action (7): joint torques added to gravity compensation, as in ``sawyer_reach`` (limits
  +-(80, 80, 40, 40, 9, 9, 9) N m, ``action_scale`` (2, 2, 1, 1, 0.25, 0.25, 0.25)).
* Horizon T = 50 steps of dt = 0.05 s (physics timestep 2 ms).
* Cost per step: 0.5 * l2 * D^2 + l1 * sqrt(1e-5 + D^2) with D^2 = d_c^2 + d_x^2 + d_y^2 the summed
  squared distances of the 3 block points to the stacked pose's (the norm of the 9-vector difference on
  ``ee_pos_idx``), l2 = 10, l1 = 1 (metres), plus 0.5 * 0.01 * sum_i (u_i / action_scale_i)^2 (see
  ``TaskEnv.cost_model``): the form of ``sawyer_reach`` on the block's points. A block at the right
  centre but tilted costs more than an upright one; a pure translation e gives D = sqrt(3) |e|.
* Distance and success: ``info["distance"]`` is D, the root of the summed squared point distances (the
  distance the cost measures, as in every task; not the RMS D / sqrt(3) nor the mean). Success
  (:meth:`SawyerStackEnv.is_success`, ``info["success"]``) is on the centre only, and a box, not a
  sphere: the final block centre within 1.5 cm of the stacked centre horizontally (``success_xy``) and
  1 cm vertically (``success_z``); orientation is not checked, but a block resting tilted on the base
  has its centre higher than the stacked pose (9 mm at a 30 degree tilt about an edge, more on a
  corner), so it can fail the vertical tolerance. ``success_threshold`` (0.01 m) is the largest sphere
  inside that box: since D is at least the centre's distance, D below it always counts as success (code
  that only has distances, e.g. a plot's threshold line, uses it), but ``info["success"]`` is the
  criterion.
* Image: 64x64x3 uint8 from the fixed ``stack`` camera (at the robot's right side, y < 0, looking down
  at the stacking area from about 1 m): both blocks, the gripper and the forearm, at 0.87, 0.58, 0.73
  pixels per cm of motion along x, y, z at the stacked pose. The held block's centre is in the image in
  79%, 77%, 92% of SOLAR's random pretraining frames from starts 0, 1, 2 (the arm leaves it at the top;
  ``scripts/camera_coverage.py``). A framing of the whole arm (97-99% of those frames, at 0.54, 0.38, 0.45
  pixels per cm) stacked on none of six runs of starts 0 and 1 (docs/results.md).
"""
from __future__ import annotations

from typing import Sequence

import mujoco
import numpy as np

from .sawyer_model import TABLE_TOP, StackingScene, build_mjcf
from .sawyer_reach import SawyerReachEnv

STACKING = StackingScene()
"""The stacking scene of the task (block sizes, colours, base block position, camera)."""

START_POSES: tuple[tuple[float, ...], ...] = (
    (0.1218, -0.8358, -0.0007, 2.0122, 0.0009, 0.3936, 3.4365),
    (-0.4310, -0.5322, 0.0593, 1.3709, -0.0759, 0.7336, 2.9717),
    (-0.2331, -0.1604, -0.0033, 1.7509, -0.1648, -0.0208, 3.2473),
)
"""Joint angles (rad, right_j0..6) of the three starts: inverse kinematics of the block positions below
with the hand pointing straight down (its orientation at the neutral pose), rounded to 1e-4 rad."""

START_BLOCK_POSITIONS: tuple[tuple[float, float, float], ...] = (
    (0.48, 0.22, 0.05),
    (0.70, -0.12, 0.02),
    (0.47, 0.05, TABLE_TOP + STACKING.held_half_size[2] + 0.002),
)
"""Held block centre (m) at each start's joint angles (to within 1 mm)."""

TABLE_CLEARANCE = 0.002
"""Gap (m) between the block's lowest corner and the table at start 2."""

POINT_ARM = 0.05
"""Distance (m) of the cost's two outer block points from the block's centre (twice its half size)."""

BLOCK_POINTS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (POINT_ARM, 0.0, 0.0),
    (0.0, POINT_ARM, 0.0),
)
"""The 3 points (m, block frame) the cost compares: the block's centre and the points ``POINT_ARM`` along its
+x and +y axes."""

STACKED_ROTATION: tuple[tuple[float, float, float], ...] = ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0))
"""Orientation of the block in the stacked pose (block frame to base frame; columns: its axes): upright,
axis-aligned with the base block, as at the starts (the hand pointing straight down)."""


class SawyerStackEnv(SawyerReachEnv):
    """Torque-controlled MuJoCo Sawyer stacking a held block onto a base block (see the module docstring)."""

    state_names = (
        SawyerReachEnv.state_names[:14]
        + ("block_x", "block_y", "block_z", "block_ax_x", "block_ax_y", "block_ax_z",
           "block_ay_x", "block_ay_y", "block_ay_z")
        + ("block_vx", "block_vy", "block_vz", "block_ax_vx", "block_ax_vy", "block_ax_vz",
           "block_ay_vx", "block_ay_vy", "block_ay_vz")
    )
    """Joint angles and velocities, then the block's centre (``block_*``), the point on its x axis
    (``block_ax_*``) and the one on its y axis (``block_ay_*``), then their velocities."""
    ee_pos_idx = tuple(range(14, 23))
    """The 3 block points (the centre first, 14..16): what the cost compares to the goal."""
    ee_vel_idx = tuple(range(23, 32))
    success_threshold = 0.01
    success_xy = 0.015
    """Success: the block's final horizontal distance to the goal is below this (m) ..."""
    success_z = 0.01
    """... and its final vertical distance below this (m)."""
    camera_name = "stack"

    default_start = 0
    """The start used when the constructor's ``start`` is not given."""
    goal_low = (0.40, -0.20)
    goal_high = (0.80, 0.35)
    """A goal passed in must have its centre's x, y in this box (m) (and z = the stacked height)."""
    stacking = STACKING

    def __init__(
        self,
        *,
        start: int | None = None,
        goal: Sequence[float] | None = None,
        image_obs: bool = True,
        image_size: int = 64,
        gravity_compensation: bool = True,
        params_path: str | None = None,
        **kwargs,
    ) -> None:
        """``start``: 0, 1 or 2 (default: ``default_start``); the rest as :class:`SawyerReachEnv`
        (``goal`` must be a stacked pose, see the module docstring)."""
        start = self.default_start if start is None else start
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < len(START_POSES):
            raise ValueError(f"start must be 0, 1 or 2, got {start!r}")
        self.start = int(start)
        """Which of the three starts (see the module docstring)."""
        self.start_pose = np.array(START_POSES[self.start])
        """Joint angles of this start (before the noise)."""
        self.held_offset = np.array(self.stacking.held_offset)
        """Centre of the held block in the ``right_hand`` frame (m)."""
        self.block_points_local = np.array(BLOCK_POINTS)
        """The 3 block points (rows) in the block frame (m), see :data:`BLOCK_POINTS`."""
        self.stacked_rotation = np.array(STACKED_ROTATION)
        """Orientation of the block in the stacked pose, see :data:`STACKED_ROTATION`."""
        self.stacked_centre = np.array(self.stacking.stacked_pos)
        """Centre of the held block resting centred on the base block (m)."""
        self.stacked_goal = self.goal_points(self.stacked_centre)
        """The default goal: the 3 block points of the stacked pose (9)."""
        self._base_lift = self.stacking.base_half_size[2] + self.stacking.held_half_size[2]
        super().__init__(goal=goal, image_obs=image_obs, image_size=image_size,
                         gravity_compensation=gravity_compensation, params_path=params_path, **kwargs)

    def _scene_mjcf(self) -> str:
        # the stacking scene: the same arm plus gripper, blocks and camera
        return build_mjcf(self.params, image_size=self.image_shape[0], stacking=self.stacking)

    def _init_mujoco(self, xml: str, control_dt: float) -> None:
        super()._init_mujoco(xml, control_dt)
        self._block = self.model.site("held_block").id
        self._block_geom = self.model.geom("held_block").id
        self._jacr = np.zeros((3, self.model.nv))

    # ---- task quantities ------------------------------------------------------------------------

    @property
    def block_position(self) -> np.ndarray:
        """Centre of the held block (m, base frame), from the simulation."""
        return self.data.site_xpos[self._block].copy()

    @property
    def block_points(self) -> np.ndarray:
        """The 3 block points (rows: centre, x point, y point; m, base frame), from the simulation."""
        return self._x[14:23].reshape(3, 3).copy()

    @property
    def goal_centre(self) -> np.ndarray | None:
        """The stacked centre of the current goal (its first 3 entries); None before a goal is set."""
        return None if self.goal is None else self.goal[:3].copy()

    @property
    def base_block_position(self) -> np.ndarray:
        """Centre of the base block (m, base frame)."""
        return self.data.mocap_pos[0].copy()

    def block_position_from_hand(self, hand_position: np.ndarray, hand_rotation: np.ndarray) -> np.ndarray:
        """The held block's centre from the ``right_hand`` pose (what forward kinematics gives on the robot)."""
        return np.asarray(hand_position) + np.asarray(hand_rotation) @ self.held_offset

    def block_points_from_hand(self, hand_position: np.ndarray, hand_rotation: np.ndarray) -> np.ndarray:
        """The 3 block points (rows) from the ``right_hand`` pose: forward kinematics on the robot (the block's
        frame has the hand's orientation)."""
        local = self.held_offset + self.block_points_local
        return np.asarray(hand_position) + local @ np.asarray(hand_rotation).T

    def goal_points(self, centre: Sequence[float]) -> np.ndarray:
        """The goal 9-vector of the stacked pose with block centre ``centre``: the 3 block points with the
        block in :data:`STACKED_ROTATION` (no check that ``centre`` is a stacked position)."""
        centre = np.asarray(centre, dtype=np.float64)
        if centre.shape != (3,):
            raise ValueError(f"centre must have shape (3,), got {centre.shape}")
        return (centre + self.block_points_local @ self.stacked_rotation.T).ravel()

    def tilt(self, state: np.ndarray) -> float | np.ndarray:
        """How far the held block leans from upright (degrees; any leading dimensions): the angle between
        the vertical and the normal of the plane through its 3 points (a turn about the vertical is 0).
        A block set down tilted rests with its centre above the stacked height."""
        state = self._states(state)
        p = state[..., 14:23].reshape(state.shape[:-1] + (3, 3))
        normal = np.cross(p[..., 1, :] - p[..., 0, :], p[..., 2, :] - p[..., 0, :])
        cos = np.abs(normal[..., 2]) / np.linalg.norm(normal, axis=-1)
        angle = np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
        return float(angle) if angle.ndim == 0 else angle

    def is_success(self, state: np.ndarray, goal: np.ndarray | None = None) -> bool | np.ndarray:
        """The block's centre within ``success_xy`` horizontally and ``success_z`` vertically of the goal's
        centre (orientation is not checked); ``goal`` may be the 9-vector or its centre."""
        state, goal = self._states_and_goal(state, goal)
        err = state[..., 14:17] - goal[:3]
        ok = (np.linalg.norm(err[..., :2], axis=-1) < self.success_xy) & (np.abs(err[..., 2]) < self.success_z)
        return bool(ok) if ok.ndim == 0 else ok

    # ---- TaskEnv hooks --------------------------------------------------------------------------

    def _sample_goal(self, rng):
        return self.stacked_goal.copy()  # fixed by the task's geometry: nothing is drawn

    def _validated_goal(self, goal) -> np.ndarray:
        # A goal may be given as the stacked centre (3 numbers): it stands for the stacked pose's 9-vector.
        try:
            g = np.asarray(goal, dtype=np.float64)
        except (TypeError, ValueError):
            g = None
        if g is not None and g.shape == (3,):
            if not np.all(np.isfinite(g)):
                raise ValueError(f"goal contains NaN or Inf: {g}")
            goal = self.goal_points(g)
        elif g is not None and g.shape not in ((3,), (self.goal_dim,)):
            raise ValueError(f"a sawyer_stack goal is the stacked centre (3,) or the stacked pose's 3 block "
                             f"points ({self.goal_dim},), got shape {g.shape}")
        return super()._validated_goal(goal)

    def _check_goal(self, goal):
        centre = goal[:3]
        z = self.stacked_centre[2]
        if (abs(centre[2] - z) > 1e-6 or not self.goal_low[0] <= centre[0] <= self.goal_high[0]
                or not self.goal_low[1] <= centre[1] <= self.goal_high[1]):
            raise ValueError(
                f"sawyer_stack goal centre {centre} is not a stacked pose: it needs z = {z:.4f} (the held block "
                f"resting on the base block) and x in [{self.goal_low[0]}, {self.goal_high[0]}], "
                f"y in [{self.goal_low[1]}, {self.goal_high[1]}]"
            )
        expected = self.goal_points(centre)
        if np.max(np.abs(goal - expected)) > 1e-6:
            raise ValueError(
                f"sawyer_stack goal {goal} is not a stacked pose: its block points must be "
                f"{np.round(expected, 4).tolist()} (the block upright and axis-aligned at that centre)"
            )

    wide_start_z = (-0.15, 0.10)
    """Wide start: the held block's centre height range (m); its lowest bound keeps the block above the
    base block's top wherever it is drawn."""

    def _reset_physics_wide(self, rng):
        """The held block anywhere above the goal box, upright in the stacked orientation, the arm at rest:
        exploration that starts as often near the base block as elsewhere (the three starts are the task's;
        this is for pretraining data). Its centre is drawn uniformly in x, y in ``[goal_low, goal_high]`` and
        z in ``wide_start_z``; the joints come from the reach task's inverse kinematics
        (:meth:`SawyerReachEnv._start_at`) on the block's position and orientation."""
        (x0, y0), (x1, y1), (z0, z1) = self.goal_low, self.goal_high, self.wide_start_z
        self._start_at(rng, lambda: rng.uniform((x0, y0, z0), (x1, y1, z1)), self._block, self.stacked_rotation)

    def _place_goal_body(self) -> None:
        """The base block (the mocap body) under the goal's stacked centre."""
        self.data.mocap_pos[0] = self.goal[:3] - np.array([0.0, 0.0, self._base_lift])

    def _reset_physics(self, rng):
        mujoco.mj_resetData(self.model, self.data)
        q = self.start_pose + rng.uniform(-self.start_noise, self.start_noise, size=7)
        self.data.qpos[self._qpos_adr] = np.clip(q, self.limits["lower"], self.limits["upper"])
        self._place_goal_body()
        mujoco.mj_forward(self.model, self.data)
        if self.start == 2:
            self._rest_block_above_table()
        self._update_state()

    def _rest_block_above_table(self) -> None:
        """Move the arm (least-norm joint steps) so the block's lowest corner is ``TABLE_CLEARANCE`` above the table."""
        m, d = self.model, self.data
        jac = np.zeros((3, m.nv))
        half = np.asarray(self.stacking.held_half_size)
        for _ in range(20):
            R = d.geom_xmat[self._block_geom].reshape(3, 3)
            lowest = d.geom_xpos[self._block_geom][2] - np.abs(R[2]) @ half
            dz = TABLE_TOP + TABLE_CLEARANCE - lowest
            if abs(dz) < 1e-6:
                break
            mujoco.mj_jacSite(m, d, jac, None, self._block)
            jz = jac[2, self._dof_adr]
            q = d.qpos[self._qpos_adr] + jz * dz / (jz @ jz)
            d.qpos[self._qpos_adr] = np.clip(q, self.limits["lower"], self.limits["upper"])
            mujoco.mj_forward(m, d)

    def _update_state(self) -> None:
        d = self.data
        mujoco.mj_jacSite(self.model, d, self._jacp, self._jacr, self._block)
        centre = d.site_xpos[self._block]
        arms = self.block_points_local @ d.geom_xmat[self._block_geom].reshape(3, 3).T  # centre to each point
        v, w = self._jacp @ d.qvel, self._jacr @ d.qvel  # the block's linear and angular velocity
        self._x = np.concatenate([
            d.qpos[self._qpos_adr], d.qvel[self._dof_adr], (centre + arms).ravel(), (v + np.cross(w, arms)).ravel(),
        ])


class SawyerStackStart1Env(SawyerStackEnv):
    """``sawyer_stack_1``: :class:`SawyerStackEnv` with start 1 by default (the block in the air, another pose)."""

    default_start = 1


class SawyerStackStart2Env(SawyerStackEnv):
    """``sawyer_stack_2``: :class:`SawyerStackEnv` with start 2 by default (the block on the table: lift first)."""

    default_start = 2
