"""The SVAE's conjugate LDS step, backed by the numpy :class:`~solar_ros.core.dynamics.BayesianLDS`.

Between network updates the global LDS is re-estimated from the smoothed latent statistics of the
whole dataset: MNIW posterior = prior updated with the expected transition statistics, and the
SVAE's buffers set to its point estimate (the posterior mean by default). The initial-state
distribution is the moment match of the smoothed first states.

Use it as ``train_svae(..., lds_update=ConjugateLDSUpdate(BayesianLDS.default_prior(dx, du)))``;
after training, ``update.posterior`` is the current MNIW posterior (e.g. for LQR-FLM's prior).
"""
from __future__ import annotations

import numpy as np

from ..core.dynamics import BayesianLDS
from ..core.gaussian import LDSParams
from .svae import SmoothedStats


def initial_state_moments(stats: SmoothedStats, var_floor: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of x_0 under the mixture of the smoothed first-step marginals."""
    m0 = stats.means[:, 0]
    mu0 = m0.mean(0)
    d = m0 - mu0
    V0 = stats.covs[:, 0].mean(0) + d.T @ d / len(m0)
    V0 = 0.5 * (V0 + V0.T) + var_floor * np.eye(len(mu0))
    return mu0, V0


class ConjugateLDSUpdate:
    """Callable for :func:`~solar_ros.models.train.train_svae`: smoothed stats -> new LDS."""

    def __init__(self, prior: BayesianLDS, point: str = "mean", x0_var_floor: float = 1e-6,
                 fixed_rows=()):
        """``prior``: the MNIW prior (dx, du must match the model); ``point``: 'mean' or 'mode';
        ``fixed_rows``: indices of rows of [A | B | c] that stay at the prior's mean (e.g. a latent that
        copies the previous step's latent); the conjugate update estimates the others."""
        if point not in ("mean", "mode"):
            raise ValueError(f"point must be 'mean' or 'mode', got {point!r}")
        self.fixed_rows = np.asarray(fixed_rows, dtype=int).reshape(-1)
        if np.any((self.fixed_rows < 0) | (self.fixed_rows >= prior.dx)):
            raise ValueError(f"fixed_rows must be row indices in [0, dx={prior.dx}), got {self.fixed_rows.tolist()}")
        self.prior = prior
        self.point = point
        self.x0_var_floor = x0_var_floor
        self.posterior: BayesianLDS | None = None
        """The MNIW posterior of the latest update (None before the first)."""

    def __call__(self, stats: SmoothedStats, weight: float = 1.0) -> LDSParams:
        """The LDS from ``stats``, whose transition statistics count ``weight`` times (a sample of the
        data standing for all of it)."""
        dx, du = stats.means.shape[-1], stats.actions.shape[-1]
        if (dx, du) != (self.prior.dx, self.prior.du):
            raise ValueError(f"prior is for dx={self.prior.dx}, du={self.prior.du}; statistics have dx={dx}, du={du}")
        if not (np.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be a positive number, got {weight!r}")
        suff = BayesianLDS.sufficient_stats_from_smoother(stats, stats.actions)
        if weight != 1.0:
            suff = suff * weight
        self.posterior = self.prior.posterior(suff)
        self.posterior.M[self.fixed_rows] = self.prior.M[self.fixed_rows]
        mu0, V0 = initial_state_moments(stats, self.x0_var_floor)
        return self.posterior.to_lds_params(mu0, V0, self.point)
