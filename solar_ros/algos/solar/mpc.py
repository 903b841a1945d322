"""The MPC ablation of SOLAR (``solar-ros train --method solar_mpc``).

The paper's ablation: the same learned model (the structured VAE's encoder, its latent dynamics and the latent
cost SOLAR's iteration minimises, ``cost_fit``) and the same data budget, but the actions come from
receding-horizon model-predictive control (:mod:`solar_ros.core.mpc`, the cross-entropy method) that replans on
the filtered latent at every step, instead of LQR-FLM's time-varying linear-Gaussian policy. The loop is SOLAR's
(:func:`~.loop.train`): the same pretraining (a SOLAR run's pretraining can be reused), then per iteration the
plan (:class:`MPCPlan`: dynamics and cost) is made from the buffer as SOLAR's step would make it, rollouts are
collected with MPC (plus a little exploration noise, ``mpc_noise``), and the model is refitted (``refit_every``);
no policy is learned. The dynamics (``mpc_dynamics``) are the model's global LDS (its posterior mean; the
default), or the per-step linear fits on the buffer's latents that LQR-FLM's update uses ('local').
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...core.dynamics import fit_dynamics
from ...core.lqr_flm import QuadraticCost
from ...core.mpc import CEMController, CEMSettings, LinearModel
from .config import SolarConfig
from .models import DistanceLink, LatentModel, RolloutData

METHOD = "solar_mpc"
"""The method name of the ablation (its runs reuse SOLAR's pretraining)."""


@dataclass(frozen=True)
class MPCPlan:
    """What the ablation plans with."""

    dynamics: LinearModel
    """The latent dynamics (one model, or one per step)."""
    cost: QuadraticCost
    """The per-step latent cost, weighted over the steps as SOLAR weights them."""


def cem_settings(cfg: SolarConfig) -> CEMSettings:
    """The planner's settings from the run's ``mpc_*`` settings."""
    return CEMSettings(horizon=cfg.mpc_horizon, samples=cfg.mpc_samples, elites=cfg.mpc_elites,
                       iterations=cfg.mpc_iterations, init_std=cfg.mpc_init_std)


def latent_dynamics(model: LatentModel) -> LinearModel:
    """The model's LDS as mean dynamics x' = A x + B u + c (its posterior mean)."""
    if model.lds is None:
        raise ValueError("the latent model has no fitted LDS yet: fit it before planning with it")
    p = model.lds.mean_params()
    return LinearModel(p.A, p.B, p.c)


def plan_dynamics(model: LatentModel, latents: np.ndarray, buffer: RolloutData, cfg: SolarConfig) -> LinearModel:
    """The dynamics ``cfg.mpc_dynamics`` names: the LDS, or the per-step fits of LQR-FLM's update on ``latents``
    (N, T, dx) of ``buffer`` with its prior (T - 1 models, of the steps 0 -> 1 .. T-2 -> T-1)."""
    if cfg.mpc_dynamics == "global":
        return latent_dynamics(model)
    from .loop import dynamics_prior  # the loop imports this module

    fit = fit_dynamics(latents, buffer.actions, dynamics_prior(model, latents, buffer, cfg))
    dx = latents.shape[-1]
    return LinearModel(fit.Fm[:-1, :, :dx], fit.Fm[:-1, :, dx:], fit.fv[:-1])


def mpc_plan(model: LatentModel, buffer: RolloutData, cfg: SolarConfig, action_weights: np.ndarray | None,
             hand: tuple[list[int], np.ndarray] | None, distance_link: DistanceLink | None,
             history: RolloutData | None = None) -> MPCPlan:
    """The plan from ``buffer`` without the iteration's diagnostics (:func:`mpc_step`)."""
    return mpc_step(model, buffer, cfg, action_weights, hand, distance_link, diagnose=False, history=history)[0]


def mpc_step(model: LatentModel, buffer: RolloutData, cfg: SolarConfig, action_weights: np.ndarray | None,
             hand: tuple[list[int], np.ndarray] | None, distance_link: DistanceLink | None,
             probe_groups: dict[str, list[int]] | None = None, diagnose: bool = True,
             history: RolloutData | None = None) -> tuple[MPCPlan, dict[str, float]]:
    """The ablation's iteration step, in place of :func:`~.loop.solar_step`: on the buffer's latents
    (``dynamics_latents``), the cost SOLAR's iteration would minimise (:func:`~.loop.iteration_cost`, the steps
    weighted as SOLAR weights them; ``history``: every episode so far, for the success model of sparse labels) and
    the dynamics of ``mpc_dynamics``; with ``diagnose``, the iteration row's diagnostics of the latent and of the
    unweighted cost (as SOLAR's step reports them)."""
    from .loop import iteration_cost, latent_diagnostics, step_latents  # the loop imports this module

    latents = step_latents(model, buffer, cfg)
    metrics: dict[str, float] = {}
    cost = iteration_cost(model, latents, buffer, cfg, action_weights, hand, distance_link, metrics, history)
    if diagnose:
        metrics.update(latent_diagnostics(latents, buffer, cost, probe_groups, hand))
    return MPCPlan(plan_dynamics(model, latents, buffer, cfg), cost.weighted(cfg.step_weights(buffer.T))), metrics


def mpc_actor(model: LatentModel, plan: MPCPlan, cfg: SolarConfig, action_scale: np.ndarray, low: np.ndarray,
              high: np.ndarray, plan_rng: np.random.Generator, noise_rng: np.random.Generator | None = None,
              record: list | None = None) -> Callable:
    """An ``act`` for :func:`~solar_ros.algos.common.rollout` that sees only the image: each frame is folded into
    the latent belief by one Kalman step of the model's LDS (with the previous applied action), as SOLAR's
    :func:`~.loop.latent_actor`, and the action is the first of a CEM plan from the filtered mean
    (``plan_rng`` seeds the planner's samples). ``noise_rng``: add Gaussian noise of ``mpc_noise`` x
    ``action_scale`` (the iterations' exploration); None: the plan's action (the evaluation). ``record`` (a
    list) receives each step's planned cost."""
    scale = np.asarray(action_scale, dtype=np.float64)
    controller = CEMController(plan.dynamics, plan.cost, cem_settings(cfg), scale, low, high, plan_rng)
    belief: list = [None, None]

    def act(t: int, _true_state: np.ndarray, obs: dict) -> np.ndarray:
        prev = None if t == 0 else belief[0]
        mean, cov = model.filter_step(obs["image"], prev, belief[1])
        u = controller.act(t, mean)
        if noise_rng is not None and cfg.mpc_noise > 0:
            u = u + cfg.mpc_noise * scale * noise_rng.standard_normal(u.shape)
        u = np.clip(u, low, high)
        belief[0], belief[1] = (mean, cov), u
        if record is not None:
            record.append(controller.last_cost)
        return u

    return act
