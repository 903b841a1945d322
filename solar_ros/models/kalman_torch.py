"""Differentiable Kalman filter and RTS smoother in torch, batched over trajectories.

Model (time-invariant linear-Gaussian latent dynamics, the global LDS of SOLAR):

    x_0 ~ N(mu0, V0),    x_{t+1} = A x_t + B u_t + c + N(0, Q),

with one Gaussian *potential* per step from an encoder, psi_t(x_t) = N(m_t; x_t, S_t): read as an
observation y_t = m_t of x_t with noise covariance S_t (diagonal or full). The smoother returns the
posterior q(x_{0:T-1}) ∝ p(x | A, B, c, Q) prod_t psi_t(x_t) through its marginals, the lag-one
cross-covariances, and the log normaliser

    log Z = log ∫ p(x | theta) prod_t N(m_t; x_t, S_t) dx     (the Kalman marginal likelihood).

Everything is plain torch, so gradients flow to the potentials and to the LDS parameters. Solves
go through Cholesky factors; covariance updates use symmetric "Joseph" forms that stay positive
semi-definite in float32 as well. Pass ``dtype=torch.float64`` for the numerically careful path.

Shapes: N trajectories, T steps, latent dim dx, action dim du.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "SmootherResult",
    "kalman_smoother",
    "kalman_predict",
    "kalman_update",
    "expected_log_potential",
    "kl_posterior_prior",
]


@dataclass
class SmootherResult:
    """Output of :func:`kalman_smoother` (all tensors in the computation dtype)."""

    means: torch.Tensor
    """(N, T, dx) smoothed means E_q[x_t]."""
    covs: torch.Tensor
    """(N, T, dx, dx) smoothed marginal covariances Cov_q[x_t]."""
    cross_covs: torch.Tensor
    """(N, T-1, dx, dx) lag-one cross-covariances Cov_q[x_{t+1}, x_t] = E[(x_{t+1}-m_{t+1})(x_t-m_t)^T]."""
    log_z: torch.Tensor
    """(N,) log normaliser log ∫ p(x|theta) prod_t N(m_t; x_t, S_t) dx, one per trajectory."""
    filtered_means: torch.Tensor
    """(N, T, dx) filtered means E[x_t | potentials up to t]."""
    filtered_covs: torch.Tensor
    """(N, T, dx, dx) filtered covariances."""


def _sym(P: torch.Tensor) -> torch.Tensor:
    return 0.5 * (P + P.transpose(-1, -2))


def _as_full(S: torch.Tensor, diagonal: bool) -> torch.Tensor:
    return torch.diag_embed(S) if diagonal else S


def kalman_predict(mean: torch.Tensor, cov: torch.Tensor, A: torch.Tensor, B: torch.Tensor | None,
                   c: torch.Tensor | None, Q: torch.Tensor, u: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One prediction step: the distribution of x_{t+1} given x_t ~ N(mean, cov) and action u.

    mean (..., dx), cov (..., dx, dx), u (..., du) or None (no action term).
    """
    mean_next = mean @ A.transpose(-1, -2)
    if B is not None and u is not None:
        mean_next = mean_next + u @ B.transpose(-1, -2)
    if c is not None:
        mean_next = mean_next + c
    cov_next = _sym(A @ cov @ A.transpose(-1, -2) + Q)
    return mean_next, cov_next


