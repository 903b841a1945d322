"""The deep-spatial-autoencoder pipeline of Finn et al. (ICRA 2016): learn a skill from feature points.

Stages of one run (one task instance: a fixed goal, the task's initial-state distribution):

1. **Target.** The end-effector target is the task goal (drawn from the seed unless given).
2. **Exploratory controller.** LQR-FLM on the true robot state (:func:`lqr_state.learn_policy`),
   recording the camera images of its rollouts.
3. **Autoencoder.** More rollouts of the exploratory controller with extra action noise (so the
   images cover the region around its trajectories), then the deep spatial autoencoder is trained
   on all images recorded so far, with the supervised head mapping feature points to the
   end-effector position when ``supervised_head``. The ``control_points`` feature points that the
   robot state explains best (largest R^2 of an affine least-squares fit from the state) are kept
   for control: feature points that sit still on the background or jitter carry no information
   about the robot and would only add noise to the dynamics fits.
4. **Target feature points.** The goal image is the last camera image (after the final step) of the
   image-collection rollout that ended closest to the goal, i.e. a picture of the scene with the end
   effector at the target; its feature points are the targets. (A warning is logged when that
   rollout did not meet the task's success criterion.)
5. **Final controller.** LQR-FLM on the feature state s = [robot state without the end-effector
   entries (joint angles and velocities), feature points, feature-point velocities by finite
   difference], computed online from each camera image, with the cost

       l2 * 0.5 |d|^2 + l1 * sqrt(alpha + |d|^2) + the task's action cost,   d = w (f - f_target),

   where l2, l1 default to the task's own weights and w = scale / sqrt(k) makes |d| comparable to the
   end-effector distance: ``scale`` is the ratio of the end-effector position's spread to the kept
   feature points' spread in the autoencoder's training data. ``optimizer="ilqr"`` replaces the
   LQR-FLM update by iLQR on a global linear model of the feature-state dynamics refitted on every
   rollout so far (cheaper per iteration, but with no trust region it can exploit model errors;
   LQR-FLM is the default and what the article used for its results).

Success is the task's own criterion (final end-effector distance) on noise-free evaluation rollouts
of the final controller, which sees only the robot's joint state and the camera. ``episodes``
counts every training rollout: exploration + image collection + final training.

With ``out`` every stage leaves a checkpoint in ``out/checkpoints`` (atomic writes), the final stage
after every iteration; ``resume=True`` continues from the last one.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..core.cost import ActionCost, StateDistanceCost, SumCost
from ..core.dynamics import GlobalLinearPrior
from ..core.ilqr import ilqr
from ..core.types import LinearGaussianPolicy
from ..envs import make
from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..models.dsae import DeepSpatialAutoencoder, DSAEConfig, feature_points_to_pixels
from ..models.train import DSAETrainConfig, train_dsae
from . import lqr_state
from .common import (
    Episode,
    IterationLog,
    LQRFLMLoop,
    RunMismatch,
    RunResult,
    Stopwatch,
    finite_or_raise,
    format_table,
    initial_policy,
    plot_learning_curve,
    policy_actor,
    policy_arrays,
    policy_from_arrays,
    rollout,
    save_npz_atomic,
    summarize,
    write_json_atomic,
)

log = logging.getLogger(__name__)

OPTIMIZERS = ("lqr_flm", "ilqr")


@dataclass
class DSAEPipelineConfig:
    """Settings of one run of the pipeline (see the module docstring for the stages)."""

    exploration: lqr_state.LQRStateConfig | None = None
    """Exploratory controller (stage 2); None = ``lqr_state.TASK_DEFAULTS`` for the task."""
    image_rollouts: int = 10
    """Extra rollouts of the exploratory controller recorded for the autoencoder (stage 3)."""
    image_extra_noise: float = 0.5
    """Std of the action noise added to the exploratory controller's own, in units of ``action_scale``."""
    images_from_exploration: bool = True
    """Also train the autoencoder on the exploration rollouts' images (no extra episodes)."""
    image_size: int | None = None
    """Camera image side in pixels for this pipeline; None = the task's default."""
    conv_channels: tuple[int, int, int] = (32, 16, 16)
    """Filters of the autoencoder's three conv layers (the last is the number of feature points).

    The article's (64, 32, 16) at 240x240 input; half the filters of its first two layers are
    plenty for the 64x64 simulated camera images and train about three times faster on a CPU."""
    supervised_head: bool = True
    """Train the head mapping feature points to the end-effector position alongside the autoencoder."""
    dsae_steps: int = 1000
    """Gradient steps of the autoencoder training."""
    dsae_batch_size: int = 4
    """Sequences per minibatch."""
    dsae_window: int = 10
    """Frames per training sequence (random contiguous windows)."""
    dsae_lr: float = 1e-3
    smoothness_weight: float = 1.0
    """Weight of the feature-point smoothness penalty."""
    supervised_weight: float = 1.0
    """Weight of the supervised head's loss."""
    control_points: int | None = 4
    """Most feature points kept for control (the best explained by the robot state); None = all."""
    min_r2: float = 0.5
    """Feature points the robot state explains worse than this (R^2) are never kept."""
    optimizer: str = "lqr_flm"
    """Final controller's update: 'lqr_flm' (default) or 'ilqr' (on a global linear feature-state model)."""
    final_iterations: int = 10
    """Iterations of the final controller (training episodes = final_iterations * final_rollouts)."""
    final_rollouts: int = 5
    """Rollouts per final-controller iteration."""
    final_kl_step: float = 1.0
    """Base KL step of the final controller's LQR-FLM updates."""
    final_init_noise: float = 1.0
    """Initial policy noise std of the final controller, in units of ``action_scale``."""
    final_prior_strength: float = 1.0
    """Pseudo-count of the dynamics prior in the final controller's fits."""
    final_dynamics_prior: str = "gmm"
    """Prior of the final controller's per-step dynamics fits: 'gmm' (mixture, for nonlinear feature
    dynamics) or 'global' (one linear model of every rollout)."""
    feature_cost_l2: float | None = None
    """Weight of 0.5 |d|^2 in the feature-point cost; None = the task's ``cost_l2``."""
    feature_cost_l1: float | None = None
    """Weight of sqrt(alpha + |d|^2) in the feature-point cost; None = the task's ``cost_l1``."""
    ilqr_noise: float = 0.3
    """Exploration noise std of the iLQR controller, in units of ``action_scale`` (optimizer='ilqr')."""
    eval_episodes: int = 20
    """Noise-free evaluation episodes of the final controller (success rate is measured on them)."""

    def __post_init__(self) -> None:
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        for name in ("image_rollouts", "dsae_batch_size", "final_iterations", "final_rollouts", "eval_episodes"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"DSAEPipelineConfig.{name} must be a positive integer, got {value!r}")
        if int(self.dsae_steps) != self.dsae_steps or self.dsae_steps < 0:
            raise ValueError(f"DSAEPipelineConfig.dsae_steps must be a non-negative integer, got {self.dsae_steps!r}")
        if self.dsae_window < 3:
            raise ValueError(f"DSAEPipelineConfig.dsae_window must be at least 3 (the smoothness penalty), "
                             f"got {self.dsae_window}")
        for name in ("image_extra_noise", "final_init_noise", "ilqr_noise", "dsae_lr", "final_kl_step",
                     "final_prior_strength"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (value == 0 and name != "image_extra_noise"):
                raise ValueError(f"DSAEPipelineConfig.{name} must be positive and finite, got {value!r}")
        for name in ("feature_cost_l2", "feature_cost_l1"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"DSAEPipelineConfig.{name} must be None or finite and >= 0, got {value!r}")
        if self.image_size is not None and (int(self.image_size) != self.image_size or self.image_size < 21):
            raise ValueError(f"DSAEPipelineConfig.image_size must be None or an integer >= 21, got {self.image_size!r}")
        if not (math.isfinite(self.min_r2) and self.min_r2 < 1):
            raise ValueError(f"DSAEPipelineConfig.min_r2 must be below 1, got {self.min_r2!r}")
        if self.final_dynamics_prior not in ("gmm", "global"):
            raise ValueError(f"DSAEPipelineConfig.final_dynamics_prior must be 'gmm' or 'global', "
                             f"got {self.final_dynamics_prior!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"DSAEPipelineConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        points = self.conv_channels[-1]
        if self.control_points is not None and not 1 <= self.control_points <= points:
            raise ValueError(f"DSAEPipelineConfig.control_points must be between 1 and the {points} feature points "
                             f"(or None), got {self.control_points}")


# Per task: the exploratory controller comes from lqr_state's defaults; the rest is shared.
TASK_DEFAULTS: dict[str, DSAEPipelineConfig] = {
    # The autoencoder's three 'valid' convs leave a 5x5 feature grid on 32x32 images, whose cells
    # all sit near the image centre: feature points then follow the point poorly near the walls.
    # At 64x64 (21x21 grid) they track it almost exactly (state R^2 > 0.99).
    # The point's dynamics are linear, and so (top-down camera) are its feature points': the global
    # linear prior is nearly exact and may count as much as ten rollouts.
    "point": DSAEPipelineConfig(image_size=64, final_iterations=8, final_kl_step=2.0, final_prior_strength=10.0,
                                final_dynamics_prior="global"),
    "reacher": DSAEPipelineConfig(final_iterations=12),
    "sawyer_reach": DSAEPipelineConfig(final_iterations=15),
}


# --------------------------------------------------------------------------------------------
# The feature state


@dataclass
class FeatureState:
    """Maps (robot state, camera image) to the final controller's state s = [q, f, df/dt].

    q = the robot state without its end-effector entries, f = the kept feature points of the image,
    df/dt = their finite-difference velocity (zero at the first step: episodes start at rest).
    Online use: call :meth:`step` once per time step, t = 0 first; batch use: :meth:`states`.
    """

    model: DeepSpatialAutoencoder
    """The trained autoencoder."""
    points: np.ndarray
    """Indices of the kept feature points (k,)."""
    robot_idx: np.ndarray
    """Robot-state entries kept in s (not the end effector's)."""
    dt: float
    """Control period (s) for the finite-difference velocities."""
    _previous: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points).astype(np.int64).reshape(-1)
        self.robot_idx = np.asarray(self.robot_idx).astype(np.int64).reshape(-1)
        n_points = self.model.config.num_points
        if self.points.size == 0 or np.any(self.points < 0) or np.any(self.points >= n_points) \
                or len(set(self.points.tolist())) != self.points.size:
            raise ValueError(f"FeatureState.points must be distinct indices below {n_points}, got {self.points}")
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"FeatureState.dt must be positive, got {self.dt!r}")

    @property
    def columns(self) -> np.ndarray:
        """Columns of the encoder's flat output [x_0, y_0, x_1, ...] that belong to the kept points."""
        return np.stack([2 * self.points, 2 * self.points + 1], axis=1).ravel()

    @property
    def dim(self) -> int:
        return len(self.robot_idx) + 4 * len(self.points)

    @property
    def feature_idx(self) -> np.ndarray:
        """Entries of s holding the feature points (the cost's entries)."""
        start = len(self.robot_idx)
        return np.arange(start, start + 2 * len(self.points))

    def features(self, images: np.ndarray) -> np.ndarray:
        """Kept feature points of uint8 images (B, H, W, C) -> (B, 2k), or of one image -> (2k,)."""
        return self.model.encode(images)[..., self.columns]

    def step(self, t: int, x: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Feature state at step t from the robot state x (dx,) and the image seen before the action."""
        f = self.features(image)
        velocity = np.zeros_like(f) if t == 0 or self._previous is None else (f - self._previous) / self.dt
        self._previous = f
        return np.concatenate([np.asarray(x, dtype=np.float64)[self.robot_idx], f, velocity])

    def states(self, X: np.ndarray, images: np.ndarray) -> np.ndarray:
        """Feature states (T, ds) of one recorded episode: robot states X (T, dx), images (T, H, W, C)."""
        f = self.features(images)
        velocity = np.zeros_like(f)
        velocity[1:] = np.diff(f, axis=0) / self.dt
        return np.concatenate([np.asarray(X, dtype=np.float64)[:, self.robot_idx], f, velocity], axis=1)


def state_r2(features: np.ndarray, X: np.ndarray) -> np.ndarray:
    """How well the robot state explains each feature point: R^2 of an affine least-squares fit.

    ``features`` (n, 2K) as [x_0, y_0, ...], ``X`` (n, dx). Returns (K,) R^2 over both coordinates
    of each point; a point that does not move (variance below 1e-8) scores 0.
    """
    features = np.asarray(features, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] % 2 or X.ndim != 2 or len(X) != len(features) or len(X) < 2:
        raise ValueError(f"state_r2 needs features (n, 2K) and X (n, dx) with n >= 2, got {features.shape}, {X.shape}")
    design = np.c_[X, np.ones(len(X))]
    W = np.linalg.lstsq(design, features, rcond=None)[0]
    residual = ((design @ W - features) ** 2).sum(0).reshape(-1, 2).sum(1)
    total = ((features - features.mean(0)) ** 2).sum(0).reshape(-1, 2).sum(1)
    moving = total > 1e-8 * len(X)
    return np.where(moving, 1.0 - residual / np.where(moving, total, 1.0), 0.0)


def feature_cost(target: np.ndarray, idx: np.ndarray, weight: float, l2: float, l1: float,
                 action_weights: np.ndarray) -> SumCost:
    """Cost on the feature-point distance to ``target`` (entries ``idx`` of s) plus the action cost."""
    return SumCost(terms=[StateDistanceCost(target=np.asarray(target, dtype=np.float64), idx=list(map(int, idx)),
                                            weights=float(weight), l2=l2, l1=l1),
                          ActionCost(weights=action_weights)])


# --------------------------------------------------------------------------------------------
# iLQR on a learned global linear model (the optional final optimiser)


@dataclass
class ILQRLoop:
    """Final-controller iterations by iLQR on a global linear model of the feature-state dynamics.

    Each :meth:`iterate` refits s' = F [s; u] + f on every rollout so far, runs iLQR from the mean
    initial state (warm-started from the last nominal actions) and returns the feedback controller
    about the optimised nominal trajectory, with exploration noise ``noise_std``.
    """

    policy: LinearGaussianPolicy
    """The current policy (the one whose rollouts the next :meth:`iterate` expects)."""
    cost_model: object
    """Cost model with ``eval(X, U) -> CostExpansion`` on the feature state."""
    noise_std: np.ndarray
    """(du,) exploration noise std of the returned policies."""
    seen_X: list = field(default_factory=list)
    """Feature states (N, T, ds) of every iteration so far (the model's data)."""
    seen_U: list = field(default_factory=list)
    """Actions (N, T, du) of every iteration so far."""
    U_nominal: np.ndarray | None = None
    """(T, du) nominal actions of the last iLQR solution (warm start of the next)."""

    def iterate(self, X: np.ndarray, U: np.ndarray) -> dict:
        X = np.asarray(X, dtype=np.float64)
        U = np.asarray(U, dtype=np.float64)
        self.seen_X.append(X)
        self.seen_U.append(U)
        model = GlobalLinearPrior.fit(np.concatenate(self.seen_X), np.concatenate(self.seen_U))
        dx = X.shape[2]
        A, B = model.F[:, :dx], model.F[:, dx:]
        result = ilqr(lambda x, u: A @ x + B @ u + model.f, self.cost_model, X[:, 0].mean(0),
                      U.mean(0) if self.U_nominal is None else self.U_nominal, jacobian_fn=lambda x, u: (A, B))
        self.U_nominal = result.U
        self.policy = result.policy(np.diag(self.noise_std**2))
        return {"model_cost": result.cost, "ilqr_iterations": result.iterations}

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {"seen_count": np.array(len(self.seen_X)), "noise_std": self.noise_std}
        out.update(policy_arrays("policy", self.policy))
        for i, (X, U) in enumerate(zip(self.seen_X, self.seen_U)):
            out[f"seen_X_{i}"], out[f"seen_U_{i}"] = X, U
        if self.U_nominal is not None:
            out["U_nominal"] = self.U_nominal
        return out

    @classmethod
    def from_state_arrays(cls, arrays, cost_model) -> "ILQRLoop":
        loop = cls(policy_from_arrays("policy", arrays), cost_model, np.asarray(arrays["noise_std"]))
        for i in range(int(arrays["seen_count"])):
            loop.seen_X.append(np.asarray(arrays[f"seen_X_{i}"]))
            loop.seen_U.append(np.asarray(arrays[f"seen_U_{i}"]))
        loop.U_nominal = np.asarray(arrays["U_nominal"]) if "U_nominal" in arrays else None
        return loop


# --------------------------------------------------------------------------------------------
# Checkpoints


# Which settings each stage's checkpoint depends on (a stage also depends on every earlier one).
STAGE_FILES = ("explore.npz", "images.npz", "dsae.pt", "final.npz")
STAGE_SETTINGS = {
    "explore.npz": ("exploration", "images_from_exploration", "image_size"),
    "images.npz": ("image_rollouts", "image_extra_noise"),
    "dsae.pt": ("conv_channels", "supervised_head", "dsae_steps", "dsae_batch_size", "dsae_window", "dsae_lr",
                "smoothness_weight", "supervised_weight", "control_points", "min_r2"),
    "final.npz": ("optimizer", "final_rollouts", "final_kl_step", "final_init_noise", "final_prior_strength",
                  "final_dynamics_prior", "feature_cost_l2", "feature_cost_l1", "ilqr_noise"),
}


class _Checkpoints:
    """The stage files in ``out/checkpoints`` (nothing is written when ``out`` is None).

    ``run.json`` records the run (task, seed, goal) and the settings. Resuming a run of another task,
    seed or goal is an error; when only some settings changed, the first stage that depends on them
    and every later one are redone (e.g. a different final optimiser reuses the trained autoencoder).
    """

    def __init__(self, out: Path | None, run: dict, cfg: DSAEPipelineConfig, resume: bool):
        self.dir = None if out is None else Path(out) / "checkpoints"
        if self.dir is None:
            if resume:
                raise ValueError("resume=True needs the output directory `out` of the interrupted run")
            return
        record = _jsonable({**run, "settings": asdict(cfg)})
        record_path = self.dir / "run.json"
        if resume and record_path.is_file():
            try:
                stored = json.loads(record_path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{record_path} is corrupt ({err}); start a fresh run instead") from err
            differ = [k for k in run if stored.get(k) != record[k]]
            if differ:
                raise RunMismatch(f"cannot resume from {self.dir}: it belongs to another run "
                                  f"({', '.join(differ)} differ: stored {[stored.get(k) for k in differ]}, "
                                  f"asked {[record[k] for k in differ]})")
            changed = {k for k, v in record["settings"].items() if stored.get("settings", {}).get(k) != v}
            for i, name in enumerate(STAGE_FILES):
                if changed & set(STAGE_SETTINGS[name]):
                    log.warning("settings %s changed since the checkpoint: redoing the pipeline from %s",
                                sorted(changed & set(STAGE_SETTINGS[name])), name)
                    for later in STAGE_FILES[i:]:
                        (self.dir / later).unlink(missing_ok=True)
                    break
        else:
            if resume:
                log.warning("no checkpoint in %s: starting the pipeline from the beginning", self.dir)
            if self.dir.exists():
                shutil.rmtree(self.dir)  # a fresh run must not later resume from an older run's stages
            self.dir.mkdir(parents=True)
        write_json_atomic(record_path, record)

    def path(self, name: str) -> Path | None:
        return None if self.dir is None else self.dir / name

    def load(self, name: str):
        """The stored arrays of stage ``name`` (a dict), or None when that stage has not finished."""
        path = self.path(name)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"checkpoint {path} is corrupt ({err}); delete it to redo that stage") from err

    def save(self, name: str, arrays: dict) -> None:
        if self.dir is not None:
            save_npz_atomic(self.dir / name, arrays)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o):
    if isinstance(o, (np.generic,)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _rows_to_array(rows: list[IterationLog]) -> np.ndarray:
    return np.array(json.dumps([asdict(r) for r in rows], default=_json_default))


def _rows_from_array(a) -> list[IterationLog]:
    return [IterationLog(**r) for r in json.loads(str(a))]


# --------------------------------------------------------------------------------------------
# The pipeline


def _resolve_config(task: str, config: DSAEPipelineConfig | None, episodes: int | None) -> DSAEPipelineConfig:
    cfg = config or TASK_DEFAULTS.get(task, DSAEPipelineConfig())
    if cfg.exploration is None:
        cfg = replace(cfg, exploration=lqr_state.TASK_DEFAULTS.get(task, lqr_state.LQRStateConfig()))
    if episodes is not None:
        if int(episodes) != episodes or episodes < 1:
            raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
        before_final = _exploration_episodes(cfg) + cfg.image_rollouts
        if episodes < before_final + cfg.final_rollouts:
            raise ValueError(f"episodes={episodes} is too small for the dsae pipeline: exploration and image "
                             f"collection use {before_final} and one final-controller iteration "
                             f"{cfg.final_rollouts} more")
        cfg = replace(cfg, final_iterations=math.ceil((episodes - before_final) / cfg.final_rollouts))
    return cfg


def _exploration_episodes(cfg: DSAEPipelineConfig) -> int:
    return cfg.exploration.iterations * cfg.exploration.rollouts_per_iteration


def _stats_row(iteration: int, episodes_so_far: int, horizon: int, episodes: list[Episode], clock,
               extra: dict) -> IterationLog:
    stats = summarize(episodes)
    finite_or_raise("mean cost", stats["mean_cost"])
    return IterationLog(iteration, episodes_so_far, episodes_so_far * horizon, stats["mean_cost"],
                        stats["final_distance"], stats["success_rate"], clock(), extra)


def train(task: str, seed: int, out: Path | None = None, episodes: int | None = None, goal=None,
          progress: bool = True, resume: bool = False, config: DSAEPipelineConfig | None = None) -> RunResult:
    """Run the deep-spatial-autoencoder pipeline on ``task``; write summary.json and plots to ``out``.

    ``episodes`` (optional) is the total training budget: exploration and image collection keep their
    configured sizes and the final controller gets the rest (whole iterations, rounded up).
    ``resume=True`` continues an interrupted run from the checkpoints in ``out``.
    """
    cfg = _resolve_config(task, config, episodes)
    cfg = replace(cfg, exploration=replace(cfg.exploration, prior_seed=int(seed)))  # as lqr_state.train does
    clock = Stopwatch()
    env = make(task, image_obs=True, goal=goal, **({} if cfg.image_size is None else {"image_size": cfg.image_size}))
    env.reset(seed=seed)  # fixes the goal for the whole run (drawn from the seed unless given)
    goal = env.goal.copy()
    T = env.horizon
    checkpoints = _Checkpoints(out, {"task": task, "seed": int(seed), "goal": goal.tolist()}, cfg, resume)
    explore_ss, image_ss, dsae_ss, final_ss, eval_ss = np.random.SeedSequence(seed).spawn(5)

    # Stages 2 and 3a: exploratory controller on the true state, images of its rollouts.
    explored = checkpoints.load("explore.npz")
    if explored is None:
        explored = _explore(env, goal, cfg, np.random.default_rng(explore_ss), clock, progress)
        checkpoints.save("explore.npz", explored)
    explore_policy = policy_from_arrays("policy", explored)
    rows = _rows_from_array(explored["rows"])
    _continue_clock(clock, rows)
    image_data = checkpoints.load("images.npz")
    if image_data is None:
        image_data = _collect_images(env, goal, cfg, explore_policy, explored, np.random.default_rng(image_ss), clock)
        checkpoints.save("images.npz", image_data)
    rows += _rows_from_array(image_data["rows"])
    _continue_clock(clock, rows)
    if not bool(image_data["goal_image_success"]):
        log.warning("no image-collection rollout reached the goal: the goal image shows the end effector "
                    "%.3g from it (success threshold %.3g)", float(image_data["goal_image_distance"]),
                    env.success_threshold)

    # Stages 3b and 4: autoencoder, kept feature points, target feature points, feature cost.
    dsae_path = checkpoints.path("dsae.pt")
    if dsae_path is not None and dsae_path.is_file():
        ckpt = load_checkpoint(dsae_path)
        model, selection = ckpt.model, ckpt.extra
    else:
        model, selection = _train_autoencoder(env, cfg, image_data, int(dsae_ss.generate_state(1)[0]), progress)
        if dsae_path is not None:
            save_checkpoint(dsae_path, model, extra=selection)
    fstate = FeatureState(model, np.asarray(selection["points"]), np.asarray(selection["robot_idx"]), env.dt)
    target = np.asarray(selection["target"])
    l2 = env.cost_l2 if cfg.feature_cost_l2 is None else cfg.feature_cost_l2
    l1 = env.cost_l1 if cfg.feature_cost_l1 is None else cfg.feature_cost_l1
    cost_model = feature_cost(target, fstate.feature_idx, float(selection["weight"]), l2, l1,
                              env.cost_action / env.action_scale**2)

    # Stage 5: final controller on the feature state.
    n_before_final = _exploration_episodes(cfg) + cfg.image_rollouts
    policy, final_rows = _train_final(env, goal, fstate, cost_model, cfg, final_ss, checkpoints, n_before_final,
                                      clock, progress)
    rows += final_rows
    for i, row in enumerate(rows):  # one running count over the stages for the table and the plot
        row.iteration = i

    # Evaluation on the task's own success criterion.
    eval_rng = np.random.default_rng(eval_ss)
    evaluation = [feature_rollout(env, goal, fstate, policy, None, int(eval_rng.integers(2**31 - 1)))[0]
                  for _ in range(cfg.eval_episodes)]
    summary = summarize(evaluation)
    n_train = n_before_final + len(final_rows) * cfg.final_rollouts
    config_record = asdict(cfg)
    config_record["selection"] = _jsonable(selection)
    result = RunResult(
        task=task, method="dsae", seed=seed, episodes=n_train, env_steps=n_train * T,
        final_cost=summary["mean_cost"], final_distance=summary["final_distance"],
        success_rate=summary["success_rate"], eval_episodes=cfg.eval_episodes, wall_time_s=clock(),
        goal=goal.tolist(), config=config_record, iterations=[asdict(r) for r in rows],
    )
    print(format_table(rows))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result.write(out)
        plot_learning_curve(rows, out / "learning_curve.png", f"{task} / dsae / seed {seed}",
                            env.success_threshold, summary)
        plot_feature_points(image_data["goal_image"], fstate, target, out / "feature_points.png")
    return result


def _continue_clock(clock: Stopwatch, rows: list[IterationLog]) -> None:
    """After loading finished stages, count their recorded time as spent (wall time of the whole run)."""
    if rows and clock() < rows[-1].wall_time_s:
        clock.start -= rows[-1].wall_time_s - clock()


def _explore(env, goal: np.ndarray, cfg: DSAEPipelineConfig, rng: np.random.Generator, clock, progress: bool) -> dict:
    """Stage 2: LQR-FLM on the true state; returns the policy, rows, states (and images) of its rollouts."""
    recorded: list[Episode] = []

    def collect(policy: LinearGaussianPolicy, n: int, noise: bool) -> list[Episode]:
        actor = policy_actor(policy, rng if noise else None)
        batch = [rollout(env, actor, seed=int(rng.integers(2**31 - 1)), options={"goal": goal},
                         record_images=cfg.images_from_exploration) for _ in range(n)]
        recorded.extend(batch)
        return batch

    policy, rows = lqr_state.learn_policy(env, env.cost_model(), cfg.exploration, collect, clock, progress,
                                          desc="dsae explore")
    for r in rows:
        r.extra = {**r.extra, "stage": "explore"}
    saved = {**policy_arrays("policy", policy), "rows": _rows_to_array(rows), "X": np.stack([e.X for e in recorded])}
    if cfg.images_from_exploration:
        saved["images"] = np.stack([e.images for e in recorded])
    return saved


def _collect_images(env, goal: np.ndarray, cfg: DSAEPipelineConfig, policy: LinearGaussianPolicy, explored: dict,
                    rng: np.random.Generator, clock) -> dict:
    """Stage 3a: noisy rollouts of the exploratory controller; the autoencoder's data and the goal image."""
    extra_std = cfg.image_extra_noise * env.action_scale
    episodes, final_images = [], []
    for _ in range(cfg.image_rollouts):
        base = policy_actor(policy, rng)

        def actor(t, x, obs, base=base):
            return base(t, x, obs) + extra_std * rng.standard_normal(env.action_dim)

        episodes.append(rollout(env, actor, seed=int(rng.integers(2**31 - 1)), options={"goal": goal},
                                record_images=True))
        final_images.append(env.render())  # the scene after the last step
    best = int(np.argmin([e.distances[-1] for e in episodes]))
    n_so_far = _exploration_episodes(cfg) + cfg.image_rollouts
    row = _stats_row(0, n_so_far, env.horizon, episodes, clock,
                     {"stage": "images", "goal_image_distance": float(episodes[best].distances[-1])})
    images = np.stack([e.images for e in episodes])
    X = np.stack([e.X for e in episodes])
    if cfg.images_from_exploration:
        images = np.concatenate([explored["images"], images])
        X = np.concatenate([explored["X"], X])
    return {"images": images, "X": X, "goal_image": final_images[best],
            "goal_image_distance": np.array(episodes[best].distances[-1]),
            "goal_image_success": np.array(episodes[best].success), "rows": _rows_to_array([row])}


def feature_rollout(env, goal: np.ndarray, fstate: FeatureState, policy: LinearGaussianPolicy,
                    rng: np.random.Generator | None, episode_seed: int) -> tuple[Episode, np.ndarray]:
    """One episode of a policy on the feature state computed online; returns it and its feature states (T, ds)."""
    S = np.zeros((env.horizon, fstate.dim))

    def act(t, x, obs):
        S[t] = fstate.step(t, x, obs["image"])
        return policy.act(t, S[t], None if rng is None else rng.standard_normal(env.action_dim))

    return rollout(env, act, seed=episode_seed, options={"goal": goal}), S


def _train_final(env, goal: np.ndarray, fstate: FeatureState, cost_model, cfg: DSAEPipelineConfig,
                 seed_seq: np.random.SeedSequence, checkpoints: _Checkpoints, n_before: int, clock,
                 progress: bool) -> tuple[LinearGaussianPolicy, list[IterationLog]]:
    """Stage 5: LQR-FLM (or iLQR) iterations on the feature state, checkpointed after each one."""
    T = env.horizon
    saved = checkpoints.load("final.npz")
    loop_cls = LQRFLMLoop if cfg.optimizer == "lqr_flm" else ILQRLoop
    if saved is None:
        rng = np.random.default_rng(seed_seq)
        policy0 = initial_policy(T, fstate.dim, env.action_dim, cfg.final_init_noise * env.action_scale)
        if cfg.optimizer == "lqr_flm":
            loop = LQRFLMLoop(policy0, cost_model, kl_step=cfg.final_kl_step, prior_strength=cfg.final_prior_strength,
                              prior=cfg.final_dynamics_prior, prior_seed=int(seed_seq.generate_state(1)[0]))
        else:
            loop = ILQRLoop(policy0, cost_model, cfg.ilqr_noise * env.action_scale)
        rows: list[IterationLog] = []
    else:
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(str(saved["rng_state"]))
        loop = loop_cls.from_state_arrays(saved, cost_model)
        rows = _rows_from_array(saved["rows"])
        _continue_clock(clock, rows)
        if len(rows) > cfg.final_iterations:
            log.warning("the checkpoint already holds %d final-controller iterations (asked for %d): keeping them",
                        len(rows), cfg.final_iterations)
    bar = tqdm(range(len(rows), cfg.final_iterations), desc="dsae final", disable=not progress, unit="iter")
    for it in bar:
        batch = [feature_rollout(env, goal, fstate, loop.policy, rng, int(rng.integers(2**31 - 1)))
                 for _ in range(cfg.final_rollouts)]
        episodes = [e for e, _ in batch]
        diagnostics = loop.iterate(np.stack([S for _, S in batch]), np.stack([e.U for e in episodes]))
        feature_cost_now = float(np.mean([cost_model.eval(S, e.U).l.sum() for e, S in batch]))
        rows.append(_stats_row(it, n_before + (it + 1) * cfg.final_rollouts, T, episodes, clock,
                               {**diagnostics, "stage": "final", "feature_cost": feature_cost_now}))
        bar.set_postfix(cost=f"{rows[-1].mean_cost:.3g}", dist=f"{rows[-1].final_distance:.3f}")
        checkpoints.save("final.npz", {**loop.state_arrays(), "rows": _rows_to_array(rows),
                                       "rng_state": np.array(json.dumps(rng.bit_generator.state))})
    bar.close()
    return loop.policy, rows


def _train_autoencoder(env, cfg: DSAEPipelineConfig, image_data: dict, seed: int, progress: bool):
    """Train the autoencoder; choose the kept points, the target points and the cost scale."""
    images, X = image_data["images"], image_data["X"]
    ee = X[..., list(env.ee_pos_idx)]
    size, channels = env.image_shape[0], env.image_shape[2]
    model_cfg = DSAEConfig(image_size=size, channels=channels, conv_channels=cfg.conv_channels,
                           target_dim=len(env.ee_pos_idx) if cfg.supervised_head else 0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DeepSpatialAutoencoder(model_cfg)
        train_cfg = DSAETrainConfig(steps=cfg.dsae_steps, batch_size=cfg.dsae_batch_size, lr=cfg.dsae_lr,
                                    seed=seed, disable_progress=not progress, window=min(cfg.dsae_window, X.shape[1]),
                                    smoothness_weight=cfg.smoothness_weight, supervised_weight=cfg.supervised_weight)
        history = train_dsae(model, images, train_cfg, targets=ee if cfg.supervised_head else None)
    model.eval()
    flat_images = images.reshape(-1, *images.shape[2:])
    chunks = np.array_split(flat_images, max(1, len(flat_images) // 512))  # bounded memory
    features = np.concatenate([model.encode(chunk) for chunk in chunks])
    r2 = state_r2(features, X.reshape(-1, X.shape[-1]))
    k = model_cfg.num_points if cfg.control_points is None else cfg.control_points
    ranked = [int(i) for i in np.argsort(-r2, kind="stable")[:k] if r2[i] >= cfg.min_r2]
    if not ranked:
        raise ValueError(f"no feature point follows the robot (best state R^2 {r2.max():.3f} < min_r2 "
                         f"{cfg.min_r2}): train the autoencoder longer or collect more varied images")
    points = np.array(sorted(ranked), dtype=np.int64)
    k = len(points)
    columns = np.stack([2 * points, 2 * points + 1], axis=1).ravel()
    spread_features = features[:, columns].var(0).reshape(-1, 2).sum(1).mean()
    spread_ee = ee.reshape(-1, ee.shape[-1]).var(0).sum()
    if spread_features < 1e-10:
        raise ValueError("the kept feature points do not move in the training images: the autoencoder found "
                         "nothing that follows the robot (train longer or collect more varied images)")
    scale = math.sqrt(spread_ee / spread_features)
    ee_entries = set(env.ee_pos_idx) | set(env.ee_vel_idx)
    robot_idx = np.array([i for i in range(env.state_dim) if i not in ee_entries], dtype=np.int64)
    target = model.encode(image_data["goal_image"])[columns]
    log.info("dsae: kept feature points %s (state R^2 %s), cost scale %.3g", points.tolist(),
             np.round(r2[points], 3).tolist(), scale)
    selection = {"points": points, "r2": r2, "robot_idx": robot_idx, "target": target,
                 "weight": float(scale / math.sqrt(k)), "scale": float(scale),
                 "final_loss": {key: values[-1] for key, values in history.items()}}
    return model, selection


def plot_feature_points(image: np.ndarray, fstate: FeatureState, target: np.ndarray, path: Path) -> None:
    """The goal image with every feature point (grey) and the kept target points (circled)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = image.shape[0]
    all_points = feature_points_to_pixels(fstate.model.encode(image).reshape(-1, 2), size)
    kept = feature_points_to_pixels(np.asarray(target).reshape(-1, 2), size)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image, interpolation="nearest")
    ax.plot(all_points[:, 0], all_points[:, 1], ".", color="0.8", ms=6, label="feature points")
    ax.plot(kept[:, 0], kept[:, 1], "o", mfc="none", mec="lime", ms=10, mew=1.5, label="kept (targets)")
    ax.set_axis_off()
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title("goal image and target feature points", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
