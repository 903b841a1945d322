"""iLQR against a dense least-squares LQ solution, a Riccati recursion, and finite-difference
optimality conditions on a nonlinear pendulum."""
import numpy as np
import pytest

from solar_ros.core.cost import ActionCost, StateDistanceCost, SumCost
from solar_ros.core.ilqr import (
    ILQRConfig,
    finite_difference_jacobians,
    ilqr,
    policy_about_nominal,
    rollout,
)
from solar_ros.core.types import CostExpansion

# ----------------------------------------------------------------------------- systems

DT, GRAVITY, DAMPING = 0.05, 9.81, 0.1


def pendulum(x, u):
    """Unit-mass, unit-length pendulum, semi-implicit Euler; theta = 0 hangs down."""
    theta, omega = x
    omega_next = omega + DT * (-GRAVITY * np.sin(theta) - DAMPING * omega + u[0])
    return np.array([theta + DT * omega_next, omega_next])


def pendulum_jacobians(x, u):
    theta, _ = x
    d_omega = np.array([-DT * GRAVITY * np.cos(theta), 1 - DT * DAMPING])
    A = np.array([[1 + DT * d_omega[0], DT * d_omega[1]], d_omega])
    B = np.array([[DT * DT], [DT]])
    return A, B


def swing_up_cost():
    return SumCost([
        StateDistanceCost(target=np.array([np.pi, 0.0]), idx=[0, 1], weights=np.array([1.0, 0.3]), l2=1.0,
                          ramp="linear", final_multiplier=20.0),
        ActionCost(weights=1e-2),
    ])


def total_cost(dynamics_fn, cost_model, x0, U):
    return float(np.sum(cost_model.eval(rollout(dynamics_fn, x0, U), U).l))


def fd_gradient(dynamics_fn, cost_model, x0, U, eps=1e-5):
    """Central-difference gradient of the total rollout cost w.r.t. the open-loop actions."""
    g = np.zeros_like(U)
    for idx in np.ndindex(U.shape):
        Up, Um = U.copy(), U.copy()
        Up[idx] += eps
        Um[idx] -= eps
        g[idx] = (total_cost(dynamics_fn, cost_model, x0, Up) - total_cost(dynamics_fn, cost_model, x0, Um)) / (2 * eps)
    return g


# ----------------------------------------------------------------------------- linear-quadratic


def linear_problem(seed, T=12, dx=4, du=2):
    rng = np.random.default_rng(seed)
    A = np.eye(dx) + 0.1 * rng.normal(size=(dx, dx))
    B = 0.5 * rng.normal(size=(dx, du))
    f = 0.05 * rng.normal(size=dx)
    goal, q, r = rng.normal(size=dx), rng.uniform(0.5, 2.0, dx), rng.uniform(0.05, 0.5, du)
    cost = SumCost([StateDistanceCost(target=goal, idx=range(dx), weights=np.sqrt(q)), ActionCost(weights=r)])
    return A, B, f, goal, np.diag(q), np.diag(r), cost, rng.normal(size=dx)


def dense_open_loop_optimum(A, B, f, Q, R, goal, x0, T):
    """Minimise the LQ cost over all actions at once: states are affine in the stacked actions."""
    dx, du = B.shape
    n = T * du
    G, g = np.zeros((dx, n)), x0.copy()  # x_t = g + G U
    hess, grad = np.kron(np.eye(T), R), np.zeros(n)
    for t in range(T):
        hess += G.T @ Q @ G
        grad += G.T @ Q @ (g - goal)
        if t < T - 1:
            G = A @ G
            G[:, t * du:(t + 1) * du] += B
            g = A @ g + f
    return np.linalg.solve(hess, -grad).reshape(T, du)


def riccati_gains(A, B, Q, R, T):
    """Feedback gains of finite-horizon LQR (they do not depend on the target or the offset)."""
    dx, du = B.shape
    K = np.zeros((T, du, dx))
    P = Q.copy()
    for t in range(T - 2, -1, -1):
        K[t] = -np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        Acl = A + B @ K[t]
        P = Q + K[t].T @ R @ K[t] + Acl.T @ P @ Acl
    return K


