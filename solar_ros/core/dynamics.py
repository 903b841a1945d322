"""Fitting linear-Gaussian dynamics: per-time-step fits with a normal-inverse-Wishart prior
(LQR-FLM's dynamics model) and a global Bayesian LDS with a matrix-normal inverse-Wishart prior
(SOLAR's latent dynamics), including EM on noisy observations of the latent states.

Notation: x_t state (dx), u_t action (du), z_t = [x_t; u_t; 1], W = [A | B | c] (dx, dx+du+1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.special import digamma, multigammaln

from .gaussian import LDSParams, SmootherResult, rts_smoother
from .types import LinearGaussianDynamics

_LOG_2PI = float(np.log(2.0 * np.pi))


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + np.swapaxes(a, -1, -2))


def _as_float(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def _logdet_pd(name: str, a: np.ndarray) -> float:
    try:
        L = np.linalg.cholesky(a)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"{name} must be positive definite") from err
    return 2.0 * float(np.sum(np.log(np.diag(L))))


def _check_rollouts(X, U, min_steps: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate rollouts X (N, T, dx), U (N, T, du) (U None -> du = 0)."""
    X = _as_float("X", X)
    if X.ndim != 3:
        raise ValueError(f"X must have shape (N, T, dx), got {X.shape}")
    N, T, dx = X.shape
    if N == 0:
        raise ValueError("no rollouts (N = 0)")
    if T < min_steps:
        raise ValueError(f"rollouts need at least {min_steps} time steps, got T={T}")
    if dx == 0:
        raise ValueError("state dimension dx must be positive")
    if U is None:
        U = np.zeros((N, T, 0))
    U = _as_float("U", U)
    if U.ndim != 3 or U.shape[:2] != (N, T):
        raise ValueError(f"U must have shape ({N}, {T}, du), got {U.shape}")
    return X, U


# --------------------------------------------------------------------------------------------
# per-time-step fit with a normal-inverse-Wishart prior


