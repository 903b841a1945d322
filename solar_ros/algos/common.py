"""What every learning loop shares: rollouts, the LQR-FLM iteration step and loop, evaluation, the results
table, summary and plot."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..core import lqr_flm
from ..core.dynamics import GlobalLinearPrior, fit_dynamics
from ..core.gmm import GMMPrior
from ..core.types import LinearGaussianDynamics, LinearGaussianPolicy, TrajectoryBatch

PRETRAIN, ITERATION, EVAL, FIT, NOISE, PLAN, LABEL = range(7)
"""Phases of a run's seeds (see :func:`derive_seed`): the episodes' resets (pretraining, iterations,
evaluation), the model fits, the exploration noise, the MPC ablation's planner samples, and the scripted
labeller's misses. The model fitting
and trainer nodes draw from the same streams as the in-process loops, so a run through the nodes starts the
same episodes with the same noise as ``solar-ros train`` with the same seed."""


class RunMismatch(ValueError):
    """A run directory that this run may not continue from (``--resume``, ``--pretraining-from``): another task,
    seed, method, goal or settings, or not the checkpoint asked for. The CLI reports it as a usage error."""


def derive_seed(*keys: int) -> int:
    """A 31-bit seed derived from integer keys (run seed, phase, iteration, index)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class Episode:
    """One rollout of T steps."""

    X: np.ndarray
    """(T, dx) low-dimensional states seen before each action."""
    U: np.ndarray
    """(T, du) actions applied (after clipping to the action limits)."""
    costs: np.ndarray
    """(T,) per-step costs reported by the task."""
    distances: np.ndarray
    """(T,) task distance to the goal after each step."""
    success: bool
    """The task's success criterion at the final step."""
    images: np.ndarray | None = None
    """(T, H, W, C) uint8 images seen before each action, when recorded."""
    successes: np.ndarray | None = None
    """(T,) the task's success criterion after each step (what a person watching would see)."""


def rollout(env, act: Callable[[int, np.ndarray, dict], np.ndarray], seed: int | None = None,
            options: dict | None = None, record_images: bool = False) -> Episode:
    """Run one episode; ``act(t, state, obs)`` returns the action for step t."""
    obs, _ = env.reset(seed=seed, options=options)
    T = env.horizon
    X = np.zeros((T, env.state_dim))
    U = np.zeros((T, env.action_dim))
    costs = np.zeros(T)
    distances = np.zeros(T)
    successes = np.zeros(T, dtype=bool)
    images = [] if record_images else None
    low, high = env.action_space.low, env.action_space.high
    info: dict = {}
    for t in range(T):
        X[t] = obs["state"]
        if record_images:
            images.append(obs["image"])
        U[t] = np.clip(act(t, X[t], obs), low, high)
        obs, _, _, _, info = env.step(U[t])
        costs[t] = info["cost"]
        distances[t] = info["distance"]
        successes[t] = bool(info["success"])
    return Episode(X, U, costs, distances, bool(info["success"]),
                   np.stack(images) if record_images else None, successes)


def policy_actor(policy: LinearGaussianPolicy, rng: np.random.Generator | None):
    """An ``act`` function for :func:`rollout`: the policy with noise from ``rng`` (None: its mean)."""
    def act(t: int, x: np.ndarray, obs: dict) -> np.ndarray:
        noise = None if rng is None else rng.standard_normal(policy.du)
        return policy.act(t, x, noise)
    return act


def to_batch(episodes: list[Episode]) -> TrajectoryBatch:
    return TrajectoryBatch(np.stack([e.X for e in episodes]), np.stack([e.U for e in episodes]),
                           np.stack([e.costs for e in episodes]))


@dataclass
class IterationLog:
    """One row of the results table."""

    iteration: int
    episodes: int
    """Training episodes used so far (cumulative)."""
    env_steps: int
    """Training environment steps used so far (cumulative)."""
    mean_cost: float
    """Mean total cost of this iteration's training rollouts."""
    final_distance: float
    """Mean final distance to the goal of this iteration's rollouts."""
    success_rate: float
    """Fraction of this iteration's rollouts meeting the success criterion."""
    wall_time_s: float
    extra: dict = field(default_factory=dict)


