"""``car``: the SOLAR paper's nonholonomic car, driven from the bottom right to a target at the top left,
seen from above in a 32x32 RGB image.

Kinematic bicycle (the car cannot move sideways; it turns by driving with its front wheels steered), with
the speed and the steering angle as states and their rates as actions, integrated with a step of dt = 0.05 s
(20 Hz, the control rate of every task here; the reference steps 0.1 s, and its geometry is halved here so that
the drive fits the 2.5 s episode):

    x' = x + v cos(theta) dt,   y' = y + v sin(theta) dt,   theta' = theta + v tan(delta) / L dt,
    v' = clip(v + a dt, -v_max, v_max),   delta' = clip(delta + omega dt, -delta_max, delta_max),

wheelbase L = 0.25 m, v_max = 2 m/s, delta_max = 0.6 rad. The arena is [-1.5, 1.5]^2 m; its walls are inelastic: a
position that would leave it is clipped to the wall and the speed set to zero.

* State (5): ``[x, y, theta, v, delta]`` (position entries 0, 1; the position's velocity is not a state entry).
* Action (2): ``[a, omega]``, acceleration (m/s^2) and steering rate (rad/s), limits +-3 and +-3 (clipped);
  ``action_scale`` (1, 1).
* Horizon T = 50 steps of dt = 0.05 s (2.5 s).
* Start: near (0.75, -0.75) (uniform +-0.05 m per axis), heading pi/2 (facing up, +y; uniform +-0.1 rad), at rest,
  wheels straight: the target lies ahead and to the left, and the car has to turn on its way there.
* Target: fixed at (-1, 1) (the reference's (-2, 2), halved); a goal passed in must lie in the arena.
* Wide start (reset option ``wide_start``, for exploration data): anywhere in [-1.25, 1.25]^2, any heading, at rest.
* Cost per step: 0.5 * l2 * |p - goal|^2 (l2 = 1) + 0.5 * 1e-3 * |u|^2 (see ``TaskEnv.cost_model``; the
  reference's action weight, 5e-9, is for its action units).
* Success: the final position (after the last step) within 0.15 m of the target (5% of the arena's width).
* Image: 32x32x3 uint8, top-down, x to the right and y up (row 0 is y = +1.5); dark background, the target as a
  red disc of radius 0.15 m (the success region), the car as a blue disc of radius 0.12 m with a yellow disc of
  radius 0.06 m at its front (0.12 m ahead along its heading), so that one frame shows where it points; all
  anti-aliased. Plain numpy, no OpenGL.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import TaskEnv

BACKGROUND = np.array([25.0, 25.0, 25.0])
GOAL_COLOR = np.array([230.0, 40.0, 40.0])
BODY_COLOR = np.array([40.0, 130.0, 255.0])
FRONT_COLOR = np.array([255.0, 220.0, 40.0])


class CarEnv(TaskEnv):
    """The nonholonomic car (see the module docstring)."""

    horizon = 50
    dt = 0.05
    state_names = ("x", "y", "theta", "v", "delta")
    ee_pos_idx = (0, 1)
    ee_vel_idx = ()
    success_threshold = 0.15
    cost_l2 = 1.0
    cost_l1 = 0.0
    cost_action = 1e-3

    wheelbase = 0.25
    v_max = 2.0
    steer_max = 0.6
    accel_limit = 3.0
    steer_rate_limit = 3.0
    arena = 1.5
    start_xy = (0.75, -0.75)
    start_heading = np.pi / 2
    start_noise = 0.05
    heading_noise = 0.1
    target = (-1.0, 1.0)
    wide_region = 1.25
    body_radius = 0.12
    front_radius = 0.06
    front_offset = 0.12

    def __init__(self, *, goal: Sequence[float] | None = None, image_obs: bool = True, image_size: int = 32,
                 **kwargs) -> None:
        """``goal``: the target (default (-1, 1)); ``image_obs``: render images into observations; ``image_size``:
        image side in pixels; other keywords (``cost_l2``, ``cost_l1``, ``cost_action``, ``render_mode``) go to
        :class:`~solar_ros.envs.base.TaskEnv`."""
        if int(image_size) < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        self.image_shape = (int(image_size), int(image_size), 3)
        n = self.image_shape[0]
        centres = (np.arange(n) + 0.5) / n * 2.0 * self.arena - self.arena
        self._px_x = centres[None, :]
        self._px_y = centres[::-1, None]
        self._s = np.zeros(5)
        super().__init__(action_low=[-self.accel_limit, -self.steer_rate_limit],
                         action_high=[self.accel_limit, self.steer_rate_limit], action_scale=[1.0, 1.0],
                         goal=goal, image_obs=image_obs, **kwargs)

    # ---- TaskEnv hooks --------------------------------------------------------------------------

    def _sample_goal(self, rng):
        return np.array(self.target, dtype=np.float64)  # fixed: nothing is drawn

    def _check_goal(self, goal):
        if np.any(np.abs(goal) > self.arena):  # its shape is checked by TaskEnv
            raise ValueError(f"car goal must lie in the arena [-{self.arena}, {self.arena}]^2, got {goal}")

    def _reset_physics(self, rng):
        xy = rng.uniform(-self.start_noise, self.start_noise, size=2)
        heading = rng.uniform(-self.heading_noise, self.heading_noise)
        self._s = np.array([self.start_xy[0] + xy[0], self.start_xy[1] + xy[1], self.start_heading + heading, 0.0, 0.0])

    def _reset_physics_wide(self, rng):
        xy = rng.uniform(-self.wide_region, self.wide_region, size=2)
        self._s = np.array([xy[0], xy[1], rng.uniform(-np.pi, np.pi), 0.0, 0.0])

    def _advance(self, u):
        x, y, theta, v, delta = self._s
        dt = self.dt
        x, y = x + v * np.cos(theta) * dt, y + v * np.sin(theta) * dt
        theta = theta + v * np.tan(delta) / self.wheelbase * dt
        v = float(np.clip(v + u[0] * dt, -self.v_max, self.v_max))
        delta = float(np.clip(delta + u[1] * dt, -self.steer_max, self.steer_max))
        if abs(x) > self.arena or abs(y) > self.arena:  # inelastic walls
            x, y, v = float(np.clip(x, -self.arena, self.arena)), float(np.clip(y, -self.arena, self.arena)), 0.0
        theta = (theta + np.pi) % (2 * np.pi) - np.pi
        self._s = np.array([x, y, theta, v, delta])

    def _state(self):
        return self._s

    def _render_image(self):
        img = np.broadcast_to(BACKGROUND, self.image_shape).copy()
        px = 2.0 * self.arena / self.image_shape[0]  # metres per pixel
        heading = np.array([np.cos(self._s[2]), np.sin(self._s[2])])
        for centre, radius, color in ((self.goal, self.success_threshold, GOAL_COLOR),
                                      (self._s[:2], self.body_radius, BODY_COLOR),
                                      (self._s[:2] + self.front_offset * heading, self.front_radius, FRONT_COLOR)):
            d = np.hypot(self._px_x - centre[0], self._px_y - centre[1]) / px
            alpha = np.clip(radius / px + 0.5 - d, 0.0, 1.0)[..., None]  # anti-aliased coverage
            img = img * (1.0 - alpha) + color * alpha
        return np.round(img).astype(np.uint8)
