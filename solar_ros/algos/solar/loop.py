"""SOLAR: model-based RL from images with a linear-dynamics latent space and LQR-FLM.

One training run learns one task instance (a fixed goal drawn from the seed, the task's
initial-state distribution) from camera images only: the policy never sees the true state, and the
only other signals are the applied actions and the task's per-step costs (costs, never rewards).

    pretrain:
        collect `pretrain_episodes` rollouts with random Gaussian actions (std 0.5 action_scale)
        fit the latent model on them (SOLAR: structured VAE whose latent follows a global LDS, with
            the conjugate MNIW update of the LDS between network steps; the VAE ablation: a per-frame
            VAE, then an LDS fitted by EM in its latent afterwards)
    for each iteration:
        collect `rollouts_per_iteration` rollouts with the time-varying linear-Gaussian policy acting
            on the *filtered* latent mean (each frame encoded, then one Kalman step of the model's LDS)
        [every `refit_every` iterations: refit the model on all data, re-express the policy in the
            new latent coordinates]
        smooth the latent trajectories of the last `buffer_size` rollouts
        fit per-step linear-Gaussian dynamics to them with the model's LDS posterior as the
            normal-inverse-Wishart prior (worth `prior_strength` rollouts per step)
        adapt the KL step from the predicted vs actual improvement of the last update
        LQR-FLM update on the learned latent cost (quadratic in the latent and the action)
        checkpoint (atomically): the model, the LDS posterior, the policy, the step state, the logs
    evaluate the final policy's mean (no noise) on `eval_episodes` fresh episodes of the same goal

The iteration step (smoothed or filtered latents -> per-step dynamics with the model's LDS prior
-> the learned latent cost -> step adaptation -> LQR-FLM update) is :func:`solar_step`, and the
model refit with the policy's re-expression is :func:`refit`; the model fitting node
(:mod:`solar_ros.runtime.solar_fit`) runs the same two functions between its episode batches.

Reproducibility: every random draw comes from a generator seeded by (seed, phase, iteration, index),
so a run resumed from its last checkpoint takes exactly the draws an uninterrupted run would have.

Speed and settings (2-core CPU). The reference trains the SVAE for many thousands of steps on
batches of 2 whole rollouts with a stride-1 first convolution. Here the encoder's first convolution
has stride 2 (a 64x64 encode drops from ~6 ms to ~1.5 ms, training compute ~4x), and the networks
train on short windows (5 steps, 4 per batch) cut from the rollouts: the Kalman smoother's Python loop
costs per time step, and the number of gradient steps, not the frames per step, is what a small
object in the image needs. Deviations from the reference objective, each a field of
:class:`SolarConfig` with its reason: learning rate 3e-3, final beta 0.1 and a floor of 10 on the
cost term's weight (the reference ties it to beta, which starts at 1e-4). With the reference
weighting the point task's latent collapsed onto the LDS prior (KL -> 0, cost R^2 ~ 0) in every run
of a few thousand steps. ``scripts/bench_solar_speed.py`` measures the fitting and control-step costs.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ...core.cost import StateDistanceCost
from ...core.gmm import GMMPrior
from ...core.lqr_flm import QuadraticCost
from ...core.noise import standard_normal_sequence
from ...core.types import LinearGaussianPolicy
from ...envs import make
from ...runtime.resources import FitMeter
from ..common import (
    EVAL,
    FIT,
    ITERATION,
    LABEL,
    NOISE,
    PLAN,
    PRETRAIN,
    Episode,
    IterationLog,
    RunResult,
    StepState,
    Stopwatch,
    derive_seed,
    finite_or_raise,
    format_table,
    initial_policy,
    lqr_flm_step,
    measured_step,
    plot_learning_curve,
    policy_arrays,
    policy_from_arrays,
    rollout,
    summarize,
    track_best,
)
from ..probes import (
    cost_ranking_report,
    coverage_report,
    diagnostics_line,
    linear_probe,
    probe_report,
    state_groups,
)
from .config import TASK_DEFAULTS, SolarConfig
from .labels import label_costs, labels_latent_cost, scripted_labels
from .models import (
    MODEL_CLASSES,
    DistanceLink,
    FitHook,
    LatentModel,
    RolloutData,
    approach_goal,
    cost_r2,
    distance_latent_cost,
    latent_cost,
    local_latent_cost,
    readout_latent_cost,
    spread_points,
)
from .mpc import METHOD as MPC_METHOD
from .mpc import MPCPlan, mpc_actor, mpc_plan, mpc_step
from .persistence import (
    BEST_CHECKPOINT_NAME,
    CHECKPOINT_NAME,
    PRETRAIN_CHECKPOINT_NAME,
    copy_model,
    load_data,
    load_own_policy,
    load_pretraining,
    load_run_checkpoint,
    save_data,
    save_own_policy,
    save_run_checkpoint,
)

log = logging.getLogger(__name__)


# Seeds: every random draw of a run comes from a generator seeded by (seed, phase, iteration, index)
# (:func:`~solar_ros.algos.common.derive_seed`, shared with the trainer node).


# ================================================================================================
# acting: the pretraining noise, the policy on the filtered latent


def latent_actor(model: LatentModel, policy: LinearGaussianPolicy, rng: np.random.Generator | None,
                 low: np.ndarray, high: np.ndarray, record: list | None = None, smoothing: float = 0.0) -> Callable:
    """An ``act`` for :func:`~solar_ros.algos.common.rollout` that sees only the image.

    Each frame is folded into the latent belief by one Kalman step of the model's LDS (with the
    previous *applied* action); the policy acts on the filtered mean. ``rng`` None: the policy's
    mean. ``record`` (a list) receives the filtered mean of every step. ``smoothing`` > 0: the
    standard-normal draws that the policy's covariance scales are one sequence over the episode,
    filtered over time by a Gaussian of that std in steps and rescaled to unit std
    (:func:`~solar_ros.core.noise.standard_normal_sequence`, as the controller node does).
    """
    belief: list = [None, None]  # (mean, cov), previous applied action
    sequence = (None if rng is None or smoothing <= 0
                else standard_normal_sequence(rng, policy.T, policy.du, smoothing))

    def act(t: int, _true_state: np.ndarray, obs: dict) -> np.ndarray:
        prev = None if t == 0 else belief[0]
        mean, cov = model.filter_step(obs["image"], prev, belief[1])
        noise = None if rng is None else (rng.standard_normal(policy.du) if sequence is None else sequence[t])
        u = np.clip(policy.act(t, mean, noise), low, high)  # rollout clips the same way; filter with what is applied
        belief[0], belief[1] = (mean, cov), u
        if record is not None:
            record.append(mean)
        return u

    return act


def random_actor(rng: np.random.Generator, std: np.ndarray, low: np.ndarray, high: np.ndarray,
                 smoothing: float = 0.0, horizon: int | None = None) -> Callable:
    """Gaussian actions of std ``std`` per dimension (the pretraining policy).

    ``smoothing`` > 0 (needs ``horizon``): the noise sequence is filtered over time by a Gaussian of
    that std (in steps) and rescaled to unit std, as Guided Policy Search smooths its exploration noise:
    white noise of the same std barely moves a damped body, so its images show little of the dynamics.
    """
    if smoothing > 0:
        if horizon is None:
            raise ValueError("smoothed pretraining noise needs the horizon")
        noise = standard_normal_sequence(rng, horizon, len(std), smoothing)
    else:
        noise = None

    def act(t: int, _true_state: np.ndarray, obs: dict) -> np.ndarray:
        n = rng.standard_normal(len(std)) if noise is None else noise[t]
        return np.clip(std * n, low, high)
    return act


# ================================================================================================
# learning: the iteration step and the model refit (shared with the model fitting node)


def task_action_weights(env, cfg: SolarConfig) -> np.ndarray | None:
    """The task's action penalty as weights on the actions (``action_cost='task'``), else None (learned)."""
    return (env.cost_action / env.action_scale**2) if cfg.action_cost == "task" else None


