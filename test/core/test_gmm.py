"""Gaussian-mixture EM and the GMM dynamics prior, checked against scipy densities, the mixture-moment
identities, and the known dynamics of a piecewise-linear system."""
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from solar_ros.core.dynamics import GlobalLinearPrior, fit_dynamics
from solar_ros.core.gmm import GaussianMixture, GMMPrior


def sample_mixture(rng, weights, means, covs, n):
    labels = rng.choice(len(weights), size=n, p=weights)
    chols = np.linalg.cholesky(covs)
    data = means[labels] + np.einsum("nij,nj->ni", chols[labels], rng.standard_normal((n, len(means[0]))))
    return data, labels


def random_spd(rng, d, scale=1.0, jitter=0.2):
    M = rng.standard_normal((d, d))
    return scale * (M @ M.T / d + jitter * np.eye(d))


def reference_log_joint(gmm, data):
    """log w_k + log N(x; mu_k, Sigma_k) from scipy, shape (n, K)."""
    return np.stack([np.log(w) + multivariate_normal(m, c).logpdf(data)
                     for w, m, c in zip(gmm.weights, gmm.means, gmm.covariances)], axis=1)


# --------------------------------------------------------------------------------------------
# the mixture


@pytest.mark.parametrize("init, n_init", [("kmeans++", 1), ("random", 4)])
def test_em_recovers_well_separated_clusters(init, n_init):
    rng = np.random.default_rng(0)
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[0.0, 0.0, 0.0], [8.0, 1.0, -2.0], [-3.0, 9.0, 4.0]])
    covs = np.stack([random_spd(rng, 3) for _ in range(3)])
    data, labels = sample_mixture(rng, weights, means, covs, 4000)
    # Random centres can land two in one cluster (a local optimum): restarts guard against that.
    gmm = GaussianMixture(3, init=init, n_init=n_init, seed=1).fit(data)
    order = [int(np.argmin(np.linalg.norm(gmm.means - m, axis=1))) for m in means]
    assert sorted(order) == [0, 1, 2]
    assert gmm.converged
    # Clusters this far apart: EM finds the maximum-likelihood fit given the true labels ...
    for k, j in enumerate(order):
        members = data[labels == k]
        np.testing.assert_allclose(gmm.weights[j], len(members) / len(data), atol=1e-4)
        np.testing.assert_allclose(gmm.means[j], members.mean(axis=0), atol=1e-3)
        np.testing.assert_allclose(gmm.covariances[j], np.cov(members.T, bias=True), atol=2e-3)
    # ... which is the generating mixture up to sampling error (about 0.1 on these covariances).
    np.testing.assert_allclose(gmm.weights[order], weights, atol=0.03)
    np.testing.assert_allclose(gmm.means[order], means, atol=0.15)
    np.testing.assert_allclose(gmm.covariances[order], covs, atol=0.35)


