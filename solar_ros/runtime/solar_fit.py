"""The ``solar`` fit method of the model fitting node: SOLAR's loop (:mod:`solar_ros.algos.solar`)
split into the fits between episode batches. Importing this module registers it in
:data:`solar_ros.runtime.fitting.METHODS`.

Life cycle (see :mod:`solar_ros.runtime.fitting`):

* iteration 0: an untrained structured VAE (so the encoder publishes latents from the first
  episode on) and a zero-gain policy on its latent with the pretraining noise
  (``pretrain_noise`` x action_scale, filtered over time by ``pretrain_smoothing`` as the in-process
  loop does): random Gaussian torques, as SOLAR's pretraining;
* iteration 1: the structured VAE (with the conjugate MNIW update of its LDS) is fitted on the
  recorded pretraining images, actions and costs; a new model is announced and the first control
  policy (zero gains, ``init_noise``) acts on its filtered latent;
* iteration k >= 2: the latent trajectories of the last ``buffer_size`` episodes are inferred,
  per-step dynamics are fitted with the model's LDS posterior as prior (``prior_strength``), the
  KL step is adapted and LQR-FLM updates the policy on the learned latent cost (the same model;
  every ``refit_every`` iterations the model is refitted, announced, and the policy re-expressed
  in the new latent coordinates). Iteration k here is the in-process loop's iteration k - 1 (its
  pretraining is its iteration 0): the refits fall on the same iterations, with the same seeds.

The policy acts on the encoder's filtered latent mean (``state_source: latent``, the policy
carries the model id); the dynamics are fitted on the latents ``dynamics_latents`` says (smoothed,
as in SOLAR, by default). The model refit and the LQR-FLM iteration are the in-process loop's own
(:func:`solar_ros.algos.solar.refit`, :func:`solar_ros.algos.solar.solar_step`), with the same
seeds, so the node and ``solar-ros train`` compute the same policies from the same episodes.
Where the episodes carry joint states (the recorder's ``joint_positions``, ``joint_velocities``), the
task's true states are computed from them by forward kinematics for the diagnostics the in-process loop
reports (linear probes from the latent, the learned cost's R^2 and ranking, on held-out episodes too,
and the pretraining's workspace coverage); they go into the fit's metrics and never into the model or
the policy, and, with ``cost_fit='readout'``, into the cost LQR-FLM minimises (the task's cost of
positions read out of the latent). Progress is reported at every conjugate LDS update of a model fit
(``loss``: the negative Kalman marginal log-likelihood of the encoder potentials per frame) and a cancel
request stops the fit there.

Saved state: each model is one file (:meth:`~solar_ros.algos.solar.LatentModel.save`: network,
LDS posterior; the encoder reads the same file), the run's own state (policy, LQR-FLM step state,
episode history) is ``solar_state.npz``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..algos import solar
from ..algos.common import StepState, initial_policy, policy_arrays, policy_from_arrays, save_npz_atomic
from ..algos.probes import state_groups
from ..algos.solar import mpc as solar_mpc
from ..core.lqr_flm import QuadraticCost
from ..core.mpc import LinearModel
from ..core.types import LinearGaussianPolicy
from .fitting import (
    METHODS,
    FitError,
    FitMethod,
    FitOutput,
    ProgressFn,
    RunSettings,
    TrainingData,
    apply_config_overrides,
    load_training_data,
    make_task,
    new_id,
    no_progress,
)
from .policy_msg import LatentPlanner, PolicyPackage
from .training_run import ended_in_success


def _fit_reporter(progress: ProgressFn, start: float, span: float) -> solar.FitHook:
    """A model fit's progress as the node's ``representation`` stage between ``start`` and ``start + span``."""
    def report(p: solar.FitProgress) -> None:
        progress("representation", start + span * p.fraction, p.loss, p.step)
    return report


class SolarMethod(FitMethod):
    """SOLAR through the nodes (see the module docstring)."""

    name = "solar"
    state_source = "latent"
    STATE_FILE = "solar_state.npz"

    @property
    def required_arrays(self) -> tuple[str, ...]:  # type: ignore[override]
        """The recorded arrays a fit needs: on sparse labels the success labels instead of the task's costs."""
        return ("states", "actions", self._reward_array, "images")

    def __init__(self, settings: RunSettings, overrides: dict[str, Any], out_dir: Path, device: str = "cpu") -> None:
        super().__init__(settings, overrides, out_dir, device)
        base = solar.TASK_DEFAULTS.get(settings.task, solar.SolarConfig())
        self.config = apply_config_overrides(base, overrides, "solar")
        if self.config.pretrain_wide_fraction:
            raise ValueError("pretrain_wide_fraction is not available through the nodes (the pretraining's episodes "
                             "share one policy package, hence one start): use pretrain_wide_start or 0")
        self.env = make_task(settings.task, settings.goal)
        self.dt = settings.dt or float(self.env.dt)
        self.image_size = int(self.config.image_size or self.env.image_shape[0])
        self.du = int(self.env.action_dim)
        self.phase = "pretrain"
        self.model = solar.SVAELatentModel(self.image_size, self.du, self.config,
                                           readout_idx=list(self.env.ee_pos_idx))
        self.model.net.to(device)
        self.model_id = ""
        self.model_path = ""
        self.policy = None
        self.step = StepState()
        self.episode_dir = ""
        self.history: list[str] = []
        """Every episode id fitted so far, oldest first (the buffer is the newest ``buffer_size``)."""
        self.own: tuple[str, str, LinearGaussianPolicy, int] | None = None
        """With ``final_policy_model='own'``: the model id, model file and policy that ran the episodes that succeeded
        most often so far, and the iteration that fitted them; the final fit answers with them."""
        self._data: solar.RolloutData | None = None
        self.probe_groups = state_groups(self.env.state_names, self.env.ee_pos_idx)
        self.hand = (list(self.env.ee_pos_idx), np.asarray(settings.goal, dtype=np.float64))

    @property
    def horizon(self) -> int:
        return self.settings.horizon or int(self.env.horizon)

    @property
    def keeps_own(self) -> bool:
        """Whether the run keeps the best policy with the model it acted through (``final_policy_model='own'``)."""
        return self.config.final_policy_model == "own"

    # ---- life cycle --------------------------------------------------------------------------------

    def _save_model(self, iteration: int) -> str:
        self.model_id = new_id("svae", iteration)
        path = self.out_dir / f"model_{iteration:03d}.pt"
        self.model.save(path, extra={"model_id": self.model_id, "iteration": iteration, "task": self.settings.task,
                                     "goal": list(self.settings.goal)})
        self.model_path = str(path.resolve())
        return self.model_path

    def _package(self, iteration: int) -> PolicyPackage:
        self.policy_id = new_id(self.name, iteration)
        # the policies explore as the in-process loop's: the pretraining's smoothed noise (random_actor) from
        # the task's wide start where the settings ask for it, the iterations' noise smoothed by policy_smoothing
        pretrain = self.phase == "pretrain"
        smoothing = self.config.pretrain_smoothing if pretrain else self.config.policy_smoothing
        return PolicyPackage(self.policy, self.policy_id, self.dt, self.state_source, iteration, self.model_id,
                             noise_smoothing=smoothing,
                             wide_start=pretrain and self.config.pretrain_wide_start)

    def initialize(self, progress: ProgressFn = no_progress) -> FitOutput:
        cfg = self.config
        torch.manual_seed(solar.derive_seed(self.settings.seed, solar.FIT, 0, 0))
        self.model = solar.SVAELatentModel(self.image_size, self.du, cfg, readout_idx=list(self.env.ee_pos_idx))
        self.model.net.to(self.device).eval()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._save_model(0)
        self.policy = initial_policy(self.horizon, cfg.latent_dim, self.du, cfg.pretrain_noise * self.env.action_scale)
        self.phase, self.iteration, self.history, self._data = "pretrain", 0, [], None
        self.step = StepState()
        return FitOutput(self._package(0), self.model_path, new_model=True,
                         metrics={"latent_dim": float(cfg.latent_dim)})

    def update(self, data: TrainingData, iteration: int, progress: ProgressFn = no_progress,
               final: bool = False) -> FitOutput:
        if self.policy is None:
            raise FitError("no run in progress: start one with iteration 0")
        self.check_on_policy(data)
        cfg = self.config
        if data.images.shape[2:] != (self.image_size, self.image_size, 3):
            raise FitError(f"episodes have images of shape {data.images.shape[2:]}, the model reads "
                           f"{self.image_size}x{self.image_size}x3 (set the simulator's image_size)")
        if data.actions.shape[2] != self.du or data.T != self.horizon:
            raise FitError(f"episodes have {data.T} steps of {data.actions.shape[2]} actions; the run has "
                           f"{self.horizon} steps of {self.du}")
        rollouts = self._rollouts(data)
        if cfg.cost_fit == "readout" and rollouts.states is None:
            raise FitError("cost_fit='readout' reads the cost's positions out of the latent by forward kinematics "
                           "of the recorded joint angles: the episodes carry no joint states (record "
                           "joint_positions and joint_velocities)")
        metrics: dict[str, float] = {"episodes": float(data.N), "mean_episode_cost": float(data.costs.sum(1).mean())}
        new_model = False
        seed = self.settings.seed
        if self.phase == "pretrain":
            self._data = rollouts
            terms = self.model.fit(rollouts, cfg.pretrain_steps, solar.derive_seed(seed, solar.FIT, 0, 1),
                                   on_update=_fit_reporter(progress, 0.05, 0.8))
            metrics.update({f"model_{k}": v for k, v in terms.items()})
            metrics.update(solar.pretraining_diagnostics(self.model, rollouts, cfg.buffer_size, self.probe_groups,
                                                         self.hand, self.env.success_threshold))
            self._save_model(iteration)
            new_model = True
            self.step, self.phase = self.step.without_previous(), "control"
            self._start_control(rollouts)
        else:
            if self._data is None:
                self._data = self._reload_data()
            metrics.update(solar.heldout_diagnostics(self.model, self._data.last(cfg.buffer_size), rollouts,
                                                     solar.latent_cost(self.model, self.horizon), self.probe_groups))
            self._data = self._data + rollouts
            buffer = self._data.last(cfg.buffer_size)
            it = iteration - 1  # the in-process loop's number of this iteration (its pretraining is 0, here 1)
            collector = (self.model_id, self.model_path, self.policy, iteration)  # what ran these episodes
            best_before = (self.step.best_success, self.step.best_cost)
            if cfg.refit_every and it % cfg.refit_every == 0:
                self.policy, self.step, terms = solar.refit(
                    self.model, self._data, buffer, self.policy, self.step, cfg.refit_steps,
                    solar.derive_seed(seed, solar.FIT, it, 0), on_update=_fit_reporter(progress, 0.05, 0.6))
                metrics.update({f"model_{k}": v for k, v in terms.items()})
                self._save_model(iteration)
                new_model = True
            progress("dynamics", 0.7, math.nan, 0)
            metrics.update(self._improve(buffer, rollouts, final, self._successes(data), it))
            if self.keeps_own and (self.step.best_success, self.step.best_cost) != best_before:
                self.own = collector
            if final and self.keeps_own and self.own is not None:  # the final policy acts through its own model
                try:
                    self.model.load(self.own[1])
                except (OSError, ValueError, RuntimeError) as err:
                    raise FitError(f"cannot read {self.own[1]}, the model of the policy that succeeded most often "
                                   f"(iteration {self.own[3]}): {err}") from err
                self.model_id, self.model_path, self.policy, _ = self.own
                self.model.net.to(self.device).eval()
                new_model = True
                metrics["final_own_iteration"] = float(self.own[3])
            progress("policy", 0.85, math.nan, 0)
        self.history += data.episode_ids
        self.episode_dir = data.root or self.episode_dir
        self.iteration = iteration
        return FitOutput(self._package(iteration), self.model_path, new_model=new_model,
                         metrics={k: float(v) for k, v in metrics.items()})

    def _start_control(self, pretraining: solar.RolloutData) -> None:
        """After the pretraining's model fit: the first control policy (zero gains, ``init_noise``)."""
        cfg = self.config
        self.policy = initial_policy(self.horizon, cfg.latent_dim, self.du, cfg.init_noise * self.env.action_scale)

    def _improve(self, buffer: solar.RolloutData, rollouts: solar.RolloutData, final: bool,
                 successes: np.ndarray | None, it: int) -> dict[str, float]:
        """One iteration's update of the controller from ``buffer`` (the newest episodes ``rollouts``, which met
        the task's success criterion where ``successes``, if known): SOLAR's LQR-FLM step; ``final``: the run's
        final policy (the trainer evaluates it); ``it``: the in-process loop's number of the iteration. Returns
        the step's metrics."""
        cfg = self.config
        if cfg.final_policy == "best_success" and successes is None:
            raise FitError("final_policy='best_success' needs each episode's success: the episodes carry neither "
                           "the task's success flags nor distances (/solar/cost)")
        self.policy, self.step, metrics = solar.solar_step(
            self.model, self.policy, buffer, self.step, cfg, solar.task_action_weights(self.env, cfg),
            self.probe_groups, step_costs=rollouts.costs, hand=self.hand,
            distance_link=solar.task_distance_link(self.env, cfg), history=self._data, successes=successes,
            iteration=it)
        if final:  # the trainer evaluates this fit's policy: the run's final one, as in the in-process loop
            chosen = solar.final_policy(self.policy, self.step, cfg)
            changed = chosen is not self.policy
            metrics["final_best_measured"] = float(changed and cfg.final_policy == "best_measured")
            metrics["final_best_success"] = float(changed and cfg.final_policy == "best_success")
            self.policy = chosen
        return metrics

    def _successes(self, data: TrainingData) -> np.ndarray | None:
        """(N,) whether each episode met the task's success criterion at its end, as the trainer judges it
        (:func:`~solar_ros.runtime.training_run.ended_in_success`); None where the episodes carry neither the
        success flags nor the distances."""
        return ended_in_success(data.successes, data.distances, self.env.success_threshold)

    def _reload_data(self) -> solar.RolloutData:
        """The episodes the run holds, from the recorder's files (after the fitting node restarted): all of
        them when the model is refitted (a refit trains on every episode so far, as in the in-process loop) or
        the success model of sparse labels learns from all of them (``label_history``), else the buffer's."""
        cfg = self.config
        every = cfg.refit_every or (cfg.cost_fit == "labels" and cfg.label_history)
        ids = self.history if every else self.history[-cfg.buffer_size:]
        if not ids or not self.episode_dir:
            raise FitError("the saved solar run has no episode history to continue from")
        data = load_training_data(self.episode_dir, ids, ("images", "actions", self._reward_array), self.horizon)
        return self._rollouts(data)

    @property
    def _reward_array(self) -> str:
        """The recorded array the run learns its cost from: the task's costs, or a person's success labels."""
        return "success_labels" if self.config.reward == "labels" else "costs"

    def _rollouts(self, data: TrainingData) -> solar.RolloutData:
        """The episodes as the model's rollouts, with the task's true states where they can be computed. On sparse
        labels (``reward='labels'``) the costs are those the recorded success labels give, as in the in-process
        loop; the recorded task costs, where a simulator published any, are not used."""
        try:
            if self.config.reward == "labels":
                if data.labels is None:
                    raise FitError("reward='labels' learns from the recorder's success labels, and these episodes "
                                   "have none (success_labels)")
                labels = data.labels.astype(np.int64)
                costs = solar.label_costs(labels, self.config.label_window)
                return solar.RolloutData(data.images, data.actions, costs, self._true_states(data), labels=labels)
            return solar.RolloutData(data.images, data.actions, data.costs, self._true_states(data))
        except ValueError as err:
            raise FitError(str(err)) from err

    def _true_states(self, data: TrainingData) -> np.ndarray | None:
        """(N, T, ds) the task's full states at the recorded joint states (forward kinematics), for the
        diagnostics and the readout cost (``cost_fit='readout'``); None when the episodes carry no joint
        states or the task's state is not a function of them (no ``set_joint_state``, other joint count)."""
        q, dq = data.joint_positions, data.joint_velocities
        set_joint_state = getattr(self.env, "set_joint_state", None)
        if q is None or dq is None or set_joint_state is None or q.shape != dq.shape or q.shape[-1] != self.du:
            return None
        return np.stack([np.stack([set_joint_state(q[n, t], dq[n, t]) for t in range(q.shape[1])])
                         for n in range(q.shape[0])])

    # ---- persistence -------------------------------------------------------------------------------

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"method": self.name, "iteration": self.iteration, "policy_id": self.policy_id, "phase": self.phase,
                "model_id": self.model_id, "model_path": self.model_path, "history": self.history,
                "episode_dir": self.episode_dir, "settings": asdict(self.settings), "config": asdict(self.config),
                "own": None if self.own is None else {"model_id": self.own[0], "model_path": self.own[1],
                                                      "iteration": self.own[3]}}
        own = {} if self.own is None else policy_arrays("own", self.own[2])
        arrays = {"meta": np.array(json.dumps(meta)), **policy_arrays("policy", self.policy), **self.step.arrays(),
                  **own, **self._extra_arrays()}
        save_npz_atomic(self.out_dir / self.STATE_FILE, arrays)

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        """What a subclass adds to the saved state (:meth:`_load_extra` reads it back)."""
        return {}

    def _load_extra(self, arrays: dict[str, np.ndarray]) -> None:
        """Read back what :meth:`_extra_arrays` saved."""

    @classmethod
    def load(cls, settings: RunSettings, overrides: dict[str, Any], out_dir: Path,
             device: str = "cpu") -> "SolarMethod":
        arrays, meta = cls._read_saved_state(out_dir)
        method = cls(settings, overrides, out_dir, device)
        try:
            method.model.load(meta["model_path"])
            method.model.net.to(device).eval()
            method.policy = policy_from_arrays("policy", arrays)
            method.step = StepState.from_arrays(arrays)
            own = meta.get("own")
            if own:
                method.own = (own["model_id"], own["model_path"], policy_from_arrays("own", arrays),
                              int(own["iteration"]))
            method._load_extra(arrays)
        except (OSError, ValueError, KeyError) as err:
            raise FitError(f"cannot read the saved {cls.name} run in {out_dir}: {err}") from err
        if meta["settings"]["task"] != settings.task:
            raise FitError(f"the saved run in {out_dir} is for task {meta['settings']['task']}, not {settings.task}")
        method.iteration, method.policy_id, method.phase = int(meta["iteration"]), meta["policy_id"], meta["phase"]
        method.model_id, method.model_path = meta["model_id"], meta["model_path"]
        method.history, method.episode_dir = list(meta["history"]), meta["episode_dir"]
        return method