class DynamicsPrior(Protocol):
    """A normal-inverse-Wishart prior over the joint Gaussian of [x_t; u_t; x_{t+1}]."""

    def eval(self, x: np.ndarray, u: np.ndarray, x_next: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Prior (mu0 (D,), Phi (D, D), m, n0) for one step's data x (N, dx), u (N, du), x_next (N, dx).

        D = 2 dx + du. ``mu0`` is the prior mean, ``m`` its pseudo-count, ``Phi`` the
        inverse-Wishart scale and ``n0`` its pseudo-count; ``Phi / n0`` is the prior covariance
        (the convention of :func:`fit_dynamics`).
        """
        ...


def fit_dynamics(X: np.ndarray, U: np.ndarray | None, prior: DynamicsPrior | None = None,
                 regularization: float = 1e-6, x0_var_floor: float = 1e-6) -> LinearGaussianDynamics:
    """Fit time-varying linear-Gaussian dynamics x_{t+1} = Fm[t] [x_t; u_t] + fv[t] + N(0, dyn_covar[t]).

    For every step t the N samples of p = [x_t; u_t; x_{t+1}] give an empirical mean pbar and
    (maximum-likelihood) covariance S. With a prior (mu0, Phi, m, n0) they are combined in the
    conjugate normal-inverse-Wishart way::

        mu    = (m mu0 + N pbar) / (m + N)
        Sigma = (Phi + N S + N m / (N + m) (pbar - mu0)(pbar - mu0)^T) / (N + n0)

    (the posterior scale over N + n0: with Phi = n0 Sigma0 this blends the prior covariance and
    the data by their counts; without a prior it is the plain ML fit, i.e. least squares).
    ``regularization`` is added to the diagonal of the [x; u] block so the conditioning stays
    well posed for collinear data; x_{t+1} is then conditioned on [x_t; u_t].

    Args:
        X: (N, T, dx) states of N rollouts.
        U: (N, T, du) actions (None for an autonomous system).
        prior: optional :class:`DynamicsPrior`, evaluated once per step.
        regularization: diagonal added to the [x; u] covariance block.
        x0_var_floor: diagonal added to the empirical initial-state covariance.

    Returns:
        :class:`LinearGaussianDynamics` with index T-1 set to zeros; x0mu / x0sigma are the
        empirical mean and covariance of X[:, 0].
    """
    X, U = _check_rollouts(X, U)
    if regularization < 0 or x0_var_floor < 0:
        raise ValueError("regularization and x0_var_floor must be non-negative")
    N, T, dx = X.shape
    du = U.shape[2]
    dxu = dx + du
    D = dxu + dx

    pts = np.concatenate([X[:, :-1], U[:, :-1], X[:, 1:]], axis=2).transpose(1, 0, 2)  # (T-1, N, D)
    pbar = pts.mean(axis=1)
    diff = pts - pbar[:, None]
    emp = _sym(np.einsum("tni,tnj->tij", diff, diff) / N)

    if prior is None:
        mu, sigma = pbar, emp
    else:
        mu = np.empty_like(pbar)
        sigma = np.empty_like(emp)
        for t in range(T - 1):
            mu0, Phi, m, n0 = prior.eval(X[:, t], U[:, t], X[:, t + 1])
            mu0 = _as_float("prior mu0", mu0)
            Phi = _as_float("prior Phi", Phi)
            if mu0.shape != (D,) or Phi.shape != (D, D):
                raise ValueError(f"prior must return mu0 ({D},) and Phi ({D}, {D}); got {mu0.shape}, {Phi.shape}")
            m, n0 = float(m), float(n0)
            if not (m >= 0 and n0 >= 0 and np.isfinite(m) and np.isfinite(n0)):
                raise ValueError(f"prior pseudo-counts must be finite and non-negative, got m={m}, n0={n0}")
            dev = pbar[t] - mu0
            mu[t] = (m * mu0 + N * pbar[t]) / (m + N)
            sigma[t] = (Phi + N * emp[t] + (N * m / (N + m)) * np.outer(dev, dev)) / (N + n0)
        sigma = _sym(sigma)

    sigma[:, :dxu, :dxu] += regularization * np.eye(dxu)
    s_in = sigma[:, :dxu, :dxu]
    s_cross = sigma[:, :dxu, dxu:]  # Cov([x; u], x')
    try:
        gain = np.swapaxes(np.linalg.solve(s_in, s_cross), 1, 2)  # (T-1, dx, dxu)
    except np.linalg.LinAlgError as err:
        raise ValueError("the [x; u] covariance is singular at some step; use regularization > 0 "
                         "or a prior") from err
    offset = mu[:, dxu:] - np.einsum("tij,tj->ti", gain, mu[:, :dxu])
    covar = _sym(sigma[:, dxu:, dxu:] - gain @ s_cross)

    Fm = np.zeros((T, dx, dxu))
    fv = np.zeros((T, dx))
    dyn_covar = np.zeros((T, dx, dx))
    Fm[:-1], fv[:-1], dyn_covar[:-1] = gain, offset, covar

    x0 = X[:, 0]
    x0mu = x0.mean(axis=0)
    x0sigma = _sym((x0 - x0mu).T @ (x0 - x0mu) / N) + x0_var_floor * np.eye(dx)
    return LinearGaussianDynamics(Fm=Fm, fv=fv, dyn_covar=dyn_covar, x0mu=x0mu, x0sigma=x0sigma)


@dataclass
class GlobalLinearPrior:
    """NIW prior for :func:`fit_dynamics` from one global model x' = F [x; u] + f + N(0, Q).

    At each step the prior over [x; u] takes the step's own empirical mean and covariance (the
    global model says nothing about which states and actions are visited; ``min_xu_var`` on its
    diagonal lets the prior decide directions in which the step's data do not vary), and the
    x' part follows from the linear model. Mean and covariance each count as ``strength``
    samples, so with the conditional fit the per-step gain is the count-weighted blend
    (N F_data + strength F) / (N + strength) when the data span all directions.
    """

    F: np.ndarray
    """(dx, dx + du) global linear map of [x; u]."""
    f: np.ndarray
    """(dx,) global offset."""
    Q: np.ndarray
    """(dx, dx) global process-noise covariance."""
    strength: float = 1.0
    """Pseudo-count of the prior (SOLAR: 'data strength' 50)."""
    min_xu_var: float = 1e-4
    """Diagonal added to the prior's [x; u] covariance."""

    def __post_init__(self) -> None:
        self.F = _as_float("GlobalLinearPrior.F", self.F)
        if self.F.ndim != 2 or self.F.shape[1] < self.F.shape[0]:
            raise ValueError(f"GlobalLinearPrior.F must have shape (dx, dx + du), got {self.F.shape}")
        dx = self.F.shape[0]
        self.f = _as_float("GlobalLinearPrior.f", self.f)
        self.Q = _as_float("GlobalLinearPrior.Q", self.Q)
        if self.f.shape != (dx,) or self.Q.shape != (dx, dx):
            raise ValueError(f"GlobalLinearPrior needs f ({dx},) and Q ({dx}, {dx}); "
                             f"got {self.f.shape}, {self.Q.shape}")
        self.Q = _sym(self.Q)
        if not (np.isfinite(self.strength) and self.strength > 0):
            raise ValueError(f"GlobalLinearPrior.strength must be positive, got {self.strength}")
        if self.min_xu_var < 0:
            raise ValueError("GlobalLinearPrior.min_xu_var must be non-negative")

    @classmethod
    def fit(cls, X: np.ndarray, U: np.ndarray | None, strength: float = 1.0,
            regularization: float = 1e-6, min_xu_var: float = 1e-4) -> "GlobalLinearPrior":
        """Least-squares fit of one linear-Gaussian model on all (x_t, u_t, x_{t+1}) pairs."""
        X, U = _check_rollouts(X, U)
        dx = X.shape[2]
        xu = np.concatenate([X[:, :-1], U[:, :-1]], axis=2).reshape(-1, dx + U.shape[2])
        xn = X[:, 1:].reshape(-1, dx)
        mean_in, mean_out = xu.mean(axis=0), xn.mean(axis=0)
        d_in, d_out = xu - mean_in, xn - mean_out
        s_in = d_in.T @ d_in / len(xu) + regularization * np.eye(xu.shape[1])
        F = np.linalg.solve(s_in, d_in.T @ d_out / len(xu)).T
        resid = d_out - d_in @ F.T
        Q = _sym(resid.T @ resid / len(xu))
        return cls(F=F, f=mean_out - F @ mean_in, Q=Q, strength=strength, min_xu_var=min_xu_var)

    def eval(self, x: np.ndarray, u: np.ndarray, x_next: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Prior (mu0, Phi, m, n0) for the step whose samples are x (N, dx), u (N, du)."""
        xu = np.concatenate([x, u], axis=1)
        if xu.shape[1] != self.F.shape[1]:
            raise ValueError(f"prior expects dx + du = {self.F.shape[1]}, data has {xu.shape[1]}")
        mean_in = xu.mean(axis=0)
        d_in = xu - mean_in
        s_in = _sym(d_in.T @ d_in / len(xu)) + self.min_xu_var * np.eye(xu.shape[1])
        s_cross = self.F @ s_in  # Cov(x', [x; u])
        mu0 = np.concatenate([mean_in, self.F @ mean_in + self.f])
        sigma0 = np.block([[s_in, s_cross.T], [s_cross, s_cross @ self.F.T + self.Q]])
        return mu0, self.strength * _sym(sigma0), self.strength, self.strength


# --------------------------------------------------------------------------------------------
# global Bayesian LDS with a matrix-normal inverse-Wishart prior


@dataclass
class LDSStats:
    """Expected sufficient statistics of transitions x' = W z + noise, z = [x; u; 1]."""

    Szz: np.ndarray
    """(p, p) sum of E[z z^T]."""
    Sxz: np.ndarray
    """(dx, p) sum of E[x' z^T]."""
    Sxx: np.ndarray
    """(dx, dx) sum of E[x' x'^T]."""
    n: float
    """Number of transitions."""

    def __add__(self, other: "LDSStats") -> "LDSStats":
        return LDSStats(self.Szz + other.Szz, self.Sxz + other.Sxz, self.Sxx + other.Sxx, self.n + other.n)

    def __mul__(self, weight: float) -> "LDSStats":
        """The statistics counted ``weight`` times (a sample standing for more data)."""
        return LDSStats(self.Szz * weight, self.Sxz * weight, self.Sxx * weight, self.n * weight)

    @classmethod
    def zeros(cls, dx: int, du: int) -> "LDSStats":
        p = dx + du + 1
        return cls(np.zeros((p, p)), np.zeros((dx, p)), np.zeros((dx, dx)), 0.0)


@dataclass
class LDSPointEstimate:
    """One value of the LDS parameters: x' = A x + B u + c + N(0, Q)."""

    A: np.ndarray
    """(dx, dx)."""
    B: np.ndarray
    """(dx, du)."""
    c: np.ndarray
    """(dx,)."""
    Q: np.ndarray
    """(dx, dx)."""

    @property
    def W(self) -> np.ndarray:
        """[A | B | c], shape (dx, dx + du + 1)."""
        return np.concatenate([self.A, self.B, self.c[:, None]], axis=1)


@dataclass
class MNIWExpectations:
    """Expectations under the MNIW distribution that a mean-field structured VAE needs."""

    E_Qinv: np.ndarray
    """(dx, dx) E[Q^{-1}] = nu Psi^{-1}."""
    E_QinvW: np.ndarray
    """(dx, p) E[Q^{-1} W] = nu Psi^{-1} M."""
    E_WtQinvW: np.ndarray
    """(p, p) E[W^T Q^{-1} W] = nu M^T Psi^{-1} M + dx V."""
    E_logdetQ: float
    """E[log |Q|] = log |Psi| - dx log 2 - sum_{i=1..dx} digamma((nu - i + 1) / 2)."""


@dataclass
class BayesianLDS:
    """Matrix-normal inverse-Wishart (MNIW) distribution over a global LDS x' = W z + N(0, Q).

    W = [A | B | c], z = [x; u; 1] (length p = dx + du + 1)::

        Q     ~ IW(Psi, nu)          density proportional to |Q|^{-(nu + dx + 1)/2} exp(-tr(Psi Q^{-1}) / 2)
        W | Q ~ MN(M, Q, V)          vec(W) ~ N(vec(M), V kron Q): Q row, V column covariance

    The same class holds a prior and, after :meth:`posterior`, a posterior.
    """

    M: np.ndarray
    """(dx, p) mean of W."""
    V: np.ndarray
    """(p, p) column covariance of W."""
    Psi: np.ndarray
    """(dx, dx) inverse-Wishart scale."""
    nu: float
    """Inverse-Wishart degrees of freedom (> dx - 1)."""

    def __post_init__(self) -> None:
        self.M = _as_float("BayesianLDS.M", self.M)
        if self.M.ndim != 2 or self.M.shape[1] < self.M.shape[0] + 1:
            raise ValueError(f"BayesianLDS.M must have shape (dx, dx + du + 1), got {self.M.shape}")
        dx, p = self.M.shape
        self.V = _as_float("BayesianLDS.V", self.V)
        self.Psi = _as_float("BayesianLDS.Psi", self.Psi)
        if self.V.shape != (p, p) or self.Psi.shape != (dx, dx):
            raise ValueError(f"BayesianLDS needs V ({p}, {p}) and Psi ({dx}, {dx}); "
                             f"got {self.V.shape}, {self.Psi.shape}")
        self.V, self.Psi = _sym(self.V), _sym(self.Psi)
        _logdet_pd("BayesianLDS.V", self.V)
        _logdet_pd("BayesianLDS.Psi", self.Psi)
        self.nu = float(self.nu)
        if not (np.isfinite(self.nu) and self.nu > dx - 1):
            raise ValueError(f"BayesianLDS.nu must exceed dx - 1 = {dx - 1}, got {self.nu}")

    @property
    def dx(self) -> int:
        return self.M.shape[0]

    @property
    def du(self) -> int:
        return self.M.shape[1] - self.M.shape[0] - 1

    @property
    def p(self) -> int:
        return self.M.shape[1]

    @classmethod
    def default_prior(cls, dx: int, du: int, scale: float = 1.0, v_scale: float | None = None) -> "BayesianLDS":
        """SOLAR's prior: M = [I, 0, 0] (persistence), nu = dx + 2, Psi = scale I, V = v_scale I.

        ``v_scale`` defaults to ``scale``. With nu = dx + 2 the prior mean of Q is Psi.
        """
        if dx < 1 or du < 0:
            raise ValueError(f"need dx >= 1 and du >= 0, got dx={dx}, du={du}")
        if not (scale > 0 and (v_scale is None or v_scale > 0)):
            raise ValueError("prior scales must be positive")
        p = dx + du + 1
        M = np.zeros((dx, p))
        M[:, :dx] = np.eye(dx)
        return cls(M=M, V=(scale if v_scale is None else v_scale) * np.eye(p), Psi=scale * np.eye(dx), nu=dx + 2.0)

    # --- statistics -----------------------------------------------------------------------

    @staticmethod
    def sufficient_stats(X: np.ndarray, U: np.ndarray | None = None) -> LDSStats:
        """Statistics of the T-1 transitions of N fully observed rollouts X (N, T, dx), U (N, T, du)."""
        X, U = _check_rollouts(X, U)
        N, T, dx = X.shape
        Z = np.concatenate([X[:, :-1], U[:, :-1], np.ones((N, T - 1, 1))], axis=2).reshape(N * (T - 1), -1)
        Xn = X[:, 1:].reshape(N * (T - 1), dx)
        return LDSStats(Szz=Z.T @ Z, Sxz=Xn.T @ Z, Sxx=Xn.T @ Xn, n=float(N * (T - 1)))

    @staticmethod
    def sufficient_stats_from_smoother(smoothed: SmootherResult, U: np.ndarray | None = None) -> LDSStats:
        """Expected statistics under the smoothed posterior over latent states.

        Uses E[x_t x_t^T] = S_t + m_t m_t^T and E[x_{t+1} x_t^T] = Cov(x_{t+1}, x_t) + m_{t+1} m_t^T.
        """
        m, S, cross = smoothed.means, smoothed.covs, smoothed.cross_covs
        N, T, dx = m.shape
        if T < 2:
            raise ValueError("smoothed trajectories need at least 2 time steps")
        if U is None:
            U = np.zeros((N, T, 0))
        U = _as_float("U", U)
        if U.ndim != 3 or U.shape[0] != N or U.shape[1] not in (T, T - 1):
            raise ValueError(f"U must have shape ({N}, {T} or {T - 1}, du), got {U.shape}")
        Z = np.concatenate([m[:, :-1], U[:, :T - 1], np.ones((N, T - 1, 1))], axis=2).reshape(N * (T - 1), -1)
        Xn = m[:, 1:].reshape(N * (T - 1), dx)
        Szz = Z.T @ Z
        Szz[:dx, :dx] += S[:, :-1].sum(axis=(0, 1))
        Sxz = Xn.T @ Z
        Sxz[:, :dx] += cross.sum(axis=(0, 1))
        Sxx = Xn.T @ Xn + S[:, 1:].sum(axis=(0, 1))
        return LDSStats(Szz=_sym(Szz), Sxz=Sxz, Sxx=_sym(Sxx), n=float(N * (T - 1)))

    # --- conjugate update -----------------------------------------------------------------

    def posterior(self, stats: LDSStats) -> "BayesianLDS":
        """Conjugate MNIW update (this object is the prior)::

            V_n^{-1} = V^{-1} + Szz
            M_n      = (M V^{-1} + Sxz) V_n
            Psi_n    = Psi + Sxx + M V^{-1} M^T - M_n V_n^{-1} M_n^T
            nu_n     = nu + n
        """
        dx, p = self.dx, self.p
        if stats.Szz.shape != (p, p) or stats.Sxz.shape != (dx, p) or stats.Sxx.shape != (dx, dx):
            raise ValueError(f"statistics do not match an LDS with dx={dx}, p={p}")
        if stats.n < 0:
            raise ValueError("statistics count must be non-negative")
        _as_float("statistics", np.concatenate([stats.Szz.ravel(), stats.Sxz.ravel(), stats.Sxx.ravel()]))
        V_inv = np.linalg.inv(self.V)
        V_n_inv = _sym(V_inv + stats.Szz)
        MVinv = self.M @ V_inv
        # M_n = (M V^{-1} + Sxz) V_n: a solve against V_n^{-1} (symmetric).
        M_n = np.linalg.solve(V_n_inv, (MVinv + stats.Sxz).T).T
        Psi_n = self.Psi + stats.Sxx + MVinv @ self.M.T - M_n @ V_n_inv @ M_n.T
        return BayesianLDS(M=M_n, V=np.linalg.inv(V_n_inv), Psi=_sym(Psi_n), nu=self.nu + stats.n)

    # --- point estimates and expectations --------------------------------------------------

    def _split(self, W: np.ndarray, Q: np.ndarray) -> LDSPointEstimate:
        dx, du = self.dx, self.du
        return LDSPointEstimate(A=W[:, :dx].copy(), B=W[:, dx:dx + du].copy(), c=W[:, -1].copy(), Q=Q)

    def mean_params(self) -> LDSPointEstimate:
        """Posterior mean: W = M and Q = E[Q] = Psi / (nu - dx - 1) (needs nu > dx + 1)."""
        if self.nu <= self.dx + 1:
            raise ValueError(f"E[Q] exists only for nu > dx + 1 = {self.dx + 1}, have nu={self.nu}")
        return self._split(self.M, self.Psi / (self.nu - self.dx - 1))

    def map_params(self) -> LDSPointEstimate:
        """Joint mode of the MNIW density: W = M and Q = Psi / (nu + dx + 1 + p)."""
        return self._split(self.M, self.Psi / (self.nu + self.dx + 1 + self.p))

    def point_estimate(self, kind: str = "mean") -> LDSPointEstimate:
        """'mean' -> :meth:`mean_params`, 'mode' -> :meth:`map_params`."""
        if kind == "mean":
            return self.mean_params()
        if kind == "mode":
            return self.map_params()
        raise ValueError(f"unknown point estimate {kind!r}: use 'mean' or 'mode'")

    def expected_natural_stats(self) -> MNIWExpectations:
        """E[Q^{-1}], E[Q^{-1} W], E[W^T Q^{-1} W] and E[log|Q|] under this MNIW."""
        dx = self.dx
        Psi_inv = np.linalg.inv(self.Psi)
        E_Qinv = _sym(self.nu * Psi_inv)
        E_logdet = (_logdet_pd("Psi", self.Psi) - dx * np.log(2.0)
                    - float(np.sum(digamma((self.nu - np.arange(dx)) / 2.0))))
        return MNIWExpectations(
            E_Qinv=E_Qinv,
            E_QinvW=E_Qinv @ self.M,
            E_WtQinvW=_sym(self.M.T @ E_Qinv @ self.M + dx * self.V),
            E_logdetQ=E_logdet,
        )

    def log_density(self, W: np.ndarray, Q: np.ndarray) -> float:
        """log MNIW(W, Q) = log MN(W; M, Q, V) + log IW(Q; Psi, nu)."""
        dx, p = self.dx, self.p
        W, Q = _as_float("W", W), _as_float("Q", Q)
        if W.shape != (dx, p) or Q.shape != (dx, dx):
            raise ValueError(f"W must be ({dx}, {p}) and Q ({dx}, {dx}); got {W.shape}, {Q.shape}")
        logdet_Q = _logdet_pd("Q", Q)
        logdet_V = _logdet_pd("V", self.V)
        R = W - self.M
        mahal = np.trace(np.linalg.solve(self.V, R.T) @ np.linalg.solve(Q, R))
        log_mn = -0.5 * (mahal + dx * p * _LOG_2PI + dx * logdet_V + p * logdet_Q)
        log_iw = (0.5 * self.nu * _logdet_pd("Psi", self.Psi) - 0.5 * self.nu * dx * np.log(2.0)
                  - multigammaln(0.5 * self.nu, dx) - 0.5 * (self.nu + dx + 1) * logdet_Q
                  - 0.5 * np.trace(np.linalg.solve(Q, self.Psi)))
        return float(log_mn + log_iw)

    # --- conversions ----------------------------------------------------------------------

    def to_lds_params(self, mu0: np.ndarray, V0: np.ndarray, point: str = "mean") -> LDSParams:
        """Constant-dynamics :class:`LDSParams` (C = I) from a point estimate ('mean' or 'mode')."""
        est = self.point_estimate(point)
        return LDSParams(A=est.A, Q=est.Q, mu0=mu0, V0=V0, B=est.B if self.du > 0 else None, b=est.c)

    def to_dynamics(self, T: int, x0mu: np.ndarray, x0sigma: np.ndarray, point: str = "mean") -> LinearGaussianDynamics:
        """Time-invariant :class:`LinearGaussianDynamics` over horizon T from a point estimate."""
        if T < 2:
            raise ValueError(f"horizon T must be >= 2, got {T}")
        dx = self.dx
        x0mu, x0sigma = _as_float("x0mu", x0mu), _as_float("x0sigma", x0sigma)
        if x0mu.shape != (dx,) or x0sigma.shape != (dx, dx):
            raise ValueError(f"x0mu must be ({dx},) and x0sigma ({dx}, {dx}); got {x0mu.shape}, {x0sigma.shape}")
        est = self.point_estimate(point)
        Fm = np.zeros((T, dx, dx + self.du))
        fv = np.zeros((T, dx))
        dyn_covar = np.zeros((T, dx, dx))
        Fm[:-1] = np.concatenate([est.A, est.B], axis=1)
        fv[:-1] = est.c
        dyn_covar[:-1] = est.Q
        return LinearGaussianDynamics(Fm=Fm, fv=fv, dyn_covar=dyn_covar, x0mu=x0mu.copy(), x0sigma=_sym(x0sigma))

    def as_prior(self, strength: float = 50.0, min_xu_var: float = 1e-4) -> GlobalLinearPrior:
        """Posterior-mean dynamics as a :class:`DynamicsPrior` worth ``strength`` samples per step."""
        est = self.mean_params()
        return GlobalLinearPrior(F=np.concatenate([est.A, est.B], axis=1), f=est.c, Q=est.Q,
                                 strength=strength, min_xu_var=min_xu_var)


# --------------------------------------------------------------------------------------------
# EM for an LDS observed through Gaussian potentials


@dataclass
class EMResult:
    """Output of :func:`fit_lds_em`."""

    posterior: BayesianLDS
    """MNIW posterior from the last E-step's smoothed statistics."""
    x0mu: np.ndarray
    """(dx,) fitted initial-state mean."""
    x0sigma: np.ndarray
    """(dx, dx) fitted initial-state covariance."""
    log_likelihood: list[float] = field(default_factory=list)
    """log p(Y) summed over trajectories, one entry per E-step."""
    log_objective: list[float] = field(default_factory=list)
    """log p(Y) + log prior density of the dynamics used in that E-step (never decreases)."""
    converged: bool = False
    """Whether the log-likelihood change fell below ``tol``."""
    smoothed: SmootherResult | None = None
    """Smoother output of the last E-step."""


def fit_lds_em(Y: np.ndarray, U: np.ndarray | None, R: np.ndarray, lds: BayesianLDS,
               n_iter: int = 100, tol: float = 1e-4, point: str = "mode",
               x0_var_floor: float = 1e-9) -> EMResult:
    """EM for latent states seen through y_t = x_t + N(0, R_t), with an MNIW prior on the dynamics.

    E-step: RTS smoother under the current point estimate of the dynamics and the current
    initial-state Gaussian. M-step: conjugate MNIW posterior ``lds.posterior(smoothed stats)``
    (``lds`` stays the prior throughout) plus the ML initial-state mean / covariance.
    With ``point='mode'`` (default) the dynamics used are the posterior's joint mode, which
    makes this MAP-EM: ``log_objective`` never decreases. ``point='mean'`` uses the posterior
    mean instead. Stops when the log-likelihood changes by less than ``tol`` (absolute, total
    over trajectories) or after ``n_iter`` E-steps.

    Args:
        Y: (N, T, dx) observations (e.g. encoder means).
        U: (N, T, du) actions, or None if ``lds`` has du = 0.
        R: observation noise, (dx, dx), (T, dx, dx) or (N, T, dx, dx).
        lds: the MNIW prior (e.g. :meth:`BayesianLDS.default_prior`).
    """
    Y = _as_float("Y", Y)
    if Y.ndim != 3 or Y.shape[2] != lds.dx:
        raise ValueError(f"Y must have shape (N, T, {lds.dx}), got {Y.shape}")
    N, T, dx = Y.shape
    if N == 0 or T < 2:
        raise ValueError(f"EM needs N >= 1 trajectories of T >= 2 steps, got {Y.shape}")
    if n_iter < 1:
        raise ValueError("n_iter must be >= 1")
    if lds.du > 0 and U is None:
        raise ValueError(f"the LDS has {lds.du} inputs: pass U (N, T, {lds.du})")
    if U is not None and np.asarray(U).shape[-1] != lds.du:
        raise ValueError(f"U must have {lds.du} action dimensions, got {np.asarray(U).shape}")
    if lds.du == 0:
        U = None

    # Initial-state Gaussian from the first observations (refined by every M-step).
    x0mu = Y[:, 0].mean(axis=0)
    d0 = Y[:, 0] - x0mu
    x0sigma = d0.T @ d0 / N + np.eye(dx)
    current = lds
    result = EMResult(posterior=lds, x0mu=x0mu, x0sigma=x0sigma)
    for it in range(n_iter):
        est = current.point_estimate(point)
        params = current.to_lds_params(x0mu, x0sigma, point)
        smoothed = rts_smoother(params, Y, R, U)
        ll = float(smoothed.log_likelihood.sum())
        result.log_likelihood.append(ll)
        result.log_objective.append(ll + lds.log_density(est.W, est.Q))
        result.smoothed = smoothed
        if it > 0 and abs(ll - result.log_likelihood[-2]) < tol:
            result.converged = True
            break
        current = lds.posterior(BayesianLDS.sufficient_stats_from_smoother(smoothed, U))
        m0 = smoothed.means[:, 0]
        x0mu = m0.mean(axis=0)
        d0 = m0 - x0mu
        x0sigma = _sym(smoothed.covs[:, 0].mean(axis=0) + d0.T @ d0 / N) + x0_var_floor * np.eye(dx)
    result.posterior, result.x0mu, result.x0sigma = current, x0mu, x0sigma
    return result
