"""Cost models with analytic second-order expansions (the terms Guided Policy Search uses).

Every cost model maps a trajectory (X (T, dx), U (T, du)) to a :class:`CostExpansion`.
Costs are costs: lower is better. Environments report ``-cost`` as the gymnasium reward, and the
learning code always consumes costs, never rewards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from .types import CostExpansion


class CostModel(Protocol):
    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        """Cost and its derivatives at every step of one trajectory X (T, dx), U (T, du)."""
        ...


def ramp_weights(T: int, final_multiplier: float, mode: str) -> np.ndarray:
    """Per-step weights: 'constant', 'linear' (growing to 1) or 'final' (last step only)."""
    if mode == "constant":
        w = np.ones(T)
    elif mode == "linear":
        w = np.arange(1, T + 1) / T
    elif mode == "final":
        w = np.zeros(T)
        w[-1] = 1.0
    else:
        raise ValueError(f"unknown ramp mode {mode!r}: use 'constant', 'linear' or 'final'")
    w[-1] *= final_multiplier
    return w


def _check_trajectory(X: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape and finiteness checks shared by every cost model's ``eval``."""
    X = np.asarray(X, dtype=np.float64)
    U = np.asarray(U, dtype=np.float64)
    if X.ndim != 2 or U.ndim != 2:
        raise ValueError(f"cost eval needs X (T, dx) and U (T, du), got {X.shape} and {U.shape}")
    if X.shape[0] != U.shape[0]:
        raise ValueError(f"cost eval: X has {X.shape[0]} steps but U has {U.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError("cost eval: empty trajectory (T = 0)")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(U))):
        raise ValueError("cost eval: X or U contains NaN or Inf")
    return X, U


@dataclass
class StateDistanceCost:
    """Distance of selected state entries to a target: l2 * 0.5 d^2 + l1 * sqrt(alpha + d^2).

    d = weights * (x[idx] - target). The l1 term (a smooth absolute value) keeps pulling
    when the distance is already small; the l2 term dominates far away.
    """

    target: np.ndarray
    """Target values of x[idx]."""
    idx: Sequence[int]
    """Which state entries the distance is measured on."""
    weights: np.ndarray | float = 1.0
    """Per-entry scale of the difference."""
    l1: float = 0.0
    """Weight of the smooth-l1 term sqrt(alpha + |d|^2)."""
    l2: float = 1.0
    """Weight of the quadratic term 0.5 |d|^2."""
    alpha: float = 1e-5
    """Smoothing of the l1 term near zero."""
    ramp: str = "constant"
    """How the weight varies over time: 'constant', 'linear' or 'final'."""
    final_multiplier: float = 1.0
    """Extra weight on the last step."""

    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        X, U = _check_trajectory(X, U)
        T, dx = X.shape
        du = U.shape[1]
        idx = np.asarray(self.idx, dtype=int)
        if idx.ndim != 1 or idx.size == 0 or np.any(idx < -dx) or np.any(idx >= dx):
            raise ValueError(f"StateDistanceCost idx {self.idx!r} does not index a state of size {dx}")
        target = np.asarray(self.target, dtype=np.float64)
        if target.ndim > 1 or target.size not in (1, idx.size) or not np.all(np.isfinite(target)):
            raise ValueError(f"StateDistanceCost target must be finite with {idx.size} entries, got {target.shape}")
        w = np.broadcast_to(np.asarray(self.weights, dtype=np.float64), idx.shape)
        wt = ramp_weights(T, self.final_multiplier, self.ramp)
        d = (X[:, idx] - target) * w  # (T, m)
        sq = np.sum(d**2, axis=1)
        root = np.sqrt(self.alpha + sq)
        l = wt * (0.5 * self.l2 * sq + self.l1 * root)
        # Derivatives with respect to d, then chain through d = w * (x[idx] - target).
        ld = wt[:, None] * (self.l2 * d + self.l1 * d / root[:, None])
        eye = np.eye(len(idx))
        ldd = wt[:, None, None] * (
            self.l2 * eye
            + self.l1 * (eye / root[:, None, None] - d[:, :, None] * d[:, None, :] / root[:, None, None] ** 3)
        )
        out = CostExpansion.zeros(T, dx, du)
        out.l = l
        out.lx[:, idx] = ld * w
        out.lxx[np.ix_(np.arange(T), idx, idx)] = ldd * (w[:, None] * w[None, :])
        return out


@dataclass
class ActionCost:
    """Torque / effort penalty 0.5 * sum_i weights_i * u_i^2 at every step."""

    weights: np.ndarray | float = 1e-2

    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        X, U = _check_trajectory(X, U)
        T, dx = X.shape
        du = U.shape[1]
        w = np.broadcast_to(np.asarray(self.weights, dtype=np.float64), (du,))
        out = CostExpansion.zeros(T, dx, du)
        out.l = 0.5 * np.sum(w * U**2, axis=1)
        out.lu = w * U
        out.luu[:] = np.diag(w)
        return out


@dataclass
class SumCost:
    """Weighted sum of cost models."""

    terms: list = field(default_factory=list)
    scales: list[float] | None = None

    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        if not self.terms:
            raise ValueError("SumCost needs at least one term")
        scales = self.scales or [1.0] * len(self.terms)
        total = None
        for term, s in zip(self.terms, scales):
            e = term.eval(X, U).scaled(s)
            total = e if total is None else total + e
        return total
