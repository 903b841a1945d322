"""Dynamics fitting: per-step NIW fits, MNIW posterior of a global LDS, and EM on noisy latents."""
import numpy as np
import pytest
from scipy.stats import invwishart, matrix_normal

from solar_ros.core.dynamics import (
    BayesianLDS,
    GlobalLinearPrior,
    LDSStats,
    fit_dynamics,
    fit_lds_em,
)
from solar_ros.core.gaussian import LDSParams, rts_smoother, sample_lds


def random_spd(rng, d, scale=1.0, jitter=0.1):
    M = rng.standard_normal((d, d))
    return scale * (M @ M.T / d + jitter * np.eye(d))


def rollouts(rng, A, B, c, Q, N, x0_std=1.0, u_std=1.0):
    """Simulate x_{t+1} = A_t x_t + B_t u_t + c_t + N(0, Q_t) with random actions; A etc. are (T-1, ...)."""
    T = len(A) + 1
    dx, du = B.shape[1:]
    X = np.zeros((N, T, dx))
    U = u_std * rng.standard_normal((N, T, du))
    X[:, 0] = x0_std * rng.standard_normal((N, dx))
    for t in range(T - 1):
        noise = rng.multivariate_normal(np.zeros(dx), Q[t], size=N)
        X[:, t + 1] = X[:, t] @ A[t].T + U[:, t] @ B[t].T + c[t] + noise
    return X, U


def random_system(rng, T, dx, du, q=0.01):
    A = np.stack([np.eye(dx) + 0.3 * rng.standard_normal((dx, dx)) for _ in range(T - 1)])
    B = rng.standard_normal((T - 1, dx, du))
    c = rng.standard_normal((T - 1, dx))
    Q = np.stack([random_spd(rng, dx, q) for _ in range(T - 1)])
    return A, B, c, Q


# --------------------------------------------------------------------------------------------
# per-time-step fit


def test_fit_recovers_time_varying_dynamics():
    rng = np.random.default_rng(0)
    T, dx, du = 6, 3, 2
    A, B, c, Q = random_system(rng, T, dx, du)
    X, U = rollouts(rng, A, B, c, Q, N=4000)
    dyn = fit_dynamics(X, U)
    assert dyn.Fm.shape == (T, dx, dx + du) and dyn.T == T
    np.testing.assert_allclose(dyn.Fm[:-1, :, :dx], A, atol=0.02)
    np.testing.assert_allclose(dyn.Fm[:-1, :, dx:], B, atol=0.02)
    np.testing.assert_allclose(dyn.fv[:-1], c, atol=0.02)
    np.testing.assert_allclose(dyn.dyn_covar[:-1], Q, atol=0.003)
    np.testing.assert_array_equal(dyn.Fm[-1], 0)
    np.testing.assert_array_equal(dyn.fv[-1], 0)
    np.testing.assert_array_equal(dyn.dyn_covar[-1], 0)
    np.testing.assert_allclose(dyn.x0mu, 0, atol=0.05)
    np.testing.assert_allclose(dyn.x0sigma, np.eye(dx), atol=0.08)


def test_fit_without_prior_equals_least_squares():
    rng = np.random.default_rng(1)
    T, dx, du, N = 5, 2, 2, 12
    A, B, c, Q = random_system(rng, T, dx, du, q=0.2)
    X, U = rollouts(rng, A, B, c, Q, N=N)
    dyn = fit_dynamics(X, U, regularization=0.0, x0_var_floor=0.0)
    for t in range(T - 1):
        design = np.concatenate([X[:, t], U[:, t], np.ones((N, 1))], axis=1)
        coef, *_ = np.linalg.lstsq(design, X[:, t + 1], rcond=None)
        resid = X[:, t + 1] - design @ coef
        np.testing.assert_allclose(dyn.Fm[t], coef[:-1].T, atol=1e-9)
        np.testing.assert_allclose(dyn.fv[t], coef[-1], atol=1e-9)
        np.testing.assert_allclose(dyn.dyn_covar[t], resid.T @ resid / N, atol=1e-9)
    np.testing.assert_allclose(dyn.x0mu, X[:, 0].mean(axis=0))
    np.testing.assert_allclose(dyn.x0sigma, np.cov(X[:, 0].T, bias=True))
    # The default tiny regulariser changes essentially nothing on well-spread data.
    reg = fit_dynamics(X, U)
    np.testing.assert_allclose(reg.Fm, dyn.Fm, atol=1e-4)


