"""Kalman filter / RTS smoother against dense Gaussian conditioning over the whole trajectory."""
import numpy as np
import pytest
from scipy.linalg import block_diag
from scipy.stats import multivariate_normal

from solar_ros.core.gaussian import (
    LDSParams,
    kalman_filter,
    kalman_step,
    rts_smoother,
    sample_lds,
)
from solar_ros.core.types import LinearGaussianDynamics


def random_spd(rng, d, scale=1.0, jitter=0.1):
    M = rng.standard_normal((d, d))
    return scale * (M @ M.T / d + jitter * np.eye(d))


def random_stable(rng, d):
    M = rng.standard_normal((d, d))
    return 0.9 * M / max(1.0, np.max(np.abs(np.linalg.eigvals(M))))


def make_problem(rng, dx, dy, du, T, N, time_varying, observe_identity, r_mode):
    K = T - 1
    if time_varying:
        A = np.stack([random_stable(rng, dx) for _ in range(K)])
        Q = np.stack([random_spd(rng, dx, 0.3) for _ in range(K)])
        B = rng.standard_normal((K, dx, du)) if du else None
        b = rng.standard_normal((K, dx))
    else:
        A, Q = random_stable(rng, dx), random_spd(rng, dx, 0.3)
        B = rng.standard_normal((dx, du)) if du else None
        b = rng.standard_normal(dx)
    C = None if observe_identity else rng.standard_normal((dy, dx))
    d = None if observe_identity else rng.standard_normal(dy)
    params = LDSParams(A=A, Q=Q, mu0=rng.standard_normal(dx), V0=random_spd(rng, dx), B=B, b=b, C=C, d=d)
    if r_mode == "constant":
        R = random_spd(rng, dy, 0.5)
    elif r_mode == "per_step":
        R = np.stack([random_spd(rng, dy, 0.5) for _ in range(T)])
    else:
        R = np.stack([[random_spd(rng, dy, 0.5) for _ in range(T)] for _ in range(N)])
    U = rng.standard_normal((N, T, du)) if du else None
    Y = rng.standard_normal((N, T, params.dy)) * 2.0
    return params, R, U, Y


def dense_joint(params, U_n, R_n, T):
    """Mean and covariance of (x_{0:T-1}, y_{0:T-1}) for one trajectory, built as x = mean + G eps."""
    dx = params.dx
    C = np.eye(dx) if params.C is None else params.C
    d = np.zeros(C.shape[0]) if params.d is None else params.d

    A_t = [params.A if params.A.ndim == 2 else params.A[t] for t in range(T - 1)]
    Q_t = [params.Q if params.Q.ndim == 2 else params.Q[t] for t in range(T - 1)]
    b_t = [np.zeros(dx) if params.b is None else (params.b if params.b.ndim == 1 else params.b[t])
           for t in range(T - 1)]
    B_t = [None if params.B is None else (params.B if params.B.ndim == 2 else params.B[t]) for t in range(T - 1)]

    mean = np.zeros((T, dx))
    mean[0] = params.mu0
    for t in range(T - 1):
        mean[t + 1] = A_t[t] @ mean[t] + b_t[t] + (0 if B_t[t] is None else B_t[t] @ U_n[t])
    # Noise k (k = 0: initial state, k >= 1: w_{k-1}) enters x_k and is propagated by A_{t-1}...A_k.
    G = np.zeros((T * dx, T * dx))
    for k in range(T):
        prop = np.eye(dx)
        for t in range(k, T):
            G[t * dx:(t + 1) * dx, k * dx:(k + 1) * dx] = prop
            if t < T - 1:
                prop = A_t[t] @ prop
    D = block_diag(params.V0, *Q_t)
    Sxx = G @ D @ G.T
    Cb = block_diag(*([C] * T))
    R_t = [R_n] * T if R_n.ndim == 2 else list(R_n)
    Syy = Cb @ Sxx @ Cb.T + block_diag(*R_t)
    Sxy = Sxx @ Cb.T
    ymean = (mean @ C.T + d).ravel()
    return mean.ravel(), ymean, Sxx, Sxy, Syy


