"""Deep spatial autoencoder (Finn et al., ICRA 2016): images -> feature points.

Encoder: conv 7x7 stride 2 (64 filters) -> conv 5x5 (32) -> conv 5x5 (16), ReLU, no padding; then a
spatial softmax per channel with a learned temperature and the expected (x, y) position of each
channel's activation: 16 feature points = 32 numbers.

Feature-point coordinates are *image* coordinates in [-1, 1] (x to the right, y down; -1 and 1 are
the outer edges of the image): every cell of the last feature map is placed at the centre of its
receptive field in the input image, so a point can be drawn straight onto the camera image
(:func:`feature_points_to_pixels`). With 'valid' convolutions the centres of a 64x64 input span
pixels 11..51, i.e. about [-0.64, 0.61].

Decoder: ONE linear layer from the 32 numbers to a downsampled grayscale image. Default size:
the input side / 4, rounded (16x16 for 64x64 inputs, 60x60 for 240x240 as in the paper); the
target is the grayscale input averaged over 4x4 blocks (area resampling for other ratios).

Loss (per batch of sequences): reconstruction MSE (mean per pixel) + smoothness_weight *
||(f_{t+1} - f_t) - (f_t - f_{t-1})||^2 (mean over interior steps, summed over the 32 numbers)
+ optional supervised_weight * MSE of a linear head from the feature points to given targets
(e.g. 3 end-effector points = 9 numbers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .common import (
    ConvGaussianEncoder,
    check_images,
    check_precision,
    grayscale,
    module_device,
    run_convs,
    to_float_images,
)


@dataclass
class DSAEConfig:
    """Architecture of a :class:`DeepSpatialAutoencoder`."""

    image_size: int = 64
    """Side of the square input images in pixels."""
    channels: int = 3
    """Image channels (3 for RGB, 1 for grayscale)."""
    conv_channels: tuple[int, int, int] = (64, 32, 16)
    """Filters of the three conv layers; the last is the number of feature points."""
    recon_size: int | None = None
    """Side of the reconstructed grayscale image; None = round(image_size / 4)."""
    target_dim: int = 0
    """Output size of the supervised head (e.g. 9 for three 3D points); 0 = no head."""
    init_temperature: float = 1.0
    """Initial spatial-softmax temperature (learned; softmax(a / temperature))."""

    def __post_init__(self) -> None:
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        if len(self.conv_channels) != 3 or min(self.conv_channels) < 1:
            raise ValueError(f"conv_channels must be three positive ints, got {self.conv_channels}")
        if self.recon_size is None:
            self.recon_size = max(1, int(round(self.image_size / 4)))
        if self.image_size < 21:
            raise ValueError(f"image_size must be at least 21 pixels (three valid convs), got {self.image_size}")
        if self.init_temperature <= 0:
            raise ValueError("init_temperature must be positive")

    @property
    def num_points(self) -> int:
        return self.conv_channels[-1]


class SpatialSoftmax(nn.Module):
    """Per-channel softmax over positions, then the expected (x, y) coordinate.

    ``xs`` (W,) and ``ys`` (H,) are the coordinates of the feature-map columns and rows
    (default: evenly spaced on [-1, 1]). The temperature is learned through its log.
    """

    def __init__(self, height: int, width: int, xs: torch.Tensor | None = None,
                 ys: torch.Tensor | None = None, init_temperature: float = 1.0):
        super().__init__()
        xs = torch.linspace(-1.0, 1.0, width) if xs is None else torch.as_tensor(xs, dtype=torch.float32)
        ys = torch.linspace(-1.0, 1.0, height) if ys is None else torch.as_tensor(ys, dtype=torch.float32)
        if xs.shape != (width,) or ys.shape != (height,):
            raise ValueError("coordinate vectors must match the feature-map width and height")
        self.register_buffer("xs", xs)
        self.register_buffer("ys", ys)
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(init_temperature))))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) activations -> (B, K, 2) expected (x, y) per channel."""
        B, K, H, W = features.shape
        p = F.softmax(features.reshape(B, K, H * W) / self.temperature, dim=-1).view(B, K, H, W)
        x = (p.sum(2) * self.xs).sum(-1)  # marginal over rows, then expectation over columns
        y = (p.sum(3) * self.ys).sum(-1)
        return torch.stack([x, y], dim=-1)


