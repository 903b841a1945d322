"""LQR-FLM checked against independent references: a Riccati recursion, dense least-squares
solutions of the tail problems, dense joint Gaussians of whole trajectories, and Monte Carlo."""
import numpy as np
import pytest

from solar_ros.core.cost import ActionCost, StateDistanceCost, SumCost
from solar_ros.core.lqr_flm import (
    LQRFLMConfig,
    NonPositiveDefiniteError,
    QuadraticCost,
    adjust_step_multiplier,
    backward,
    cost_improvements,
    estimate_cost,
    expected_cost,
    forward,
    kl_divergence,
    step_improvements,
    update,
)
from solar_ros.core.types import LinearGaussianDynamics, LinearGaussianPolicy

# ----------------------------------------------------------------------------- test systems


def random_spd(rng, n, scale=1.0, floor=0.1):
    A = rng.normal(size=(n, n))
    return scale * (A @ A.T / n + floor * np.eye(n))


def make_system(rng, T=12, dx=4, du=2, noise=1e-2, x0_std=0.3):
    """Time-invariant linear system with mildly unstable A, as LinearGaussianDynamics."""
    A = np.eye(dx) + 0.1 * rng.normal(size=(dx, dx))
    B = 0.5 * rng.normal(size=(dx, du))
    f = 0.05 * rng.normal(size=dx)
    Fm = np.tile(np.hstack([A, B]), (T, 1, 1))
    fv = np.tile(f, (T, 1))
    Fm[-1] = 0.0  # unused last step, kept as zeros by convention
    fv[-1] = 0.0
    dyn = LinearGaussianDynamics(
        Fm=Fm, fv=fv, dyn_covar=np.tile(noise * np.eye(dx), (T, 1, 1)),
        x0mu=rng.normal(size=dx), x0sigma=x0_std**2 * np.eye(dx),
    )
    return dyn, A, B, f


def random_policy(rng, T, dx, du, gain=0.3, std=0.5):
    covs = np.stack([random_spd(rng, du, std**2) for _ in range(T)])
    return LinearGaussianPolicy(gain * rng.normal(size=(T, du, dx)), rng.normal(size=(T, du)), covs)


def target_cost_models(goal, q, r):
    """0.5 sum q_i (x_i - g_i)^2 + 0.5 sum r_j u_j^2 through the project's cost models."""
    return SumCost([StateDistanceCost(target=goal, idx=range(len(goal)), weights=np.sqrt(q)), ActionCost(weights=r)])


def target_quadratic(T, goal, q, r):
    """The same cost written directly as a QuadraticCost."""
    du = len(r)
    C = np.diag(np.concatenate([q, r]))
    c = np.concatenate([-q * goal, np.zeros(du)])
    return QuadraticCost.constant(C, c, 0.5 * np.sum(q * goal**2), T)


# ----------------------------------------------------------------------------- references


def riccati_lqr(A, B, f, Q, R, goal, T):
    """Finite-horizon affine LQR, cost 0.5 (x-g)^T Q (x-g) + 0.5 u^T R u at t = 0..T-1.

    Value V(x) = 0.5 x^T P x + p^T x; the closed-loop (Joseph) form of the update.
    """
    dx, du = B.shape
    Ks, ks = np.zeros((T, du, dx)), np.zeros((T, du))
    P, p = Q.copy(), -Q @ goal  # last step: the action only costs, so u = 0
    for t in range(T - 2, -1, -1):
        H = R + B.T @ P @ B
        Ks[t] = -np.linalg.solve(H, B.T @ P @ A)
        ks[t] = -np.linalg.solve(H, B.T @ (P @ f + p))
        Acl, b = A + B @ Ks[t], B @ ks[t] + f
        P_new = Q + Ks[t].T @ R @ Ks[t] + Acl.T @ P @ Acl
        p = -Q @ goal + Ks[t].T @ R @ ks[t] + Acl.T @ (P @ b + p)
        P = 0.5 * (P_new + P_new.T)
    return Ks, ks


