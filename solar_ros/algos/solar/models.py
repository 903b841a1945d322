"""What SOLAR's loop needs from a representation, and the two it has.

* :class:`RolloutData`: image rollouts (images, actions, costs), validated on construction;
* :class:`LatentModel`: the interface of a representation with a global linear-Gaussian latent
  dynamics model and a learned quadratic latent cost (fit, offline and online inference, the cost,
  and saving / restoring all of its state in one file);
* :class:`SVAELatentModel` (SOLAR's structured VAE, whose LDS is part of training) and
  :class:`VAELatentModel` (the ablation: a per-frame VAE, then an LDS fitted by EM in its latent);
* :func:`latent_cost`: a model's latent cost as LQR-FLM's quadratic; :func:`cost_r2`: how much of
  the observed cost it explains.
"""
from __future__ import annotations

import abc
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from ...core.cost_fit import fit_quadratic_cost
from ...core.dynamics import BayesianLDS, fit_lds_em
from ...core.gaussian import LDSParams, kalman_step, rts_smoother
from ...core.lqr_flm import QuadraticCost
from ...models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ...models.common import check_images, module_device, to_float_images
from ...models.lds_update import ConjugateLDSUpdate
from ...models.svae import SmoothedStats, StructuredVAE, SVAEConfig, beta_schedule
from ...models.train import VAETrainConfig, train_vae
from ...models.vae import VAE, VAEConfig
from ..common import Episode
from .config import SolarConfig

COPY_NOISE_VAR = 1e-4
"""Prior noise variance of the latent dimensions that copy the previous step's (see SVAELatentModel.lds_prior)."""
MODEL_STATE_KEY = "latent_model"
"""Key of a model file's ``extra`` that holds the model's own state (see :meth:`LatentModel.save`)."""


# ================================================================================================
# recorded data