def test_log_likelihood_never_decreases_and_matches_scipy():
    rng = np.random.default_rng(1)
    # Overlapping clusters, so EM needs many iterations.
    means = np.array([[0.0, 0.0], [1.5, 0.5], [0.5, 2.0], [2.5, 2.5]])
    covs = np.stack([random_spd(rng, 2, 0.6) for _ in range(4)])
    data, _ = sample_mixture(rng, np.full(4, 0.25), means, covs, 1500)
    # Plain EM (no penalty): the log-likelihood itself is monotone.
    plain = GaussianMixture(4, reg_covar=0.0, tol=0.0, max_iter=60, seed=0).fit(data)
    assert len(plain.log_likelihood) == 60
    assert np.all(np.diff(plain.log_likelihood) >= -1e-10)
    assert plain.log_likelihood[-1] > plain.log_likelihood[0] + 0.01
    # With the covariance penalty EM ascends the penalised objective.
    reg = GaussianMixture(4, reg_covar=0.5, tol=0.0, max_iter=60, seed=0).fit(data)
    assert np.all(np.diff(reg.objective) >= -1e-10)
    # The reported log-likelihood is that of the final parameters, as scipy computes it.
    for gmm in (plain, reg):
        ref = np.logaddexp.reduce(reference_log_joint(gmm, data), axis=1)
        np.testing.assert_allclose(gmm.log_density(data), ref, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(gmm.log_likelihood[-1], ref.mean(), rtol=1e-9)


def test_covariance_penalty_keeps_degenerate_data_fit_well_posed():
    # Points on a line in 3D: unpenalised covariances are singular, the penalty makes them definite.
    rng = np.random.default_rng(2)
    s = rng.standard_normal(300)
    data = np.stack([s, 2 * s + 1, -s], axis=1)
    with pytest.raises(ValueError, match="singular"):
        GaussianMixture(2, reg_covar=0.0).fit(data)
    gmm = GaussianMixture(2, reg_covar=1e-3).fit(data)
    assert np.all(np.linalg.eigvalsh(gmm.covariances) > 0)
    assert np.all(np.isfinite(gmm.log_density(data)))


def test_responsibilities_are_bayes_rule_and_sum_to_one():
    rng = np.random.default_rng(3)
    means = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    covs = np.stack([random_spd(rng, 2, 0.5) for _ in range(3)])
    data, _ = sample_mixture(rng, np.array([0.4, 0.3, 0.3]), means, covs, 600)
    gmm = GaussianMixture(3, seed=0).fit(data)
    query = np.concatenate([data[:50], [[1e3, -1e3], [-5e2, 40.0]]])  # far points: exp underflows naively
    resp = gmm.responsibilities(query)
    assert resp.shape == (52, 3) and np.all(resp >= 0)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, atol=1e-12)
    log_joint = reference_log_joint(gmm, query[:50])
    ref = np.exp(log_joint - np.logaddexp.reduce(log_joint, axis=1, keepdims=True))
    np.testing.assert_allclose(resp[:50], ref, atol=1e-9)


def test_moments_are_the_mixture_mean_and_covariance():
    rng = np.random.default_rng(4)
    data = rng.standard_normal((400, 3)) + np.repeat(np.eye(3) * 4, [100, 150, 150], axis=0)
    gmm = GaussianMixture(3, seed=0).fit(data)
    w = np.array([2.0, 1.0, 1.0])
    mu, sigma = gmm.moments(w)
    p = w / w.sum()
    # E[x x^T] - mu mu^T of the mixture.
    second = np.einsum("k,kij->ij", p, gmm.covariances + np.einsum("ki,kj->kij", gmm.means, gmm.means))
    np.testing.assert_allclose(mu, p @ gmm.means, atol=1e-12)
    np.testing.assert_allclose(sigma, second - np.outer(mu, mu), atol=1e-10)
    one_hot_mu, one_hot_sigma = gmm.moments(np.array([0.0, 3.0, 0.0]))
    np.testing.assert_allclose(one_hot_mu, gmm.means[1], atol=1e-12)
    np.testing.assert_allclose(one_hot_sigma, gmm.covariances[1], atol=1e-12)
    # EM's mixture mean is the data mean (the M-step preserves it).
    np.testing.assert_allclose(gmm.moments(gmm.weights)[0], data.mean(axis=0), atol=1e-9)


def test_mixture_is_deterministic_for_a_seed():
    rng = np.random.default_rng(5)
    data = rng.standard_normal((300, 4)) * [1.0, 10.0, 0.1, 1.0] + np.repeat([[0, 0, 0, 0], [3, 30, 0.3, 3]], 150, 0)
    a = GaussianMixture(5, seed=7).fit(data)
    b = GaussianMixture(5, seed=7).fit(data)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.covariances, b.covariances)
    np.testing.assert_array_equal(a.log_likelihood, b.log_likelihood)


