"""Image -> latent state for the encoder node, ROS-free: model loading, filtering, diagnostics images.

:func:`load_encoder` reads a representation checkpoint (:mod:`solar_ros.models.checkpoint`) and
returns a :class:`LatentEncoder` for its kind:

* ``svae`` (SOLAR): the latent is the *filtered* posterior of the model's LDS. Between episodes each
  frame gives the first-step belief (prior N(mu0, V0) conditioned on the frame: what the policy's
  time index 0 saw in training); during an episode each frame is one Kalman step from the previous
  belief with the mean torque commanded since the previous frame (``filter_step``;
  :class:`ActionAccumulator` keeps NaN/Inf and wrong-length commands out of that mean, and
  ``encode`` refuses a non-finite action without touching the belief).
* ``vae``: the encoder's posterior mean and (diagonal) variance of the frame, no filtering.
* ``dsae``: the feature points (x0, y0, x1, y1, ...) in image coordinates [-1, 1], with a small
  fixed diagonal covariance (``point_variance``).

The model id of a checkpoint is ``extra["model_id"]`` when the fitter wrote one, otherwise the
kind plus a hash of the file, so two different files never share an id.

Per frame the encoders are allocation-light: the frame is scaled into one preallocated input
tensor, the network runs under ``torch.inference_mode`` (on a CPU with its weights and input in
channels-last memory format, which measured faster for these small convnets), and the SVAE's
Kalman step runs in numpy on the model's LDS (fetched once at load), cheaper than the same step
through torch's small-matrix kernels and the same numbers to round-off.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..core.gaussian import kalman_step
from .image import ImageFormatError


def file_model_id(path: str | os.PathLike, kind: str) -> str:
    """``<kind>-<first 12 hex digits of the file's SHA-256>``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{kind}-{h.hexdigest()[:12]}"


@dataclass
class Encoded:
    """One frame's latent state."""

    mean: np.ndarray
    """(n,) latent mean."""
    covariance: np.ndarray
    """(n, n) latent covariance (may be shared between frames: do not modify it)."""
    filtered: bool
    """True when the mean combines this frame with earlier ones through the dynamics."""


class ActionAccumulator:
    """Mean of the torque commands received between two frames (the action of one SVAE filter step).

    A command with the wrong number of values or any NaN/Inf is rejected (counted, the reason kept)
    and never reaches the sum: one bad command must not turn the mean, and with it the Kalman
    filter's belief, into NaN for the rest of the episode.
    """

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self._sum = np.zeros(self.dim)
        self._count = 0
        self.rejected = 0
        """Commands rejected so far."""

    def add(self, values) -> str | None:
        """Add one command; None if accepted, else the reason it was rejected."""
        u = np.asarray(values, dtype=np.float64)
        if u.shape != (self.dim,):
            self.rejected += 1
            return f"torque command has {u.size} values, the model takes {self.dim}"
        if not np.all(np.isfinite(u)):
            self.rejected += 1
            return "torque command contains NaN or Inf"
        self._sum += u
        self._count += 1
        return None

    def take_mean(self) -> np.ndarray:
        """Mean of the accepted commands since the last call (zeros if none); starts a new sum."""
        mean = self._sum / self._count if self._count else np.zeros(self.dim)
        self._sum[:] = 0.0
        self._count = 0
        return mean


