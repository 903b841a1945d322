"""SOLAR's structured VAE: images -> Gaussian potentials -> Kalman smoothing under a global LDS.

Generative model per sequence (latent dim dx, action dim du, T steps):

    x_0 ~ N(mu0, V0),  x_{t+1} = A x_t + B u_t + c + N(0, Q)      (the global LDS, theta)
    o_t ~ Bernoulli(decoder(x_t))                                   (images)
    cost_t ~ N(0.5 x_t^T C x_t + c_x^T x_t + c0 + 0.5 u_t^T R u_t, sigma^2)   (observed costs)

Inference: the encoder maps each frame to a potential psi_t(x_t) = N(m_t; x_t, diag(s_t)); the
posterior q(x_{0:T-1}) ∝ p(x | theta) prod_t psi_t(x_t) is computed exactly by the torch Kalman
smoother (:mod:`solar_ros.models.kalman_torch`).

Objective per sequence (maximised; the training loss is its negative divided by T):

    E_q[log p(o | x)] + beta * (E_q[log p(cost | x, u)] - KL(q || p(x | theta))),
    KL = sum_t E_q[log psi_t(x_t)] - log Z     (exact for the smoothed Gaussian q),

with one reparameterised sample x_t = mean_t + chol(cov_t) eps_t from each smoothed marginal for
the decoder and cost terms. beta is annealed geometrically from 1e-4 to 10 (:func:`beta_schedule`).

The LDS parameters (A, B, c, Q, mu0, V0) are *buffers*, not trained by gradient: between network
updates they are set (``set_dynamics``) from the global Bayesian LDS posterior, which is updated in
numpy from ``smoothed_stats``. The smoother runs in float64.

Encoder stride: the reference first conv has stride 1; on 64x64 images one encode then takes
about 5-7 ms on one CPU core (and ~7x the training compute), so the default is stride 2 (about
1.1-1.7 ms per frame). The 32x32 point-task variant (:meth:`SVAEConfig.point32`) keeps stride 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.gaussian import LDSParams
from ..core.types import CostExpansion
from .common import (
    ConvDecoder,
    SceneBackground,
    check_images,
    check_precision,
    decoded_images,
    images_log_likelihood,
    module_device,
    to_float_images,
)
from .dsae import gaussian_encoder
from .kalman_torch import SmootherResult, kalman_predict, kalman_smoother, kalman_update, kl_posterior_prior

COST_FORMS = ("linear", "target")
"""Forms of the latent cost model (see :class:`QuadraticCostModel`)."""


def beta_schedule(step: int, anneal_steps: int, start: float = 1e-4, end: float = 10.0) -> float:
    """Geometric annealing of the KL/cost weight: ``start`` at step 0, ``end`` from ``anneal_steps`` on."""
    if start <= 0 or end <= 0:
        raise ValueError("beta_schedule needs positive start and end")
    if anneal_steps <= 0:
        return float(end)
    frac = min(max(step, 0) / anneal_steps, 1.0)
    return float(start * (end / start) ** frac)


@dataclass
class SVAEConfig:
    """Architecture of a :class:`StructuredVAE`."""

    image_size: int = 64
    """Side of the square input images; 8 * 2^k (16, 32, 64, ...)."""
    channels: int = 3
    """Image channels."""
    latent_dim: int = 10
    """Latent state dimension dx."""
    action_dim: int = 2
    """Action dimension du."""
    first_stride: int = 2
    """Stride of the first 7x7 conv; the reference uses 1 (see the module docstring for the cost)."""
    encoder_hidden: int = 256
    """Width of the encoder's fully connected layer."""
    decoder_hidden: int = 512
    """Width of the decoder's first fully connected layer (reshaped to 8x8x(hidden/64))."""
    min_potential_var: float = 1e-4
    """Floor on the encoder's potential variances (keeps the smoother well conditioned)."""
    encoder: str = "conv"
    """'conv': the reference encoder (convs -> fc -> Gaussian); 'keypoints': convs -> spatial softmax ->
    expected (x, y) per channel -> linear -> Gaussian, whose mean is close to linear in the positions of
    what the image shows (what a quadratic latent cost and linear dynamics need)."""
    keypoints: int = 8
    """Feature points of the 'keypoints' encoder (channels of its last convolution)."""
    observed_dim: int | None = None
    """The encoder gives potentials on the first ``observed_dim`` latent dimensions only (None: all, the
    reference). The others carry no potential: they are inferred through the LDS alone, e.g. the
    previous step's observed latent (SOLAR's ``copy_state``) or velocities, which one frame cannot show."""
    hidden_var: float = 1e6
    """Variance of the (flat) potential on the dimensions without one."""
    cost_form: str = "linear"
    """Latent cost model: 'linear' (the reference: 0.5 x^T C x + c^T x + c0) or 'target'
    (0.5 (x - x*)^T C (x - x*) + c0 with a learned target latent x*). See :class:`QuadraticCostModel`."""
    cost_relative_noise: float = 0.0
    """0 (the reference): the cost regression's noise has one learned variance. > 0: its variance at a
    frame is the learned one times (observed cost + ``cost_relative_noise``), so the fit weighs each
    frame's error relative to its cost (see :class:`QuadraticCostModel`)."""
    background: bool = False
    """Model the static scene explicitly (False: the reference). True: the encoder reads each frame minus
    the training images' per-pixel mean, divided by their per-pixel std (plus a floor; see
    :class:`~solar_ros.models.common.SceneBackground`),
    and the decoder's logits are offset by the mean image's, so the network only has to explain what
    moves. The statistics are buffers, set from data by :meth:`StructuredVAE.set_background` before the
    first fit. Without it, on a scene where the moving arm is a few percent of the pixels, the decoder's
    best start is the mean image and the latent stays uninformative: the cost is never explained."""
    precision: str = "float32"
    """Arithmetic of the encoder's and decoder's convolutions in training steps: 'float32' or 'bfloat16'
    (autocast on channels-last tensors; see :func:`~solar_ros.models.common.run_convs`). Passes without
    gradients (encoding, smoothing, the control path) run in float32 either way."""

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or self.action_dim < 1:
            raise ValueError("latent_dim and action_dim must be positive")
        if self.min_potential_var <= 0:
            raise ValueError("min_potential_var must be positive")
        if self.encoder not in ("conv", "keypoints"):
            raise ValueError(f"encoder must be 'conv' or 'keypoints', got {self.encoder!r}")
        if self.observed_dim is not None and not 1 <= self.observed_dim <= self.latent_dim:
            raise ValueError(f"observed_dim must be in [1, latent_dim={self.latent_dim}], got {self.observed_dim}")
        if self.keypoints < 1 or self.hidden_var <= 0:
            raise ValueError("keypoints and hidden_var must be positive")
        if self.cost_form not in COST_FORMS:
            raise ValueError(f"cost_form must be one of {COST_FORMS}, got {self.cost_form!r}")
        if not (math.isfinite(self.cost_relative_noise) and self.cost_relative_noise >= 0):
            raise ValueError(f"cost_relative_noise must be >= 0, got {self.cost_relative_noise}")
        check_precision(self.precision)

    @property
    def potential_dim(self) -> int:
        """Latent dimensions the encoder gives potentials on."""
        return self.latent_dim if self.observed_dim is None else self.observed_dim

    @classmethod
    def point32(cls, action_dim: int = 2, **overrides) -> "SVAEConfig":
        """The 32x32 variant for the 2D point task (first conv at stride 1)."""
        return cls(**{"image_size": 32, "first_stride": 1, "action_dim": action_dim, **overrides})


