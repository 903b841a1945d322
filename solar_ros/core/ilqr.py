"""Iterative LQR for known nonlinear dynamics x_{t+1} = f(x_t, u_t).

Each iteration linearises the dynamics along the current nominal trajectory (user Jacobians or
central finite differences), takes the cost model's second-order expansion, runs an LQR backward
pass with Levenberg-Marquardt regularisation of Q_uu, and rolls the new controller out with a
backtracking line search on the feedforward step. Trajectory conventions follow
:mod:`solar_ros.core.types`: T states and T actions, the dynamics applied for t = 0..T-2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.linalg import cho_solve

from .types import CostExpansion, LinearGaussianPolicy

DynamicsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
JacobianFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class ILQRConfig:
    """Settings of :func:`ilqr`."""

    max_iterations: int = 100
    """Most outer iterations (backward pass plus line search)."""
    tolerance: float = 1e-6
    """Converged when an accepted step lowers the cost by less than tolerance * |cost|."""
    reg_init: float = 0.0
    """Initial Levenberg-Marquardt term mu added to Q_uu (0: plain Newton steps)."""
    reg_min: float = 1e-6
    """Smallest non-zero mu; decreasing below it sets mu to 0."""
    reg_max: float = 1e10
    """Give up when mu would exceed this."""
    reg_factor: float = 4.0
    """mu is multiplied by this on failure and divided by it on success."""
    line_search_steps: int = 12
    """Feedforward step sizes tried: 1, 1/2, 1/4, ... (this many)."""
    armijo: float = 1e-4
    """Accept a step when actual decrease >= armijo * decrease predicted by the quadratic model."""
    fd_eps: float = 1e-6
    """Step of the central finite differences when no Jacobian function is given."""

    def __post_init__(self) -> None:
        for name in ("tolerance", "reg_min", "reg_max", "fd_eps"):
            v = getattr(self, name)
            if not math.isfinite(v) or v <= 0:
                raise ValueError(f"ILQRConfig.{name} must be positive and finite, got {v!r}")
        if not math.isfinite(self.reg_init) or self.reg_init < 0:
            raise ValueError(f"ILQRConfig.reg_init must be >= 0, got {self.reg_init!r}")
        if not self.reg_factor > 1:
            raise ValueError(f"ILQRConfig.reg_factor must exceed 1, got {self.reg_factor!r}")
        if not 0 <= self.armijo < 1:
            raise ValueError(f"ILQRConfig.armijo must be in [0, 1), got {self.armijo!r}")
        for name in ("max_iterations", "line_search_steps"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"ILQRConfig.{name} must be a positive integer, got {v!r}")


@dataclass
class ILQRResult:
    """Optimised nominal trajectory and the local feedback controller about it."""

    X: np.ndarray
    """(T, dx) nominal states."""
    U: np.ndarray
    """(T, du) nominal actions."""
    K: np.ndarray
    """(T, du, dx) feedback gains of the (unregularised where possible) LQR about the nominal."""
    cost: float
    """Total cost of the nominal trajectory."""
    cost_history: list[float] = field(default_factory=list)
    """Total cost after each accepted iteration (first entry: the initial rollout)."""
    iterations: int = 0
    """Outer iterations run."""
    converged: bool = False
    """True when the relative cost change fell below the tolerance."""
    reg: float = 0.0
    """Levenberg-Marquardt term in use when the optimisation stopped."""

    def policy(self, noise_cov) -> LinearGaussianPolicy:
        """u = K_t (x - x_nom_t) + u_nom_t + N(0, noise_cov) as a LinearGaussianPolicy."""
        return policy_about_nominal(self.X, self.U, self.K, noise_cov)


def policy_about_nominal(X_nom: np.ndarray, U_nom: np.ndarray, K: np.ndarray, noise_cov) -> LinearGaussianPolicy:
    """Linear-Gaussian policy u_t = K_t (x_t - X_nom[t]) + U_nom[t] + N(0, noise_cov_t).

    ``noise_cov`` is (du, du) for every step, (T, du, du) per step, or a positive scalar variance
    (isotropic).
    """
    X_nom = np.asarray(X_nom, dtype=np.float64)
    U_nom = np.asarray(U_nom, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if X_nom.ndim != 2 or U_nom.ndim != 2 or K.shape != (X_nom.shape[0], U_nom.shape[1], X_nom.shape[1]) \
            or U_nom.shape[0] != X_nom.shape[0]:
        raise ValueError(f"need X_nom (T, dx), U_nom (T, du), K (T, du, dx); "
                         f"got {X_nom.shape}, {U_nom.shape}, {K.shape}")
    T, du = U_nom.shape
    cov = np.asarray(noise_cov, dtype=np.float64)
    if cov.ndim == 0:
        if not (math.isfinite(cov) and cov > 0):
            raise ValueError(f"noise variance must be positive and finite, got {float(cov)!r}")
        cov = cov * np.eye(du)
    if cov.shape == (du, du):
        cov = np.tile(cov, (T, 1, 1))
    if cov.shape != (T, du, du):
        raise ValueError(f"noise_cov must be a scalar, (du, du) or (T, du, du) with du={du}, got {cov.shape}")
    k = U_nom - np.einsum("tij,tj->ti", K, X_nom)
    return LinearGaussianPolicy(K.copy(), k, cov)


def finite_difference_jacobians(dynamics_fn: DynamicsFn, x: np.ndarray, u: np.ndarray, eps: float = 1e-6):
    """Central-difference Jacobians (A = df/dx (dx, dx), B = df/du (dx, du)) at (x, u)."""
    x = np.asarray(x, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    dx, du = x.size, u.size
    z = np.concatenate([x, u])
    J = np.empty((dx, dx + du))
    for i in range(dx + du):
        step = np.zeros(dx + du)
        step[i] = eps
        plus = np.asarray(dynamics_fn((z + step)[:dx], (z + step)[dx:]), dtype=np.float64)
        minus = np.asarray(dynamics_fn((z - step)[:dx], (z - step)[dx:]), dtype=np.float64)
        J[:, i] = (plus - minus) / (2 * eps)
    return J[:, :dx], J[:, dx:]


def rollout(dynamics_fn: DynamicsFn, x0: np.ndarray, U: np.ndarray) -> np.ndarray:
    """States X (T, dx) from x0 under the open-loop actions U (T, du)."""
    T = U.shape[0]
    X = np.empty((T, x0.size))
    X[0] = x0
    for t in range(T - 1):
        X[t + 1] = _step(dynamics_fn, X[t], U[t])
    return X


def _step(dynamics_fn: DynamicsFn, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    x_next = np.asarray(dynamics_fn(x, u), dtype=np.float64)
    if x_next.shape != x.shape:
        raise ValueError(f"dynamics_fn returned shape {x_next.shape}, expected {x.shape}")
    return x_next


def ilqr(
    dynamics_fn: DynamicsFn,
    cost_model,
    x0: np.ndarray,
    U_init: np.ndarray,
    jacobian_fn: JacobianFn | None = None,
    config: ILQRConfig | None = None,
) -> ILQRResult:
    """Optimise the open-loop actions of a deterministic system from x0 by iLQR.

    ``dynamics_fn(x, u) -> x_next``; ``cost_model.eval(X, U) -> CostExpansion`` (any model in
    :mod:`solar_ros.core.cost`, or a QuadraticCost); ``jacobian_fn(x, u) -> (A, B)``, else central
    finite differences. The cost never increases between iterations.
    """
    config = config or ILQRConfig()
    x0 = np.asarray(x0, dtype=np.float64)
    U = np.array(U_init, dtype=np.float64)
    if x0.ndim != 1 or x0.size == 0:
        raise ValueError(f"x0 must be a non-empty vector, got shape {x0.shape}")
    if U.ndim != 2 or U.shape[0] < 1 or U.shape[1] < 1:
        raise ValueError(f"U_init must have shape (T, du), got {U.shape}")
    if not (np.all(np.isfinite(x0)) and np.all(np.isfinite(U))):
        raise ValueError("x0 or U_init contains NaN or Inf")
    T, du = U.shape
    dx = x0.size

    def jacobians(X: np.ndarray, U: np.ndarray):
        A, B = np.zeros((T, dx, dx)), np.zeros((T, dx, du))
        for t in range(T - 1):
            if jacobian_fn is None:
                A[t], B[t] = finite_difference_jacobians(dynamics_fn, X[t], U[t], config.fd_eps)
            else:
                At, Bt = (np.asarray(J, dtype=np.float64) for J in jacobian_fn(X[t], U[t]))
                if At.shape != (dx, dx) or Bt.shape != (dx, du):
                    raise ValueError(f"jacobian_fn must return A {(dx, dx)} and B {(dx, du)}, "
                                     f"got {At.shape} and {Bt.shape}")
                A[t], B[t] = At, Bt
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
            raise ValueError("dynamics Jacobians contain NaN or Inf along the nominal trajectory")
        return A, B

    X = rollout(dynamics_fn, x0, U)
    if not np.all(np.isfinite(X)):
        raise ValueError("the initial rollout diverged (NaN or Inf states)")
    expansion = _evaluate(cost_model, X, U)
    cost = float(np.sum(expansion.l))
    history = [cost]
    A, B = jacobians(X, U)
    reg = config.reg_init
    converged = False
    iterations = 0
    alphas = 0.5 ** np.arange(config.line_search_steps)

    while iterations < config.max_iterations and not converged:
        iterations += 1
        solution = _backward(expansion, A, B, reg)
        if solution is None:
            reg = max(reg * config.reg_factor, config.reg_min)
            if reg > config.reg_max:
                break
            continue
        K, k, dV = solution

        accepted = None
        for alpha in alphas:
            X_new, U_new = _forward(dynamics_fn, X, U, K, k, alpha)
            if not (np.all(np.isfinite(X_new)) and np.all(np.isfinite(U_new))):
                continue
            exp_new = _evaluate(cost_model, X_new, U_new)
            cost_new = float(np.sum(exp_new.l))
            predicted = -(alpha * dV[0] + alpha**2 * dV[1])
            if cost_new < cost and (predicted <= 0 or cost - cost_new >= config.armijo * predicted):
                accepted = (X_new, U_new, exp_new, cost_new)
                break

        if accepted is None:
            # The quadratic model promises (almost) nothing: we are at a local optimum.
            if -(dV[0] + dV[1]) < config.tolerance * max(abs(cost), 1e-12):
                converged = True
                break
            reg = max(reg * config.reg_factor, config.reg_min)
            if reg > config.reg_max:
                break
            continue

        X, U, expansion, cost_new = accepted
        relative_change = (cost - cost_new) / max(abs(cost), 1e-12)
        cost = cost_new
        history.append(cost)
        A, B = jacobians(X, U)
        reg = reg / config.reg_factor
        if reg < config.reg_min:
            reg = 0.0
        converged = relative_change < config.tolerance

    # Gains about the final nominal, without regularisation unless Q_uu needs it.
    final_reg = 0.0
    solution = _backward(expansion, A, B, final_reg)
    while solution is None and final_reg <= config.reg_max:
        final_reg = max(final_reg * config.reg_factor, config.reg_min)
        solution = _backward(expansion, A, B, final_reg)
    K = solution[0] if solution is not None else np.zeros((T, du, dx))
    return ILQRResult(X=X, U=U, K=K, cost=cost, cost_history=history, iterations=iterations,
                      converged=converged, reg=reg)


def _evaluate(cost_model, X: np.ndarray, U: np.ndarray) -> CostExpansion:
    e = cost_model.eval(X, U)
    T, dx = X.shape
    du = U.shape[1]
    shapes = {"l": (T,), "lx": (T, dx), "lu": (T, du), "lxx": (T, dx, dx), "luu": (T, du, du), "lux": (T, du, dx)}
    for name, shape in shapes.items():
        a = np.asarray(getattr(e, name))
        if a.shape != shape:
            raise ValueError(f"cost model returned {name} with shape {a.shape}, expected {shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"cost model returned NaN or Inf in {name}")
    return e


def _backward(e: CostExpansion, A: np.ndarray, B: np.ndarray, reg: float):
    """LQR on the local model; None if the regularised Q_uu is not positive definite.

    Returns gains K, feedforward k and the expected change terms (sum k^T Q_u, sum 0.5 k^T Q_uu k).
    """
    T, du, dx = e.lux.shape
    K = np.zeros((T, du, dx))
    k = np.zeros((T, du))
    Vx = np.zeros(dx)
    Vxx = np.zeros((dx, dx))
    dV = np.zeros(2)
    eye_u = np.eye(du)
    for t in range(T - 1, -1, -1):
        Qx, Qu = e.lx[t].copy(), e.lu[t].copy()
        Qxx, Quu, Qux = e.lxx[t].copy(), e.luu[t].copy(), e.lux[t].copy()
        if t < T - 1:
            At, Bt = A[t], B[t]
            Qx += At.T @ Vx
            Qu += Bt.T @ Vx
            Qxx += At.T @ Vxx @ At
            Quu += Bt.T @ Vxx @ Bt
            Qux += Bt.T @ Vxx @ At
        Quu = 0.5 * (Quu + Quu.T)
        try:
            L = np.linalg.cholesky(Quu + reg * eye_u)
        except np.linalg.LinAlgError:
            return None
        K[t] = -cho_solve((L, True), Qux)
        k[t] = -cho_solve((L, True), Qu)
        # Exact value update for the (possibly regularised) gains actually used.
        Vx = Qx + K[t].T @ Quu @ k[t] + K[t].T @ Qu + Qux.T @ k[t]
        Vxx = Qxx + K[t].T @ Quu @ K[t] + K[t].T @ Qux + Qux.T @ K[t]
        Vxx = 0.5 * (Vxx + Vxx.T)
        dV += (k[t] @ Qu, 0.5 * k[t] @ Quu @ k[t])
    return K, k, dV


def _forward(dynamics_fn: DynamicsFn, X: np.ndarray, U: np.ndarray, K: np.ndarray, k: np.ndarray, alpha: float):
    T = U.shape[0]
    X_new = np.empty_like(X)
    U_new = np.empty_like(U)
    X_new[0] = X[0]
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T):
            U_new[t] = U[t] + alpha * k[t] + K[t] @ (X_new[t] - X[t])
            if t < T - 1:
                X_new[t + 1] = _step(dynamics_fn, X_new[t], U_new[t])
                if not np.all(np.isfinite(X_new[t + 1])):
                    X_new[t + 1:] = np.nan
                    break
    return X_new, U_new