def test_linear_quadratic_problem_equals_lqr_in_two_iterations():
    T = 12
    A, B, f, goal, Q, R, cost, x0 = linear_problem(0, T)
    dynamics = lambda x, u: A @ x + B @ u + f  # noqa: E731
    result = ilqr(dynamics, cost, x0, np.zeros((T, B.shape[1])), config=ILQRConfig(tolerance=1e-10))

    assert result.converged and result.iterations <= 2
    np.testing.assert_allclose(result.U, dense_open_loop_optimum(A, B, f, Q, R, goal, x0, T), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.K, riccati_gains(A, B, Q, R, T), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.X, rollout(dynamics, x0, result.U), atol=1e-12)
    assert result.cost == pytest.approx(total_cost(dynamics, cost, x0, result.U), rel=1e-12)
    assert len(result.cost_history) >= 2 and result.cost_history[-1] == result.cost


# ----------------------------------------------------------------------------- nonlinear pendulum


def test_jacobians_by_finite_differences_match_analytic():
    rng = np.random.default_rng(1)
    for _ in range(5):
        x, u = rng.normal(size=2) * 2, rng.normal(size=1)
        A_fd, B_fd = finite_difference_jacobians(pendulum, x, u)
        A, B = pendulum_jacobians(x, u)
        np.testing.assert_allclose(A_fd, A, atol=1e-8)
        np.testing.assert_allclose(B_fd, B, atol=1e-8)


@pytest.mark.parametrize("analytic", [False, True])
def test_pendulum_swing_up_decreases_cost_and_reaches_a_stationary_point(analytic):
    T = 60
    cost = swing_up_cost()
    x0 = np.zeros(2)
    U0 = 0.1 * np.random.default_rng(2).normal(size=(T, 1))
    result = ilqr(pendulum, cost, x0, U0, jacobian_fn=pendulum_jacobians if analytic else None,
                  config=ILQRConfig(tolerance=1e-9, max_iterations=200))

    history = np.array(result.cost_history)
    assert result.converged
    assert np.all(np.diff(history) < 0)
    assert history[-1] < 0.1 * history[0]
    assert abs(result.X[-1, 0] - np.pi) < 0.1  # it really swings up
    g0 = fd_gradient(pendulum, cost, x0, U0)
    g = fd_gradient(pendulum, cost, x0, result.U)
    assert np.linalg.norm(g) < 1e-4 * np.linalg.norm(g0)


def test_analytic_and_finite_difference_jacobians_give_the_same_optimum():
    T = 40
    cost, x0, U0 = swing_up_cost(), np.array([0.3, 0.0]), np.zeros((T, 1))
    config = ILQRConfig(tolerance=1e-10, max_iterations=200)
    fd = ilqr(pendulum, cost, x0, U0, config=config)
    exact = ilqr(pendulum, cost, x0, U0, jacobian_fn=pendulum_jacobians, config=config)
    np.testing.assert_allclose(fd.U, exact.U, atol=1e-4)
    np.testing.assert_allclose(fd.K, exact.K, atol=1e-3)


class DoubleWellActionCost:
    """w (u^2 - 1)^2 per action entry: Q_uu < 0 near u = 0, so regularisation is needed there."""

    def __init__(self, w):
        self.w = w

    def eval(self, X, U):
        T, dx = X.shape
        du = U.shape[1]
        e = CostExpansion.zeros(T, dx, du)
        e.l = self.w * np.sum((U**2 - 1) ** 2, axis=1)
        e.lu = 4 * self.w * U * (U**2 - 1)
        e.luu = 4 * self.w * np.einsum("ti,ij->tij", 3 * U**2 - 1, np.eye(du))
        return e