@dataclass
class SmoothedStats:
    """Smoothed latent statistics of N sequences (numpy, float64): what the conjugate LDS update needs.

    Has the ``means``/``covs``/``cross_covs`` of the core smoother result, so it can be passed to
    ``BayesianLDS.sufficient_stats_from_smoother(stats, stats.actions)``.
    """

    means: np.ndarray
    """(N, T, dx) E_q[x_t]."""
    covs: np.ndarray
    """(N, T, dx, dx) Cov_q[x_t]."""
    cross_covs: np.ndarray
    """(N, T-1, dx, dx) Cov_q[x_{t+1}, x_t]."""
    actions: np.ndarray
    """(N, T, du) the actions; u_t drives x_t -> x_{t+1}."""
    log_z: np.ndarray
    """(N,) log normaliser of each sequence's posterior (the Kalman marginal likelihood)."""


@dataclass
class LatentQuadraticCost:
    """Learned latent cost l(x, u) = 0.5 x^T C x + c^T x + c0 + 0.5 u^T R u, as a core cost model."""

    C: np.ndarray
    """(dx, dx) PSD state weight."""
    c: np.ndarray
    """(dx,) linear state term."""
    c0: float
    """Constant."""
    R: np.ndarray
    """(du, du) PSD action weight."""

    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        """Cost and derivatives along one trajectory X (T, dx), U (T, du)."""
        T, dx = X.shape
        du = U.shape[1]
        out = CostExpansion.zeros(T, dx, du)
        out.l = 0.5 * np.einsum("ti,ij,tj->t", X, self.C, X) + X @ self.c + self.c0 \
            + 0.5 * np.einsum("ti,ij,tj->t", U, self.R, U)
        out.lx = X @ self.C + self.c
        out.lu = U @ self.R
        out.lxx[:] = self.C
        out.luu[:] = self.R
        return out


