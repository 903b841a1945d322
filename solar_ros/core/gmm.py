"""Gaussian mixtures fitted by EM, and the Gaussian-mixture dynamics prior of Guided Policy Search.

A single global linear model is a poor guide for a nonlinear arm: it averages the local dynamics of
every region the rollouts visited. :class:`GMMPrior` instead fits a Gaussian mixture over points
p = [x_t; u_t; x_{t+1}] from recent rollouts. Each cluster is a joint Gaussian, i.e. a local
linear-Gaussian model (conditioning x_{t+1} on [x_t; u_t] inside a cluster gives its A, B, c, Q).
For one time step's samples the prior is the mixture of the clusters those samples belong to,
moment-matched into a single Gaussian, handed to :func:`~solar_ros.core.dynamics.fit_dynamics` as
a normal-inverse-Wishart prior.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from .dynamics import _as_float, _check_rollouts, _sym

_LOG_2PI = float(np.log(2.0 * np.pi))
_INITS = ("kmeans++", "random")


def _check_points(name: str, data, dim: int | None = None) -> np.ndarray:
    data = _as_float(name, data)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n_points, dim) with n_points, dim >= 1, got {data.shape}")
    if dim is not None and data.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the mixture's dimension), got {data.shape[1]}")
    return data


class GaussianMixture:
    """Gaussian mixture with full covariances, fitted by expectation-maximisation.

    EM runs on the data standardised per dimension (so the state, action and next-state blocks,
    whatever their units, weigh alike in the initialisation and the regulariser); the fitted
    parameters are reported in the data's units. Each covariance is regularised by a weak
    inverse-Wishart-style penalty -1/2 tr(Sigma_k^{-1} R) with R = ``reg_covar`` times the data's
    per-dimension variance, whose M-step is Sigma_k = S_k + R / N_k (S_k the weighted empirical
    covariance, N_k the cluster's effective count): clusters with few points are regularised
    more, and EM still increases the penalised log-likelihood (:attr:`objective`) monotonically.

    Initialisation: ``'kmeans++'`` seeds the centres by k-means++ and refines them with a few Lloyd
    steps; ``'random'`` takes distinct random data points as centres. Either way each point starts
    in the cluster of its nearest centre. All randomness comes from ``seed``.
    """

    def __init__(self, n_components: int, reg_covar: float = 1e-4, max_iter: int = 100, tol: float = 1e-6,
                 init: str = "kmeans++", seed: int | np.random.Generator | None = 0, lloyd_steps: int = 10,
                 n_init: int = 1) -> None:
        """
        Args:
            n_components: number of clusters K (>= 1).
            reg_covar: covariance penalty, relative to each dimension's variance (>= 0).
            max_iter: most EM iterations.
            tol: stop when the penalised log-likelihood per point changes by less than this.
            init: ``'kmeans++'`` or ``'random'``.
            seed: integer seed or a numpy Generator (used as is, so successive fits sharing one
                generator differ but the whole sequence is reproducible).
            lloyd_steps: k-means refinement steps after k-means++ seeding.
            n_init: EM runs from different initialisations; the one with the highest final
                objective is kept (EM only finds a local optimum).
        """
        if int(n_components) != n_components or n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {n_components}")
        if not (np.isfinite(reg_covar) and reg_covar >= 0):
            raise ValueError(f"reg_covar must be finite and non-negative, got {reg_covar}")
        if int(max_iter) != max_iter or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
        if not (np.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be finite and non-negative, got {tol}")
        if init not in _INITS:
            raise ValueError(f"unknown init {init!r}: use one of {_INITS}")
        if int(n_init) != n_init or n_init < 1:
            raise ValueError(f"n_init must be a positive integer, got {n_init}")
        if int(lloyd_steps) != lloyd_steps or lloyd_steps < 0:
            raise ValueError(f"lloyd_steps must be a non-negative integer, got {lloyd_steps}")
        self.n_components = int(n_components)
        self.reg_covar = float(reg_covar)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.init = init
        self.lloyd_steps = int(lloyd_steps)
        self.n_init = int(n_init)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

        self.weights: np.ndarray | None = None
        """(K,) mixing weights (after :meth:`fit`)."""
        self.means: np.ndarray | None = None
        """(K, D) cluster means, data units."""
        self.covariances: np.ndarray | None = None
        """(K, D, D) cluster covariances, data units."""
        self.log_likelihood: list[float] = []
        """Mean log-likelihood per point, one entry per EM iteration."""
        self.objective: list[float] = []
        """Mean penalised log-likelihood per point (what EM never decreases), one entry per iteration."""
        self.converged = False
        """Whether the objective changed by less than ``tol`` before ``max_iter``."""

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, data: np.ndarray) -> "GaussianMixture":
        """Fit the mixture to ``data`` (n_points, D) and return it; needs n_points >= max(2, K)."""
        data = _check_points("data", data)
        n, dim = data.shape
        K = self.n_components
        if n < max(2, K):
            raise ValueError(f"need at least max(2, n_components={K}) points, got {n}")
        self._shift = data.mean(axis=0)
        # Dimensions without spread keep unit scale (their penalty then acts in data units).
        std = data.std(axis=0)
        self._scale = np.where(std > 1e-12 * (1.0 + np.abs(self._shift)), std, 1.0)
        z = (data - self._shift) / self._scale
        self._dim = dim

        best = None
        for _ in range(self.n_init):
            run = self._em(z, self._initial_responsibilities(z))
            if best is None or run["objective"][-1] > best["objective"][-1]:
                best = run
        for name, value in best.items():
            setattr(self, name, value)
        self.weights = self._weights.copy()
        self.means = self._shift + self._means_z * self._scale
        self.covariances = self._cov_z * np.outer(self._scale, self._scale)
        return self

    def _em(self, z: np.ndarray, resp: np.ndarray) -> dict:
        """EM from initial responsibilities; returns the final parameters and the histories."""
        n = len(z)
        log_likelihood, objective, converged = [], [], False
        log_jacobian = float(np.sum(np.log(self._scale)))
        for _ in range(self.max_iter):
            self._m_step(z, resp)
            log_joint = self._log_joint(z)
            log_norm = logsumexp(log_joint, axis=1)
            resp = np.exp(log_joint - log_norm[:, None])
            ll = float(np.mean(log_norm)) - log_jacobian
            penalty = 0.5 * self.reg_covar * float(np.sum(np.trace(self._cov_inv_z, axis1=1, axis2=2))) / n
            log_likelihood.append(ll)
            objective.append(ll - penalty)
            if len(objective) > 1 and abs(objective[-1] - objective[-2]) < self.tol:
                converged = True
                break
        names = ("_weights", "_means_z", "_cov_z", "_chol_z", "_chol_inv_z", "_cov_inv_z")
        return {**{name: getattr(self, name) for name in names},
                "log_likelihood": log_likelihood, "objective": objective, "converged": converged}

    def _initial_responsibilities(self, z: np.ndarray) -> np.ndarray:
        """One-hot responsibilities: each point in the cluster of its nearest initial centre."""
        n, K = len(z), self.n_components
        if self.init == "random":
            centres = z[self._rng.choice(n, size=K, replace=False)]
        else:
            centres = np.empty((K, z.shape[1]))
            centres[0] = z[self._rng.integers(n)]
            d2 = np.sum((z - centres[0]) ** 2, axis=1)
            for k in range(1, K):
                total = d2.sum()
                # All points already coincide with a centre (fewer distinct points than K): any will do.
                idx = self._rng.choice(n, p=d2 / total) if total > 0 else self._rng.integers(n)
                centres[k] = z[idx]
                d2 = np.minimum(d2, np.sum((z - centres[k]) ** 2, axis=1))
            for _ in range(self.lloyd_steps):
                labels = self._nearest(z, centres)
                counts = np.bincount(labels, minlength=K)
                sums = np.zeros_like(centres)
                np.add.at(sums, labels, z)
                filled = counts > 0  # an emptied centre stays where it was
                centres[filled] = sums[filled] / counts[filled, None]
        resp = np.zeros((n, K))
        resp[np.arange(n), self._nearest(z, centres)] = 1.0
        return resp

    @staticmethod
    def _nearest(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
        d2 = np.sum(z ** 2, axis=1)[:, None] - 2.0 * z @ centres.T + np.sum(centres ** 2, axis=1)[None]
        return np.argmin(d2, axis=1)

    def _m_step(self, z: np.ndarray, resp: np.ndarray) -> None:
        n, dim = z.shape
        counts = resp.sum(axis=0)
        # A cluster that lost (almost) all its points: park it on the whole data with ~zero weight
        # rather than dividing by ~0.
        dead = counts < 1e-8
        safe = np.where(dead, 1.0, counts)
        means = (resp.T @ z) / safe[:, None]
        means[dead] = 0.0
        cov = np.empty((len(counts), dim, dim))
        for k in range(len(counts)):  # a loop of plain matmuls beats numpy's batched one at these sizes
            diff = z - means[k]
            cov[k] = (diff * resp[:, k, None]).T @ diff / safe[k]
        cov[dead] = np.eye(dim)
        cov = _sym(cov) + (self.reg_covar / safe)[:, None, None] * np.eye(dim)
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError as err:
            raise ValueError("a cluster covariance is singular (e.g. the data lie in a subspace); "
                             "use reg_covar > 0 or fewer components") from err
        self._weights = counts / n
        self._means_z, self._cov_z, self._chol_z = means, cov, chol
        eye = np.broadcast_to(np.eye(dim), cov.shape)
        self._chol_inv_z = np.linalg.solve(chol, eye)
        self._cov_inv_z = np.swapaxes(self._chol_inv_z, 1, 2) @ self._chol_inv_z

    def _log_joint(self, z: np.ndarray) -> np.ndarray:
        """log w_k + log N(z_n; mu_k, Sigma_k) in standardised units, shape (n, K)."""
        mahal = np.empty((len(z), self.n_components))
        for k in range(self.n_components):
            whitened = (z - self._means_z[k]) @ self._chol_inv_z[k].T
            mahal[:, k] = np.einsum("ni,ni->n", whitened, whitened)
        logdet = 2.0 * np.sum(np.log(np.diagonal(self._chol_z, axis1=1, axis2=2)), axis=1)
        with np.errstate(divide="ignore"):
            log_w = np.log(self._weights)
        return log_w - 0.5 * (mahal + logdet + z.shape[1] * _LOG_2PI)

    # --- using a fitted mixture ---------------------------------------------------------------

    def _standardised(self, data) -> np.ndarray:
        if self.means is None:
            raise ValueError("the mixture is not fitted yet: call fit(data) first")
        data = _check_points("data", data, self._dim)
        return (data - self._shift) / self._scale

    def responsibilities(self, data: np.ndarray) -> np.ndarray:
        """Posterior cluster probabilities p(k | point), shape (n_points, K); rows sum to 1."""
        log_joint = self._log_joint(self._standardised(data))
        return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))

    def log_density(self, data: np.ndarray) -> np.ndarray:
        """log p(point) under the mixture, shape (n_points,), in the data's units."""
        log_norm = logsumexp(self._log_joint(self._standardised(data)), axis=1)
        return log_norm - float(np.sum(np.log(self._scale)))

    def moments(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the mixture of clusters with ``weights`` (K,) (normalised here).

        mu = sum_k w_k mu_k, Sigma = sum_k w_k (Sigma_k + (mu_k - mu)(mu_k - mu)^T).
        """
        if self.means is None:
            raise ValueError("the mixture is not fitted yet: call fit(data) first")
        w = _as_float("weights", weights)
        if w.shape != (self.n_components,) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be {self.n_components} non-negative numbers with a positive sum, "
                             f"got shape {w.shape}")
        w = w / w.sum()
        mu = w @ self.means
        diff = self.means - mu
        sigma = np.einsum("k,kij->ij", w, self.covariances) + np.einsum("k,ki,kj->ij", w, diff, diff)
        return mu, _sym(sigma)


# --------------------------------------------------------------------------------------------
# the dynamics prior


@dataclass
class GMMPrior:
    """Gaussian-mixture normal-inverse-Wishart prior for :func:`~solar_ros.core.dynamics.fit_dynamics`.

    :meth:`update` adds rollouts to a buffer of the ``max_samples`` most recent ones and refits a
    :class:`GaussianMixture` to all their transitions [x_t; u_t; x_{t+1}] with
    K = clamp(n_points // min_samples_per_cluster, 1, max_clusters) clusters. :meth:`eval` weights
    the clusters by the step's points' average responsibilities and moment-matches them into one
    Gaussian (mu0, Sigma0). That Gaussian counts as ``strength`` samples for both the mean and the
    covariance: m = n0 = strength and Phi = strength * Sigma0, independent of how many rollouts the
    step has (the normalised counts of Guided Policy Search, about 1, times its strength multiplier).
    So with N rollouts per step the fitted joint covariance is N / (N + strength) data and
    strength / (N + strength) prior: strength ~ 1 lets the step's own data take over in every
    direction they excite while the prior fills in the directions they do not (N < dx + du).

    The defaults (20 clusters at most, 40 transitions per cluster, the last 20 rollouts,
    strength 1) did best in a sweep of LQR-FLM on the 2-link reacher with 5 and 10 rollouts per
    iteration; fewer samples per cluster (20) or a stronger prior (5) did worse there.
    """

    max_clusters: int = 20
    """Upper bound on the number of clusters K."""
    min_samples_per_cluster: int = 40
    """Transitions per cluster that justify one more cluster."""
    max_samples: int = 20
    """Rollouts kept in the buffer (the most recent ones)."""
    strength: float = 1.0
    """Pseudo-count of the prior mean and covariance (m = n0 = strength)."""
    reg_covar: float = 1e-4
    """Covariance penalty of the mixture, relative to each dimension's variance."""
    max_iter: int = 100
    """Most EM iterations per refit."""
    seed: int | None = 0
    """Seed of the generator behind every refit's initialisation."""
    gmm: GaussianMixture | None = field(default=None, init=False)
    """The mixture of the last :meth:`update` (None before the first)."""

    def __post_init__(self) -> None:
        for name in ("max_clusters", "min_samples_per_cluster", "max_samples", "max_iter"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"GMMPrior.{name} must be a positive integer, got {value}")
        if not (np.isfinite(self.strength) and self.strength > 0):
            raise ValueError(f"GMMPrior.strength must be positive, got {self.strength}")
        if not (np.isfinite(self.reg_covar) and self.reg_covar >= 0):
            raise ValueError(f"GMMPrior.reg_covar must be finite and non-negative, got {self.reg_covar}")
        self._rng = np.random.default_rng(self.seed)
        self._X: np.ndarray | None = None
        self._U: np.ndarray | None = None

    @property
    def n_rollouts(self) -> int:
        """Rollouts now in the buffer."""
        return 0 if self._X is None else len(self._X)

    def update(self, X: np.ndarray, U: np.ndarray) -> "GMMPrior":
        """Add rollouts X (N, T, dx), U (N, T, du) to the buffer and refit the mixture."""
        X, U = _check_rollouts(X, U)
        if self._X is not None and (X.shape[1:] != self._X.shape[1:] or U.shape[2] != self._U.shape[2]):
            raise ValueError(f"new rollouts {X.shape}, {U.shape} do not match the buffer's "
                             f"(T, dx) = {self._X.shape[1:]}, du = {self._U.shape[2]}")
        X = X if self._X is None else np.concatenate([self._X, X])
        U = U if self._U is None else np.concatenate([self._U, U])
        self._X, self._U = X[-self.max_samples:], U[-self.max_samples:]

        pts = np.concatenate([self._X[:, :-1], self._U[:, :-1], self._X[:, 1:]], axis=2)
        pts = pts.reshape(-1, pts.shape[2])
        n_clusters = int(np.clip(len(pts) // self.min_samples_per_cluster, 1, self.max_clusters))
        self.gmm = GaussianMixture(n_clusters, reg_covar=self.reg_covar, max_iter=self.max_iter,
                                   seed=self._rng).fit(pts)
        return self

    def eval(self, x: np.ndarray, u: np.ndarray, x_next: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Prior (mu0, Phi, m, n0) for one step's samples x (N, dx), u (N, du), x_next (N, dx)."""
        if self.gmm is None:
            raise ValueError("GMMPrior has no data yet: call update(X, U) first")
        x, u, x_next = _as_float("x", x), _as_float("u", u), _as_float("x_next", x_next)
        if x.ndim != 2 or u.ndim != 2 or x_next.shape != x.shape or len(u) != len(x):
            raise ValueError(f"need x (N, dx), u (N, du), x_next (N, dx); got {x.shape}, {u.shape}, {x_next.shape}")
        if x.shape[1] != self._X.shape[2] or u.shape[1] != self._U.shape[2]:
            raise ValueError(f"the prior was fitted with dx = {self._X.shape[2]}, du = {self._U.shape[2]}; "
                             f"got x {x.shape}, u {u.shape}")
        pts = np.concatenate([x, u, x_next], axis=1)
        weights = self.gmm.responsibilities(pts).mean(axis=0)
        mu0, sigma0 = self.gmm.moments(weights)
        return mu0, self.strength * sigma0, self.strength, self.strength
