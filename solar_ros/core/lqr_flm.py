"""LQR with fitted linear models (LQR-FLM): the trajectory optimiser of Guided Policy Search.

Given a time-varying linear-Gaussian policy p_old(u|x), linear-Gaussian dynamics fitted to its
rollouts and a cost, one LQR-FLM update solves

    min_p  E_p[ sum_t c(x_t, u_t) ]   subject to   KL(p(tau) || p_old(tau)) <= epsilon,

with epsilon = kl_step * T. Its Lagrangian is solved in closed form for a fixed dual variable eta by
an LQR backward pass on the augmented cost c/eta - log p_old(u|x) (the new policy is the
maximum-entropy solution, covariance = Q_uu^-1), and eta is found by a geometric bisection on the
KL constraint. All arrays follow the conventions of :mod:`solar_ros.core.types`; z = [x; u].
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from scipy.linalg import cho_solve

from .types import CostExpansion, LinearGaussianDynamics, LinearGaussianPolicy

log = logging.getLogger(__name__)


class NonPositiveDefiniteError(np.linalg.LinAlgError):
    """The action block Q_uu of the backward pass is not positive definite.

    In LQR-FLM this means the dual variable eta is too small for the (non-convex) cost: the
    KL term has too little weight to keep the problem bounded. ``update`` catches it and raises eta.
    """

    def __init__(self, t: int, eta: float, message: str | None = None):
        super().__init__(message or f"Q_uu is not positive definite at step t={t} (eta={eta:.3g})")
        self.t = t
        self.eta = eta


# --------------------------------------------------------------------------------------------
# Quadratic cost over z = [x; u]
# --------------------------------------------------------------------------------------------


@dataclass
class QuadraticCost:
    """Per-step quadratic cost c_t(z) = 0.5 z^T Cm[t] z + cv[t]^T z + cc[t] with z = [x; u].

    Produced by :func:`estimate_cost` (sample-averaged expansion of any cost model) or by the
    fitters in :mod:`solar_ros.core.cost_fit`. Unpacks as ``Cm, cv, cc = quadratic_cost``. It is
    also a cost model itself (``eval``), so iLQR and the estimators accept it.
    """

    Cm: np.ndarray
    """(T, dx+du, dx+du) symmetric Hessians."""
    cv: np.ndarray
    """(T, dx+du) linear terms."""
    cc: np.ndarray
    """(T,) constants (needed for expected-cost predictions, not for the policy)."""

    def __post_init__(self) -> None:
        self.Cm = np.asarray(self.Cm, dtype=np.float64)
        self.cv = np.asarray(self.cv, dtype=np.float64)
        self.cc = np.asarray(self.cc, dtype=np.float64)
        if self.Cm.ndim != 3 or self.Cm.shape[1] != self.Cm.shape[2]:
            raise ValueError(f"QuadraticCost Cm must have shape (T, dxu, dxu), got {self.Cm.shape}")
        T, dxu = self.Cm.shape[:2]
        if T == 0 or dxu == 0:
            raise ValueError(f"QuadraticCost is empty: Cm has shape {self.Cm.shape}")
        if self.cv.shape != (T, dxu):
            raise ValueError(f"QuadraticCost cv must have shape {(T, dxu)}, got {self.cv.shape}")
        if self.cc.shape != (T,):
            raise ValueError(f"QuadraticCost cc must have shape {(T,)}, got {self.cc.shape}")
        for name, a in (("Cm", self.Cm), ("cv", self.cv), ("cc", self.cc)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"QuadraticCost {name} contains NaN or Inf")
        self.Cm = 0.5 * (self.Cm + np.swapaxes(self.Cm, 1, 2))

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.Cm, self.cv, self.cc))

    @property
    def T(self) -> int:
        return self.Cm.shape[0]

    @property
    def dxu(self) -> int:
        return self.Cm.shape[1]

    @classmethod
    def constant(cls, C: np.ndarray, c: np.ndarray, c0: float, T: int) -> "QuadraticCost":
        """The same quadratic (C (dxu, dxu), c (dxu,), c0) at each of T steps."""
        C = np.asarray(C, dtype=np.float64)
        c = np.asarray(c, dtype=np.float64)
        if not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"QuadraticCost.constant needs a horizon T >= 1, got {T!r}")
        if C.ndim != 2 or C.shape[0] != C.shape[1] or c.shape != (C.shape[0],):
            raise ValueError(f"QuadraticCost.constant needs C (d, d) and c (d,), got {C.shape} and {c.shape}")
        return cls(np.tile(C, (T, 1, 1)), np.tile(c, (T, 1)), np.full(T, float(c0)))

    def weighted(self, weights: np.ndarray) -> "QuadraticCost":
        """The cost with step t's quadratic multiplied by ``weights[t]`` (T,), e.g. a heavier last step."""
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.T,) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"QuadraticCost.weighted needs {self.T} finite non-negative weights, got shape {w.shape}")
        return QuadraticCost(self.Cm * w[:, None, None], self.cv * w[:, None], self.cc * w)

    def value(self, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        """Per-step cost of trajectories X (..., T, dx), U (..., T, du); returns shape (..., T)."""
        Z = np.concatenate([np.asarray(X, dtype=np.float64), np.asarray(U, dtype=np.float64)], axis=-1)
        if Z.shape[-2:] != (self.T, self.dxu):
            raise ValueError(f"QuadraticCost.value: [X, U] has shape {Z.shape}, expected (..., {self.T}, {self.dxu})")
        return (0.5 * np.einsum("...ti,tij,...tj->...t", Z, self.Cm, Z)
                + np.einsum("...ti,ti->...t", Z, self.cv) + self.cc)

    def expected(self, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """Per-step expected cost (T,) under Gaussian marginals z_t ~ N(mu[t], sigma[t])."""
        mu = np.asarray(mu, dtype=np.float64)
        sigma = np.asarray(sigma, dtype=np.float64)
        if mu.shape != (self.T, self.dxu) or sigma.shape != (self.T, self.dxu, self.dxu):
            raise ValueError(
                f"QuadraticCost.expected: mu {mu.shape} / sigma {sigma.shape} do not match T={self.T}, dxu={self.dxu}"
            )
        return (
            0.5 * np.einsum("tij,tji->t", self.Cm, sigma)
            + 0.5 * np.einsum("ti,tij,tj->t", mu, self.Cm, mu)
            + np.einsum("ti,ti->t", mu, self.cv)
            + self.cc
        )

    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        """Cost and exact derivatives along one trajectory X (T, dx), U (T, du) (cost-model API)."""
        X = np.asarray(X, dtype=np.float64)
        U = np.asarray(U, dtype=np.float64)
        if X.ndim != 2 or U.ndim != 2 or X.shape[0] != U.shape[0]:
            raise ValueError(f"QuadraticCost.eval needs X (T, dx) and U (T, du), got {X.shape} and {U.shape}")
        dx = X.shape[1]
        Z = np.concatenate([X, U], axis=1)
        l = self.value(X, U)
        grad = np.einsum("tij,tj->ti", self.Cm, Z) + self.cv
        return CostExpansion(
            l=l, lx=grad[:, :dx], lu=grad[:, dx:],
            lxx=self.Cm[:, :dx, :dx].copy(), luu=self.Cm[:, dx:, dx:].copy(), lux=self.Cm[:, dx:, :dx].copy(),
        )


def estimate_cost(cost_model, X: np.ndarray, U: np.ndarray) -> QuadraticCost:
    """Sample-averaged quadratic cost about zero in z = [x; u] (what LQR-FLM optimises).

    Each sample's second-order expansion (about that sample) is re-centred to a quadratic in z,
    then the quadratics are averaged over the N samples, so the result approximates the expected
    cost under the sampled trajectory distribution. X (N, T, dx) and U (N, T, du); a single
    trajectory (T, dx), (T, du) is accepted too. A :class:`QuadraticCost` model is returned as is
    (after checking its shape), since re-centring a quadratic changes nothing.
    """
    X = np.asarray(X, dtype=np.float64)
    U = np.asarray(U, dtype=np.float64)
    if X.ndim == 2 and U.ndim == 2:
        X, U = X[None], U[None]
    if X.ndim != 3 or U.ndim != 3 or X.shape[:2] != U.shape[:2]:
        raise ValueError(f"estimate_cost needs X (N, T, dx) and U (N, T, du), got {X.shape} and {U.shape}")
    N, T, dx = X.shape
    du = U.shape[2]
    if N == 0 or T == 0:
        raise ValueError(f"estimate_cost: no samples (X has shape {X.shape})")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(U))):
        raise ValueError("estimate_cost: X or U contains NaN or Inf")
    if isinstance(cost_model, QuadraticCost):
        if cost_model.T != T or cost_model.dxu != dx + du:
            raise ValueError(
                f"estimate_cost: QuadraticCost has T={cost_model.T}, dxu={cost_model.dxu}; "
                f"samples have T={T}, dxu={dx + du}"
            )
        return cost_model

    Cm = np.zeros((T, dx + du, dx + du))
    cv = np.zeros((T, dx + du))
    cc = np.zeros(T)
    for n in range(N):
        e = cost_model.eval(X[n], U[n])
        _check_expansion(e, T, dx, du)
        H = np.empty((T, dx + du, dx + du))
        H[:, :dx, :dx] = e.lxx
        H[:, :dx, dx:] = np.swapaxes(e.lux, 1, 2)
        H[:, dx:, :dx] = e.lux
        H[:, dx:, dx:] = e.luu
        g = np.concatenate([e.lx, e.lu], axis=1)
        z = np.concatenate([X[n], U[n]], axis=1)
        Hz = np.einsum("tij,tj->ti", H, z)
        # l + g^T (z - zn) + 0.5 (z - zn)^T H (z - zn), written as a quadratic in z.
        Cm += H
        cv += g - Hz
        cc += e.l - np.einsum("ti,ti->t", g, z) + 0.5 * np.einsum("ti,ti->t", z, Hz)
    return QuadraticCost(Cm / N, cv / N, cc / N)