def summarize(episodes: list[Episode]) -> dict:
    return {
        "mean_cost": float(np.mean([e.costs.sum() for e in episodes])),
        "final_distance": float(np.mean([e.distances[-1] for e in episodes])),
        "success_rate": float(np.mean([e.success for e in episodes])),
    }


def format_table(rows: list[IterationLog]) -> str:
    head = (f"{'iter':>4} {'episodes':>8} {'env_steps':>9} {'mean_cost':>11} {'final_dist':>10} {'success':>7} "
            f"{'time_s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.iteration:>4} {r.episodes:>8} {r.env_steps:>9} {r.mean_cost:>11.4g} "
                     f"{r.final_distance:>10.4f} {r.success_rate:>7.0%} {r.wall_time_s:>7.1f}")
    return "\n".join(lines)


def write_json_atomic(path: Path, data: dict) -> None:
    from ..runtime.atomic import write_text_atomic  # ROS-free; imported here to keep this module's imports light

    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def plot_learning_curve(rows: list[IterationLog], path: Path, title: str, success_threshold: float | None,
                        eval_summary: dict | None = None) -> None:
    """Cost and final distance against training episodes (what a person checks first)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [r.episodes for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(eps, [r.mean_cost for r in rows], "o-")
    ax1.set_xlabel("training episodes")
    ax1.set_ylabel("mean episode cost")
    ax1.set_yscale("symlog" if min(r.mean_cost for r in rows) <= 0 else "log")
    ax1.grid(alpha=0.3)
    ax2.plot(eps, [r.final_distance for r in rows], "o-", label="training rollouts")
    if success_threshold is not None:
        ax2.axhline(success_threshold, color="g", ls="--", label="success threshold")
    if eval_summary is not None:
        ax2.plot([eps[-1]], [eval_summary["final_distance"]], "r*", ms=12,
                 label=f"evaluation ({eval_summary['success_rate']:.0%} success)")
    ax2.set_xlabel("training episodes")
    ax2.set_ylabel("final distance to goal")
    ax2.set_yscale("log")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class RunResult:
    """What a training run returns and writes to ``summary.json``."""

    task: str
    method: str
    seed: int
    episodes: int
    env_steps: int
    final_cost: float
    final_distance: float
    success_rate: float
    eval_episodes: int
    wall_time_s: float
    goal: list[float]
    config: dict
    iterations: list[dict]
    provenance: dict = field(default_factory=dict)
    """Where the result came from: commit, command line, Python version (and, in a ``solar-ros launch``
    stack, the launch command and node parameters); see :func:`solar_ros.provenance.provenance`.
    Filled in when not given."""

    def __post_init__(self) -> None:
        if not self.provenance:
            from ..provenance import provenance
            self.provenance = provenance()

    def write(self, out: Path) -> None:
        write_json_atomic(out / "summary.json", asdict(self))


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def finite_or_raise(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"{name} became {value}: the run diverged")
    return value


def initial_policy(T: int, dx: int, du: int, std) -> LinearGaussianPolicy:
    """The first policy of every LQR-FLM loop: zero gains, independent action noise of std ``std``.

    ``std``: a scalar or a (du,) array, usually ``noise * action_scale`` (the noise in units of the
    task's action scale)."""
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), (du,))
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"initial policy noise std must be positive and finite, got {std}")
    cov = np.tile(np.diag(std**2), (T, 1, 1))
    return LinearGaussianPolicy(np.zeros((T, du, dx)), np.zeros((T, du)), cov)


# ================================================================================================
# one LQR-FLM iteration step (shared by every loop: true state, feature points, latents)


