"""Deep spatial autoencoder: spatial softmax geometry, shapes, gradients, and learning a moving dot."""
import numpy as np
import pytest
import torch

from solar_ros.models.dsae import DeepSpatialAutoencoder, DSAEConfig, SpatialSoftmax, feature_points_to_pixels
from solar_ros.models.train import DSAETrainConfig, train_dsae


def _heldout_r2(F, P, Ft, Pt):
    """R^2 on held-out data of an affine least-squares map from features F to positions P."""
    W = np.linalg.lstsq(np.c_[F, np.ones(len(F))], P, rcond=None)[0]
    pred = np.c_[Ft, np.ones(len(Ft))] @ W
    return 1.0 - ((pred - Pt) ** 2).sum() / ((Pt - Pt.mean(0)) ** 2).sum()


def test_spatial_softmax_one_hot_gives_cell_coordinates():
    H, W = 5, 7
    ss = SpatialSoftmax(H, W)
    xs, ys = np.linspace(-1, 1, W), np.linspace(-1, 1, H)
    cells = [(0, 0), (4, 6), (2, 3), (1, 5)]
    feats = torch.zeros(1, len(cells), H, W)
    for k, (r, c) in enumerate(cells):
        feats[0, k, r, c] = 200.0  # effectively one-hot after the softmax
    out = ss(feats)[0].detach().numpy()
    expected = np.array([[xs[c], ys[r]] for r, c in cells])
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_spatial_softmax_two_peaks_uniform_and_temperature():
    ss = SpatialSoftmax(3, 3)
    feats = torch.zeros(1, 2, 3, 3)
    feats[0, 0, 0, 0] = feats[0, 0, 2, 2] = 200.0  # two equal peaks -> their midpoint
    out = ss(feats)[0].detach().numpy()
    np.testing.assert_allclose(out[0], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 0.0], atol=1e-6)  # uniform map -> grid centre
    # Temperature: a peak of height a at (0, 0) on a 3x3 map has weight e^{a/T} / (e^{a/T} + 8).
    feats = torch.zeros(1, 1, 3, 3)
    feats[0, 0, 0, 0] = 1.0
    for T in (0.5, 2.0):
        ss = SpatialSoftmax(3, 3, init_temperature=T)
        w = np.exp(1 / T) / (np.exp(1 / T) + 8)
        # x: column -1 holds w + 2 other cells, column 0 and 1 three cells each.
        x_expected = -1 * (w + 2 * (1 - w) / 8) + 1 * 3 * (1 - w) / 8
        np.testing.assert_allclose(ss(feats)[0, 0, 0].item(), x_expected, rtol=1e-5)


def test_feature_grid_is_receptive_field_centres_in_image_coordinates():
    model = DeepSpatialAutoencoder(DSAEConfig(image_size=64))
    # 7x7/2 then 5x5 then 5x5 (valid): cell k sits over input pixel 2k + 11 (computed by hand).
    pixels = 2 * np.arange(21) + 11
    np.testing.assert_allclose(model.spatial_softmax.xs.numpy(), (pixels + 0.5) / 32 - 1, atol=1e-6)
    np.testing.assert_allclose(model.spatial_softmax.ys.numpy(), model.spatial_softmax.xs.numpy())
    # ... and feature_points_to_pixels maps them back onto those pixels.
    np.testing.assert_allclose(feature_points_to_pixels(model.spatial_softmax.xs.numpy(), 64), pixels, atol=1e-5)


def test_shapes_and_defaults():
    torch.manual_seed(0)
    cfg = DSAEConfig(image_size=64, target_dim=9)
    assert cfg.recon_size == 16 and cfg.num_points == 16
    assert DSAEConfig(image_size=240).recon_size == 60
    model = DeepSpatialAutoencoder(cfg)
    imgs = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    f = model.encode(imgs)
    assert f.shape == (3, 32) and f.dtype == np.float64
    assert np.all(np.abs(f) <= 1)
    np.testing.assert_allclose(model.encode(imgs[1]), f[1], atol=1e-6)
    assert model.reconstruct(imgs).shape == (3, 16, 16)
    x = torch.rand(2, 4, 3, 64, 64)
    terms = model.loss(x, torch.zeros(2, 4, 9))
    assert set(terms) == {"loss", "recon", "smooth", "supervised"}
    assert all(v.shape == () and torch.isfinite(v) for v in terms.values())


def test_smoothness_term_matches_direct_formula():
    torch.manual_seed(0)
    model = DeepSpatialAutoencoder(DSAEConfig(image_size=32, channels=1, conv_channels=(4, 4, 3)))
    x = torch.rand(2, 5, 1, 32, 32)
    terms = model.loss(x, smoothness_weight=2.5)
    f = model.points(x.flatten(0, 1)).view(2, 5, -1).detach().numpy()
    direct = np.mean([np.sum(((f[n, t + 1] - f[n, t]) - (f[n, t] - f[n, t - 1])) ** 2)
                      for n in range(2) for t in range(1, 4)])
    np.testing.assert_allclose(terms["smooth"].item(), direct, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"].item(), terms["recon"].item() + 2.5 * direct, rtol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = DeepSpatialAutoencoder(DSAEConfig(image_size=32, channels=3, conv_channels=(8, 8, 4), target_dim=3))
    x = torch.rand(2, 4, 3, 32, 32)
    model.loss(x, torch.randn(2, 4, 3))["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_images_raise():
    model = DeepSpatialAutoencoder(DSAEConfig(image_size=32, channels=1, conv_channels=(4, 4, 2)))
    with pytest.raises(ValueError, match="32x32"):
        model.encode(np.zeros((1, 30, 32, 1), np.uint8))
    with pytest.raises(ValueError, match="channel"):
        model.encode(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        model.encode(np.zeros((1, 32, 32, 1), np.float32))
    with pytest.raises(ValueError, match="targets"):
        model.loss(torch.rand(1, 3, 1, 32, 32), torch.zeros(1, 3, 2))


def test_training_lowers_loss_and_points_track_the_dot(dot_data):
    images, pos, _, _ = dot_data(24, 10, 32, channels=1, seed=0, sigma=2.0)
    test_images, test_pos, _, _ = dot_data(8, 10, 32, channels=1, seed=1, sigma=2.0)
    torch.manual_seed(0)
    model = DeepSpatialAutoencoder(DSAEConfig(image_size=32, channels=1, conv_channels=(16, 16, 8)))
    flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
    r2_before = _heldout_r2(model.encode(flat(images)), flat(pos), model.encode(flat(test_images)), flat(test_pos))
    hist = train_dsae(model, images, DSAETrainConfig(steps=150, batch_size=4, lr=3e-3, disable_progress=True))
    assert len(hist["loss"]) == 150
    assert np.mean(hist["loss"][-10:]) < 0.5 * np.mean(hist["loss"][:10])
    r2 = _heldout_r2(model.encode(flat(images)), flat(pos), model.encode(flat(test_images)), flat(test_pos))
    assert r2 > 0.9 and r2 > r2_before + 0.15, (r2_before, r2)
