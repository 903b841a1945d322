"""The CEM planner against the exact optimum of a linear-quadratic problem."""
from __future__ import annotations

import numpy as np
import pytest

from solar_ros.core.lqr_flm import QuadraticCost
from solar_ros.core.mpc import CEMController, CEMSettings, LinearModel, cem_plan, plan_costs

DT = 0.1


def double_integrator() -> LinearModel:
    """Two decoupled double integrators (positions, velocities), force inputs, a small drift c."""
    A = np.eye(4)
    A[0, 2] = A[1, 3] = DT
    B = np.zeros((4, 2))
    B[2, 0] = B[3, 1] = DT
    return LinearModel(A, B, np.array([0.0, 0.0, 0.01, -0.02]))


def lq_cost(T: int) -> QuadraticCost:
    """0.5 (x - x*)^T Q (x - x*) + 0.5 u^T R u at every step, with a target x*."""
    Q, R = np.diag([10.0, 10.0, 0.5, 0.5]), 0.05 * np.eye(2)
    target = np.array([1.0, -0.5, 0.0, 0.0])
    Cm = np.zeros((6, 6))
    Cm[:4, :4], Cm[4:, 4:] = Q, R
    cv = np.concatenate([-Q @ target, np.zeros(2)])
    return QuadraticCost.constant(Cm, cv, 0.5 * target @ Q @ target, T)


def exact_open_loop(model: LinearModel, cost: QuadraticCost, x0: np.ndarray, t0: int, h: int) -> np.ndarray:
    """The minimiser of plan_costs over U (h, du), from the plan's cost written as an explicit quadratic in U:
    the states are affine in U, so the cost is 0.5 U^T H U + g^T U + const; H and g by exact differences."""
    du = model.du
    n = h * du

    def f(u: np.ndarray) -> float:
        return float(plan_costs(model, cost, x0, t0, u.reshape(1, h, du))[0])

    base = f(np.zeros(n))
    E = np.eye(n)
    g_plus = np.array([f(E[i]) for i in range(n)])
    H = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            H[i, j] = f(E[i] + E[j]) - g_plus[i] - g_plus[j] + base
    H = 0.5 * (H + H.T)
    g = g_plus - base - 0.5 * np.diag(H)
    return np.linalg.solve(H, -g).reshape(h, du)


def lqr_closed_loop_cost(model: LinearModel, cost: QuadraticCost, x0: np.ndarray) -> float:
    """The optimal cost of the T-step problem by the finite-horizon Riccati recursion (affine terms included)."""
    dx, T = model.dx, cost.T
    F = np.hstack([model.A, model.B])
    V, v = np.zeros((dx, dx)), np.zeros(dx)
    K, k = [None] * T, [None] * T
    for t in reversed(range(T)):
        Qm = cost.Cm[t] + F.T @ V @ F
        q = cost.cv[t] + F.T @ (V @ model.c + v)
        Quu, Qux, qu = Qm[dx:, dx:], Qm[dx:, :dx], q[dx:]
        K[t], k[t] = -np.linalg.solve(Quu, Qux), -np.linalg.solve(Quu, qu)
        V = Qm[:dx, :dx] + Qm[:dx, dx:] @ K[t] + K[t].T @ Qm[dx:, :dx] + K[t].T @ Quu @ K[t]
        v = q[:dx] + K[t].T @ qu + (Qm[:dx, dx:] + K[t].T @ Quu) @ k[t]
    x, total = np.asarray(x0, float), 0.0
    for t in range(T):
        u = K[t] @ x + k[t]
        z = np.concatenate([x, u])
        total += 0.5 * z @ cost.Cm[t] @ z + cost.cv[t] @ z + cost.cc[t]
        x = model.A @ x + model.B @ u + model.c
    return total