def task_distance_link(env, cfg: SolarConfig) -> DistanceLink | None:
    """The task's cost form as a function of the squared distance (``cost_fit`` 'distance' or 'readout'),
    else None."""
    if cfg.cost_fit not in ("distance", "readout"):
        return None
    return DistanceLink(l2=float(env.cost_l2), l1=float(env.cost_l1), alpha=float(StateDistanceCost.alpha))


def latent_diagnostics(latents: np.ndarray, data: RolloutData, cost,
                       probe_groups: dict[str, list[int]] | None = None,
                       hand: tuple[list[int], np.ndarray] | None = None) -> dict[str, float]:
    """Diagnostics of the latent on the rollouts ``data`` (``latents``: their latent trajectories), for the
    ``extra`` of the pretraining and the iteration rows (and the node's fit metrics): how much of the
    observed cost the latent cost explains (``cost_r2``) and, where the rollouts carry true states and
    ``probe_groups`` is given, linear probes from the latent to those states (``probe_<group>``: R^2 on
    the last quarter of the rollouts, held out from the probe's regression; see :mod:`..probes`).
    ``hand`` (the end-effector's state indices, the goal): also how the learned cost ranks the frames
    against their distance to the goal (``cost_rank_corr``, ``cost_min_distance``, ``cost_min_ideal``)."""
    out = {"cost_r2": cost_r2(latents, data, cost)}
    if probe_groups and data.states is not None and data.N >= 2:
        out.update(probe_report(latents, data.states, probe_groups))
    if hand is not None and data.states is not None:
        state_cost = cost.value(latents, np.zeros_like(data.actions))
        out.update(cost_ranking_report(state_cost, data.states[..., list(hand[0])], hand[1]))
    return out


def pretraining_diagnostics(model: LatentModel, data: RolloutData, buffer_size: int,
                            probe_groups: dict[str, list[int]], hand: tuple[list[int], np.ndarray],
                            success_threshold: float) -> dict[str, float]:
    """The pretraining row's diagnostics (the in-process loop's and the fitting node's): those of
    :func:`latent_diagnostics` on the newest ``buffer_size`` rollouts of ``data`` and, where they carry
    true states, how much of the workspace they covered (``coverage_*``, cells of ``success_threshold``)."""
    buffer = data.last(buffer_size)
    out = latent_diagnostics(model.smooth(buffer), buffer, latent_cost(model, data.T), probe_groups, hand)
    if data.states is not None:
        out.update(coverage_report(data.states[..., hand[0]], hand[1], success_threshold))
    return out


def heldout_diagnostics(model: LatentModel, seen: RolloutData, new: RolloutData, cost,
                        probe_groups: dict[str, list[int]] | None = None) -> dict[str, float]:
    """The latent on rollouts the model was not fitted on (``new``, before any refit on them): the cost
    R^2 there (``heldout_cost_r2``) and probes fitted on ``seen`` (rollouts the model was fitted on) and
    scored on ``new`` (``heldout_probe_<group>``). What generalises here is what the policy can use."""
    new_latents = model.smooth(new)
    out = {"heldout_cost_r2": cost_r2(new_latents, new, cost)}
    if probe_groups and seen.states is not None and new.states is not None:
        seen_latents = model.smooth(seen)
        flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
        for name, cols in probe_groups.items():
            y_new = flat(new.states[..., cols])
            r2 = linear_probe(flat(seen_latents), flat(seen.states[..., cols]), flat(new_latents), y_new)
            sst = np.sum((y_new - y_new.mean(0)) ** 2, axis=0)
            ok = np.isfinite(r2)
            out[f"heldout_probe_{name}"] = (float(1.0 - np.sum((1.0 - r2[ok]) * sst[ok]) / np.sum(sst[ok]))
                                            if ok.any() else math.nan)
    return out


