"""Plain VAE: the SOLAR ablation without linear-dynamics structure.

Same encoder and decoder networks as :mod:`solar_ros.models.svae` (so the ablation differs only in
the prior): conv encoder -> Gaussian q(z | o) of dimension 10 -> decoder to the image, prior
N(0, I) independently per frame. ELBO per frame = E_q[log p(o | z)] - KL(q(z | o) || N(0, I)),
Bernoulli (default) or Gaussian (learned scalar variance) image likelihood.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

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


@dataclass
class VAEConfig:
    """Architecture of a :class:`VAE`."""

    image_size: int = 64
    """Side of the square input images; 8 * 2^k (16, 32, 64, ...)."""
    channels: int = 3
    """Image channels."""
    latent_dim: int = 10
    """Dimension of the latent z."""
    first_stride: int = 2
    """Stride of the first 7x7 conv (2 keeps a 64x64 encode near 1 ms on a CPU; 1 is the reference)."""
    encoder_hidden: int = 256
    """Width of the encoder's fully connected layer."""
    decoder_hidden: int = 512
    """Width of the decoder's first fully connected layer (reshaped to 8x8x(hidden/64))."""
    likelihood: str = "bernoulli"
    """Image likelihood: 'bernoulli' or 'gaussian'."""
    encoder: str = "conv"
    """'conv' (the reference) or 'keypoints' (as :class:`~solar_ros.models.svae.SVAEConfig`)."""
    keypoints: int = 8
    """Feature points of the 'keypoints' encoder."""
    background: bool = False
    """Model the static scene as :attr:`~solar_ros.models.svae.SVAEConfig.background` does (the
    statistics set by :meth:`VAE.set_background` before the first fit)."""
    precision: str = "float32"
    """Arithmetic of the encoder's and decoder's convolutions in training steps: 'float32' or 'bfloat16'
    (autocast on channels-last tensors; see :func:`~solar_ros.models.common.run_convs`). Passes without
    gradients (encoding, smoothing, the control path) run in float32 either way."""

    def __post_init__(self) -> None:
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}")
        if self.latent_dim < 1:
            raise ValueError("latent_dim must be positive")
        check_precision(self.precision)


class VAE(nn.Module):
    """Per-frame VAE with a standard-normal prior; see the module docstring."""

    kind = "vae"

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = cfg = config or VAEConfig()
        self.encoder = gaussian_encoder(cfg.encoder, cfg.image_size, cfg.channels, cfg.latent_dim, cfg.first_stride,
                                        cfg.encoder_hidden, cfg.keypoints, precision=cfg.precision)
        self.decoder = ConvDecoder(cfg.image_size, cfg.channels, cfg.latent_dim, cfg.decoder_hidden, cfg.precision)
        # Learned per-pixel noise variance of the Gaussian likelihood (unused by Bernoulli).
        self.log_pixel_var = (nn.Parameter(torch.tensor(np.log(0.01), dtype=torch.float32))
                              if cfg.likelihood == "gaussian" else None)
        self.background = SceneBackground(cfg.channels, cfg.image_size)

    def set_background(self, images) -> None:
        """Set the static-scene statistics from uint8 images (..., H, W, C) (used only with
        ``config.background``)."""
        self.background.set_from(images)

    def _encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(self.background.normalize(frames) if self.config.background else frames)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return out + self.background.decoder_offset(self.config.likelihood) if self.config.background else out

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Negative ELBO per frame for x (..., C, H, W) in [0, 1]: 'loss', 'recon_ll', 'kl'."""
        frames = x.reshape(-1, *x.shape[-3:])
        mean, var = self._encode(frames)
        # Noise drawn on the CPU generator, so a seed gives the same draws on any device.
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        z = mean + var.sqrt() * eps
        ll = images_log_likelihood(self._decode(z), frames, self.config.likelihood, self.log_pixel_var)
        kl = 0.5 * (var + mean.pow(2) - 1.0 - torch.log(var)).sum(-1)
        recon_ll, kl = ll.mean(), kl.mean()
        return {"loss": kl - recon_ll, "recon_ll": recon_ll, "kl": kl}

    @torch.no_grad()
    def encode(self, images, chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (B, H, W, C) or one (H, W, C) -> (mean, variance) of q(z | o), float64. ``chunk``
        frames go through the network at a time, so memory stays bounded however many frames are passed
        (all of a run's 25000 frames at once took 9 GB)."""
        cfg = self.config
        single = images.ndim == 3
        check_images(images, cfg.image_size, cfg.channels, 3 if single else 4)
        if single:
            images = images[None]
        device = module_device(self)
        parts = [self._encode(to_float_images(images[i:i + chunk], device)) for i in range(0, len(images), chunk)]
        mean = torch.cat([m for m, _ in parts]).double().cpu().numpy()
        var = torch.cat([v for _, v in parts]).double().cpu().numpy()
        return (mean[0], var[0]) if single else (mean, var)

    @torch.no_grad()
    def decode(self, z) -> np.ndarray:
        """Latents (B, dz) -> expected images (B, H, W, C) in [0, 1], float64."""
        z = torch.as_tensor(z, dtype=torch.float32, device=module_device(self))
        out = decoded_images(self._decode(z), self.config.likelihood)
        return out.permute(0, 2, 3, 1).double().cpu().numpy()
