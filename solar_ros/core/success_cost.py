"""A cost learned from sparse success labels: SOLAR's extension to a person's "success now" (mug pushing).

Formulation. A person labels, during some episodes, the moment the task succeeds. Each frame's latent x gets a
target y: 1 from ``window`` steps before an episode's first label to its end (success is seen, then pressed;
a stacked block or a pushed mug stays where it is), 0 on every other frame (before it, and in episodes nobody
labelled). A logistic model with a quadratic log-odds

    log p(success | x) / (1 - p(success | x)) = f(x) = 0.5 x^T W x + w^T x + b

is fitted to them by ridge-penalised maximum likelihood (Newton's method; the features scaled to unit RMS, the
constant not penalised). The cost LQR-FLM minimises is the negative log-odds, -f(x) = 0.5 x^T (-W) x - w^T x - b,
with -W projected onto the positive semi-definite cone and the linear and constant terms refitted through the same
likelihood with the curvature held: a quadratic bowl whose minimum is where the model is most sure of success,
and which rises where it is sure of failure. Minimising the expected negative log-odds pushes the latent
trajectory into the success region; unlike the dense cost no distance is observed, so the bowl's shape is what the
labels and the representation can tell.

Everything here is numpy and independent of the learning loop: :func:`success_targets` turns label counts per step
into the targets, :func:`fit_success_model` fits f, :func:`success_cost` returns the bowl as LQR-FLM's cost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .cost_fit import project_psd, quadratic_features


class NoSuccessLabels(ValueError):
    """The data hold no success label (or nothing but successes): the success model cannot be fitted yet."""


def success_targets(labels: np.ndarray, window: int = 3) -> np.ndarray:
    """Targets (N, T) in {0, 1} from the label counts per step ``labels`` (N, T): 1 from ``window`` steps before
    an episode's first label to its end, 0 elsewhere."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (N, T), got {labels.shape}")
    if not isinstance(window, (int, np.integer)) or window < 0:
        raise ValueError(f"window must be a non-negative integer, got {window!r}")
    N, T = labels.shape
    y = np.zeros((N, T))
    for n in range(N):
        hits = np.flatnonzero(labels[n] > 0)
        if hits.size:
            y[n, max(0, int(hits[0]) - window):] = 1.0
    return y


@dataclass(frozen=True)
class SuccessModel:
    """Quadratic log-odds of success f(x) = 0.5 x^T W x + w^T x + b."""

    W: np.ndarray
    """(dx, dx) symmetric."""
    w: np.ndarray
    """(dx,)."""
    b: float

    def log_odds(self, X: np.ndarray) -> np.ndarray:
        """f at every row of X (..., dx)."""
        X = np.asarray(X, dtype=np.float64)
        return 0.5 * np.einsum("...i,ij,...j->...", X, self.W, X) + X @ self.w + self.b

    def probability(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.log_odds(X), -50, 50)))


def _newton_logistic(Phi: np.ndarray, y: np.ndarray, ridge: float, iterations: int = 100,
                     offset: np.ndarray | None = None) -> np.ndarray:
    """argmax sum [y log s + (1 - y) log (1 - s)] - 0.5 ridge M |theta[:-1]|^2, s = sigma(Phi theta + offset), with the
    columns of Phi scaled to unit RMS (the last column, the constant, is not penalised); M rows."""
    M, n = Phi.shape
    scale = np.sqrt(np.mean(Phi**2, axis=0))
    scale[scale == 0] = 1.0
    A = Phi / scale
    off = np.zeros(M) if offset is None else offset
    penalty = np.full(n, ridge * M)
    penalty[-1] = 0.0
    theta = np.zeros(n)

    def objective(th: np.ndarray) -> float:
        z = A @ th + off
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(penalty * th**2))

    current = objective(theta)
    for _ in range(iterations):
        z = A @ theta + off
        s = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        grad = A.T @ (s - y) + penalty * theta
        H = (A * (s * (1 - s))[:, None]).T @ A + np.diag(penalty) + 1e-9 * np.eye(n)
        step = np.linalg.solve(H, grad)
        t = 1.0
        while t > 1e-6:  # halve the Newton step until the penalised likelihood improves
            trial = objective(theta - t * step)
            if trial <= current:
                break
            t *= 0.5
        theta, previous, current = theta - t * step, current, trial
        if previous - current < 1e-10 * max(1.0, abs(current)):
            break
    return theta / scale


def fit_success_model(X: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> SuccessModel:
    """The quadratic logistic model of ``y`` (..., ) in {0, 1} on the latents ``X`` (..., dx) (module docstring).
    :class:`NoSuccessLabels` when ``y`` is all 0 or all 1."""
    X = np.asarray(X, dtype=np.float64).reshape(-1, np.shape(X)[-1])
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if X.shape[0] != y.size:
        raise ValueError(f"{X.shape[0]} latents but {y.size} targets")
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be >= 0, got {ridge!r}")
    if y.min() == y.max():
        raise NoSuccessLabels("no success label yet" if y.max() == 0 else "every frame is labelled a success")
    d = X.shape[1]
    theta = _newton_logistic(quadratic_features(X), y, ridge)
    iu, ju = np.triu_indices(d)
    W = np.zeros((d, d))
    W[iu, ju] = theta[: iu.size]
    W[ju, iu] = theta[: iu.size]
    return SuccessModel(W, theta[iu.size: iu.size + d], float(theta[-1]))


def success_cost(X: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray, float,
                                                                             SuccessModel]:
    """The negative log-odds as a convex quadratic cost 0.5 x^T C x + c^T x + c0 (module docstring): C = -W
    projected onto the PSD cone, then c, c0 refitted by the likelihood with that curvature. Returns (C, c, c0)
    and the success model they came from (f = -(0.5 x^T C x + c^T x + c0))."""
    X = np.asarray(X, dtype=np.float64).reshape(-1, np.shape(X)[-1])
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    model = fit_success_model(X, y, ridge)
    C = project_psd(-model.W)
    # the linear and constant terms again, with the log-odds' curvature held at -C
    fixed = -0.5 * np.einsum("mi,ij,mj->m", X, C, X)
    lin = _newton_logistic(np.hstack([X, np.ones((X.shape[0], 1))]), y, ridge, offset=fixed)
    held = SuccessModel(-C, lin[:-1], float(lin[-1]))
    return C, -held.w, -held.b, held