def kalman_update(mean: torch.Tensor, cov: torch.Tensor, m: torch.Tensor, S: torch.Tensor,
                  diagonal: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Condition x ~ N(mean, cov) on the potential N(m; x, S).

    mean, m (..., dx); cov (..., dx, dx); S (..., dx) diagonal variances or (..., dx, dx) full
    (``diagonal`` says which when the shape alone is ambiguous; None infers it from S.dim()).
    Returns (posterior mean, posterior cov, log N(m; mean, cov + S)).
    """
    dx = mean.shape[-1]
    if diagonal is None:
        diagonal = S.dim() == m.dim()
    S_full = _as_full(S, diagonal)
    innovation_cov = _sym(cov + S_full)
    L = torch.linalg.cholesky(innovation_cov)
    r = (m - mean).unsqueeze(-1)
    z = torch.linalg.solve_triangular(L, r, upper=False)  # L^{-1} r
    # Gain transpose K^T = (cov + S)^{-1} cov, by two triangular solves.
    Kt = torch.cholesky_solve(cov, L)
    K = Kt.transpose(-1, -2)
    mean_post = mean + (K @ r).squeeze(-1)
    I_K = torch.eye(dx, dtype=cov.dtype, device=cov.device) - K
    # Joseph form: a sum of PSD terms, so it cannot lose positive-definiteness to round-off.
    cov_post = _sym(I_K @ cov @ I_K.transpose(-1, -2) + K @ S_full @ Kt)
    log_lik = (-0.5 * dx * math.log(2.0 * math.pi)
               - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
               - 0.5 * z.squeeze(-1).pow(2).sum(-1))
    return mean_post, cov_post, log_lik


def _check_inputs(m, S, A, B, c, Q, mu0, V0, u):
    if m.dim() != 3:
        raise ValueError(f"potential means must have shape (N, T, dx), got {tuple(m.shape)}")
    N, T, dx = m.shape
    if N == 0 or T == 0:
        raise ValueError(f"need at least one trajectory with one step, got N={N}, T={T}")
    if S.shape not in ((N, T, dx), (N, T, dx, dx)):
        raise ValueError(f"potential covariances must have shape {(N, T, dx)} (diagonal) or "
                         f"{(N, T, dx, dx)} (full), got {tuple(S.shape)}")
    for name, val, shape in (("A", A, (dx, dx)), ("Q", Q, (dx, dx)), ("mu0", mu0, (dx,)),
                             ("V0", V0, (dx, dx)), ("c", c, (dx,))):
        if val is not None and tuple(val.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(val.shape)}")
    if B is not None:
        if B.dim() != 2 or B.shape[0] != dx:
            raise ValueError(f"B must have shape ({dx}, du), got {tuple(B.shape)}")
        if u is None:
            raise ValueError("actions u are required when B is given")
        if tuple(u.shape) != (N, T, B.shape[1]):
            raise ValueError(f"actions must have shape {(N, T, B.shape[1])}, got {tuple(u.shape)}")


def kalman_smoother(m: torch.Tensor, S: torch.Tensor, A: torch.Tensor, B: torch.Tensor | None,
                    c: torch.Tensor | None, Q: torch.Tensor, mu0: torch.Tensor, V0: torch.Tensor,
                    u: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> SmootherResult:
    """Kalman filter + Rauch-Tung-Striebel smoother over N trajectories at once.

    Args:
        m: (N, T, dx) potential means (the encoder's "observations" of x_t).
        S: (N, T, dx) diagonal potential variances, or (N, T, dx, dx) full covariances.
        A, Q: (dx, dx) transition matrix and process-noise covariance.
        B: (dx, du) action matrix, or None for an autonomous system.
        c: (dx,) offset, or None.
        mu0, V0: (dx,), (dx, dx) initial-state distribution.
        u: (N, T, du) actions; u_t drives the transition t -> t+1 (u_{T-1} is unused).
        dtype: computation dtype (e.g. torch.float64); None keeps the dtype of ``m``.
    """
    _check_inputs(m, S, A, B, c, Q, mu0, V0, u)
    dtype = dtype or m.dtype
    cast = lambda x: None if x is None else x.to(dtype)  # noqa: E731
    m, S, A, B, c, Q, mu0, V0, u = map(cast, (m, S, A, B, c, Q, mu0, V0, u))
    N, T, dx = m.shape
    diagonal = S.dim() == 3

    pred_means, pred_covs, filt_means, filt_covs, log_liks = [], [], [], [], []
    mean_p = mu0.expand(N, dx)
    cov_p = V0.expand(N, dx, dx)
    for t in range(T):
        if t > 0:
            u_prev = None if u is None else u[:, t - 1]
            mean_p, cov_p = kalman_predict(filt_means[-1], filt_covs[-1], A, B, c, Q, u_prev)
        mean_f, cov_f, log_lik = kalman_update(mean_p, cov_p, m[:, t], S[:, t], diagonal)
        pred_means.append(mean_p)
        pred_covs.append(cov_p)
        filt_means.append(mean_f)
        filt_covs.append(cov_f)
        log_liks.append(log_lik)

    eye = torch.eye(dx, dtype=dtype, device=m.device)
    sm_means = [None] * T
    sm_covs = [None] * T
    cross = [None] * max(T - 1, 0)
    sm_means[-1], sm_covs[-1] = filt_means[-1], filt_covs[-1]
    for t in range(T - 2, -1, -1):
        # Smoother gain J = P_f A^T P_pred^{-1}; solve for J^T = P_pred^{-1} A P_f.
        L = torch.linalg.cholesky(pred_covs[t + 1])
        Jt = torch.cholesky_solve(A @ filt_covs[t], L)
        J = Jt.transpose(-1, -2)
        diff = (sm_means[t + 1] - pred_means[t + 1]).unsqueeze(-1)
        sm_means[t] = filt_means[t] + (J @ diff).squeeze(-1)
        # P_f - J P_pred J^T + J P_s J^T, rewritten as a sum of PSD terms.
        I_JA = eye - J @ A
        sm_covs[t] = _sym(I_JA @ filt_covs[t] @ I_JA.transpose(-1, -2) + J @ (Q + sm_covs[t + 1]) @ Jt)
        cross[t] = sm_covs[t + 1] @ Jt

    cross_covs = torch.stack(cross, 1) if T > 1 else m.new_zeros((N, 0, dx, dx))
    return SmootherResult(
        means=torch.stack(sm_means, 1),
        covs=torch.stack(sm_covs, 1),
        cross_covs=cross_covs,
        log_z=torch.stack(log_liks, 1).sum(1),
        filtered_means=torch.stack(filt_means, 1),
        filtered_covs=torch.stack(filt_covs, 1),
    )


def expected_log_potential(m: torch.Tensor, S: torch.Tensor, means: torch.Tensor,
                           covs: torch.Tensor) -> torch.Tensor:
    """E_q[log N(m; x, S)] for x ~ q = N(means, covs), per step.

    m, means (..., dx); covs (..., dx, dx); S (..., dx) diagonal or (..., dx, dx) full.
    Returns (...) tensor.
    """
    dx = m.shape[-1]
    diff = (m - means).unsqueeze(-1)
    if S.dim() == m.dim():  # diagonal
        quad = (diff.squeeze(-1).pow(2) / S).sum(-1)
        trace = (torch.diagonal(covs, dim1=-2, dim2=-1) / S).sum(-1)
        logdet = torch.log(S).sum(-1)
    else:
        L = torch.linalg.cholesky(S)
        quad = torch.linalg.solve_triangular(L, diff, upper=False).squeeze(-1).pow(2).sum(-1)
        trace = torch.diagonal(torch.cholesky_solve(covs, L), dim1=-2, dim2=-1).sum(-1)
        logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (dx * math.log(2.0 * math.pi) + logdet + quad + trace)


def kl_posterior_prior(m: torch.Tensor, S: torch.Tensor, result: SmootherResult) -> torch.Tensor:
    """KL(q || p(x | theta)) per trajectory, exact for the smoothed Gaussian q.

    Since q(x) = p(x | theta) prod_t psi_t(x_t) / Z,
    KL = E_q[log q - log p] = sum_t E_q[log psi_t(x_t)] - log Z   (>= 0).
    """
    dtype = result.means.dtype
    ell = expected_log_potential(m.to(dtype), S.to(dtype), result.means, result.covs)
    return ell.sum(-1) - result.log_z
