"""Kalman filtering and Rauch-Tung-Striebel smoothing for linear-Gaussian state-space models.

Model (a linear dynamical system, LDS, observed through Gaussian "potentials")::

    x_0     ~ N(mu0, V0)
    x_{t+1} = A_t x_t + B_t u_t + b_t + w_t,     w_t ~ N(0, Q_t),   t = 0..T-2
    y_t     = C x_t + d + v_t,                   v_t ~ N(0, R_t),   t = 0..T-1

The transition terms A, B, b, Q are either constant or time-varying (leading axis of length >= T-1).
The observation noise R is passed with the data because in SOLAR it comes from the encoder: every
image gives a Gaussian potential N(x_t; m_t, S_t) on the latent, i.e. C = I, y_t = m_t, R_t = S_t.
R may be constant (dy, dy), per step (T, dy, dy) or per trajectory and step (N, T, dy, dy).

Everything is batched over N trajectories (numpy, vectorised over N; the loop runs over time).
Covariance updates use the Joseph form and are symmetrised; inverses are replaced by solves and
log-determinants come from Cholesky factors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import LinearGaussianDynamics

_LOG_2PI = float(np.log(2.0 * np.pi))


# --------------------------------------------------------------------------------------------
# helpers


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + np.swapaxes(a, -1, -2))


def _as_float(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def _check_psd(name: str, a: np.ndarray, strict: bool = False) -> None:
    """Raise unless every (..., d, d) matrix in ``a`` is symmetric positive (semi)definite."""
    if a.shape[-1] == 0:
        return
    scale = max(1.0, float(np.max(np.abs(a))))
    if not np.allclose(a, np.swapaxes(a, -1, -2), atol=1e-8 * scale, rtol=1e-6):
        raise ValueError(f"{name} must be symmetric")
    lowest = float(np.min(np.linalg.eigvalsh(_sym(a))))
    if lowest < -1e-9 * scale or (strict and lowest <= 0.0):
        kind = "positive definite" if strict else "positive semidefinite"
        raise ValueError(f"{name} must be {kind} (smallest eigenvalue {lowest:.3g})")


def _solve_spd(S: np.ndarray, B: np.ndarray) -> np.ndarray:
    """S^{-1} B for (batched) symmetric PSD S; falls back to the pseudo-inverse if S is singular."""
    try:
        return np.linalg.solve(S, B)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(S, hermitian=True) @ B


# --------------------------------------------------------------------------------------------
# model


@dataclass
class LDSParams:
    """Linear-Gaussian state-space model (everything except the observation noise R)."""

    A: np.ndarray
    """Transition matrices: (dx, dx) constant, or (K, dx, dx) with K >= T-1 for time-varying."""
    Q: np.ndarray
    """Process-noise covariances: (dx, dx) or (K, dx, dx); symmetric positive semidefinite."""
    mu0: np.ndarray
    """(dx,) mean of the initial state x_0."""
    V0: np.ndarray
    """(dx, dx) covariance of the initial state x_0."""
    B: np.ndarray | None = None
    """Input matrices (dx, du) or (K, dx, du); None for a model without inputs."""
    b: np.ndarray | None = None
    """Transition offsets (dx,) or (K, dx); None means zero."""
    C: np.ndarray | None = None
    """(dy, dx) observation matrix; None means the identity (y observes x directly)."""
    d: np.ndarray | None = None
    """(dy,) observation offset; None means zero."""

    def __post_init__(self) -> None:
        self.mu0 = _as_float("LDSParams.mu0", self.mu0)
        if self.mu0.ndim != 1 or self.mu0.shape[0] == 0:
            raise ValueError(f"LDSParams.mu0 must have shape (dx,), got {self.mu0.shape}")
        dx = self.mu0.shape[0]
        self.V0 = _as_float("LDSParams.V0", self.V0)
        if self.V0.shape != (dx, dx):
            raise ValueError(f"LDSParams.V0 must have shape {(dx, dx)}, got {self.V0.shape}")
        _check_psd("LDSParams.V0", self.V0)
        self.V0 = _sym(self.V0)

        lengths: set[int] = set()

        def per_step(name: str, a, tail: tuple[int, ...]) -> np.ndarray:
            a = _as_float(f"LDSParams.{name}", a)
            if a.shape == tail:
                return a
            if a.ndim == len(tail) + 1 and a.shape[1:] == tail and a.shape[0] > 0:
                lengths.add(a.shape[0])
                return a
            raise ValueError(f"LDSParams.{name} must have shape {tail} or (K,) + {tail}, got {a.shape}")

        self.A = per_step("A", self.A, (dx, dx))
        self.Q = per_step("Q", self.Q, (dx, dx))
        _check_psd("LDSParams.Q", self.Q)
        self.Q = _sym(self.Q)
        if self.B is not None:
            B = np.asarray(self.B)
            if B.ndim not in (2, 3):
                raise ValueError(f"LDSParams.B must have shape (dx, du) or (K, dx, du), got {B.shape}")
            self.B = per_step("B", B, (dx, B.shape[-1]))
        if self.b is not None:
            self.b = per_step("b", self.b, (dx,))
        if len(lengths) > 1:
            raise ValueError(f"LDSParams: time-varying terms disagree on their length: {sorted(lengths)}")
        self._n_steps: int | None = lengths.pop() if lengths else None

        if self.C is not None:
            self.C = _as_float("LDSParams.C", self.C)
            if self.C.ndim != 2 or self.C.shape[1] != dx or self.C.shape[0] == 0:
                raise ValueError(f"LDSParams.C must have shape (dy, {dx}), got {self.C.shape}")
        if self.d is not None:
            self.d = _as_float("LDSParams.d", self.d)
            if self.d.shape != (self.dy,):
                raise ValueError(f"LDSParams.d must have shape {(self.dy,)}, got {self.d.shape}")

    @property
    def dx(self) -> int:
        return self.mu0.shape[0]

    @property
    def du(self) -> int:
        return 0 if self.B is None else self.B.shape[-1]

    @property
    def dy(self) -> int:
        return self.dx if self.C is None else self.C.shape[0]

    @property
    def n_transitions(self) -> int | None:
        """Length K of the time-varying terms (None when every transition term is constant)."""
        return self._n_steps

    def transition(self, t: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
        """(A_t, B_t, b_t, Q_t) of the step x_t -> x_{t+1}."""

        def pick(a: np.ndarray | None, ndim_const: int) -> np.ndarray | None:
            if a is None or a.ndim == ndim_const:
                return a
            return a[t]

        if self._n_steps is not None and not 0 <= t < self._n_steps:
            raise ValueError(f"transition index {t} outside the model's {self._n_steps} steps")
        return pick(self.A, 2), pick(self.B, 2), pick(self.b, 1), pick(self.Q, 2)

    def check_horizon(self, T: int) -> None:
        """Raise unless the model can describe trajectories of T steps."""
        if self._n_steps is not None and self._n_steps < T - 1:
            raise ValueError(f"time-varying model has {self._n_steps} transitions, need {T - 1} for T={T}")

    @classmethod
    def from_dynamics(cls, dyn: LinearGaussianDynamics, C: np.ndarray | None = None,
                      d: np.ndarray | None = None) -> "LDSParams":
        """Time-varying model from fitted :class:`LinearGaussianDynamics` (steps 0..T-2)."""
        dx, T = dyn.dx, dyn.T
        if T < 2:
            raise ValueError("LinearGaussianDynamics needs T >= 2 to define transitions")
        B = dyn.Fm[:-1, :, dx:] if dyn.du > 0 else None
        return cls(A=dyn.Fm[:-1, :, :dx], Q=dyn.dyn_covar[:-1], mu0=dyn.x0mu, V0=dyn.x0sigma,
                   B=B, b=dyn.fv[:-1], C=C, d=d)


# --------------------------------------------------------------------------------------------
# single steps (any leading batch shape)


def kalman_predict(mean: np.ndarray, cov: np.ndarray, A: np.ndarray, Q: np.ndarray,
                   B: np.ndarray | None = None, u: np.ndarray | None = None,
                   b: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Push the belief N(mean, cov) on x_t through x_{t+1} = A x_t + B u_t + b + N(0, Q).

    ``mean`` is (..., dx), ``cov`` (..., dx, dx); ``u`` is (..., du) when ``B`` is given.
    Returns the predicted mean and covariance of x_{t+1}.
    """
    new_mean = mean @ A.T
    if B is not None and B.shape[-1] > 0:
        if u is None:
            raise ValueError("the model has inputs (B) but no actions u were given")
        new_mean = new_mean + u @ B.T
    if b is not None:
        new_mean = new_mean + b
    new_cov = _sym(A @ cov @ A.T + Q)
    return new_mean, new_cov


