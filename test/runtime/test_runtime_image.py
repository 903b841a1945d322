"""Image preprocessing (solar_ros.runtime.image) against numpy references."""
from __future__ import annotations

import numpy as np
import pytest

from solar_ros.runtime.image import (
    ImageFormatError,
    center_crop_box,
    convert_image_message,
    image_to_array,
    preprocess_image,
)

RNG = np.random.default_rng(0)


def test_image_to_array_drops_row_padding():
    img = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    padded = np.zeros((5, 7 * 3 + 4), np.uint8)
    padded[:, :21] = img.reshape(5, 21)
    out = image_to_array(padded.tobytes(), 5, 7, "rgb8", step=25)
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("bigendian", [False, True])
def test_image_to_array_mono16_byte_order(bigendian):
    values = RNG.integers(0, 65536, size=(3, 4), dtype=np.uint16)
    raw = values.astype(">u2" if bigendian else "<u2").tobytes()
    out = image_to_array(raw, 3, 4, "mono16", step=8, is_bigendian=bigendian)
    np.testing.assert_array_equal(out[..., 0], values)
    assert out.dtype == np.uint16 and out.dtype.isnative


@pytest.mark.parametrize("kwargs, match", [
    (dict(encoding="yuv422"), "unsupported image encoding"),
    (dict(height=0), "empty image"),
    (dict(step=5), "smaller than one row"),
    (dict(data=b"\0" * 10), "step\\*height"),
    (dict(data=b"\0" * 200), "step\\*height"),
])
def test_image_to_array_rejects_bad_images(kwargs, match):
    args = dict(data=b"\0" * 4 * 4 * 3, height=4, width=4, encoding="rgb8", step=12)
    args.update(kwargs)
    with pytest.raises(ImageFormatError, match=match):
        image_to_array(**args)


def test_center_crop_box():
    assert center_crop_box(480, 640, 64, 64) == (0, 80, 480, 480)     # wide: trim the sides
    assert center_crop_box(640, 480, 64, 64) == (80, 0, 480, 480)     # tall: trim top and bottom
    assert center_crop_box(480, 640, 48, 64) == (0, 0, 480, 640)      # same aspect: nothing


def test_area_downscale_equals_block_mean_of_the_centre_crop():
    img = RNG.integers(0, 256, size=(128, 256, 3), dtype=np.uint8)
    out = preprocess_image(img, "rgb8", out_width=64, out_height=64, interpolation="area")
    crop = img[:, 64:192].astype(np.float64)
    block_mean = crop.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.max(np.abs(out - block_mean)) <= 0.5 + 1e-9


def test_crop_none_keeps_the_whole_field_of_view():
    img = np.zeros((64, 128, 3), np.uint8)
    img[:, :32] = (255, 0, 0)
    centred = preprocess_image(img, "rgb8", out_width=32, out_height=32, crop="center")
    stretched = preprocess_image(img, "rgb8", out_width=32, out_height=32, crop="none")
    assert np.all(centred == 0), "the centre crop (columns 32..96) has no red"
    assert np.all(stretched[:, :8, 0] == 255) and np.all(stretched[:, 8:, 0] == 0)


def test_colour_conversions():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    np.testing.assert_array_equal(preprocess_image(bgr, "bgr8", out_width=2, out_height=2)[0, 0], (0, 0, 200))
    bgra = np.dstack([bgr, np.full((2, 2), 7, np.uint8)])
    np.testing.assert_array_equal(preprocess_image(bgra, "bgra8", out_width=2, out_height=2)[0, 0], (0, 0, 200))
    mono = np.full((2, 2), 90, np.uint8)
    np.testing.assert_array_equal(preprocess_image(mono, "mono8", out_width=2, out_height=2)[0, 0], (90, 90, 90))
    rgb = RNG.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    gray = preprocess_image(rgb, "rgb8", out_width=4, out_height=4, out_encoding="mono8")
    luma = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert gray.shape == (4, 4, 1) and np.max(np.abs(gray[..., 0] - luma)) <= 1.0


def test_mono16_scaling():
    depth = np.array([[0, 500], [1000, 4000]], np.uint16)
    out = preprocess_image(depth, "16UC1", out_width=2, out_height=2, mono16_max=1000.0)
    np.testing.assert_array_equal(out[..., 0], [[0, 128], [255, 255]])
    np.testing.assert_array_equal(out[..., 1], out[..., 0])


def test_convert_image_message_end_to_end():
    img = RNG.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    out = convert_image_message(img.tobytes(), 30, 40, "rgb8", 120, False, out_width=40, out_height=30)
    np.testing.assert_array_equal(out, img)


def test_bad_options_are_value_errors():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="output encoding"):
        preprocess_image(img, "rgb8", out_width=2, out_height=2, out_encoding="bgr8")
    with pytest.raises(ValueError, match="interpolation"):
        preprocess_image(img, "rgb8", out_width=2, out_height=2, interpolation="cubic-ish")
    with pytest.raises(ValueError, match="positive"):
        preprocess_image(img, "rgb8", out_width=0, out_height=2)
    with pytest.raises(ImageFormatError, match="must be"):
        preprocess_image(img, "mono8", out_width=2, out_height=2)