@pytest.mark.parametrize("per_step", [False, True])
def test_plan_costs_is_the_rolled_out_cost(per_step):
    """The planned cost of each sequence is its rollout's cost through the model: one model for every step, or one
    per step (the last one for the steps beyond them)."""
    rng = np.random.default_rng(0)
    lead = (3,) if per_step else ()
    model = LinearModel(np.eye(3) + 0.1 * rng.standard_normal(lead + (3, 3)), rng.standard_normal(lead + (3, 2)),
                        rng.standard_normal(lead + (3,)))
    assert model.steps == (3 if per_step else 1)
    M = rng.standard_normal((5, 5, 5))
    cost = QuadraticCost(M @ np.swapaxes(M, 1, 2), rng.standard_normal((5, 5)), rng.standard_normal(5))
    x0, U = rng.standard_normal(3), rng.standard_normal((4, 3, 2))
    for t0, h in ((0, 3), (2, 3)):  # a plan that ends before the episode (terminal term), one that ends with it
        expected = []
        for u_seq in U:
            x, total = x0.copy(), 0.0
            for s in range(h):
                z = np.concatenate([x, u_seq[s]])
                total += 0.5 * z @ cost.Cm[t0 + s] @ z + cost.cv[t0 + s] @ z + cost.cc[t0 + s]
                k = min(t0 + s, 2)
                A, B, c = (model.A[k], model.B[k], model.c[k]) if per_step else (model.A, model.B, model.c)
                x = A @ x + B @ u_seq[s] + c
            if t0 + h < cost.T:
                total += 0.5 * x @ cost.Cm[t0 + h, :3, :3] @ x + cost.cv[t0 + h, :3] @ x + cost.cc[t0 + h]
            expected.append(total)
        np.testing.assert_allclose(plan_costs(model, cost, x0, t0, U), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="does not fit"):
        plan_costs(model, cost, x0, 3, U)


def test_cem_finds_the_linear_quadratic_optimum():
    model, cost = double_integrator(), lq_cost(8)
    x0 = np.array([0.0, 0.0, 0.2, 0.0])
    exact = exact_open_loop(model, cost, x0, 0, 8)
    best = float(plan_costs(model, cost, x0, 0, exact[None])[0])
    settings = CEMSettings(horizon=8, samples=400, elites=40, iterations=30, init_std=20.0, min_std=1e-4)
    big = np.full(2, 1e6)
    plan, planned = cem_plan(model, cost, x0, 0, np.zeros((8, 2)), np.full((8, 2), 20.0), -big, big,
                             np.random.default_rng(0), settings)
    assert planned == pytest.approx(best, rel=1e-3)
    assert planned >= best - 1e-9  # nothing beats the optimum: the cost evaluation is the one minimised
    np.testing.assert_allclose(plan, exact, atol=0.05 * np.abs(exact).max())


def test_receding_horizon_matches_the_riccati_optimum_and_respects_limits():
    model, cost = double_integrator(), lq_cost(12)
    x0 = np.array([0.2, 0.1, 0.0, 0.3])
    optimum = lqr_closed_loop_cost(model, cost, x0)
    settings = CEMSettings(horizon=12, samples=300, elites=30, iterations=12, init_std=1.0, min_std=1e-3)

    def run(limit: float, seed: int) -> tuple[float, np.ndarray]:
        ctrl = CEMController(model, cost, settings, np.full(2, 10.0), np.full(2, -limit), np.full(2, limit),
                             np.random.default_rng(seed))
        x, total, actions = x0.copy(), 0.0, []
        for t in range(cost.T):
            u = ctrl.act(t, x)
            actions.append(u)
            z = np.concatenate([x, u])
            total += 0.5 * z @ cost.Cm[t] @ z + cost.cv[t] @ z + cost.cc[t]
            x = model.A @ x + model.B @ u + model.c
        return total, np.array(actions)

    total, _ = run(1e6, 0)
    assert total == pytest.approx(optimum, rel=0.01)
    assert total >= optimum - 1e-9
    again, _ = run(1e6, 0)
    assert again == total  # seeded: the same numbers
    limited, actions = run(2.0, 0)
    assert np.all(np.abs(actions) <= 2.0) and np.abs(actions).max() > 1.99  # at the limit, never beyond
    assert limited > optimum  # the unconstrained optimum needs more than the limit


def test_settings_and_shapes_are_checked():
    with pytest.raises(ValueError, match="elites"):
        CEMSettings(samples=10, elites=20)
    with pytest.raises(ValueError, match="horizon"):
        CEMSettings(horizon=0)
    with pytest.raises(ValueError, match="init_std"):
        CEMSettings(init_std=-1.0)
    with pytest.raises(ValueError, match="LinearModel"):
        LinearModel(np.eye(2), np.zeros((3, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="leading steps axis"):
        LinearModel(np.zeros((2, 2, 2)), np.zeros((3, 2, 1)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="leading steps axis"):
        LinearModel(np.zeros((2, 2, 2)), np.zeros((2, 1)), np.zeros(2))
    model = double_integrator()
    with pytest.raises(ValueError, match="cost is over"):
        CEMController(model, QuadraticCost.constant(np.eye(5), np.zeros(5), 0.0, 4), CEMSettings(), np.ones(2),
                      -np.ones(2), np.ones(2), np.random.default_rng(0))
    ctrl = CEMController(model, lq_cost(4), CEMSettings(), np.ones(2), -np.ones(2), np.ones(2),
                         np.random.default_rng(0))
    with pytest.raises(ValueError, match="outside"):
        ctrl.act(4, np.zeros(4))
