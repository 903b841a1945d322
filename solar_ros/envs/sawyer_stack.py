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
* Goal: the held block's stacked pose, centred above the base block and resting on it:
  (0.60, 0.05, -0.165). It is fixed by the geometry, not random (``_sample_goal`` draws nothing). As in
  the other tasks a ``goal`` can be passed to the constructor or to ``reset(options=...)``; it must be a
  stacked pose, i.e. have z = -0.165 and x in [0.40, 0.80], y in [-0.20, 0.35]; the base block is then
  placed under it (the starts below stay where they are).
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
* State (20): ``[q (7), dq (7), block_x, block_y, block_z, block_vx, block_vy, block_vz]``: joint angles,
  joint velocities, the held block's centre (entries 14..16) and its linear velocity (17..19).
* Action (7): joint torques added to gravity compensation, as in ``sawyer_reach`` (limits
  +-(80, 80, 40, 40, 9, 9, 9) N m, ``action_scale`` (2, 2, 1, 1, 0.25, 0.25, 0.25)).
* Horizon T = 50 steps of dt = 0.05 s (physics timestep 2 ms).
* Cost per step: 0.5 * l2 * d^2 + l1 * sqrt(1e-5 + d^2) with d the distance of the held block's centre
  to the goal, l2 = 10, l1 = 1 (metres), plus 0.5 * 0.01 * sum_i (u_i / action_scale_i)^2 (see
  ``TaskEnv.cost_model``), exactly the form of ``sawyer_reach`` with the block in place of the hand.
* Distance and success: ``info["distance"]`` is the Euclidean distance d of the block's centre to the
  goal (as in every task). Success (:meth:`SawyerStackEnv.is_success`, ``info["success"]``) is a box,
  not a sphere: the final block centre within 1.5 cm of the goal horizontally (``success_xy``) and 1 cm
  vertically (``success_z``). ``success_threshold`` (0.01 m) is the largest sphere inside that box: a
  distance below it always counts as success (code that only has distances, e.g. a plot's threshold
  line, uses it), but ``info["success"]`` is the criterion. Neither the cost nor success looks at the
  block's orientation, but a block resting tilted on the base has its centre higher than the stacked
  pose (9 mm at a 30 degree tilt about an edge, more on a corner), so it can fail the vertical
  tolerance.
* Image: 64x64x3 uint8 from the fixed ``stack`` camera (at the robot's right side, y < 0, looking down
  at the stacking area from about 1 m): both blocks, the gripper and the forearm.
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


class SawyerStackEnv(SawyerReachEnv):
    """Torque-controlled MuJoCo Sawyer stacking a held block onto a base block (see the module docstring)."""

    state_names = (
        SawyerReachEnv.state_names[:14]
        + ("block_x", "block_y", "block_z", "block_vx", "block_vy", "block_vz")
    )
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
    """A goal passed in must have x, y in this box (m) (and z = the stacked height)."""
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
        self.stacked_goal = np.array(self.stacking.stacked_pos)
        """The default goal: the held block resting centred on the base block."""
        self.held_offset = np.array(self.stacking.held_offset)
        """Centre of the held block in the ``right_hand`` frame (m)."""
        self._base_lift = self.stacking.base_half_size[2] + self.stacking.held_half_size[2]
        super().__init__(goal=goal, image_obs=image_obs, image_size=image_size,
                         gravity_compensation=gravity_compensation, params_path=params_path, **kwargs)
        self._arm_bodies = np.r_[self._arm_bodies, self.model.body("right_gripper").id]
        self.gravity_compensation = gravity_compensation  # now the gripper too

    def _init_mujoco(self, xml: str, control_dt: float) -> None:
        # SawyerReachEnv.__init__ compiles its model through this hook; the stacking scene (the same arm
        # plus gripper, blocks and camera) takes the reach model's place.
        del xml
        super()._init_mujoco(build_mjcf(self.params, image_size=self.image_shape[0], stacking=self.stacking),
                             control_dt)
        self._block = self.model.site("held_block").id
        self._block_geom = self.model.geom("held_block").id

    # ---- task quantities ------------------------------------------------------------------------

    @property
    def block_position(self) -> np.ndarray:
        """Centre of the held block (m, base frame), from the simulation."""
        return self.data.site_xpos[self._block].copy()

    @property
    def base_block_position(self) -> np.ndarray:
        """Centre of the base block (m, base frame)."""
        return self.data.mocap_pos[0].copy()

    def block_position_from_hand(self, hand_position: np.ndarray, hand_rotation: np.ndarray) -> np.ndarray:
        """The held block's centre from the ``right_hand`` pose (what forward kinematics gives on the robot)."""
        return np.asarray(hand_position) + np.asarray(hand_rotation) @ self.held_offset

    def is_success(self, state: np.ndarray, goal: np.ndarray | None = None) -> bool | np.ndarray:
        """The block's centre within ``success_xy`` horizontally and ``success_z`` vertically of the goal."""
        goal = self.goal if goal is None else np.asarray(goal, dtype=np.float64)
        if goal is None:
            raise RuntimeError("no goal yet: call reset() or pass goal")
        state = np.asarray(state, dtype=np.float64)
        if state.shape[-1] != self.state_dim:
            raise ValueError(f"state must end in dimension {self.state_dim}, got shape {state.shape}")
        err = state[..., list(self.ee_pos_idx)] - goal
        ok = (np.linalg.norm(err[..., :2], axis=-1) < self.success_xy) & (np.abs(err[..., 2]) < self.success_z)
        return bool(ok) if ok.ndim == 0 else ok

    # ---- TaskEnv hooks --------------------------------------------------------------------------

    def _sample_goal(self, rng):
        return self.stacked_goal.copy()  # fixed by the task's geometry: nothing is drawn

    def _check_goal(self, goal):
        z = self.stacked_goal[2]
        if (abs(goal[2] - z) > 1e-6 or not self.goal_low[0] <= goal[0] <= self.goal_high[0]
                or not self.goal_low[1] <= goal[1] <= self.goal_high[1]):
            raise ValueError(
                f"sawyer_stack goal {goal} is not a stacked pose: it needs z = {z:.4f} (the held block resting "
                f"on the base block) and x in [{self.goal_low[0]}, {self.goal_high[0]}], "
                f"y in [{self.goal_low[1]}, {self.goal_high[1]}]"
            )

    def _reset_physics(self, rng):
        mujoco.mj_resetData(self.model, self.data)
        q = self.start_pose + rng.uniform(-self.start_noise, self.start_noise, size=7)
        self.data.qpos[self._qpos_adr] = np.clip(q, self.limits["lower"], self.limits["upper"])
        self.data.mocap_pos[0] = self.goal - np.array([0.0, 0.0, self._base_lift])
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
        mujoco.mj_jacSite(self.model, d, self._jacp, None, self._block)
        self._x = np.concatenate([
            d.qpos[self._qpos_adr], d.qvel[self._dof_adr], d.site_xpos[self._block], self._jacp @ d.qvel,
        ])


class SawyerStackStart1Env(SawyerStackEnv):
    """``sawyer_stack_1``: :class:`SawyerStackEnv` with start 1 by default (the block in the air, another pose)."""

    default_start = 1


class SawyerStackStart2Env(SawyerStackEnv):
    """``sawyer_stack_2``: :class:`SawyerStackEnv` with start 2 by default (the block on the table: lift first)."""

    default_start = 2