def dynamics_prior(model: LatentModel, latents: np.ndarray, buffer: RolloutData, cfg: SolarConfig):
    """The prior of the per-step dynamics fits on ``latents`` (N, T, dx) of ``buffer``
    (``cfg.dynamics_prior``): the model's LDS posterior, or a Gaussian mixture fitted afresh to these
    latents' transitions (seed 0: the same latents give the same prior), each ``prior_strength``
    pseudo-rollouts strong."""
    if cfg.dynamics_prior == "gmm":
        return GMMPrior(max_samples=len(latents), strength=cfg.prior_strength, seed=0).update(latents, buffer.actions)
    return model.lds.as_prior(cfg.prior_strength)


def check_cost_inputs(cfg: SolarConfig, buffer: RolloutData, hand: tuple[list[int], np.ndarray] | None,
                      distance_link: DistanceLink | None) -> None:
    """ValueError where ``cfg.cost_fit`` needs what is not given (:func:`iteration_cost`)."""
    if cfg.cost_fit in ("distance", "readout") and distance_link is None:
        raise ValueError(f"cost_fit={cfg.cost_fit!r} needs the task's distance_link (task_distance_link)")
    if cfg.cost_fit == "readout" and (hand is None or buffer.states is None):
        raise ValueError("cost_fit='readout' needs the rollouts' true states and the positions the cost "
                         "compares (hand)")
    if cfg.cost_fit == "readout":
        spread_points(hand[1], cfg.readout_point_scale)  # a task without several 3-D points: ValueError
        if cfg.approach_height > 0:
            approach_goal(hand[1], buffer.T, cfg.approach_height, cfg.approach_fraction)  # nor 3-D points
    if cfg.cost_fit == "labels" and buffer.labels is None:
        raise ValueError("cost_fit='labels' needs rollouts with success labels (reward='labels')")


def iteration_cost(model: LatentModel, latents: np.ndarray, buffer: RolloutData, cfg: SolarConfig,
                   action_weights: np.ndarray | None = None, hand: tuple[list[int], np.ndarray] | None = None,
                   distance_link: DistanceLink | None = None, metrics: dict | None = None,
                   history: RolloutData | None = None) -> QuadraticCost:
    """The latent cost an iteration minimises (``cfg.cost_fit``), on ``latents`` (N, T, dx) of ``buffer``: the
    model's learned cost, or one fitted to the buffer (through the task's ``distance_link`` for 'distance' and
    'readout', the latter on the positions ``hand`` names in the buffer's true states; the success model of
    'labels' to ``history``, every episode so far, where ``cfg.label_history`` and it is given); ``action_weights``:
    the task's action penalty instead of the learned one. Unweighted over the steps (see ``cfg.step_weights``).
    ``metrics`` (a dict) receives the readout's R^2 where there is one."""
    check_cost_inputs(cfg, buffer, hand, distance_link)
    if cfg.cost_fit == "local":
        return local_latent_cost(latents, buffer, action_weights)
    if cfg.cost_fit == "distance":
        return distance_latent_cost(latents, buffer, action_weights, distance_link)
    if cfg.cost_fit == "labels":
        if cfg.label_history and history is not None and history.N > buffer.N:
            buffer, latents = history, step_latents(model, history, cfg)
        return labels_latent_cost(latents, buffer, action_weights, cfg.label_window, cfg.label_ridge, metrics)
    if cfg.cost_fit == "readout":
        idx, goal = hand
        if cfg.approach_height > 0:
            goal = approach_goal(goal, buffer.T, cfg.approach_height, cfg.approach_fraction)
        cost, r2 = readout_latent_cost(latents, buffer, action_weights, distance_link, idx, goal,
                                       near_scale=cfg.readout_near_scale, point_scale=cfg.readout_point_scale)
        if metrics is not None:
            metrics["readout_r2"] = r2
        return cost
    return latent_cost(model, buffer.T, action_weights)


def step_latents(model: LatentModel, data: RolloutData, cfg: SolarConfig) -> np.ndarray:
    """The latent trajectories (N, T, dx) an iteration works on (``cfg.dynamics_latents``: smoothed or filtered)."""
    return model.smooth(data) if cfg.dynamics_latents == "smoothed" else model.filtered_means(data)