def kalman_update(mean: np.ndarray, cov: np.ndarray, y: np.ndarray, R: np.ndarray,
                  C: np.ndarray | None = None, d: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Condition the belief N(mean, cov) on one observation y = C x + d + N(0, R).

    Shapes: mean (..., dx), cov (..., dx, dx), y (..., dy), R (..., dy, dy) (leading axes
    broadcast). Returns (posterior mean, posterior covariance, log p(y | prior belief)), the last
    with the leading shape. The covariance uses the Joseph form, which stays positive
    semidefinite under round-off.
    """
    dx = mean.shape[-1]
    if C is None:
        pred_y = mean
        PCt = cov
    else:
        pred_y = mean @ C.T
        PCt = cov @ C.T
    if d is not None:
        pred_y = pred_y + d
    innovation = y - pred_y
    HPHt = PCt if C is None else C @ PCt
    S = _sym(HPHt + R)
    try:
        L = np.linalg.cholesky(S)
    except np.linalg.LinAlgError as err:
        raise ValueError("innovation covariance C P C^T + R is not positive definite; "
                         "check that the observation noise R is positive definite") from err
    # Gain K = P C^T S^{-1}, obtained as (S^{-1} C P)^T because S and P are symmetric.
    gain = np.swapaxes(np.linalg.solve(S, np.swapaxes(PCt, -1, -2)), -1, -2)
    new_mean = mean + (gain @ innovation[..., None])[..., 0]
    I_KC = np.eye(dx) - (gain if C is None else gain @ C)
    new_cov = _sym(I_KC @ cov @ np.swapaxes(I_KC, -1, -2) + gain @ R @ np.swapaxes(gain, -1, -2))
    # log N(y; pred_y, S) with the Mahalanobis term from a triangular solve against the Cholesky factor.
    white = np.linalg.solve(L, innovation[..., None])[..., 0]
    log_det = 2.0 * np.sum(np.log(np.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    loglik = -0.5 * (np.sum(white**2, axis=-1) + log_det + y.shape[-1] * _LOG_2PI)
    return new_mean, new_cov, loglik


def kalman_step(params: LDSParams, y: np.ndarray, R: np.ndarray,
                prev: tuple[np.ndarray, np.ndarray] | None = None,
                u_prev: np.ndarray | None = None, t: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One online filtering step: fold the newest observation y_t into the belief over x_t.

    With ``prev=None`` the observation is the first of the episode (t = 0) and the prior
    N(mu0, V0) is conditioned on it. Otherwise ``prev`` is the filtered (mean, cov) of x_{t-1};
    it is first pushed through the transition t-1 -> t with action ``u_prev`` = u_{t-1}.
    ``t`` (the index of y) is required only for time-varying models. Works for one trajectory
    (y (dy,)) or a batch (y (N, dy)). Returns (mean, cov, log p(y_t | y_{0:t-1})).
    """
    y = _as_float("y", y)
    R = _as_float("R", R)
    if y.shape[-1] != params.dy or R.shape[-2:] != (params.dy, params.dy):
        raise ValueError(f"y must end in ({params.dy},) and R in {(params.dy, params.dy)}; "
                         f"got {y.shape} and {R.shape}")
    if prev is None:
        mean, cov = params.mu0, params.V0
    else:
        mean, cov = (_as_float("prev mean", prev[0]), _as_float("prev cov", prev[1]))
        if mean.shape[-1] != params.dx or cov.shape[-2:] != (params.dx, params.dx):
            raise ValueError(f"prev must be (mean (..., {params.dx}), cov (..., {params.dx}, {params.dx}))")
        if t is None:
            if params.n_transitions is not None:
                raise ValueError("a time-varying model needs the time index t of the new observation")
            t = 1
        if t < 1:
            raise ValueError("with a previous belief the new observation has index t >= 1")
        A, B, b, Q = params.transition(t - 1)
        if u_prev is not None:
            u_prev = _as_float("u_prev", u_prev)
            if u_prev.shape[-1] != params.du:
                raise ValueError(f"u_prev must end in ({params.du},), got {u_prev.shape}")
        mean, cov = kalman_predict(mean, cov, A, Q, B, u_prev, b)
    return kalman_update(mean, cov, y, R, params.C, params.d)


# --------------------------------------------------------------------------------------------
# whole trajectories


@dataclass
class FilterResult:
    """Output of :func:`kalman_filter` for N trajectories of T steps."""

    filtered_means: np.ndarray
    """(N, T, dx) E[x_t | y_{0:t}]."""
    filtered_covs: np.ndarray
    """(N, T, dx, dx) Cov[x_t | y_{0:t}]."""
    predicted_means: np.ndarray
    """(N, T, dx) E[x_t | y_{0:t-1}] (the prior mean mu0 at t = 0)."""
    predicted_covs: np.ndarray
    """(N, T, dx, dx) Cov[x_t | y_{0:t-1}] (V0 at t = 0)."""
    step_log_likelihood: np.ndarray
    """(N, T) log p(y_t | y_{0:t-1})."""
    log_likelihood: np.ndarray
    """(N,) log p(y_{0:T-1}) per trajectory."""


@dataclass
class SmootherResult:
    """Output of :func:`rts_smoother`: posterior marginals given all observations."""

    means: np.ndarray
    """(N, T, dx) E[x_t | y_{0:T-1}]."""
    covs: np.ndarray
    """(N, T, dx, dx) Cov[x_t | y_{0:T-1}]."""
    cross_covs: np.ndarray
    """(N, T-1, dx, dx) lag-one cross-covariances Cov[x_{t+1}, x_t | y_{0:T-1}]."""
    log_likelihood: np.ndarray
    """(N,) log p(y_{0:T-1}) per trajectory."""
    filtered: FilterResult
    """The forward pass the smoother was run on."""


def _check_data(params: LDSParams, Y, R, U) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    Y = _as_float("Y", Y)
    if Y.ndim != 3 or Y.shape[2] != params.dy:
        raise ValueError(f"Y must have shape (N, T, {params.dy}), got {Y.shape}")
    N, T, dy = Y.shape
    if N == 0 or T == 0:
        raise ValueError(f"Y is empty (shape {Y.shape})")
    params.check_horizon(T)

    R = _as_float("R", R)
    allowed = [(dy, dy), (T, dy, dy), (N, T, dy, dy)]
    if R.shape not in allowed:
        raise ValueError(f"R must have one of the shapes {allowed}, got {R.shape}")
    _check_psd("R", R)
    if R.ndim == 2:
        R = np.broadcast_to(R, (T, dy, dy))
    if R.ndim == 3:
        R = np.broadcast_to(R, (N, T, dy, dy))

    if params.du > 0:
        if U is None:
            raise ValueError(f"the model has {params.du} inputs: pass U with shape (N, T, {params.du})")
        U = _as_float("U", U)
        if U.ndim != 3 or U.shape[0] != N or U.shape[1] not in (T, T - 1) or U.shape[2] != params.du:
            raise ValueError(f"U must have shape ({N}, {T} or {T - 1}, {params.du}), got {U.shape}")
    elif U is not None and np.asarray(U).size > 0:
        raise ValueError("actions U were given but the model has no input matrix B")
    else:
        U = None
    return Y, R, U


def kalman_filter(params: LDSParams, Y: np.ndarray, R: np.ndarray,
                  U: np.ndarray | None = None) -> FilterResult:
    """Forward (filtering) pass over N trajectories.

    Args:
        params: the state-space model.
        Y: (N, T, dy) observations.
        R: observation-noise covariance, (dy, dy), (T, dy, dy) or (N, T, dy, dy).
        U: (N, T, du) or (N, T-1, du) actions (u_t drives x_t -> x_{t+1}; u_{T-1} is unused);
            None for models without inputs.
    """
    Y, R, U = _check_data(params, Y, R, U)
    N, T, _ = Y.shape
    dx = params.dx
    pred_m = np.empty((N, T, dx))
    pred_P = np.empty((N, T, dx, dx))
    filt_m = np.empty((N, T, dx))
    filt_P = np.empty((N, T, dx, dx))
    step_ll = np.empty((N, T))

    mean = np.broadcast_to(params.mu0, (N, dx))
    cov = np.broadcast_to(params.V0, (N, dx, dx))
    for t in range(T):
        if t > 0:
            A, B, b, Q = params.transition(t - 1)
            mean, cov = kalman_predict(mean, cov, A, Q, B, None if U is None else U[:, t - 1], b)
        pred_m[:, t], pred_P[:, t] = mean, cov
        mean, cov, step_ll[:, t] = kalman_update(mean, cov, Y[:, t], R[:, t], params.C, params.d)
        filt_m[:, t], filt_P[:, t] = mean, cov
    return FilterResult(filt_m, filt_P, pred_m, pred_P, step_ll, step_ll.sum(axis=1))


def rts_smoother(params: LDSParams, Y: np.ndarray, R: np.ndarray,
                 U: np.ndarray | None = None) -> SmootherResult:
    """Rauch-Tung-Striebel smoother: posterior marginals of every x_t given all of y_{0:T-1}.

    Same arguments as :func:`kalman_filter`. Also returns the lag-one cross-covariances that
    EM / structured-VAE updates need for E[x_{t+1} x_t^T].
    """
    filt = kalman_filter(params, Y, R, U)
    N, T, dx = filt.filtered_means.shape
    means = filt.filtered_means.copy()
    covs = filt.filtered_covs.copy()
    cross = np.empty((N, max(T - 1, 0), dx, dx))
    for t in range(T - 2, -1, -1):
        A = params.transition(t)[0]
        P_f = filt.filtered_covs[:, t]
        P_pred = filt.predicted_covs[:, t + 1]
        # Smoother gain G = P_f A^T P_pred^{-1}, computed as (P_pred^{-1} A P_f)^T.
        G = np.swapaxes(_solve_spd(P_pred, A @ P_f), -1, -2)
        means[:, t] = (filt.filtered_means[:, t]
                       + (G @ (means[:, t + 1] - filt.predicted_means[:, t + 1])[..., None])[..., 0])
        Gt = np.swapaxes(G, -1, -2)
        covs[:, t] = _sym(P_f + G @ (covs[:, t + 1] - P_pred) @ Gt)
        cross[:, t] = covs[:, t + 1] @ Gt
    return SmootherResult(means, covs, cross, filt.log_likelihood, filt)


def sample_lds(params: LDSParams, N: int, T: int, rng: np.random.Generator,
               U: np.ndarray | None = None, R: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw N state trajectories (N, T, dx) from the model, and observations if R is given.

    R follows the shapes of :func:`kalman_filter`; returns (X, Y) with Y None when R is None.
    """
    if N < 1 or T < 1:
        raise ValueError("sample_lds needs N >= 1 and T >= 1")
    params.check_horizon(T)
    dx = params.dx
    if params.du > 0:
        if U is None:
            raise ValueError("the model has inputs: pass U (N, T, du)")
        U = _as_float("U", U)
        if U.ndim != 3 or U.shape[0] != N or U.shape[1] < T - 1 or U.shape[2] != params.du:
            raise ValueError(f"U must have shape ({N}, {T}, {params.du}), got {U.shape}")

    def draw(cov: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        # Eigen-decomposition rather than Cholesky so singular (PSD) covariances work too.
        w, V = np.linalg.eigh(cov)
        root = V * np.sqrt(np.clip(w, 0.0, None))[..., None, :]
        return (root @ rng.standard_normal(shape + (cov.shape[-1], 1)))[..., 0]

    X = np.empty((N, T, dx))
    X[:, 0] = params.mu0 + draw(params.V0, (N,))
    for t in range(T - 1):
        A, B, b, Q = params.transition(t)
        x = X[:, t] @ A.T + draw(Q, (N,))
        if B is not None:
            x = x + U[:, t] @ B.T
        if b is not None:
            x = x + b
        X[:, t + 1] = x
    if R is None:
        return X, None
    Y = X if params.C is None else X @ params.C.T
    if params.d is not None:
        Y = Y + params.d
    R = np.broadcast_to(np.asarray(R, dtype=np.float64), (N, T, params.dy, params.dy))
    return X, Y + draw(R, (N, T))
