"""Camera image preprocessing: raw sensor_msgs/Image fields -> the model's input image.

:func:`image_to_array` validates and views the raw bytes of an image message as an (H, W, C)
array; :func:`preprocess_image` centre-crops it to the output aspect ratio, resizes it and converts
it to the model's encoding (``rgb8`` or ``mono8``). Both raise :class:`ImageFormatError` (a
``ValueError``) with a message that says what was wrong, so a node can log it and carry on.
"""
from __future__ import annotations

from typing import Final

import cv2
import numpy as np

# encoding -> (channels, dtype, colour order); 8UC1/8UC3/16UC1 follow OpenCV's conventions.
ENCODINGS: Final[dict[str, tuple[int, np.dtype, str]]] = {
    "rgb8": (3, np.dtype(np.uint8), "rgb"),
    "bgr8": (3, np.dtype(np.uint8), "bgr"),
    "rgba8": (4, np.dtype(np.uint8), "rgba"),
    "bgra8": (4, np.dtype(np.uint8), "bgra"),
    "mono8": (1, np.dtype(np.uint8), "mono"),
    "8UC1": (1, np.dtype(np.uint8), "mono"),
    "8UC3": (3, np.dtype(np.uint8), "bgr"),
    "mono16": (1, np.dtype(np.uint16), "mono"),
    "16UC1": (1, np.dtype(np.uint16), "mono"),
}
"""Input encodings the camera node accepts."""

OUTPUT_ENCODINGS: Final[dict[str, int]] = {"rgb8": 3, "mono8": 1}
"""Model input encodings -> channels."""

INTERPOLATIONS: Final[dict[str, int]] = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
}

_TO_RGB = {"bgr": cv2.COLOR_BGR2RGB, "rgba": cv2.COLOR_RGBA2RGB, "bgra": cv2.COLOR_BGRA2RGB,
           "mono": cv2.COLOR_GRAY2RGB}
_TO_GRAY = {"rgb": cv2.COLOR_RGB2GRAY, "bgr": cv2.COLOR_BGR2GRAY, "rgba": cv2.COLOR_RGBA2GRAY,
            "bgra": cv2.COLOR_BGRA2GRAY}


class ImageFormatError(ValueError):
    """An image that cannot be converted (unsupported encoding, inconsistent size, empty)."""


def image_to_array(data, height: int, width: int, encoding: str, step: int,
                   is_bigendian: bool = False) -> np.ndarray:
    """View the raw bytes of an image message as an (H, W, C) array (no copy where possible).

    ``data`` is anything exposing the buffer protocol (bytes, array.array, numpy array). The checks
    mirror sensor_msgs/Image's contract: ``len(data) == step * height`` and
    ``step >= width * channels * bytes_per_channel``; row padding beyond the pixels is dropped.
    """
    if encoding not in ENCODINGS:
        raise ImageFormatError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    channels, dtype, _ = ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise ImageFormatError(f"empty image ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageFormatError(
            f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)")
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != step * height:
        raise ImageFormatError(
            f"image data has {raw.size} bytes but step*height = {step}*{height} = {step * height}")
    rows = raw.reshape(height, step)[:, :row_bytes]
    if dtype.itemsize > 1:
        order = ">" if is_bigendian else "<"
        # A byte-level slice of a padded buffer cannot be re-viewed as wider items: copy rows first.
        rows = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).astype(dtype, copy=False)
    else:
        rows = rows.view(dtype)
    return rows.reshape(height, width, channels)


def center_crop_box(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """Largest centred (top, left, h, w) box of the output's aspect ratio inside an image."""
    target = out_width / out_height
    if width / height > target:  # too wide: trim the sides
        w = max(1, int(round(height * target)))
        return 0, (width - w) // 2, height, w
    h = max(1, int(round(width / target)))
    return (height - h) // 2, 0, h, width


def preprocess_image(image: np.ndarray, encoding: str, *, out_width: int, out_height: int,
                     out_encoding: str = "rgb8", crop: str = "center", interpolation: str = "area",
                     mono16_max: float = 65535.0) -> np.ndarray:
    """Crop, resize and convert an (H, W, C) image in ``encoding`` to the model input.

    Returns a C-contiguous uint8 array (out_height, out_width, 3) for ``rgb8`` or
    (out_height, out_width, 1) for ``mono8``. ``crop="center"`` keeps the aspect ratio (centre crop
    to the output's ratio, then resize); ``crop="none"`` stretches the whole image. 16-bit images
    are mapped linearly with ``mono16_max`` -> 255 (values above saturate).
    """
    if encoding not in ENCODINGS:
        raise ImageFormatError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    if out_encoding not in OUTPUT_ENCODINGS:
        raise ValueError(f"output encoding must be one of {list(OUTPUT_ENCODINGS)}, got {out_encoding!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}")
    if crop not in ("center", "none"):
        raise ValueError(f"crop must be 'center' or 'none', got {crop!r}")
    if out_width <= 0 or out_height <= 0:
        raise ValueError(f"output size must be positive, got {out_width}x{out_height}")
    if not mono16_max > 0:
        raise ValueError(f"mono16_max must be positive, got {mono16_max}")
    channels, dtype, colour = ENCODINGS[encoding]
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != channels or image.dtype != dtype:
        raise ImageFormatError(
            f"{encoding} image must be (H, W, {channels}) {dtype}, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ImageFormatError(f"empty image ({w}x{h})")

    if crop == "center":
        top, left, ch, cw = center_crop_box(h, w, out_height, out_width)
        image = image[top:top + ch, left:left + cw]
    if image.shape[:2] != (out_height, out_width):
        image = cv2.resize(image, (out_width, out_height), interpolation=INTERPOLATIONS[interpolation])
        if image.ndim == 2:  # OpenCV drops a single channel axis
            image = image[:, :, None]
    if dtype == np.uint16:
        # Scale after resizing: only the small image is touched.
        image = np.clip(image.astype(np.float32) * (255.0 / mono16_max) + 0.5, 0, 255).astype(np.uint8)

    if out_encoding == "rgb8":
        out = image if colour == "rgb" else cv2.cvtColor(image, _TO_RGB[colour])
    else:
        out = image if colour == "mono" else cv2.cvtColor(image, _TO_GRAY[colour])
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out)


def convert_image_message(data, height: int, width: int, encoding: str, step: int, is_bigendian: bool,
                          **kwargs) -> np.ndarray:
    """:func:`image_to_array` then :func:`preprocess_image` (keyword arguments go to the latter)."""
    return preprocess_image(image_to_array(data, height, width, encoding, step, is_bigendian), encoding, **kwargs)
