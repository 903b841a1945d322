"""Bookkeeping of a learning run driven through the nodes (ROS-free part of the trainer node).

Episode statistics come from the recorded episodes (``episode.npz``: the per-step ``costs`` and
``distances`` the simulated arm published on /solar/cost, aligned to the controller's steps), so
the trainer reports exactly what the fitter trained on. The results use the same containers,
table, plot and ``summary.json`` keys as ``solar-ros train`` (:mod:`solar_ros.algos.common`).

Riding out transient faults: :class:`StackHealth` says whether the streams an episode needs are
healthy (valid messages, no long gap, for a settling time), :class:`FaultBurst` keeps one
episode's run of failures (when it began, which causes were already reported) and says when it
has outlasted the patience. Both take the time as an argument, so they are tested on a fake clock.

Surviving its own death: :class:`TrainerState` is everything the trainer needs to continue a run
where it was - the iteration, the episodes of it already done, the fit it was waiting for, the
policy in use, the results so far - saved atomically (``trainer_state.json`` in its output
directory) after every episode and every fit. :func:`resume_problem` says whether a saved state
may be continued by a trainer with given settings.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..algos.common import (
    EVAL,
    ITERATION,
    NOISE,
    PRETRAIN,
    IterationLog,
    RunResult,
    derive_seed,
    format_table,
    plot_learning_curve,
)
from .atomic import read_json, write_json_atomic, write_with_atomic


def episode_seeds(seed: int, iteration: int, index: int, evaluation: bool = False) -> tuple[int, int]:
    """(reset seed, noise seed) of episode ``index`` of ``iteration`` (or of the evaluation): the streams of
    the in-process loops (:func:`~solar_ros.algos.common.derive_seed`; iteration 0's episodes are the
    pretraining's), so a run through the nodes starts the same episodes with the same exploration noise
    as ``solar-ros train`` with the same seed."""
    keys = [int(seed), int(iteration), int(index)]
    if any(k < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative, got {keys}")
    if evaluation:
        return derive_seed(seed, EVAL, 0, index), derive_seed(seed, EVAL, 1, index)  # noise unused: noise-free
    phase = PRETRAIN if iteration == 0 else ITERATION
    return derive_seed(seed, phase, iteration, index), derive_seed(seed, NOISE, iteration, index)


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


def ended_in_success(successes: np.ndarray | None, distances: np.ndarray | None,
                     success_threshold: float) -> np.ndarray | None:
    """Whether episodes met the task's success criterion at their end, from their per-step arrays (steps on the
    last axis): the recorded success flag of the last step (``successes``, from the simulator's TaskCost), else the
    last distance below ``success_threshold``; None where neither is given."""
    if successes is not None:
        return np.asarray(successes[..., -1], dtype=bool)
    if distances is not None:
        return np.asarray(distances[..., -1] < success_threshold)
    return None


def episode_result(episode_id: str, arrays: dict[str, np.ndarray], success_threshold: float) -> EpisodeResult:
    """Statistics of one episode from its npz arrays (``costs`` and ``distances`` are required). Success: the task's
    own criterion at the last step where the episode recorded it (``successes``, from the simulator's TaskCost),
    else the final distance below ``success_threshold``."""
    for key in ("costs", "distances"):
        if key not in arrays:
            raise ValueError(f"episode {episode_id!r} has no {key!r} array: was /solar/cost published while it ran?")
    costs = np.asarray(arrays["costs"], dtype=np.float64)
    distances = np.asarray(arrays["distances"], dtype=np.float64)
    if costs.size == 0 or not (np.all(np.isfinite(costs)) and np.all(np.isfinite(distances))):
        raise ValueError(f"episode {episode_id!r} has no steps or non-finite costs/distances")
    final = float(distances[-1])
    successes = arrays.get("successes")
    success = bool(ended_in_success(successes if successes is not None and len(successes) else None, distances,
                                    success_threshold))
    return EpisodeResult(episode_id, int(costs.size), float(costs.sum()), final, success)


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
        write_with_atomic(out / "learning_curve.png", lambda tmp: plot_learning_curve(
            rows, tmp, f"{self.task} / {self.method} through ROS 2 nodes / seed {self.seed}", self.success_threshold,
            final))
        return result, format_table(rows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NodeRun":
        data = dict(data)
        data["iterations"] = [[EpisodeResult(**r) for r in it] for it in data.get("iterations", [])]
        data["evaluation"] = [EpisodeResult(**r) for r in data.get("evaluation", [])]
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def summarize(results: list[EpisodeResult]) -> dict[str, float]:
    """Mean total cost, mean final distance and success rate of some episodes."""
    if not results:
        raise ValueError("no episodes to summarize")
    return {"mean_cost": float(np.mean([r.total_cost for r in results])),
            "final_distance": float(np.mean([r.final_distance for r in results])),
            "success_rate": float(np.mean([r.success for r in results]))}


# ---- riding out transient faults ------------------------------------------------------------------------------


@dataclass
class _StreamState:
    last: float | None = None
    """Arrival time of the newest valid message (None: none since the last problem)."""
    since: float | None = None
    """Start of the current run of valid messages without a gap over ``max_gap``."""
    problem: str | None = "nothing received yet"
    """Why the newest message was not valid (None: it was)."""


class StackHealth:
    """Whether the streams the next episode needs are healthy.

    A stream is healthy when its newest message was valid and came at most ``max_gap`` s ago; it has
    *settled* when it has been healthy without interruption (no invalid message, no gap over
    ``max_gap``) for ``settle_time`` s. The stack is ready when every required stream has settled.
    Times are seconds on any monotonic clock, passed in by the caller.
    """

    def __init__(self, settle_time: float, max_gap: float, required: Iterable[str] = ()) -> None:
        if not (math.isfinite(settle_time) and settle_time >= 0):
            raise ValueError(f"settle_time must be >= 0 s, got {settle_time}")
        if not (math.isfinite(max_gap) and max_gap > 0):
            raise ValueError(f"max_gap must be > 0 s, got {max_gap}")
        self.settle_time = float(settle_time)
        self.max_gap = float(max_gap)
        self._streams: dict[str, _StreamState] = {}
        self.required: tuple[str, ...] = ()
        self.require(required)

    def require(self, streams: Iterable[str]) -> None:
        """The streams that must be healthy (e.g. ``latent`` only while the policy acts on latents)."""
        self.required = tuple(streams)
        for name in self.required:
            self._streams.setdefault(name, _StreamState())

    def note(self, stream: str, now: float, problem: str | None = None) -> None:
        """A message of ``stream`` arrived at ``now``: valid (``problem`` None) or not (why)."""
        s = self._streams.setdefault(stream, _StreamState())
        if problem is not None:
            s.problem, s.last, s.since = problem, None, None
            return
        if s.last is None or s.since is None or now - s.last > self.max_gap:
            s.since = now
        s.last, s.problem = now, None

    def restart_settling(self, now: float) -> None:
        """Count the settling time from ``now`` at the earliest (after a failed episode: a fault may have
        hit the node that aborted it before any message here showed it)."""
        for s in self._streams.values():
            if s.since is not None:
                s.since = max(s.since, now)

    def faults(self, now: float) -> dict[str, str]:
        """Required streams that are not healthy at ``now``, with the reason."""
        out = {}
        for name in self.required:
            s = self._streams[name]
            if s.problem is not None:
                out[name] = s.problem
            elif now - s.last > self.max_gap:
                out[name] = f"no message for {now - s.last:.1f} s"
        return out

    def settled(self, now: float) -> bool:
        """Every required stream healthy, and continuously so for ``settle_time``."""
        if self.faults(now):
            return False
        return all(now - self._streams[n].since >= self.settle_time for n in self.required)


def fault_kind(cause: str) -> str:
    """A fault cause without its numbers (ages, counts, ids with digits), to report each kind once."""
    return re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "#", cause)


class FaultBurst:
    """One episode's run of failures, from the first failed attempt until an attempt succeeds.

    :meth:`report` records a cause and says whether it is new in this burst (so the caller logs each
    kind of cause once, however many attempts or messages repeat it); :meth:`expired` is true once
    the burst has lasted longer than ``patience`` s: only such a fault ends the run.
    """

    def __init__(self, patience: float) -> None:
        if not (math.isfinite(patience) and patience >= 0):
            raise ValueError(f"patience must be >= 0 s, got {patience}")
        self.patience = float(patience)
        self.start: float | None = None
        self.causes: list[str] = []
        """Each kind of cause reported in this burst, first wording, in order."""
        self._kinds: set[str] = set()
        self.attempts = 0
        """Failed attempts in this burst."""

    @property
    def active(self) -> bool:
        return self.start is not None

    def report(self, now: float, cause: str, attempt_failed: bool = False) -> bool:
        """Record ``cause`` (starting the burst at ``now`` if none runs); True if its kind is new."""
        if self.start is None:
            self.start = now
        if attempt_failed:
            self.attempts += 1
        kind = fault_kind(cause)
        if kind in self._kinds:
            return False
        self._kinds.add(kind)
        self.causes.append(cause)
        return True

    def elapsed(self, now: float) -> float:
        return 0.0 if self.start is None else now - self.start

    def expired(self, now: float) -> bool:
        return self.start is not None and now - self.start > self.patience

    def end(self) -> None:
        """An attempt succeeded: the next fault starts a new burst."""
        self.start = None
        self.causes = []
        self._kinds = set()
        self.attempts = 0


# ---- surviving the trainer's own death ------------------------------------------------------------------------

STATE_FILE = "trainer_state.json"
STATE_VERSION = 1


@dataclass
class TrainerState:
    """Where a run driven through the nodes is (saved after every episode and fit)."""

    identity: dict[str, Any]
    """The settings that make a run this run (task, method, seed, budget, goal, fit settings, episode
    directory): a trainer continues a saved run only if its own are the same."""
    run_tag: str
    """Prefix of the run's episode ids."""
    run: NodeRun
    """Results so far: finished iterations (episodes and fit metrics) and evaluation episodes."""
    policy_id: str
    """The policy the next episodes run (the fitter's newest successful fit)."""
    fit_iteration: int = 0
    """The fitter's iteration of ``policy_id``; the next fit asks for ``fit_iteration + 1``."""
    current: list[EpisodeResult] = field(default_factory=list)
    """Finished episodes of the iteration in progress."""
    pending_fit: list[str] | None = None
    """Episode ids of a fit that was asked for and not yet answered (asked again after a restart)."""
    failed_fits: int = 0
    """Fits in a row that failed (each time the previous policy was kept)."""
    wall_times: list[float] = field(default_factory=list)
    """Run wall time at the end of each iteration, s."""
    elapsed: float = 0.0
    """Wall time of the run up to the last save, over all of the trainer's processes, s."""
    restarts: int = 0
    """How often a trainer process took the run over from a previous one."""
    finished: bool = False
    """The results were written: nothing left to continue."""

    def episode_ids(self) -> list[str]:
        return ([r.episode_id for it in self.run.iterations for r in it] + [r.episode_id for r in self.current]
                + [r.episode_id for r in self.run.evaluation])

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["run"] = self.run.to_dict()
        out["current"] = [asdict(r) for r in self.current]
        return {"version": STATE_VERSION, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainerState":
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"not a trainer state of version {STATE_VERSION}")
        data = {k: v for k, v in data.items() if k != "version"}
        try:
            data["run"] = NodeRun.from_dict(data["run"])
            data["current"] = [EpisodeResult(**r) for r in data.get("current", [])]
            return cls(**data)
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed trainer state: {err}") from err

    def save(self, out_dir: str | Path) -> Path:
        """Write the state atomically to ``<out_dir>/trainer_state.json`` (never torn, even by kill -9)."""
        path = Path(out_dir) / STATE_FILE
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, out_dir: str | Path) -> "TrainerState | None":
        """The saved state in ``out_dir`` (None if there is none; ValueError if it cannot be read)."""
        path = Path(out_dir) / STATE_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_dict(read_json(path))
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read {path}: {err}") from err


def resume_problem(state: TrainerState, identity: dict[str, Any], complete_episode_ids: Iterable[str]) -> str | None:
    """Why ``state`` cannot be continued by a trainer with settings ``identity`` whose episode
    directory holds ``complete_episode_ids`` (None: it can)."""
    if state.finished:
        return "its run is finished"
    differ = sorted(k for k in set(state.identity) | set(identity) if state.identity.get(k) != identity.get(k))
    if differ:
        return "its settings differ: " + ", ".join(f"{k} {state.identity.get(k)!r} -> {identity.get(k)!r}"
                                                  for k in differ)
    missing = sorted(set(state.episode_ids()) - set(complete_episode_ids))
    if missing:
        return f"{len(missing)} of its episodes are not in the episode directory (e.g. {missing[0]!r})"
    return None