class KeypointGaussianEncoder(nn.Module):
    """conv 5x5x32 (stride s) -> conv 3x3x32 -> conv 3x3xK -> spatial softmax -> K expected (x, y)
    points -> linear -> Gaussian (mean, diagonal variance) of dimension ``latent_dim``."""

    def __init__(self, image_size: int, channels: int, latent_dim: int, keypoints: int = 8, first_stride: int = 2,
                 min_var: float = 1e-4, precision: str = "float32"):
        super().__init__()
        self.precision = check_precision(precision)
        if image_size % first_stride:
            raise ValueError(f"image_size {image_size} must be divisible by first_stride {first_stride}")
        self.min_var = min_var
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 5, stride=first_stride, padding=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, keypoints, 3, padding=1),
        )
        side = image_size // first_stride
        self.softmax = SpatialSoftmax(side, side)
        self.head = nn.Linear(2 * keypoints, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [0, 1] -> (mean (B, dz), variance (B, dz))."""
        points = self.softmax(run_convs(self.convs, x, self.precision, float32_tail=1)).flatten(1)
        mean, raw = self.head(points).chunk(2, dim=-1)
        return mean, F.softplus(raw) + self.min_var


def gaussian_encoder(kind: str, image_size: int, channels: int, latent_dim: int, first_stride: int = 2,
                     hidden: int = 256, keypoints: int = 8, min_var: float = 1e-4, precision: str = "float32"
                     ) -> nn.Module:
    """The Gaussian image encoder of the latent models: 'conv' (:class:`ConvGaussianEncoder`, SOLAR's
    reference) or 'keypoints' (:class:`KeypointGaussianEncoder`); ``precision``: see
    :func:`~solar_ros.models.common.run_convs`."""
    if kind == "conv":
        return ConvGaussianEncoder(image_size, channels, latent_dim, first_stride, hidden, min_var, precision)
    if kind == "keypoints":
        return KeypointGaussianEncoder(image_size, channels, latent_dim, keypoints, first_stride, min_var, precision)
    raise ValueError(f"encoder must be 'conv' or 'keypoints', got {kind!r}")


def _receptive_field_centres(size: int, layers: list[tuple[int, int]]) -> np.ndarray:
    """Input-pixel centres of the output cells of a stack of 'valid' convs [(kernel, stride)]."""
    offset, step, n = 0.0, 1.0, size
    for kernel, stride in layers:
        offset += step * (kernel - 1) / 2.0
        step *= stride
        n = (n - kernel) // stride + 1
    return offset + step * np.arange(n)


def feature_points_to_pixels(points: np.ndarray, image_size: int) -> np.ndarray:
    """Image coordinates in [-1, 1] (..., 2) -> pixel coordinates (column, row) in [0, size)."""
    return (np.asarray(points) + 1.0) * image_size / 2.0 - 0.5


class DeepSpatialAutoencoder(nn.Module):
    """Finn et al.'s deep spatial autoencoder; see the module docstring."""

    kind = "dsae"

    def __init__(self, config: DSAEConfig | None = None):
        super().__init__()
        self.config = cfg = config or DSAEConfig()
        c1, c2, c3 = cfg.conv_channels
        layers = [(7, 2), (5, 1), (5, 1)]
        self.convs = nn.Sequential(
            nn.Conv2d(cfg.channels, c1, 7, stride=2), nn.ReLU(),
            nn.Conv2d(c1, c2, 5), nn.ReLU(),
            nn.Conv2d(c2, c3, 5), nn.ReLU(),
        )
        centres = _receptive_field_centres(cfg.image_size, layers)
        coords = torch.tensor((centres + 0.5) * 2.0 / cfg.image_size - 1.0, dtype=torch.float32)
        side = len(centres)
        self.spatial_softmax = SpatialSoftmax(side, side, coords, coords, cfg.init_temperature)
        r = cfg.recon_size
        self.decoder = nn.Linear(2 * c3, r * r)
        self.head = nn.Linear(2 * c3, cfg.target_dim) if cfg.target_dim > 0 else None

    # -- differentiable parts (float tensors, channels first) -------------------------------
    def points(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> feature points (B, 2K) as [x_0, y_0, x_1, y_1, ...]."""
        return self.spatial_softmax(self.convs(x)).flatten(1)

    def decode(self, points: torch.Tensor) -> torch.Tensor:
        """(B, 2K) -> reconstructed grayscale image (B, 1, r, r)."""
        r = self.config.recon_size
        return self.decoder(points).view(-1, 1, r, r)

    def recon_target(self, x: torch.Tensor) -> torch.Tensor:
        """Downsampled grayscale image the decoder is trained to reproduce, (B, 1, r, r)."""
        return F.adaptive_avg_pool2d(grayscale(x), self.config.recon_size)

    def loss(self, x: torch.Tensor, targets: torch.Tensor | None = None, smoothness_weight: float = 1.0,
             supervised_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """Training loss on sequences x (N, T, C, H, W) in [0, 1]; targets (N, T, target_dim) or None.

        Returns the total 'loss' and its terms 'recon', 'smooth', and 'supervised' (when targets).
        """
        N, T = x.shape[:2]
        frames = x.flatten(0, 1)
        f = self.points(frames)
        recon = F.mse_loss(self.decode(f), self.recon_target(frames))
        f = f.view(N, T, -1)
        if T >= 3:
            accel = f[:, 2:] - 2.0 * f[:, 1:-1] + f[:, :-2]
            smooth = accel.pow(2).sum(-1).mean()
        else:
            smooth = f.new_zeros(())
        out = {"recon": recon, "smooth": smooth}
        total = recon + smoothness_weight * smooth
        if targets is not None:
            if self.head is None:
                raise ValueError("targets given but the model has no supervised head (config.target_dim = 0)")
            pred = self.head(f)
            out["supervised"] = F.mse_loss(pred, targets.to(pred.dtype))
            total = total + supervised_weight * out["supervised"]
        out["loss"] = total
        return out

    # -- runtime API (uint8 arrays in, numpy out) ---------------------------------------------
    @torch.no_grad()
    def encode(self, images) -> np.ndarray:
        """uint8 images (B, H, W, C) or one (H, W, C) -> feature points (B, 2K) or (2K,) float64."""
        cfg = self.config
        single = images.ndim == 3
        check_images(images, cfg.image_size, cfg.channels, 3 if single else 4)
        f = self.points(to_float_images(images, module_device(self))).double().cpu().numpy()
        return f[0] if single else f

    @torch.no_grad()
    def reconstruct(self, images) -> np.ndarray:
        """uint8 images (B, H, W, C) -> reconstructed grayscale (B, r, r) float64 (diagnostics)."""
        check_images(images, self.config.image_size, self.config.channels, 4)
        x = to_float_images(images, module_device(self))
        return self.decode(self.points(x))[:, 0].double().cpu().numpy()
