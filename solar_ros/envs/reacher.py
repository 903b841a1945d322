"""``reacher``: a 2-link planar arm moving its fingertip to a goal, seen from above in a 64x64 RGB image.

The arm (MuJoCo) lies in the horizontal plane (gravity along -z does no work on it), base at the
origin, joint axes along +z; ``q1`` is the angle of link 1 from the +x axis and ``q2`` the angle of
link 2 relative to link 1 (counter-clockwise positive).

* Links: lengths 0.10 m and 0.11 m (fingertip at the end of link 2), capsules of radius 1 cm with
  masses 0.10 kg and 0.08 kg. Joints: viscous damping 0.03 N m s/rad, armature (reflected rotor
  inertia) 2e-4 kg m^2; ``q1`` is unlimited, ``q2`` limited to [-3, 3] rad.
* State (8): ``[q1, q2, dq1, dq2, tip_x, tip_y, tip_vx, tip_vy]`` (rad, rad/s, m, m/s; fingertip
  position 4, 5 and velocity 6, 7, world frame).
* Action (2): joint torques in N m, limits +-0.1 N m each (clipped); ``action_scale`` 0.05 N m.
* Horizon T = 50 steps of dt = 0.05 s (physics timestep 5 ms, 10 sub-steps).
* Initial state: ``q`` uniform in [-0.1, 0.1]^2 (arm stretched along +x), zero velocity. Wide start
  (reset option ``wide_start``): ``q1`` uniform in [-pi, pi], ``q2`` over its range, at rest.
* Goal region: uniform over the area of the annulus 0.05 m <= r <= 0.19 m around the base (drawn from
  the reset seed before the initial state); a goal passed in must have 0.02 m <= r <= 0.21 m.
* Cost per step: 0.5 * l2 * |tip - goal|^2 + l1 * sqrt(1e-5 + |tip - goal|^2) with l2 = 10, l1 = 1
  (distances in metres), plus 0.5 * 0.01 * |u / 0.05 N m|^2 (see ``TaskEnv.cost_model``).
* Success: the final fingertip position (after the last step) is within 0.05 m of the goal.
* Image: 64x64x3 uint8 from a fixed orthographic camera straight above the base, x to the right and
  y up, showing 0.44 m x 0.44 m; dark floor, grey links, a yellow fingertip, the goal as a red disc.

``reacher_paper`` (:class:`ReacherPaperEnv`) is the setting of the SOLAR paper's reacher runs: the same
arm with a fixed goal (-0.1, -0.1) m, bottom left of the image, and a fixed start, ``q = (0, 0)`` (the
arm stretched along +x, to the right of the base) at rest, for every reset (the reference code adds a
velocity jitter of at most 0.005 rad/s, left out here, so the seed changes nothing). A goal can still
be passed in as for ``reacher``.
"""
from __future__ import annotations

from typing import Sequence

import mujoco
import numpy as np

from .mujoco_base import MujocoTaskEnv

LINK_LENGTHS = (0.10, 0.11)
LINK_MASSES = (0.10, 0.08)
TORQUE_LIMIT = 0.1
Q2_LIMIT = 3.0
"""Range of the elbow joint q2: [-Q2_LIMIT, Q2_LIMIT] rad."""
JOINT_DAMPING = 0.03
JOINT_ARMATURE = 2e-4
VIEW_EXTENT = 0.44
"""Side of the square region (m) the top camera sees."""


def reacher_mjcf(image_size: int = 64, timestep: float = 0.005, goal_radius: float = 0.02) -> str:
    """MJCF text of the 2-link reacher with its top-down orthographic camera and goal marker."""
    l1, l2 = LINK_LENGTHS
    m1, m2 = LINK_MASSES
    return f"""<mujoco model="reacher">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" gravity="0 0 -9.81"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{image_size}" offheight="{image_size}"/>
    <headlight ambient="0.6 0.6 0.6" diffuse="0.4 0.4 0.4" specular="0 0 0"/>
  </visual>
  <default>
    <geom contype="0" conaffinity="0"/>
    <joint damping="{JOINT_DAMPING}" armature="{JOINT_ARMATURE}"/>
  </default>
  <worldbody>
    <camera name="top" pos="0 0 1" projection="orthographic" fovy="{VIEW_EXTENT}"/>
    <geom name="floor" type="plane" size="{VIEW_EXTENT} {VIEW_EXTENT} 0.01" rgba="0.12 0.12 0.14 1"/>
    <geom name="base" type="cylinder" pos="0 0 0.005" size="0.015 0.005" rgba="0.4 0.4 0.45 1"/>
    <body name="target" mocap="true" pos="0.1 0.1 0.002">
      <geom name="target_marker" type="cylinder" size="{goal_radius} 0.001" rgba="0.9 0.15 0.15 1"/>
    </body>
    <body name="link1" pos="0 0 0.02">
      <joint name="joint1" type="hinge" axis="0 0 1"/>
      <geom name="link1" type="capsule" fromto="0 0 0 {l1} 0 0" size="0.01" mass="{m1}" rgba="0.7 0.7 0.75 1"/>
      <body name="link2" pos="{l1} 0 0">
        <joint name="joint2" type="hinge" axis="0 0 1" range="{-Q2_LIMIT} {Q2_LIMIT}"/>
        <geom name="link2" type="capsule" fromto="0 0 0 {l2} 0 0" size="0.01" mass="{m2}" rgba="0.55 0.6 0.7 1"/>
        <site name="fingertip" pos="{l2} 0 0" size="0.012" rgba="0.95 0.85 0.1 1"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor name="joint1" joint="joint1" gear="1" ctrlrange="{-TORQUE_LIMIT} {TORQUE_LIMIT}"/>
    <motor name="joint2" joint="joint2" gear="1" ctrlrange="{-TORQUE_LIMIT} {TORQUE_LIMIT}"/>
  </actuator>
</mujoco>
"""