def solar_step(model: LatentModel, policy: LinearGaussianPolicy, buffer: RolloutData, step: StepState,
               cfg: SolarConfig, action_weights: np.ndarray | None = None,
               probe_groups: dict[str, list[int]] | None = None, step_costs: np.ndarray | None = None,
               hand: tuple[list[int], np.ndarray] | None = None, distance_link: DistanceLink | None = None,
               history: RolloutData | None = None, successes: np.ndarray | None = None, iteration: int | None = None
               ) -> tuple[LinearGaussianPolicy, StepState, dict[str, float]]:
    """SOLAR's LQR-FLM iteration on the rollouts ``buffer`` (the last ``buffer_size``).

    Their latent trajectories (``cfg.dynamics_latents``: smoothed or filtered) -> per-step dynamics
    with the model's LDS posterior or a mixture over the latents as prior (:func:`dynamics_prior`) -> the model's
    latent cost (``cfg.cost_fit``: the model's, or one fitted to ``buffer``, through the task's
    ``distance_link`` for 'distance' and 'readout', the latter on the positions ``hand`` names in the
    buffer's true states; ``action_weights``: the task's action penalty instead of the learned one) -> the
    step rule (``adapt_step``, or ``measured_step`` on ``step_costs`` (N, T), the per-step costs of
    ``policy``'s newest episodes) -> the LQR-FLM update (``kl_step``; with ``kl_warmup``, the bound of
    ``iteration``, 1 the first after the pretraining, :meth:`SolarConfig.kl_bound`). Both the update and the measured
    step weight the steps by ``cfg.step_weights`` (a heavier last step). ``successes`` (N,): whether each of
    those episodes met the task's success criterion, for the policy that succeeded most often
    (:func:`~solar_ros.algos.common.track_best`; needed with ``final_policy='best_success'``). Returns the new
    policy, the step state for the next iteration and the diagnostics (for the iteration's log row; ``probe_groups``,
    ``hand``: see :func:`latent_diagnostics`).
    """
    check_cost_inputs(cfg, buffer, hand, distance_link)
    if cfg.kl_warmup and iteration is None:
        raise ValueError("kl_warmup needs the iteration's number")
    metrics: dict[str, float] = {}
    weights = cfg.step_weights(buffer.T)
    if cfg.final_policy == "best_success" and (successes is None or step_costs is None):
        raise ValueError("final_policy='best_success' needs the costs and success flags of the policy's episodes")
    if cfg.measured_step and step_costs is None:
        raise ValueError("measured_step needs the costs of the policy's episodes")
    episode_costs = None if step_costs is None else np.asarray(step_costs, dtype=np.float64) @ weights
    if successes is not None and episode_costs is not None:
        step = track_best(policy, episode_costs, successes, step)
        metrics["best_success"] = step.best_success
    if cfg.measured_step:
        policy, step, reverted = measured_step(policy, episode_costs, step, cfg.measured_step_z)
        metrics.update({"reverted": float(reverted), "anchor_cost": step.anchor_cost})
    latents = step_latents(model, buffer, cfg)
    cost = iteration_cost(model, latents, buffer, cfg, action_weights, hand, distance_link, metrics, history)
    recent = slice(-cfg.step_rollouts if cfg.step_rollouts else None, None)  # the rollouts LQR-FLM fits on
    new_policy, step, info = lqr_flm_step(policy, latents[recent], buffer.actions[recent],
                                          dynamics_prior(model, latents, buffer, cfg), cost.weighted(weights), step,
                                          kl_step=cfg.kl_bound(iteration) if cfg.kl_warmup else cfg.kl_step,
                                          adapt_step=cfg.adapt_step)
    if info.predicted_improvement is not None:
        metrics.update({"predicted_improvement": info.predicted_improvement,
                        "actual_improvement": info.actual_improvement})
    metrics.update({"kl": info.kl, "kl_target": info.kl_target, "eta": info.eta, "step_mult": info.step_mult,
                    "predicted_cost": info.expected_cost,
                    **latent_diagnostics(latents, buffer, cost, probe_groups, hand)})
    return new_policy, step, metrics


def evaluation_episodes(env, model: LatentModel, policy: LinearGaussianPolicy, seed: int, goal: np.ndarray,
                        n: int) -> list[Episode]:
    """The run's noise-free evaluation: ``policy``'s mean on the first ``n`` evaluation episodes of ``seed``
    (the task's own start states, ``goal``), filtered online by ``model``."""
    low, high = env.action_space.low, env.action_space.high
    return _evaluation(env, lambda i: latent_actor(model, policy, None, low, high), seed, goal, n)


def _evaluation(env, actor_for: Callable[[int], Callable], seed: int, goal: np.ndarray, n: int) -> list[Episode]:
    """The first ``n`` evaluation episodes of ``seed`` (the task's own start states, ``goal``), episode i acted in by
    ``actor_for(i)``."""
    return [rollout(env, actor_for(i), seed=derive_seed(seed, EVAL, 0, i), options={"goal": goal, "wide_start": False},
                    record_images=True) for i in range(n)]


def mpc_evaluation_episodes(env, model: LatentModel, plan: MPCPlan, cfg: SolarConfig, seed: int,
                            goal: np.ndarray, n: int) -> list[Episode]:
    """The MPC ablation's noise-free evaluation: MPC on ``plan`` (no exploration noise) on the episodes
    :func:`evaluation_episodes` uses, filtered online by ``model``."""
    low, high = env.action_space.low, env.action_space.high
    return _evaluation(env, lambda i: mpc_actor(model, plan, cfg, env.action_scale, low, high,
                                                np.random.default_rng(derive_seed(seed, PLAN, EVAL, i))),
                       seed, goal, n)


def final_policy(policy: LinearGaussianPolicy, step: StepState, cfg: SolarConfig) -> LinearGaussianPolicy:
    """The policy a run ends with (``cfg.final_policy``), given the last update ``policy`` and the step
    state after it: with 'best_measured' the measured step's anchor (the policy whose rollouts cost
    least so far), with 'best_success' the policy whose rollouts succeeded most often, else ``policy``. The
    in-process loop evaluates it; the fitting node publishes it after the trainer's last iteration."""
    if cfg.final_policy == "best_measured" and step.anchor is not None:
        return step.anchor
    if cfg.final_policy == "best_success" and step.best is not None:
        return step.best
    return policy


