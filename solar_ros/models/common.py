"""Pieces shared by the representation models: image conversion and the conv encoder/decoder.

Images arrive from cameras and episode files as uint8 arrays, channels last: (N, T, H, W, C) for
sequences or (B, H, W, C) for single frames. Inside the models they are float tensors in [0, 1],
channels first: (B, C, H, W).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def check_images(images, image_size: int, channels: int, ndim: int, what: str = "images") -> None:
    """Validate a uint8 image array (numpy or torch) of ``ndim`` dims ending in (H, W, C)."""
    shape = tuple(images.shape)
    if len(shape) != ndim:
        layout = {3: "(H, W, C)", 4: "(B, H, W, C)", 5: "(N, T, H, W, C)"}[ndim]
        raise ValueError(f"{what} must have shape {layout}, got {shape}")
    dtype_ok = images.dtype == np.uint8 if isinstance(images, np.ndarray) else images.dtype == torch.uint8
    if not dtype_ok:
        raise ValueError(f"{what} must be uint8 (0..255), got dtype {images.dtype}")
    if any(s == 0 for s in shape[:-3]):
        raise ValueError(f"{what} is empty: shape {shape}")
    if shape[-3:-1] != (image_size, image_size):
        raise ValueError(f"{what} must be {image_size}x{image_size} pixels, got {shape[-3]}x{shape[-2]}")
    if shape[-1] != channels:
        raise ValueError(f"{what} must have {channels} channel(s), got {shape[-1]}")


def to_float_images(images, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (..., H, W, C) array or tensor -> float32 tensor (prod(...), C, H, W) in [0, 1]."""
    x = torch.as_tensor(images, device=device)
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return x.contiguous()


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's parameters (where inputs must go)."""
    return next(module.parameters()).device


PRECISIONS = ("float32", "bfloat16")
"""Arithmetic of the convolutions in a training step (see :func:`run_convs`)."""


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def run_convs(convs: nn.Sequential, x: torch.Tensor, precision: str = "float32", float32_tail: int = 0
              ) -> torch.Tensor:
    """``convs(x)`` for (B, C, H, W) ``x``. With ``precision='bfloat16'`` and gradients on (a training step),
    the layers but the last ``float32_tail`` run in bfloat16 autocast on channels-last tensors (on CPUs with
    bfloat16 units, AMX or AVX512-BF16: SOLAR's whole gradient step 1.6x faster), the rest in float32 on their
    float32 output, and the result is float32, so what follows (the likelihood) stays in float32. The
    keypoint encoder keeps its last convolution in float32: its outputs are the spatial softmax's logits,
    whose rounding the exponential would amplify into the feature points. Passes without gradients
    (encoding, smoothing, the control path) always run in float32, the same with either setting."""
    if precision == "float32" or not torch.is_grad_enabled():
        return convs(x)
    head, tail = convs[:len(convs) - float32_tail], convs[len(convs) - float32_tail:]
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        out = head(x.contiguous(memory_format=torch.channels_last))
    return tail(out.float().contiguous())


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> (B, 1, H, W): luminance for RGB, channel mean otherwise."""
    if x.shape[1] == 3:
        w = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


class ConvGaussianEncoder(nn.Module):
    """SOLAR's image encoder: conv 7x7x64 (stride s) -> conv 5x5x32 s2 -> conv 3x3x8 s2 -> fc 256
    -> Gaussian (mean, diagonal variance) of dimension ``latent_dim``.

    'Same' padding, so the flattened feature size is 8 * (image_size / (4 s))^2.
    """

    def __init__(self, image_size: int, channels: int, latent_dim: int, first_stride: int = 2,
                 hidden: int = 256, min_var: float = 1e-4, precision: str = "float32"):
        super().__init__()
        self.precision = check_precision(precision)
        if image_size % (4 * first_stride):
            raise ValueError(f"image_size {image_size} must be divisible by 4 * first_stride = {4 * first_stride}")
        self.min_var = min_var
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 64, 7, stride=first_stride, padding=3), nn.ReLU(),
            nn.Conv2d(64, 32, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(32, 8, 3, stride=2, padding=1), nn.ReLU(),
        )
        side = image_size // (4 * first_stride)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(8 * side * side, hidden), nn.ReLU(),
                                nn.Linear(hidden, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [0, 1] -> (mean (B, dz), variance (B, dz))."""
        out = self.fc(run_convs(self.convs, x, self.precision))
        mean, raw = out.chunk(2, dim=-1)
        return mean, F.softplus(raw) + self.min_var