def dense_tail_solution(Cm, cv, dyn, t):
    """Exact minimiser of the deterministic tail problem from step t, by one dense linear solve.

    Returns (K_t, k_t, cov_t): u_t* is affine in x_t, and the max-entropy covariance is the
    first action block of the inverse Hessian over (u_t..u_{T-1}) (a Schur complement).
    """
    T, dx, du = dyn.T, dyn.dx, dyn.du
    n = (T - t) * du
    rows = []  # z_s = c_s(x_t) + H_s U, with c_s affine in x_t: c_s = Cx_s x_t + c0_s
    Gx, Gu, g0 = np.eye(dx), np.zeros((dx, n)), np.zeros(dx)
    for s in range(t, T):
        j = (s - t) * du
        Su = np.zeros((du, n))
        Su[:, j:j + du] = np.eye(du)
        H = np.vstack([Gu, Su])
        Hx = np.vstack([Gx, np.zeros((du, dx))])
        h0 = np.concatenate([g0, np.zeros(du)])
        rows.append((s, H, Hx, h0))
        if s < T - 1:
            A, B = dyn.Fm[s][:, :dx], dyn.Fm[s][:, dx:]
            Gx, Gu, g0 = A @ Gx, A @ Gu + B @ Su, A @ g0 + dyn.fv[s]
    hess = sum(H.T @ Cm[s] @ H for s, H, _, _ in rows)
    lin_x = sum(H.T @ Cm[s] @ Hx for s, H, Hx, _ in rows)
    lin_0 = sum(H.T @ (Cm[s] @ h0 + cv[s]) for s, H, _, h0 in rows)
    inv = np.linalg.inv(hess)
    K = -(inv @ lin_x)[:du]
    k = -(inv @ lin_0)[:du]
    return K, k, inv[:du, :du]


def kl_augmented_quadratic(quad, prev, eta, dx):
    """cost/eta + 0.5 (u - K x - k)^T P (u - K x - k), built from the residual r = D z - k."""
    T, du = prev.k.shape
    Cm = quad.Cm / eta
    cv = quad.cv / eta
    for t in range(T):
        D = np.hstack([-prev.K[t], np.eye(du)])
        Cm[t] += D.T @ prev.inv_cov[t] @ D
        cv[t] += -D.T @ prev.inv_cov[t] @ prev.k[t]
    return Cm, cv


def dense_trajectory_gaussian(policy, dyn):
    """Mean and covariance of the whole trajectory [x0, u0, x1, u1, ...] as one Gaussian.

    Every variable is an affine map of the independent noises (initial state, policy noise, process
    noise), so mean = offsets and covariance = G G^T.
    """
    T, dx, du = dyn.T, dyn.dx, dyn.du
    n_noise = dx + T * du + (T - 1) * dx
    x0_chol = np.linalg.cholesky(dyn.x0sigma)
    m_x, G_x = dyn.x0mu.copy(), np.zeros((dx, n_noise))
    G_x[:, :dx] = x0_chol
    col = dx
    means, gains = [], []
    for t in range(T):
        m_u = policy.K[t] @ m_x + policy.k[t]
        G_u = policy.K[t] @ G_x
        G_u[:, col:col + du] += policy.chol[t]
        col += du
        means += [m_x, m_u]
        gains += [G_x, G_u]
        if t < T - 1:
            F = dyn.Fm[t]
            m_x = F @ np.concatenate([m_x, m_u]) + dyn.fv[t]
            G_x = F @ np.vstack([G_x, G_u])
            G_x[:, col:col + dx] += np.linalg.cholesky(dyn.dyn_covar[t])
            col += dx
    G = np.vstack(gains)
    return np.concatenate(means), G @ G.T