class LatentEncoder:
    """A loaded representation model: frames in, latent states out (subclasses per model kind)."""

    kind = ""
    uses_actions = False
    """Whether :meth:`encode` wants the action applied since the previous frame."""

    def __init__(self, model, model_id: str, path: str) -> None:
        self.model = model
        self.model_id = model_id
        self.path = path
        cfg = model.config
        self.image_shape = (int(cfg.image_size), int(cfg.image_size), int(cfg.channels))
        self.episode_running = False
        device = next(model.parameters()).device
        if device.type == "cpu":
            model.to(memory_format=torch.channels_last)  # in place; the same model, faster convolutions
        self._input = _InputBuffer(self.image_shape, device)

    @property
    def encoding(self) -> str:
        """The sensor_msgs/Image encoding the model reads."""
        return "rgb8" if self.image_shape[2] == 3 else "mono8"

    @property
    def latent_dim(self) -> int:
        raise NotImplementedError

    def check_image(self, image: np.ndarray, encoding: str) -> None:
        """:class:`ImageFormatError` unless ``image`` is what the model reads (size, channels, encoding)."""
        if encoding != self.encoding:
            raise ImageFormatError(f"model {self.model_id} reads {self.encoding} images, got {encoding}")
        if image.shape != self.image_shape or image.dtype != np.uint8:
            h, w, c = self.image_shape
            raise ImageFormatError(f"model {self.model_id} reads {w}x{h}x{c} uint8 images, "
                                   f"got {image.shape[1]}x{image.shape[0]}x{image.shape[2] if image.ndim == 3 else 1} "
                                   f"{image.dtype}")

    def begin_episode(self) -> None:
        """An episode started: filtering continues from the current belief."""
        self.episode_running = True

    def end_episode(self) -> None:
        """The episode ended: back to per-frame first-step beliefs."""
        self.episode_running = False

    def encode(self, image: np.ndarray, action: np.ndarray | None = None) -> Encoded:
        raise NotImplementedError

    def reconstruction(self, image: np.ndarray, encoded: Encoded) -> tuple[np.ndarray, str]:
        """Diagnostics: the model's reconstruction as a uint8 image and its encoding."""
        raise NotImplementedError


class _InputBuffer:
    """One preallocated (1, C, H, W) float32 network input, refilled from each uint8 (H, W, C) frame.

    Channels-last: the tensor's memory is laid out like the frame (H, W, C), so filling it is a
    straight pass over the pixels.
    """

    def __init__(self, image_shape: tuple[int, int, int], device: torch.device) -> None:
        h, w, c = image_shape
        self._shape = image_shape
        self._cpu = torch.empty((1, c, h, w), dtype=torch.float32).contiguous(memory_format=torch.channels_last)
        self._pixels = self._cpu.numpy()[0]  # (C, H, W) view sharing memory with the tensor
        self._device = device

    def load(self, image: np.ndarray) -> torch.Tensor:
        if image.shape != self._shape or image.dtype != np.uint8:
            raise ImageFormatError(f"the model reads {self._shape} uint8 images, got {image.shape} {image.dtype}")
        # A float32 division, rounded like models.common.to_float_images: the same numbers, no new tensors.
        np.divide(image.transpose(2, 0, 1), np.float32(255.0), out=self._pixels)
        return self._cpu if self._device.type == "cpu" else self._cpu.to(self._device)


def _numpy64(t: torch.Tensor) -> np.ndarray:
    """First row of a (1, n) network output as a float64 numpy vector."""
    return t[0].detach().cpu().numpy().astype(np.float64)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.asarray(x) * 255.0 + 0.5, 0, 255).astype(np.uint8))


class SVAEEncoder(LatentEncoder):
    """SOLAR's structured VAE: Kalman filtering with the model's LDS (see the module docstring)."""

    kind = "svae"
    uses_actions = True

    def __init__(self, model, model_id: str, path: str) -> None:
        super().__init__(model, model_id, path)
        self.belief: tuple[np.ndarray, np.ndarray] | None = None
        self.action_dim = int(model.config.action_dim)
        self.lds = model.dynamics()
        """The model's LDS in numpy (a loaded checkpoint's dynamics do not change)."""
        self._zero_action = np.zeros(self.action_dim)

    @property
    def latent_dim(self) -> int:
        return int(self.model.config.latent_dim)

    def encode(self, image: np.ndarray, action: np.ndarray | None = None) -> Encoded:
        """The model's ``filter_step``: first-step belief between episodes, one Kalman step during one."""
        filtered = self.episode_running and self.belief is not None
        u = None
        if filtered:
            u = self._zero_action if action is None else np.asarray(action, dtype=np.float64)
            if u.shape != (self.action_dim,):
                raise ValueError(f"model {self.model_id} takes {self.action_dim} actions, got {u.shape}")
            if not np.all(np.isfinite(u)):
                raise ValueError("the action contains NaN or Inf; the belief is kept")
        with torch.inference_mode():
            m, s = self.model.potentials(self._input.load(image))
        m, s = _numpy64(m), _numpy64(s)
        mean, cov, _ = kalman_step(self.lds, m, np.diag(s), self.belief if filtered else None, u)
        self.belief = (mean, cov)
        return Encoded(mean, cov, filtered)

    def reconstruction(self, image: np.ndarray, encoded: Encoded) -> tuple[np.ndarray, str]:
        out = _to_uint8(self.model.decode(encoded.mean[None])[0])
        return out, self.encoding


