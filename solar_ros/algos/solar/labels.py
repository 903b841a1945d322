"""SOLAR from a person's sparse success labels (``reward='labels'``; the paper's mug pushing).

No cost is observed. During an episode a person says "success now" (through the nodes: the recorder's
/solar/label_success service; in process: :func:`scripted_labels`, which plays the person from the task's success
criterion with a delay and a miss rate). From the label counts per step the learner derives, per frame, a target:
success from ``label_window`` steps before an episode's first label to its end, failure elsewhere
(:func:`~solar_ros.core.success_cost.success_targets`). The model's cost term and the measured step see 1 - target
as the step's cost (:func:`label_costs`; the representation is asked to explain what the labels depend on), and
LQR-FLM minimises the negative log-odds of a quadratic logistic success model of the latent
(:func:`labels_latent_cost`, ``cost_fit='labels'``; the formulation is in :mod:`solar_ros.core.success_cost`),
plus the task's action penalty.
"""
from __future__ import annotations

import numpy as np

from ...core.lqr_flm import QuadraticCost
from ...core.success_cost import NoSuccessLabels, success_cost, success_targets
from .models import RolloutData, _separable_cost


def scripted_labels(successes: np.ndarray, delay: int, miss_rate: float,
                    rngs: list[np.random.Generator]) -> np.ndarray:
    """The labels (N, T) a person watching would give: one press per episode, ``delay`` steps after the task's
    success criterion (``successes`` (N, T), per step) first holds (at the last step if that is later), none in an
    episode that never succeeds or that the person misses (probability ``miss_rate``, one draw per episode from its
    generator in ``rngs``)."""
    successes = np.asarray(successes, dtype=bool)
    if successes.ndim != 2 or len(rngs) != successes.shape[0]:
        raise ValueError(f"successes must be (N, T) with one generator per episode, got {successes.shape} and "
                         f"{len(rngs)} generators")
    labels = np.zeros(successes.shape, dtype=np.int64)
    T = successes.shape[1]
    for n, rng in enumerate(rngs):
        missed = rng.random() < miss_rate  # drawn for every episode, so each episode's draw is its own
        hits = np.flatnonzero(successes[n])
        if hits.size and not missed:
            labels[n, min(int(hits[0]) + delay, T - 1)] = 1
    return labels


def label_costs(labels: np.ndarray, window: int) -> np.ndarray:
    """The per-step costs a run on sparse labels learns from: 1 - the success target of each frame."""
    return 1.0 - success_targets(labels, window)


def labels_latent_cost(latents: np.ndarray, data: RolloutData, action_weights: np.ndarray, window: int,
                       ridge: float, metrics: dict | None = None) -> QuadraticCost:
    """The negative log-odds of the latent success model fitted to ``data``'s labels (``latents`` (N, T, dx)), plus
    the task's action penalty, the same at every step. With no success labelled yet (or only successes) the state
    part is zero: nothing to pull towards. ``metrics`` receives ``label_success_frames`` (the fraction of frames
    that are targets of success) and ``label_auc`` (how well the model's log-odds rank them, 0.5: chance)."""
    if data.labels is None:
        raise ValueError("cost_fit='labels' needs rollouts with success labels (reward='labels')")
    y = success_targets(data.labels, window)
    N, T, dx = latents.shape
    w = np.asarray(action_weights, dtype=np.float64)
    if metrics is not None:
        metrics["label_success_frames"] = float(y.mean())
    try:
        C, c, c0, model = success_cost(latents, y, ridge)
    except NoSuccessLabels:
        return _separable_cost(np.zeros((dx, dx)), np.zeros(dx), 0.0, np.diag(w), T)
    if metrics is not None:
        metrics["label_auc"] = _auc(model.log_odds(latents).ravel(), y.ravel() > 0.5)
    return _separable_cost(C, c, c0, np.diag(w), T)


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the ``positive`` frames (ties ranked by order)."""
    ranks = np.argsort(np.argsort(score, kind="stable"), kind="stable") + 1.0
    p, n = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - p * (p + 1) / 2) / (p * n))