def reexpress_policy(policy: LinearGaussianPolicy, old_latents: np.ndarray, new_latents: np.ndarray,
                     ridge: float = 1e-6) -> LinearGaussianPolicy:
    """The same controller in a refitted model's latent coordinates.

    Fits one affine map old ≈ P new + p over every (old, new) latent pair of the same frames
    (N, T, dx each) and returns K' = K P, k' = K p + k (the noise is unchanged).
    """
    P, p = latent_map(old_latents, new_latents, ridge)
    return LinearGaussianPolicy(policy.K @ P, np.einsum("tij,j->ti", policy.K, p) + policy.k, policy.cov)


def latent_map(old_latents: np.ndarray, new_latents: np.ndarray, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """The affine map old ≈ P new + p (least squares over every frame's pair of latents, (N, T, dx) each)."""
    old = old_latents.reshape(-1, old_latents.shape[-1])
    new = new_latents.reshape(-1, new_latents.shape[-1])
    Z = np.hstack([new, np.ones((len(new), 1))])
    W = np.linalg.solve(Z.T @ Z + ridge * len(Z) * np.eye(Z.shape[1]), Z.T @ old)  # (dx+1, dx_old)
    return W[:-1].T, W[-1]


def map_r2(old_latents: np.ndarray, new_latents: np.ndarray) -> float:
    """How much of the old latents' variance the affine map from the new ones explains (R^2 over all coordinates):
    1 when a refit only moved the coordinates affinely, so that a re-expressed policy acts as before."""
    P, p = latent_map(old_latents, new_latents)
    old = old_latents.reshape(-1, old_latents.shape[-1])
    residual = old - (new_latents.reshape(-1, new_latents.shape[-1]) @ P.T + p)
    total = np.sum((old - old.mean(axis=0)) ** 2)
    return float(1.0 - np.sum(residual ** 2) / total) if total > 0 else 1.0


def refit(model: LatentModel, data: RolloutData, buffer: RolloutData, policy: LinearGaussianPolicy, step: StepState,
          steps: int, seed: int, on_update: FitHook | None = None
          ) -> tuple[LinearGaussianPolicy, StepState, dict[str, float]]:
    """Refit ``model`` on ``data`` (``steps`` more gradient steps) and re-express ``policy`` in its new
    latent coordinates (fitted on the smoothed latents of ``buffer`` before and after). The step state
    forgets the last update, whose predictions were in the old coordinates. Returns the policy, the
    step state and the fit's loss terms, with how well the affine map explains the old latents (``reexpress_r2``)."""
    old_latents = model.smooth(buffer)
    terms = model.fit(data, steps, seed, on_update=on_update)
    new_latents = model.smooth(buffer)
    policy = reexpress_policy(policy, old_latents, new_latents)
    terms = {**terms, "reexpress_r2": map_r2(old_latents, new_latents)}
    step = step.without_previous()
    if step.anchor is not None:  # the measured-step anchor, in the same new coordinates
        step = replace(step, anchor=reexpress_policy(step.anchor, old_latents, new_latents))
    if step.best is not None:  # likewise the policy that succeeded most often
        step = replace(step, best=reexpress_policy(step.best, old_latents, new_latents))
    return policy, step, terms


# ================================================================================================
# the loop



def train(task: str, seed: int, out: Path | None = None, episodes: int | None = None, goal=None,
          progress: bool = True, resume: bool = False, config: SolarConfig | None = None,
          method: str = "solar", pretraining_from: Path | None = None) -> RunResult:
    """Learn ``task`` from images with SOLAR (``method='solar'``), the VAE ablation (``'vae'``) or the MPC
    ablation (``'solar_mpc'``, :mod:`.mpc`: the same loop, actions by MPC on the cost instead of a policy).

    ``episodes``: total training-episode budget (pretraining included); it sets the number of
    iterations. ``resume``: continue from ``out/checkpoint.pt`` when it exists (same task, seed,
    method and settings), giving the result an uninterrupted run would have. ``pretraining_from``: a run
    directory whose pretraining (rollouts and fitted model) this run takes instead of doing its own; it must
    differ from this run only in settings the iterations read (:func:`~.persistence.load_pretraining`), and
    the result is the one this run would have had from scratch (its wall time includes the other run's
    pretraining). Writes summary.json, learning_curve.png, the checkpoints, the rollouts (``data/``) and
    TensorBoard scalars (``tb/``, when tensorboard is installed) to ``out``.
    """
    if method not in MODEL_CLASSES:
        raise ValueError(f"unknown method {method!r}; use one of {sorted(MODEL_CLASSES)}")
    mpc = method == MPC_METHOD
    cfg = config or TASK_DEFAULTS.get(task, SolarConfig())
    if episodes is not None:
        if episodes < cfg.pretrain_episodes + cfg.rollouts_per_iteration:
            raise ValueError(f"an episode budget of {episodes} does not cover the {cfg.pretrain_episodes} pretraining "
                             f"episodes plus one iteration of {cfg.rollouts_per_iteration}")
        iterations = (episodes - cfg.pretrain_episodes) // cfg.rollouts_per_iteration
        cfg = SolarConfig(**{**asdict(cfg), "iterations": iterations})
    if resume and out is None:
        raise ValueError("resume=True needs the run's output directory (out)")
    torch.set_num_threads(cfg.num_threads)
    clock = Stopwatch()
    out = None if out is None else Path(out)

    env_kwargs = {} if cfg.image_size is None else {"image_size": cfg.image_size}
    env = make(task, image_obs=True, goal=goal, **env_kwargs)
    env.reset(seed=seed)  # fixes the goal for the whole run (drawn from the seed unless given)
    goal = env.goal.copy()
    T, du = env.horizon, env.action_dim
    low, high = env.action_space.low, env.action_space.high
    image_size = env.image_shape[0]
    action_weights = task_action_weights(env, cfg)
    distance_link = task_distance_link(env, cfg)
    probe_groups = state_groups(env.state_names, env.ee_pos_idx)
    hand = (list(env.ee_pos_idx), goal)
    if cfg.cost_fit == "readout":
        spread_points(goal, cfg.readout_point_scale)  # refuse a point scale the task's cost has no points for
        if cfg.approach_height > 0:
            approach_goal(goal, T, cfg.approach_height, cfg.approach_fraction)  # likewise a raised goal
    identity = {"task": task, "seed": int(seed), "method": method, "goal": goal.tolist(), "config": asdict(cfg)}

    def collect(actor_for: Callable[[int], Callable], phase: int, it: int, n: int) -> list[Episode]:
        return [rollout(env, actor_for(i), seed=derive_seed(seed, phase, it, i), record_images=True,
                        options={"goal": goal, "wide_start": phase == PRETRAIN and cfg.pretrain_wide(i)})
                for i in range(n)]

    def as_data(episodes: list[Episode], phase: int, it: int) -> RolloutData:
        """The rollouts as the model sees them; on sparse labels, the scripted person's labels and the costs they
        give instead of the task's (labels.py)."""
        data = RolloutData.from_episodes(episodes)
        if cfg.reward != "labels":
            return data
        rngs = [np.random.default_rng(derive_seed(seed, LABEL, phase, it, i)) for i in range(len(episodes))]
        labels = scripted_labels(np.stack([e.successes for e in episodes]), cfg.label_delay, cfg.label_miss_rate,
                                 rngs)
        return replace(data, costs=label_costs(labels, cfg.label_window), labels=labels)

    # --- state that a checkpoint restores -----------------------------------------------------------
    torch.manual_seed(derive_seed(seed, FIT, 0, 0))
    model = MODEL_CLASSES[method](image_size, du, cfg, readout_idx=list(env.ee_pos_idx))
    checkpoint = None if out is None else out / CHECKPOINT_NAME
    start_iteration = 1
    data_files: list[str] = []
    rows: list[IterationLog] = []
    policy = initial_policy(T, cfg.latent_dim, du, cfg.init_noise * env.action_scale)
    step = StepState()
    keep_own = cfg.final_policy_model == "own" and not mpc
    own: tuple[LatentModel, LinearGaussianPolicy, int] | None = None  # the best policy with the model it acted through
    elapsed_before = 0.0
    data: RolloutData | None = None
    taken_pretraining: IterationLog | None = None  # the pretraining row of the run started from
    resumed = bool(resume and checkpoint.is_file())
    if resumed:
        state = load_run_checkpoint(checkpoint, model, identity)
        torch.set_rng_state(torch.from_numpy(np.asarray(state["torch_rng"])))
        start_iteration = state["iteration"] + 1
        data_files, rows = state["data_files"], [IterationLog(**r) for r in state["rows"]]
        policy, step = policy_from_arrays("policy", state), StepState.from_arrays(state)
        elapsed_before = state["elapsed_s"]
        data = load_data(out, data_files)
        if keep_own:
            twin = copy_model(model)
            kept = load_own_policy(out, twin)
            if kept is None and step.best is not None:  # written before the checkpoint that counts its best
                raise ValueError(f"cannot resume from {checkpoint}: its best policy's model {BEST_CHECKPOINT_NAME} is "
                                 "missing (final_policy_model='own')")
            own = None if kept is None else (twin, *kept)
        log.info("resuming %s/%s seed %d after iteration %d", task, method, seed, state["iteration"])
    elif pretraining_from is not None:
        state, data = load_pretraining(Path(pretraining_from), model, identity)
        torch.set_rng_state(torch.from_numpy(np.asarray(state["torch_rng"])))
        row = state["rows"][0]
        extra = {**row["extra"], "pretraining_from": str(pretraining_from)}
        taken_pretraining = IterationLog(**{**row, "extra": extra})
        data_files.append(save_data(out, "pretrain", data))
        elapsed_before = state["elapsed_s"]
        log.info("starting %s/%s seed %d from the pretraining of %s", task, method, seed, pretraining_from)
    elif resume:
        log.warning("no checkpoint in %s: starting from scratch", out)

    writer = _tensorboard(out, purge_step=start_iteration)
    bar = tqdm(total=cfg.iterations + 1, initial=start_iteration if resumed else 0,
               desc=f"{task}/{method}", disable=not progress, unit="iter")

    def report(row: IterationLog) -> None:
        rows.append(row)
        line = format_table([row]).splitlines()
        (tqdm.write if progress else print)("\n".join(line if len(rows) == 1 else line[2:]))
        if diagnostics_line(row.extra):
            (tqdm.write if progress else print)("    " + diagnostics_line(row.extra))
        if "model_fit_s" in row.extra:
            (tqdm.write if progress else print)(f"    model fit: {row.extra['model_fit_s']:.1f} s, peak resident "
                                                f"memory {row.extra['model_fit_peak_mb']:.0f} MB")
        bar.set_postfix(cost=f"{row.mean_cost:.3g}", dist=f"{row.final_distance:.3f}",
                        success=f"{row.success_rate:.0%}")
        if writer is not None:
            for key in ("mean_cost", "final_distance", "success_rate"):
                writer.add_scalar(f"rollouts/{key}", getattr(row, key), row.iteration)
            for key, value in row.extra.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(f"train/{key}", value, row.iteration)
            writer.flush()

    def checkpoint_now(iteration: int) -> None:
        if checkpoint is None:
            return
        loop_state = {
            **identity, "iteration": iteration, "data_files": data_files, "rows": [asdict(r) for r in rows],
            **policy_arrays("policy", policy), **step.arrays(),
            "torch_rng": torch.get_rng_state().numpy(), "elapsed_s": elapsed_before + clock(),
        }
        save_run_checkpoint(checkpoint, model, loop_state)
        if iteration == 0:
            save_run_checkpoint(checkpoint.parent / PRETRAIN_CHECKPOINT_NAME, model, loop_state)

    # --- 1. pretraining: random actions, then the model fit --------------------------------------------
    if data is None:
        std = cfg.pretrain_noise * env.action_scale
        def random_actors(i: int) -> Callable:
            rng = np.random.default_rng(derive_seed(seed, NOISE, 0, i))
            return random_actor(rng, std, low, high, cfg.pretrain_smoothing, T)

        episodes_now = collect(random_actors, PRETRAIN, 0, cfg.pretrain_episodes)
        data = as_data(episodes_now, PRETRAIN, 0)
        data_files.append(save_data(out, "pretrain", data))
        with FitMeter() as fit:
            terms = model.fit(data, cfg.pretrain_steps, derive_seed(seed, FIT, 0, 1), progress=progress)
        diagnostics = pretraining_diagnostics(model, data, cfg.buffer_size, probe_groups, hand, env.success_threshold)
        stats = summarize(episodes_now)
        report(IterationLog(0, data.N, data.N * T, stats["mean_cost"], stats["final_distance"], stats["success_rate"],
                            elapsed_before + clock(), {"phase": "pretrain", **fit.metrics("model_fit"), **diagnostics,
                                                       **{f"model_{k}": v for k, v in terms.items()}}))
        bar.update(1)
        checkpoint_now(0)
    elif taken_pretraining is not None:
        report(taken_pretraining)
        bar.update(1)
        checkpoint_now(0)

    # --- 2. iterations: roll out on the filtered latent, fit dynamics, LQR-FLM ---------------------------
    # (the MPC ablation: roll out with MPC on the cost SOLAR's step would minimise, no policy update)
    plan: MPCPlan | None = None
    for it in range(start_iteration, cfg.iterations + 1):
        if mpc:
            if plan is None:  # the first iteration, or one resumed: the plan the last iteration ended with
                plan = mpc_plan(model, data.last(cfg.buffer_size), cfg, action_weights, hand, distance_link, data)

            def actors(i: int, it: int = it) -> Callable:
                return mpc_actor(model, plan, cfg, env.action_scale, low, high,
                                 np.random.default_rng(derive_seed(seed, PLAN, it, i)),
                                 np.random.default_rng(derive_seed(seed, NOISE, it, i)))
        else:
            def actors(i: int, it: int = it) -> Callable:
                return latent_actor(model, policy, np.random.default_rng(derive_seed(seed, NOISE, it, i)), low, high,
                                    smoothing=cfg.policy_smoothing)

        collector = (copy_model(model), policy) if keep_own else None  # what collects this iteration's rollouts
        episodes_now = collect(actors, ITERATION, it, cfg.rollouts_per_iteration)
        new_data = as_data(episodes_now, ITERATION, it)
        data_files.append(save_data(out, f"iter_{it:03d}", new_data))
        extra: dict = {"phase": "iteration",
                       **heldout_diagnostics(model, data.last(cfg.buffer_size), new_data, latent_cost(model, T),
                                             probe_groups)}
        data = data + new_data
        buffer = data.last(cfg.buffer_size)

        if cfg.refit_every and it % cfg.refit_every == 0:
            with FitMeter() as fit:
                policy, step, terms = refit(model, data, buffer, policy, step, cfg.refit_steps,
                                            derive_seed(seed, FIT, it, 0))
            extra.update({**fit.metrics("model_fit"),
                          **{f"model_{k}": v for k, v in terms.items()}})

        if mpc:
            plan, metrics = mpc_step(model, buffer, cfg, action_weights, hand, distance_link, probe_groups,
                                     history=data)
        else:
            best_before = (step.best_success, step.best_cost)
            policy, step, metrics = solar_step(model, policy, buffer, step, cfg, action_weights, probe_groups,
                                               step_costs=new_data.costs, hand=hand, distance_link=distance_link,
                                               history=data, successes=np.array([e.success for e in episodes_now]),
                                               iteration=it)
            if collector is not None and (step.best_success, step.best_cost) != best_before:
                own = (*collector, it)
                save_own_policy(out, *own)
        extra.update(metrics)
        stats = summarize(episodes_now)
        finite_or_raise("mean cost", stats["mean_cost"])
        report(IterationLog(it, data.N, data.N * T, stats["mean_cost"], stats["final_distance"], stats["success_rate"],
                            elapsed_before + clock(), extra))
        bar.update(1)
        checkpoint_now(it)
    bar.close()

    # --- 3. evaluation: the final policy's mean (or MPC without noise) on fresh episodes ----------------------
    if mpc:
        if plan is None:
            plan = mpc_plan(model, data.last(cfg.buffer_size), cfg, action_weights, hand, distance_link, data)
        evaluation = mpc_evaluation_episodes(env, model, plan, cfg, seed, goal, cfg.eval_episodes)
    else:
        final_pol, eval_model = final_policy(policy, step, cfg), model
        if own is not None:
            eval_model, final_pol = own[0], own[1]
            log.info("evaluating the policy that succeeded most often in training (%.0f%% of its rollouts, iteration "
                     "%d) through the model it acted with", 100 * step.best_success, own[2])
        elif final_pol is not policy and cfg.final_policy == "best_success":
            log.info("evaluating the policy that succeeded most often in training (%.0f%% of its rollouts)",
                     100 * step.best_success)
        elif final_pol is not policy:
            log.info("evaluating the best measured policy (mean episode cost %.4g in training)", step.anchor_cost)
        evaluation = evaluation_episodes(env, eval_model, final_pol, seed, goal, cfg.eval_episodes)
    final = summarize(evaluation)
    if writer is not None:
        for key, value in final.items():
            writer.add_scalar(f"eval/{key}", value, cfg.iterations)
        writer.close()
    n_train = cfg.training_episodes
    result = RunResult(
        task=task, method=method, seed=seed, episodes=n_train, env_steps=n_train * T,
        final_cost=final["mean_cost"], final_distance=final["final_distance"], success_rate=final["success_rate"],
        eval_episodes=cfg.eval_episodes, wall_time_s=elapsed_before + clock(), goal=goal.tolist(), config=asdict(cfg),
        iterations=[asdict(r) for r in rows],
    )
    print(format_table(rows))
    if out is not None:
        result.write(out)
        plot_learning_curve(rows, out / "learning_curve.png", f"{task} / {method} / seed {seed}",
                            env.success_threshold, final)
    return result


def evaluate_saved_run(out: Path, which: str | None = None, episodes: int | None = None) -> dict[str, float]:
    """Evaluate a finished (or interrupted) run's policy again, from its checkpoint in ``out``: ``which``
    'update' (the last LQR-FLM update), 'best_measured' (the measured step's anchor) or 'best_success' (the
    policy whose training rollouts succeeded most often), None: the run's
    own ``final_policy``; on the evaluation episodes :func:`train` uses (the first ``episodes`` of them,
    default the run's ``eval_episodes``). Returns :func:`summarize`'s figures. ValueError when the
    checkpoint is not a SOLAR/VAE run's or has no such policy."""
    from ...models.checkpoint import load_checkpoint

    path = Path(out) / CHECKPOINT_NAME
    ckpt = load_checkpoint(path)
    state = ckpt.extra
    method = state.get("method")
    if method not in MODEL_CLASSES:
        raise ValueError(f"{path} is not a SOLAR or VAE-ablation run's checkpoint (method {method!r})")
    cfg = SolarConfig(**state["config"])
    which = cfg.final_policy if which is None else which
    if which not in ("update", "best_measured", "best_success"):
        raise ValueError(f"which must be 'update', 'best_measured' or 'best_success', got {which!r}")
    n = cfg.eval_episodes if episodes is None else int(episodes)
    if n < 1:
        raise ValueError(f"episodes must be >= 1, got {n}")
    if method == MPC_METHOD and which != "update":
        raise ValueError(f"{path} is an MPC-ablation run: it has no policy but its plans ('update')")
    policy, step = policy_from_arrays("policy", state), StepState.from_arrays(state)
    if which == "best_measured":
        if step.anchor is None:
            raise ValueError(f"{path} has no best measured policy (the run did not use measured_step)")
        policy = step.anchor
    if which == "best_success":
        if step.best is None:
            raise ValueError(f"{path} has no record of its rollouts' successes (a run from before they were kept)")
        policy = step.best
    seed = int(state["seed"])
    env_kwargs = {} if cfg.image_size is None else {"image_size": cfg.image_size}
    env = make(state["task"], image_obs=True, goal=np.asarray(state["goal"], dtype=np.float64), **env_kwargs)
    env.reset(seed=seed)
    model = MODEL_CLASSES[method](env.image_shape[0], env.action_dim, cfg, readout_idx=list(env.ee_pos_idx))
    model.restore(ckpt, path)
    if which == "best_success" and cfg.final_policy_model == "own" and (Path(out) / BEST_CHECKPOINT_NAME).is_file():
        policy = load_own_policy(Path(out), model)[0]  # with the model it acted through
    if method == MPC_METHOD:
        data = load_data(Path(out), state["data_files"])
        plan = mpc_plan(model, data.last(cfg.buffer_size), cfg, task_action_weights(env, cfg),
                        (list(env.ee_pos_idx), env.goal.copy()), task_distance_link(env, cfg), data)
        return summarize(mpc_evaluation_episodes(env, model, plan, cfg, seed, env.goal.copy(), n))
    return summarize(evaluation_episodes(env, model, policy, seed, env.goal.copy(), n))


def train_mpc_ablation(task: str, seed: int, out: Path | None = None, episodes: int | None = None, goal=None,
                       progress: bool = True, resume: bool = False, config: SolarConfig | None = None,
                       pretraining_from: Path | None = None) -> RunResult:
    """The MPC ablation of :func:`train` (:mod:`.mpc`): SOLAR's model, cost and budget, actions by CEM MPC."""
    return train(task, seed, out, episodes, goal, progress, resume, config, method=MPC_METHOD,
                 pretraining_from=pretraining_from)


def train_vae_ablation(task: str, seed: int, out: Path | None = None, episodes: int | None = None, goal=None,
                       progress: bool = True, resume: bool = False, config: SolarConfig | None = None,
                       pretraining_from: Path | None = None) -> RunResult:
    """The VAE ablation of :func:`train`: the same loop with a per-frame VAE latent."""
    return train(task, seed, out, episodes, goal, progress, resume, config, method="vae",
                 pretraining_from=pretraining_from)


def _tensorboard(out: Path | None, purge_step: int):
    """A SummaryWriter under ``out/tb`` when the tensorboard package is installed (optional)."""
    if out is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tb"), purge_step=purge_step)
