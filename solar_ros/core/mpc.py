"""Receding-horizon model-predictive control by the cross-entropy method (CEM), on a linear latent model.

The SOLAR paper's MPC ablation: the same learned model (latent dynamics x' = A x + B u + c, one model or one per
step, and the latent cost LQR-FLM would minimise), but the action of each step comes from a plan made at that step
from the current (filtered) latent, of which only the first action is applied. At step t with horizon H the plan
u_t .. u_{t+h-1} (h = min(H, T - t), the steps left in the episode) minimises

    sum_{s=t}^{t+h-1} c_s(x_s, u_s)  +  c_{t+h}(x_{t+h}, 0)   (the last term only where t + h < T),

the predicted states following the model's mean dynamics from x_t. The last term values where the plan
leaves the state when the episode goes on beyond it (the state part of the next step's cost). CEM
(:func:`cem_plan`): sample action sequences from a Gaussian per step, keep the ``elites`` cheapest, refit the
Gaussian to them, ``iterations`` times; the sequences are clipped to the action limits before they are
costed, and the returned plan is the final mean (clipped). :class:`CEMController` keeps the plan between
steps, shifted by one step, as the next step's initial mean (warm start).

Everything here is numpy, seeded by the generator it is given, and independent of ROS and the learning loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .lqr_flm import QuadraticCost


@dataclass(frozen=True)
class CEMSettings:
    """Settings of the cross-entropy planner."""

    horizon: int = 10
    """Steps planned ahead (fewer near the episode's end)."""
    samples: int = 200
    """Action sequences sampled per CEM iteration."""
    elites: int = 20
    """The cheapest this many sequences refit the sampling Gaussian."""
    iterations: int = 5
    """CEM iterations per plan."""
    init_std: float = 0.5
    """Std of the first iteration's samples, in units of the action scale the controller is given."""
    min_std: float = 0.01
    """The sampling std never falls below this (same units), so the search does not collapse."""

    def __post_init__(self) -> None:
        for name in ("horizon", "samples", "elites", "iterations"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"CEMSettings.{name} must be a positive integer, got {value!r}")
        if self.elites > self.samples:
            raise ValueError(f"CEMSettings.elites ({self.elites}) cannot exceed samples ({self.samples})")
        for name in ("init_std", "min_std"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"CEMSettings.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class LinearModel:
    """Mean latent dynamics x' = A x + B u + c: one model for every step (A (dx, dx), B (dx, du), c (dx,)), or one per
    step (A (K, dx, dx), B (K, dx, du), c (K, dx): step t moves by entry min(t, K - 1))."""

    A: np.ndarray
    """(dx, dx) or (K, dx, dx)."""
    B: np.ndarray
    """(dx, du) or (K, dx, du)."""
    c: np.ndarray
    """(dx,) or (K, dx)."""

    def __post_init__(self) -> None:
        A, B, c = (np.asarray(a, dtype=np.float64) for a in (self.A, self.B, self.c))
        lead = A.shape[:-2] if A.ndim in (2, 3) else None
        dx = A.shape[-1] if A.ndim in (2, 3) else -1
        if (lead is None or A.shape[-2:] != (dx, dx) or B.ndim != A.ndim or B.shape[:-1] != lead + (dx,)
                or c.shape != lead + (dx,) or (lead and lead[0] < 1)):
            raise ValueError("LinearModel needs A (dx, dx), B (dx, du), c (dx,), or each with a leading steps axis; "
                             f"got {A.shape}, {B.shape}, {c.shape}")
        if not all(np.all(np.isfinite(a)) for a in (A, B, c)):
            raise ValueError("LinearModel contains NaN or Inf")
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "B", B)
        object.__setattr__(self, "c", c)
        # [x; u] @ AB[k] = A_k x + B_k u, stacked once for the planner's inner loop
        object.__setattr__(self, "_AB", np.concatenate([np.swapaxes(A, -1, -2), np.swapaxes(B, -1, -2)], axis=-2)
                           .reshape((-1,) + (A.shape[-1] + B.shape[-1], A.shape[-1])))
        object.__setattr__(self, "_c", c.reshape(-1, A.shape[-1]))

    @property
    def dx(self) -> int:
        return self.A.shape[-1]

    @property
    def du(self) -> int:
        return self.B.shape[-1]

    @property
    def steps(self) -> int:
        """How many per-step models it holds (1: the same model at every step)."""
        return self.A.shape[0] if self.A.ndim == 3 else 1

    def transition(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(AB, c) of the step from ``t``: [x; u] @ AB + c = A x + B u + c."""
        k = min(int(t), self.steps - 1)
        return self._AB[k], self._c[k]


def plan_costs(model: LinearModel, cost: QuadraticCost, x0: np.ndarray, t0: int, U: np.ndarray) -> np.ndarray:
    """The planned cost (module docstring) of each action sequence in ``U`` (S, h, du) from latent ``x0``
    at episode step ``t0``: (S,)."""
    S, h, du = U.shape
    dx = model.dx
    T = cost.T
    if h < 1 or t0 < 0 or t0 + h > T:
        raise ValueError(f"a plan of {h} steps from step {t0} does not fit an episode of {T} steps")
    Z = np.empty((S, dx + du))
    Z[:, :dx] = np.asarray(x0, dtype=np.float64)
    total = np.zeros(S)
    for s in range(h):
        t = t0 + s
        Z[:, dx:] = U[:, s]
        total += np.sum((Z @ (0.5 * cost.Cm[t]) + cost.cv[t]) * Z, axis=1) + cost.cc[t]
        AB, c = model.transition(t)
        Z[:, :dx] = Z @ AB + c  # A x + B u + c
    if t0 + h < T:  # the state the plan leaves, costed as the next step's state part
        t = t0 + h
        x = Z[:, :dx]
        total += np.sum((x @ (0.5 * cost.Cm[t, :dx, :dx]) + cost.cv[t, :dx]) * x, axis=1) + cost.cc[t]
    return total


def cem_plan(model: LinearModel, cost: QuadraticCost, x0: np.ndarray, t0: int, mean: np.ndarray, std: np.ndarray,
             low: np.ndarray, high: np.ndarray, rng: np.random.Generator, settings: CEMSettings,
             min_std: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """CEM from the Gaussian ``mean``, ``std`` (h, du) over action sequences of h steps from ``x0`` at step ``t0``.

    Returns the plan (the final mean, clipped to [low, high]; (h, du)) and its planned cost. ``min_std``
    (du,): the floor of the sampling std per action (default 0)."""
    mean = np.asarray(mean, dtype=np.float64).copy()
    std = np.asarray(std, dtype=np.float64).copy()
    floor = np.zeros(mean.shape[-1]) if min_std is None else np.asarray(min_std, dtype=np.float64)
    for _ in range(settings.iterations):
        U = np.clip(mean + std * rng.standard_normal((settings.samples,) + mean.shape), low, high)
        U[0] = np.clip(mean, low, high)  # the current mean competes too: an iteration never makes the plan worse
        costs = plan_costs(model, cost, x0, t0, U)
        elite = U[np.argsort(costs, kind="stable")[: settings.elites]]
        mean, std = elite.mean(axis=0), np.maximum(elite.std(axis=0), floor)
    plan = np.clip(mean, low, high)
    return plan, float(plan_costs(model, cost, x0, t0, plan[None])[0])


class CEMController:
    """Receding-horizon CEM on a linear latent model and a per-step quadratic latent cost of T steps.

    :meth:`act` plans from the given latent at step t and returns the plan's first action; the rest of the
    plan, shifted by one step (its last step repeated), is the next call's initial mean. ``action_scale``
    (du,) sets the units of the settings' stds; ``low``, ``high`` the action limits."""

    def __init__(self, model: LinearModel, cost: QuadraticCost, settings: CEMSettings, action_scale: np.ndarray,
                 low: np.ndarray, high: np.ndarray, rng: np.random.Generator):
        if cost.dxu != model.dx + model.du:
            raise ValueError(f"the cost is over {cost.dxu} numbers, the model's [x; u] has {model.dx + model.du}")
        self.model, self.cost, self.settings, self.rng = model, cost, settings, rng
        self.scale = np.broadcast_to(np.asarray(action_scale, dtype=np.float64), (model.du,)).copy()
        self.low, self.high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self._plan: np.ndarray | None = None
        self.last_cost = math.nan
        """The planned cost of the last plan."""

    @property
    def T(self) -> int:
        return self.cost.T

    def act(self, t: int, x: np.ndarray) -> np.ndarray:
        """The action at episode step ``t`` from latent ``x``."""
        if not 0 <= t < self.T:
            raise ValueError(f"step {t} is outside the episode's {self.T} steps")
        h = min(self.settings.horizon, self.T - t)
        if t == 0 or self._plan is None:
            mean = np.zeros((h, self.model.du))
        else:
            shifted = self._plan[1:] if len(self._plan) > 1 else self._plan
            mean = np.concatenate([shifted, np.repeat(shifted[-1:], max(0, h - len(shifted)), axis=0)])[:h]
        std = np.broadcast_to(self.settings.init_std * self.scale, (h, self.model.du))
        self._plan, self.last_cost = cem_plan(self.model, self.cost, x, t, mean, std, self.low, self.high, self.rng,
                                              self.settings, min_std=self.settings.min_std * self.scale)
        return self._plan[0].copy()