class VAEEncoder(LatentEncoder):
    """Per-frame VAE posterior (no dynamics)."""

    kind = "vae"

    @property
    def latent_dim(self) -> int:
        return int(self.model.config.latent_dim)

    def encode(self, image: np.ndarray, action: np.ndarray | None = None) -> Encoded:
        with torch.inference_mode():
            mean, var = self.model.encoder(self._input.load(image))
        return Encoded(_numpy64(mean), np.diag(_numpy64(var)), False)

    def reconstruction(self, image: np.ndarray, encoded: Encoded) -> tuple[np.ndarray, str]:
        return _to_uint8(self.model.decode(encoded.mean[None])[0]), self.encoding


class DSAEEncoder(LatentEncoder):
    """Deep spatial autoencoder: feature points with a fixed small covariance."""

    kind = "dsae"

    def __init__(self, model, model_id: str, path: str, point_variance: float = 1e-4) -> None:
        super().__init__(model, model_id, path)
        if not point_variance > 0:
            raise ValueError(f"point_variance must be positive, got {point_variance}")
        self.point_variance = float(point_variance)
        self._cov = np.eye(self.latent_dim) * self.point_variance
        self._cov.flags.writeable = False  # handed out with every frame, never copied

    @property
    def latent_dim(self) -> int:
        return 2 * int(self.model.config.num_points)

    def encode(self, image: np.ndarray, action: np.ndarray | None = None) -> Encoded:
        with torch.inference_mode():
            points = self.model.points(self._input.load(image))
        return Encoded(_numpy64(points), self._cov, False)

    def reconstruction(self, image: np.ndarray, encoded: Encoded) -> tuple[np.ndarray, str]:
        recon = self.model.reconstruct(image[None])[0]
        return _to_uint8(recon)[:, :, None], "mono8"

    def feature_points_image(self, image: np.ndarray, encoded: Encoded, scale: int = 4) -> np.ndarray:
        """The input (upscaled ``scale`` x) with each feature point drawn as a coloured dot (rgb8)."""
        from ..models.dsae import feature_points_to_pixels

        size = self.image_shape[0]
        rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
        canvas = cv2.resize(rgb, (size * scale, size * scale), interpolation=cv2.INTER_NEAREST)
        pixels = feature_points_to_pixels(encoded.mean.reshape(-1, 2), size)
        n = len(pixels)
        for i, (px, py) in enumerate(pixels):
            hue = int(180 * i / max(n, 1))
            colour = cv2.cvtColor(np.uint8([[[hue, 255, 255]]]), cv2.COLOR_HSV2RGB)[0, 0].tolist()
            centre = (int(round((px + 0.5) * scale - 0.5)), int(round((py + 0.5) * scale - 0.5)))
            cv2.circle(canvas, centre, max(2, scale), colour, thickness=-1, lineType=cv2.LINE_AA)
        return np.ascontiguousarray(canvas)


def load_encoder(path: str | os.PathLike, device: str = "cpu", point_variance: float = 1e-4) -> LatentEncoder:
    """Load a checkpoint as a :class:`LatentEncoder` (FileNotFoundError, or CheckpointError for a bad file)."""
    from ..models.checkpoint import load_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path)
    model = ckpt.model.to(device).eval()
    model_id = str(ckpt.extra.get("model_id") or file_model_id(path, ckpt.kind))
    if ckpt.kind == "svae":
        return SVAEEncoder(model, model_id, str(path))
    if ckpt.kind == "vae":
        return VAEEncoder(model, model_id, str(path))
    return DSAEEncoder(model, model_id, str(path), point_variance)


class LatencyRing:
    """Per-frame latencies (ns) in a fixed ring; percentiles for the periodic log line."""

    def __init__(self, size: int = 2048) -> None:
        self._ns = np.zeros(size, dtype=np.int64)
        self.count = 0

    def add(self, ns: int) -> None:
        self._ns[self.count % self._ns.size] = ns
        self.count += 1

    def percentiles_ms(self, q=(50, 99)) -> np.ndarray:
        n = min(self.count, self._ns.size)
        if n == 0:
            return np.full(len(q), np.nan)
        return np.percentile(self._ns[:n] * 1e-6, q)


class Stopwatch:
    """perf_counter_ns stopwatch (for the per-frame encode latency)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter_ns()

    def ns(self) -> int:
        return time.perf_counter_ns() - self.t0
