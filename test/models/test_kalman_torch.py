"""Torch Kalman smoother against dense joint-Gaussian conditioning, and gradient checks."""
import numpy as np
import pytest
import torch

from solar_ros.models.kalman_torch import (
    expected_log_potential,
    kalman_predict,
    kalman_smoother,
    kalman_update,
    kl_posterior_prior,
)


def _random_spd(rng, d, scale=1.0):
    M = rng.normal(size=(d, d))
    return scale * (M @ M.T / d + 0.5 * np.eye(d))


def _random_problem(rng, N=2, T=4, dx=3, du=2, full_S=False):
    A = 0.9 * np.linalg.qr(rng.normal(size=(dx, dx)))[0] + 0.1 * rng.normal(size=(dx, dx))
    B = rng.normal(size=(dx, du))
    c = rng.normal(size=dx)
    Q = _random_spd(rng, dx, 0.3)
    mu0 = rng.normal(size=dx)
    V0 = _random_spd(rng, dx)
    u = rng.normal(size=(N, T, du))
    m = rng.normal(size=(N, T, dx)) * 2
    if full_S:
        S = np.stack([np.stack([_random_spd(rng, dx, 0.5) for _ in range(T)]) for _ in range(N)])
    else:
        S = rng.uniform(0.1, 1.5, size=(N, T, dx))
    return dict(m=m, S=S, A=A, B=B, c=c, Q=Q, mu0=mu0, V0=V0, u=u)


def _dense_posterior(dense, p, n):
    mu, Sigma = dense.prior(p["A"], p["B"], p["c"], p["Q"], p["mu0"], p["V0"], p["u"][n])
    post_mean, post_cov, log_z = dense.condition(mu, Sigma, p["m"][n], p["S"][n])
    return post_mean.reshape(p["m"].shape[1:]), post_cov, log_z, (mu, Sigma)


def _torch(p, dtype=torch.float64):
    return {k: torch.tensor(v, dtype=dtype) for k, v in p.items()}


@pytest.mark.parametrize("full_S", [False, True])
def test_smoother_matches_dense_conditioning(full_S, dense):
    rng = np.random.default_rng(0)
    p = _random_problem(rng, full_S=full_S)
    res = kalman_smoother(**_torch(p))
    N, T, dx = p["m"].shape
    for n in range(N):
        mean, cov, log_z, _ = _dense_posterior(dense, p, n)
        np.testing.assert_allclose(res.means[n].numpy(), mean, atol=1e-9)
        for t in range(T):
            block = cov[t * dx:(t + 1) * dx, t * dx:(t + 1) * dx]
            np.testing.assert_allclose(res.covs[n, t].numpy(), block, atol=1e-9)
        for t in range(T - 1):
            cross = cov[(t + 1) * dx:(t + 2) * dx, t * dx:(t + 1) * dx]  # Cov[x_{t+1}, x_t]
            np.testing.assert_allclose(res.cross_covs[n, t].numpy(), cross, atol=1e-9)
        np.testing.assert_allclose(res.log_z[n].item(), log_z, rtol=1e-10)
    # The last filtered marginal is the last smoothed one.
    np.testing.assert_allclose(res.filtered_means[:, -1].numpy(), res.means[:, -1].numpy())


def test_kl_matches_dense_gaussian_kl(dense):
    rng = np.random.default_rng(1)
    p = _random_problem(rng, N=2, T=3, dx=2, du=1)
    tp = _torch(p)
    res = kalman_smoother(**tp)
    kl = kl_posterior_prior(tp["m"], tp["S"], res)
    for n in range(2):
        q_mean, q_cov, _, (p_mean, p_cov) = _dense_posterior(dense, p, n)
        dense_kl = dense.kl(q_mean.reshape(-1), q_cov, p_mean, p_cov)
        np.testing.assert_allclose(kl[n].item(), dense_kl, rtol=1e-9)
        assert kl[n].item() > 0


