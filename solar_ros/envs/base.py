"""Common machinery of the image-observation tasks: a gymnasium-style episodic environment.

Conventions shared by every task (each task's module docstring gives its own numbers):

* ``reset(seed=..., options=...) -> (obs, info)``; ``step(action) -> (obs, reward, terminated,
  truncated, info)``. Episodes last exactly ``horizon`` steps of ``dt`` seconds: ``truncated`` is True
  on step ``horizon``, ``terminated`` is always False. Stepping a finished episode (or before the first
  reset) raises ``RuntimeError``.
* Observations are dicts: ``obs["state"]`` (float64, ``state_dim``) and ``obs["image"]`` (uint8,
  (H, W, 3) RGB). With ``image_obs=False`` the ``"image"`` key is omitted from both the observation and
  ``observation_space`` (nothing is rendered), so the space always contains the observation.
* Actions must have shape ``(action_dim,)`` and be finite (``ValueError`` otherwise); they are clipped
  to ``action_space`` (the real actuator limits) and the applied action is reported in
  ``info["action"]``. ``action_scale`` is the per-dimension magnitude of a "unit" action: an
  exploration policy with unit-variance noise in these units (std ``action_scale`` in real units) is a
  sensible start, and the action cost is normalised by it.
* Costs are the primary quantity. ``cost_model()`` returns the task's cost model (a
  :class:`~solar_ros.core.cost.SumCost` of a :class:`~solar_ros.core.cost.StateDistanceCost` on the
  end-effector entries of the state and an :class:`~solar_ros.core.cost.ActionCost`), and
  ``info["cost"]`` is that model evaluated on this step's state and action: the state x_t observed
  *before* the action (the previous observation) and the applied action u_t. So for a recorded episode
  X = [x_0 .. x_{T-1}] (states the actions were taken in) and U, ``cost_model().eval(X, U).l`` equals the
  list of ``info["cost"]`` exactly (the task costs weight every step alike, so evaluating one step at a
  time and a whole trajectory at once agree). The gymnasium reward is ``-info["cost"]``: the learning
  code should consume costs, never negate rewards back.
* ``info["distance"]`` is the task distance (end effector to goal) of the state *after* the step
  (the returned observation), ``info["success"]`` is ``is_success`` of that state, which is
  ``distance < success_threshold`` unless a task says otherwise (``sawyer_stack`` checks a box: 1.5 cm
  horizontally, 1 cm vertically; ``sawyer_push`` 3 cm horizontally and the mug standing, its centre within
  3 mm of the upright height); the task's success criterion is ``info["success"]`` of the final step,
  i.e. of the state reached at the end of the episode.
* ``reset(options={"wide_start": True})`` starts from the task's wide start distribution instead of its
  own (where it has one: ``reacher``, ``reacher_paper``, ``sawyer_reach``): states spread over the
  workspace, for exploration.
* The goal comes from, in order: ``reset(options={"goal": g})`` (that episode only), the constructor's
  ``goal=`` (every episode), or a random draw from the reset seed within the task's goal region. The
  random goal is drawn first (also when a given goal replaces it), then the initial state, both from
  ``self.np_random``: the same seed gives the same initial state whatever the goal, and the same
  goal, states and images for the same actions.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import gymnasium
import numpy as np
from gymnasium import spaces

from ..core.cost import ActionCost, StateDistanceCost, SumCost


class TaskEnv(gymnasium.Env):
    """Base class of the tasks: validation, goal handling, cost bookkeeping, episode clock.

    Subclasses set the class attributes below and implement ``_sample_goal``, ``_check_goal``,
    ``_reset_physics``, ``_advance``, ``_state`` and ``_render_image``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    horizon: int
    """Episode length T in steps."""
    dt: float
    """Control period in seconds (one ``step``)."""
    state_names: tuple[str, ...]
    """Name of each entry of ``obs["state"]``."""
    ee_pos_idx: tuple[int, ...]
    """State entries holding the end-effector (fingertip, point) position: what the cost compares to the goal."""
    ee_vel_idx: tuple[int, ...]
    """State entries holding the end-effector velocity."""
    image_shape: tuple[int, int, int]
    """(H, W, 3) of rendered images."""
    success_threshold: float
    """Final end-effector distance to the goal that counts as success (task units, metres for the arms)."""

    # Default cost weights (a subclass overrides them; the constructor can too).
    cost_l2: float = 1.0
    cost_l1: float = 0.0
    cost_action: float = 1e-2

    def __init__(
        self,
        *,
        action_low: Sequence[float],
        action_high: Sequence[float],
        action_scale: Sequence[float],
        goal: Sequence[float] | None = None,
        image_obs: bool = True,
        cost_l2: float | None = None,
        cost_l1: float | None = None,
        cost_action: float | None = None,
        render_mode: str | None = "rgb_array",
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' (or None), got {render_mode!r}")
        self.render_mode = "rgb_array"  # render() always returns the current image
        self.image_obs = bool(image_obs)
        low = np.asarray(action_low, dtype=np.float64)
        high = np.asarray(action_high, dtype=np.float64)
        self.action_space = spaces.Box(low=low, high=high, dtype=np.float64)
        self.action_scale = np.asarray(action_scale, dtype=np.float64)
        """Magnitude of a unit action per dimension (real units): see the module docstring."""
        if self.action_scale.shape != low.shape or np.any(self.action_scale <= 0):
            raise ValueError("action_scale must be positive and have one entry per action dimension")
        obs_spaces: dict[str, spaces.Space] = {
            "state": spaces.Box(low=-np.inf, high=np.inf, shape=(self.state_dim,), dtype=np.float64)
        }
        if self.image_obs:
            obs_spaces["image"] = spaces.Box(low=0, high=255, shape=self.image_shape, dtype=np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        for name, value in (("cost_l2", cost_l2), ("cost_l1", cost_l1), ("cost_action", cost_action)):
            if value is not None:
                if not np.isfinite(value) or value < 0:
                    raise ValueError(f"{name} must be finite and >= 0, got {value}")
                setattr(self, name, float(value))
        self._fixed_goal = None if goal is None else self._validated_goal(goal)
        self.goal: np.ndarray | None = None if self._fixed_goal is None else self._fixed_goal.copy()
        """Goal of the current episode (end-effector position to reach)."""
        self._cost: SumCost | None = None if self.goal is None else self._build_cost(self.goal)
        self._t: int | None = None  # steps taken in the current episode; None before the first reset

    # ---- sizes ---------------------------------------------------------------------------------

    @property
    def state_dim(self) -> int:
        """Length of ``obs["state"]``."""
        return len(self.state_names)

    @property
    def action_dim(self) -> int:
        """Length of an action."""
        return int(self.action_space.shape[0])

    @property
    def goal_dim(self) -> int:
        """Length of a goal (the end-effector position's dimension)."""
        return len(self.ee_pos_idx)

    @property
    def t(self) -> int | None:
        """Steps taken in the current episode (None before the first reset)."""
        return self._t

    # ---- the gymnasium API ----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode: pick the goal (options > constructor > random), then the initial state."""
        super().reset(seed=seed)
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise ValueError(f"options must be a dict, got {type(options).__name__}")
        unknown = set(options) - {"goal", "wide_start"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; supported: ['goal', 'wide_start']")
        # The random goal is always drawn, so a seed gives the same initial state whatever the goal's source.
        random_goal = np.asarray(self._sample_goal(self.np_random), dtype=np.float64)
        if options.get("goal") is not None:
            self.goal = self._validated_goal(options["goal"])
        elif self._fixed_goal is not None:
            self.goal = self._fixed_goal.copy()
        else:
            self.goal = random_goal
        self._cost = self._build_cost(self.goal)
        if options.get("wide_start"):
            self._reset_physics_wide(self.np_random)
        else:
            self._reset_physics(self.np_random)
        self._t = 0
        x = self._state()
        distance = self.distance(x)
        info = {"distance": distance, "success": self.is_success(x), "goal": self.goal.copy()}
        return self._observation(x), info

    def step(self, action):
        """Apply ``action`` (clipped to the limits) for ``dt`` seconds; see the module docstring for info."""
        if self._t is None:
            raise RuntimeError("call reset() before step()")
        if self._t >= self.horizon:
            raise RuntimeError(f"the episode ended after {self.horizon} steps; call reset()")
        u = self._validated_action(action)
        x = self._state()
        cost = float(self._cost.eval(x[None, :], u[None, :]).l[0])
        self._advance(u)
        self._t += 1
        x_next = self._state()
        distance = self.distance(x_next)
        info = {
            "cost": cost,
            "distance": distance,
            "success": self.is_success(x_next),
            "action": u,
            "t": self._t,
        }
        truncated = self._t >= self.horizon
        return self._observation(x_next), -cost, False, truncated, info

    def render(self) -> np.ndarray:
        """The current image, uint8 (H, W, 3) RGB (works with ``image_obs=False`` too)."""
        if self._t is None:
            raise RuntimeError("call reset() before render()")
        return self._render_image()

    # ---- task quantities ------------------------------------------------------------------------

    @property
    def state(self) -> np.ndarray:
        """A copy of the current state vector."""
        if self._t is None:
            raise RuntimeError("call reset() first")
        return self._state().copy()

    def _states(self, state: np.ndarray) -> np.ndarray:
        """``state`` as a float array of a state (dx,) or states (..., dx); ValueError for another last dimension."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape[-1] != self.state_dim:
            raise ValueError(f"state must end in dimension {self.state_dim}, got shape {state.shape}")
        return state

    def _states_and_goal(self, state: np.ndarray, goal: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_states` and ``goal`` (default: the current goal; RuntimeError before there is one)."""
        goal = self.goal if goal is None else np.asarray(goal, dtype=np.float64)
        if goal is None:
            raise RuntimeError("no goal yet: call reset() or pass goal")
        return self._states(state), goal

    def distance(self, state: np.ndarray, goal: np.ndarray | None = None) -> float | np.ndarray:
        """End-effector distance to ``goal`` (default: the current goal) for a state (dx,) or states (..., dx)."""
        state, goal = self._states_and_goal(state, goal)
        d = np.linalg.norm(state[..., list(self.ee_pos_idx)] - goal, axis=-1)
        return float(d) if d.ndim == 0 else d

    def is_success(self, state: np.ndarray, goal: np.ndarray | None = None) -> bool | np.ndarray:
        """The task's success criterion for a state (dx,) or states (..., dx): by default
        ``distance(state, goal) < success_threshold``; a task with another criterion overrides this."""
        ok = np.asarray(self.distance(state, goal)) < self.success_threshold
        return bool(ok) if ok.ndim == 0 else ok

    def cost_model(self, goal: Sequence[float] | None = None) -> SumCost:
        """The task's cost model for ``goal`` (default: the current episode's goal).

        ``StateDistanceCost`` on the end-effector position entries (``ee_pos_idx``) with target the goal
        (weights ``cost_l2``, ``cost_l1``) plus ``ActionCost`` with weights ``cost_action /
        action_scale**2`` (so a unit action costs ``cost_action / 2`` per dimension and step). It is a
        fresh copy: changing it does not change the environment's ``info["cost"]``.
        """
        if goal is not None:
            return self._build_cost(self._validated_goal(goal))
        if self._cost is None:
            raise RuntimeError("no goal yet: call reset() first or pass goal=")
        return copy.deepcopy(self._cost)

    # ---- helpers --------------------------------------------------------------------------------

    def _build_cost(self, goal: np.ndarray) -> SumCost:
        return SumCost(terms=[
            StateDistanceCost(target=np.array(goal, dtype=np.float64), idx=list(self.ee_pos_idx),
                              l2=self.cost_l2, l1=self.cost_l1),
            ActionCost(weights=self.cost_action / self.action_scale**2),
        ])

    def _validated_action(self, action) -> np.ndarray:
        try:
            u = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"action must be a numeric array of shape ({self.action_dim},)") from err
        if u.shape != (self.action_dim,):
            raise ValueError(f"action must have shape ({self.action_dim},), got {u.shape}")
        if not np.all(np.isfinite(u)):
            raise ValueError(f"action contains NaN or Inf: {u}")
        return np.clip(u, self.action_space.low, self.action_space.high)

    def _validated_goal(self, goal) -> np.ndarray:
        try:
            g = np.asarray(goal, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"goal must be a numeric array of shape ({self.goal_dim},)") from err
        if g.shape != (self.goal_dim,):
            raise ValueError(f"goal must have shape ({self.goal_dim},), got {g.shape}")
        if not np.all(np.isfinite(g)):
            raise ValueError(f"goal contains NaN or Inf: {g}")
        self._check_goal(g)
        return g.copy()

    def _observation(self, x: np.ndarray) -> dict[str, np.ndarray]:
        obs = {"state": x.copy()}
        if self.image_obs:
            obs["image"] = self._render_image()
        return obs

    # ---- what each task provides ----------------------------------------------------------------

    def _sample_goal(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _check_goal(self, goal: np.ndarray) -> None:
        """Raise ValueError if the goal is outside what the task can reach."""
        raise NotImplementedError

    def _reset_physics(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _reset_physics_wide(self, rng: np.random.Generator) -> None:
        """The initial state of ``reset(options={"wide_start": True})``: spread over the task's workspace,
        for exploration (e.g. a model's pretraining data), where the task's own start is narrow."""
        raise ValueError(f"{type(self).__name__} has no wide start (reset option 'wide_start')")

    def _advance(self, u: np.ndarray) -> None:
        raise NotImplementedError

    def _state(self) -> np.ndarray:
        raise NotImplementedError

    def _render_image(self) -> np.ndarray:
        raise NotImplementedError