@dataclass
class RolloutData:
    """Image rollouts the model is fitted on (validated on construction)."""

    images: np.ndarray
    """(N, T, H, W, C) uint8 frames seen before each action."""
    actions: np.ndarray
    """(N, T, du) actions applied."""
    costs: np.ndarray
    """(N, T) per-step costs reported by the task (lower is better)."""
    states: np.ndarray | None = None
    """(N, T, ds) true low-dimensional states, when known (simulation): never seen by the model or the
    policy, only by the diagnostics (:mod:`~solar_ros.algos.probes`)."""
    ids: np.ndarray | None = field(default=None, repr=False, compare=False)
    """(N,) numbers naming the rollouts within this process (new ones on construction, kept by ``+`` and
    :meth:`last`), so that a model can keep what it computed from a rollout's frames."""
    labels: np.ndarray | None = None
    """(N, T) success labels per step (how many times "success now" was said during it), when the reward is a
    person's sparse labels (``reward='labels'``): then ``costs`` are derived from them, not observed."""

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.actions = np.asarray(self.actions, dtype=np.float64)
        self.costs = np.asarray(self.costs, dtype=np.float64)
        if self.images.ndim != 5 or self.images.shape[0] == 0 or self.images.shape[1] == 0:
            raise ValueError(f"the dataset is empty or malformed: images must have shape (N>0, T>0, H, W, C), "
                             f"got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (0..255), got dtype {self.images.dtype}")
        N, T = self.images.shape[:2]
        if self.actions.ndim != 3 or self.actions.shape[:2] != (N, T):
            raise ValueError(f"actions must have shape ({N}, {T}, du), got {self.actions.shape}")
        if self.costs.shape != (N, T):
            raise ValueError(f"costs must have shape ({N}, {T}), got {self.costs.shape}")
        if not np.all(np.isfinite(self.actions)):
            raise ValueError("actions contain NaN or Inf")
        if not np.all(np.isfinite(self.costs)):
            bad = np.argwhere(~np.isfinite(self.costs))[0]
            raise ValueError(f"costs contain NaN or Inf (first at rollout {bad[0]}, step {bad[1]})")
        if self.states is not None:
            self.states = np.asarray(self.states, dtype=np.float64)
            if self.states.ndim != 3 or self.states.shape[:2] != (N, T):
                raise ValueError(f"states must have shape ({N}, {T}, ds), got {self.states.shape}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (N, T) or np.any(self.labels < 0):
                raise ValueError(f"labels must be counts >= 0 of shape ({N}, {T}), got {self.labels.shape}")
        if self.ids is None:
            self.ids = np.array([next(_ROLLOUT_IDS) for _ in range(N)], dtype=np.int64)
        elif np.shape(self.ids) != (N,):
            raise ValueError(f"ids must have shape ({N},), got {np.shape(self.ids)}")

    @property
    def N(self) -> int:
        return self.images.shape[0]

    @property
    def T(self) -> int:
        return self.images.shape[1]

    @classmethod
    def from_episodes(cls, episodes: list[Episode]) -> "RolloutData":
        if not episodes:
            raise ValueError("the dataset is empty: no episodes")
        if any(e.images is None for e in episodes):
            raise ValueError("episodes were recorded without images")
        return cls(np.stack([e.images for e in episodes]), np.stack([e.U for e in episodes]),
                   np.stack([e.costs for e in episodes]), np.stack([e.X for e in episodes]))

    def __add__(self, other: "RolloutData") -> "RolloutData":
        both = self.states is not None and other.states is not None
        if (self.labels is None) != (other.labels is None):
            raise ValueError("cannot join rollouts with success labels and rollouts without")
        return RolloutData(np.concatenate([self.images, other.images]), np.concatenate([self.actions, other.actions]),
                           np.concatenate([self.costs, other.costs]),
                           np.concatenate([self.states, other.states]) if both else None,
                           np.concatenate([self.ids, other.ids]),
                           None if self.labels is None else np.concatenate([self.labels, other.labels]))

    def last(self, n: int) -> "RolloutData":
        """The most recent ``n`` rollouts (all of them if there are fewer)."""
        return self.take(slice(-n, None))

    def take(self, rows: np.ndarray | slice) -> "RolloutData":
        """The rollouts at ``rows`` (their ids kept)."""
        return RolloutData(self.images[rows], self.actions[rows], self.costs[rows],
                           None if self.states is None else self.states[rows], self.ids[rows],
                           None if self.labels is None else self.labels[rows])

    def sample(self, n: int, seed: int) -> tuple["RolloutData", float]:
        """At most ``n`` of the rollouts, drawn without replacement by ``seed`` (0 or at least N: all), and
        N / their number: the weight that makes their statistics stand for the whole data's."""
        if n <= 0 or n >= self.N:
            return self, 1.0
        rows = np.sort(np.random.default_rng([seed, 0x1D5]).choice(self.N, size=n, replace=False))
        return self.take(rows), self.N / n


_ROLLOUT_IDS = itertools.count()



# ================================================================================================
# the interface


@dataclass(frozen=True)
class FitProgress:
    """Where a model fit is, as the ``on_update`` hook of :meth:`LatentModel.fit` sees it."""

    step: int
    """Gradient steps done (of ``steps``)."""
    steps: int
    """Gradient steps of the whole fit."""
    fraction: float
    """Fraction of the fit done, 0..1."""
    loss: float
    """The fit's current loss per frame (NaN when there is none)."""


FitHook = Callable[[FitProgress], None]
"""``on_update(progress)``: called during a fit (e.g. to report progress); an exception stops the fit there."""


class LatentModel(abc.ABC):
    """A representation with a global linear-Gaussian latent dynamics model and a learned latent cost.

    What SOLAR's loop (and the model fitting node) use: :meth:`fit` (train on rollouts),
    :meth:`smooth` / :meth:`filtered_means` (offline inference), :meth:`filter_step` (online
    inference, one frame), :attr:`lds` (the MNIW posterior, the prior of the per-step dynamics),
    :meth:`cost_terms` (the learned latent cost), and :meth:`save` / :meth:`load` (everything the
    model holds: the network's weights, the LDS posterior and whatever the fit computed besides).
    """

    method: ClassVar[str]
    """The training method this model belongs to ('solar', 'vae')."""
    cfg: SolarConfig
    """The run's settings (architecture and fitting)."""
    du: int
    """Dimension of the actions."""
    net: torch.nn.Module
    """The network (its ``config`` has ``image_size``, ``channels`` and ``latent_dim``)."""
    lds: BayesianLDS | None
    """MNIW posterior of the latent dynamics (None before the first fit)."""

    @property
    def dx(self) -> int:
        """Dimension of the latent state."""
        return self.net.config.latent_dim

    # ---- what every model implements ---------------------------------------------------------------

    @abc.abstractmethod
    def fit(self, data: RolloutData, steps: int, seed: int, progress: bool = False,
            on_update: FitHook | None = None) -> dict[str, float]:
        """Train on ``data`` for ``steps`` gradient steps (continuing from the current weights), seeded by
        ``seed``; ``progress`` shows a progress bar; ``on_update`` is called as the fit goes on.
        Returns the final loss terms."""

    @abc.abstractmethod
    def smooth(self, data: RolloutData) -> np.ndarray:
        """(N, T, dx) smoothed latent means E[x_t | all frames of the rollout]."""

    @abc.abstractmethod
    def filtered_means(self, data: RolloutData) -> np.ndarray:
        """(N, T, dx) filtered latent means E[x_t | frames 0..t]."""

    @abc.abstractmethod
    def filter_step(self, image: np.ndarray, prev: tuple[np.ndarray, np.ndarray] | None,
                    action: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Belief (mean, cov) over the latent after the new frame, from the belief ``prev`` before it and
        the ``action`` applied since (both None at t = 0)."""

    @abc.abstractmethod
    def cost_terms(self) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """(C, c, c0, R) of the learned cost 0.5 x^T C x + c^T x + c0 + 0.5 u^T R u."""

    def _fitted_state(self) -> dict:
        """What a fit computed besides the network's weights and :attr:`lds` (saved by :meth:`save`)."""
        return {}

    def _load_fitted_state(self, state: dict) -> None:
        """Inverse of :meth:`_fitted_state`."""

    # ---- shared ------------------------------------------------------------------------------------

    def check_data(self, data: RolloutData) -> None:
        cfg = self.net.config
        check_images(data.images, cfg.image_size, cfg.channels, 5)
        if data.actions.shape[2] != self.du:
            raise ValueError(f"the model takes {self.du}-dimensional actions, the data have {data.actions.shape[2]}")

    def state(self) -> dict:
        """Everything the model holds besides the network's weights: the LDS posterior and the fitted extras."""
        lds = None if self.lds is None else {"M": self.lds.M, "V": self.lds.V, "Psi": self.lds.Psi, "nu": self.lds.nu}
        return {"method": self.method, "lds": lds, "fitted": self._fitted_state()}

    def load_state(self, state: dict) -> None:
        """Inverse of :meth:`state`."""
        self._check_method(state)
        lds = state["lds"]
        self.lds = None if lds is None else BayesianLDS(M=lds["M"], V=lds["V"], Psi=lds["Psi"], nu=lds["nu"])
        self._load_fitted_state(state["fitted"])

    def _check_method(self, state: dict) -> None:
        if state.get("method") != self.method:
            raise ValueError(f"the saved state is of a {state.get('method')!r} model, this is a {self.method!r} one")

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the whole model to one checkpoint file (atomically): the network (kind, config,
        weights) and :meth:`state`, plus the caller's ``extra`` (e.g. a model id, a run's loop state).
        The file is a :mod:`~solar_ros.models.checkpoint` file, so the encoder reads the network from it."""
        extra = dict(extra or {})
        if MODEL_STATE_KEY in extra:
            raise ValueError(f"{MODEL_STATE_KEY!r} is the model's own key in the checkpoint's extra")
        return save_checkpoint(path, self.net, extra={**extra, MODEL_STATE_KEY: self.state()})

    def load(self, path: str | os.PathLike) -> dict:
        """Restore what :meth:`save` wrote into this model (same architecture); returns the caller's ``extra``."""
        return self.restore(load_checkpoint(path), path)

    def restore(self, ckpt: Checkpoint, source: str | os.PathLike = "the checkpoint") -> dict:
        """:meth:`load` from a checkpoint already read (``source`` names it in errors)."""
        if MODEL_STATE_KEY not in ckpt.extra:
            raise ValueError(f"{source} holds no {self.method} latent model state")
        self._check_method(ckpt.extra[MODEL_STATE_KEY])
        self.net.load_state_dict(ckpt.model.state_dict())
        self.net.eval()
        self.load_state(ckpt.extra[MODEL_STATE_KEY])
        return {k: v for k, v in ckpt.extra.items() if k != MODEL_STATE_KEY}


# ================================================================================================
# SOLAR's structured VAE


class ReadoutHead(torch.nn.Module):
    """p_t ~ N(P x_t[:k] + b, diag(exp(log_var))): the positions the task's cost compares, explained linearly
    by the first ``k`` (observed) latent dimensions (see :attr:`SolarConfig.readout_weight`)."""

    def __init__(self, observed_dim: int, n_targets: int):
        super().__init__()
        self.observed_dim = observed_dim
        self.linear = torch.nn.Linear(observed_dim, n_targets)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)
        self.log_var = torch.nn.Parameter(torch.full((n_targets,), math.log(0.1 ** 2)))
        self.centred = False
        """Whether the bias has been set to the mean of the first data fitted."""

    def centre(self, targets: np.ndarray) -> None:
        """Start the bias at the targets' mean (once), so the first steps fit the latent, not the offset."""
        if not self.centred:
            with torch.no_grad():
                self.linear.bias.copy_(torch.as_tensor(targets.reshape(-1, targets.shape[-1]).mean(0)))
            self.centred = True

    def log_likelihood(self, targets: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log N(targets; P z[..., :k] + b, diag(exp(log_var))) summed over the coordinates: (...)."""
        r = targets - self.linear(z[..., :self.observed_dim])
        return -0.5 * (r ** 2 / self.log_var.exp() + self.log_var + math.log(2 * math.pi)).sum(-1)


class SVAELatentModel(LatentModel):
    """SOLAR's structured VAE: the LDS is part of training (conjugate MNIW updates between steps)."""

    method = "solar"

    def __init__(self, image_size: int, action_dim: int, cfg: SolarConfig, readout_idx: list[int] | None = None):
        """``readout_idx``: the true-state columns the task's cost compares, the targets of the readout head
        (needed when ``cfg.readout_weight`` > 0)."""
        self.cfg = cfg
        self.du = action_dim
        self.net = StructuredVAE(SVAEConfig(image_size=image_size, latent_dim=cfg.latent_dim, action_dim=action_dim,
                                            first_stride=cfg.first_stride, encoder=cfg.encoder, keypoints=cfg.keypoints,
                                            observed_dim=cfg.observed_dim, cost_form=cfg.cost_form,
                                            cost_relative_noise=cfg.cost_relative_noise,
                                            background=cfg.background, precision=cfg.fit_precision))
        self.lds = None
        self._potentials: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._potentials_stamp: tuple = ()
        prior = self.lds_prior()
        # Start from the prior's mean dynamics: with hidden dimensions a random-walk start would leave
        # them uncoupled from the observed ones, and the conjugate updates would keep them so.
        _set_lds(self.net, prior.to_lds_params(np.zeros(self.dx), np.eye(self.dx)))
        self.readout_idx = None if readout_idx is None else [int(i) for i in readout_idx]
        self.readout_head: ReadoutHead | None = None
        if cfg.readout_weight > 0:
            if not self.readout_idx:
                raise ValueError("SolarConfig.readout_weight > 0 trains a readout head on the positions the task's "
                                 "cost compares; give their state columns (readout_idx)")
            self.readout_head = ReadoutHead(self.net.config.potential_dim, len(self.readout_idx))

    @property
    def fixed_rows(self) -> np.ndarray:
        """LDS rows held at the prior: the hidden dimensions, exact copies of the previous observed latent."""
        return np.arange(self.net.config.potential_dim, self.dx)

    def lds_prior(self) -> BayesianLDS:
        """SOLAR's MNIW prior centred on persistence; hidden dimension j copies observed dimension j of the
        previous step (with noise variance COPY_NOISE_VAR), so the state is [x_t, x_{t-1}]: one frame shows a
        position, two show its velocity, and the learned rows x_{t+1} = A1 x_t + A2 x_{t-1} + B u + c are
        second order, as the mechanics of what the images show."""
        cfg = self.cfg
        prior = BayesianLDS.default_prior(self.dx, self.du, scale=cfg.lds_prior_scale)
        observed = self.net.config.potential_dim
        copy = self.fixed_rows
        prior.M[copy] = 0.0
        prior.M[copy, copy - observed] = 1.0
        prior.Psi[copy, copy] = COPY_NOISE_VAR * (prior.nu - self.dx - 1)
        return prior

    def fit(self, data: RolloutData, steps: int, seed: int, progress: bool = False,
            on_update: FitHook | None = None) -> dict[str, float]:
        """Train on ``data`` (continuing from the current weights); returns the final loss terms.

        ``on_update`` is called at each conjugate LDS update during training, with the negative Kalman
        marginal log-likelihood of the encoder potentials per frame as the loss (an exception it
        raises stops the fit there)."""
        self.check_data(data)
        cfg = self.cfg
        update = ConjugateLDSUpdate(self.lds_prior(), fixed_rows=self.fixed_rows)
        n_updates = max(1, math.ceil(steps / cfg.lds_update_every) * cfg.lds_update_iters)
        calls = [0]

        def training_update(stats: SmoothedStats, weight: float = 1.0) -> LDSParams:
            params = update(stats, weight)
            if on_update is not None:
                calls[0] += 1
                loss = float(-np.mean(stats.log_z) / stats.means.shape[1])
                on_update(FitProgress(step=min(calls[0] // cfg.lds_update_iters * cfg.lds_update_every, steps),
                                      steps=steps, fraction=min(calls[0] / n_updates, 1.0), loss=loss))
            return params

        if cfg.background and not self.net.background.is_set:
            self.net.set_background(data.images)  # once, from the first data fitted (saved with the weights)
        head = None
        if self.readout_head is not None:
            if data.states is None:
                raise ValueError("the readout head (readout_weight > 0) is trained on the rollouts' true states "
                                 "(the positions the cost compares), and these rollouts carry none")
            if max(self.readout_idx) >= data.states.shape[2]:
                raise ValueError(f"readout_idx {self.readout_idx} out of range for states of dimension "
                                 f"{data.states.shape[2]}")
            self.readout_head.centre(data.states[..., self.readout_idx])
            head = (self.readout_head, self.readout_idx)
        windows = _windows(data, cfg.train_window)
        history = train_svae_weighted(self.net, windows, steps, cfg, seed, training_update, progress,
                                      lds_sequences=cfg.lds_fit_rollouts * (windows.N // data.N), head=head)
        # The LDS (and the initial-state distribution the online filter starts from) from whole rollouts
        # (at most cfg.lds_fit_rollouts of them, weighted to stand for all).
        lds_data, weight = data.sample(cfg.lds_fit_rollouts, seed)
        for _ in range(cfg.lds_update_iters):
            _set_lds(self.net, update(self.smoothed_stats(lds_data), weight))
        self.lds = update.posterior
        self.net.eval()
        return _last_terms(history)

    def smooth(self, data: RolloutData) -> np.ndarray:
        """(N, T, dx) smoothed latent means E[x_t | all frames of the rollout]."""
        self.check_data(data)
        return self.smoothed_stats(data).means

    POTENTIAL_BATCH = 32
    """Rollouts encoded per forward pass."""

    def smoothed_stats(self, data: RolloutData) -> SmoothedStats:
        """The network's smoothed statistics of ``data`` under its current LDS, with each rollout's encoder
        potentials computed once while the encoder's weights stay the same (one iteration smooths its
        rollouts several times: held-out diagnostics, the refit's re-expression, the dynamics fit)."""
        stamp = tuple((t.data_ptr(), t._version) for t in self.net.potential_inputs())
        if stamp != self._potentials_stamp:
            self._potentials, self._potentials_stamp = {}, stamp
        missing = [i for i, rid in enumerate(data.ids) if int(rid) not in self._potentials]
        for start in range(0, len(missing), self.POTENTIAL_BATCH):
            rows = missing[start:start + self.POTENTIAL_BATCH]
            m, s = self.net.sequence_potentials(data.images[rows])
            for j, i in enumerate(rows):
                self._potentials[int(data.ids[i])] = (m[j], s[j])
        picked = [self._potentials[int(rid)] for rid in data.ids]
        return self.net.smoothed_stats_from_potentials(torch.stack([m for m, _ in picked]),
                                                       torch.stack([s for _, s in picked]), data.actions)

    def filtered_means(self, data: RolloutData) -> np.ndarray:
        """(N, T, dx) filtered latent means E[x_t | frames 0..t] from the batch smoother's forward pass."""
        self.check_data(data)
        with torch.no_grad():
            N, T = data.images.shape[:2]
            cfg = self.net.config
            x = to_float_images(data.images, module_device(self.net)).view(N, T, cfg.channels, cfg.image_size,
                                                                           cfg.image_size)
            _, _, res = self.net.infer(x, torch.from_numpy(data.actions))
        return res.filtered_means.cpu().numpy()

    def filter_step(self, image: np.ndarray, prev: tuple[np.ndarray, np.ndarray] | None,
                    action: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Belief (mean, cov) over the latent after the new frame; ``prev`` None at t = 0."""
        if prev is None:
            return self.net.filter_step(image)
        return self.net.filter_step(image, prev[0], prev[1], action)

    def cost_terms(self) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """(C, c, c0, R) of the learned cost 0.5 x^T C x + c^T x + c0 + 0.5 u^T R u."""
        q = self.net.latent_cost()
        return q.C, q.c, q.c0, q.R

    def _fitted_state(self) -> dict:
        if self.readout_head is None:
            return {}
        return {"readout_head": {k: v.detach().cpu().clone() for k, v in self.readout_head.state_dict().items()},
                "readout_centred": self.readout_head.centred}

    def _load_fitted_state(self, state: dict) -> None:
        if self.readout_head is not None and "readout_head" in state:
            self.readout_head.load_state_dict(state["readout_head"])
            self.readout_head.centred = bool(state["readout_centred"])


def train_svae_weighted(net: StructuredVAE, data: RolloutData, steps: int, cfg: SolarConfig, seed: int,
                        update: Callable[[SmoothedStats, float], LDSParams], progress: bool = False,
                        lds_sequences: int = 0,
                        head: tuple[ReadoutHead, list[int]] | None = None) -> dict[str, list[float]]:
    """SVAE training as :func:`~solar_ros.models.train.train_svae` (Adam, global grad-norm clip 5, beta
    annealed from 1e-4 to ``cfg.beta_end``, conjugate LDS update every ``cfg.lds_update_every`` steps),
    with the cost log-likelihood weighted by max(beta, ``cfg.cost_weight_floor``) instead of beta.

    Per frame the loss is -(recon_ll + w_cost cost_ll - beta KL). Minibatches of ``cfg.batch_size``
    sequences are drawn without replacement from a generator seeded by ``seed``. Each LDS update smooths
    at most ``lds_sequences`` of the sequences (drawn afresh each time; 0: all) and calls
    ``update(stats, weight)`` with the weight that makes them stand for all of ``data``.

    ``head`` (the readout head and the state columns it explains, see :attr:`SolarConfig.readout_weight`):
    its log-likelihood of those columns of ``data.states``, on the same posterior draw as the cost's, joins
    the objective weighted by ``cfg.readout_weight`` (it trains at the cost model's learning rate).
    """
    rng = np.random.default_rng(seed)
    noise = torch.Generator().manual_seed(seed)
    head_params = [] if head is None else list(head[0].parameters())
    cost_params = list(net.cost_model.parameters()) + head_params
    others = [p for p in net.parameters() if p.requires_grad and all(p is not q for q in cost_params)]
    opt = torch.optim.Adam([{"params": others, "lr": cfg.lr}, {"params": cost_params, "lr": cfg.cost_lr}])
    device = module_device(net)
    if head is not None:
        head[0].to(device)
        targets = torch.from_numpy(data.states[..., head[1]]).float().to(device)
    actions = torch.from_numpy(data.actions).float().to(device)
    costs = torch.from_numpy(data.costs).float().to(device)
    N, T, H, W, C = data.images.shape
    batch = min(cfg.batch_size, N)
    anneal = int(cfg.beta_anneal_fraction * steps)
    history: dict[str, list[float]] = {}
    net.train()
    for step in tqdm(range(steps), desc="svae", disable=not progress, leave=False):
        beta = beta_schedule(step, anneal, 1e-4, cfg.beta_end)
        cost_weight = max(beta, cfg.cost_weight_floor)
        idx = np.sort(rng.choice(N, size=batch, replace=False))
        x = to_float_images(data.images[idx], device).view(batch, T, C, H, W)
        terms = net.loss(x, actions[idx], costs[idx], beta=beta, generator=noise, return_latents=head is not None)
        loss = terms["loss"] - (cost_weight - beta) * terms["cost_ll"]
        if head is not None:
            terms["readout_ll"] = head[0].log_likelihood(targets[idx], terms.pop("z")).sum(1).mean() / T
            loss = loss - cfg.readout_weight * terms["readout_ll"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SVAE loss became {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(net.parameters()) + head_params, 5.0)
        opt.step()
        for k, v in {**terms, "loss": loss.detach(), "beta": beta, "cost_weight": cost_weight}.items():
            history.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))
        if (step + 1) % cfg.lds_update_every == 0 and step + 1 < steps:
            part, weight = data.sample(lds_sequences, seed + step + 1)
            for _ in range(cfg.lds_update_iters):
                _set_lds(net, update(net.smoothed_stats(part.images, part.actions), weight))
            net.train()
    return history


def _set_lds(net: StructuredVAE, params: LDSParams) -> None:
    net.set_dynamics(params.A, params.B, params.b, params.Q, params.mu0, params.V0)


# ================================================================================================
# the ablation: a per-frame VAE


class VAELatentModel(LatentModel):
    """The ablation: a per-frame VAE (N(0, I) prior, no dynamics in training); afterwards an LDS is
    fitted by EM to its encoder potentials and a quadratic cost by least squares on the smoothed latents
    (both saved with the model: :meth:`_fitted_state`)."""

    method = "vae"

    def __init__(self, image_size: int, action_dim: int, cfg: SolarConfig, readout_idx: list[int] | None = None):
        """``readout_idx`` is accepted for a common signature and unused: the ablation's VAE has no readout head."""
        del readout_idx
        self.cfg = cfg
        self.du = action_dim
        self.net = VAE(VAEConfig(image_size=image_size, latent_dim=cfg.latent_dim, first_stride=cfg.first_stride,
                                  encoder=cfg.encoder, keypoints=cfg.keypoints, background=cfg.background,
                                  precision=cfg.fit_precision))
        self.lds = None
        self.params: LDSParams | None = None
        self.cost_fit: tuple[np.ndarray, np.ndarray, float, np.ndarray] | None = None

    def _potentials(self, data: RolloutData) -> tuple[np.ndarray, np.ndarray]:
        N, T = data.images.shape[:2]
        mean, var = self.net.encode(data.images.reshape(N * T, *data.images.shape[2:]))
        return mean.reshape(N, T, -1), var.reshape(N, T, -1)

    def fit(self, data: RolloutData, steps: int, seed: int, progress: bool = False,
            on_update: FitHook | None = None) -> dict[str, float]:
        """Train the VAE on the frames of ``data``, then fit the LDS by EM and the cost by least squares.

        ``on_update`` is called once the network is trained (its loss) and once the LDS and the cost are fitted."""
        self.check_data(data)
        cfg = self.cfg
        # Same frames per step as the SVAE: batch_size sequences of T frames.
        window = None if cfg.train_window is None else min(cfg.train_window, data.T)
        if cfg.background and not self.net.background.is_set:
            self.net.set_background(data.images)  # once, from the first data fitted (saved with the weights)
        history = train_vae(self.net, data.images, VAETrainConfig(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                                                  seed=seed, disable_progress=not progress,
                                                                  window=window))
        self.net.eval()
        terms = _last_terms(history)
        if on_update is not None:
            on_update(FitProgress(steps, steps, 0.9, terms.get("loss", math.nan)))
        m, s = self._potentials(data)
        prior = BayesianLDS.default_prior(self.dx, self.du, scale=cfg.lds_prior_scale)
        em = fit_lds_em(m, data.actions, _diag(s), prior, n_iter=cfg.vae_em_iterations, point="mean")
        self.lds = em.posterior
        self.params = em.posterior.to_lds_params(em.x0mu, em.x0sigma, "mean")
        X = em.smoothed.means
        q = fit_quadratic_cost(X, data.actions, data.costs, psd=True, ridge=1e-6)
        dx = self.dx
        # The fit couples x and u only through Cm[:dx, dx:]; keep the separable part, like the SVAE's model.
        C, c, R = q.Cm[0, :dx, :dx], q.cv[0, :dx], _psd(q.Cm[0, dx:, dx:])
        self.cost_fit = (C, c, float(q.cc[0]), R)
        if on_update is not None:
            on_update(FitProgress(steps, steps, 1.0, terms.get("loss", math.nan)))
        return terms

    def smooth(self, data: RolloutData) -> np.ndarray:
        self.check_data(data)
        m, s = self._potentials(data)
        return rts_smoother(self.params, m, _diag(s), data.actions).means

    def filtered_means(self, data: RolloutData) -> np.ndarray:
        self.check_data(data)
        m, s = self._potentials(data)
        return rts_smoother(self.params, m, _diag(s), data.actions).filtered.filtered_means

    def filter_step(self, image: np.ndarray, prev: tuple[np.ndarray, np.ndarray] | None,
                    action: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        m, s = self.net.encode(image)
        mean, cov, _ = kalman_step(self.params, m, np.diag(s), prev, action)  # time-invariant LDS: no t needed
        return mean, cov

    def cost_terms(self) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        return self.cost_fit

    def _fitted_state(self) -> dict:
        p = self.params
        if p is None:
            return {}
        C, c, c0, R = self.cost_fit
        return {"A": p.A, "B": p.B, "b": p.b, "Q": p.Q, "mu0": p.mu0, "V0": p.V0,
                "cost_C": C, "cost_c": c, "cost_c0": c0, "cost_R": R}

    def _load_fitted_state(self, state: dict) -> None:
        if not state:
            self.params, self.cost_fit = None, None
            return
        self.params = LDSParams(A=state["A"], Q=state["Q"], mu0=state["mu0"], V0=state["V0"], B=state["B"],
                                b=state["b"])
        self.cost_fit = (state["cost_C"], state["cost_c"], float(state["cost_c0"]), state["cost_R"])


MODEL_CLASSES: dict[str, type[LatentModel]] = {"solar": SVAELatentModel, "vae": VAELatentModel,
                                               "solar_mpc": SVAELatentModel}
"""The latent model of each method (the MPC ablation plans on SOLAR's model)."""
"""Training method -> its latent model."""


def _windows(data: RolloutData, window: int | None) -> RolloutData:
    """Non-overlapping windows of ``window`` steps cut from every rollout (a tail shorter than that is dropped)."""
    if window is None or window >= data.T:
        return data
    n = data.T // window
    cut = lambda a: a[:, :n * window].reshape(data.N * n, window, *a.shape[2:])  # noqa: E731
    return RolloutData(cut(data.images), cut(data.actions), cut(data.costs),
                       None if data.states is None else cut(data.states))


def _diag(variances: np.ndarray) -> np.ndarray:
    return variances[..., :, None] * np.eye(variances.shape[-1])


def _psd(M: np.ndarray, floor: float = 0.0) -> np.ndarray:
    w, V = np.linalg.eigh(0.5 * (M + M.T))
    return (V * np.maximum(w, floor)) @ V.T


def _last_terms(history: dict[str, list[float]]) -> dict[str, float]:
    """Mean of each loss term over the last 10% of the steps (a stable summary for the logs)."""
    out = {}
    for k, v in history.items():
        if v:
            tail = v[-max(1, len(v) // 10):]
            out[k] = float(np.mean(tail))
    return out


# ================================================================================================
# the latent cost as LQR-FLM sees it


def latent_cost(model: LatentModel, T: int, task_action_weights: np.ndarray | None = None) -> QuadraticCost:
    """The model's latent cost as LQR-FLM's quadratic over z = [x; u], the same at every step.

    ``task_action_weights`` (du,) replaces the learned action term by 0.5 sum_i w_i u_i^2.
    """
    C, c, c0, R = model.cost_terms()
    if task_action_weights is not None:
        R = np.diag(task_action_weights)
    return _separable_cost(C, c, c0, R, T)


def _separable_cost(C: np.ndarray, c: np.ndarray, c0: float, R: np.ndarray, T: int) -> QuadraticCost:
    """0.5 x^T C x + c^T x + c0 + 0.5 u^T R u as LQR-FLM's quadratic over z = [x; u], the same at every step."""
    dx, du = C.shape[0], R.shape[0]
    Cm = np.zeros((dx + du, dx + du))
    Cm[:dx, :dx], Cm[dx:, dx:] = C, R
    return QuadraticCost.constant(Cm, np.concatenate([c, np.zeros(du)]), c0, T)


def local_latent_cost(latents: np.ndarray, data: RolloutData, action_weights: np.ndarray,
                      ridge: float = 1e-4) -> QuadraticCost:
    """A quadratic of the latent fitted to the rollouts ``data`` where they are (``cost_fit='local'``).

    Least squares on ``latents`` (N, T, dx) against the observed costs minus the task's action
    penalty 0.5 sum_i w_i u_i^2 (``action_weights``: w), with the curvature projected onto the PSD
    cone and the linear terms refitted; the action term is the task's. The same at every step.
    """
    w = np.asarray(action_weights, dtype=np.float64)
    state_costs = data.costs - 0.5 * np.einsum("nti,i,nti->nt", data.actions, w, data.actions)
    N, T, _ = latents.shape
    q = fit_quadratic_cost(latents, np.zeros((N, T, 0)), state_costs, psd=True, ridge=ridge)
    return _separable_cost(q.Cm[0], q.cv[0], float(q.cc[0]), np.diag(w), T)


@dataclass(frozen=True)
class DistanceLink:
    """The task's state cost per step as a function of the squared distance q = D^2 to the goal:
    f(q) = 0.5 l2 q + l1 sqrt(alpha + q), the form of every task's cost (``StateDistanceCost``)."""

    l2: float
    """Weight of the squared distance."""
    l1: float
    """Weight of the smoothed absolute distance."""
    alpha: float
    """Smoothing of the absolute distance near zero."""

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) and v >= 0 for v in (self.l2, self.l1, self.alpha)) or self.l2 + self.l1 <= 0:
            raise ValueError(f"DistanceLink needs finite l2, l1, alpha >= 0 and l2 + l1 > 0, got {self}")

    def value(self, q: np.ndarray) -> np.ndarray:
        """f(q) for squared distances q >= 0."""
        q = np.maximum(q, 0.0)
        return 0.5 * self.l2 * q + self.l1 * np.sqrt(self.alpha + q)

    def slope(self, q: np.ndarray) -> np.ndarray:
        """f'(q) = 0.5 l2 + 0.5 l1 / sqrt(alpha + q) for q >= 0 (q below 0 counts as 0)."""
        return 0.5 * self.l2 + 0.5 * self.l1 / np.sqrt(self.alpha + np.maximum(q, 0.0))

    def squared_distance(self, state_costs: np.ndarray) -> np.ndarray:
        """The inverse: q with f(q) = the state cost (costs below f(0) give 0). With r = sqrt(alpha + q),
        f = 0.5 l2 (r^2 - alpha) + l1 r is a quadratic in r."""
        s = np.asarray(state_costs, dtype=np.float64) + 0.5 * self.l2 * self.alpha
        if self.l2 > 0:
            r = (np.sqrt(self.l1 ** 2 + 2.0 * self.l2 * np.maximum(s, 0.0)) - self.l1) / self.l2
        else:
            r = np.maximum(s, 0.0) / self.l1
        return np.maximum(r ** 2 - self.alpha, 0.0)


def distance_latent_cost(latents: np.ndarray, data: RolloutData, action_weights: np.ndarray, link: DistanceLink,
                         ridge: float = 1e-4) -> QuadraticCost:
    """The task's cost through a quadratic of the latent fitted to the squared distance (``cost_fit='distance'``).

    The observed costs minus the task's action penalty 0.5 sum_i w_i u_i^2 (``action_weights``: w) are
    turned back into squared distances to the goal (``link``, the task's cost form); a quadratic q(x) of
    the latent is fitted to them by least squares on ``latents`` (N, T, dx), its curvature projected
    onto the positive semi-definite cone. If the latent is linear in the positions the cost measures,
    the squared distance is exactly such a quadratic, down to the goal, where the cost itself (a cone)
    is not. LQR-FLM's cost at step t is f(q(x)) expanded to first order in q around the buffer's
    step-t frames (Gauss-Newton: f'(q) averaged over them times q(x), the same value there), plus the
    task's action penalty."""
    w = np.asarray(action_weights, dtype=np.float64)
    state_costs = data.costs - 0.5 * np.einsum("nti,i,nti->nt", data.actions, w, data.actions)
    N, T, dx = latents.shape
    q = fit_quadratic_cost(latents, np.zeros((N, T, 0)), link.squared_distance(state_costs), psd=True, ridge=ridge)
    return _linked_cost(latents, q.Cm[0], q.cv[0], float(q.cc[0]), link, w)


def _linked_cost(latents: np.ndarray, C: np.ndarray, c: np.ndarray, c0: float | np.ndarray, link: DistanceLink,
                 w: np.ndarray) -> QuadraticCost:
    """LQR-FLM's cost f(q(x)) + 0.5 sum_i w_i u_i^2 for a squared distance q(x) = 0.5 x^T C x + c^T x + c0
    of the latent and the task's cost form f (``link``): at step t, f expanded to first order in q around
    the ``latents`` (N, T, dx) of that step (Gauss-Newton: f'(q) averaged over them times q(x), the same
    value there). ``c`` (dx,) and ``c0`` may also be given per step, (T, dx) and (T,)."""
    N, T, dx = latents.shape
    c, c0 = np.asarray(c, dtype=np.float64), np.asarray(c0, dtype=np.float64)
    linear = latents @ c if c.ndim == 1 else np.einsum("nti,ti->nt", latents, c)
    q_hat = 0.5 * np.einsum("nti,ij,ntj->nt", latents, C, latents) + linear + c0
    slope = link.slope(q_hat).mean(axis=0)  # (T,)
    offset = link.value(q_hat).mean(axis=0) - slope * np.maximum(q_hat, 0.0).mean(axis=0)
    du = w.size
    Cm = np.zeros((T, dx + du, dx + du))
    Cm[:, :dx, :dx] = slope[:, None, None] * C
    Cm[:, dx:, dx:] = np.diag(w)
    cv = np.zeros((T, dx + du))
    cv[:, :dx] = slope[:, None] * c
    return QuadraticCost(Cm, cv, slope * c0 + offset)


def approach_goal(goal: np.ndarray, T: int, height: float, fraction: float) -> np.ndarray:
    """The goal of each of ``T`` steps (T, 3n) for a cost on n 3-D points (``goal`` (3n,)): the first
    round(``fraction`` T) steps' raised by ``height`` (m) along z on every point, the others' the task's own.
    ValueError unless the goal is 3-D points."""
    goal = np.asarray(goal, dtype=np.float64)
    if goal.ndim != 1 or goal.size % 3:
        raise ValueError(f"approach_height needs a cost on 3-D points; this task's cost compares {goal.size} "
                         "coordinates")
    if not (math.isfinite(height) and height >= 0 and 0 < fraction < 1):
        raise ValueError(f"approach_height must be >= 0 and approach_fraction in (0, 1), got {height}, {fraction}")
    goals = np.tile(goal, (T, 1))
    goals[:round(fraction * T), 2::3] += height
    return goals


def fit_readout(latents: np.ndarray, targets: np.ndarray, ridge: float = 1e-6,
                weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The linear readout targets ~ P x + b of the latent, by ridge least squares over every frame
    (``latents`` (N, T, dx), ``targets`` (N, T, dp); the ridge is relative to the latent's scale and
    leaves the intercept free). ``weights`` (N, T), when given, weight each frame's squared error
    (weighted least squares; None: every frame alike). Returns P (dp, dx) and b (dp,)."""
    X = latents.reshape(-1, latents.shape[-1])
    Y = targets.reshape(-1, targets.shape[-1])
    w = np.ones(len(X)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(X),) or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("fit_readout: weights must be finite, non-negative, not all zero, one per frame")
    w = w / w.sum()
    mx, my = w @ X, w @ Y
    Xc = X - mx
    G = Xc.T @ (w[:, None] * Xc)
    P = np.linalg.solve(G + ridge * max(float(np.trace(G)), 1e-12) * np.eye(G.shape[0]),
                        Xc.T @ (w[:, None] * (Y - my))).T
    return P, my - P @ mx


def spread_points(positions: np.ndarray, scale: float) -> np.ndarray:
    """``positions`` (..., 3n): n 3-D points, the first the reference (sawyer_stack: the block's centre, then its x
    and y points); the others moved to ``scale`` times their offset from the first. The squared distance of
    the result to a goal spread alike weighs a turn of the points about the first ``scale``^2 times more and a
    translation the same. ValueError unless there are several 3-D points (where ``scale`` is not 1)."""
    positions = np.asarray(positions, dtype=np.float64)
    if scale == 1.0:
        return positions
    d = positions.shape[-1]
    if d % 3 or d < 6:
        raise ValueError(f"readout_point_scale needs a cost on several 3-D points (sawyer_stack's block points); "
                         f"this task's cost compares {d} coordinates")
    pts = positions.reshape(*positions.shape[:-1], d // 3, 3)
    out = pts.copy()
    out[..., 1:, :] = pts[..., :1, :] + scale * (pts[..., 1:, :] - pts[..., :1, :])
    return out.reshape(positions.shape)


def readout_latent_cost(latents: np.ndarray, data: RolloutData, action_weights: np.ndarray, link: DistanceLink,
                        idx: list[int], goal: np.ndarray, near_scale: float = 0.0,
                        point_scale: float = 1.0) -> tuple[QuadraticCost, float]:
    """The task's cost on the positions it measures, read out linearly from the latent (``cost_fit='readout'``).

    The cost may use the robot's kinematics, the policy only the latent: a linear readout p = P x + b
    of the positions the task's cost compares to ``goal`` (the rollouts' true states at ``idx``: on the
    robot, forward kinematics of the recorded joint angles) is fitted to the rollouts ``data`` on their
    ``latents`` (N, T, dx). The squared distance |P x + b - goal|^2 is then an exact quadratic of the
    latent, zero where the readout puts the goal, and LQR-FLM minimises the task's cost form (``link``)
    of it as with ``cost_fit='distance'``, plus the task's action penalty (``action_weights``).
    ``near_scale`` s > 0 weights each frame by 1 / (d^2 + s^2), d its true distance to the goal, so that the
    readout is most precise where the cost's minimum is (0: every frame alike; d to the last step's goal where
    ``goal`` is given per step, (T, dp): :func:`approach_goal`). ``point_scale`` k != 1 compares
    the positions spread about their first point (:func:`spread_points`): the block's turn weighs k^2 times
    more, its translation the same. Returns the cost and the readout's R^2 on ``data`` (unweighted, on the
    compared positions)."""
    if data.states is None:
        raise ValueError("cost_fit='readout' needs the rollouts' true states (the positions the cost measures)")
    targets = data.states[..., list(idx)]
    goal = np.asarray(goal, dtype=np.float64)
    if goal.shape not in (targets.shape[-1:], targets.shape[1:]):
        raise ValueError(f"the goal has shape {goal.shape}, the cost's positions {targets.shape[-1:]} (one goal, or "
                         f"one per step: {targets.shape[1:]})")
    if not (math.isfinite(point_scale) and point_scale > 0):
        raise ValueError(f"point_scale must be > 0, got {point_scale}")
    targets, goal = spread_points(targets, point_scale), spread_points(goal, point_scale)
    for name, a in (("latents", latents), ("true states", targets), ("goal", goal)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"cost_fit='readout': the {name} hold NaN or inf values")
    if not near_scale >= 0:
        raise ValueError(f"near_scale must be >= 0, got {near_scale}")
    weights = None
    if near_scale > 0:
        weights = 1.0 / (np.sum((targets - goal.reshape(-1, goal.shape[-1])[-1]) ** 2, axis=-1) + near_scale ** 2)
    P, b = fit_readout(latents, targets, weights=weights)
    resid = targets - (latents @ P.T + b)
    total = np.sum((targets - targets.reshape(-1, targets.shape[-1]).mean(0)) ** 2)
    r2 = float(1.0 - np.sum(resid ** 2) / total) if total > 0 else math.nan
    e = b - goal  # (dp,) or per step (T, dp)
    linear, constant = (2.0 * P.T @ e, float(e @ e)) if e.ndim == 1 else (2.0 * e @ P, np.sum(e * e, axis=-1))
    cost = _linked_cost(latents, 2.0 * P.T @ P, linear, constant, link, np.asarray(action_weights, dtype=np.float64))
    return cost, r2


def cost_r2(latents: np.ndarray, data: RolloutData, cost: QuadraticCost) -> float:
    """How much of the observed per-step cost the latent cost model explains (R^2 on the given rollouts)."""
    pred = cost.value(latents, data.actions)
    resid = np.sum((pred - data.costs) ** 2)
    total = np.sum((data.costs - data.costs.mean()) ** 2)
    return float(1.0 - resid / total) if total > 0 else float("nan")