def condition(xmean, ymean, Sxx, Sxy, Syy, y, rows):
    """Posterior of x given the y entries listed in rows (dense algebra)."""
    if len(rows) == 0:
        return xmean, Sxx
    Sxy_r, Syy_r = Sxy[:, rows], Syy[np.ix_(rows, rows)]
    gain = np.linalg.solve(Syy_r, Sxy_r.T).T
    return xmean + gain @ (y[rows] - ymean[rows]), Sxx - gain @ Sxy_r.T


CONFIGS = [
    # dx, dy, du, T, N, time_varying, observe_identity, r_mode
    (2, 2, 0, 4, 3, False, True, "per_step"),
    (3, 2, 2, 6, 3, True, False, "per_trajectory"),
    (3, 3, 1, 5, 2, True, True, "per_trajectory"),
    (2, 1, 1, 5, 2, False, False, "constant"),
]


@pytest.mark.parametrize("case", range(len(CONFIGS)))
def test_filter_and_smoother_match_dense_conditioning(case):
    dx, dy, du, T, N, tv, ident, r_mode = CONFIGS[case]
    rng = np.random.default_rng(100 + case)
    params, R, U, Y = make_problem(rng, dx, dy, du, T, N, tv, ident, r_mode)
    filt = kalman_filter(params, Y, R, U)
    smooth = rts_smoother(params, Y, R, U)
    for n in range(N):
        R_n = R[n] if r_mode == "per_trajectory" else R
        U_n = U[n] if du else None
        xm, ym, Sxx, Sxy, Syy = dense_joint(params, U_n, R_n, T)
        y = Y[n].ravel()
        dyy = params.dy
        for t in range(T):
            xs = slice(t * dx, (t + 1) * dx)
            m, S = condition(xm, ym, Sxx, Sxy, Syy, y, np.arange((t + 1) * dyy))
            np.testing.assert_allclose(filt.filtered_means[n, t], m[xs], atol=1e-9)
            np.testing.assert_allclose(filt.filtered_covs[n, t], S[xs, xs], atol=1e-9)
            m, S = condition(xm, ym, Sxx, Sxy, Syy, y, np.arange(t * dyy))
            np.testing.assert_allclose(filt.predicted_means[n, t], m[xs], atol=1e-9)
            np.testing.assert_allclose(filt.predicted_covs[n, t], S[xs, xs], atol=1e-9)
        m, S = condition(xm, ym, Sxx, Sxy, Syy, y, np.arange(T * dyy))
        np.testing.assert_allclose(smooth.means[n], m.reshape(T, dx), atol=1e-9)
        for t in range(T):
            xs = slice(t * dx, (t + 1) * dx)
            np.testing.assert_allclose(smooth.covs[n, t], S[xs, xs], atol=1e-9)
        for t in range(T - 1):
            nxt, cur = slice((t + 1) * dx, (t + 2) * dx), slice(t * dx, (t + 1) * dx)
            np.testing.assert_allclose(smooth.cross_covs[n, t], S[nxt, cur], atol=1e-9)
        ll = multivariate_normal(ym, Syy).logpdf(y)
        np.testing.assert_allclose(filt.log_likelihood[n], ll, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(smooth.log_likelihood[n], ll, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(filt.step_log_likelihood[n].sum(), ll, rtol=1e-10, atol=1e-9)


def test_batched_equals_per_trajectory():
    rng = np.random.default_rng(1)
    params, R, U, Y = make_problem(rng, 3, 2, 2, 6, 5, True, False, "per_trajectory")
    batch = rts_smoother(params, Y, R, U)
    for n in range(5):
        one = rts_smoother(params, Y[n:n + 1], R[n:n + 1], U[n:n + 1])
        np.testing.assert_allclose(one.means[0], batch.means[n], atol=1e-12)
        np.testing.assert_allclose(one.covs[0], batch.covs[n], atol=1e-12)
        np.testing.assert_allclose(one.cross_covs[0], batch.cross_covs[n], atol=1e-12)
        np.testing.assert_allclose(one.log_likelihood[0], batch.log_likelihood[n], atol=1e-12)


def test_inputs_shift_the_posterior_by_their_propagated_effect():
    # With Y shifted by the deterministic effect of the inputs, the posterior shifts the same way
    # and the likelihood is unchanged (a check of how u enters, independent of the dense test).
    rng = np.random.default_rng(2)
    params, R, U, Y = make_problem(rng, 2, 2, 1, 6, 3, True, True, "per_step")
    no_u = LDSParams(A=params.A, Q=params.Q, mu0=params.mu0, V0=params.V0, b=params.b)
    N, T, dx = Y.shape
    drift = np.zeros((N, T, dx))
    for t in range(T - 1):
        drift[:, t + 1] = drift[:, t] @ params.A[t].T + U[:, t] @ params.B[t].T
    with_u = rts_smoother(params, Y + drift, R, U)
    plain = rts_smoother(no_u, Y, R)
    np.testing.assert_allclose(with_u.means, plain.means + drift, atol=1e-10)
    np.testing.assert_allclose(with_u.covs, plain.covs, atol=1e-12)
    np.testing.assert_allclose(with_u.log_likelihood, plain.log_likelihood, atol=1e-10)
    # Passing only the T-1 actions that matter gives the same answer.
    short = rts_smoother(params, Y + drift, R, U[:, :-1])
    np.testing.assert_allclose(short.means, with_u.means, atol=1e-12)


def test_online_kalman_step_matches_batch_filter():
    rng = np.random.default_rng(3)
    params, R, U, Y = make_problem(rng, 3, 3, 2, 6, 4, True, True, "per_trajectory")
    filt = kalman_filter(params, Y, R, U)
    for n in range(2):  # one trajectory at a time, as the encoder node does
        mean, cov, ll = kalman_step(params, Y[n, 0], R[n, 0])
        total = ll
        np.testing.assert_allclose(mean, filt.filtered_means[n, 0], atol=1e-12)
        for t in range(1, 6):
            mean, cov, ll = kalman_step(params, Y[n, t], R[n, t], prev=(mean, cov), u_prev=U[n, t - 1], t=t)
            total = total + ll
            np.testing.assert_allclose(mean, filt.filtered_means[n, t], atol=1e-12)
            np.testing.assert_allclose(cov, filt.filtered_covs[n, t], atol=1e-12)
        np.testing.assert_allclose(total, filt.log_likelihood[n], atol=1e-10)
    # Batched online step over all trajectories.
    mean, cov, _ = kalman_step(params, Y[:, 0], R[:, 0])
    mean, cov, _ = kalman_step(params, Y[:, 1], R[:, 1], prev=(mean, cov), u_prev=U[:, 0], t=1)
    np.testing.assert_allclose(mean, filt.filtered_means[:, 1], atol=1e-12)
    with pytest.raises(ValueError, match="time index"):
        kalman_step(params, Y[0, 1], R[0, 1], prev=(mean[0], cov[0]), u_prev=U[0, 0])


def test_long_horizon_stays_symmetric_psd_and_smoothing_shrinks_covariance():
    rng = np.random.default_rng(4)
    T, N, dx = 300, 4, 3
    A = np.array([[0.999, 0.05, 0.0], [-0.05, 0.999, 0.0], [0.0, 0.0, 1.0]])
    params = LDSParams(A=A, Q=1e-8 * np.eye(dx), mu0=np.zeros(dx), V0=1e3 * np.eye(dx))
    R = np.exp(rng.uniform(-6, 2, size=(N, T, 1, 1))) * np.eye(dx)  # noise spread over 8 decades
    X, Y = sample_lds(params, N, T, rng, R=R)
    sm = rts_smoother(params, Y, R)
    for covs in (sm.covs, sm.filtered.filtered_covs):
        assert np.all(np.isfinite(covs))
        np.testing.assert_array_equal(covs, np.swapaxes(covs, -1, -2))
        assert np.min(np.linalg.eigvalsh(covs)) > -1e-12
    # Smoothed covariances are below filtered ones in the Loewner order.
    gap = np.linalg.eigvalsh(sm.filtered.filtered_covs - sm.covs)
    assert gap.min() > -1e-10
    assert np.all(np.isfinite(sm.log_likelihood))


def test_sample_lds_moments_match_dense_prior():
    rng = np.random.default_rng(5)
    params, R, _, _ = make_problem(rng, 2, 2, 0, 3, 1, True, True, "per_step")
    X, Y = sample_lds(params, 40000, 3, rng, R=R)
    xm, ym, Sxx, _, Syy = dense_joint(params, None, R, 3)
    np.testing.assert_allclose(X.reshape(len(X), -1).mean(axis=0), xm, atol=0.04)
    np.testing.assert_allclose(np.cov(X.reshape(len(X), -1).T), Sxx, atol=0.06)
    np.testing.assert_allclose(np.cov(Y.reshape(len(Y), -1).T), Syy, atol=0.08)


def test_from_dynamics_uses_steps_before_the_last():
    rng = np.random.default_rng(6)
    T, dx, du = 5, 2, 1
    Fm = rng.standard_normal((T, dx, dx + du))
    fv = rng.standard_normal((T, dx))
    covar = np.stack([random_spd(rng, dx) for _ in range(T)])
    dyn = LinearGaussianDynamics(Fm=Fm, fv=fv, dyn_covar=covar, x0mu=np.ones(dx), x0sigma=np.eye(dx))
    p = LDSParams.from_dynamics(dyn)
    assert p.n_transitions == T - 1 and p.du == du
    A, B, b, Q = p.transition(2)
    np.testing.assert_array_equal(A, Fm[2, :, :dx])
    np.testing.assert_array_equal(B, Fm[2, :, dx:])
    np.testing.assert_array_equal(b, fv[2])
    np.testing.assert_allclose(Q, covar[2])


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(7)
    params, R, U, Y = make_problem(rng, 2, 2, 1, 4, 2, True, True, "per_step")
    with pytest.raises(ValueError, match="Y must have shape"):
        kalman_filter(params, Y[0], R, U)
    bad = Y.copy()
    bad[0, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kalman_filter(params, bad, R, U)
    with pytest.raises(ValueError, match="R must have one of the shapes"):
        kalman_filter(params, Y, R[:2], U)
    with pytest.raises(ValueError, match="semidefinite"):
        kalman_filter(params, Y, -R, U)
    with pytest.raises(ValueError, match="pass U"):
        kalman_filter(params, Y, R, None)
    with pytest.raises(ValueError, match="transitions"):
        kalman_filter(params, np.zeros((2, 6, 2)), np.eye(2), np.zeros((2, 6, 1)))
    with pytest.raises(ValueError, match="disagree"):
        LDSParams(A=np.zeros((3, 2, 2)), Q=np.tile(np.eye(2), (4, 1, 1)), mu0=np.zeros(2), V0=np.eye(2))
    with pytest.raises(ValueError, match="V0"):
        LDSParams(A=np.eye(2), Q=np.eye(2), mu0=np.zeros(2), V0=np.eye(3))
    with pytest.raises(ValueError, match="positive definite"):
        kalman_filter(LDSParams(A=np.eye(2), Q=np.eye(2), mu0=np.zeros(2), V0=np.zeros((2, 2))),
                      Y, np.zeros((2, 2)))
    no_inputs = LDSParams(A=np.eye(2), Q=np.eye(2), mu0=np.zeros(2), V0=np.eye(2))
    with pytest.raises(ValueError, match="no input matrix"):
        kalman_filter(no_inputs, Y, R, U)