@dataclass(frozen=True)
class StepState:
    """What one LQR-FLM step hands to the next: the KL step multiplier, the dual variable and the
    last update (for the step adaptation)."""

    step_mult: float = 1.0
    """Current KL step multiplier."""
    eta: float = 1.0
    """Dual variable of the last update (warm start of the next search)."""
    previous: tuple | None = None
    """(old policy, new policy, dynamics, cost) of the last update; None before the first one, or
    after the state's coordinates changed (the last update's predictions no longer apply)."""
    anchor: LinearGaussianPolicy | None = None
    """The policy whose rollouts cost least so far (the measured-cost trust region, see
    :func:`measured_step`); None before any rollout was measured."""
    anchor_cost: float = math.inf
    """The mean episode cost of the anchor's rollouts."""
    anchor_se: float = 0.0
    """The standard error of that mean."""
    best: LinearGaussianPolicy | None = None
    """The policy whose rollouts met the task's success criterion most often so far, the lower mean episode
    cost breaking ties (see :func:`track_best`); None before any rollout's success was counted."""
    best_success: float = -math.inf
    """The share of the best policy's rollouts that succeeded."""
    best_cost: float = math.inf
    """Their mean episode cost."""

    def without_previous(self) -> "StepState":
        """The same state with the last update forgotten (after the state's coordinates changed)."""
        return replace(self, previous=None)

    def arrays(self) -> dict[str, np.ndarray]:
        """As named arrays (``step_mult``, ``eta``, ``prev_*``, ``anchor_*``, ``best_*``), for ``np.savez`` or a
        checkpoint."""
        out = {"step_mult": np.array(self.step_mult), "eta": np.array(self.eta)}
        if self.anchor is not None:
            out.update(policy_arrays("anchor", self.anchor))
            out["anchor_cost"], out["anchor_se"] = np.array(self.anchor_cost), np.array(self.anchor_se)
        if self.best is not None:
            out.update(policy_arrays("best", self.best))
            out["best_success"], out["best_cost"] = np.array(self.best_success), np.array(self.best_cost)
        if self.previous is not None:
            old, new, dyn, cost = self.previous
            out.update(policy_arrays("prev_old", old))
            out.update(policy_arrays("prev_new", new))
            for name in _DYNAMICS_FIELDS:
                out[f"prev_dyn_{name}"] = getattr(dyn, name)
            out["prev_cost_Cm"], out["prev_cost_cv"], out["prev_cost_cc"] = cost.Cm, cost.cv, cost.cc
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "StepState":
        """Inverse of :meth:`arrays` (``arrays``: any mapping, e.g. an ``np.load`` result); KeyError if incomplete."""
        previous = None
        if "prev_cost_Cm" in arrays:
            dyn = LinearGaussianDynamics(*(np.asarray(arrays[f"prev_dyn_{n}"]) for n in _DYNAMICS_FIELDS))
            cost = lqr_flm.QuadraticCost(np.asarray(arrays["prev_cost_Cm"]), np.asarray(arrays["prev_cost_cv"]),
                                         np.asarray(arrays["prev_cost_cc"]))
            previous = (policy_from_arrays("prev_old", arrays), policy_from_arrays("prev_new", arrays), dyn, cost)
        anchor, anchor_cost, anchor_se = None, math.inf, 0.0
        if "anchor_cost" in arrays:
            anchor = policy_from_arrays("anchor", arrays)
            anchor_cost, anchor_se = (np.asarray(arrays[k]).item() for k in ("anchor_cost", "anchor_se"))
        best, best_success, best_cost = None, -math.inf, math.inf
        if "best_success" in arrays:
            best = policy_from_arrays("best", arrays)
            best_success, best_cost = (np.asarray(arrays[k]).item() for k in ("best_success", "best_cost"))
        # .item(): a checkpoint's extra holds a 0-d array as one of shape (1,)
        return cls(np.asarray(arrays["step_mult"]).item(), np.asarray(arrays["eta"]).item(), previous,
                   anchor, anchor_cost, anchor_se, best, best_success, best_cost)


_DYNAMICS_FIELDS = ("Fm", "fv", "dyn_covar", "x0mu", "x0sigma")


@dataclass(frozen=True)
class StepInfo:
    """Diagnostics of one LQR-FLM step."""

    kl: float
    """KL divergence of the new policy from the old one (summed over time)."""
    kl_target: float
    """The KL bound the update aimed at (base step x multiplier x T)."""
    eta: float
    """Dual variable of the update."""
    step_mult: float
    """KL step multiplier the update used."""
    expected_cost: float
    """The new policy's expected cost under the fitted dynamics and the cost."""
    predicted_improvement: float | None
    """The last update's predicted cost improvement (None when the step was not adapted)."""
    actual_improvement: float | None
    """Its actual improvement, measured with the dynamics just fitted (None when the step was not adapted)."""
    dynamics: LinearGaussianDynamics
    """The per-step dynamics fitted to the rollouts."""
    cost: lqr_flm.QuadraticCost
    """The quadratic cost the update minimised."""