def test_prior_blends_with_data_by_counts_and_dominates_when_strong():
    rng = np.random.default_rng(2)
    T, dx, du, N = 4, 2, 1, 20
    A, B, c, Q = random_system(rng, T, dx, du, q=0.1)
    X, U = rollouts(rng, A, B, c, Q, N=N)
    F = rng.standard_normal((dx, dx + du))
    f = rng.standard_normal(dx)
    Qp = random_spd(rng, dx, 0.5)
    plain = fit_dynamics(X, U, regularization=0.0)
    # Moderate strength: gain and offset are the count-weighted blends of data and prior.
    n0 = 30.0
    prior = GlobalLinearPrior(F=F, f=f, Q=Qp, strength=n0, min_xu_var=0.0)
    blended = fit_dynamics(X, U, prior=prior, regularization=0.0)
    w = N / (N + n0)
    np.testing.assert_allclose(blended.Fm[:-1], w * plain.Fm[:-1] + (1 - w) * F, atol=1e-9)
    np.testing.assert_allclose(blended.fv[:-1], w * plain.fv[:-1] + (1 - w) * f, atol=1e-9)
    # Noise: blend of the two noise models plus their disagreement on this step's data.
    for t in range(T - 1):
        xu = np.concatenate([X[:, t], U[:, t]], axis=1)
        delta = xu @ (plain.Fm[t] - F).T + (plain.fv[t] - f)
        ref = w * plain.dyn_covar[t] + (1 - w) * Qp + w * (1 - w) * delta.T @ delta / N
        np.testing.assert_allclose(blended.dyn_covar[t], ref, atol=1e-9)
    # Very strong prior: the fit is the prior model.
    strong = fit_dynamics(X, U, prior=GlobalLinearPrior(F=F, f=f, Q=Qp, strength=1e9))
    np.testing.assert_allclose(strong.Fm[:-1], np.broadcast_to(F, (T - 1,) + F.shape), atol=1e-5)
    np.testing.assert_allclose(strong.fv[:-1], np.broadcast_to(f, (T - 1, dx)), atol=1e-5)
    np.testing.assert_allclose(strong.dyn_covar[:-1], np.broadcast_to(Qp, (T - 1, dx, dx)), atol=1e-5)


def test_prior_fills_in_directions_the_data_do_not_excite():
    # All rollouts start from the same state, so x_0 has no spread and A_0 is unidentifiable
    # from the data; the prior (from a global model) decides it.
    rng = np.random.default_rng(3)
    T, dx, du = 5, 2, 1
    A, B, c, Q = random_system(rng, T, dx, du, q=0.01)
    A[:] = A[0]
    B[:] = B[0]
    c[:] = c[0]
    X, U = rollouts(rng, A, B, c, Q, N=30, x0_std=0.0)
    prior = GlobalLinearPrior.fit(X, U, strength=10.0)
    np.testing.assert_allclose(prior.F, np.concatenate([A[0], B[0]], axis=1), atol=0.05)
    dyn = fit_dynamics(X, U, prior=prior)
    np.testing.assert_allclose(dyn.Fm[0, :, :dx], A[0], atol=0.08)
    assert np.all(np.isfinite(fit_dynamics(X, U).Fm))


