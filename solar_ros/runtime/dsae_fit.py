"""The ``dsae`` fit method of the model fitting node: the deep-spatial-autoencoder pipeline of Finn et
al. (:mod:`solar_ros.algos.dsae_pipeline`) split into the fits between episode batches. Importing this
module registers it in :data:`solar_ros.runtime.fitting.METHODS`.

The controller runs with ``state_source: latent+joints`` for the whole run, x = [latent, q, dq]
with the encoder's feature points as the latent (2 numbers per point), so one controller setting
serves both phases:

* iteration 0: an untrained autoencoder is announced (so the encoder publishes latents from the
  first episode on, as the controller's state needs them) and the exploratory controller's first
  policy (``lqr_joints``'s) is published with zero gains on the latent;
* iterations 1..E (``explore_iterations``): exactly the ``lqr_joints`` update (LQR-FLM on [q, dq]
  with the task's cost through the arm's kinematics), the policy again lifted to x with zero gains
  on the (meaningless) untrained latent;
* iteration E+1: the autoencoder is trained on the camera images of every exploratory episode
  (with the supervised head on the end-effector position the kinematics give), the feature points
  that the robot state explains best are kept, the goal image is the last frame of the exploratory
  episode that ended closest to the goal and its feature points are the targets
  (``dsae_pipeline._train_autoencoder``). The checkpoint is announced and the final controller starts:
  LQR-FLM on s = [kept feature points, q, dq] with the feature-distance cost
  (``dsae_pipeline.feature_cost``) plus the action cost. With ``final_init: exploration`` its first
  policy is the exploratory controller's (zero gains on the feature points), so its first update
  already uses the batch just recorded (its images re-encoded by the trained autoencoder: the
  latents the encoder will publish); with ``final_init: zero`` it starts from zero gains with
  ``final_init_noise``.
* iterations > E+1: LQR-FLM updates of the final controller on the recorded states (the feature
  points the encoder published, the joint state), the policy lifted to x with zero gains on the
  feature points not kept.

The final controller sees the robot only through its joint state and the camera: the task's
kinematic cost is used by the exploratory controller and to label the autoencoder's supervised
head, as in the article. The feature-point velocities of the offline pipeline's state are left
out (the encoder publishes points only; [q, dq] carries the motion). Success is still the task's own
criterion (final end-effector distance), which the trainer measures.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..algos import dsae_pipeline
from ..algos.common import LQRFLMLoop, initial_policy, save_npz_atomic
from ..core.types import LinearGaussianPolicy
from ..models.checkpoint import save_checkpoint
from ..models.dsae import DeepSpatialAutoencoder, DSAEConfig
from .fitting import (
    METHODS,
    FitError,
    FitMethod,
    FitOutput,
    LQRJointsConfig,
    LQRJointsMethod,
    ProgressFn,
    RunSettings,
    TrainingData,
    apply_config_overrides,
    load_training_data,
    make_task,
    new_id,
    no_progress,
)
from .policy_msg import PolicyPackage

FINAL_INITS = ("exploration", "zero")

# The offline pipeline's settings that mean the same here: the autoencoder and its point selection
# (the settings its dsae.pt stage depends on), the camera image size, and the final controller.
PIPELINE_KEYS = ("image_size", *dsae_pipeline.STAGE_SETTINGS["dsae.pt"], "final_kl_step", "final_init_noise",
                 "final_prior_strength", "final_dynamics_prior", "feature_cost_l2", "feature_cost_l1")


@dataclass
class DSAEFitConfig:
    """Settings of the ``dsae`` method's own (the others are ``lqr_joints``'s and the pipeline's)."""

    explore_iterations: int = 6
    """Updates of the exploratory controller on [q, dq] (iterations 1..E); the autoencoder is trained at E+1."""
    final_init: str = "exploration"
    """First final-controller policy: 'exploration' (the exploratory gains, zero on the feature points;
    what scripts/main.sh uses) or 'zero' (zero gains, ``final_init_noise``: the final controller learns
    from scratch on the feature cost, which needs more iterations and is less reliable)."""

    def __post_init__(self) -> None:
        if int(self.explore_iterations) != self.explore_iterations or self.explore_iterations < 1:
            raise ValueError(f"dsae explore_iterations must be a positive integer, got {self.explore_iterations!r}")
        if self.final_init not in FINAL_INITS:
            raise ValueError(f"dsae final_init must be one of {FINAL_INITS}, got {self.final_init!r}")