def lqr_flm_step(policy: LinearGaussianPolicy, X: np.ndarray, U: np.ndarray, prior, cost_model, state: StepState,
                 kl_step: float, adapt_step: bool) -> tuple[LinearGaussianPolicy, StepState, StepInfo]:
    """One LQR-FLM iteration on the rollouts X (N, T, dx), U (N, T, du) of ``policy``.

    Fits time-varying linear-Gaussian dynamics to the rollouts with ``prior`` (an NIW prior, or
    None), takes the expected cost from ``cost_model`` (a :class:`~solar_ros.core.lqr_flm.QuadraticCost`
    as is, or any ``eval(X, U)`` cost model averaged over the samples), adapts the KL step
    multiplier from the last update's predicted vs actual improvement (when ``adapt_step`` and there
    is a last update), and returns the policy minimising the expected cost within
    ``kl_step * step_mult`` per step of ``policy``, the state for the next step and the diagnostics.
    """
    shapes = np.shape(X), np.shape(U)
    if shapes[0][1:] != (policy.T, policy.dx) or shapes[1][2:] != (policy.du,) or shapes[1][:2] != shapes[0][:2]:
        raise ValueError(f"rollouts have states {np.shape(X)} and actions {np.shape(U)}, the policy "
                         f"(T, dx, du) = {(policy.T, policy.dx, policy.du)}")
    dynamics = fit_dynamics(X, U, prior=prior)
    cost = lqr_flm.estimate_cost(cost_model, X, U)
    step_mult, predicted, actual = state.step_mult, None, None
    if state.previous is not None and adapt_step:
        predicted, actual = lqr_flm.step_improvements(*state.previous, dynamics, cost)
        step_mult = lqr_flm.adjust_step_multiplier(step_mult, predicted, actual)
    new_policy, eta, info = lqr_flm.update(policy, dynamics, cost, kl_step=kl_step * step_mult, eta0=state.eta)
    new_state = replace(state, step_mult=step_mult, eta=eta, previous=(policy, new_policy, dynamics, cost))
    return new_policy, new_state, StepInfo(info.kl, info.kl_target, eta, step_mult, info.expected_cost,
                                           predicted, actual, dynamics, cost)


def measured_step(policy: LinearGaussianPolicy, episode_costs, state: StepState, z: float = 0.0,
                  shrink: float = 0.5, grow: float = 2.0, min_mult: float = 0.125
                  ) -> tuple[LinearGaussianPolicy, StepState, bool]:
    """A trust region on the *measured* cost: which policy the next LQR-FLM update starts from, and its step.

    ``episode_costs``: the costs of the episodes ``policy`` just produced (one per episode). Unless
    their mean exceeds the anchor's (the policy kept so far) by more than ``z`` standard errors of
    the difference, ``policy`` becomes the anchor and the step multiplier grows by ``grow`` (up to 1:
    the base KL step); otherwise the update starts again from the anchor with the multiplier times
    ``shrink`` (down to ``min_mult``). The update's own predictions never move the step here, only
    what the rollouts cost. Returns the policy to update, the state (anchor and multiplier set; the
    caller passes it to :func:`lqr_flm_step` with ``adapt_step=False``) and whether the update went
    back to the anchor.
    """
    costs = np.asarray(episode_costs, dtype=np.float64).ravel()
    if costs.size == 0 or not np.all(np.isfinite(costs)):
        raise ValueError(f"the rollouts' costs must be finite and not empty, got {costs}")
    mean = float(costs.mean())
    se = float(costs.std(ddof=1) / math.sqrt(costs.size)) if costs.size > 1 else 0.0
    if state.anchor is None or mean <= state.anchor_cost + z * math.hypot(se, state.anchor_se):
        return policy, replace(state, anchor=policy, anchor_cost=mean, anchor_se=se,
                               step_mult=min(1.0, state.step_mult * grow)), False
    return state.anchor, replace(state, step_mult=max(min_mult, state.step_mult * shrink)), True


