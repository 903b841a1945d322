"""``point``: a 2D point mass navigating to a goal, seen from above in a 32x32 RGB image.

Dynamics (linear; exact zero-order-hold discretisation of the continuous model, so
``x_{t+1} = A x_t + B u_t`` holds to machine precision away from the walls):

    d/dt [p; v] = [v; (u - damping * v) / mass],   mass = 1 kg, damping = 1 N s/m, dt = 0.05 s.

The arena is [-1, 1]^2 (metres); its walls are inelastic: a position that would leave the arena is
clipped to the wall and the velocity into the wall is zeroed (the only non-linearity, never met by a
controller that stays inside).

* State (4): ``[x, y, vx, vy]`` (the point is its own end effector: position entries 0, 1, velocity 2, 3).
* Action (2): force ``[fx, fy]`` in newtons, limits +-3 N per axis (clipped); ``action_scale`` 1 N.
* Horizon T = 50 steps of dt = 0.05 s (2.5 s).
* Initial state: position uniform in [-0.8, 0.8]^2, velocity zero (drawn from the reset seed).
* Goal region: uniform in [-0.8, 0.8]^2 (drawn from the reset seed before the initial state); a goal
  passed in must lie in the arena [-1, 1]^2.
* Cost per step: 0.5 * l2 * |p - goal|^2 (l2 = 1) + 0.5 * 0.01 * |u / 1 N|^2 (see ``TaskEnv.cost_model``).
* Success: the final position (after the last step) is within 0.1 m of the goal.
* Image: 32x32x3 uint8, top-down, x to the right and y up (row 0 is y = +1); dark background, the goal
  as a red disc of radius 0.1 (the success region), the point as a blue disc of radius 0.08 drawn on
  top, both anti-aliased so that sub-pixel motion shows. Rendering is plain numpy (no OpenGL).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.linalg import expm

from .base import TaskEnv

BACKGROUND = np.array([25.0, 25.0, 25.0])
GOAL_COLOR = np.array([230.0, 40.0, 40.0])
AGENT_COLOR = np.array([40.0, 130.0, 255.0])


class PointEnv(TaskEnv):
    """2D point mass with force actions and top-down images (see the module docstring)."""

    horizon = 50
    dt = 0.05
    state_names = ("x", "y", "vx", "vy")
    ee_pos_idx = (0, 1)
    ee_vel_idx = (2, 3)
    success_threshold = 0.1
    cost_l2 = 1.0
    cost_l1 = 0.0
    cost_action = 1e-2

    mass = 1.0
    """kg"""
    damping = 1.0
    """N s / m"""
    force_limit = 3.0
    """N, per axis"""
    arena = 1.0
    """Half-width of the square arena (m)."""
    start_region = 0.8
    """Initial positions are uniform in [-start_region, start_region]^2."""
    goal_region = 0.8
    """Random goals are uniform in [-goal_region, goal_region]^2."""
    goal_radius = 0.1
    agent_radius = 0.08

    def __init__(self, *, goal: Sequence[float] | None = None, image_obs: bool = True, image_size: int = 32,
                 **kwargs) -> None:
        """``goal``: fixed goal for every episode (default: random per reset); ``image_obs``: render images
        into observations; ``image_size``: image side in pixels; other keywords (``cost_l2``, ``cost_l1``,
        ``cost_action``, ``render_mode``) go to :class:`~solar_ros.envs.base.TaskEnv`."""
        if int(image_size) < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        self.image_shape = (int(image_size), int(image_size), 3)
        self.A, self.B = self.linear_model(self.mass, self.damping, self.dt)
        # Pixel centres in world coordinates, for rasterising discs.
        n = self.image_shape[0]
        centres = (np.arange(n) + 0.5) / n * 2.0 * self.arena - self.arena
        self._px_x = centres[None, :]
        self._px_y = centres[::-1, None]
        self._x = np.zeros(4)
        super().__init__(action_low=[-self.force_limit] * 2, action_high=[self.force_limit] * 2,
                         action_scale=[1.0, 1.0], goal=goal, image_obs=image_obs, **kwargs)

    @staticmethod
    def linear_model(mass: float, damping: float, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Exact discrete-time (A, B) of the damped double integrator under a zero-order-hold force."""
        Ac = np.zeros((4, 4))
        Ac[0, 2] = Ac[1, 3] = 1.0
        Ac[2, 2] = Ac[3, 3] = -damping / mass
        Bc = np.zeros((4, 2))
        Bc[2, 0] = Bc[3, 1] = 1.0 / mass
        M = np.zeros((6, 6))
        M[:4, :4], M[:4, 4:] = Ac, Bc
        E = expm(M * dt)
        return E[:4, :4], E[:4, 4:]

    # ---- TaskEnv hooks --------------------------------------------------------------------------

    def _sample_goal(self, rng):
        return rng.uniform(-self.goal_region, self.goal_region, size=2)

    def _check_goal(self, goal):
        if np.any(np.abs(goal) > self.arena):
            raise ValueError(f"point goal must lie in the arena [-{self.arena}, {self.arena}]^2, got {goal}")

    def _reset_physics(self, rng):
        self._x = np.zeros(4)
        self._x[:2] = rng.uniform(-self.start_region, self.start_region, size=2)

    def _advance(self, u):
        x = self.A @ self._x + self.B @ u
        # Inelastic walls: stop at the wall, keep the tangential velocity.
        for i in (0, 1):
            if abs(x[i]) > self.arena:
                x[i] = np.sign(x[i]) * self.arena
                if x[i] * x[i + 2] > 0:
                    x[i + 2] = 0.0
        self._x = x

    def _state(self):
        return self._x

    def _render_image(self):
        img = np.broadcast_to(BACKGROUND, self.image_shape).copy()
        px = 2.0 * self.arena / self.image_shape[0]  # metres per pixel
        for centre, radius, color in ((self.goal, self.goal_radius, GOAL_COLOR),
                                      (self._x[:2], self.agent_radius, AGENT_COLOR)):
            d = np.hypot(self._px_x - centre[0], self._px_y - centre[1]) / px
            # Coverage of a pixel by the disc, linear over one pixel across the edge (cheap anti-aliasing).
            alpha = np.clip(radius / px + 0.5 - d, 0.0, 1.0)[..., None]
            img = img * (1.0 - alpha) + color * alpha
        return np.round(img).astype(np.uint8)