def _check_expansion(e: CostExpansion, T: int, dx: int, du: int) -> None:
    expected = {"l": (T,), "lx": (T, dx), "lu": (T, du), "lxx": (T, dx, dx), "luu": (T, du, du), "lux": (T, du, dx)}
    for name, shape in expected.items():
        a = np.asarray(getattr(e, name))
        if a.shape != shape:
            raise ValueError(f"cost model returned {name} with shape {a.shape}, expected {shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"cost model returned NaN or Inf in {name}")


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_dynamics(dynamics: LinearGaussianDynamics) -> None:
    if not isinstance(dynamics, LinearGaussianDynamics):
        raise ValueError(f"expected LinearGaussianDynamics, got {type(dynamics).__name__}")
    Fm = np.asarray(dynamics.Fm)
    if Fm.ndim != 3 or Fm.shape[2] <= Fm.shape[1] or Fm.shape[0] == 0:
        raise ValueError(f"dynamics Fm must have shape (T, dx, dx+du) with du >= 1, got {Fm.shape}")
    T, dx = dynamics.T, dynamics.dx
    shapes = {"fv": (T, dx), "dyn_covar": (T, dx, dx), "x0mu": (dx,), "x0sigma": (dx, dx)}
    for name, shape in shapes.items():
        a = np.asarray(getattr(dynamics, name))
        if a.shape != shape:
            raise ValueError(f"dynamics {name} must have shape {shape}, got {a.shape}")
    for name in ("Fm", "fv", "dyn_covar", "x0mu", "x0sigma"):
        if not np.all(np.isfinite(getattr(dynamics, name))):
            raise ValueError(f"dynamics {name} contains NaN or Inf")


def _check_policy(policy: LinearGaussianPolicy, dynamics: LinearGaussianDynamics, name: str = "policy") -> None:
    if not isinstance(policy, LinearGaussianPolicy):
        raise ValueError(f"{name}: expected LinearGaussianPolicy, got {type(policy).__name__}")
    if (policy.T, policy.dx, policy.du) != (dynamics.T, dynamics.dx, dynamics.du):
        raise ValueError(
            f"{name} has (T, dx, du) = {(policy.T, policy.dx, policy.du)} but the dynamics have "
            f"{(dynamics.T, dynamics.dx, dynamics.du)}"
        )


def _as_quadratic(cost, T: int, dxu: int) -> QuadraticCost:
    """Accept a QuadraticCost or a tuple (Cm, cv[, cc]) and check it against the problem size."""
    if not isinstance(cost, QuadraticCost):
        try:
            parts = tuple(cost)
        except TypeError as err:
            raise ValueError("cost must be a QuadraticCost or a tuple (Cm, cv[, cc])") from err
        if len(parts) == 2:
            parts = (*parts, np.zeros(np.shape(parts[0])[:1]))
        if len(parts) != 3:
            raise ValueError(f"cost tuple must be (Cm, cv) or (Cm, cv, cc), got {len(parts)} items")
        cost = QuadraticCost(*parts)
    if cost.T != T or cost.dxu != dxu:
        raise ValueError(f"cost has T={cost.T}, dxu={cost.dxu} but the problem has T={T}, dxu={dxu}")
    return cost


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Forward pass, backward pass, KL
# --------------------------------------------------------------------------------------------


def forward(policy: LinearGaussianPolicy, dynamics: LinearGaussianDynamics) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian marginals of z_t = [x_t; u_t] under a linear-Gaussian policy and dynamics.

    Returns mu (T, dx+du) and sigma (T, dx+du, dx+du), exact for linear-Gaussian systems.
    """
    _check_dynamics(dynamics)
    _check_policy(policy, dynamics)
    T, dx, du = dynamics.T, dynamics.dx, dynamics.du
    mu = np.zeros((T, dx + du))
    sigma = np.zeros((T, dx + du, dx + du))
    mu_x = np.asarray(dynamics.x0mu, dtype=np.float64)
    sigma_x = np.asarray(dynamics.x0sigma, dtype=np.float64)
    for t in range(T):
        K = policy.K[t]
        sigma_xK = sigma_x @ K.T
        mu[t, :dx] = mu_x
        mu[t, dx:] = K @ mu_x + policy.k[t]
        sigma[t, :dx, :dx] = sigma_x
        sigma[t, :dx, dx:] = sigma_xK
        sigma[t, dx:, :dx] = sigma_xK.T
        sigma[t, dx:, dx:] = K @ sigma_xK + policy.cov[t]
        if t < T - 1:
            F = dynamics.Fm[t]
            mu_x = F @ mu[t] + dynamics.fv[t]
            sigma_x = F @ sigma[t] @ F.T + dynamics.dyn_covar[t]
            sigma_x = 0.5 * (sigma_x + sigma_x.T)
    return mu, sigma


def backward(dynamics: LinearGaussianDynamics, cost, prev_policy: LinearGaussianPolicy,
             eta: float) -> LinearGaussianPolicy:
    """LQR backward pass on the KL-augmented cost c/eta - log p_prev(u|x).

    ``cost`` is a :class:`QuadraticCost` or a tuple (Cm, cv[, cc]). With Q_t = C_t + F_t^T V_{t+1} F_t
    (and the matching linear term), the new policy is K = -Q_uu^-1 Q_ux, k = -Q_uu^-1 q_u,
    cov = Q_uu^-1. Raises :class:`NonPositiveDefiniteError` when Q_uu is not positive definite.
    """
    _check_dynamics(dynamics)
    _check_policy(prev_policy, dynamics, "prev_policy")
    eta = _check_positive("eta", eta)
    T, dx, du = dynamics.T, dynamics.dx, dynamics.du
    quad = _as_quadratic(cost, T, dx + du)

    # -log p_prev(u|x) = 0.5 z^T M z + z^T v + const with M = [-K I]^T P [-K I], v = [K^T P k; -P k].
    P = prev_policy.inv_cov
    PK = P @ prev_policy.K
    Pk = np.einsum("tij,tj->ti", P, prev_policy.k)
    Cm = quad.Cm / eta
    cv = quad.cv / eta
    Cm[:, :dx, :dx] += np.swapaxes(prev_policy.K, 1, 2) @ PK
    Cm[:, :dx, dx:] -= np.swapaxes(PK, 1, 2)
    Cm[:, dx:, :dx] -= PK
    Cm[:, dx:, dx:] += P
    cv[:, :dx] += np.einsum("tji,tj->ti", prev_policy.K, Pk)
    cv[:, dx:] -= Pk

    K = np.zeros((T, du, dx))
    k = np.zeros((T, du))
    cov = np.zeros((T, du, du))
    Vxx = np.zeros((dx, dx))
    Vx = np.zeros(dx)
    eye_u = np.eye(du)
    for t in range(T - 1, -1, -1):
        Q = Cm[t].copy()
        q = cv[t].copy()
        if t < T - 1:
            F = dynamics.Fm[t]
            Q += F.T @ Vxx @ F
            q += F.T @ (Vx + Vxx @ dynamics.fv[t])
        Q = 0.5 * (Q + Q.T)
        Quu = Q[dx:, dx:]
        Qux = Q[dx:, :dx]
        try:
            L = np.linalg.cholesky(Quu)
        except np.linalg.LinAlgError:
            raise NonPositiveDefiniteError(t, eta) from None
        inv_Quu = cho_solve((L, True), eye_u)
        cov[t] = 0.5 * (inv_Quu + inv_Quu.T)
        K[t] = -cho_solve((L, True), Qux)
        k[t] = -cho_solve((L, True), q[dx:])
        # Value function of the next-earlier step (Q_uu K = -Q_ux simplifies the usual expression).
        Vxx = Q[:dx, :dx] + Qux.T @ K[t]
        Vxx = 0.5 * (Vxx + Vxx.T)
        Vx = q[:dx] + Qux.T @ k[t]
    return LinearGaussianPolicy(K, k, cov)


def kl_divergence(
    new_policy: LinearGaussianPolicy,
    prev_policy: LinearGaussianPolicy,
    mu: np.ndarray,
    sigma: np.ndarray,
    per_step: bool = False,
) -> float | np.ndarray:
    """KL(p_new(tau) || p_prev(tau)) for two policies under the same dynamics.

    With shared dynamics the trajectory KL is the sum over t of the expected conditional KL
    E_{x_t ~ p_new}[KL(p_new(u|x_t) || p_prev(u|x_t))]; ``mu``, ``sigma`` are the new policy's
    trajectory marginals from :func:`forward`. Returns the total (or the (T,) per-step terms).
    """
    if not isinstance(new_policy, LinearGaussianPolicy) or not isinstance(prev_policy, LinearGaussianPolicy):
        raise ValueError("kl_divergence needs two LinearGaussianPolicy objects")
    T, du, dx = new_policy.K.shape
    if prev_policy.K.shape != (T, du, dx):
        raise ValueError(f"policies disagree in shape: {new_policy.K.shape} vs {prev_policy.K.shape}")
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.shape != (T, dx + du) or sigma.shape != (T, dx + du, dx + du):
        raise ValueError(f"mu {mu.shape} / sigma {sigma.shape} do not match T={T}, dx+du={dx + du}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError("kl_divergence: mu or sigma contains NaN or Inf")

    P = prev_policy.inv_cov
    dK = new_policy.K - prev_policy.K
    mean_gap = np.einsum("tij,tj->ti", dK, mu[:, :dx]) + new_policy.k - prev_policy.k
    # E over x of the squared Mahalanobis gap between the two conditional means.
    gap = np.einsum("ti,tij,tj->t", mean_gap, P, mean_gap)
    gap += np.einsum("tij,tji->t", np.swapaxes(dK, 1, 2) @ P @ dK, sigma[:, :dx, :dx])
    trace = np.einsum("tij,tji->t", P, new_policy.cov)
    logdet_prev = 2.0 * np.sum(np.log(np.diagonal(prev_policy.chol, axis1=1, axis2=2)), axis=1)
    logdet_new = 2.0 * np.sum(np.log(np.diagonal(new_policy.chol, axis1=1, axis2=2)), axis=1)
    kl = np.maximum(0.5 * (trace - du + logdet_prev - logdet_new + gap), 0.0)  # clip round-off only
    return kl if per_step else float(np.sum(kl))


def expected_cost(policy: LinearGaussianPolicy, dynamics: LinearGaussianDynamics, cost) -> float:
    """Expected total cost of ``policy`` under ``dynamics`` for a quadratic ``cost`` (exact)."""
    mu, sigma = forward(policy, dynamics)
    quad = _as_quadratic(cost, dynamics.T, dynamics.dx + dynamics.du)
    return float(np.sum(quad.expected(mu, sigma)))


# --------------------------------------------------------------------------------------------
# Dual search over eta
# --------------------------------------------------------------------------------------------


@dataclass
class LQRFLMConfig:
    """Settings of the LQR-FLM update and its step-size adaptation."""

    kl_step: float = 2.0
    """Base KL bound per time step; the update uses epsilon = kl_step * step multiplier * T."""
    min_eta: float = 1e-8
    """Lower end of the bracket for the dual variable eta."""
    max_eta: float = 1e16
    """Upper end of the bracket for eta (eta -> inf returns the previous policy)."""
    max_iterations: int = 50
    """Most backward passes the dual search may run."""
    tolerance: float = 0.1
    """Converged when |KL - epsilon| < tolerance * epsilon."""
    min_step_mult: float = 0.01
    """Smallest step multiplier :func:`adjust_step_multiplier` returns."""
    max_step_mult: float = 10.0
    """Largest step multiplier :func:`adjust_step_multiplier` returns."""
    min_step_change: float = 0.1
    """Smallest factor one adjustment may apply to the step multiplier."""
    max_step_change: float = 5.0
    """Largest factor one adjustment may apply to the step multiplier."""

    def __post_init__(self) -> None:
        for name in ("kl_step", "min_eta", "max_eta", "tolerance", "min_step_mult", "max_step_mult",
                     "min_step_change", "max_step_change"):
            _check_positive(f"LQRFLMConfig.{name}", getattr(self, name))
        if self.min_eta >= self.max_eta:
            raise ValueError(f"LQRFLMConfig: min_eta {self.min_eta} must be below max_eta {self.max_eta}")
        if self.min_step_mult > self.max_step_mult or self.min_step_change > self.max_step_change:
            raise ValueError("LQRFLMConfig: a min_* setting exceeds its max_*")
        if self.tolerance >= 1:
            raise ValueError(f"LQRFLMConfig.tolerance must be below 1, got {self.tolerance}")
        if int(self.max_iterations) != self.max_iterations or self.max_iterations < 1:
            raise ValueError(f"LQRFLMConfig.max_iterations must be a positive integer, got {self.max_iterations!r}")


@dataclass
class UpdateInfo:
    """What one LQR-FLM update found (returned by :func:`update`)."""

    kl: float
    """Achieved KL(new || previous trajectory distribution), summed over time."""
    kl_target: float
    """The bound epsilon = kl_step * T."""
    eta: float
    """Dual variable of the returned solution."""
    iterations: int
    """Backward passes run (non-PD failures included)."""
    converged: bool
    """True when |KL - epsilon| is within tolerance or the constraint is inactive."""
    constraint_active: bool
    """False when even the smallest eta stays inside the KL bound (cost-optimal solution)."""
    expected_cost: float
    """Predicted expected total cost of the new policy under the given dynamics and cost."""
    mu: np.ndarray = field(repr=False)
    """(T, dx+du) trajectory means under the new policy."""
    sigma: np.ndarray = field(repr=False)
    """(T, dx+du, dx+du) trajectory covariances under the new policy."""


def update(
    prev_policy: LinearGaussianPolicy,
    dynamics: LinearGaussianDynamics,
    cost,
    kl_step: float | None = None,
    eta0: float = 1.0,
    config: LQRFLMConfig | None = None,
) -> tuple[LinearGaussianPolicy, float, UpdateInfo]:
    """One LQR-FLM step: the policy minimising expected cost within KL <= kl_step * T of ``prev_policy``.

    ``cost`` is a :class:`QuadraticCost` (e.g. from :func:`estimate_cost`) or (Cm, cv[, cc]);
    ``kl_step`` defaults to ``config.kl_step`` (pass base step * step multiplier); ``eta0`` warm
    starts the dual search (pass the previous iteration's eta). Returns (policy, eta, info).
    """
    config = config or LQRFLMConfig()
    _check_dynamics(dynamics)
    _check_policy(prev_policy, dynamics, "prev_policy")
    T, dx, du = dynamics.T, dynamics.dx, dynamics.du
    quad = _as_quadratic(cost, T, dx + du)
    kl_step = _check_positive("kl_step", config.kl_step if kl_step is None else kl_step)
    eta0 = _check_positive("eta0", eta0)
    epsilon = kl_step * T
    slack = config.tolerance * epsilon

    iterations = 0

    def solve(eta: float):
        nonlocal iterations
        iterations += 1
        try:
            policy = backward(dynamics, quad, prev_policy, eta)
        except NonPositiveDefiniteError:
            return None
        mu, sigma = forward(policy, dynamics)
        return policy, mu, sigma, kl_divergence(policy, prev_policy, mu, sigma), eta

    def finish(sol, converged: bool, active: bool):
        policy, mu, sigma, kl, eta = sol
        info = UpdateInfo(
            kl=kl, kl_target=epsilon, eta=eta, iterations=iterations, converged=converged,
            constraint_active=active, expected_cost=float(np.sum(quad.expected(mu, sigma))), mu=mu, sigma=sigma,
        )
        return policy, eta, info

    lo, hi = config.min_eta, config.max_eta
    # Inactive constraint: the (nearly) unconstrained optimum already lies inside the KL bound.
    sol = solve(lo)
    if sol is not None and sol[3] < epsilon + slack:
        return finish(sol, converged=True, active=sol[3] >= epsilon - slack)

    eta = min(max(eta0, lo), hi)
    best = None
    for _ in range(config.max_iterations):
        sol = solve(eta)
        if sol is not None:
            best = _better(best, sol, epsilon + slack)
            if abs(sol[3] - epsilon) < slack:
                return finish(sol, converged=True, active=True)
        if sol is not None and sol[3] < epsilon:
            # KL below the bound: eta too big, move down.
            hi = eta
            eta = max(math.sqrt(lo * hi), 0.1 * hi)
        else:
            # KL above the bound, or Q_uu not PD: eta too small, move up.
            lo = eta
            eta = min(math.sqrt(lo * hi), 10.0 * lo)
        if hi / lo < 1.0 + 1e-12:
            break
    if best is None:
        raise NonPositiveDefiniteError(-1, hi, f"Q_uu is not positive definite for any eta up to {hi:.3g}")
    log.warning(
        "LQR-FLM dual search stopped after %d backward passes without meeting the KL bound: KL %.4g, target %.4g",
        iterations, best[3], epsilon,
    )
    return finish(best, converged=False, active=True)


def _better(best, sol, limit: float):
    """Keep the most useful solution: inside the bound with the largest KL, else the smallest KL."""
    if best is None:
        return sol
    best_ok, sol_ok = best[3] <= limit, sol[3] <= limit
    if sol_ok != best_ok:
        return sol if sol_ok else best
    if sol_ok:
        return sol if sol[3] > best[3] else best
    return sol if sol[3] < best[3] else best


# --------------------------------------------------------------------------------------------
# Step-size adaptation
# --------------------------------------------------------------------------------------------


def adjust_step_multiplier(
    step_mult: float,
    predicted_improvement: float,
    actual_improvement: float,
    config: LQRFLMConfig | None = None,
) -> float:
    """New KL step multiplier from predicted vs actual cost improvement of the last update.

    Models the improvement as quadratic in the step, giving the factor
    pred / (2 * max(1e-4, pred - actual)), clipped to [min_step_change, max_step_change] (0.1, 5);
    the multiplier itself stays in [min_step_mult, max_step_mult] (0.01, 10).
    """
    config = config or LQRFLMConfig()
    step_mult = _check_positive("step_mult", step_mult)
    for name, v in (("predicted_improvement", predicted_improvement), ("actual_improvement", actual_improvement)):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")
    change = predicted_improvement / (2.0 * max(1e-4, predicted_improvement - actual_improvement))
    change = min(max(change, config.min_step_change), config.max_step_change)
    return min(max(step_mult * change, config.min_step_mult), config.max_step_mult)


def cost_improvements(previous_cost: float, new_predicted_cost: float, new_actual_cost: float) -> tuple[float, float]:
    """(predicted, actual) improvement from expected costs.

    ``previous_cost``: old policy under the old model; ``new_predicted_cost``: new policy under
    the old model (what the update promised); ``new_actual_cost``: new policy under the model
    refitted on its own rollouts (what it delivered).
    """
    for v in (previous_cost, new_predicted_cost, new_actual_cost):
        if not math.isfinite(v):
            raise ValueError(f"expected costs must be finite, got {v!r}")
    return previous_cost - new_predicted_cost, previous_cost - new_actual_cost


def step_improvements(
    prev_policy: LinearGaussianPolicy,
    new_policy: LinearGaussianPolicy,
    prev_dynamics: LinearGaussianDynamics,
    prev_cost,
    new_dynamics: LinearGaussianDynamics,
    new_cost,
) -> tuple[float, float]:
    """(predicted, actual) improvement of an update, from the old and the refitted model.

    ``prev_dynamics``/``prev_cost`` were fitted on the previous policy's rollouts (the model the
    update used); ``new_dynamics``/``new_cost`` on the new policy's rollouts.
    """
    return cost_improvements(
        expected_cost(prev_policy, prev_dynamics, prev_cost),
        expected_cost(new_policy, prev_dynamics, prev_cost),
        expected_cost(new_policy, new_dynamics, new_cost),
    )
