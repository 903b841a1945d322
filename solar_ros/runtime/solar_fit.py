"""The ``solar`` fit method of the model fitting node: SOLAR's loop (:mod:`solar_ros.algos.solar`)
split into the fits between episode batches. Importing this module registers it in
:data:`solar_ros.runtime.fitting.METHODS`.

Life cycle (see :mod:`solar_ros.runtime.fitting`):

* iteration 0: an untrained structured VAE (so the encoder publishes latents from the first
  episode on) and a zero-gain policy on its latent with the pretraining noise
  (``pretrain_noise`` x action_scale): random Gaussian torques, as SOLAR's pretraining;
* iteration 1: the structured VAE (with the conjugate MNIW update of its LDS) is fitted on the
  recorded pretraining images, actions and costs; a new model is announced and the first control
  policy (zero gains, ``init_noise``) acts on its filtered latent;
* iteration k >= 2: the latent trajectories of the last ``buffer_size`` episodes are smoothed,
  per-step dynamics are fitted with the model's LDS posterior as prior (``prior_strength``), the
  KL step is adapted and LQR-FLM updates the policy on the learned latent cost (the same model;
  every ``refit_every`` iterations the model is refitted, announced, and the policy re-expressed
  in the new latent coordinates).

The policy acts on the encoder's filtered latent mean (``state_source: latent``, the policy
carries the model id); the dynamics are fitted on smoothed latents, as in SOLAR. Progress is
reported at every conjugate LDS update of a model fit (``loss``: the negative Kalman marginal
log-likelihood of the encoder potentials per frame) and a cancel request stops the fit there.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..algos import solar
from ..algos.common import policy_arrays, policy_from_arrays, save_npz_atomic
from ..core import lqr_flm
from ..core.dynamics import BayesianLDS, fit_dynamics
from ..core.lqr_flm import QuadraticCost
from ..core.types import LinearGaussianDynamics
from ..models.checkpoint import load_checkpoint, save_checkpoint
from .fitting import (METHODS, FitError, FitMethod, FitOutput, ProgressFn, RunSettings, TrainingData,
                      _apply_overrides, _new_id, _no_progress, load_training_data, make_task)
from .policy_msg import PolicyPackage


class _ProgressSVAE(solar.SVAELatentModel):
    """SOLAR's SVAE latent model whose fit reports progress at every conjugate LDS update."""

    def fit_with_progress(self, data: solar.RolloutData, steps: int, seed: int, progress: ProgressFn,
                          start: float, span: float) -> dict[str, float]:
        """:meth:`fit` (the in-process loop's objective, so a run through the nodes fits the model the
        benchmarked way), reporting at each conjugate LDS update between ``start`` and ``start + span``."""
        cfg = self.cfg
        n_updates = max(1, math.ceil(steps / cfg.lds_update_every) * cfg.lds_update_iters)
        calls = [0]

        def report(stats) -> None:
            calls[0] += 1
            loss = float(-np.mean(stats.log_z) / stats.means.shape[1])
            progress("representation", start + span * min(calls[0] / n_updates, 1.0), loss,
                     min(calls[0] // cfg.lds_update_iters * cfg.lds_update_every, steps))

        return self.fit(data, steps, seed, on_update=report)


def _arrays_of(prefix: str, d: dict) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": np.asarray(v) for k, v in d.items()}


class SolarMethod(FitMethod):
    """SOLAR through the nodes (see the module docstring)."""

    name = "solar"
    state_source = "latent"
    required_arrays = ("states", "actions", "costs", "images")
    STATE_FILE = "solar_state.npz"

    def __init__(self, settings: RunSettings, overrides: dict[str, Any], out_dir: Path, device: str = "cpu") -> None:
        super().__init__(settings, overrides, out_dir, device)
        base = solar.TASK_DEFAULTS.get(settings.task, solar.SolarConfig())
        self.config = _apply_overrides(base, overrides, "solar")
        self.env = make_task(settings.task, settings.goal)
        self.dt = settings.dt or float(self.env.dt)
        self.image_size = int(self.config.image_size or self.env.image_shape[0])
        self.du = int(self.env.action_dim)
        self.phase = "pretrain"
        self.model = _ProgressSVAE(self.image_size, self.du, self.config)
        self.model.net.to(device)
        self.model_id = ""
        self.model_path = ""
        self.policy = None
        self.step_mult, self.eta, self.previous = 1.0, 1.0, None
        self.episode_dir = ""
        self.history: list[str] = []
        """Every episode id fitted so far, oldest first (the buffer is the newest ``buffer_size``)."""
        self._data: solar.RolloutData | None = None

    @property
    def horizon(self) -> int:
        return self.settings.horizon or int(self.env.horizon)

    # ---- life cycle --------------------------------------------------------------------------------

    def _save_model(self, iteration: int) -> str:
        self.model_id = _new_id("svae", iteration)
        path = self.out_dir / f"model_{iteration:03d}.pt"
        save_checkpoint(path, self.model.net, extra={"model_id": self.model_id, "iteration": iteration,
                                                     "task": self.settings.task, "goal": list(self.settings.goal)})
        self.model_path = str(path.resolve())
        return self.model_path

    def _package(self, iteration: int) -> PolicyPackage:
        self.policy_id = _new_id(self.name, iteration)
        return PolicyPackage(self.policy, self.policy_id, self.dt, self.state_source, iteration, self.model_id)

    def initialize(self, progress: ProgressFn = _no_progress) -> FitOutput:
        cfg = self.config
        torch.manual_seed(solar._seed(self.settings.seed, solar._FIT, 0, 0))
        self.model = _ProgressSVAE(self.image_size, self.du, cfg)
        self.model.net.to(self.device).eval()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._save_model(0)
        self.policy = solar.initial_policy(self.horizon, cfg.latent_dim, self.env.action_scale, cfg.pretrain_noise)
        self.phase, self.iteration, self.history, self._data = "pretrain", 0, [], None
        self.step_mult, self.eta, self.previous = 1.0, 1.0, None
        return FitOutput(self._package(0), self.model_path, new_model=True,
                         metrics={"latent_dim": float(cfg.latent_dim)})

    def update(self, data: TrainingData, iteration: int, progress: ProgressFn = _no_progress) -> FitOutput:
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
        try:
            rollouts = solar.RolloutData(data.images, data.actions, data.costs)
        except ValueError as err:
            raise FitError(str(err)) from err
        metrics: dict[str, float] = {"episodes": float(data.N), "mean_episode_cost": float(data.costs.sum(1).mean())}
        new_model = False
        if self.phase == "pretrain":
            self._data = rollouts
            terms = self.model.fit_with_progress(rollouts, cfg.pretrain_steps, solar._seed(self.settings.seed, solar._FIT, 0, 1),
                                                 progress, 0.05, 0.8)
            metrics.update({f"model_{k}": v for k, v in terms.items()})
            self._save_model(iteration)
            new_model = True
            self.policy = solar.initial_policy(self.horizon, cfg.latent_dim, self.env.action_scale, cfg.init_noise)
            self.previous, self.phase = None, "control"
        else:
            if self._data is None:
                self._data = self._reload_data()
            self._data = self._data + rollouts
            buffer = self._data.last(cfg.buffer_size)
            if cfg.refit_every and iteration % cfg.refit_every == 0:
                old = self.model.smooth(buffer)
                terms = self.model.fit_with_progress(self._data, cfg.refit_steps,
                                                     solar._seed(self.settings.seed, solar._FIT, iteration, 0),
                                                     progress, 0.05, 0.6)
                self.policy = solar.reexpress_policy(self.policy, old, self.model.smooth(buffer))
                self.previous = None  # the last prediction was in the old coordinates
                metrics.update({f"model_{k}": v for k, v in terms.items()})
                self._save_model(iteration)
                new_model = True
            progress("dynamics", 0.7, math.nan, 0)
            latents = self.model.smooth(buffer)
            dynamics = fit_dynamics(latents, buffer.actions, prior=self.model.lds.as_prior(cfg.prior_strength))
            weights = (self.env.cost_action / self.env.action_scale**2) if cfg.action_cost == "task" else None
            cost = solar.latent_cost(self.model, self.horizon, weights)
            if self.previous is not None and cfg.adapt_step:
                predicted, actual = lqr_flm.step_improvements(*self.previous, dynamics, cost)
                self.step_mult = lqr_flm.adjust_step_multiplier(self.step_mult, predicted, actual)
                metrics.update({"predicted_improvement": predicted, "actual_improvement": actual})
            progress("policy", 0.85, math.nan, 0)
            new_policy, self.eta, info = lqr_flm.update(self.policy, dynamics, cost,
                                                        kl_step=cfg.kl_step * self.step_mult, eta0=self.eta)
            self.previous = (self.policy, new_policy, dynamics, cost)
            self.policy = new_policy
            metrics.update({"kl": info.kl, "kl_target": info.kl_target, "eta": self.eta, "step_mult": self.step_mult,
                            "predicted_cost": info.expected_cost,
                            "cost_r2": solar._cost_r2(self.model, latents, buffer, cost)})
        self.history += data.episode_ids
        self.episode_dir = data.root or self.episode_dir
        self.iteration = iteration
        return FitOutput(self._package(iteration), self.model_path, new_model=new_model,
                         metrics={k: float(v) for k, v in metrics.items()})

    def _reload_data(self) -> solar.RolloutData:
        """The buffer's episodes from the recorder's files (after the fitting node restarted)."""
        ids = self.history[-self.config.buffer_size:]
        if not ids or not self.episode_dir:
            raise FitError("the saved solar run has no episode history to continue from")
        data = load_training_data(self.episode_dir, ids, ("images", "actions", "costs"), self.horizon)
        return solar.RolloutData(data.images, data.actions, data.costs)

    # ---- persistence -------------------------------------------------------------------------------

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"method": self.name, "iteration": self.iteration, "policy_id": self.policy_id, "phase": self.phase,
                "model_id": self.model_id, "model_path": self.model_path, "step_mult": self.step_mult,
                "eta": self.eta, "history": self.history, "episode_dir": self.episode_dir,
                "settings": asdict(self.settings), "config": asdict(self.config)}
        arrays = {"meta": np.array(json.dumps(meta)), **policy_arrays("policy", self.policy)}
        if self.model.lds is not None:
            arrays.update(_arrays_of("lds_", {"M": self.model.lds.M, "V": self.model.lds.V,
                                              "Psi": self.model.lds.Psi, "nu": self.model.lds.nu}))
        if self.previous is not None:
            old, new, dyn, cost = self.previous
            arrays.update(policy_arrays("prev_old", old))
            arrays.update(policy_arrays("prev_new", new))
            arrays.update(_arrays_of("prev_dyn_", asdict(dyn)))
            arrays.update(_arrays_of("prev_cost_", {"Cm": cost.Cm, "cv": cost.cv, "cc": cost.cc}))
        save_npz_atomic(self.out_dir / self.STATE_FILE, arrays)

    @classmethod
    def load(cls, settings: RunSettings, overrides: dict[str, Any], out_dir: Path, device: str = "cpu") -> "SolarMethod":
        arrays, meta = cls._read_saved_state(out_dir)
        method = cls(settings, overrides, out_dir, device)
        try:
            ckpt = load_checkpoint(meta["model_path"])
            method.model.net.load_state_dict(ckpt.model.state_dict())
            method.model.net.to(device).eval()
            if "lds_M" in arrays:
                method.model.lds = BayesianLDS(M=arrays["lds_M"], V=arrays["lds_V"], Psi=arrays["lds_Psi"],
                                               nu=float(arrays["lds_nu"]))
            method.policy = policy_from_arrays("policy", arrays)
            if "prev_cost_Cm" in arrays:
                dyn = LinearGaussianDynamics(**{k: arrays[f"prev_dyn_{k}"] for k in ("Fm", "fv", "dyn_covar", "x0mu", "x0sigma")})
                cost = QuadraticCost(arrays["prev_cost_Cm"], arrays["prev_cost_cv"], arrays["prev_cost_cc"])
                method.previous = (policy_from_arrays("prev_old", arrays), policy_from_arrays("prev_new", arrays), dyn, cost)
        except (OSError, ValueError, KeyError) as err:
            raise FitError(f"cannot read the saved solar run in {out_dir}: {err}") from err
        if meta["settings"]["task"] != settings.task:
            raise FitError(f"the saved run in {out_dir} is for task {meta['settings']['task']}, not {settings.task}")
        method.iteration, method.policy_id, method.phase = int(meta["iteration"]), meta["policy_id"], meta["phase"]
        method.model_id, method.model_path = meta["model_id"], meta["model_path"]
        method.step_mult, method.eta = float(meta["step_mult"]), float(meta["eta"])
        method.history, method.episode_dir = list(meta["history"]), meta["episode_dir"]
        return method


METHODS[SolarMethod.name] = SolarMethod