def lift_policy(policy: LinearGaussianPolicy, columns: np.ndarray, dx: int) -> LinearGaussianPolicy:
    """The same policy on a larger state of ``dx`` entries, of which it reads ``columns`` (zero gains elsewhere)."""
    K = np.zeros((policy.T, policy.du, dx))
    K[:, :, np.asarray(columns, dtype=np.int64)] = policy.K
    return LinearGaussianPolicy(K, policy.k.copy(), policy.cov.copy())


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict, dict, dict]:
    """(own, exploration, pipeline) settings; FitError for a key none of them knows."""
    own_names = {f.name for f in fields(DSAEFitConfig)}
    explore_names = {f.name for f in fields(LQRJointsConfig)}
    unknown = sorted(set(overrides) - own_names - explore_names - set(PIPELINE_KEYS))
    if unknown:
        raise FitError(f"unknown dsae setting(s) {unknown}; known: "
                       f"{sorted(own_names | explore_names | set(PIPELINE_KEYS))}")
    return tuple({k: v for k, v in overrides.items() if k in names}
                 for names in (own_names, explore_names, set(PIPELINE_KEYS)))


class DSAEMethod(FitMethod):
    """The deep-spatial-autoencoder pipeline through the nodes (see the module docstring)."""

    name = "dsae"
    state_source = "latent+joints"
    required_arrays = ("states", "actions", "costs", "images", "distances")
    STATE_FILE = "dsae_state.npz"
    EXPLORE_DIR = "dsae_explore"
    """Subdirectory of the output directory holding the exploratory controller's (lqr_joints) state."""

    def __init__(self, settings: RunSettings, overrides: dict[str, Any], out_dir: Path, device: str = "cpu") -> None:
        super().__init__(settings, overrides, out_dir, device)
        own, explore, pipeline = _split_overrides(overrides)
        self.config = apply_config_overrides(DSAEFitConfig(), own, "dsae")
        base = dsae_pipeline.TASK_DEFAULTS.get(settings.task, dsae_pipeline.DSAEPipelineConfig())
        self.pipeline = apply_config_overrides(base, pipeline, "dsae")
        self.explore_overrides = explore
        self.explore = LQRJointsMethod(settings, explore, self.out_dir / self.EXPLORE_DIR, device)
        size = self.pipeline.image_size
        # the autoencoder's view of the task: image size, end-effector entries, cost weights
        self.env = self.explore.env if size is None else make_task(settings.task, settings.goal, image_size=size)
        self.image_size = int(self.env.image_shape[0])
        self.du = int(self.env.action_dim)
        self.n_joint_state = self.explore.cost.dx
        self.latent_dim = 2 * int(self.pipeline.conv_channels[-1])
        self.dx = self.latent_dim + self.n_joint_state
        self.dt = self.explore.dt
        self.phase = "explore"
        self.model_id = ""
        self.model_path = ""
        self.selection: dict[str, Any] = {}
        """Kept points, their targets and the cost weight, once the autoencoder is trained."""
        self.final: LQRFLMLoop | None = None
        self.policy: LinearGaussianPolicy | None = None
        self.history: list[str] = []
        """Ids of the exploratory episodes, oldest first (the autoencoder's training data)."""
        self.episode_dir = ""

    @property
    def horizon(self) -> int:
        return self.explore.horizon

    # ---- the state layout --------------------------------------------------------------------------

    @property
    def joint_columns(self) -> np.ndarray:
        """Entries of x = [latent, q, dq] holding [q, dq]."""
        return np.arange(self.latent_dim, self.dx)

    @property
    def control_columns(self) -> np.ndarray:
        """Entries of x the final controller reads: the kept points' coordinates, then [q, dq]."""
        points = np.asarray(self.selection["points"], dtype=np.int64)
        return np.concatenate([np.stack([2 * points, 2 * points + 1], axis=1).ravel(), self.joint_columns])

    def _final_cost(self):
        k = len(self.selection["points"])
        l2 = self.env.cost_l2 if self.pipeline.feature_cost_l2 is None else self.pipeline.feature_cost_l2
        l1 = self.env.cost_l1 if self.pipeline.feature_cost_l1 is None else self.pipeline.feature_cost_l1
        return dsae_pipeline.feature_cost(np.asarray(self.selection["target"]), np.arange(2 * k),
                                          float(self.selection["weight"]), l2, l1,
                                          self.env.cost_action / self.env.action_scale**2)

    # ---- life cycle --------------------------------------------------------------------------------

    def _save_model(self, model: DeepSpatialAutoencoder, iteration: int, trained: bool) -> None:
        self.model_id = new_id("dsae", iteration)
        path = self.out_dir / f"model_{iteration:03d}.pt"
        extra = {"model_id": self.model_id, "iteration": iteration, "task": self.settings.task,
                 "goal": list(self.settings.goal), "trained": trained, **self.selection}
        save_checkpoint(path, model, extra=extra)
        self.model_path = str(path.resolve())

    def _package(self, iteration: int) -> PolicyPackage:
        self.policy_id = new_id(self.name, iteration)
        return PolicyPackage(self.policy, self.policy_id, self.dt, self.state_source, iteration, self.model_id)

    def initialize(self, progress: ProgressFn = no_progress) -> FitOutput:
        progress("representation", 0.2, math.nan, 0)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng():
            torch.manual_seed(self.settings.seed)
            model = DeepSpatialAutoencoder(DSAEConfig(image_size=self.image_size, channels=3,
                                                      conv_channels=self.pipeline.conv_channels)).eval()
        self.selection, self.final, self.history, self.episode_dir = {}, None, [], ""
        self._save_model(model, 0, trained=False)
        explored = self.explore.initialize(progress)
        self.policy = lift_policy(explored.policy.policy, self.joint_columns, self.dx)
        self.phase, self.iteration = "explore", 0
        return FitOutput(self._package(0), self.model_path, new_model=True,
                         metrics={"state_dim": float(self.dx), "latent_dim": float(self.latent_dim)})

    def _check(self, data: TrainingData) -> None:
        if data.images is None or data.distances is None:
            raise FitError("the dsae method needs the episodes' camera images and task distances "
                           "(were /solar/image and /solar/cost recorded?)")
        if data.states.shape[2] != self.dx:
            raise FitError(f"episodes have states of {data.states.shape[2]} entries; dsae needs "
                           f"[latent, q, dq] = {self.latent_dim} + {self.n_joint_state} (controller state_source "
                           f"{self.state_source}, a {self.latent_dim // 2}-point autoencoder)")
        if data.actions.shape[2] != self.du or data.T != self.horizon:
            raise FitError(f"episodes have {data.T} steps of {data.actions.shape[2]} actions; the run has "
                           f"{self.horizon} steps of {self.du}")
        if data.images.shape[2:] != (self.image_size, self.image_size, 3):
            raise FitError(f"episodes have images of shape {data.images.shape[2:]}, the autoencoder reads "
                           f"{self.image_size}x{self.image_size}x3 (set the camera's width/height or image_size)")

    def update(self, data: TrainingData, iteration: int, progress: ProgressFn = no_progress,
               final: bool = False) -> FitOutput:
        if self.policy is None:
            raise FitError("no run in progress: start one with iteration 0")
        self.check_on_policy(data)
        self._check(data)
        metrics: dict[str, float] = {"episodes": float(data.N), "mean_episode_cost": float(data.costs.sum(1).mean()),
                                     "mean_final_distance": float(data.distances[:, -1].mean())}
        new_model = False
        if self.phase == "explore":
            history, episode_dir = self.history + data.episode_ids, data.root or self.episode_dir
            if iteration <= self.config.explore_iterations:
                metrics.update(self._explore_update(data, iteration, progress))
            else:
                metrics.update(self._train_representation(data, history, episode_dir, iteration, progress))
                new_model = True
            self.history, self.episode_dir = history, episode_dir  # only once the fit succeeded
        else:
            metrics.update(self._final_update(data.states[:, :, self.control_columns], data.actions, progress))
            self.policy = lift_policy(self.final.policy, self.control_columns, self.dx)
        self.iteration = iteration
        metrics["phase_final"] = float(self.phase == "final")
        return FitOutput(self._package(iteration), self.model_path, new_model=new_model,
                         metrics={k: float(v) for k, v in metrics.items()})

    def _explore_update(self, data: TrainingData, iteration: int, progress: ProgressFn) -> dict[str, float]:
        """lqr_joints's update on the [q, dq] part of the states (the episodes ran its policy, lifted)."""
        joint_data = replace(data, states=data.states[:, :, self.joint_columns],
                             policy_ids=[self.explore.policy_id] * data.N)
        out = self.explore.update(joint_data, iteration, progress)
        self.policy = lift_policy(out.policy.policy, self.joint_columns, self.dx)
        return {k: v for k, v in out.metrics.items() if k not in ("episodes", "mean_episode_cost")}

    def _train_representation(self, data: TrainingData, history: list[str], episode_dir: str, iteration: int,
                              progress: ProgressFn) -> dict[str, float]:
        """Iteration E+1: autoencoder, kept points, goal image and targets, the final controller's start.

        ``history``: every exploratory episode (this batch last), recorded in ``episode_dir``."""
        progress("loading", 0.08, math.nan, 0)
        explored = load_training_data(episode_dir, history, ("states", "actions", "images", "distances"), self.horizon)
        joint_states = explored.states[:, :, self.joint_columns]
        # the full robot state (with the end effector) labels the supervised head and ranks the points
        X = np.stack([[self.explore.cost.full_state(x) for x in episode] for episode in joint_states])
        best = int(np.argmin(explored.distances[:, -1]))
        goal_distance = float(explored.distances[best, -1])
        image_data = {"images": explored.images, "X": X, "goal_image": explored.images[best, -1]}
        progress("representation", 0.1, math.nan, 0)
        try:
            # train_dsae has no per-step callback: no feedback or cancel until this returns
            model, selection = dsae_pipeline._train_autoencoder(self.env, self.pipeline, image_data,
                                                               self.settings.seed, progress=False)
        except ValueError as err:
            raise FitError(f"autoencoder stage failed: {err}") from err
        loss = float(selection["final_loss"].get("loss", math.nan))
        progress("representation", 0.8, loss, self.pipeline.dsae_steps)
        self.selection = {"points": [int(p) for p in selection["points"]],
                          "target": [float(v) for v in selection["target"]],
                          "weight": float(selection["weight"]), "scale": float(selection["scale"]),
                          "r2": [float(v) for v in selection["r2"]], "goal_episode": explored.episode_ids[best],
                          "goal_distance": goal_distance}
        self._save_model(model, iteration, trained=True)
        self.phase = "final"
        cfg = self.pipeline
        k = len(self.selection["points"])
        metrics = {f"dsae_{name}": float(v) for name, v in selection["final_loss"].items()}
        metrics.update({"kept_points": float(k), "min_kept_r2": float(np.min(selection["r2"][selection["points"]])),
                        "goal_image_distance": goal_distance, "feature_cost_scale": float(selection["scale"]),
                        "dsae_images": float(explored.images.shape[0] * explored.images.shape[1])})
        if self.config.final_init == "exploration":
            # the exploratory policy read only [q, dq], the last entries of s as of x
            n = self.n_joint_state
            start = lift_policy(self.explore.loop.policy, np.arange(2 * k, 2 * k + n), 2 * k + n)
        else:
            start = initial_policy(self.horizon, 2 * k + self.n_joint_state, self.du,
                                   cfg.final_init_noise * self.env.action_scale)
        # Every exploratory episode, its images re-encoded by the trained autoencoder, in the final
        # controller's state: the states the encoder would have published. They seed the dynamics
        # prior (a few rollouts of one batch fit a 2k + 14 dimensional state poorly).
        encoded = np.concatenate([model.encode(images) for images in explored.images])
        features = encoded.reshape(explored.N, explored.T, -1)[:, :, self.control_columns[:2 * k]]
        S = np.concatenate([features, joint_states], axis=2)
        # With final_init 'exploration' the batch just recorded ran the final controller's first policy:
        # its first update uses it.
        first = np.isin(explored.episode_ids, data.episode_ids) & (self.config.final_init == "exploration")
        self.final = LQRFLMLoop(start, self._final_cost(), kl_step=cfg.final_kl_step,
                                prior_strength=cfg.final_prior_strength,
                                prior=cfg.final_dynamics_prior, prior_seed=self.settings.seed,
                                seen_X=[S[~first]], seen_U=[explored.actions[~first]])
        if first.any():
            metrics.update(self._final_update(S[first], explored.actions[first], progress))
        self.policy = lift_policy(self.final.policy, self.control_columns, self.dx)
        return metrics

    def _final_update(self, S: np.ndarray, U: np.ndarray, progress: ProgressFn) -> dict[str, float]:
        """One LQR-FLM iteration of the final controller on its states S (N, T, 2k + 14)."""
        progress("dynamics", 0.85, math.nan, 0)
        try:
            info = self.final.iterate(S, U)
        except (ValueError, np.linalg.LinAlgError) as err:
            raise FitError(f"final controller's LQR-FLM update failed: {err}") from err
        progress("policy", 0.9, math.nan, 0)
        cost = self.final.cost_model
        k2 = 2 * len(self.selection["points"])
        feature_distance = float(self.selection["weight"]) * np.linalg.norm(
            S[:, -1, :k2] - np.asarray(self.selection["target"]), axis=1)
        return {**{k: float(v) for k, v in info.items()},
                "mean_feature_cost": float(np.mean([cost.eval(s, u).l.sum() for s, u in zip(S, U)])),
                "mean_final_feature_distance": float(feature_distance.mean())}

    # ---- persistence -------------------------------------------------------------------------------

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.explore.save()
        meta = {"method": self.name, "iteration": self.iteration, "policy_id": self.policy_id, "phase": self.phase,
                "model_id": self.model_id, "model_path": self.model_path, "selection": self.selection,
                "history": self.history, "episode_dir": self.episode_dir, "settings": asdict(self.settings),
                "config": asdict(self.config), "pipeline": asdict(self.pipeline)}
        arrays = {"meta": np.array(json.dumps(meta, default=list))}
        if self.final is not None:
            arrays.update({f"final_{k}": v for k, v in self.final.state_arrays().items()})
        save_npz_atomic(self.out_dir / self.STATE_FILE, arrays)

    @classmethod
    def load(cls, settings: RunSettings, overrides: dict[str, Any], out_dir: Path, device: str = "cpu") -> "DSAEMethod":
        arrays, meta = cls._read_saved_state(out_dir)
        method = cls(settings, overrides, out_dir, device)
        try:
            method.phase, method.selection = str(meta["phase"]), dict(meta["selection"])
            if method.phase == "final":
                final = {k[len("final_"):]: v for k, v in arrays.items() if k.startswith("final_")}
                method.final = LQRFLMLoop.from_state_arrays(final, method._final_cost())
        except (OSError, ValueError, KeyError) as err:
            raise FitError(f"cannot read the saved dsae run in {out_dir}: {err}") from err
        if (meta["settings"]["task"] != settings.task
                or meta["pipeline"]["conv_channels"] != list(method.pipeline.conv_channels)):
            raise FitError(f"the saved run in {out_dir} is for task {meta['settings']['task']} with a "
                           f"{meta['pipeline']['conv_channels']} autoencoder, not {settings.task} with "
                           f"{list(method.pipeline.conv_channels)}")
        method.explore = LQRJointsMethod.load(settings, method.explore_overrides, Path(out_dir) / cls.EXPLORE_DIR,
                                              device)
        method.iteration, method.policy_id = int(meta["iteration"]), str(meta["policy_id"])
        method.model_id, method.model_path = str(meta["model_id"]), str(meta["model_path"])
        method.history, method.episode_dir = list(meta["history"]), str(meta["episode_dir"])
        if method.phase == "final":
            method.policy = lift_policy(method.final.policy, method.control_columns, method.dx)
        else:
            method.policy = lift_policy(method.explore.loop.policy, method.joint_columns, method.dx)
        return method


METHODS[DSAEMethod.name] = DSAEMethod