def track_best(policy: LinearGaussianPolicy, episode_costs, successes, state: StepState) -> StepState:
    """The state with ``policy`` as its best (:attr:`StepState.best`) where its newest episodes (``successes``:
    whether each met the task's success criterion at its end; ``episode_costs``: their costs) succeeded more
    often than the best's so far, or as often at a lower mean cost; else ``state`` unchanged."""
    costs = np.asarray(episode_costs, dtype=np.float64).ravel()
    hits = np.asarray(successes).ravel()
    if costs.size == 0 or costs.size != hits.size or not np.all(np.isfinite(costs)):
        raise ValueError(f"one finite cost and one success flag per episode expected, got {costs.size} costs "
                         f"and {hits.size} flags")
    rate, mean = float(hits.astype(bool).mean()), float(costs.mean())
    if (rate, -mean) > (state.best_success, -state.best_cost):
        return replace(state, best=policy, best_success=rate, best_cost=mean)
    return state


GMM_PRIOR_ROLLOUTS = 20
"""Most recent rollouts the mixture dynamics prior is fitted on."""


@dataclass
class LQRFLMLoop:
    """The LQR-FLM learning iteration on any state (true state, feature points, latents).

    Each :meth:`iterate` takes the rollouts of the current policy and runs :func:`lqr_flm_step` on
    them with a dynamics prior built from every rollout so far (a mixture over the recent ones, or
    one global linear model) and the expected cost from ``cost_model``; ``policy`` becomes the
    LQR-FLM update. :meth:`state_arrays` /
    :meth:`from_state_arrays` save and restore everything the next iteration needs (for resuming).
    """

    policy: LinearGaussianPolicy
    """The current policy (the one whose rollouts the next :meth:`iterate` expects)."""
    cost_model: object
    """Cost model with ``eval(X, U) -> CostExpansion`` on this loop's state."""
    kl_step: float = 1.0
    """Base KL bound per time step (scaled by ``step_mult``)."""
    prior_strength: float = 1.0
    """Pseudo-count of the global linear dynamics prior."""
    adapt_step: bool = True
    """Adapt ``step_mult`` from predicted vs actual improvement."""
    prior: str = "gmm"
    """Dynamics prior of the per-step fits: 'gmm' (mixture over recent rollouts) or 'global' (one linear model)."""
    prior_seed: int = 0
    """Seed of the mixture fits."""
    step_mult: float = 1.0
    """Current KL step multiplier."""
    eta: float = 1.0
    """Dual variable of the last update (warm start of the next search)."""
    seen_X: list = field(default_factory=list)
    """States (N, T, dx) of every iteration so far (the prior's data)."""
    seen_U: list = field(default_factory=list)
    """Actions (N, T, du) of every iteration so far."""
    previous: tuple | None = None
    """(old policy, new policy, dynamics, cost) of the last update, for the step adaptation."""

    def iterate(self, X: np.ndarray, U: np.ndarray) -> dict:
        """One iteration on the current policy's rollouts X (N, T, dx), U (N, T, du); returns diagnostics."""
        batch = TrajectoryBatch(X, U, np.zeros(np.shape(X)[:2]))
        if (batch.T, batch.X.shape[2], batch.U.shape[2]) != (self.policy.T, self.policy.dx, self.policy.du):
            raise ValueError(f"rollouts have (T, dx, du) = {(batch.T, batch.X.shape[2], batch.U.shape[2])}, the "
                             f"policy {(self.policy.T, self.policy.dx, self.policy.du)}")
        self.seen_X.append(batch.X)
        self.seen_U.append(batch.U)
        self.policy, step, info = lqr_flm_step(self.policy, batch.X, batch.U, self._dynamics_prior(), self.cost_model,
                                               self.step_state, kl_step=self.kl_step, adapt_step=self.adapt_step)
        self.step_state = step
        return {"kl": info.kl, "kl_target": info.kl_target, "eta": self.eta, "step_mult": self.step_mult}

    @property
    def step_state(self) -> StepState:
        """What the next :func:`lqr_flm_step` continues from."""
        return StepState(self.step_mult, self.eta, self.previous)

    @step_state.setter
    def step_state(self, state: StepState) -> None:
        self.step_mult, self.eta, self.previous = state.step_mult, state.eta, state.previous

    def _dynamics_prior(self):
        """The NIW prior of the per-step fits, built from the rollouts seen so far.

        'gmm' (Guided Policy Search's choice) handles nonlinear systems: each step gets the
        mixture components its samples fall in. It is refitted from scratch on the most recent
        rollouts with a seed derived from the iteration, so a resumed run refits identically.
        """
        if self.prior == "gmm":
            recent = self.seen_X[-GMM_PRIOR_ROLLOUTS:], self.seen_U[-GMM_PRIOR_ROLLOUTS:]
            gmm = GMMPrior(strength=self.prior_strength, seed=self.prior_seed + len(self.seen_X))
            return gmm.update(np.concatenate(recent[0]), np.concatenate(recent[1]))
        if self.prior == "global":
            return GlobalLinearPrior.fit(np.concatenate(self.seen_X), np.concatenate(self.seen_U),
                                         strength=self.prior_strength)
        raise ValueError(f"unknown dynamics prior {self.prior!r}: use 'gmm' or 'global'")

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything :meth:`iterate` carries between iterations, as named arrays (for ``np.savez``)."""
        out = {"kl_step": np.array(self.kl_step), "prior_strength": np.array(self.prior_strength),
               "adapt_step": np.array(self.adapt_step), "seen_count": np.array(len(self.seen_X)),
               "prior": np.array(self.prior), "prior_seed": np.array(self.prior_seed)}
        out.update(self.step_state.arrays())
        out.update(policy_arrays("policy", self.policy))
        for i, (X, U) in enumerate(zip(self.seen_X, self.seen_U)):
            out[f"seen_X_{i}"], out[f"seen_U_{i}"] = X, U
        return out

    @classmethod
    def from_state_arrays(cls, arrays, cost_model) -> "LQRFLMLoop":
        """Rebuild a loop saved by :meth:`state_arrays` (``arrays``: a mapping such as an ``np.load`` result)."""
        try:
            loop = cls(policy=policy_from_arrays("policy", arrays), cost_model=cost_model,
                       kl_step=float(arrays["kl_step"]), prior_strength=float(arrays["prior_strength"]),
                       adapt_step=bool(arrays["adapt_step"]), prior=str(arrays["prior"]),
                       prior_seed=int(arrays["prior_seed"]))
            loop.step_state = StepState.from_arrays(arrays)
            for i in range(int(arrays["seen_count"])):
                loop.seen_X.append(np.asarray(arrays[f"seen_X_{i}"]))
                loop.seen_U.append(np.asarray(arrays[f"seen_U_{i}"]))
        except KeyError as err:
            raise ValueError(f"saved LQR-FLM loop state lacks the array {err}") from None
        return loop


def policy_arrays(prefix: str, policy: LinearGaussianPolicy) -> dict[str, np.ndarray]:
    """A policy as named arrays ``{prefix}_K``, ``{prefix}_k``, ``{prefix}_cov``."""
    return {f"{prefix}_K": policy.K, f"{prefix}_k": policy.k, f"{prefix}_cov": policy.cov}


def policy_from_arrays(prefix: str, arrays) -> LinearGaussianPolicy:
    """Inverse of :func:`policy_arrays`."""
    return LinearGaussianPolicy(np.asarray(arrays[f"{prefix}_K"]), np.asarray(arrays[f"{prefix}_k"]),
                                np.asarray(arrays[f"{prefix}_cov"]))


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays to ``path`` (.npz) through a uniquely named, fsynced temporary file and a rename
    (never half-written; :func:`solar_ros.runtime.atomic.atomic_file`)."""
    from ..runtime.atomic import atomic_file  # ROS-free; imported here to keep this module's imports light

    with atomic_file(path, "wb") as f:
        np.savez(f, **arrays)