def test_expected_log_potential_full_equals_diagonal_and_monte_carlo():
    rng = np.random.default_rng(2)
    dx = 3
    m = torch.tensor(rng.normal(size=dx))
    s = torch.tensor(rng.uniform(0.2, 1.0, size=dx))
    mean = torch.tensor(rng.normal(size=dx))
    cov = torch.tensor(_random_spd(rng, dx, 0.3))
    diag = expected_log_potential(m, s, mean, cov)
    full = expected_log_potential(m, torch.diag(s), mean, cov)
    torch.testing.assert_close(diag, full)
    x = rng.multivariate_normal(mean.numpy(), cov.numpy(), size=200_000)
    logpdf = -0.5 * (dx * np.log(2 * np.pi) + np.log(s.numpy()).sum() + ((m.numpy() - x) ** 2 / s.numpy()).sum(1))
    assert abs(logpdf.mean() - diag.item()) < 0.02


def test_single_step_helpers_match_smoother_filter():
    rng = np.random.default_rng(3)
    p = _random_problem(rng, N=1, T=3)
    tp = _torch(p)
    res = kalman_smoother(**tp)
    mean, cov, _ = kalman_update(tp["mu0"][None], tp["V0"][None], tp["m"][:, 0], tp["S"][:, 0])
    for t in range(1, 3):
        mean, cov = kalman_predict(mean, cov, tp["A"], tp["B"], tp["c"], tp["Q"], tp["u"][:, t - 1])
        mean, cov, _ = kalman_update(mean, cov, tp["m"][:, t], tp["S"][:, t])
    torch.testing.assert_close(mean, res.filtered_means[:, -1])
    torch.testing.assert_close(cov, res.filtered_covs[:, -1])


def test_float32_path_close_to_float64():
    rng = np.random.default_rng(4)
    p = _random_problem(rng, N=3, T=6)
    r64 = kalman_smoother(**_torch(p))
    r32 = kalman_smoother(**_torch(p, torch.float32))
    assert r32.means.dtype == torch.float32
    np.testing.assert_allclose(r32.means.numpy(), r64.means.numpy(), atol=1e-4)
    np.testing.assert_allclose(r32.covs.numpy(), r64.covs.numpy(), atol=1e-4)
    # dtype= upcasts float32 inputs.
    r = kalman_smoother(**_torch(p, torch.float32), dtype=torch.float64)
    assert r.means.dtype == torch.float64


def test_gradcheck_tiny_case():
    rng = np.random.default_rng(5)
    p = _random_problem(rng, N=1, T=3, dx=2, du=1)
    tp = _torch(p)
    names = ("m", "S", "A", "B", "c", "Q")
    inputs = tuple(tp[k].clone().requires_grad_(True) for k in names)

    def f(m, S, A, B, c, Q):
        res = kalman_smoother(m, S, A, B, c, Q, tp["mu0"], tp["V0"], tp["u"])
        kl = kl_posterior_prior(m, S, res)
        return res.log_z, res.means, res.covs, res.cross_covs, kl

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)


def test_bad_shapes_raise():
    rng = np.random.default_rng(6)
    tp = _torch(_random_problem(rng))
    with pytest.raises(ValueError, match="potential covariances"):
        kalman_smoother(**{**tp, "S": tp["S"][:, :, :2]})
    with pytest.raises(ValueError, match="A must have shape"):
        kalman_smoother(**{**tp, "A": tp["A"][:2]})
    with pytest.raises(ValueError, match="actions"):
        kalman_smoother(**{**tp, "u": None})


def test_matches_numpy_rts_smoother():
    from solar_ros.core.gaussian import LDSParams, rts_smoother

    rng = np.random.default_rng(7)
    p = _random_problem(rng, N=3, T=6, dx=3, du=2)
    res = kalman_smoother(**_torch(p))
    params = LDSParams(A=p["A"], Q=p["Q"], mu0=p["mu0"], V0=p["V0"], B=p["B"], b=p["c"])
    R = np.stack([np.stack([np.diag(s) for s in seq]) for seq in p["S"]])
    ref = rts_smoother(params, p["m"], R, p["u"])
    np.testing.assert_allclose(res.means.numpy(), ref.means, atol=1e-9)
    np.testing.assert_allclose(res.covs.numpy(), ref.covs, atol=1e-9)
    np.testing.assert_allclose(res.cross_covs.numpy(), ref.cross_covs, atol=1e-9)
    np.testing.assert_allclose(res.log_z.numpy(), ref.log_likelihood, rtol=1e-10)
