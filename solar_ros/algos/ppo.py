"""Model-free baseline: PPO (stable-baselines3) on the camera images alone.

The policy sees only the last ``frame_stack`` camera images of the task (stacked along the channels,
so that it can tell velocities), never the true state; a small CNN suits the 32x32 and 64x64 images
of the tasks. The run's goal is fixed (drawn from the seed unless given), the horizon is the task's,
the reward is -cost of the task's cost model (``info["cost"]``) or, with ``reward='labels'``, a person's sparse
"success now" (1 at the press, 0 elsewhere; a scripted person as SOLAR's), actions in [-1, 1] are mapped onto
the actuator limits. An ``episodes`` budget means ``episodes * T`` environment steps, rounded up to
whole PPO updates of ``episodes_per_update`` episodes. Success is the task's own criterion on
deterministic (mean-action) evaluation episodes.

:func:`episodes_to_success` finds how many training episodes PPO needs to reach a given success
rate (evaluating every ``eval_every`` episodes up to a cap): the data-efficiency comparison with the
model-based methods.

With ``out`` the model is checkpointed every ``checkpoint_every`` episodes (stable-baselines3's own
zip plus a small JSON with the counters and random-number states, each written atomically);
``resume=True`` continues from the last checkpoint and gives the same result as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import math
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from tqdm import tqdm

from ..envs import make
from ..runtime.atomic import atomic_file
from .common import (
    IterationLog,
    RunMismatch,
    RunResult,
    Stopwatch,
    format_table,
    plot_learning_curve,
    write_json_atomic,
)

log = logging.getLogger(__name__)


@dataclass
class PPOConfig:
    """Settings of a PPO run (stable-baselines3's PPO with a small CNN on the images)."""

    episodes: int = 2000
    """Training budget in episodes when the caller gives none."""
    episodes_per_update: int = 10
    """Episodes collected per PPO update (n_steps = episodes_per_update * T)."""
    batch_size: int = 100
    """Minibatch size in environment steps."""
    n_epochs: int = 10
    """Passes over each update's data."""
    learning_rate: float = 3e-4
    gamma: float = 0.98
    """Discount (the episodes last T = 50 steps)."""
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    frame_stack: int = 2
    """Camera images the policy sees at once (the newest last)."""
    image_size: int | None = None
    """Camera image side in pixels; None = the task's default (32 for point, 64 for the arms)."""
    features_dim: int = 64
    """Output size of the CNN features extractor."""
    eval_episodes: int = 20
    """Deterministic evaluation episodes at the end (success rate is measured on them)."""
    checkpoint_every: int = 100
    """Episodes between checkpoints and learning-curve points (rounded to whole updates)."""
    torch_threads: int | None = 1
    """CPU threads torch may use during the run (None: leave torch's setting). PPO acts on one image at
    a time with a small network, where thread hand-offs cost more than they save."""
    reward: str = "dense"
    """'dense': reward = -the task's cost per step. 'labels': the sparse reward SOLAR learns from on
    ``reward='labels'``: 1 at the step a scripted person presses "success now" (once per episode, ``label_delay``
    steps after the task's success criterion first holds, at the last step if that is later; an episode missed
    with probability ``label_miss_rate``), 0 at every other step."""
    label_delay: int = 2
    """With ``reward='labels'``: steps between the task first succeeding and the press."""
    label_miss_rate: float = 0.0
    """With ``reward='labels'``: the probability that the person misses an episode's success."""

    def __post_init__(self) -> None:
        for name in ("episodes", "episodes_per_update", "batch_size", "n_epochs", "frame_stack", "features_dim",
                     "eval_episodes", "checkpoint_every"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"PPOConfig.{name} must be a positive integer, got {value!r}")
        for name in ("learning_rate", "gamma", "gae_lambda", "clip_range", "vf_coef", "max_grad_norm"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"PPOConfig.{name} must be positive and finite, got {value!r}")
        if self.gamma > 1 or self.gae_lambda > 1:
            raise ValueError("PPOConfig.gamma and gae_lambda must be at most 1")
        if self.image_size is not None and (int(self.image_size) != self.image_size or self.image_size < 8):
            raise ValueError(f"PPOConfig.image_size must be None or an integer >= 8, got {self.image_size!r}")
        if self.torch_threads is not None and (int(self.torch_threads) != self.torch_threads or self.torch_threads < 1):
            raise ValueError(f"PPOConfig.torch_threads must be None or a positive integer, got {self.torch_threads!r}")
        if not math.isfinite(self.ent_coef) or self.ent_coef < 0:
            raise ValueError(f"PPOConfig.ent_coef must be >= 0, got {self.ent_coef!r}")
        _check_reward(self.reward, self.label_delay, self.label_miss_rate)


def _check_reward(reward: str, label_delay: int, label_miss_rate: float) -> None:
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    if int(label_delay) != label_delay or label_delay < 0:
        raise ValueError(f"label_delay must be a non-negative integer, got {label_delay!r}")
    if not (math.isfinite(label_miss_rate) and 0.0 <= label_miss_rate < 1.0):
        raise ValueError(f"label_miss_rate must be in [0, 1), got {label_miss_rate!r}")


REWARDS = ("dense", "labels")


TASK_DEFAULTS: dict[str, PPOConfig] = {
    "point": PPOConfig(episodes=2000),
    "reacher": PPOConfig(episodes=4000),
    "sawyer_reach": PPOConfig(episodes=4000),
    "sawyer_push": PPOConfig(episodes=4000, reward="labels"),  # the sparse reward SOLAR learns this task from
}


# --------------------------------------------------------------------------------------------
# The task as PPO sees it


class ImageTaskEnv(gymnasium.Env):
    """A task with image-only observations, actions in [-1, 1] and reward = -cost (or sparse labels).

    Observation: the last ``frame_stack`` images, uint8 (H, W, 3 * frame_stack), the newest in the
    last three channels (at reset the first image fills every slot). Action a in [-1, 1]^du is
    applied as low + (a + 1) / 2 * (high - low). ``episode_log`` holds one record per finished
    episode: total cost, final distance and success (the task's criterion). ``reward='labels'``: the
    reward is 1 at a scripted person's press and 0 elsewhere (:class:`PPOConfig`'s ``reward``); whether
    the person misses an episode is drawn at its reset from the environment's seeded generator.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str, goal, frame_stack: int = 2, reward: str = "dense", label_delay: int = 2,
                 label_miss_rate: float = 0.0, **env_kwargs):
        super().__init__()
        if int(frame_stack) != frame_stack or frame_stack < 1:
            raise ValueError(f"frame_stack must be a positive integer, got {frame_stack!r}")
        _check_reward(reward, label_delay, label_miss_rate)
        self.reward, self.label_delay, self.label_miss_rate = reward, int(label_delay), float(label_miss_rate)
        self._t = 0
        self._press: int | None = None
        self._missed = False
        self.task_env = make(task, image_obs=True, goal=goal, **env_kwargs)
        self.frame_stack = int(frame_stack)
        H, W, C = self.task_env.image_shape
        self.observation_space = spaces.Box(0, 255, (H, W, C * self.frame_stack), dtype=np.uint8)
        du = self.task_env.action_dim
        self.action_space = spaces.Box(-1.0, 1.0, (du,), dtype=np.float32)
        self._low = self.task_env.action_space.low
        self._high = self.task_env.action_space.high
        self._frames: deque = deque(maxlen=self.frame_stack)
        self._episode_cost = 0.0
        self.episode_log: list[dict] = []
        """One record per finished episode: {'cost', 'final_distance', 'success'}."""

    @property
    def horizon(self) -> int:
        return self.task_env.horizon

    def task_action(self, action) -> np.ndarray:
        """The actuator command for a policy action in [-1, 1] (clipped there first)."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return self._low + 0.5 * (a + 1.0) * (self._high - self._low)

    def _observation(self) -> np.ndarray:
        return np.concatenate(list(self._frames), axis=-1)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        obs, info = self.task_env.reset(seed=seed, options=options)
        self._frames.clear()
        for _ in range(self.frame_stack):
            self._frames.append(obs["image"])
        self._episode_cost = 0.0
        self._t, self._press = 0, None
        self._missed = self.reward == "labels" and bool(self.np_random.random() < self.label_miss_rate)
        return self._observation(), info

    def step(self, action):
        obs, _, terminated, truncated, info = self.task_env.step(self.task_action(action))
        self._frames.append(obs["image"])
        if self.reward == "labels":  # the press comes label_delay steps after success is first seen
            if self._press is None and info["success"]:
                self._press = min(self._t + self.label_delay, self.horizon - 1)
            reward = float(self._press == self._t and not self._missed)
        else:
            reward = -info["cost"]  # costs are primary; PPO maximises reward
        self._t += 1
        self._episode_cost += info["cost"]
        if terminated or truncated:
            self.episode_log.append({"cost": self._episode_cost, "final_distance": info["distance"],
                                     "success": bool(info["success"])})
        return self._observation(), reward, terminated, truncated, info

    def render(self):
        return self.task_env.render()


def _cnn_extractor_class():
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class SmallCNN(BaseFeaturesExtractor):
        """Three strided 'same' convs (16, 32, 32 filters) and one linear layer: for 32x32 to 64x64 images."""

        def __init__(self, observation_space: spaces.Box, features_dim: int = 64):
            super().__init__(observation_space, features_dim)
            channels = observation_space.shape[0]  # channels first (stable-baselines3 transposes images)
            self.cnn = nn.Sequential(
                nn.Conv2d(channels, 16, 5, stride=2, padding=2), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(),
            )
            with torch.no_grad():
                flat = self.cnn(torch.zeros(1, *observation_space.shape)).shape[1]
            self.linear = nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return self.linear(self.cnn(observations))

    return SmallCNN


# --------------------------------------------------------------------------------------------
# One PPO run, advanced in chunks (checkpoints, learning curve, budget search)


class _PPORun:
    """A PPO model with its training environment, advanced ``episodes`` at a time."""

    def __init__(self, task: str, seed: int, goal, cfg: PPOConfig):
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv

        self.task, self.seed, self.cfg = task, int(seed), cfg
        probe = make(task, image_obs=False, goal=goal)
        probe.reset(seed=seed)  # fixes the goal for the whole run (drawn from the seed unless given)
        self.goal = probe.goal.copy()
        self.T = probe.horizon
        self.success_threshold = probe.success_threshold
        sizes = {} if cfg.image_size is None else {"image_size": cfg.image_size}
        reward = dict(reward=cfg.reward, label_delay=cfg.label_delay, label_miss_rate=cfg.label_miss_rate)
        self.train_env = ImageTaskEnv(task, self.goal, cfg.frame_stack, **reward, **sizes)
        self.vec_env = DummyVecEnv([lambda: self.train_env])
        self.eval_env = ImageTaskEnv(task, self.goal, cfg.frame_stack, **sizes)
        self.eval_seeds = np.random.default_rng([self.seed, 1]).integers(0, 2**31 - 1, size=cfg.eval_episodes)
        self.ppo_cls = PPO
        self.model = PPO(
            "CnnPolicy", self.vec_env, learning_rate=cfg.learning_rate, n_steps=cfg.episodes_per_update * self.T,
            batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
            clip_range=cfg.clip_range, ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm,
            policy_kwargs={"features_extractor_class": _cnn_extractor_class(),
                           "features_extractor_kwargs": {"features_dim": cfg.features_dim}},
            seed=self.seed, device="cpu", verbose=0,
        )
        self.chunks = 0
        self.rows: list[IterationLog] = []

    @property
    def episodes(self) -> int:
        """Training episodes so far."""
        return self.model.num_timesteps // self.T

    def advance(self, episodes: int, clock: Stopwatch) -> IterationLog:
        """Train on ``episodes`` more episodes (rounded up to whole updates); log one learning-curve row."""
        updates = max(1, math.ceil(episodes / self.cfg.episodes_per_update))
        # Each chunk starts a fresh episode from its own seed, so an interrupted run resumed from a
        # checkpoint continues exactly as the uninterrupted run does.
        self.vec_env.seed(int(np.random.default_rng([self.seed, 2, self.chunks]).integers(2**31 - 1)))
        self.model._last_obs = None
        start = len(self.train_env.episode_log)
        self.model.learn(updates * self.cfg.episodes_per_update * self.T, reset_num_timesteps=False)
        self.chunks += 1
        done = self.train_env.episode_log[start:]
        row = IterationLog(
            iteration=len(self.rows), episodes=self.episodes, env_steps=self.model.num_timesteps,
            mean_cost=float(np.mean([e["cost"] for e in done])),
            final_distance=float(np.mean([e["final_distance"] for e in done])),
            success_rate=float(np.mean([e["success"] for e in done])), wall_time_s=clock(), extra={"stage": "train"},
        )
        if not math.isfinite(row.mean_cost):
            raise FloatingPointError(f"PPO training cost became {row.mean_cost}: the run diverged")
        self.rows.append(row)
        return row

    def evaluate(self, n: int | None = None) -> dict:
        """Mean cost, final distance and success rate of the deterministic policy on the fixed evaluation seeds."""
        seeds = self.eval_seeds[: (n or len(self.eval_seeds))]
        start = len(self.eval_env.episode_log)
        for s in seeds:
            obs, _ = self.eval_env.reset(seed=int(s))
            done = False
            while not done:
                action, _ = self.model.predict(obs, deterministic=True)
                obs, _, terminated, truncated, _ = self.eval_env.step(action)
                done = terminated or truncated
        records = self.eval_env.episode_log[start:]
        return {"mean_cost": float(np.mean([r["cost"] for r in records])),
                "final_distance": float(np.mean([r["final_distance"] for r in records])),
                "success_rate": float(np.mean([r["success"] for r in records]))}

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, directory: Path, wall_time_s: float) -> None:
        """Write the model (zip) and then the state that points at it, each atomically."""
        directory.mkdir(parents=True, exist_ok=True)
        name = f"ppo_{self.episodes:08d}.zip"
        with atomic_file(directory / name) as f:
            self.model.save(f)
        np_state = np.random.get_state()
        state = {
            "task": self.task, "seed": self.seed, "goal": self.goal.tolist(), "config": _identity(self.cfg),
            "model": name, "chunks": self.chunks, "rows": [asdict(r) for r in self.rows], "wall_time_s": wall_time_s,
            "episode_log": self.train_env.episode_log,
            "torch_rng": torch.get_rng_state().numpy().tolist(),
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        write_json_atomic(directory / "ppo_state.json", state)
        for old in directory.glob("ppo_*.zip"):
            if old.name != name:
                old.unlink()

    def restore(self, directory: Path) -> float | None:
        """Load the last checkpoint in ``directory``; returns the wall time it had used (None: no checkpoint)."""
        path = directory / "ppo_state.json"
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"checkpoint {path} is corrupt ({err})") from err
        mine = {"task": self.task, "seed": self.seed, "goal": self.goal.tolist(), "config": _identity(self.cfg)}
        differ = sorted(k for k in mine if state.get(k) != mine[k])
        if differ:
            raise RunMismatch(f"cannot resume from {directory}: it belongs to a run with other settings "
                              f"({', '.join(differ)} differ)")
        model_path = directory / state["model"]
        if not model_path.is_file():
            raise ValueError(f"checkpoint {path} refers to the missing model file {model_path.name}")
        self.model = self.ppo_cls.load(model_path, env=self.vec_env, device="cpu")
        self.chunks = int(state["chunks"])
        self.rows = [IterationLog(**r) for r in state["rows"]]
        self.train_env.episode_log[:] = state["episode_log"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        name, keys, pos, has_gauss, cached = state["numpy_rng"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        return float(state.get("wall_time_s", 0.0))

    @staticmethod
    def clear(directory: Path) -> None:
        """Remove an earlier run's checkpoint files (a fresh run must never resume from them)."""
        (directory / "ppo_state.json").unlink(missing_ok=True)
        for old in directory.glob("ppo_*.zip"):
            old.unlink()


def _identity(cfg: PPOConfig) -> dict:
    """The settings a checkpoint must share with the run resuming it (the budget may grow)."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("episodes", "eval_episodes", "torch_threads")}


@contextmanager
def _torch_threads(n: int | None):
    """Run with ``n`` torch CPU threads, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------
# Entry points


def train(task: str, seed: int, out: Path | None = None, episodes: int | None = None, goal=None,
          progress: bool = True, resume: bool = False, config: PPOConfig | None = None) -> RunResult:
    """Train PPO on ``task``'s images for ``episodes`` episodes; write summary.json and the plot to ``out``."""
    cfg = config or TASK_DEFAULTS.get(task, PPOConfig())
    if episodes is not None:
        if int(episodes) != episodes or episodes < 1:
            raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
        cfg = PPOConfig(**{**asdict(cfg), "episodes": int(episodes)})
    if resume and out is None:
        raise ValueError("resume=True needs the output directory `out` of the interrupted run")
    with _torch_threads(cfg.torch_threads):
        return _train(task, seed, out, goal, progress, resume, cfg)


def _train(task: str, seed: int, out: Path | None, goal, progress: bool, resume: bool, cfg: PPOConfig) -> RunResult:
    clock = Stopwatch()
    run = _PPORun(task, seed, goal, cfg)
    checkpoint_dir = None if out is None else Path(out) / "checkpoints"
    if resume:
        spent = run.restore(checkpoint_dir)
        if spent is None:
            log.warning("no checkpoint in %s: starting PPO from the beginning", checkpoint_dir)
        else:
            clock.start -= spent  # the wall time of the whole run, interruption excluded
    elif checkpoint_dir is not None and checkpoint_dir.is_dir():
        run.clear(checkpoint_dir)
    chunk = max(1, round(cfg.checkpoint_every / cfg.episodes_per_update)) * cfg.episodes_per_update
    with tqdm(total=cfg.episodes, initial=min(run.episodes, cfg.episodes), desc=f"{task}/ppo", unit="episode",
              disable=not progress) as bar:
        while run.episodes < cfg.episodes:
            before = run.episodes
            row = run.advance(min(chunk, cfg.episodes - run.episodes), clock)
            bar.update(run.episodes - before)
            bar.set_postfix(cost=f"{row.mean_cost:.3g}", dist=f"{row.final_distance:.3f}",
                            success=f"{row.success_rate:.0%}")
            if checkpoint_dir is not None:
                run.save(checkpoint_dir, clock())
    final = run.evaluate()
    result = RunResult(
        task=task, method="ppo", seed=seed, episodes=run.episodes, env_steps=run.model.num_timesteps,
        final_cost=final["mean_cost"], final_distance=final["final_distance"], success_rate=final["success_rate"],
        eval_episodes=cfg.eval_episodes, wall_time_s=clock(), goal=run.goal.tolist(), config=asdict(cfg),
        iterations=[asdict(r) for r in run.rows],
    )
    print(format_table(run.rows))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result.write(out)
        plot_learning_curve(run.rows, out / "learning_curve.png", f"{task} / ppo / seed {seed}",
                            run.success_threshold, final)
    return result


@dataclass
class BudgetSearch:
    """What :func:`episodes_to_success` found."""

    episodes: int | None
    """First training budget whose evaluation reached the target success rate (None: not within the cap)."""
    evaluations: list[dict]
    """Every evaluation: {'episodes', 'success_rate', 'final_distance', 'mean_cost', 'wall_time_s'}."""


def episodes_to_success(task: str, seed: int, target_success: float = 0.9, eval_every: int = 50,
                        max_episodes: int = 5000, eval_episodes: int = 10, goal=None,
                        config: PPOConfig | None = None, progress: bool = False) -> BudgetSearch:
    """Train PPO and evaluate every ``eval_every`` episodes until the success rate reaches ``target_success``.

    Returns the first budget (training episodes) at which ``eval_episodes`` deterministic evaluation
    episodes met the target, or None when ``max_episodes`` passed without it; evaluation episodes
    are not counted as training. ``eval_every`` is rounded up to whole PPO updates.
    """
    if not 0.0 < target_success <= 1.0:
        raise ValueError(f"target_success must be in (0, 1], got {target_success!r}")
    for name, value in (("eval_every", eval_every), ("max_episodes", max_episodes), ("eval_episodes", eval_episodes)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    cfg = config or TASK_DEFAULTS.get(task, PPOConfig())
    cfg = PPOConfig(**{**asdict(cfg), "eval_episodes": int(eval_episodes), "episodes": int(max_episodes)})
    with _torch_threads(cfg.torch_threads):
        return _search(task, seed, target_success, eval_every, max_episodes, goal, cfg, progress)


def _search(task: str, seed: int, target_success: float, eval_every: int, max_episodes: int, goal, cfg: PPOConfig,
            progress: bool) -> BudgetSearch:
    clock = Stopwatch()
    run = _PPORun(task, seed, goal, cfg)
    evaluations = []
    with tqdm(total=max_episodes, desc=f"{task}/ppo budget", unit="episode", disable=not progress) as bar:
        while run.episodes < max_episodes:
            before = run.episodes
            run.advance(min(eval_every, max_episodes - run.episodes), clock)
            bar.update(run.episodes - before)
            stats = run.evaluate()
            evaluations.append({"episodes": run.episodes, **stats, "wall_time_s": clock()})
            bar.set_postfix(success=f"{stats['success_rate']:.0%}")
            if stats["success_rate"] >= target_success:
                return BudgetSearch(run.episodes, evaluations)
    return BudgetSearch(None, evaluations)