class SolarMpcMethod(SolarMethod):
    """SOLAR's MPC ablation through the nodes (``method: solar_mpc``; :mod:`solar_ros.algos.solar.mpc`).

    The same pretraining, model fits and refits as :class:`SolarMethod`, but no policy is learned: after each
    iteration's episodes the fit makes the plan of the in-process ablation's own step
    (:func:`~solar_ros.algos.solar.mpc.mpc_step`: the latent cost SOLAR's iteration would minimise and the
    ``mpc_dynamics``) and sends the controller a planner (:class:`~solar_ros.runtime.policy_msg.LatentPlanner`:
    those dynamics and cost, the ``mpc_*`` settings) with a zero-gain policy whose covariance is the exploration
    noise (``mpc_noise`` x action_scale, white, as the in-process ablation adds it; deterministic episodes have
    none). The controller replans at every time index from the encoder's filtered latent and applies the plan's
    first action."""

    name = solar_mpc.METHOD
    keeps_own = False  # no policy: the plans act

    def __init__(self, settings: RunSettings, overrides: dict[str, Any], out_dir: Path, device: str = "cpu") -> None:
        super().__init__(settings, overrides, out_dir, device)
        self.plan: solar_mpc.MPCPlan | None = None
        """The dynamics and cost the planner plans with (None before the pretraining's model fit)."""

    def _noise_policy(self) -> LinearGaussianPolicy:
        """Zero gains and offsets, covariance (``mpc_noise`` x action_scale)^2: the exploration added to the plan.
        A covariance must be positive definite: with ``mpc_noise`` 0 it is (1e-6 x action_scale)^2."""
        std = max(self.config.mpc_noise, 1e-6) * np.asarray(self.env.action_scale, dtype=np.float64)
        return initial_policy(self.horizon, self.config.latent_dim, self.du, std)

    def _plan(self, buffer: solar.RolloutData, diagnose: bool) -> dict[str, float]:
        cfg = self.config
        self.plan, metrics = solar_mpc.mpc_step(
            self.model, buffer, cfg, solar.task_action_weights(self.env, cfg), self.hand,
            solar.task_distance_link(self.env, cfg), self.probe_groups, diagnose=diagnose, history=self._data)
        return metrics

    def _start_control(self, pretraining: solar.RolloutData) -> None:
        self.policy = self._noise_policy()
        self._plan(pretraining.last(self.config.buffer_size), diagnose=False)

    def _improve(self, buffer: solar.RolloutData, rollouts: solar.RolloutData, final: bool,
                 successes: np.ndarray | None, it: int) -> dict[str, float]:
        return self._plan(buffer, diagnose=True)

    def _package(self, iteration: int) -> PolicyPackage:
        package = super()._package(iteration)
        if self.phase == "pretrain":
            return package
        planner = LatentPlanner(self.plan.dynamics, self.plan.cost, solar_mpc.cem_settings(self.config),
                                self.env.action_scale)
        return replace(package, noise_smoothing=0.0, planner=planner)

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        if self.plan is None:
            return {}
        d, c = self.plan.dynamics, self.plan.cost
        return {"plan_A": d.A, "plan_B": d.B, "plan_c": d.c, "plan_Cm": c.Cm, "plan_cv": c.cv, "plan_cc": c.cc}

    def _load_extra(self, arrays: dict[str, np.ndarray]) -> None:
        if "plan_Cm" in arrays:
            self.plan = solar_mpc.MPCPlan(LinearModel(arrays["plan_A"], arrays["plan_B"], arrays["plan_c"]),
                                          QuadraticCost(arrays["plan_Cm"], arrays["plan_cv"], arrays["plan_cc"]))


METHODS[SolarMethod.name] = SolarMethod
METHODS[SolarMpcMethod.name] = SolarMpcMethod
