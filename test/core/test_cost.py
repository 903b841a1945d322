"""Cost models (finite-difference derivatives, closed-form values, ramps, bad input) and the
quadratic cost fitter (recovery of known quadratics, PSD projection, bad input)."""
import numpy as np
import pytest

from solar_ros.core.cost import ActionCost, StateDistanceCost, SumCost
from solar_ros.core.cost_fit import (
    fit_quadratic_cost,
    fit_quadratic_cost_per_step,
    project_psd,
    quadratic_features,
)
from solar_ros.core.lqr_flm import NonPositiveDefiniteError, QuadraticCost, backward
from solar_ros.core.types import LinearGaussianDynamics, LinearGaussianPolicy

T, DX, DU = 7, 4, 3


def finite_difference_expansion(model, X, U, eps=1e-6):
    """Gradients and Hessians of every step's cost by central differences.

    Step t's cost depends on (x_t, u_t) only, so one coordinate is perturbed at all steps at once.
    """
    Z = np.concatenate([X, U], axis=1)
    d = Z.shape[1]

    def split(Z):
        return Z[:, :DX], Z[:, DX:]

    def grad(Z):
        e = model.eval(*split(Z))
        return np.concatenate([e.lx, e.lu], axis=1)

    g = np.zeros((len(Z), d))
    H = np.zeros((len(Z), d, d))
    for i in range(d):
        step = np.zeros(d)
        step[i] = eps
        g[:, i] = (model.eval(*split(Z + step)).l - model.eval(*split(Z - step)).l) / (2 * eps)
        H[:, :, i] = (grad(Z + step) - grad(Z - step)) / (2 * eps)
    return g, H


