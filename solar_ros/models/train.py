"""Training loops for the representation models (plain functions, typed configs).

All loops draw minibatches of whole sequences from a seeded generator, use Adam with a global
gradient-norm clip, show a tqdm progress bar (``disable_progress`` turns it off) and return the
loss history as ``{"loss": [...], <term>: [...]}`` with one float per step. Seed torch before
building the model for fully reproducible runs; the loops themselves only use their own
generators (numpy for batches, a torch.Generator for reparameterisation noise).

Data layout: images uint8 (N, T, H, W, C); actions (N, T, du); costs (N, T) (costs, not rewards).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..core.gaussian import LDSParams
from .common import check_images, module_device, to_float_images
from .dsae import DeepSpatialAutoencoder
from .svae import SmoothedStats, StructuredVAE, beta_schedule
from .vae import VAE


@dataclass
class TrainConfig:
    """Settings shared by every training loop."""

    steps: int = 1000
    """Number of gradient steps."""
    batch_size: int = 8
    """Sequences per minibatch (capped at the number of sequences)."""
    lr: float = 1e-3
    """Adam learning rate."""
    grad_clip: float = 5.0
    """Global gradient-norm clip (<= 0 disables it)."""
    seed: int = 0
    """Seed of the minibatch order and the sampling noise."""
    disable_progress: bool = False
    """Turn the tqdm progress bar off."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("need steps >= 0, batch_size >= 1 and lr > 0")


@dataclass
class DSAETrainConfig(TrainConfig):
    """Settings of :func:`train_dsae`."""

    smoothness_weight: float = 1.0
    """Weight of the feature-point smoothness penalty ||(f_{t+1}-f_t)-(f_t-f_{t-1})||^2."""
    supervised_weight: float = 1.0
    """Weight of the supervised head's MSE (only used when targets are given)."""
    window: int | None = None
    """Train on random contiguous windows of this many frames (None = whole sequences)."""


@dataclass
class VAETrainConfig(TrainConfig):
    """Settings of :func:`train_vae`."""

    window: int | None = None
    """Train on random contiguous windows of this many frames (None = whole sequences)."""


@dataclass
class SVAETrainConfig(TrainConfig):
    """Settings of :func:`train_svae`."""

    batch_size: int = 2
    """Sequences per minibatch (the reference trains on 2 sequences of 50 frames per step)."""
    beta_start: float = 1e-4
    """Weight of (cost log-likelihood - KL) at step 0."""
    beta_end: float = 10.0
    """Weight reached at the end of the annealing."""
    beta_anneal_steps: int = 1000
    """Steps of geometric annealing from beta_start to beta_end."""
    lds_update_every: int = 100
    """Run the conjugate LDS update every this many network steps (and after the last step)."""
    lds_update_iters: int = 1
    """Alternations of (smooth under the current LDS -> conjugate update) per LDS update."""
    stats_batch_size: int = 32
    """Sequences per forward pass when computing smoothed statistics for the LDS update."""


LDSUpdate = Callable[[SmoothedStats], "LDSParams | Mapping[str, np.ndarray] | Sequence[np.ndarray] | None"]


# -- input validation ------------------------------------------------------------------------------
def _check_sequences(images, image_size: int, channels: int) -> tuple[int, int]:
    if images is None or len(getattr(images, "shape", ())) == 0:
        raise ValueError("images are missing")
    if images.shape[0] == 0 or (images.ndim > 1 and images.shape[1] == 0):
        raise ValueError(f"the dataset is empty: images have shape {tuple(images.shape)}")
    check_images(images, image_size, channels, 5)
    return images.shape[0], images.shape[1]