def test_fit_dynamics_rejects_bad_input():
    X = np.zeros((4, 5, 2))
    U = np.zeros((4, 5, 1))
    with pytest.raises(ValueError, match="U must have shape"):
        fit_dynamics(X, U[:, :4])
    with pytest.raises(ValueError, match="at least 2 time steps"):
        fit_dynamics(X[:, :1], U[:, :1])
    with pytest.raises(ValueError, match="no rollouts"):
        fit_dynamics(X[:0], U[:0])
    bad = X.copy()
    bad[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_dynamics(bad, U)

    class WrongPrior:
        def eval(self, x, u, x_next):
            return np.zeros(3), np.eye(3), 1.0, 1.0

    with pytest.raises(ValueError, match="prior must return"):
        fit_dynamics(X, U, prior=WrongPrior())


# --------------------------------------------------------------------------------------------
# MNIW posterior


def random_mniw(rng, dx, du, nu_extra=5.0):
    p = dx + du + 1
    return BayesianLDS(M=rng.standard_normal((dx, p)), V=random_spd(rng, p), Psi=random_spd(rng, dx), nu=dx + nu_extra)


def test_posterior_with_no_data_is_the_prior():
    rng = np.random.default_rng(4)
    prior = random_mniw(rng, 3, 2)
    post = prior.posterior(LDSStats.zeros(3, 2))
    for name in ("M", "V", "Psi"):
        np.testing.assert_allclose(getattr(post, name), getattr(prior, name), atol=1e-12)
    assert post.nu == prior.nu


def test_posterior_matches_dense_conditioning_and_residual_form():
    # For fixed Q, vec(W) is Gaussian; its posterior mean from dense conditioning must be M_n,
    # and Psi_n must equal Psi + residual scatter + prior deviation (computed from raw data).
    rng = np.random.default_rng(5)
    dx, du, n = 2, 1, 7
    prior = random_mniw(rng, dx, du)
    p = prior.p
    Z = np.concatenate([rng.standard_normal((n, dx + du)), np.ones((n, 1))], axis=1)
    Xn = rng.standard_normal((n, dx))
    stats = LDSStats(Szz=Z.T @ Z, Sxz=Xn.T @ Z, Sxx=Xn.T @ Xn, n=float(n))
    post = prior.posterior(stats)
    Q = random_spd(rng, dx)
    # vec stacks columns: vec(W z) = (z^T kron I) vec(W); prior cov V kron Q.
    prior_cov = np.kron(prior.V, Q)
    H = np.stack([np.kron(z[None, :], np.eye(dx)) for z in Z]).reshape(n * dx, dx * p)
    S = H @ prior_cov @ H.T + np.kron(np.eye(n), Q)
    w_mean = prior.M.ravel(order="F") + prior_cov @ H.T @ np.linalg.solve(S, Xn.ravel() - H @ prior.M.ravel(order="F"))
    w_cov = prior_cov - prior_cov @ H.T @ np.linalg.solve(S, H @ prior_cov)
    np.testing.assert_allclose(post.M, w_mean.reshape(dx, p, order="F"), atol=1e-10)
    np.testing.assert_allclose(np.kron(post.V, Q), w_cov, atol=1e-10)
    resid = Xn - Z @ post.M.T
    dev = post.M - prior.M
    Psi_ref = prior.Psi + resid.T @ resid + dev @ np.linalg.solve(prior.V, dev.T)
    np.testing.assert_allclose(post.Psi, Psi_ref, atol=1e-10)
    assert post.nu == prior.nu + n


def test_sequential_updates_equal_one_batch_update():
    rng = np.random.default_rng(6)
    T, dx, du = 8, 2, 2
    A, B, c, Q = random_system(rng, T, dx, du, q=0.05)
    X, U = rollouts(rng, A, B, c, Q, N=10)
    prior = BayesianLDS.default_prior(dx, du, scale=0.5)
    batch = prior.posterior(BayesianLDS.sufficient_stats(X, U))
    seq = prior.posterior(BayesianLDS.sufficient_stats(X[:4], U[:4])).posterior(
        BayesianLDS.sufficient_stats(X[4:], U[4:]))
    for name in ("M", "V", "Psi"):
        np.testing.assert_allclose(getattr(seq, name), getattr(batch, name), atol=1e-10)
    assert seq.nu == batch.nu == prior.nu + 10 * (T - 1)


def test_posterior_mean_recovers_global_lds():
    rng = np.random.default_rng(7)
    T, dx, du = 40, 3, 2
    A = np.array([[0.95, 0.1, 0.0], [-0.1, 0.95, 0.05], [0.0, 0.0, 0.9]])
    B = rng.standard_normal((dx, du))
    c = np.array([0.1, -0.2, 0.05])
    Q = random_spd(rng, dx, 0.02)

    def tile(a):
        return np.broadcast_to(a, (T - 1,) + a.shape)

    X, U = rollouts(rng, tile(A), tile(B), tile(c), tile(Q), N=250)
    post = BayesianLDS.default_prior(dx, du).posterior(BayesianLDS.sufficient_stats(X, U))
    est = post.mean_params()
    np.testing.assert_allclose(est.A, A, atol=0.01)
    np.testing.assert_allclose(est.B, B, atol=0.01)
    np.testing.assert_allclose(est.c, c, atol=0.01)
    np.testing.assert_allclose(est.Q, Q, atol=0.002)
    np.testing.assert_allclose(est.W, np.concatenate([A, B, c[:, None]], axis=1), atol=0.01)
    # The mode of Q differs from the mean only by the ratio of their denominators.
    np.testing.assert_allclose(post.map_params().Q * (post.nu + dx + 1 + post.p), est.Q * (post.nu - dx - 1))

    dyn = post.to_dynamics(T, np.zeros(dx), np.eye(dx))
    assert dyn.Fm.shape == (T, dx, dx + du)
    np.testing.assert_allclose(dyn.Fm[3], np.concatenate([est.A, est.B], axis=1))
    np.testing.assert_array_equal(dyn.Fm[-1], 0)
    # As a data-strength prior for the per-step fit: strong strength gives the LDS back.
    fitted = fit_dynamics(X[:20, :5], U[:20, :5], prior=post.as_prior(strength=1e8))
    np.testing.assert_allclose(fitted.Fm[:-1, :, :dx], np.broadcast_to(est.A, (4, dx, dx)), atol=1e-5)
    np.testing.assert_allclose(fitted.dyn_covar[:-1], np.broadcast_to(est.Q, (4, dx, dx)), atol=1e-5)


def test_expected_natural_stats_match_monte_carlo():
    rng = np.random.default_rng(8)
    dx, du = 2, 1
    p, nu = dx + du + 1, dx + 4.0
    # Psi ~ nu * (order-one matrix) and a modest M keep E[Q^-1], M^T E[Q^-1] M and dx V all of
    # order one, so the Monte-Carlo comparison is sensitive to each term.
    mniw = BayesianLDS(M=0.5 * rng.standard_normal((dx, p)), V=random_spd(rng, p),
                       Psi=nu * (np.eye(dx) + 0.3 * random_spd(rng, dx)), nu=nu)
    n = 100_000
    Qs = invwishart(df=mniw.nu, scale=mniw.Psi).rvs(size=n, random_state=rng)
    # W = M + chol(Q) Z chol(V)^T has row covariance Q and column covariance V.
    Z = rng.standard_normal((n, dx, mniw.p))
    Ws = mniw.M + np.linalg.cholesky(Qs) @ Z @ np.linalg.cholesky(mniw.V).T
    Qinv = np.linalg.inv(Qs)
    expect = mniw.expected_natural_stats()
    mc = {
        "E_Qinv": Qinv.mean(axis=0),
        "E_QinvW": (Qinv @ Ws).mean(axis=0),
        "E_WtQinvW": (np.swapaxes(Ws, 1, 2) @ Qinv @ Ws).mean(axis=0),
    }
    for name, value in mc.items():
        ref = getattr(expect, name)
        np.testing.assert_allclose(value, ref, atol=0.03 * np.abs(ref).max(), err_msg=name)
    np.testing.assert_allclose(np.linalg.slogdet(Qs)[1].mean(), expect.E_logdetQ, atol=0.01)


def test_log_density_matches_scipy():
    rng = np.random.default_rng(9)
    mniw = random_mniw(rng, 3, 1)
    W = rng.standard_normal((3, mniw.p))
    Q = random_spd(rng, 3)
    ref = (matrix_normal(mean=mniw.M, rowcov=Q, colcov=mniw.V).logpdf(W)
           + invwishart(df=mniw.nu, scale=mniw.Psi).logpdf(Q))
    np.testing.assert_allclose(mniw.log_density(W, Q), ref, rtol=1e-10)


def test_default_prior_and_validation():
    prior = BayesianLDS.default_prior(3, 2, scale=0.1)
    np.testing.assert_array_equal(prior.M, np.concatenate([np.eye(3), np.zeros((3, 3))], axis=1))
    assert prior.nu == 5 and prior.dx == 3 and prior.du == 2
    np.testing.assert_allclose(prior.mean_params().Q, 0.1 * np.eye(3))
    with pytest.raises(ValueError, match="nu must exceed"):
        BayesianLDS(M=prior.M, V=prior.V, Psi=prior.Psi, nu=1.0)
    with pytest.raises(ValueError, match="V must be positive definite"):
        BayesianLDS(M=prior.M, V=-prior.V, Psi=prior.Psi, nu=5.0)
    with pytest.raises(ValueError, match="statistics do not match"):
        prior.posterior(LDSStats.zeros(2, 2))
    with pytest.raises(ValueError, match="E\\[Q\\] exists"):
        BayesianLDS(M=prior.M, V=prior.V, Psi=prior.Psi, nu=3.5).mean_params()


# --------------------------------------------------------------------------------------------
# smoothed statistics and EM


def simulate_noisy_lds(rng, N, T):
    dx, du = 2, 1
    th = 0.2
    A = 0.97 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    B = np.array([[0.5], [-0.3]])
    c = np.array([0.05, -0.02])
    Q = 0.01 * np.eye(dx)
    truth = LDSParams(A=A, Q=Q, mu0=np.zeros(dx), V0=np.eye(dx), B=B, b=c)
    U = rng.standard_normal((N, T, du))
    # Encoder-like potentials: a different noise level for every image.
    R = np.exp(rng.uniform(np.log(0.005), np.log(0.05), size=(N, T, 1, 1))) * np.eye(dx)
    X, Y = sample_lds(truth, N, T, rng, U=U, R=R)
    return truth, X, Y, U, R


def test_smoothed_stats_with_exact_observations_equal_observed_stats():
    rng = np.random.default_rng(10)
    truth, X, _, U, _ = simulate_noisy_lds(rng, N=5, T=8)
    params = LDSParams(A=truth.A, Q=truth.Q, mu0=truth.mu0, V0=truth.V0, B=truth.B, b=truth.b)
    sm = rts_smoother(params, X, 1e-12 * np.eye(2), U)
    got = BayesianLDS.sufficient_stats_from_smoother(sm, U)
    ref = BayesianLDS.sufficient_stats(X, U)
    np.testing.assert_allclose(got.Szz, ref.Szz, atol=1e-8)
    np.testing.assert_allclose(got.Sxz, ref.Sxz, atol=1e-8)
    np.testing.assert_allclose(got.Sxx, ref.Sxx, atol=1e-8)
    assert got.n == ref.n


def test_smoothed_stats_include_posterior_covariances():
    # E[x_{t+1} x_t^T] etc. must carry the smoother's covariances and cross-covariances: compare
    # with Monte-Carlo averages over whole trajectories drawn from the exact joint posterior by
    # forward filtering, backward sampling (which uses only the filtered moments).
    rng = np.random.default_rng(11)
    truth, _, Y, U, R = simulate_noisy_lds(rng, N=1, T=4)
    sm = rts_smoother(truth, Y, R, U)
    got = BayesianLDS.sufficient_stats_from_smoother(sm, U)
    # Backward sampling (forward-filter backward-sample) from the filtered moments.
    f = sm.filtered
    n = 100_000
    xs = np.empty((n, 4, 2))
    xs[:, 3] = rng.multivariate_normal(f.filtered_means[0, 3], f.filtered_covs[0, 3], size=n)
    for t in range(2, -1, -1):
        Pf, mf = f.filtered_covs[0, t], f.filtered_means[0, t]
        pred = xs[:, t + 1] - (truth.A @ mf + truth.B @ U[0, t] + truth.b)
        J = Pf @ truth.A.T @ np.linalg.inv(f.predicted_covs[0, t + 1])
        cond_cov = Pf - J @ truth.A @ Pf
        xs[:, t] = mf + pred @ J.T + rng.multivariate_normal(np.zeros(2), cond_cov, size=n)
    ref = BayesianLDS.sufficient_stats(xs, np.broadcast_to(U, (n, 4, 1)))
    np.testing.assert_allclose(got.Sxz, ref.Sxz / n, atol=0.02)
    np.testing.assert_allclose(got.Szz, ref.Szz / n, atol=0.02)
    np.testing.assert_allclose(got.Sxx, ref.Sxx / n, atol=0.02)


def test_em_increases_objective_and_recovers_dynamics():
    rng = np.random.default_rng(12)
    truth, X, Y, U, R = simulate_noisy_lds(rng, N=30, T=40)
    # A weak prior: W | Q ~ MN(M0, Q, V0) scales with Q, so with Q ~ 0.01 a small V0 would pull
    # hard towards A = I, B = 0 (and inflate Q); a large V0 keeps it weak.
    prior = BayesianLDS.default_prior(2, 1, scale=0.01, v_scale=10.0)
    result = fit_lds_em(Y, U, R, prior, n_iter=100, tol=1e-6)
    assert result.converged
    obj = np.array(result.log_objective)
    assert len(obj) >= 5
    assert np.all(np.diff(obj) >= -1e-8 * np.abs(obj[:-1])), np.diff(obj)
    ll = np.array(result.log_likelihood)
    assert ll[-1] > ll[0] + 100.0
    est = result.posterior.mean_params()
    np.testing.assert_allclose(est.A, truth.A, atol=0.02)
    np.testing.assert_allclose(est.B, truth.B, atol=0.02)
    np.testing.assert_allclose(est.Q, truth.Q, atol=0.003)
    # The smoothed latents are closer to the true states than the raw observations.
    err_smooth = np.mean((result.smoothed.means - X) ** 2)
    err_obs = np.mean((Y - X) ** 2)
    assert err_smooth < 0.7 * err_obs


def test_em_rejects_bad_input():
    prior = BayesianLDS.default_prior(2, 1)
    Y = np.zeros((3, 5, 2))
    with pytest.raises(ValueError, match="pass U"):
        fit_lds_em(Y, None, np.eye(2), prior)
    with pytest.raises(ValueError, match="Y must have shape"):
        fit_lds_em(np.zeros((3, 5, 3)), np.zeros((3, 5, 1)), np.eye(2), prior)
    with pytest.raises(ValueError, match="n_iter"):
        fit_lds_em(Y, np.zeros((3, 5, 1)), np.eye(2), prior, n_iter=0)