def test_mixture_rejects_bad_input():
    data = np.random.default_rng(6).standard_normal((20, 2))
    for kwargs, match in [({"n_components": 0}, "n_components"), ({"n_components": 2, "reg_covar": -1}, "reg_covar"),
                          ({"n_components": 2, "init": "kmeans"}, "unknown init"),
                          ({"n_components": 2, "max_iter": 0}, "max_iter"),
                          ({"n_components": 2, "n_init": 0}, "n_init")]:
        with pytest.raises(ValueError, match=match):
            GaussianMixture(**kwargs)
    gmm = GaussianMixture(2)
    with pytest.raises(ValueError, match="not fitted"):
        gmm.responsibilities(data)
    bad = data.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        gmm.fit(bad)
    with pytest.raises(ValueError, match="shape"):
        gmm.fit(data[:, 0])
    with pytest.raises(ValueError, match="at least"):
        GaussianMixture(25).fit(data)
    gmm.fit(data)
    with pytest.raises(ValueError, match="2 columns"):
        gmm.responsibilities(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="weights"):
        gmm.moments(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="weights"):
        gmm.moments(np.ones(3))


# --------------------------------------------------------------------------------------------
# the dynamics prior on a piecewise-linear system

T = 20
DX, DU = 3, 2
# State [s, y1, y2]: s counts time (s' = s + 1), y follows regime 1 while s < T/2, regime 2 after.
REGIMES = [
    (np.array([[0.9, 0.4], [-0.4, 0.9]]), np.array([[1.0, 0.0], [0.3, 1.0]]), np.array([0.5, -0.2])),
    (np.array([[1.1, -0.5], [0.2, 0.6]]), np.array([[-0.6, 0.8], [1.0, -0.4]]), np.array([-0.3, 0.4])),
]
NOISE = 0.05


def regime_model(t):
    """Full-state (F (dx, dx+du), f) of the regime in force at step t."""
    A, B, c = REGIMES[0 if t < T / 2 else 1]
    F = np.zeros((DX, DX + DU))
    F[0, 0] = 1.0
    F[1:, 1:DX] = A
    F[1:, DX:] = B
    return F, np.concatenate([[1.0], c])


def piecewise_rollouts(rng, N):
    X = np.zeros((N, T, DX))
    U = rng.standard_normal((N, T, DU))
    X[:, 0, 1:] = rng.standard_normal((N, 2))
    for t in range(T - 1):
        F, f = regime_model(t)
        X[:, t + 1] = np.concatenate([X[:, t], U[:, t]], axis=1) @ F.T + f
        X[:, t + 1, 1:] += NOISE * rng.standard_normal((N, 2))
    return X, U


@pytest.fixture(scope="module")
def fitted_prior():
    rng = np.random.default_rng(10)
    X, U = piecewise_rollouts(rng, 30)
    prior = GMMPrior(max_clusters=20, min_samples_per_cluster=40, max_samples=30, strength=1.0, seed=0)
    prior.update(X[:15], U[:15]).update(X[15:], U[15:])
    return prior, X, U, rng