class QuadraticCostModel(nn.Module):
    """Cost regression on the latent: quadratic mean (C = L L^T and R = M M^T are PSD by construction)
    and a Gaussian likelihood with a learned variance.

    ``form`` 'linear' (the reference): 0.5 x^T C x + c^T x + c0. 'target': 0.5 (x - x*)^T C (x - x*) + c0,
    the same family except that the linear term lies in C's range, so the minimum is the learned
    target x*. With the general form a direction the cost barely curves in (C's eigenvalue ~ 0: latent
    dimensions the cost hardly depends on in the data) can still carry a linear term, and its minimum
    then lies far outside the data: LQR drives the latent, and the robot, towards it.

    ``cost_dim`` < latent_dim: the cost depends on the first ``cost_dim`` latent dimensions only (the
    observed ones; C and c are zero on the rest)."""

    def __init__(self, latent_dim: int, action_dim: int, cost_dim: int | None = None, form: str = "linear",
                 relative_noise: float = 0.0):
        super().__init__()
        if form not in COST_FORMS:
            raise ValueError(f"form must be one of {COST_FORMS}, got {form!r}")
        if not (math.isfinite(relative_noise) and relative_noise >= 0):
            raise ValueError(f"relative_noise must be >= 0, got {relative_noise}")
        self.relative_noise = float(relative_noise)
        self.latent_dim = latent_dim
        self.cost_dim = latent_dim if cost_dim is None else cost_dim
        self.form = form
        # The target form's gradient on x is C (x - x*): it starts at unit curvature, so that the cost
        # term shapes the encoder from the first step as the linear term c does in the reference form.
        self.L = nn.Parameter((0.1 if form == "linear" else 1.0) * torch.eye(self.cost_dim))
        if form == "linear":
            self.c = nn.Parameter(torch.zeros(self.cost_dim))
        else:
            self.target = nn.Parameter(torch.zeros(self.cost_dim))
        self.c0 = nn.Parameter(torch.zeros(()))
        self.M = nn.Parameter(0.1 * torch.eye(action_dim))
        self.log_var = nn.Parameter(torch.zeros(()))

    def predict(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Mean cost for x (..., dx), u (..., du) -> (...)."""
        x = x[..., :self.cost_dim]
        Mu = u @ self.M
        if self.form == "target":
            return 0.5 * ((x - self.target) @ self.L).pow(2).sum(-1) + self.c0 + 0.5 * Mu.pow(2).sum(-1)
        Lx = x @ self.L
        return 0.5 * Lx.pow(2).sum(-1) + x @ self.c + self.c0 + 0.5 * Mu.pow(2).sum(-1)

    def log_likelihood(self, cost: torch.Tensor, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """log N(cost; predict(x, u), v) elementwise, v = exp(log_var), or with ``relative_noise`` > 0
        v = exp(log_var) (max(cost, 0) + relative_noise): the error at a cheap frame (near the goal) then
        counts for more than the same error at an expensive one. A distance cost is a cone, which one
        quadratic fitted with equal weights flattens where the cost is low, near the goal."""
        r = cost - self.predict(x, u)
        log_var = self.log_var
        if self.relative_noise > 0:
            log_var = log_var + torch.log(cost.clamp_min(0.0) + self.relative_noise)
        return -0.5 * (np.log(2.0 * np.pi) + log_var + r.pow(2) * torch.exp(-log_var))

    def as_cost(self) -> LatentQuadraticCost:
        """The current cost model as numpy arrays (for LQR-FLM), in the general form either way."""
        with torch.no_grad():
            k = self.cost_dim
            C = np.zeros((self.latent_dim, self.latent_dim))
            c = np.zeros(self.latent_dim)
            Ck = (self.L @ self.L.T).double().cpu().numpy()
            C[:k, :k] = Ck
            c0 = float(self.c0)
            if self.form == "target":
                target = self.target.double().cpu().numpy()
                c[:k] = -Ck @ target
                c0 += 0.5 * float(target @ Ck @ target)
            else:
                c[:k] = self.c.double().cpu().numpy()
            R = (self.M @ self.M.T).double().cpu().numpy()
            return LatentQuadraticCost(C, c, c0, R)


class StructuredVAE(nn.Module):
    """SOLAR's SVAE; see the module docstring."""

    kind = "svae"

    def __init__(self, config: SVAEConfig | None = None):
        super().__init__()
        self.config = cfg = config or SVAEConfig()
        dx, du = cfg.latent_dim, cfg.action_dim
        self.encoder = gaussian_encoder(cfg.encoder, cfg.image_size, cfg.channels, cfg.potential_dim, cfg.first_stride,
                                        cfg.encoder_hidden, cfg.keypoints, cfg.min_potential_var, cfg.precision)
        self.decoder = ConvDecoder(cfg.image_size, cfg.channels, dx, cfg.decoder_hidden, cfg.precision)
        self.cost_model = QuadraticCostModel(dx, du, cfg.potential_dim, cfg.cost_form, cfg.cost_relative_noise)
        # The global LDS (posterior mean of the Bayesian LDS); a random walk until first set.
        f64 = torch.float64
        self.register_buffer("A", torch.eye(dx, dtype=f64))
        self.register_buffer("B", torch.zeros(dx, du, dtype=f64))
        self.register_buffer("c", torch.zeros(dx, dtype=f64))
        self.register_buffer("Q", torch.eye(dx, dtype=f64))
        self.register_buffer("mu0", torch.zeros(dx, dtype=f64))
        self.register_buffer("V0", torch.eye(dx, dtype=f64))
        # The static scene (SVAEConfig.background): per-pixel mean and scale of the training images.
        self.background = SceneBackground(cfg.channels, cfg.image_size)

    def set_background(self, images) -> None:
        """Set the static-scene statistics from uint8 images (..., H, W, C) (used only with
        ``config.background``)."""
        self.background.set_from(images)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder logits for latents z (B, dx): the network's, plus the mean image's with ``background``."""
        out = self.decoder(z)
        if self.config.background:
            out = out + self.background.decoder_offset("bernoulli")
        return out

    # -- the LDS --------------------------------------------------------------------------------
    def set_dynamics(self, A, B, c, Q, mu0, V0) -> None:
        """Replace the LDS buffers (validated: shapes, finiteness, Q and V0 positive definite)."""
        dx, du = self.config.latent_dim, self.config.action_dim
        shapes = {"A": (dx, dx), "B": (dx, du), "c": (dx,), "Q": (dx, dx), "mu0": (dx,), "V0": (dx, dx)}
        values = {}
        for name, val in zip(shapes, (A, B, c, Q, mu0, V0)):
            val = np.asarray(val, dtype=np.float64)
            if val.shape != shapes[name]:
                raise ValueError(f"dynamics {name} must have shape {shapes[name]}, got {val.shape}")
            if not np.all(np.isfinite(val)):
                raise ValueError(f"dynamics {name} contains NaN or Inf")
            values[name] = val
        for name in ("Q", "V0"):
            M = 0.5 * (values[name] + values[name].T)
            if np.min(np.linalg.eigvalsh(M)) <= 0:
                raise ValueError(f"dynamics {name} must be symmetric positive definite")
            values[name] = M
        for name, val in values.items():
            getattr(self, name).copy_(torch.from_numpy(val))

    def dynamics(self) -> LDSParams:
        """The current LDS as a core :class:`~solar_ros.core.gaussian.LDSParams` (offset c is ``b`` there)."""
        g = lambda k: getattr(self, k).cpu().numpy().copy()  # noqa: E731
        return LDSParams(A=g("A"), Q=g("Q"), mu0=g("mu0"), V0=g("V0"), B=g("B"), b=g("c"))

    # -- inference ------------------------------------------------------------------------------
    def potentials(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [0, 1] -> potential means and diagonal variances, each (B, dx)."""
        if self.config.background:
            frames = self.background.normalize(frames)
        mean, var = self.encoder(frames)
        hidden = self.config.latent_dim - mean.shape[-1]
        if hidden:
            mean = torch.cat([mean, mean.new_zeros(mean.shape[0], hidden)], -1)
            var = torch.cat([var, var.new_full((var.shape[0], hidden), self.config.hidden_var)], -1)
        return mean, var

    def infer(self, x: torch.Tensor, actions: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, SmootherResult]:
        """Sequences x (N, T, C, H, W), actions (N, T, du) -> (m, s, smoother result in float64)."""
        N, T = x.shape[:2]
        m, s = self.potentials(x.flatten(0, 1))
        m, s = m.view(N, T, -1), s.view(N, T, -1)
        res = kalman_smoother(m, s, self.A, self.B, self.c, self.Q, self.mu0, self.V0,
                              actions.to(device=m.device, dtype=torch.float64), dtype=torch.float64)
        return m, s, res

    def loss(self, x: torch.Tensor, actions: torch.Tensor, costs: torch.Tensor | None = None,
             beta: float = 1.0, generator: torch.Generator | None = None,
             return_latents: bool = False) -> dict[str, torch.Tensor]:
        """Negative SVAE objective per frame for x (N, T, C, H, W) in [0, 1], actions (N, T, du),
        costs (N, T) or None. Returns 'loss' and the per-frame terms 'recon_ll', 'cost_ll', 'kl'; with
        ``return_latents`` also 'z', the latents (N, T, dx) drawn from the posterior that the decoder and
        the cost terms were evaluated on (for terms of the caller's own on the same draw)."""
        N, T = x.shape[:2]
        m, s, res = self.infer(x, actions)
        kl = kl_posterior_prior(m, s, res)  # (N,)
        chol = torch.linalg.cholesky(res.covs)
        # Noise drawn on the CPU generator, so a seed gives the same draws on any device.
        eps = torch.randn(res.means.shape, generator=generator, dtype=torch.float64).to(res.means.device)
        z = (res.means + (chol @ eps.unsqueeze(-1)).squeeze(-1)).to(x.dtype)  # (N, T, dx)
        recon_ll = images_log_likelihood(self.decoder_output(z.flatten(0, 1)), x.flatten(0, 1), "bernoulli")
        recon_ll = recon_ll.view(N, T).sum(1)
        if costs is not None:
            cost_ll = self.cost_model.log_likelihood(costs.to(z.dtype), z, actions.to(z.dtype)).sum(1)
        else:
            cost_ll = torch.zeros_like(recon_ll)
        kl = kl.to(recon_ll.dtype)
        objective = recon_ll + beta * (cost_ll - kl)
        terms = {"loss": -objective.mean() / T, "recon_ll": recon_ll.mean() / T,
                 "cost_ll": cost_ll.mean() / T, "kl": kl.mean() / T}
        if return_latents:
            terms["z"] = z
        return terms

    @torch.no_grad()
    def smoothed_stats(self, images, actions, batch_size: int = 32) -> SmoothedStats:
        """Smoothed latent statistics for uint8 images (N, T, H, W, C) and actions (N, T, du), using
        deterministic potentials (no reparameterised samples); numpy float64, for the conjugate LDS update."""
        cfg = self.config
        check_images(images, cfg.image_size, cfg.channels, 5)
        actions = np.asarray(actions, dtype=np.float64)
        N, T = images.shape[:2]
        if actions.shape != (N, T, cfg.action_dim):
            raise ValueError(f"actions must have shape {(N, T, cfg.action_dim)}, got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("actions contain NaN or Inf")
        potentials = [self.sequence_potentials(images[i:i + batch_size]) for i in range(0, N, batch_size)]
        return self.smoothed_stats_from_potentials(torch.cat([m for m, _ in potentials]),
                                                   torch.cat([s for _, s in potentials]), actions, batch_size)

    @torch.no_grad()
    def sequence_potentials(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 sequences (N, T, H, W, C) -> potential means and diagonal variances, each (N, T, dx).
        Each sequence is encoded on its own (:meth:`frame_potentials`), so a frame's potential depends on the
        encoder's weights and its sequence only, to the bit: the convolutions' last bits depend on how many
        frames share a pass (a sequence's last 8 frames encoded in a pass of 8 differed from the same frames in
        a pass of 32), and a caller may keep potentials while the weights stay (a run resumed from a checkpoint
        then repeats the uninterrupted run exactly). On 2 CPU cores this is also faster than passes across
        sequences (0.85 s against 1.2-1.4 s for 40 rollouts of 50 frames, 16 feature points)."""
        N, T = images.shape[:2]
        parts = [self.frame_potentials(images[n]) for n in range(N)]
        return torch.stack([m for m, _ in parts]), torch.stack([s for _, s in parts])

    ENCODE_CHUNK = 32
    """Frames per encoder pass in :meth:`frame_potentials`: with many more, the convolutions' activations
    no longer fit the CPU's caches and each frame takes 2-3x as long (1600 frames per pass against 32)."""

    @torch.no_grad()
    def frame_potentials(self, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 frames (B, H, W, C) -> potential means and diagonal variances, each (B, dx), encoded
        ``ENCODE_CHUNK`` frames at a time (the same to the bit as in one pass)."""
        device = module_device(self)
        bounds = [*range(0, frames.shape[0], self.ENCODE_CHUNK), frames.shape[0]]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]  # a lone last frame would take the convolutions' batch-of-one path, whose bits differ
        parts = [self.potentials(to_float_images(frames[a:b], device)) for a, b in zip(bounds, bounds[1:])]
        return torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts])

    @torch.no_grad()
    def smoothed_stats_from_potentials(self, m: torch.Tensor, s: torch.Tensor, actions: np.ndarray,
                                       batch_size: int = 32) -> SmoothedStats:
        """:meth:`smoothed_stats` from the sequences' potentials (``sequence_potentials``), under the current LDS."""
        out = {k: [] for k in ("means", "covs", "cross_covs", "log_z")}
        for i in range(0, m.shape[0], batch_size):
            u = torch.from_numpy(actions[i:i + batch_size]).to(device=m.device, dtype=torch.float64)
            res = kalman_smoother(m[i:i + batch_size], s[i:i + batch_size], self.A, self.B, self.c, self.Q, self.mu0,
                                  self.V0, u, dtype=torch.float64)
            for k in out:
                out[k].append(getattr(res, k).cpu().numpy())
        return SmoothedStats(*(np.concatenate(out[k]) for k in ("means", "covs", "cross_covs")),
                             actions=actions, log_z=np.concatenate(out["log_z"]))

    def potential_inputs(self) -> list[torch.Tensor]:
        """The tensors a frame's potential depends on (the encoder's and the static scene's)."""
        return [*self.encoder.parameters(), *self.encoder.buffers(), *self.background.buffers()]

    # -- runtime API (uint8 arrays in, numpy out) ---------------------------------------------
    @torch.no_grad()
    def encode(self, images) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image (H, W, C) or batch (B, H, W, C) -> potential (mean, diagonal variance), float64."""
        cfg = self.config
        single = images.ndim == 3
        check_images(images, cfg.image_size, cfg.channels, 3 if single else 4)
        mean, var = self.frame_potentials(images[None] if single else images)
        mean, var = mean.double().cpu().numpy(), var.double().cpu().numpy()
        return (mean[0], var[0]) if single else (mean, var)

    @torch.no_grad()
    def filter_step(self, image, mean: np.ndarray | None = None, cov: np.ndarray | None = None,
                    action: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Online filtering: posterior over x_t given the new frame and the previous posterior.

        With ``mean``/``cov`` None this is the first step (prior N(mu0, V0)); otherwise the previous
        posterior N(mean, cov) is pushed through the LDS with ``action`` (u_{t-1}) and then
        conditioned on the new frame's potential. Returns (mean (dx,), cov (dx, dx)) float64.
        """
        m, s = self.encode(image)
        m, s = torch.from_numpy(m)[None], torch.from_numpy(s)[None]
        A, B, c, Q, mu0, V0 = (getattr(self, k).cpu() for k in ("A", "B", "c", "Q", "mu0", "V0"))
        if mean is None:
            prior_mean, prior_cov = mu0[None], V0[None]
        else:
            if cov is None or action is None:
                raise ValueError("filter_step needs cov and action together with mean")
            mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float64))[None]
            cov_t = torch.as_tensor(np.asarray(cov, dtype=np.float64))[None]
            u = torch.as_tensor(np.asarray(action, dtype=np.float64))[None]
            if u.shape[-1] != self.config.action_dim:
                raise ValueError(f"action must have {self.config.action_dim} entries, got {u.shape[-1]}")
            prior_mean, prior_cov = kalman_predict(mean_t, cov_t, A, B, c, Q, u)
        post_mean, post_cov, _ = kalman_update(prior_mean, prior_cov, m, s, diagonal=True)
        return post_mean[0].numpy(), post_cov[0].numpy()

    @torch.no_grad()
    def decode(self, z) -> np.ndarray:
        """Latents (B, dx) -> expected images (B, H, W, C) in [0, 1], float64 (diagnostics)."""
        z = torch.as_tensor(z, dtype=torch.float32, device=module_device(self))
        out = decoded_images(self.decoder_output(z), "bernoulli")
        return out.permute(0, 2, 3, 1).double().cpu().numpy()

    def latent_cost(self) -> LatentQuadraticCost:
        """The learned cost model as a core cost model (``.eval(X, U) -> CostExpansion``)."""
        return self.cost_model.as_cost()