def assert_expansion_matches_finite_differences(model, X, U):
    e = model.eval(X, U)
    g, H = finite_difference_expansion(model, X, U)
    np.testing.assert_allclose(e.lx, g[:, :DX], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(e.lu, g[:, DX:], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(e.lxx, H[:, :DX, :DX], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e.luu, H[:, DX:, DX:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e.lux, H[:, DX:, :DX], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.swapaxes(e.lux, 1, 2), H[:, :DX, DX:], rtol=1e-5, atol=1e-6)


def trajectory(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, DX)), rng.normal(size=(T, DU))


# ----------------------------------------------------------------------------- cost models


@pytest.mark.parametrize(
    "model",
    [
        StateDistanceCost(target=np.array([0.5, -1.0, 2.0]), idx=[0, 1, 3]),
        StateDistanceCost(target=np.array([0.5, -1.0]), idx=[2, 0], weights=np.array([2.0, 0.5]), l1=1.0, l2=0.0,
                          alpha=1e-2),
        StateDistanceCost(target=np.zeros(4), idx=range(4), weights=0.7, l1=0.3, l2=2.0, alpha=1e-3, ramp="linear",
                          final_multiplier=5.0),
        StateDistanceCost(target=1.0, idx=[1, 2], l1=1.0, l2=1.0, ramp="final", final_multiplier=3.0),
        ActionCost(weights=np.array([0.1, 1.0, 3.0])),
        ActionCost(weights=0.5),
        SumCost([StateDistanceCost(target=np.ones(2), idx=[0, 3], l1=0.5, alpha=0.1), ActionCost(0.2)],
                scales=[2.0, 0.5]),
    ],
    ids=["l2", "l1-weighted", "mixed-linear-ramp", "final-ramp", "action-vector", "action-scalar", "sum"],
)
def test_derivatives_match_finite_differences(model):
    X, U = trajectory(0)
    assert_expansion_matches_finite_differences(model, X, U)


def test_state_distance_values_and_ramps_match_closed_form():
    X, U = trajectory(1)
    target, idx, w = np.array([0.3, -0.7]), [3, 1], np.array([1.5, 0.5])
    l1, l2, alpha = 0.4, 1.3, 1e-2
    base = np.array([
        0.5 * l2 * sum((w[j] * (X[t, i] - target[j])) ** 2 for j, i in enumerate(idx))
        + l1 * np.sqrt(alpha + sum((w[j] * (X[t, i] - target[j])) ** 2 for j, i in enumerate(idx)))
        for t in range(T)
    ])
    ramps = {
        "constant": np.ones(T),
        "linear": np.array([(t + 1) / T for t in range(T)]),
        "final": np.array([0.0] * (T - 1) + [1.0]),
    }
    for mode, ramp in ramps.items():
        for final in (1.0, 4.0):
            model = StateDistanceCost(target=target, idx=idx, weights=w, l1=l1, l2=l2, alpha=alpha, ramp=mode,
                                      final_multiplier=final)
            expected = base * ramp
            expected[-1] *= final
            np.testing.assert_allclose(model.eval(X, U).l, expected, rtol=1e-12)


def test_action_and_sum_values_match_closed_form():
    X, U = trajectory(2)
    w = np.array([0.1, 1.0, 3.0])
    action = ActionCost(weights=w)
    np.testing.assert_allclose(action.eval(X, U).l,
                               [0.5 * sum(w[i] * U[t, i] ** 2 for i in range(DU)) for t in range(T)])
    dist = StateDistanceCost(target=np.zeros(2), idx=[0, 1])
    total = SumCost([dist, action], scales=[3.0, -0.5]).eval(X, U)
    for a, b, c in zip(total.astuple(), dist.eval(X, U).astuple(), action.eval(X, U).astuple()):
        np.testing.assert_allclose(a, 3.0 * b - 0.5 * c)
    # No scales: a plain sum.
    np.testing.assert_allclose(SumCost([dist, action]).eval(X, U).l, dist.eval(X, U).l + action.eval(X, U).l)


def test_cost_models_reject_bad_input():
    X, U = trajectory(3)
    dist = StateDistanceCost(target=np.zeros(2), idx=[0, 1])
    with pytest.raises(ValueError, match="ramp mode"):
        StateDistanceCost(target=np.zeros(2), idx=[0, 1], ramp="quadratic").eval(X, U)
    with pytest.raises(ValueError, match="at least one term"):
        SumCost([]).eval(X, U)
    for model in (dist, ActionCost()):
        with pytest.raises(ValueError, match="steps"):
            model.eval(X, U[:-1])
        with pytest.raises(ValueError, match=r"\(T, dx\)"):
            model.eval(X[0], U)
        X_nan = X.copy()
        X_nan[2, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            model.eval(X_nan, U)
        with pytest.raises(ValueError, match="NaN"):
            model.eval(X, np.full_like(U, np.inf))
        with pytest.raises(ValueError, match="empty"):
            model.eval(X[:0], U[:0])
    with pytest.raises(ValueError, match="idx"):
        StateDistanceCost(target=np.zeros(2), idx=[0, DX]).eval(X, U)
    with pytest.raises(ValueError, match="target"):
        StateDistanceCost(target=np.zeros(3), idx=[0, 1]).eval(X, U)
    with pytest.raises(ValueError):
        ActionCost(weights=np.ones(DU + 1)).eval(X, U)


# ----------------------------------------------------------------------------- quadratic cost fitting


def random_quadratic(rng, d, definite=True):
    A = rng.normal(size=(d, d))
    C = A @ A.T / d + 0.5 * np.eye(d)
    if not definite:
        w, V = np.linalg.eigh(C)
        w[0] = -1.0
        C = (V * w) @ V.T
    return C, rng.normal(size=d), rng.normal()


def quadratic_values(Z, C, c, c0):
    return 0.5 * np.einsum("...i,ij,...j->...", Z, C, Z) + Z @ c + c0


def test_features_reproduce_a_quadratic_exactly():
    rng = np.random.default_rng(0)
    C, c, c0 = random_quadratic(rng, 4)
    Z = rng.normal(size=(10, 4))
    iu, ju = np.triu_indices(4)
    theta = np.concatenate([C[iu, ju], c, [c0]])
    np.testing.assert_allclose(quadratic_features(Z) @ theta, quadratic_values(Z, C, c, c0), rtol=1e-12)


def test_fit_recovers_known_quadratic_from_noisy_samples():
    rng = np.random.default_rng(1)
    dx, du, N, T_ = 3, 2, 300, 10
    C, c, c0 = random_quadratic(rng, dx + du)
    X, U = 1.5 * rng.normal(size=(N, T_, dx)), rng.normal(size=(N, T_, du))
    costs = quadratic_values(np.concatenate([X, U], axis=2), C, c, c0) + 0.01 * rng.normal(size=(N, T_))
    fit = fit_quadratic_cost(X, U, costs)
    assert isinstance(fit, QuadraticCost) and fit.Cm.shape == (T_, dx + du, dx + du)
    for t in (0, T_ - 1):  # the same quadratic at every step
        np.testing.assert_allclose(fit.Cm[t], C, atol=2e-3)
        np.testing.assert_allclose(fit.cv[t], c, atol=2e-3)
        assert fit.cc[t] == pytest.approx(c0, abs=2e-3)
    # Flat samples with an explicit horizon give the same fit.
    flat = fit_quadratic_cost(X.reshape(-1, dx), U.reshape(-1, du), costs.reshape(-1), T=4)
    assert flat.T == 4
    np.testing.assert_allclose(flat.Cm[0], fit.Cm[0], atol=1e-10)


def test_ridge_shrinks_towards_the_mean_cost():
    rng = np.random.default_rng(2)
    C, c, c0 = random_quadratic(rng, 3)
    Z = rng.normal(size=(200, 3))
    y = quadratic_values(Z, C, c, c0)
    norms = []
    for ridge in (0.0, 1e-2, 1.0, 1e8):
        fit = fit_quadratic_cost(Z[:, :2], Z[:, 2:], y, T=1, ridge=ridge)
        norms.append(np.linalg.norm(fit.Cm[0]) + np.linalg.norm(fit.cv[0]))
    assert np.all(np.diff(norms) < 0)
    strong = fit_quadratic_cost(Z[:, :2], Z[:, 2:], y, T=1, ridge=1e12)
    assert norms[-1] < 1e-5 and strong.cc[0] == pytest.approx(y.mean(), rel=1e-6)
    # Fewer samples than coefficients: the ridge still gives a finite fit that matches the data.
    few = fit_quadratic_cost(Z[:5, :2], Z[:5, 2:], y[:5], T=1, ridge=1e-6)
    assert np.all(np.isfinite(few.Cm))
    np.testing.assert_allclose(few.value(Z[:5, None, :2], Z[:5, None, 2:])[:, 0], y[:5], atol=1e-3)


def test_psd_projection_is_the_nearest_psd_matrix():
    rng = np.random.default_rng(3)
    C, _, _ = random_quadratic(rng, 5, definite=False)
    P = project_psd(C, min_eigenvalue=0.1)
    assert np.linalg.eigvalsh(P).min() >= 0.1 - 1e-12
    np.testing.assert_allclose(P, P.T)
    # No PSD matrix with eigenvalues >= 0.1 is closer to C in Frobenius norm.
    dist = np.linalg.norm(P - C)
    for _ in range(200):
        A = rng.normal(size=(5, 5))
        candidate = project_psd(P + 0.3 * (A + A.T), 0.1)
        assert np.linalg.norm(candidate - C) >= dist - 1e-12
    # A matrix that is already PSD enough is left alone.
    S, _, _ = random_quadratic(rng, 5)
    np.testing.assert_allclose(project_psd(S, 0.0), S, atol=1e-12)


def test_fit_with_psd_projection_refits_the_linear_terms():
    rng = np.random.default_rng(4)
    dx, du = 3, 2
    C, c, c0 = random_quadratic(rng, dx + du, definite=False)
    Z = rng.normal(size=(500, dx + du))
    y = quadratic_values(Z, C, c, c0) + 0.01 * rng.normal(size=500)
    X, U = Z[:, :dx], Z[:, dx:]

    free = fit_quadratic_cost(X, U, y, T=1, ridge=0.0)
    np.testing.assert_allclose(free.Cm[0], C, atol=5e-3)  # indefinite truth recovered
    proj = fit_quadratic_cost(X, U, y, T=1, ridge=0.0, psd=True, min_eigenvalue=0.05)
    assert np.linalg.eigvalsh(proj.Cm[0]).min() >= 0.05 - 1e-10
    np.testing.assert_allclose(proj.Cm[0], project_psd(free.Cm[0], 0.05), atol=1e-10)
    # c, c0 are the least-squares optimum given the projected C: residuals orthogonal to [z, 1].
    residual = y - proj.value(X[:, None], U[:, None])[:, 0]
    design = np.hstack([Z, np.ones((len(Z), 1))])
    assert np.abs(design.T @ residual).max() < 1e-8 * len(Z)
    # And that refit is better than keeping the unconstrained linear terms.
    kept = QuadraticCost.constant(proj.Cm[0], free.cv[0], free.cc[0], 1)
    assert np.sum(residual**2) < np.sum((y - kept.value(X[:, None], U[:, None])[:, 0]) ** 2)


def test_psd_projection_keeps_lqr_well_posed():
    rng = np.random.default_rng(5)
    dx, du, T_ = 2, 1, 5
    C = np.diag([1.0, 1.0, -0.5])  # rewards large actions: unbounded LQR
    Z = rng.normal(size=(400, dx + du))
    y = quadratic_values(Z, C, np.zeros(3), 0.0)
    dyn = LinearGaussianDynamics(np.tile(np.hstack([np.eye(dx), np.ones((dx, du))]), (T_, 1, 1)), np.zeros((T_, dx)),
                                 np.tile(0.01 * np.eye(dx), (T_, 1, 1)), np.zeros(dx), np.eye(dx))
    prev = LinearGaussianPolicy.initial(T_, dx, du, std=1.0)
    with pytest.raises(NonPositiveDefiniteError):
        backward(dyn, fit_quadratic_cost(Z[:, :dx], Z[:, dx:], y, T=T_), prev, eta=1e-3)
    fitted = fit_quadratic_cost(Z[:, :dx], Z[:, dx:], y, T=T_, psd=True, min_eigenvalue=1e-2)
    policy = backward(dyn, fitted, prev, eta=1e-3)
    assert np.all(np.isfinite(policy.K))


def test_sample_weights_ignore_zero_weighted_samples():
    rng = np.random.default_rng(6)
    C, c, c0 = random_quadratic(rng, 3)
    Z = rng.normal(size=(2, 200, 3))
    y = quadratic_values(Z, C, c, c0)
    y[1] += 100 * rng.normal(size=200)  # corrupted second batch
    weights = np.stack([np.ones(200), np.zeros(200)])
    fit = fit_quadratic_cost(Z[..., :2], Z[..., 2:], y, ridge=0.0, sample_weights=weights)
    np.testing.assert_allclose(fit.Cm[0], C, atol=1e-8)
    np.testing.assert_allclose(fit.cv[0], c, atol=1e-8)


def test_per_step_fit_recovers_time_varying_quadratics():
    rng = np.random.default_rng(7)
    N, T_, dx, du = 100, 5, 2, 1
    C, c, c0 = random_quadratic(rng, dx + du)
    Cs = [C * (1 + 0.5 * t) for t in range(T_)]
    Z = rng.normal(size=(N, T_, dx + du))
    y = np.stack([quadratic_values(Z[:, t], Cs[t], c * t, c0 - t) for t in range(T_)], axis=1)
    y += 0.01 * rng.normal(size=y.shape)
    fit = fit_quadratic_cost_per_step(Z[..., :dx], Z[..., dx:], y)
    for t in range(T_):
        np.testing.assert_allclose(fit.Cm[t], Cs[t], atol=1e-2)
        np.testing.assert_allclose(fit.cv[t], c * t, atol=1e-2)
        assert fit.cc[t] == pytest.approx(c0 - t, abs=1e-2)


def test_time_weighting_shares_data_between_steps():
    rng = np.random.default_rng(8)
    N, T_, dx, du = 6, 20, 3, 2  # 6 samples per step, 21 coefficients: too few alone
    C, c, c0 = random_quadratic(rng, dx + du)
    Z = rng.normal(size=(N, T_, dx + du))
    y = quadratic_values(Z, C, c, c0) + 0.05 * rng.normal(size=(N, T_))
    alone = fit_quadratic_cost_per_step(Z[..., :dx], Z[..., dx:], y, ridge=1e-6)
    shared = fit_quadratic_cost_per_step(Z[..., :dx], Z[..., dx:], y, ridge=1e-6, time_bandwidth=3.0)
    err_alone = np.abs(alone.Cm - C).max()
    err_shared = np.abs(shared.Cm - C).max()
    assert err_shared < 0.1 < err_alone


def test_fit_rejects_bad_input():
    rng = np.random.default_rng(9)
    X, U, y = rng.normal(size=(4, 5, 2)), rng.normal(size=(4, 5, 1)), rng.normal(size=(4, 5))
    y_nan = y.copy()
    y_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="costs contains NaN"):
        fit_quadratic_cost(X, U, y_nan)
    with pytest.raises(ValueError, match="X contains NaN"):
        fit_quadratic_cost(np.full_like(X, np.inf), U, y)
    with pytest.raises(ValueError, match="no data"):
        fit_quadratic_cost(X[:0], U[:0], y[:0])
    with pytest.raises(ValueError, match="shapes disagree"):
        fit_quadratic_cost(X, U[:, :4], y)
    with pytest.raises(ValueError, match="shapes disagree"):
        fit_quadratic_cost(X.reshape(-1, 2), U.reshape(-1, 1)[:-1], y.reshape(-1), T=5)
    with pytest.raises(ValueError, match="need X"):
        fit_quadratic_cost(X, U.reshape(-1, 1), y)
    with pytest.raises(ValueError, match="horizon"):
        fit_quadratic_cost(X.reshape(-1, 2), U.reshape(-1, 1), y.reshape(-1))
    with pytest.raises(ValueError, match="ridge"):
        fit_quadratic_cost(X, U, y, ridge=-1.0)
    with pytest.raises(ValueError, match="sample_weights"):
        fit_quadratic_cost(X, U, y, sample_weights=-np.ones_like(y))
    with pytest.raises(ValueError, match="sample_weights"):
        fit_quadratic_cost(X, U, y, sample_weights=np.ones(3))
    with pytest.raises(ValueError, match="per-step"):
        fit_quadratic_cost_per_step(X.reshape(-1, 2), U.reshape(-1, 1), y.reshape(-1))
    with pytest.raises(ValueError, match="time_bandwidth"):
        fit_quadratic_cost_per_step(X, U, y, time_bandwidth=-1.0)
    with pytest.raises(ValueError, match="min_eigenvalue"):
        project_psd(np.eye(2), min_eigenvalue=-1.0)
    with pytest.raises(ValueError, match="square"):
        project_psd(np.ones((2, 3)))