def gaussian_kl(m1, S1, m2, S2):
    n = len(m1)
    S2_inv = np.linalg.inv(S2)
    d = m2 - m1
    return 0.5 * (np.trace(S2_inv @ S1) - n + d @ S2_inv @ d + np.linalg.slogdet(S2)[1] - np.linalg.slogdet(S1)[1])


def sample_rollouts(rng, policy, dyn, N):
    """N rollouts (X (N,T,dx), U (N,T,du)) of a linear-Gaussian policy on linear-Gaussian dynamics."""
    T, dx, du = dyn.T, dyn.dx, dyn.du
    X, U = np.zeros((N, T, dx)), np.zeros((N, T, du))
    x = rng.multivariate_normal(dyn.x0mu, dyn.x0sigma, size=N)
    for t in range(T):
        u = x @ policy.K[t].T + policy.k[t] + rng.normal(size=(N, du)) @ policy.chol[t].T
        X[:, t], U[:, t] = x, u
        if t < T - 1:
            noise = rng.normal(size=(N, dx)) @ np.linalg.cholesky(dyn.dyn_covar[t]).T
            x = np.concatenate([x, u], axis=1) @ dyn.Fm[t].T + dyn.fv[t] + noise
    return X, U


def log_policy_density(policy, X, U):
    """log p(u_t | x_t) summed over time, per sample."""
    resid = U - (np.einsum("tij,ntj->nti", policy.K, X) + policy.k)
    maha = np.einsum("nti,tij,ntj->n", resid, policy.inv_cov, resid)
    logdet = 2 * np.sum(np.log(np.diagonal(policy.chol, axis1=1, axis2=2)))
    return -0.5 * maha - 0.5 * logdet - 0.5 * policy.T * policy.du * np.log(2 * np.pi)


# ----------------------------------------------------------------------------- (a) loose constraint = LQR