def test_levenberg_marquardt_regularisation_handles_indefinite_q_uu():
    T = 30
    cost = SumCost([swing_up_cost(), DoubleWellActionCost(w=5.0)])
    x0, U0 = np.zeros(2), np.zeros((T, 1))  # luu = -20 at u = 0: plain Newton fails here
    result = ilqr(pendulum, cost, x0, U0, config=ILQRConfig(tolerance=1e-10, max_iterations=300))
    history = np.array(result.cost_history)
    assert result.converged and np.all(np.diff(history) < 0)
    g0 = fd_gradient(pendulum, cost, x0, U0 + 0.1)
    assert np.linalg.norm(fd_gradient(pendulum, cost, x0, result.U)) < 1e-4 * np.linalg.norm(g0)


# ----------------------------------------------------------------------------- policy about the nominal


def test_policy_about_nominal_reproduces_the_nominal_trajectory():
    T = 50
    cost = swing_up_cost()
    result = ilqr(pendulum, cost, np.zeros(2), np.zeros((T, 1)), jacobian_fn=pendulum_jacobians)
    policy = result.policy(np.array([[0.04]]))
    assert (policy.T, policy.du, policy.dx) == (T, 1, 2)
    np.testing.assert_allclose(policy.cov, np.full((T, 1, 1), 0.04))
    # The mean closed-loop rollout on the nonlinear system is the nominal.
    x = np.zeros(2)
    for t in range(T):
        u = policy.act(t, x)
        np.testing.assert_allclose(u, result.U[t], atol=1e-12)
        x = pendulum(x, u)
    # Off the nominal, the action is u_nom + K (x - x_nom).
    dx_ = np.array([0.1, -0.2])
    np.testing.assert_allclose(policy.act(5, result.X[5] + dx_), result.U[5] + result.K[5] @ dx_, atol=1e-12)
    # The feedback actually stabilises: a perturbed start ends nearer the nominal than open loop.
    x_fb, x_ol = np.array([0.2, 0.0]), np.array([0.2, 0.0])
    for t in range(T - 1):
        x_fb, x_ol = pendulum(x_fb, policy.act(t, x_fb)), pendulum(x_ol, result.U[t])
    assert np.linalg.norm(x_fb - result.X[-1]) < 0.2 * np.linalg.norm(x_ol - result.X[-1])


def test_policy_noise_covariance_forms():
    X, U, K = np.zeros((4, 3)), np.ones((4, 2)), np.zeros((4, 2, 3))
    np.testing.assert_allclose(policy_about_nominal(X, U, K, 0.5).cov, np.tile(0.5 * np.eye(2), (4, 1, 1)))
    per_step = np.stack([np.eye(2) * (t + 1) for t in range(4)])
    np.testing.assert_allclose(policy_about_nominal(X, U, K, per_step).cov, per_step)
    with pytest.raises(ValueError, match="noise_cov"):
        policy_about_nominal(X, U, K, np.eye(3))
    with pytest.raises(ValueError, match="positive"):
        policy_about_nominal(X, U, K, -1.0)
    with pytest.raises(ValueError, match="positive definite"):
        policy_about_nominal(X, U, K, -np.eye(2))
    with pytest.raises(ValueError, match="K"):
        policy_about_nominal(X, U, K[:, :1], np.eye(2))


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_value_error():
    cost = swing_up_cost()
    U = np.zeros((10, 1))
    with pytest.raises(ValueError, match="NaN"):
        ilqr(pendulum, cost, np.array([np.nan, 0.0]), U)
    with pytest.raises(ValueError, match="U_init"):
        ilqr(pendulum, cost, np.zeros(2), np.zeros(10))
    with pytest.raises(ValueError, match="x0"):
        ilqr(pendulum, cost, np.zeros((2, 1)), U)
    with pytest.raises(ValueError, match="dynamics_fn returned shape"):
        ilqr(lambda x, u: np.zeros(3), cost, np.zeros(2), U)
    with pytest.raises(ValueError, match="jacobian_fn"):
        ilqr(pendulum, cost, np.zeros(2), U, jacobian_fn=lambda x, u: (np.eye(2), np.zeros((2, 2))))
    with pytest.raises(ValueError, match="diverged"):
        ilqr(lambda x, u: x * np.inf, cost, np.ones(2), U)
    with pytest.raises(ValueError, match="reg_factor"):
        ILQRConfig(reg_factor=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        ILQRConfig(tolerance=0.0)
