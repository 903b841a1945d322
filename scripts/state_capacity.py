#!/usr/bin/env python3
"""How much of the true state must a latent hold for LQR-FLM to learn a task? LQR-FLM on a linear feature y = W x
of the true state, in the shape of SOLAR's copy-state latent.

The policy and the per-step dynamics see z_t = [y_t, y_{t-1}, p_t]: the feature now and one step before (a
copy-state latent holds both: a frame shows positions, two show their velocities) and p_t, the positions the
task's cost compares read linearly out of [y_t, y_{t-1}] (least squares on the first iteration's rollouts, as
SOLAR's readout cost). The cost is the task's, on p_t. Everything else is ``--method lqr_state``'s loop with
the global linear dynamics prior. The features:

* ``block``: the block points (the cost's positions); ``joints``: the joint angles; ``both``: the two;
* ``--pca K``: the first K principal components of those columns over 20 random rollouts (white noise of the
  task's action scale, seeded): the best K-dimensional linear summary, as a K-dimensional latent at best holds.

    python scripts/state_capacity.py --features both --pca 5 --tasks sawyer_stack_0,sawyer_stack_1 --seeds 0-2

Prints the evaluation success (20 noise-free episodes) and final distance per task and seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from benchmark import parse_seeds  # noqa: E402  (this directory)

from solar_ros.algos.common import LQRFLMLoop, initial_policy, rollout, summarize, to_batch  # noqa: E402
from solar_ros.core.cost import ActionCost, StateDistanceCost, SumCost  # noqa: E402
from solar_ros.envs import make  # noqa: E402

FEATURES = ("block", "joints", "both")


def feature_columns(env, features: str) -> list[int]:
    """The true-state columns of ``features`` (see the module docstring)."""
    joints = [i for i, name in enumerate(env.state_names) if name.startswith("q_")]
    if len(joints) != env.action_dim:
        raise ValueError(f"{env.__class__.__name__}: cannot tell its joint angles from its state names")
    block = list(env.ee_pos_idx)
    return {"block": block, "joints": joints, "both": joints + block}[features]


def feature_map(env, columns: list[int], pca: int | None, seed: int = 0) -> np.ndarray:
    """W (k, state_dim): the columns themselves, or their first ``pca`` principal components over 20 random rollouts."""
    if pca is None:
        W = np.zeros((len(columns), env.state_dim))
        W[np.arange(len(columns)), columns] = 1.0
        return W
    if not 1 <= pca <= len(columns):
        raise ValueError(f"--pca must be between 1 and {len(columns)} for these features, got {pca}")
    rng = np.random.default_rng(seed)
    X = np.concatenate([rollout(env, lambda t, x, obs: rng.standard_normal(env.action_dim) * env.action_scale,
                                seed=seed + i).X for i in range(20)])
    centred = X[:, columns] - X[:, columns].mean(0)
    _, _, Vt = np.linalg.svd(centred, full_matrices=False)
    W = np.zeros((pca, env.state_dim))
    W[:, columns] = Vt[:pca]
    return W


def learn(task: str, seed: int, features: str, pca: int | None, iterations: int = 10, rollouts: int = 5,
          eval_episodes: int = 20) -> dict[str, float]:
    """One LQR-FLM run on the features; returns the evaluation's summary (success_rate, final_distance, ...)."""
    env = make(task, image_obs=False)
    env.reset(seed=seed)
    goal = env.goal.copy()
    W = feature_map(env, feature_columns(env, features), pca)
    k, positions = W.shape[0], list(env.ee_pos_idx)
    dz = 2 * k + len(positions)
    rng = np.random.default_rng(seed)
    episode_seeds = iter(rng.integers(0, 2**31 - 1, size=10**6))
    readout: list[np.ndarray] = []  # [P, c] once fitted

    def latent(y: np.ndarray, y_prev: np.ndarray) -> np.ndarray:
        both = np.concatenate([y, y_prev], axis=-1)
        p = both @ readout[0].T + readout[1] if readout else np.zeros(both.shape[:-1] + (len(positions),))
        return np.concatenate([both, p], axis=-1)

    policy = initial_policy(env.horizon, dz, env.action_dim, env.action_scale)
    cost = SumCost(terms=[StateDistanceCost(target=goal, idx=list(range(2 * k, dz)), l2=env.cost_l2, l1=env.cost_l1),
                          ActionCost(weights=env.cost_action / env.action_scale**2)])
    loop = LQRFLMLoop(policy, cost, kl_step=1.0, prior_strength=1.0, adapt_step=True, prior="global",
                      prior_seed=seed)

    def collect(n: int, noise: bool):
        episodes = []
        for _ in range(n):
            previous: list[np.ndarray] = []

            def act(t, x, obs):
                y = W @ x
                z = latent(y, previous[0] if previous else y)
                previous[:] = [y]
                return loop.policy.act(t, z, rng.standard_normal(env.action_dim) if noise else None)
            episodes.append(rollout(env, act, seed=int(next(episode_seeds)), options={"goal": goal}))
        return episodes

    for _ in range(iterations):
        batch = to_batch(collect(rollouts, noise=True))
        Y = batch.X @ W.T
        Y_prev = np.concatenate([Y[:, :1], Y[:, :-1]], axis=1)
        if not readout:
            A = np.concatenate([Y, Y_prev], axis=-1).reshape(-1, 2 * k)
            A = np.c_[A, np.ones(len(A))]
            sol, *_ = np.linalg.lstsq(A, batch.X[..., positions].reshape(len(A), -1), rcond=None)
            readout[:] = [sol[:-1].T, sol[-1]]
        loop.iterate(latent(Y, Y_prev), batch.U)
    return summarize(collect(eval_episodes, noise=False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--features", choices=FEATURES, default="both")
    p.add_argument("--pca", type=int, default=None, help="keep this many principal components (default: all columns)")
    p.add_argument("--tasks", default="sawyer_stack_0,sawyer_stack_1")
    p.add_argument("--seeds", default="0-2")
    args = p.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        for task in args.tasks.split(","):
            rows = [learn(task, seed, args.features, args.pca) for seed in seeds]
            cells = ", ".join(f"{r['success_rate']:.0%} ({r['final_distance']:.3f} m)" for r in rows)
            print(f"{task} features={args.features} pca={args.pca or 'all'} seeds {args.seeds}: {cells}", flush=True)
    except ValueError as err:
        p.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