@pytest.mark.parametrize("T", [10, 20])
def test_loose_constraint_recovers_riccati_lqr(T):
    rng = np.random.default_rng(T)
    dx, du = 4, 2
    dyn, A, B, f = make_system(rng, T, dx, du, noise=1e-8)
    goal = rng.normal(size=dx)
    q, r = np.array([1.0, 2.0, 0.5, 1.5]), np.array([0.1, 0.3])
    # The cost goes through the cost models and the sample re-centring, on arbitrary samples.
    X, U = rng.normal(size=(5, T, dx)), rng.normal(size=(5, T, du))
    quad = estimate_cost(target_cost_models(goal, q, r), X, U)

    prev = LinearGaussianPolicy.initial(T, dx, du, std=1.0)
    policy, eta, info = update(prev, dyn, quad, kl_step=1e4)

    Ks, ks = riccati_lqr(A, B, f, np.diag(q), np.diag(r), goal, T)
    assert info.converged and not info.constraint_active
    assert eta == pytest.approx(1e-8)
    np.testing.assert_allclose(policy.K, Ks, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(policy.k, ks, rtol=1e-6, atol=1e-6)


def test_backward_matches_dense_tail_problems_at_fixed_eta():
    """Gains, offsets and covariances of the KL-augmented problem, for a non-trivial prev policy."""
    rng = np.random.default_rng(1)
    T, dx, du = 6, 3, 2
    dyn, *_ = make_system(rng, T, dx, du)
    for t in range(T - 1):  # time-varying dynamics exercise the per-step indexing
        dyn.Fm[t] += 0.05 * rng.normal(size=(dx, dx + du))
    quad = QuadraticCost(
        np.stack([random_spd(rng, dx + du) for _ in range(T)]), rng.normal(size=(T, dx + du)), rng.normal(size=T)
    )
    prev = random_policy(rng, T, dx, du)
    eta = 0.7
    policy = backward(dyn, quad, prev, eta)
    Cm_aug, cv_aug = kl_augmented_quadratic(quad, prev, eta, dx)
    for t in range(T):
        K, k, cov = dense_tail_solution(Cm_aug, cv_aug, dyn, t)
        np.testing.assert_allclose(policy.K[t], K, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(policy.k[t], k, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(policy.cov[t], cov, rtol=1e-8, atol=1e-12)
    # A tuple (Cm, cv) is accepted and gives the same policy.
    np.testing.assert_allclose(backward(dyn, (quad.Cm, quad.cv), prev, eta).K, policy.K)


# ----------------------------------------------------------------------------- (b) binding constraint


@pytest.mark.parametrize("eta0", [1e-6, 1.0, 1e6])
def test_binding_constraint_meets_kl_bound(eta0):
    rng = np.random.default_rng(2)
    T, dx, du = 15, 4, 2
    dyn, *_ = make_system(rng, T, dx, du)
    goal = rng.normal(size=dx)
    quad = target_quadratic(T, goal, np.ones(dx), 0.1 * np.ones(du))
    prev = LinearGaussianPolicy.initial(T, dx, du, std=0.5)
    kl_step = 0.3
    policy, eta, info = update(prev, dyn, quad, kl_step=kl_step, eta0=eta0)

    eps = kl_step * T
    assert info.converged and info.constraint_active
    assert abs(info.kl - eps) < 0.1 * eps
    assert info.kl_target == pytest.approx(eps)
    assert 1e-8 < eta < 1e16 and info.eta == eta
    # The reported KL is the dense trajectory KL, and the prediction is the exact expected cost.
    m_new, S_new = dense_trajectory_gaussian(policy, dyn)
    m_old, S_old = dense_trajectory_gaussian(prev, dyn)
    assert info.kl == pytest.approx(gaussian_kl(m_new, S_new, m_old, S_old), rel=1e-6)
    assert info.expected_cost == pytest.approx(expected_cost(policy, dyn, quad), rel=1e-12)
    assert info.expected_cost < expected_cost(prev, dyn, quad)
    # Same eta, same policy: the returned pair is consistent.
    np.testing.assert_allclose(backward(dyn, quad, prev, eta).K, policy.K)


def test_kl_grows_as_eta_shrinks():
    rng = np.random.default_rng(3)
    T, dx, du = 8, 3, 2
    dyn, *_ = make_system(rng, T, dx, du)
    quad = target_quadratic(T, rng.normal(size=dx), np.ones(dx), 0.1 * np.ones(du))
    prev = LinearGaussianPolicy.initial(T, dx, du, std=0.5)
    kls = []
    for eta in [1e3, 1e1, 1e-1, 1e-3]:
        policy = backward(dyn, quad, prev, eta)
        kls.append(kl_divergence(policy, prev, *forward(policy, dyn)))
    assert np.all(np.diff(kls) > 0)


# ----------------------------------------------------------------------------- (c) KL divergence


def test_kl_of_policy_to_itself_is_zero_and_kl_is_nonnegative():
    rng = np.random.default_rng(4)
    T, dx, du = 7, 3, 2
    dyn, *_ = make_system(rng, T, dx, du)
    p = random_policy(rng, T, dx, du)
    assert kl_divergence(p, p, *forward(p, dyn)) == pytest.approx(0.0, abs=1e-12)
    for _ in range(10):
        a, b = random_policy(rng, T, dx, du), random_policy(rng, T, dx, du)
        per_step = kl_divergence(a, b, *forward(a, dyn), per_step=True)
        assert per_step.shape == (T,) and np.all(per_step >= 0) and per_step.sum() > 0


def test_kl_matches_dense_trajectory_kl():
    rng = np.random.default_rng(5)
    T, dx, du = 5, 3, 2
    dyn, *_ = make_system(rng, T, dx, du, noise=0.05)
    for _ in range(3):
        new, old = random_policy(rng, T, dx, du), random_policy(rng, T, dx, du)
        m_new, S_new = dense_trajectory_gaussian(new, dyn)
        m_old, S_old = dense_trajectory_gaussian(old, dyn)
        kl = kl_divergence(new, old, *forward(new, dyn))
        assert kl == pytest.approx(gaussian_kl(m_new, S_new, m_old, S_old), rel=1e-8)


def test_kl_matches_monte_carlo_estimate():
    rng = np.random.default_rng(6)
    T, dx, du = 3, 2, 1
    dyn, *_ = make_system(rng, T, dx, du, noise=0.05)
    new, old = random_policy(rng, T, dx, du), random_policy(rng, T, dx, du)
    X, U = sample_rollouts(rng, new, dyn, 40000)
    log_ratio = log_policy_density(new, X, U) - log_policy_density(old, X, U)
    kl = kl_divergence(new, old, *forward(new, dyn))
    stderr = log_ratio.std() / np.sqrt(len(log_ratio))
    assert abs(log_ratio.mean() - kl) < 4 * stderr
    assert stderr < 0.05 * kl  # the check above is informative


# ----------------------------------------------------------------------------- (d) forward pass


def test_forward_matches_dense_gaussian_and_monte_carlo():
    rng = np.random.default_rng(7)
    T, dx, du = 5, 3, 2
    dyn, *_ = make_system(rng, T, dx, du, noise=0.05)
    policy = random_policy(rng, T, dx, du)
    mu, sigma = forward(policy, dyn)
    assert mu.shape == (T, dx + du) and sigma.shape == (T, dx + du, dx + du)

    m, S = dense_trajectory_gaussian(policy, dyn)
    n = dx + du
    for t in range(T):
        np.testing.assert_allclose(mu[t], m[t * n:(t + 1) * n], atol=1e-12)
        np.testing.assert_allclose(sigma[t], S[t * n:(t + 1) * n, t * n:(t + 1) * n], atol=1e-12)

    N = 40000
    X, U = sample_rollouts(rng, policy, dyn, N)
    Z = np.concatenate([X, U], axis=2)
    std = np.sqrt(np.diagonal(sigma, axis1=1, axis2=2))
    assert np.all(np.abs(Z.mean(axis=0) - mu) < 4.5 * std / np.sqrt(N))
    emp_cov = np.einsum("nti,ntj->tij", Z - Z.mean(0), Z - Z.mean(0)) / (N - 1)
    # Standard error of a covariance entry is about sqrt((s_ii s_jj + s_ij^2) / N).
    se = np.sqrt((std[:, :, None] ** 2 * std[:, None, :] ** 2 + sigma**2) / N)
    assert np.all(np.abs(emp_cov - sigma) < 5 * se)


def test_expected_cost_matches_monte_carlo():
    rng = np.random.default_rng(8)
    T, dx, du = 6, 3, 2
    dyn, *_ = make_system(rng, T, dx, du, noise=0.05)
    policy = random_policy(rng, T, dx, du)
    quad = target_quadratic(T, rng.normal(size=dx), np.ones(dx), 0.5 * np.ones(du))
    X, U = sample_rollouts(rng, policy, dyn, 20000)
    totals = quad.value(X, U).sum(axis=1)
    assert abs(totals.mean() - expected_cost(policy, dyn, quad)) < 4 * totals.std() / np.sqrt(len(totals))


# ----------------------------------------------------------------------------- estimate_cost


def test_estimate_cost_recentres_each_sample_expansion():
    rng = np.random.default_rng(9)
    T, dx, du = 6, 3, 2
    model = SumCost([
        StateDistanceCost(target=np.array([0.5, -1.0]), idx=[0, 2], l1=1.0, l2=0.5, alpha=1e-2),
        ActionCost(weights=np.array([0.1, 0.2])),
    ])
    X, U = rng.normal(size=(2, T, dx)), rng.normal(size=(2, T, du))
    # One sample: the quadratic reproduces the expansion (value, gradient, Hessian) at that sample.
    single = estimate_cost(model, X[0], U[0])
    e, q = model.eval(X[0], U[0]), single.eval(X[0], U[0])
    for a, b in zip(e.astuple(), q.astuple()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # Several samples: the average of the per-sample quadratics.
    both = estimate_cost(model, X, U)
    second = estimate_cost(model, X[1], U[1])
    for a, b, c in zip(both, single, second):
        np.testing.assert_allclose(a, 0.5 * (b + c), rtol=1e-12, atol=1e-12)


def test_estimate_cost_of_quadratic_is_exact_and_passes_quadratics_through():
    rng = np.random.default_rng(10)
    T, dx, du = 5, 4, 2
    goal, q, r = rng.normal(size=dx), rng.uniform(0.5, 2, dx), rng.uniform(0.1, 1, du)
    X, U = rng.normal(size=(7, T, dx)), rng.normal(size=(7, T, du))
    est, ref = estimate_cost(target_cost_models(goal, q, r), X, U), target_quadratic(T, goal, q, r)
    for a, b in zip(est, ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert estimate_cost(ref, X, U) is ref
    np.testing.assert_allclose(ref.value(X[0], U[0]), target_cost_models(goal, q, r).eval(X[0], U[0]).l)


# ----------------------------------------------------------------------------- (e) learning loop


def fit_time_invariant_dynamics(X, U, T):
    """Pooled least squares x_{t+1} ~ [x_t, u_t, 1] (the test's own simple model fit)."""
    N, _, dx = X.shape
    inputs = np.concatenate([X[:, :-1], U[:, :-1], np.ones((N, T - 1, 1))], axis=2)
    inputs = inputs.reshape(-1, X.shape[2] + U.shape[2] + 1)
    targets = X[:, 1:].reshape(-1, dx)
    W, *_ = np.linalg.lstsq(inputs, targets, rcond=None)
    resid = targets - inputs @ W
    noise = resid.T @ resid / len(resid) + 1e-6 * np.eye(dx)
    Fm = np.tile(W[:-1].T, (T, 1, 1))
    fv = np.tile(W[-1], (T, 1))
    x0 = X[:, 0]
    return LinearGaussianDynamics(Fm, fv, np.tile(noise, (T, 1, 1)), x0.mean(0), np.cov(x0.T) + 1e-6 * np.eye(dx))


def test_repeated_updates_from_rollouts_lower_expected_cost():
    """Sample rollouts, fit a model, update: the true expected cost falls at every iteration.

    The step is fixed so that each update's real improvement stays well above the error of a
    20-rollout model (near the optimum, sampling noise alone would decide the sign).
    """
    rng = np.random.default_rng(11)
    T, dx, du, N = 15, 4, 2, 20
    true_dyn, A, B, f = make_system(rng, T, dx, du, noise=1e-3, x0_std=0.1)
    goal, q, r = rng.normal(size=dx), np.ones(dx), 0.1 * np.ones(du)
    model = target_cost_models(goal, q, r)
    true_cost = target_quadratic(T, goal, q, r)

    policy = LinearGaussianPolicy.initial(T, dx, du, std=0.5)
    costs = [expected_cost(policy, true_dyn, true_cost)]
    eta = 1.0
    for _ in range(5):
        X, U = sample_rollouts(rng, policy, true_dyn, N)
        dyn, quad = fit_time_invariant_dynamics(X, U, T), estimate_cost(model, X, U)
        new_policy, eta, info = update(policy, dyn, quad, kl_step=0.2, eta0=eta)
        assert info.converged
        # The update's own prediction: better than the previous policy under the same model.
        assert info.expected_cost < expected_cost(policy, dyn, quad)
        policy = new_policy
        costs.append(expected_cost(policy, true_dyn, true_cost))

    assert np.all(np.diff(costs) < 0), costs
    # Most of the way to the noiseless LQR optimum (a lower bound on the expected cost).
    Ks, ks = riccati_lqr(A, B, f, np.diag(q), np.diag(r), goal, T)
    lqr = LinearGaussianPolicy(Ks, ks, np.tile(1e-12 * np.eye(du), (T, 1, 1)))
    noiseless = LinearGaussianDynamics(true_dyn.Fm, true_dyn.fv, 1e-12 * true_dyn.dyn_covar,
                                       true_dyn.x0mu, 1e-12 * np.eye(dx))
    optimum = expected_cost(lqr, noiseless, true_cost)
    assert optimum < costs[-1] < optimum + 0.2 * (costs[0] - optimum)


# ----------------------------------------------------------------------------- (f) non-PD Q_uu


def concave_action_cost(T, dx, du, rng):
    """Pulls the state to zero but rewards large actions: Q_uu < 0 unless eta is large."""
    C = np.zeros((dx + du, dx + du))
    C[:dx, :dx] = np.eye(dx)
    C[dx:, dx:] = -0.5 * np.eye(du)
    return QuadraticCost.constant(C, rng.normal(size=dx + du), 0.0, T)


def test_backward_raises_when_quu_not_positive_definite():
    rng = np.random.default_rng(12)
    T, dx, du = 6, 3, 2
    dyn, *_ = make_system(rng, T, dx, du)
    prev = LinearGaussianPolicy.initial(T, dx, du, std=1.0)
    with pytest.raises(NonPositiveDefiniteError) as err:
        backward(dyn, concave_action_cost(T, dx, du, rng), prev, eta=0.1)
    # The backward pass starts at the last step, where Q_uu = -0.5/eta + 1 < 0 already.
    assert err.value.t == T - 1 and err.value.eta == 0.1


def test_update_raises_eta_until_quu_is_positive_definite():
    rng = np.random.default_rng(13)
    T, dx, du = 6, 3, 2
    dyn, *_ = make_system(rng, T, dx, du)
    quad = concave_action_cost(T, dx, du, rng)
    prev = LinearGaussianPolicy.initial(T, dx, du, std=1.0)
    kl_step = 0.2
    policy, eta, info = update(prev, dyn, quad, kl_step=kl_step, eta0=1e-6)
    assert info.converged and abs(info.kl - kl_step * T) < 0.1 * kl_step * T
    assert eta > 0.5  # below 0.5 the last step's Q_uu is indefinite
    assert np.all(np.linalg.eigvalsh(policy.cov) > 0)
    with pytest.raises(NonPositiveDefiniteError):
        backward(dyn, quad, prev, eta=0.4)


# ----------------------------------------------------------------------------- (g) step multiplier


@pytest.mark.parametrize(
    "mult, pred, actual, expected",
    [
        (1.0, 1.0, 0.5, 1.0),  # 1 / (2 * 0.5)
        (1.0, 1.0, -1.0, 0.25),  # 1 / (2 * 2)
        (2.0, 3.0, 1.0, 1.5),  # factor 3 / (2 * 2) = 0.75
        (1.0, 1.0, 1.0, 5.0),  # pred == actual: 1 / 2e-4 clipped to 5
        (4.0, 1.0, 1.0, 10.0),  # 4 * 5 = 20, multiplier capped at 10
        (1.0, -1.0, -3.0, 0.1),  # negative factor clipped to 0.1
        (0.05, 1.0, -10.0, 0.01),  # 0.05 * 0.1 = 0.005, multiplier floored at 0.01
    ],
)
def test_step_multiplier_rule(mult, pred, actual, expected):
    assert adjust_step_multiplier(mult, pred, actual) == pytest.approx(expected)


def test_improvement_helpers():
    assert cost_improvements(10.0, 7.0, 8.5) == (3.0, 1.5)
    with pytest.raises(ValueError, match="finite"):
        cost_improvements(10.0, float("nan"), 8.5)
    rng = np.random.default_rng(14)
    T, dx, du = 5, 2, 1
    dyn_a, *_ = make_system(rng, T, dx, du)
    dyn_b, *_ = make_system(rng, T, dx, du)
    quad = target_quadratic(T, np.zeros(dx), np.ones(dx), np.ones(du))
    p_old, p_new = random_policy(rng, T, dx, du), random_policy(rng, T, dx, du)
    pred, actual = step_improvements(p_old, p_new, dyn_a, quad, dyn_b, quad)
    base = expected_cost(p_old, dyn_a, quad)
    assert pred == pytest.approx(base - expected_cost(p_new, dyn_a, quad))
    assert actual == pytest.approx(base - expected_cost(p_new, dyn_b, quad))


# ----------------------------------------------------------------------------- (h) bad input


def test_bad_inputs_raise_value_error():
    rng = np.random.default_rng(15)
    T, dx, du = 5, 3, 2
    dyn, *_ = make_system(rng, T, dx, du)
    quad = target_quadratic(T, np.zeros(dx), np.ones(dx), np.ones(du))
    prev = LinearGaussianPolicy.initial(T, dx, du, std=1.0)
    short = LinearGaussianPolicy.initial(T - 1, dx, du, std=1.0)

    with pytest.raises(ValueError, match="prev_policy has"):
        update(short, dyn, quad, kl_step=1.0)
    with pytest.raises(ValueError, match="kl_step"):
        update(prev, dyn, quad, kl_step=0.0)
    with pytest.raises(ValueError, match="kl_step"):
        update(prev, dyn, quad, kl_step=float("nan"))
    with pytest.raises(ValueError, match="eta0"):
        update(prev, dyn, quad, kl_step=1.0, eta0=-1.0)
    with pytest.raises(ValueError, match="eta"):
        backward(dyn, quad, prev, eta=0.0)
    with pytest.raises(ValueError, match="cost has T"):
        update(prev, dyn, target_quadratic(T + 1, np.zeros(dx), np.ones(dx), np.ones(du)), kl_step=1.0)
    with pytest.raises(ValueError, match="QuadraticCost"):
        update(prev, dyn, (quad.Cm, quad.cv[:, :2]), kl_step=1.0)
    with pytest.raises(ValueError, match="NaN"):
        QuadraticCost(quad.Cm, np.full_like(quad.cv, np.nan), quad.cc)
    bad_dyn = LinearGaussianDynamics(dyn.Fm, dyn.fv, dyn.dyn_covar, np.array([np.nan, 0, 0]), dyn.x0sigma)
    with pytest.raises(ValueError, match="x0mu"):
        forward(prev, bad_dyn)
    wrong_dyn = LinearGaussianDynamics(dyn.Fm, dyn.fv[:, :2], dyn.dyn_covar, dyn.x0mu, dyn.x0sigma)
    with pytest.raises(ValueError, match="fv"):
        forward(prev, wrong_dyn)
    with pytest.raises(ValueError, match="mu"):
        kl_divergence(prev, prev, np.zeros((T, dx)), np.zeros((T, dx + du, dx + du)))

    X, U = rng.normal(size=(4, T, dx)), rng.normal(size=(4, T, du))
    model = target_cost_models(np.zeros(dx), np.ones(dx), np.ones(du))
    X_nan = X.copy()
    X_nan[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_cost(model, X_nan, U)
    with pytest.raises(ValueError, match="N, T"):
        estimate_cost(model, X, U[:, :-1])
    with pytest.raises(ValueError, match="no samples"):
        estimate_cost(model, X[:0], U[:0])

    with pytest.raises(ValueError, match="step_mult"):
        adjust_step_multiplier(0.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="finite"):
        adjust_step_multiplier(1.0, float("inf"), 0.5)
    with pytest.raises(ValueError, match="min_eta"):
        LQRFLMConfig(min_eta=1.0, max_eta=0.5)
    with pytest.raises(ValueError, match="tolerance"):
        LQRFLMConfig(tolerance=1.5)
