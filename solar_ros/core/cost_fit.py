"""Quadratic cost models fitted to observed (state, action, cost) data.

Fits c(x, u) ~ 0.5 z^T C z + c^T z + c0 with z = [x; u] by ridge-regularised least squares on
the monomials of z (SOLAR learns such a cost on its latent state). Optionally C is projected onto
the positive semi-definite cone (eigenvalue clipping) so LQR on the fitted cost stays well posed;
the linear and constant terms are then refitted with C held fixed. The result is a
:class:`~solar_ros.core.lqr_flm.QuadraticCost`, the type LQR-FLM and iLQR consume.
"""
from __future__ import annotations

import math

import numpy as np

from .lqr_flm import QuadraticCost


def quadratic_features(Z: np.ndarray) -> np.ndarray:
    """Monomials of z for the model 0.5 z^T C z + c^T z + c0.

    Columns: 0.5 z_i^2 (i = j) and z_i z_j (i < j) in upper-triangle order, then z, then 1; so the
    least-squares weights are the upper triangle of C, then c, then c0.
    """
    Z = np.asarray(Z, dtype=np.float64)
    d = Z.shape[1]
    iu, ju = np.triu_indices(d)
    quad = Z[:, iu] * Z[:, ju]
    quad[:, iu == ju] *= 0.5
    return np.hstack([quad, Z, np.ones((Z.shape[0], 1))])


def project_psd(C: np.ndarray, min_eigenvalue: float = 0.0) -> np.ndarray:
    """Nearest symmetric matrix (Frobenius norm) with eigenvalues >= min_eigenvalue."""
    C = np.asarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or not np.all(np.isfinite(C)):
        raise ValueError(f"project_psd needs a finite square matrix, got shape {C.shape}")
    if not math.isfinite(min_eigenvalue) or min_eigenvalue < 0:
        raise ValueError(f"min_eigenvalue must be >= 0, got {min_eigenvalue!r}")
    w, V = np.linalg.eigh(0.5 * (C + C.T))
    return (V * np.maximum(w, min_eigenvalue)) @ V.T


def fit_quadratic_cost(
    X: np.ndarray,
    U: np.ndarray,
    costs: np.ndarray,
    T: int | None = None,
    ridge: float = 1e-6,
    psd: bool = False,
    min_eigenvalue: float = 0.0,
    sample_weights: np.ndarray | None = None,
) -> QuadraticCost:
    """One quadratic cost for all time steps, fitted to every (x, u, cost) sample.

    Data are batches X (N, T, dx), U (N, T, du), costs (N, T) (T defaults to the batch's T) or flat
    samples X (M, dx), U (M, du), costs (M,) (then T is required). ``ridge`` penalises the weights
    of the features normalised to unit root-mean-square, so it is scale free (the constant is not
    penalised). ``psd`` projects C onto eigenvalues >= ``min_eigenvalue`` and refits c, c0.
    ``sample_weights`` (same leading shape as ``costs``) weight the squared errors.
    """
    X, U, costs, weights, batch_T = _flatten(X, U, costs, sample_weights)
    T = batch_T if T is None else T
    if T is None or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"a horizon T >= 1 is needed for flat samples, got {T!r}")
    _check_settings(ridge, min_eigenvalue)
    C, c, c0 = _fit(np.hstack([X, U]), costs, weights, ridge, psd, min_eigenvalue)
    return QuadraticCost.constant(C, c, c0, int(T))


def fit_quadratic_cost_per_step(
    X: np.ndarray,
    U: np.ndarray,
    costs: np.ndarray,
    ridge: float = 1e-6,
    psd: bool = False,
    min_eigenvalue: float = 0.0,
    time_bandwidth: float = 0.0,
) -> QuadraticCost:
    """A separate quadratic at each step t from batches X (N, T, dx), U (N, T, du), costs (N, T).

    With ``time_bandwidth`` = 0 only step t's N samples are used; with a positive bandwidth (in
    steps) every sample also counts at step t with weight exp(-0.5 ((s - t) / bandwidth)^2), which
    shares data between neighbouring steps when N alone is too few for the
    (d+1)(d+2)/2 coefficients.
    """
    X, U, costs = (np.asarray(a, dtype=np.float64) for a in (X, U, costs))
    if X.ndim != 3 or U.ndim != 3 or costs.ndim != 2:
        raise ValueError(
            f"per-step fitting needs X (N, T, dx), U (N, T, du), costs (N, T); got {X.shape}, {U.shape}, {costs.shape}"
        )
    _flatten(X, U, costs, None)  # shape, emptiness and NaN checks
    if not math.isfinite(time_bandwidth) or time_bandwidth < 0:
        raise ValueError(f"time_bandwidth must be >= 0, got {time_bandwidth!r}")
    _check_settings(ridge, min_eigenvalue)
    N, T, dx = X.shape
    Z = np.concatenate([X, U], axis=2)
    steps = np.arange(T)
    Cm, cv, cc = [], [], []
    for t in range(T):
        if time_bandwidth == 0:
            Zt, yt, wt = Z[:, t], costs[:, t], np.ones(N)
        else:
            w_time = np.exp(-0.5 * ((steps - t) / time_bandwidth) ** 2)
            Zt, yt = Z.reshape(N * T, -1), costs.reshape(-1)
            wt = np.tile(w_time, N)
        C, c, c0 = _fit(Zt, yt, wt, ridge, psd, min_eigenvalue)
        Cm.append(C)
        cv.append(c)
        cc.append(c0)
    return QuadraticCost(np.stack(Cm), np.stack(cv), np.array(cc))


