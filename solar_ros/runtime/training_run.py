"""Bookkeeping of a learning run driven through the nodes (ROS-free part of the trainer node).

Episode statistics come from the recorded episodes (``episode.npz``: the per-step ``costs`` and
``distances`` the simulated arm published on /solar/cost, aligned to the controller's steps), so
the trainer reports exactly what the fitter trained on. The results use the same containers,
table, plot and ``summary.json`` keys as ``solar-ros train`` (:mod:`solar_ros.algos.common`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..algos.common import IterationLog, RunResult, format_table, plot_learning_curve

TRAIN, EVAL = 1, 2
"""Seed phases: training episodes and evaluation episodes draw from different streams."""


def episode_seed(seed: int, phase: int, iteration: int, index: int) -> int:
    """A 31-bit seed from (run seed, phase, iteration, episode index): reproducible and distinct per episode."""
    keys = [int(seed), int(phase), int(iteration), int(index)]
    if any(k < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative, got {keys}")
    return int(np.random.SeedSequence(keys).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class EpisodeResult:
    """What one recorded episode achieved."""

    episode_id: str
    steps: int
    """Recorded time steps."""
    total_cost: float
    """Sum of the per-step task costs."""
    final_distance: float
    """Task distance at the last recorded step (m)."""
    success: bool
    """final_distance below the task's success threshold."""


def episode_result(episode_id: str, arrays: dict[str, np.ndarray], success_threshold: float) -> EpisodeResult:
    """Statistics of one episode from its npz arrays (``costs`` and ``distances`` are required)."""
    for key in ("costs", "distances"):
        if key not in arrays:
            raise ValueError(f"episode {episode_id!r} has no {key!r} array: was /solar/cost published while it ran?")
    costs = np.asarray(arrays["costs"], dtype=np.float64)
    distances = np.asarray(arrays["distances"], dtype=np.float64)
    if costs.size == 0 or not (np.all(np.isfinite(costs)) and np.all(np.isfinite(distances))):
        raise ValueError(f"episode {episode_id!r} has no steps or non-finite costs/distances")
    final = float(distances[-1])
    return EpisodeResult(episode_id, int(costs.size), float(costs.sum()), final, bool(final < success_threshold))


@dataclass
class NodeRun:
    """Everything the trainer logs during a run, and the files it writes at the end."""

    task: str
    method: str
    seed: int
    goal: list[float]
    horizon: int
    success_threshold: float
    config: dict = field(default_factory=dict)
    iterations: list[list[EpisodeResult]] = field(default_factory=list)
    """Training episodes per iteration (iteration i ran the policy of fit i)."""
    iteration_extra: list[dict] = field(default_factory=list)
    """Fit metrics per iteration (the update that followed its episodes)."""
    evaluation: list[EpisodeResult] = field(default_factory=list)
    """Deterministic evaluation episodes of the final policy."""

    def add_iteration(self, results: list[EpisodeResult], extra: dict | None = None) -> None:
        if not results:
            raise ValueError("an iteration needs at least one episode")
        self.iterations.append(list(results))
        self.iteration_extra.append(dict(extra or {}))

    @property
    def episodes(self) -> int:
        return sum(len(r) for r in self.iterations)

    def rows(self, wall_times: list[float]) -> list[IterationLog]:
        """One results-table row per iteration (cumulative episodes, mean cost, final distance, success)."""
        rows, total = [], 0
        for i, (results, extra) in enumerate(zip(self.iterations, self.iteration_extra)):
            total += len(results)
            s = summarize(results)
            rows.append(IterationLog(i, total, total * self.horizon, s["mean_cost"], s["final_distance"],
                                     s["success_rate"], wall_times[i] if i < len(wall_times) else math.nan, extra))
        return rows

    def result(self, wall_time_s: float, wall_times: list[float]) -> RunResult:
        """The run's summary (``summary.json``): evaluation figures of the final policy."""
        final = summarize(self.evaluation) if self.evaluation else summarize(self.iterations[-1])
        return RunResult(
            task=self.task, method=self.method, seed=self.seed, episodes=self.episodes,
            env_steps=self.episodes * self.horizon, final_cost=final["mean_cost"],
            final_distance=final["final_distance"], success_rate=final["success_rate"],
            eval_episodes=len(self.evaluation), wall_time_s=float(wall_time_s), goal=list(self.goal),
            config=self.config, iterations=[asdict(r) for r in self.rows(wall_times)])

    def write(self, out: Path, wall_time_s: float, wall_times: list[float]) -> tuple[RunResult, str]:
        """Write summary.json and learning_curve.png into ``out``; returns the summary and the table text."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result = self.result(wall_time_s, wall_times)
        result.write(out)
        rows = self.rows(wall_times)
        final = summarize(self.evaluation) if self.evaluation else None
        plot_learning_curve(rows, out / "learning_curve.png", f"{self.task} / {self.method} through ROS 2 nodes "
                            f"/ seed {self.seed}", self.success_threshold, final)
        return result, format_table(rows)


def summarize(results: list[EpisodeResult]) -> dict[str, float]:
    """Mean total cost, mean final distance and success rate of some episodes."""
    if not results:
        raise ValueError("no episodes to summarize")
    return {"mean_cost": float(np.mean([r.total_cost for r in results])),
            "final_distance": float(np.mean([r.final_distance for r in results])),
            "success_rate": float(np.mean([r.success for r in results]))}