def test_gmm_prior_gives_each_step_its_regimes_linear_model(fitted_prior):
    prior, X, U, rng = fitted_prior
    assert prior.n_rollouts == 30
    assert prior.gmm.n_components == min(20, 30 * (T - 1) // 40)
    Xs, Us = piecewise_rollouts(rng, 4)
    for t in range(T - 1):
        mu0, Phi, m, n0 = prior.eval(Xs[:, t], Us[:, t], Xs[:, t + 1])
        assert m == n0 == 1.0
        sigma0 = Phi / n0
        # Conditioning the prior's joint Gaussian of [x; u; x'] on [x; u].
        gain = np.linalg.solve(sigma0[:DX + DU, :DX + DU], sigma0[:DX + DU, DX + DU:]).T
        offset = mu0[DX + DU:] - gain @ mu0[:DX + DU]
        F, f = regime_model(t)
        np.testing.assert_allclose(gain, F, atol=0.03, err_msg=f"step {t}")
        np.testing.assert_allclose(offset, f, atol=0.1, err_msg=f"step {t}")


def test_gmm_prior_predicts_far_better_with_few_rollouts(fitted_prior):
    prior, X, U, rng = fitted_prior
    global_prior = GlobalLinearPrior.fit(X, U, strength=1.0)
    X_few, U_few = piecewise_rollouts(rng, 3)  # N = 3 < dx + du = 5
    X_test, U_test = piecewise_rollouts(rng, 50)

    def one_step_error(dyn):
        xu = np.concatenate([X_test[:, :-1], U_test[:, :-1]], axis=2)
        pred = np.einsum("tij,ntj->nti", dyn.Fm[:-1], xu) + dyn.fv[:-1]
        return np.mean(np.sum((pred - X_test[:, 1:]) ** 2, axis=2))

    err_none = one_step_error(fit_dynamics(X_few, U_few))
    err_global = one_step_error(fit_dynamics(X_few, U_few, prior=global_prior))
    err_gmm = one_step_error(fit_dynamics(X_few, U_few, prior=prior))
    noise_floor = 2 * NOISE ** 2
    assert err_gmm < 3 * noise_floor
    assert err_gmm < 0.05 * err_global and err_gmm < 0.05 * err_none


def test_gmm_prior_buffer_keeps_the_most_recent_rollouts():
    rng = np.random.default_rng(11)
    X, U = piecewise_rollouts(rng, 12)
    prior = GMMPrior(max_clusters=3, min_samples_per_cluster=10, max_samples=5, seed=0)
    for i in range(0, 12, 4):
        prior.update(X[i:i + 4], U[i:i + 4])
    assert prior.n_rollouts == 5
    # The fitted mixture's mean is the mean of the buffered transitions: those of rollouts 7..11.
    kept = np.concatenate([X[7:, :-1], U[7:, :-1], X[7:, 1:]], axis=2).reshape(-1, 2 * DX + DU)
    np.testing.assert_allclose(prior.gmm.moments(prior.gmm.weights)[0], kept.mean(axis=0), atol=1e-9)
    assert prior.gmm.n_components == 3


def test_gmm_prior_is_deterministic_for_a_seed():
    rng = np.random.default_rng(12)
    X, U = piecewise_rollouts(rng, 10)
    outs = []
    for _ in range(2):
        prior = GMMPrior(max_clusters=6, min_samples_per_cluster=20, seed=3)
        prior.update(X[:5], U[:5]).update(X[5:], U[5:])
        outs.append(fit_dynamics(X[:2], U[:2], prior=prior))
    np.testing.assert_array_equal(outs[0].Fm, outs[1].Fm)
    np.testing.assert_array_equal(outs[0].dyn_covar, outs[1].dyn_covar)


def test_gmm_prior_rejects_bad_input():
    rng = np.random.default_rng(13)
    X, U = piecewise_rollouts(rng, 4)
    for kwargs in [{"strength": 0.0}, {"max_samples": 0}, {"max_clusters": 1.5}, {"reg_covar": np.nan}]:
        with pytest.raises(ValueError, match="GMMPrior"):
            GMMPrior(**kwargs)
    prior = GMMPrior(max_clusters=2)
    with pytest.raises(ValueError, match="update"):
        prior.eval(X[:, 0], U[:, 0], X[:, 1])
    with pytest.raises(ValueError, match="U must have shape"):
        prior.update(X, U[:, :-1])
    prior.update(X, U)
    with pytest.raises(ValueError, match="do not match"):
        prior.update(X[:, :10], U[:, :10])
    with pytest.raises(ValueError, match="fitted with dx"):
        prior.eval(X[:, 0, :2], np.concatenate([U[:, 0], U[:, 0, :1]], axis=1), X[:, 1, :2])
    with pytest.raises(ValueError, match="need x"):
        prior.eval(X[:, 0], U[:2, 0], X[:, 1])
    bad = X.copy()
    bad[0, 3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        prior.update(bad, U)