def _check_settings(ridge: float, min_eigenvalue: float) -> None:
    if not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge!r}")
    if not math.isfinite(min_eigenvalue) or min_eigenvalue < 0:
        raise ValueError(f"min_eigenvalue must be >= 0, got {min_eigenvalue!r}")


def _flatten(X, U, costs, weights):
    """Validate and flatten to (M, dx), (M, du), (M,), (M,); also return the batch T (or None)."""
    X, U, costs = (np.asarray(a, dtype=np.float64) for a in (X, U, costs))
    if X.ndim == 3 and U.ndim == 3 and costs.ndim == 2:
        if not (X.shape[:2] == U.shape[:2] == costs.shape):
            raise ValueError(f"shapes disagree: X {X.shape}, U {U.shape}, costs {costs.shape}")
        batch_T = X.shape[1]
    elif X.ndim == 2 and U.ndim == 2 and costs.ndim == 1:
        if not (X.shape[0] == U.shape[0] == costs.shape[0]):
            raise ValueError(f"shapes disagree: X {X.shape}, U {U.shape}, costs {costs.shape}")
        batch_T = None
    else:
        raise ValueError(
            f"need X (N, T, dx), U (N, T, du), costs (N, T) or X (M, dx), U (M, du), costs (M,); "
            f"got {X.shape}, {U.shape}, {costs.shape}"
        )
    if costs.size == 0 or X.shape[-1] + U.shape[-1] == 0:
        raise ValueError("no data to fit a cost to")
    for name, a in (("X", X), ("U", U), ("costs", costs)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or Inf")
    if weights is None:
        w = np.ones(costs.size)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != costs.shape:
            raise ValueError(f"sample_weights must have shape {costs.shape}, got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
            raise ValueError("sample_weights must be finite, non-negative and not all zero")
        w = w.reshape(-1)
    return X.reshape(costs.size, X.shape[-1]), U.reshape(costs.size, U.shape[-1]), costs.reshape(-1), w, batch_T


def _ridge_lstsq(Phi: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float) -> np.ndarray:
    """argmin sum w (Phi theta - y)^2 + ridge * sum(w) * |S theta|^2, with S the RMS feature scales.

    The last column is the constant and is not penalised.
    """
    sw = np.sqrt(w / w.sum())
    A = Phi * sw[:, None]
    b = y * sw
    scale = np.sqrt(np.sum(A**2, axis=0))
    scale[scale == 0] = 1.0  # a feature that is always zero: its weight is left at 0 by the ridge
    A = A / scale
    n = Phi.shape[1]
    if ridge > 0:
        penalty = np.sqrt(ridge) * np.eye(n)[:-1]
        A = np.vstack([A, penalty])
        b = np.concatenate([b, np.zeros(n - 1)])
    theta, *_ = np.linalg.lstsq(A, b, rcond=None)
    return theta / scale


def _fit(Z: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float, psd: bool, min_eigenvalue: float):
    d = Z.shape[1]
    theta = _ridge_lstsq(quadratic_features(Z), y, w, ridge)
    iu, ju = np.triu_indices(d)
    C = np.zeros((d, d))
    C[iu, ju] = theta[: iu.size]
    C[ju, iu] = theta[: iu.size]
    c, c0 = theta[iu.size: iu.size + d], theta[-1]
    if psd:
        C = project_psd(C, min_eigenvalue)
        # With C fixed, the best linear and constant terms for what C leaves unexplained.
        residual = y - 0.5 * np.einsum("mi,ij,mj->m", Z, C, Z)
        lin = _ridge_lstsq(np.hstack([Z, np.ones((Z.shape[0], 1))]), residual, w, ridge)
        c, c0 = lin[:d], lin[-1]
    return C, c, float(c0)