BACKGROUND_STD_FLOOR = 0.05
"""Added to the per-pixel std of the training images before it divides the encoder's input (see
:class:`SceneBackground`): pixels that never change are then scaled by 1/0.05, not by 1/0."""


class SceneBackground(nn.Module):
    """The static scene of a camera: the per-pixel mean and scale of the training images (buffers,
    saved with the weights). An image model that uses it reads each frame as (frame - mean) / scale and
    adds the mean image to its decoder's output (as logits for a Bernoulli likelihood), so its networks
    only have to explain what moves. Unset (all zeros) until :meth:`set_from` is called."""

    def __init__(self, channels: int, image_size: int):
        super().__init__()
        shape = (channels, image_size, image_size)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(shape))

    @property
    def is_set(self) -> bool:
        return bool(torch.any(self.mean))

    @torch.no_grad()
    def set_from(self, images) -> None:
        """Set the statistics from uint8 images (..., H, W, C) of the model's size."""
        images = np.asarray(images)
        C, H, W = self.mean.shape
        flat = images.reshape(-1, *images.shape[-3:])
        check_images(flat, H, C, 4)
        x = flat.astype(np.float64) / 255.0
        self.mean.copy_(torch.from_numpy(x.mean(0).transpose(2, 0, 1)).float())
        self.scale.copy_(torch.from_numpy(x.std(0).transpose(2, 0, 1) + BACKGROUND_STD_FLOOR).float())

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, C, H, W) in [0, 1] -> what the encoder reads."""
        return (frames - self.mean) / self.scale

    def decoder_offset(self, likelihood: str) -> torch.Tensor:
        """What is added to the decoder's output: the mean image's logits (Bernoulli) or the mean image."""
        return torch.logit(self.mean.clamp(0.01, 0.99)) if likelihood == "bernoulli" else self.mean


class ConvDecoder(nn.Module):
    """SOLAR's decoder: fc 512 (= 8x8x8) -> transposed convs (each doubling the side) -> image logits.

    ``image_size`` must be 8 * 2^k with k >= 1 (16, 32, 64, ...).
    """

    def __init__(self, image_size: int, channels: int, latent_dim: int, hidden: int = 512,
                 precision: str = "float32"):
        super().__init__()
        self.precision = check_precision(precision)
        k = int(round(np.log2(image_size / 8))) if image_size >= 16 else 0
        if k < 1 or 8 * 2**k != image_size:
            raise ValueError(f"decoder image_size must be 8 * 2^k (16, 32, 64, ...), got {image_size}")
        if hidden % 64:
            raise ValueError(f"decoder hidden size must be a multiple of 64 (reshaped to 8x8xC), got {hidden}")
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU())
        self.base_channels = hidden // 64
        widths = [self.base_channels] + [min(32 * 2**i, 64) for i in range(k - 1)] + [channels]
        layers: list[nn.Module] = []
        for i in range(k):
            layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1))
            if i < k - 1:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, dz) -> (B, C, H, W) logits (Bernoulli) or means (Gaussian)."""
        h = self.fc(z).view(z.shape[0], self.base_channels, 8, 8)
        return run_convs(self.deconvs, h, self.precision)


def images_log_likelihood(logits_or_mean: torch.Tensor, target: torch.Tensor, likelihood: str,
                          log_var: torch.Tensor | None = None) -> torch.Tensor:
    """log p(image | decoder output), summed over pixels and channels: (B, C, H, W) -> (B,).

    'bernoulli': continuous-valued Bernoulli cross-entropy on [0, 1] intensities (the output is logits).
    'gaussian': N(target; output, exp(log_var)) per pixel with a scalar learned ``log_var``.
    """
    if likelihood == "bernoulli":
        ll = -F.binary_cross_entropy_with_logits(logits_or_mean, target, reduction="none")
    elif likelihood == "gaussian":
        if log_var is None:
            raise ValueError("gaussian likelihood needs log_var")
        ll = -0.5 * (np.log(2 * np.pi) + log_var + (target - logits_or_mean).pow(2) * torch.exp(-log_var))
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}: use 'bernoulli' or 'gaussian'")
    return ll.flatten(1).sum(1)


def decoded_images(output: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Decoder output -> expected image in [0, 1] (sigmoid of logits for Bernoulli)."""
    return torch.sigmoid(output) if likelihood == "bernoulli" else output.clamp(0.0, 1.0)
