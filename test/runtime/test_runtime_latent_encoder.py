"""The encoder node's frame -> latent path (solar_ros.runtime.latent_encoder) against the models' own
reference methods: the preallocated channels-last input, inference mode and the numpy Kalman step
must give the numbers of ``StructuredVAE.filter_step``, ``VAE.encode`` and
``DeepSpatialAutoencoder.encode`` of an untouched copy of the model (to float32 round-off)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from solar_ros.models import (
    VAE,
    DeepSpatialAutoencoder,
    DSAEConfig,
    StructuredVAE,
    SVAEConfig,
    VAEConfig,
    save_checkpoint,
)
from solar_ros.runtime.image import ImageFormatError
from solar_ros.runtime.latent_encoder import ActionAccumulator, DSAEEncoder, SVAEEncoder, VAEEncoder, load_encoder

SIZE = 32
# Convolutions in another memory format sum in another order: float32 round-off, relative ~1e-7.
TOL = dict(rtol=1e-5, atol=1e-7)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def svae():
    torch.manual_seed(0)
    model = StructuredVAE(SVAEConfig(image_size=SIZE, latent_dim=4, action_dim=7, encoder_hidden=32,
                                     decoder_hidden=64))
    rng = np.random.default_rng(1)
    model.set_dynamics(0.9 * np.eye(4) + 0.05 * rng.standard_normal((4, 4)), 0.1 * rng.standard_normal((4, 7)),
                       0.1 * np.ones(4), 0.2 * np.eye(4), 0.1 * np.ones(4), 0.5 * np.eye(4))
    return model.eval()


def test_svae_encoder_is_the_models_filter_step(svae):
    enc = SVAEEncoder(copy.deepcopy(svae), "svae-a", "mem")
    images = frames(4)
    first = enc.encode(images[0])
    mean, cov = svae.filter_step(images[0])
    assert not first.filtered
    np.testing.assert_allclose(first.mean, mean, **TOL)
    np.testing.assert_allclose(first.covariance, cov, **TOL)
    enc.begin_episode()
    rng = np.random.default_rng(2)
    for image in images[1:]:
        u = rng.standard_normal(7)
        out = enc.encode(image, u)
        mean, cov = svae.filter_step(image, mean, cov, u)
        assert out.filtered
        np.testing.assert_allclose(out.mean, mean, **TOL)
        np.testing.assert_allclose(out.covariance, cov, **TOL)
    # No action given during an episode means u = 0.
    out = enc.encode(images[0])
    np.testing.assert_allclose(out.mean, svae.filter_step(images[0], mean, cov, np.zeros(7))[0], **TOL)
    enc.end_episode()
    np.testing.assert_allclose(enc.encode(images[1]).mean, svae.filter_step(images[1])[0], **TOL)
    with pytest.raises(ValueError, match="takes 7 actions"):
        enc.begin_episode()
        enc.encode(images[0], np.zeros(3))


def test_vae_and_dsae_encoders_are_the_models_encode():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=SIZE, latent_dim=3)).eval()
    dsae = DeepSpatialAutoencoder(DSAEConfig(image_size=SIZE, conv_channels=(8, 8, 4))).eval()
    v = VAEEncoder(copy.deepcopy(vae), "vae", "mem")
    d = DSAEEncoder(copy.deepcopy(dsae), "dsae", "mem", point_variance=1e-3)
    for image in frames(3, seed=5):
        mean, var = vae.encode(image)
        out = v.encode(image)
        np.testing.assert_allclose(out.mean, mean, **TOL)
        np.testing.assert_allclose(out.covariance, np.diag(var), **TOL)
        out = d.encode(image)
        np.testing.assert_allclose(out.mean, dsae.encode(image), **TOL)
        np.testing.assert_array_equal(out.covariance, np.eye(8) * 1e-3)
        assert not out.covariance.flags.writeable, "the shared covariance must not be modifiable"


def test_wrong_images_are_a_format_error(svae):
    enc = SVAEEncoder(svae, "svae-a", "mem")
    with pytest.raises(ImageFormatError, match="uint8"):
        enc.encode(np.zeros((SIZE, SIZE, 3), np.float32))
    with pytest.raises(ImageFormatError):
        enc.encode(np.zeros((16, 16, 3), np.uint8))


def test_load_encoder_gives_the_checkpoints_kind_and_id(svae, tmp_path):
    save_checkpoint(tmp_path / "m.pt", svae, extra={"model_id": "svae-xyz"})
    enc = load_encoder(tmp_path / "m.pt")
    assert isinstance(enc, SVAEEncoder) and enc.model_id == "svae-xyz" and enc.latent_dim == 4
    image = frames(1)[0]
    np.testing.assert_allclose(enc.encode(image).mean, svae.filter_step(image)[0], rtol=1e-6, atol=1e-8)


def test_nan_inf_and_wrong_length_torque_commands_stay_out_of_the_filter(svae):
    acc = ActionAccumulator(7)
    good = [np.linspace(-1.0, 2.0, 7), np.full(7, 0.5)]
    assert acc.add(good[0]) is None
    assert "NaN or Inf" in acc.add([np.nan] + [0.0] * 6)
    assert "NaN or Inf" in acc.add([0.0] * 6 + [np.inf])
    assert "NaN or Inf" in acc.add([-np.inf] * 7)
    assert "has 6 values" in acc.add([1.0] * 6)
    assert "has 8 values" in acc.add([1.0] * 8)
    assert acc.add(good[1]) is None
    assert acc.rejected == 5
    mean = acc.take_mean()
    np.testing.assert_allclose(mean, np.mean(good, axis=0))
    np.testing.assert_array_equal(acc.take_mean(), np.zeros(7))  # a new sum after each frame
    assert acc.add([np.nan] * 7) and np.all(acc.take_mean() == 0.0), "only bad commands: u = 0"

    # The filter sees the mean of the good commands only, as if the bad ones were never sent.
    enc = SVAEEncoder(copy.deepcopy(svae), "svae-a", "mem")
    images = frames(2, seed=9)
    enc.encode(images[0])
    enc.begin_episode()
    prior = enc.belief
    out = enc.encode(images[1], mean)
    expected, _ = svae.filter_step(images[1], prior[0], prior[1], np.mean(good, axis=0))
    np.testing.assert_allclose(out.mean, expected, **TOL)
    assert np.all(np.isfinite(out.mean)) and np.all(np.isfinite(out.covariance))
    # A non-finite action handed to encode directly is refused and the belief kept.
    belief = enc.belief
    with pytest.raises(ValueError, match="NaN or Inf"):
        enc.encode(images[0], np.full(7, np.nan))
    assert enc.belief is belief
