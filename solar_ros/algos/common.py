"""What every learning loop shares: rollouts, evaluation, the results table, summary and plot."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.types import LinearGaussianPolicy, TrajectoryBatch


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


def rollout(env, act: Callable[[int, np.ndarray, dict], np.ndarray], seed: int | None = None,
            options: dict | None = None, record_images: bool = False) -> Episode:
    """Run one episode; ``act(t, state, obs)`` returns the action for step t."""
    obs, _ = env.reset(seed=seed, options=options)
    T = env.horizon
    X = np.zeros((T, env.state_dim))
    U = np.zeros((T, env.action_dim))
    costs = np.zeros(T)
    distances = np.zeros(T)
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
    return Episode(X, U, costs, distances, bool(info["success"]),
                   np.stack(images) if record_images else None)


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
    head = f"{'iter':>4} {'episodes':>8} {'env_steps':>9} {'mean_cost':>11} {'final_dist':>10} {'success':>7} {'time_s':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.iteration:>4} {r.episodes:>8} {r.env_steps:>9} {r.mean_cost:>11.4g} "
                     f"{r.final_distance:>10.4f} {r.success_rate:>7.0%} {r.wall_time_s:>7.1f}")
    return "\n".join(lines)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
