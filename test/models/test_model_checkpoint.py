"""Checkpoints: exact round trips for every model kind; missing, corrupt and wrong-version files."""
import os

import numpy as np
import pytest
import torch

from solar_ros.models import checkpoint as ckpt_mod
from solar_ros.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from solar_ros.models.dsae import DeepSpatialAutoencoder, DSAEConfig
from solar_ros.models.svae import StructuredVAE, SVAEConfig
from solar_ros.models.vae import VAE, VAEConfig


def _models():
    torch.manual_seed(0)
    return [
        DeepSpatialAutoencoder(DSAEConfig(image_size=24, channels=3, conv_channels=(4, 4, 3), target_dim=2)),
        VAE(VAEConfig(image_size=16, channels=3, latent_dim=3, likelihood="gaussian")),
        StructuredVAE(SVAEConfig(image_size=16, channels=3, latent_dim=3, action_dim=2)),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["dsae", "vae", "svae"])
def test_round_trip_is_exact(tmp_path, index):
    model = _models()[index]
    if isinstance(model, StructuredVAE):
        model.set_dynamics(A=0.5 * np.eye(3), B=np.ones((3, 2)), c=np.arange(3.0), Q=0.2 * np.eye(3),
                           mu0=np.ones(3), V0=3 * np.eye(3))
    extra = {"iteration": 4, "note": "after pretraining", "goal": np.array([0.1, -0.2]),
             "history": [1.0, 0.5], "nested": {"scale": np.float64(2.0), "ids": (1, 2)}}
    path = save_checkpoint(tmp_path / "sub" / "model.pt", model, extra=extra)
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    ck = load_checkpoint(path)
    assert ck.kind == model.kind and type(ck.model) is type(model)
    assert ck.config == model.config
    ref, got = model.state_dict(), ck.model.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    np.testing.assert_array_equal(ck.extra["goal"], extra["goal"])
    assert ck.extra["nested"] == {"scale": 2.0, "ids": (1, 2)}
    assert ck.extra["iteration"] == 4 and ck.extra["history"] == [1.0, 0.5]
    size = model.config.image_size
    img = np.random.default_rng(0).integers(0, 256, size=(2, size, size, 3), dtype=np.uint8)
    # DSAE encodes to feature points, the VAEs to (mean, var): compare whatever comes out.
    np.testing.assert_array_equal(np.asarray(model.encode(img)), np.asarray(ck.model.encode(img)))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_and_truncated_files(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    good = save_checkpoint(tmp_path / "good.pt", _models()[1])
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)
    not_ours = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), not_ours)
    with pytest.raises(CheckpointError, match="not a solar_ros model checkpoint"):
        load_checkpoint(not_ours)


def test_wrong_version_kind_and_weights(tmp_path):
    model = _models()[1]
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    for change, message in [({"format_version": 99}, "format version 99"), ({"kind": "gan"}, "unknown model kind"),
                            ({"state_dict": {}}, "do not fit")]:
        torch.save({**payload, **change}, tmp_path / "edited.pt")
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "edited.pt")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    models = _models()
    path = save_checkpoint(tmp_path / "m.pt", models[1])
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, models[2])
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_wrong_config_or_model_rejected(tmp_path):
    dsae, vae, _ = _models()
    with pytest.raises(ValueError, match="VAEConfig"):
        save_checkpoint(tmp_path / "x.pt", vae, config=dsae.config)
    with pytest.raises(ValueError, match="cannot checkpoint"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))