class ReacherEnv(MujocoTaskEnv):
    """2-link planar reacher with torque actions and top-down images (see the module docstring)."""

    horizon = 50
    dt = 0.05
    state_names = ("q1", "q2", "dq1", "dq2", "tip_x", "tip_y", "tip_vx", "tip_vy")
    ee_pos_idx = (4, 5)
    ee_vel_idx = (6, 7)
    success_threshold = 0.05
    cost_l2 = 10.0
    cost_l1 = 1.0
    cost_action = 1e-2
    camera_name = "top"

    link_lengths = LINK_LENGTHS
    goal_r_range = (0.05, 0.19)
    """Random goals are uniform over the area of this annulus (m)."""
    start_noise = 0.1
    """Initial joint angles are uniform in [-start_noise, start_noise]."""

    def __init__(self, *, goal: Sequence[float] | None = None, image_obs: bool = True, image_size: int = 64,
                 **kwargs) -> None:
        """``goal``: fixed goal for every episode (default: random per reset); ``image_obs``: render images
        into observations; ``image_size``: image side in pixels; other keywords (``cost_l2``, ``cost_l1``,
        ``cost_action``, ``render_mode``) go to :class:`~solar_ros.envs.base.TaskEnv`."""
        self.image_shape = (int(image_size), int(image_size), 3)
        self._init_mujoco(reacher_mjcf(image_size=int(image_size)), self.dt)
        self._tip = self.model.site("fingertip").id
        self._qpos_adr = np.arange(2)
        self._dof_adr = np.arange(2)
        self._jacp = np.zeros((3, self.model.nv))
        self._x = np.zeros(len(self.state_names))
        super().__init__(action_low=[-TORQUE_LIMIT] * 2, action_high=[TORQUE_LIMIT] * 2,
                         action_scale=[0.5 * TORQUE_LIMIT] * 2, goal=goal, image_obs=image_obs, **kwargs)

    # ---- TaskEnv hooks --------------------------------------------------------------------------

    def _sample_goal(self, rng):
        r0, r1 = self.goal_r_range
        r = np.sqrt(rng.uniform(r0**2, r1**2))
        angle = rng.uniform(-np.pi, np.pi)
        return np.array([r * np.cos(angle), r * np.sin(angle)])

    def _check_goal(self, goal):
        r = float(np.hypot(*goal))
        if not 0.02 <= r <= sum(self.link_lengths):
            raise ValueError(f"reacher goal must be 0.02..{sum(self.link_lengths):.2f} m from the base, "
                             f"got r = {r:.3f}")

    def _start_at(self, q) -> None:
        """The arm at rest at joint angles ``q``, the goal marker at the goal."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = q
        self.data.mocap_pos[0, :2] = self.goal
        mujoco.mj_forward(self.model, self.data)
        self._update_state()

    def _reset_physics(self, rng):
        self._start_at(rng.uniform(-self.start_noise, self.start_noise, size=2))

    def _reset_physics_wide(self, rng):
        """Wide start: q1 uniform in [-pi, pi], q2 uniform over its range [-3, 3], at rest (the reference's
        random starts)."""
        self._start_at([rng.uniform(-np.pi, np.pi), rng.uniform(-Q2_LIMIT, Q2_LIMIT)])

    def _advance(self, u):
        self._physics_step(u)
        self._update_state()

    def _update_state(self) -> None:
        d = self.data
        mujoco.mj_jacSite(self.model, d, self._jacp, None, self._tip)
        tip = d.site_xpos[self._tip]
        tip_vel = self._jacp @ d.qvel
        self._x = np.concatenate([d.qpos, d.qvel, tip[:2], tip_vel[:2]])

    def _state(self):
        return self._x


class ReacherPaperEnv(ReacherEnv):
    """``reacher_paper``: the reacher with the SOLAR paper's fixed goal and fixed start (see the module docstring)."""

    paper_goal = (-0.1, -0.1)
    """The fixed goal (m): bottom left of the image."""
    paper_start = (0.0, 0.0)
    """The fixed initial joint angles (rad), at rest."""
    start_noise = 0.0

    def _sample_goal(self, rng):
        return np.array(self.paper_goal, dtype=np.float64)  # fixed: nothing is drawn

    def _reset_physics(self, rng):
        self._start_at(self.paper_start)
