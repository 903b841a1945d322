"""Small typed containers shared by the dynamics fitters, LQR-FLM, iLQR and the learning loops.

Conventions (used everywhere in the project):
  * A trajectory has T time steps; states X[t] and actions U[t] for t = 0..T-1 (the action at
    the last step is taken but its successor state is not part of the trajectory).
  * Batches of trajectories are arrays shaped (N, T, dx) and (N, T, du).
  * Linear-Gaussian dynamics: x_{t+1} = Fm[t] @ [x_t; u_t] + fv[t] + N(0, dyn_covar[t]),
    defined for t = 0..T-2; index T-1 is kept (zeros) so every per-step array has length T.
  * Linear-Gaussian policy: u_t = K[t] @ x_t + k[t] + N(0, cov[t]).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _check_finite(name: str, *arrays: np.ndarray) -> None:
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: contains NaN or Inf")


@dataclass
class LinearGaussianPolicy:
    """Time-varying linear-Gaussian policy u_t = K_t x_t + k_t + N(0, cov_t)."""

    K: np.ndarray
    """Feedback gains, shape (T, du, dx)."""
    k: np.ndarray
    """Open-loop offsets, shape (T, du)."""
    cov: np.ndarray
    """Exploration-noise covariance, shape (T, du, du), symmetric positive definite."""
    chol: np.ndarray = field(init=False, repr=False)
    """Lower Cholesky factor of ``cov`` per step, shape (T, du, du) (derived)."""
    inv_cov: np.ndarray = field(init=False, repr=False)
    """Inverse of ``cov`` per step, shape (T, du, du) (derived)."""

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64)
        self.k = np.asarray(self.k, dtype=np.float64)
        self.cov = np.asarray(self.cov, dtype=np.float64)
        if self.K.ndim != 3:
            raise ValueError(f"policy K must have shape (T, du, dx), got {self.K.shape}")
        T, du, dx = self.K.shape
        if self.k.shape != (T, du):
            raise ValueError(f"policy k must have shape {(T, du)}, got {self.k.shape}")
        if self.cov.shape != (T, du, du):
            raise ValueError(f"policy cov must have shape {(T, du, du)}, got {self.cov.shape}")
        _check_finite("policy", self.K, self.k, self.cov)
        self.cov = 0.5 * (self.cov + np.swapaxes(self.cov, 1, 2))
        try:
            self.chol = np.linalg.cholesky(self.cov)
        except np.linalg.LinAlgError as err:
            raise ValueError("policy cov must be positive definite at every step") from err
        self.inv_cov = np.linalg.inv(self.cov)

    @property
    def T(self) -> int:
        return self.K.shape[0]

    @property
    def du(self) -> int:
        return self.K.shape[1]

    @property
    def dx(self) -> int:
        return self.K.shape[2]

    def act(self, t: int, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Action at step t for state x; ``noise`` is a standard-normal du-vector (None: mean)."""
        u = self.K[t] @ x + self.k[t]
        if noise is not None:
            u = u + self.chol[t] @ noise
        return u

    @classmethod
    def initial(cls, T: int, dx: int, du: int, std: float, k: np.ndarray | None = None) -> "LinearGaussianPolicy":
        """Zero-gain policy with isotropic noise ``std`` (the usual first policy)."""
        K = np.zeros((T, du, dx))
        k = np.zeros((T, du)) if k is None else np.broadcast_to(k, (T, du)).copy()
        cov = np.tile(np.eye(du) * std**2, (T, 1, 1))
        return cls(K, k, cov)


@dataclass
class LinearGaussianDynamics:
    """Time-varying linear-Gaussian dynamics and initial-state distribution."""

    Fm: np.ndarray
    """(T, dx, dx+du): x_{t+1} mean = Fm[t] @ [x_t; u_t] + fv[t]."""
    fv: np.ndarray
    """(T, dx) offsets."""
    dyn_covar: np.ndarray
    """(T, dx, dx) process-noise covariances."""
    x0mu: np.ndarray
    """(dx,) mean of the initial state."""
    x0sigma: np.ndarray
    """(dx, dx) covariance of the initial state."""

    @property
    def T(self) -> int:
        return self.Fm.shape[0]

    @property
    def dx(self) -> int:
        return self.Fm.shape[1]

    @property
    def du(self) -> int:
        return self.Fm.shape[2] - self.Fm.shape[1]


@dataclass
class CostExpansion:
    """Per-step value and second-order expansion of a cost along a trajectory."""

    l: np.ndarray
    """(T,) cost value at each step."""
    lx: np.ndarray
    """(T, dx) gradient with respect to the state."""
    lu: np.ndarray
    """(T, du) gradient with respect to the action."""
    lxx: np.ndarray
    """(T, dx, dx) state Hessian."""
    luu: np.ndarray
    """(T, du, du) action Hessian."""
    lux: np.ndarray
    """(T, du, dx) mixed Hessian."""

    def __add__(self, other: "CostExpansion") -> "CostExpansion":
        return CostExpansion(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def scaled(self, s: float) -> "CostExpansion":
        return CostExpansion(*(s * a for a in self.astuple()))

    def astuple(self) -> tuple[np.ndarray, ...]:
        return (self.l, self.lx, self.lu, self.lxx, self.luu, self.lux)

    @classmethod
    def zeros(cls, T: int, dx: int, du: int) -> "CostExpansion":
        return cls(np.zeros(T), np.zeros((T, dx)), np.zeros((T, du)), np.zeros((T, dx, dx)),
                   np.zeros((T, du, du)), np.zeros((T, du, dx)))


@dataclass
class TrajectoryBatch:
    """N recorded trajectories of length T (what the fitters and LQR-FLM consume)."""

    X: np.ndarray
    """(N, T, dx) states (true low-dimensional state, or inferred latent means)."""
    U: np.ndarray
    """(N, T, du) actions actually applied."""
    costs: np.ndarray
    """(N, T) observed per-step costs (lower is better; never rewards)."""

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float64)
        self.U = np.asarray(self.U, dtype=np.float64)
        self.costs = np.asarray(self.costs, dtype=np.float64)
        if self.X.ndim != 3 or self.U.ndim != 3 or self.costs.ndim != 2:
            raise ValueError("TrajectoryBatch needs X (N,T,dx), U (N,T,du), costs (N,T)")
        if not (self.X.shape[:2] == self.U.shape[:2] == self.costs.shape):
            raise ValueError(f"TrajectoryBatch shapes disagree: X {self.X.shape}, U {self.U.shape}, "
                             f"costs {self.costs.shape}")
        if self.X.shape[0] == 0:
            raise ValueError("TrajectoryBatch is empty")
        _check_finite("TrajectoryBatch", self.X, self.U, self.costs)

    @property
    def N(self) -> int:
        return self.X.shape[0]

    @property
    def T(self) -> int:
        return self.X.shape[1]
