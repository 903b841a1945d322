"""Tiny synthetic image data for the model tests: a blurred dot moving in a square image."""
import numpy as np
import pytest


def render_dots(positions: np.ndarray, size: int, channels: int, sigma: float) -> np.ndarray:
    """positions (..., 2) in [-1, 1] image coordinates (x right, y down) -> uint8 (..., size, size, C)."""
    centres = (positions + 1.0) * size / 2.0 - 0.5  # pixel coordinates (column, row)
    grid = np.arange(size)
    dx = grid - centres[..., 0, None]
    dy = grid - centres[..., 1, None]
    blob = np.exp(-0.5 * (dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / sigma**2)
    img = np.round(255 * blob).astype(np.uint8)
    return np.repeat(img[..., None], channels, axis=-1)


def moving_dot(N: int, T: int, size: int, channels: int = 1, seed: int = 0, step: float = 0.15,
               sigma: float = 1.5):
    """Point-mass sequences p_{t+1} = p_t + step * u_t with random actions, kept inside the image.

    Returns images uint8 (N, T, size, size, C), positions (N, T, 2), actions (N, T, 2), costs (N, T)
    with cost = |p|^2 + 0.1 |u|^2.
    """
    rng = np.random.default_rng(seed)
    pos = np.zeros((N, T, 2))
    actions = rng.uniform(-1.0, 1.0, size=(N, T, 2))
    pos[:, 0] = rng.uniform(-0.6, 0.6, size=(N, 2))
    for t in range(1, T):
        nxt = pos[:, t - 1] + step * actions[:, t - 1]
        # Where a step would leave the box, flip that action so the dynamics stay exactly linear.
        out = np.abs(nxt) > 0.7
        actions[:, t - 1][out] *= -1
        pos[:, t] = pos[:, t - 1] + step * actions[:, t - 1]
    costs = (pos**2).sum(-1) + 0.1 * (actions**2).sum(-1)
    return render_dots(pos, size, channels, sigma), pos, actions, costs


@pytest.fixture
def dot_data():
    return moving_dot


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tiny models run faster on one thread, and the machine is shared with other test runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dense_lds_prior(A, B, c, Q, mu0, V0, u):
    """Joint mean (T*dx,) and covariance of x_{0:T-1} of one trajectory, built as x = M w + offsets
    (w = [x_0 noise, process noises]) rather than by any recursion the code under test uses."""
    T, dx = u.shape[0], A.shape[0]
    mean = np.zeros((T, dx))
    mean[0] = mu0
    for t in range(1, T):
        mean[t] = A @ mean[t - 1] + B @ u[t - 1] + c
    M = np.zeros((T * dx, T * dx))
    for t in range(T):
        for k in range(t + 1):
            M[t * dx:(t + 1) * dx, k * dx:(k + 1) * dx] = np.linalg.matrix_power(A, t - k)
    D = np.zeros((T * dx, T * dx))
    D[:dx, :dx] = V0
    for k in range(1, T):
        D[k * dx:(k + 1) * dx, k * dx:(k + 1) * dx] = Q
    return mean.reshape(-1), M @ D @ M.T


def dense_condition(prior_mean, prior_cov, m, S):
    """Condition N(prior_mean, prior_cov) on observations m (T, dx) = x + N(0, S_t), S (T, dx) diagonal
    variances or (T, dx, dx). Returns (posterior mean, posterior cov, log marginal likelihood)."""
    T, dx = m.shape
    R = np.zeros((T * dx, T * dx))
    for t in range(T):
        R[t * dx:(t + 1) * dx, t * dx:(t + 1) * dx] = np.diag(S[t]) if S.ndim == 2 else S[t]
    y = m.reshape(-1)
    G = prior_cov + R
    K = prior_cov @ np.linalg.inv(G)
    r = y - prior_mean
    log_z = -0.5 * (len(y) * np.log(2 * np.pi) + np.linalg.slogdet(G)[1] + r @ np.linalg.solve(G, r))
    return prior_mean + K @ r, prior_cov - K @ prior_cov, log_z


def dense_gaussian_kl(q_mean, q_cov, p_mean, p_cov):
    """KL(N(q_mean, q_cov) || N(p_mean, p_cov)) in closed form."""
    p_inv = np.linalg.inv(p_cov)
    d = q_mean - p_mean
    return 0.5 * (np.trace(p_inv @ q_cov) + d @ p_inv @ d - len(d)
                  + np.linalg.slogdet(p_cov)[1] - np.linalg.slogdet(q_cov)[1])


@pytest.fixture
def dense():
    """Dense joint-Gaussian references (see the functions above)."""
    import types

    return types.SimpleNamespace(prior=dense_lds_prior, condition=dense_condition, kl=dense_gaussian_kl)
