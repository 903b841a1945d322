"""Training loops: determinism, minibatching, the LDS-update hook, and input validation."""
import numpy as np
import pytest
import torch

from solar_ros.core.gaussian import LDSParams
from solar_ros.models.dsae import DeepSpatialAutoencoder, DSAEConfig
from solar_ros.models.svae import SmoothedStats, StructuredVAE, SVAEConfig
from solar_ros.models.train import (
    DSAETrainConfig,
    SVAETrainConfig,
    VAETrainConfig,
    _Batches,
    train_dsae,
    train_svae,
    train_vae,
)
from solar_ros.models.vae import VAE, VAEConfig


def _dsae(seed=0):
    torch.manual_seed(seed)
    return DeepSpatialAutoencoder(DSAEConfig(image_size=24, channels=1, conv_channels=(4, 4, 2), target_dim=2))


def _vae(seed=0):
    torch.manual_seed(seed)
    return VAE(VAEConfig(image_size=16, channels=1, latent_dim=2))


def _svae(seed=0):
    torch.manual_seed(seed)
    return StructuredVAE(SVAEConfig(image_size=16, channels=1, latent_dim=2, action_dim=2))


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _run(kind, seed, model_seed=0, steps=3):
    rng = np.random.default_rng(0)
    size = 24 if kind == "dsae" else 16
    images = rng.integers(0, 256, size=(6, 4, size, size, 1), dtype=np.uint8)
    if kind == "dsae":
        model = _dsae(model_seed)
        cfg = DSAETrainConfig(steps=steps, batch_size=2, seed=seed, window=3, disable_progress=True)
        hist = train_dsae(model, images, cfg, targets=rng.normal(size=(6, 4, 2)))
    elif kind == "vae":
        model = _vae(model_seed)
        hist = train_vae(model, images, VAETrainConfig(steps=steps, batch_size=2, seed=seed, disable_progress=True))
    else:
        model = _svae(model_seed)
        cfg = SVAETrainConfig(steps=steps, batch_size=2, seed=seed, disable_progress=True)
        hist = train_svae(model, images, rng.normal(size=(6, 4, 2)), rng.normal(size=(6, 4)), cfg)
    return model, hist


@pytest.mark.parametrize("kind", ["dsae", "vae", "svae"])
def test_same_seed_gives_identical_weights(kind):
    m1, h1 = _run(kind, seed=3)
    m2, h2 = _run(kind, seed=3)
    assert h1 == h2
    assert _same(_weights(m1), _weights(m2))
    m3, _ = _run(kind, seed=4)  # another minibatch order / noise
    assert not _same(_weights(m1), _weights(m3))
    init = _weights(_run(kind, seed=3, steps=0)[0])
    assert not _same(init, _weights(m1))  # training changed the weights


def test_batches_cover_every_sequence_once_per_epoch():
    b = _Batches(10, 3, np.random.default_rng(0))
    epoch = np.concatenate([b.next() for _ in range(3)])  # 10 // 3 full batches per epoch
    assert len(set(epoch.tolist())) == 9
    assert all(len(b.next()) == 3 for _ in range(10))
    assert len(_Batches(2, 8, np.random.default_rng(0)).next()) == 2  # batch capped at N


def test_lds_update_hook_called_and_applied():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 5, 16, 16, 1), dtype=np.uint8)
    actions, costs = rng.normal(size=(4, 5, 2)), rng.normal(size=(4, 5))
    calls = []
    dyn = dict(A=0.5 * np.eye(2), B=np.ones((2, 2)), c=np.array([0.1, -0.1]), Q=0.3 * np.eye(2),
               mu0=np.zeros(2), V0=2 * np.eye(2))

    def update(stats):
        assert isinstance(stats, SmoothedStats) and stats.means.shape == (4, 5, 2)
        np.testing.assert_allclose(stats.actions, actions)
        calls.append(1)
        if len(calls) == 1:
            return dyn
        if len(calls) == 2:
            return LDSParams(A=0.9 * np.eye(2), Q=0.1 * np.eye(2), mu0=np.ones(2), V0=np.eye(2), B=np.zeros((2, 2)),
                             b=np.zeros(2))
        return tuple(dyn.values())

    model = _svae()
    cfg = SVAETrainConfig(steps=7, batch_size=2, lds_update_every=3, disable_progress=True)
    hist = train_svae(model, images, actions, costs, cfg, lds_update=update)
    assert len(calls) == 3  # after steps 3, 6 and the last (7)
    assert len(hist["loss"]) == 7 and len(hist["beta"]) == 7
    np.testing.assert_allclose(model.A.numpy(), dyn["A"])
    np.testing.assert_allclose(model.V0.numpy(), dyn["V0"])
    calls.clear()
    cfg = SVAETrainConfig(steps=2, batch_size=2, lds_update_every=5, lds_update_iters=2, disable_progress=True)
    train_svae(_svae(), images, actions, costs, cfg, lds_update=update)
    assert len(calls) == 2  # once at the end, iterated twice


def test_invalid_inputs_raise_clear_errors():
    rng = np.random.default_rng(2)
    good = rng.integers(0, 256, size=(3, 4, 16, 16, 1), dtype=np.uint8)
    actions, costs = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4))
    quiet = SVAETrainConfig(steps=1, disable_progress=True)
    svae = _svae()
    with pytest.raises(ValueError, match="16x16"):
        train_svae(svae, good[:, :, :8], actions, costs, quiet)
    with pytest.raises(ValueError, match="channel"):
        train_svae(svae, np.repeat(good, 3, axis=-1), actions, costs, quiet)
    with pytest.raises(ValueError, match="empty"):
        train_svae(svae, good[:0], actions[:0], costs[:0], quiet)
    with pytest.raises(ValueError, match="empty"):
        train_vae(_vae(), good[:, :0], VAETrainConfig(steps=1, disable_progress=True))
    with pytest.raises(ValueError, match="uint8"):
        train_vae(_vae(), good.astype(np.float32), VAETrainConfig(steps=1, disable_progress=True))
    with pytest.raises(ValueError, match="\\(N, T, H, W, C\\)"):
        train_vae(_vae(), good[0], VAETrainConfig(steps=1, disable_progress=True))
    bad_costs = costs.copy()
    bad_costs[1, 2] = np.nan
    with pytest.raises(ValueError, match="costs contain NaN or Inf"):
        train_svae(svae, good, actions, bad_costs, quiet)
    bad_actions = actions.copy()
    bad_actions[0, 0, 1] = np.inf
    with pytest.raises(ValueError, match="actions contain NaN or Inf"):
        train_svae(svae, good, bad_actions, costs, quiet)
    with pytest.raises(ValueError, match="actions must have shape"):
        train_svae(svae, good, actions[..., :1], costs, quiet)
    with pytest.raises(ValueError, match="costs must have shape"):
        train_svae(svae, good, actions, costs[:, :3], quiet)
    dsae_imgs = rng.integers(0, 256, size=(2, 4, 24, 24, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="targets"):
        train_dsae(_dsae(), dsae_imgs, DSAETrainConfig(steps=1, disable_progress=True), targets=np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="window"):
        train_dsae(_dsae(), dsae_imgs, DSAETrainConfig(steps=1, window=2, disable_progress=True))
    with pytest.raises(ValueError, match="batch_size"):
        VAETrainConfig(batch_size=0)