def _check_array(name: str, arr, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or Inf")
    return arr


def _check_window(window: int | None, T: int, minimum: int) -> int:
    if window is None:
        return T
    if not minimum <= window <= T:
        raise ValueError(f"window must be between {minimum} and the sequence length {T}, got {window}")
    return window


# -- loop pieces -----------------------------------------------------------------------------------
class _Batches:
    """Seeded epochs over sequence indices, each cut into minibatches."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator):
        self.n, self.batch_size, self.rng = n, min(batch_size, n), rng
        self._queue: list[np.ndarray] = []

    def next(self) -> np.ndarray:
        if not self._queue:
            perm = self.rng.permutation(self.n)
            self._queue = [perm[i:i + self.batch_size] for i in range(0, self.n - self.batch_size + 1,
                                                                       self.batch_size)]
        return np.sort(self._queue.pop(0))


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)


def _step(model, opt, loss: torch.Tensor, cfg: TrainConfig) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss.item()}; lower the learning rate or check the data")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()


def _record(history: dict[str, list[float]], terms: Mapping[str, torch.Tensor | float]) -> None:
    for k, v in terms.items():
        history.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))


def _frames(images: np.ndarray, idx: np.ndarray, start: int, length: int, device: torch.device) -> torch.Tensor:
    """uint8 (N, T, H, W, C) -> float (B, length, C, H, W) for the chosen sequences and window."""
    chunk = images[idx, start:start + length]
    B, L, H, W, C = chunk.shape
    return to_float_images(chunk, device).view(B, L, C, H, W)


# -- the loops -------------------------------------------------------------------------------------
def train_dsae(model: DeepSpatialAutoencoder, images, cfg: DSAETrainConfig | None = None,
               targets=None) -> dict[str, list[float]]:
    """Train a deep spatial autoencoder on uint8 image sequences (N, T, H, W, C).

    ``targets`` (N, T, target_dim), optional, feed the supervised head (e.g. end-effector points).
    """
    cfg = cfg or DSAETrainConfig()
    mc = model.config
    N, T = _check_sequences(images, mc.image_size, mc.channels)
    if targets is not None:
        if model.head is None:
            raise ValueError("targets given but the model has no supervised head (config.target_dim = 0)")
        targets = torch.from_numpy(_check_array("targets", targets, (N, T, mc.target_dim))).to(module_device(model))
    window = _check_window(cfg.window, T, 3 if cfg.smoothness_weight > 0 else 1)
    rng = np.random.default_rng(cfg.seed)
    batches, opt, history = _Batches(N, cfg.batch_size, rng), _optimizer(model, cfg), {}
    model.train()
    for _ in tqdm(range(cfg.steps), desc="dsae", disable=cfg.disable_progress):
        idx = batches.next()
        start = int(rng.integers(0, T - window + 1))
        x = _frames(images, idx, start, window, module_device(model))
        tgt = None if targets is None else targets[idx, start:start + window]
        terms = model.loss(x, tgt, cfg.smoothness_weight, cfg.supervised_weight)
        _step(model, opt, terms["loss"], cfg)
        _record(history, terms)
    return history


def train_vae(model: VAE, images, cfg: VAETrainConfig | None = None) -> dict[str, list[float]]:
    """Train the per-frame VAE (negative ELBO per frame) on uint8 image sequences (N, T, H, W, C)."""
    cfg = cfg or VAETrainConfig()
    N, T = _check_sequences(images, model.config.image_size, model.config.channels)
    window = _check_window(cfg.window, T, 1)
    rng = np.random.default_rng(cfg.seed)
    noise = torch.Generator().manual_seed(cfg.seed)
    batches, opt, history = _Batches(N, cfg.batch_size, rng), _optimizer(model, cfg), {}
    model.train()
    for _ in tqdm(range(cfg.steps), desc="vae", disable=cfg.disable_progress):
        idx = batches.next()
        start = int(rng.integers(0, T - window + 1))
        terms = model.loss(_frames(images, idx, start, window, module_device(model)), generator=noise)
        _step(model, opt, terms["loss"], cfg)
        _record(history, terms)
    return history


def _apply_lds_update(model: StructuredVAE, result) -> None:
    if result is None:
        return  # the callable set the dynamics itself
    if isinstance(result, LDSParams):
        if result.n_transitions is not None:
            raise ValueError("the SVAE's LDS is time-invariant; lds_update returned time-varying dynamics")
        b = np.zeros(result.dx) if result.b is None else result.b
        B = np.zeros((result.dx, model.config.action_dim)) if result.B is None else result.B
        model.set_dynamics(result.A, B, b, result.Q, result.mu0, result.V0)
    elif isinstance(result, Mapping):
        model.set_dynamics(*(result[k] for k in ("A", "B", "c", "Q", "mu0", "V0")))
    else:
        model.set_dynamics(*result)


def train_svae(model: StructuredVAE, images, actions, costs=None, cfg: SVAETrainConfig | None = None,
               lds_update: LDSUpdate | None = None) -> dict[str, list[float]]:
    """Train SOLAR's SVAE, alternating network steps with the conjugate LDS update.

    Every ``cfg.lds_update_every`` steps (and after the last one) ``lds_update`` receives the
    smoothed statistics of the whole dataset (:class:`SmoothedStats`) and returns the new LDS
    (a time-invariant core ``LDSParams``, a mapping with keys A, B, c, Q, mu0, V0, or that 6-tuple;
    None when it set the dynamics itself). With ``cfg.lds_update_iters`` > 1 the statistics are
    recomputed under the new dynamics and the update repeated (EM-style alternation). Without
    ``lds_update`` the LDS buffers stay as they are.
    ``costs`` (N, T) may be None to train without the cost model.
    """
    cfg = cfg or SVAETrainConfig()
    mc = model.config
    N, T = _check_sequences(images, mc.image_size, mc.channels)
    actions_np = _check_array("actions", actions, (N, T, mc.action_dim))
    device = module_device(model)
    actions_t = torch.from_numpy(actions_np).float().to(device)
    costs_t = None if costs is None else torch.from_numpy(_check_array("costs", costs, (N, T))).float().to(device)
    if cfg.lds_update_every < 1 or cfg.lds_update_iters < 1:
        raise ValueError("lds_update_every and lds_update_iters must be at least 1")
    rng = np.random.default_rng(cfg.seed)
    noise = torch.Generator().manual_seed(cfg.seed)
    batches, opt, history = _Batches(N, cfg.batch_size, rng), _optimizer(model, cfg), {}
    model.train()
    for step in tqdm(range(cfg.steps), desc="svae", disable=cfg.disable_progress):
        beta = beta_schedule(step, cfg.beta_anneal_steps, cfg.beta_start, cfg.beta_end)
        idx = batches.next()
        terms = model.loss(_frames(images, idx, 0, T, device), actions_t[idx],
                           None if costs_t is None else costs_t[idx], beta=beta, generator=noise)
        _step(model, opt, terms["loss"], cfg)
        _record(history, {**terms, "beta": beta})
        done = step + 1
        if lds_update is not None and (done % cfg.lds_update_every == 0 or done == cfg.steps):
            for _ in range(cfg.lds_update_iters):
                _apply_lds_update(model, lds_update(model.smoothed_stats(images, actions_np, cfg.stats_batch_size)))
    return history
