#!/usr/bin/env python
"""How long SOLAR's model fitting and its per-frame control step take on this machine.

Prints, at the reference data sizes (40 rollouts x 50 steps of 64x64x3 images, latent 10, 2 actions):

* model fitting: one SVAE gradient step (the run's settings and, with --reference, the reference's
  stride-1 / 2-sequence batches), smoothing all 40 rollouts (what each conjugate LDS update and each
  iteration's latent inference costs), the conjugate MNIW update, the per-step dynamics fit and the
  LQR-FLM update; and from those the model-fitting time of one iteration and of the pretraining;
* with --pretrain-fit, one real pretraining fit (the config's pretrain_steps on pretrain_episodes
  rollouts of random frames), its wall time and peak memory, against the real time of those rollouts;
* the control step a robot runs per frame: encode one 64x64 frame + one Kalman filter update (the
  encoder node's code path) + the policy's matrix-vector product, as p50 / p99 / max latency and
  jitter (std) in milliseconds;
* the MPC ablation's plan per step (``--method solar_mpc``: CEM on the latent LDS, the config's ``mpc_*``
  settings), against the camera's frame period.

    python scripts/bench_solar_speed.py                # the defaults of `solar-ros train --task reacher`
    python scripts/bench_solar_speed.py --reference    # also the reference network settings
    python scripts/bench_solar_speed.py --refit-sizes 140,300,500 --lds-fit-rollouts 0
                                                       # real refits as the data grows, and peak memory
    python scripts/bench_solar_speed.py --task sawyer_stack_1 --precision bfloat16 --pretrain-fit
                                                       # a real pretraining fit, convolutions in bfloat16
    python scripts/bench_solar_speed.py --task sawyer_stack_1 --mpc-only   # the MPC ablation's plan only
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from solar_ros.algos.common import initial_policy
from solar_ros.algos.solar import TASK_DEFAULTS, RolloutData, SVAELatentModel, latent_cost
from solar_ros.algos.solar.mpc import cem_settings
from solar_ros.core import lqr_flm
from solar_ros.core.dynamics import BayesianLDS, fit_dynamics
from solar_ros.core.mpc import CEMController, LinearModel
from solar_ros.envs import make
from solar_ros.models.common import PRECISIONS
from solar_ros.models.svae import StructuredVAE, SVAEConfig
from solar_ros.runtime.latent_encoder import SVAEEncoder
from solar_ros.runtime.resources import FitMeter


def timed(fn, repeats: int) -> np.ndarray:
    """Seconds per call of ``fn`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def gradient_step_time(image_size: int, first_stride: int, batch_size: int, latent_dim: int, T: int,
                       repeats: int, encoder: str = "conv", observed_dim: int | None = None, action_dim: int = 2,
                       keypoints: int = 8, precision: str = "float32") -> float:
    """Median seconds of one SVAE training step (forward, backward, Adam) on ``batch_size`` sequences."""
    torch.manual_seed(0)
    net = StructuredVAE(SVAEConfig(image_size=image_size, latent_dim=latent_dim, first_stride=first_stride,
                                   encoder=encoder, observed_dim=observed_dim, action_dim=action_dim,
                                   keypoints=keypoints, precision=precision))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(batch_size, T, 3, image_size, image_size)
    u = torch.randn(batch_size, T, action_dim)
    c = torch.rand(batch_size, T)

    def step():
        loss = net.loss(x, u, c, beta=1.0)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()

    return float(np.median(timed(step, repeats)))


def random_rollouts(rng: np.random.Generator, n: int, T: int, S: int, du: int) -> RolloutData:
    """``n`` rollouts of ``T`` random SxSx3 frames, actions and costs (what a fit costs does not depend on them)."""
    return RolloutData(rng.integers(0, 256, size=(n, T, S, S, 3), dtype=np.uint8), rng.normal(size=(n, T, du)),
                       rng.random((n, T)))


def timed_fit(model: SVAELatentModel, data: RolloutData, steps: int, seed: int, progress: bool = False
              ) -> tuple[float, float]:
    """Seconds of ``model.fit(data, steps)``, and the peak resident memory (MB) of the process during it
    (:class:`FitMeter`: the fit's own peak, as the runs' logs report it)."""
    with FitMeter() as meter:
        model.fit(data, steps, seed=seed, progress=progress)
    return meter.seconds, meter.peak_mb


def refit_times(cfg, sizes: list[int], T: int, S: int, du: int) -> None:
    """Time one real refit (``cfg.refit_steps`` gradient steps and the closing LDS update) on each number of
    rollouts in ``sizes`` (random frames), with the peak resident memory during each (:class:`FitMeter`)."""
    print(f"\nrefit: {cfg.refit_steps} gradient steps + the closing LDS update, lds_fit_rollouts "
          f"{cfg.lds_fit_rollouts or 'all'}")
    print("rollouts  refit s  peak resident MB (of the refit)")
    rng = np.random.default_rng(1)
    torch.manual_seed(0)
    model = SVAELatentModel(S, du, cfg)
    for n in sorted(sizes):
        seconds, peak_mb = timed_fit(model, random_rollouts(rng, n, T, S, du), cfg.refit_steps, seed=n)
        print(f"{n:8d} {seconds:8.1f} {peak_mb:12.0f}")


def pretrain_fit_time(cfg, T: int, S: int, du: int, step_s: float) -> None:
    """Time one real pretraining fit (``cfg.pretrain_steps`` gradient steps with their LDS updates, on
    ``cfg.pretrain_episodes`` rollouts of ``T`` random frames) against the real time of those rollouts
    (``T`` control steps of ``step_s`` seconds each)."""
    torch.manual_seed(0)
    model = SVAELatentModel(S, du, cfg)
    n = cfg.pretrain_episodes
    data = random_rollouts(np.random.default_rng(2), n, T, S, du)
    seconds, peak_mb = timed_fit(model, data, cfg.pretrain_steps, seed=0, progress=True)
    print(f"\npretraining fit, measured ({cfg.pretrain_steps} steps on {n} rollouts, convolutions in "
          f"{cfg.fit_precision}): {seconds:.0f} s against {n * T * step_s:.0f} s of rollouts "
          f"({n} x {T * step_s:g} s); peak resident memory during the fit {peak_mb:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reacher", help="whose default SolarConfig to measure")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rollouts", type=int, default=40)
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's)")
    parser.add_argument("--step-repeats", type=int, default=5, help="gradient steps timed per setting")
    parser.add_argument("--control-steps", type=int, default=500, help="control steps timed")
    parser.add_argument("--reference", action="store_true", help="also time the reference network settings")
    parser.add_argument("--refit-sizes", default="",
                        help="comma-separated rollout counts: time one real refit (the config's refit_steps) on each")
    parser.add_argument("--lds-fit-rollouts", type=int, default=None,
                        help="rollouts each LDS update smooths in those refits (0: all; default: the config's)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="arithmetic of the convolutions in gradient steps (default: the config's fit_precision)")
    parser.add_argument("--pretrain-fit", action="store_true",
                        help="time one real pretraining fit (minutes) against the real time of its rollouts")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="its gradient steps (default: the config's)")
    parser.add_argument("--pretrain-episodes", type=int, default=None, help="its rollouts (default: the config's)")
    parser.add_argument("--mpc-only", action="store_true", help="time only the MPC ablation's plan per step")
    args = parser.parse_args()

    cfg = TASK_DEFAULTS[args.task]
    overrides = {"lds_fit_rollouts": args.lds_fit_rollouts, "fit_precision": args.precision,
                 "pretrain_steps": args.pretrain_steps, "pretrain_episodes": args.pretrain_episodes}
    try:
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as err:
        parser.error(str(err))
    threads = args.threads or cfg.num_threads
    torch.set_num_threads(threads)
    env = make(args.task, image_obs=False)
    N, T, S, dx, du = args.rollouts, args.horizon, args.image_size, cfg.latent_dim, env.action_dim
    if args.mpc_only:
        print_mpc_plan_times(cfg, dx, du, T, args.control_steps, env.dt)
        return
    print(f"torch {torch.__version__}, {threads} thread(s); task {args.task}; data {N} rollouts x {T} steps of "
          f"{S}x{S}x3, latent {dx}, {du} actions; convolutions of gradient steps in {cfg.fit_precision}")

    # --- model fitting ------------------------------------------------------------------------------
    window = cfg.train_window or T
    step_s = gradient_step_time(S, cfg.first_stride, cfg.batch_size, dx, window, args.step_repeats, cfg.encoder,
                                cfg.observed_dim, du, cfg.keypoints, cfg.fit_precision)
    print(f"\nSVAE gradient step, {cfg.encoder} encoder, first stride {cfg.first_stride}, "
          f"{cfg.batch_size} windows of {window} steps: "
          f"{step_s * 1e3:8.1f} ms ({step_s / (cfg.batch_size * window) * 1e3:.2f} ms per frame)")
    if args.reference:
        ref_s = gradient_step_time(S, 1, 2, dx, T, args.step_repeats, action_dim=du)
        print(f"SVAE gradient step, reference (stride 1, 2 sequences of {T} steps): {ref_s * 1e3:8.1f} ms "
              f"({ref_s / (2 * T) * 1e3:.2f} ms per frame)")

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = SVAELatentModel(S, du, cfg)
    images = rng.integers(0, 256, size=(N, T, S, S, 3), dtype=np.uint8)
    actions = rng.normal(size=(N, T, du))
    stats_s = float(np.median(timed(lambda: model.net.smoothed_stats(images, actions), 2)))
    stats = model.net.smoothed_stats(images, actions)
    rollouts = RolloutData(images, actions, np.zeros((N, T)))
    model.smoothed_stats(rollouts)  # the model keeps each rollout's potentials while the encoder stays
    kept_s = float(np.median(timed(lambda: model.smoothed_stats(rollouts), 3)))
    prior = BayesianLDS.default_prior(dx, du)
    conj_s = float(np.median(timed(
        lambda: prior.posterior(BayesianLDS.sufficient_stats_from_smoother(stats, actions)), 5)))
    lds = prior.posterior(BayesianLDS.sufficient_stats_from_smoother(stats, actions))
    fit_s = float(np.median(timed(
        lambda: fit_dynamics(stats.means, actions, prior=lds.as_prior(cfg.prior_strength)), 5)))
    dynamics = fit_dynamics(stats.means, actions, prior=lds.as_prior(cfg.prior_strength))
    model.lds = lds
    cost = latent_cost(model, T)
    policy = initial_policy(T, dx, du, cfg.init_noise * np.full(du, 0.05))
    lqr_s = float(np.median(timed(lambda: lqr_flm.update(policy, dynamics, cost, kl_step=cfg.kl_step), 3)))
    print(f"smooth {N} rollouts (encode {N * T} frames + Kalman smoother): {stats_s:8.2f} s")
    print(f"smooth them again, potentials kept (same encoder):     {kept_s:8.2f} s")
    print(f"conjugate MNIW update:                                 {conj_s * 1e3:8.2f} ms")
    print(f"per-step dynamics fit with the LDS prior:              {fit_s * 1e3:8.2f} ms")
    print(f"LQR-FLM update (dual search over eta):                 {lqr_s * 1e3:8.2f} ms")

    def fit_time(steps: int, n_rollouts: int) -> float:
        lds_updates = max(1, steps // cfg.lds_update_every) * cfg.lds_update_iters
        return steps * step_s + lds_updates * stats_s * n_rollouts / N

    per_iter_inference = stats_s + fit_s + lqr_s
    print(f"\nper iteration without refit (smooth the buffer + dynamics fit + LQR-FLM): {per_iter_inference:.1f} s")
    if cfg.refit_every:
        print(f"per refit ({cfg.refit_steps} steps on all data, ~{cfg.pretrain_episodes + N} rollouts): "
              f"{fit_time(cfg.refit_steps, cfg.pretrain_episodes + N):.0f} s every {cfg.refit_every} iterations")
    print(f"model fitting per iteration at the reference size ({cfg.refit_steps} steps on {N} rollouts): "
          f"{fit_time(cfg.refit_steps, N):.0f} s")
    print(f"pretraining fit ({cfg.pretrain_steps} steps on {cfg.pretrain_episodes} rollouts): "
          f"{fit_time(cfg.pretrain_steps, cfg.pretrain_episodes):.0f} s")

    if args.refit_sizes:
        refit_times(cfg, [int(n) for n in args.refit_sizes.split(",")], T, S, du)
    if args.pretrain_fit:
        pretrain_fit_time(cfg, T, S, du, env.dt)

    # --- the control step -----------------------------------------------------------------------------
    frames = rng.integers(0, 256, size=(64, S, S, 3), dtype=np.uint8)
    policy = initial_policy(T, dx, du, cfg.init_noise * np.full(du, 0.05))
    policy.K[:] = rng.normal(size=policy.K.shape)
    noise = rng.standard_normal((args.control_steps, du))
    lat = np.empty(args.control_steps)
    # What the encoder node runs per frame (solar_ros.runtime.latent_encoder), then the controller's policy.
    encoder = SVAEEncoder(model.net.eval(), "bench", "")
    u = np.zeros(du)
    for i in range(-20, args.control_steps):  # 20 warm-up steps
        start = time.perf_counter()
        if i % T == 0:
            encoder.end_episode()
            encoder.begin_episode()
        encoded = encoder.encode(frames[i % len(frames)], u)
        u = policy.act(i % T, encoded.mean, noise[max(i, 0)])
        if i >= 0:
            lat[i] = time.perf_counter() - start
    ms = lat * 1e3
    print(f"\ncontrol step ({cfg.encoder} encoder: encode one {S}x{S} frame + Kalman filter update + policy, as "
          f"the encoder and controller nodes run it), {args.control_steps} steps: "
          f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms, "
          f"jitter (std) {ms.std():.2f} ms")

    # --- the MPC ablation's plan per step -------------------------------------------------------------
    print_mpc_plan_times(cfg, dx, du, T, args.control_steps, env.dt)


def print_mpc_plan_times(cfg, dx: int, du: int, T: int, steps: int, dt: float) -> None:
    mpc_ms = mpc_plan_times(cfg, dx, du, T, steps, np.random.default_rng(0)) * 1e3
    print(f"MPC ablation's plan per step (CEM: {cfg.mpc_samples} sequences x {cfg.mpc_iterations} iterations over "
          f"{cfg.mpc_horizon} steps, latent {dx}, {du} actions; the frame's encoding comes on top), "
          f"{steps} steps: p50 {np.percentile(mpc_ms, 50):.2f} ms, p99 {np.percentile(mpc_ms, 99):.2f} "
          f"ms, max {mpc_ms.max():.2f} ms, against {dt * 1e3:.0f} ms per camera frame")


def mpc_plan_times(cfg, dx: int, du: int, T: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds of each of ``steps`` receding-horizon CEM plans (the run's ``mpc_*`` settings) on a random stable
    latent LDS and a random convex cost of the run's sizes, the plan warm-started from step to step."""
    A = np.eye(dx) + 0.01 * rng.normal(size=(dx, dx))
    M = rng.normal(size=(dx + du, dx + du))
    cost = lqr_flm.QuadraticCost.constant(M @ M.T / (dx + du), rng.normal(size=dx + du), 0.0, T)
    ctrl = CEMController(LinearModel(A, 0.1 * rng.normal(size=(dx, du)), np.zeros(dx)), cost, cem_settings(cfg),
                         np.ones(du), -np.ones(du), np.ones(du), np.random.default_rng(0))
    out = np.empty(steps)
    x = rng.normal(size=dx)
    for i in range(-10, steps):  # 10 warm-up steps
        start = time.perf_counter()
        ctrl.act((i % T + T) % T, x)
        if i >= 0:
            out[i] = time.perf_counter() - start
    return out


if __name__ == "__main__":
    main()
