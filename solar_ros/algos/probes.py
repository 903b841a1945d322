"""Is the representation working? Linear probes, cost fit and exploration coverage.

A latent that lets LQR-FLM control a task must hold what the task's cost depends on, linearly
enough for the per-step linear models. These diagnostics say whether it does, without looking at
the policy:

* **linear probes**: ridge regressions from the latent to the true low-dimensional state (joint
  angles, end-effector or block position, velocities), fitted on some rollouts and scored (R^2) on
  held-out rollouts. R^2 near 1 for the end-effector position: the latent sees what the cost needs;
  near 0: it does not, whatever LQR-FLM then does.
* **coverage**: how much of the workspace the (pretraining) rollouts visited, and how close they
  came to the goal. A model can only be asked about states its data shows.
* **cost ranking**: whether the learned latent cost puts its low values where the task's are. A cost
  can explain most of the cost's variance (R^2) and still rank the data's frames near the goal above
  frames farther away; LQR-FLM then settles where the learned cost is lowest, not at the goal.

Everything here is plain numpy on arrays the loops already have: latents (N, T, dx), true states
(N, T, ds) with the task's ``state_names``, end-effector positions.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import spearmanr

PROBE_RIDGE = 1e-3
"""Ridge penalty of the probes, relative to the mean diagonal of the standardised latents' Gram matrix."""


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 ridge: float = PROBE_RIDGE) -> np.ndarray:
    """R^2 per target column of an affine ridge regression y ~ W x + b fitted on (train_x, train_y)
    and scored on (test_x, test_y). Inputs are (n, dx) and (n, k); returns (k,).

    R^2 = 1 - SSE / SST with SST about the *test* targets' mean, so a probe that only predicts the
    mean scores 0 and a worse one scores below 0. A target that does not vary on the test set gives NaN.
    """
    train_x, train_y = _as_2d(train_x), _as_2d(train_y)
    test_x, test_y = _as_2d(test_x), _as_2d(test_y)
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError("probe inputs and targets must have the same number of rows")
    if train_x.shape[1] != test_x.shape[1] or train_y.shape[1] != test_y.shape[1]:
        raise ValueError("probe train and test sets must have the same columns")
    if train_x.shape[0] < 2 or test_x.shape[0] < 1:
        raise ValueError("a probe needs at least 2 training rows and 1 test row")
    for name, a in (("train_x", train_x), ("train_y", train_y), ("test_x", test_x), ("test_y", test_y)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"probe {name} contains NaN or Inf")
    mu, sd = train_x.mean(0), train_x.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    z_train, z_test = (train_x - mu) / sd, (test_x - mu) / sd
    y_mean = train_y.mean(0)
    gram = z_train.T @ z_train
    lam = ridge * max(float(np.trace(gram)) / max(gram.shape[0], 1), 1e-12)
    W = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), z_train.T @ (train_y - y_mean))
    pred = z_test @ W + y_mean
    sse = np.sum((test_y - pred) ** 2, axis=0)
    sst = np.sum((test_y - test_y.mean(0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 1e-12 * max(test_y.shape[0], 1), 1.0 - sse / sst, np.nan)


def state_groups(state_names: Sequence[str], ee_pos_idx: Sequence[int]) -> dict[str, list[int]]:
    """The state columns the probes report on, by group: ``ee_position`` (the task's end-effector or
    held-block position, what the cost measures), ``joint_angles`` (names ``q_*`` or ``q<digit>``),
    ``velocities`` (names with a ``d``/``v`` rate prefix: ``dq_*``, ``vx``, ``tip_vx``, ...)."""
    names = list(state_names)
    groups: dict[str, list[int]] = {"ee_position": [int(i) for i in ee_pos_idx]}
    joints = [i for i, n in enumerate(names) if n.startswith("q_") or (n.startswith("q") and n[1:].isdigit())]
    rates = [i for i, n in enumerate(names) if n.startswith("dq") or n.split("_")[-1].startswith("v")]
    if joints:
        groups["joint_angles"] = joints
    if rates:
        groups["velocities"] = rates
    return groups


def probe_report(latents: np.ndarray, states: np.ndarray, groups: dict[str, list[int]],
                 holdout: float = 0.25) -> dict[str, float]:
    """Probe R^2 per state group, fitted on the first rollouts and scored on the last ``holdout``
    fraction (whole rollouts held out, so frames of one rollout never sit on both sides).

    ``latents`` (N, T, dx) and ``states`` (N, T, ds). Returns ``{"probe_<group>": R^2 of the group's
    columns pooled (1 - sum SSE / sum SST)}``; needs N >= 2.
    """
    latents, states = np.asarray(latents, dtype=np.float64), np.asarray(states, dtype=np.float64)
    if latents.ndim != 3 or states.ndim != 3 or latents.shape[:2] != states.shape[:2]:
        raise ValueError(f"latents (N, T, dx) and states (N, T, ds) must match, got {latents.shape} and {states.shape}")
    N = latents.shape[0]
    if N < 2:
        raise ValueError("probes need at least 2 rollouts (one to fit, one held out)")
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    n_test = min(max(1, int(round(holdout * N))), N - 1)
    fit, test = slice(0, N - n_test), slice(N - n_test, N)
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    report: dict[str, float] = {}
    for name, cols in groups.items():
        y_fit, y_test = flat(states[fit][..., cols]), flat(states[test][..., cols])
        r2 = linear_probe(flat(latents[fit]), y_fit, flat(latents[test]), y_test)
        sst = np.sum((y_test - y_test.mean(0)) ** 2, axis=0)
        ok = np.isfinite(r2)
        pooled = 1.0 - np.sum((1.0 - r2[ok]) * sst[ok]) / np.sum(sst[ok]) if ok.any() else float("nan")
        report[f"probe_{name}"] = float(pooled)
    return report


def coverage_report(positions: np.ndarray, goal: np.ndarray, cell: float) -> dict[str, float]:
    """How much of the workspace rollouts covered: ``positions`` (N, T, k) end-effector positions.

    * ``coverage_span``: mean over axes of the 5-95 percentile range of the positions visited (task units);
    * ``coverage_cells``: distinct cubes of side ``cell`` (the task's success radius) visited;
    * ``coverage_nearest_goal``: the closest any step came to the goal;
    * ``coverage_final_spread``: mean distance of the rollouts' final positions from their mean.
    """
    positions = np.asarray(positions, dtype=np.float64)
    goal = np.asarray(goal, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[-1] != goal.shape[-1]:
        raise ValueError(f"positions must be (N, T, {goal.shape[-1]}), got {positions.shape}")
    if not cell > 0:
        raise ValueError(f"cell must be positive, got {cell}")
    flat = positions.reshape(-1, positions.shape[-1])
    lo, hi = np.percentile(flat, [5, 95], axis=0)
    final = positions[:, -1]
    return {
        "coverage_span": float(np.mean(hi - lo)),
        "coverage_cells": int(len(np.unique(np.floor(flat / cell).astype(np.int64), axis=0))),
        "coverage_nearest_goal": float(np.min(np.linalg.norm(flat - goal, axis=-1))),
        "coverage_final_spread": float(np.mean(np.linalg.norm(final - final.mean(0), axis=-1))),
    }


def cost_ranking_report(learned: np.ndarray, positions: np.ndarray, goal: np.ndarray,
                        fraction: float = 0.01) -> dict[str, float]:
    """Does the learned cost rank the frames as the distance to the goal does?

    ``learned`` (N, T): the learned cost of each frame's latent (its state part); ``positions`` (N, T, k)
    the true end-effector positions of the same frames.

    * ``cost_rank_corr``: Spearman rank correlation of the learned cost with the distance to the goal
      (1: the same order);
    * ``cost_min_distance``: mean distance to the goal of the ``fraction`` of frames the learned cost
      rates lowest (at least one): where the learned cost would lead the policy among the states the
      data shows;
    * ``cost_min_ideal``: the same for the ``fraction`` of frames nearest the goal, what a cost that
      ranks them perfectly would give (data dense away from the goal raise both).
    """
    learned = np.asarray(learned, dtype=np.float64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64)
    goal = np.asarray(goal, dtype=np.float64)
    if positions.ndim < 2 or positions.shape[-1] != goal.shape[-1] or learned.size != positions[..., 0].size:
        raise ValueError(f"positions {positions.shape} must hold one position of size {goal.shape[-1]} per cost")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    dist = np.linalg.norm(positions.reshape(-1, goal.shape[-1]) - goal, axis=-1)
    n = max(1, int(round(fraction * len(dist))))
    lowest = np.argsort(learned, kind="stable")[:n]
    return {"cost_rank_corr": _spearman(learned, dist), "cost_min_distance": float(dist[lowest].mean()),
            "cost_min_ideal": float(np.sort(dist)[:n].mean())}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def diagnostics_line(extra: dict) -> str:
    """One log line of the representation diagnostics in an iteration's metrics ``extra`` ('' if none):
    probes, held-out figures, coverage, the latent cost's R^2 and ranking, the readout cost's R^2."""
    keys = [k for k in extra if k.startswith(("probe_", "heldout_", "coverage_", "cost_rank", "cost_min"))
            or k in ("cost_r2", "readout_r2")]
    parts = [f"{k} {extra[k]:.3g}" for k in keys if isinstance(extra[k], (int, float))]
    return ("representation: " + ", ".join(parts)) if parts else ""
