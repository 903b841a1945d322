"""Plain VAE (the no-dynamics ablation): shapes, ELBO terms against closed forms, gradients, learning."""
import numpy as np
import pytest
import torch

from solar_ros.models.common import images_log_likelihood
from solar_ros.models.train import VAETrainConfig, train_vae
from solar_ros.models.vae import VAE, VAEConfig


@pytest.mark.parametrize("size,channels", [(64, 3), (32, 1), (16, 3)])
def test_shapes(size, channels):
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=size, channels=channels))
    imgs = np.random.default_rng(0).integers(0, 256, size=(4, size, size, channels), dtype=np.uint8)
    mean, var = model.encode(imgs)
    assert mean.shape == var.shape == (4, 10) and np.all(var > 0)
    m1, v1 = model.encode(imgs[2])
    np.testing.assert_allclose(m1, mean[2], atol=1e-6)
    np.testing.assert_allclose(v1, var[2], atol=1e-6)
    out = model.decode(mean)
    assert out.shape == (4, size, size, channels) and out.min() >= 0 and out.max() <= 1
    # Many frames go through the network a chunk at a time (bounded memory), with the same result.
    m3, v3 = model.encode(imgs, chunk=3)
    np.testing.assert_allclose(m3, mean, atol=1e-5)
    np.testing.assert_allclose(v3, var, rtol=1e-5)


def test_likelihoods_match_closed_forms():
    rng = np.random.default_rng(0)
    out = torch.tensor(rng.normal(size=(2, 1, 3, 3)), dtype=torch.float64)
    target = torch.tensor(rng.uniform(size=(2, 1, 3, 3)), dtype=torch.float64)
    p = torch.sigmoid(out)
    bern = (target * torch.log(p) + (1 - target) * torch.log(1 - p)).flatten(1).sum(1)
    torch.testing.assert_close(images_log_likelihood(out, target, "bernoulli"), bern)
    log_var = torch.tensor(-1.3, dtype=torch.float64)
    gauss = torch.distributions.Normal(out, torch.exp(0.5 * log_var)).log_prob(target).flatten(1).sum(1)
    torch.testing.assert_close(images_log_likelihood(out, target, "gaussian", log_var), gauss)


def test_kl_term_is_closed_form_gaussian_kl():
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=16, channels=1, latent_dim=3))
    x = torch.rand(5, 1, 16, 16)
    terms = model.loss(x, generator=torch.Generator().manual_seed(0))
    mean, var = model.encoder(x)
    q = torch.distributions.Normal(mean, var.sqrt())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(var))
    kl = torch.distributions.kl_divergence(q, p).sum(-1).mean()
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["loss"], terms["kl"] - terms["recon_ll"])


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_gradients_reach_every_parameter(likelihood):
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=16, channels=3, likelihood=likelihood))
    model.loss(torch.rand(2, 3, 3, 16, 16))["loss"].backward()
    names = [n for n, _ in model.named_parameters()]
    assert ("log_pixel_var" in names) == (likelihood == "gaussian")
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_config_raises():
    with pytest.raises(ValueError, match="likelihood"):
        VAEConfig(likelihood="poisson")
    with pytest.raises(ValueError, match="8 \\* 2\\^k"):
        VAE(VAEConfig(image_size=24, first_stride=1))


def test_training_lowers_negative_elbo_below_any_latent_free_model(dot_data):
    images, _, _, _ = dot_data(16, 8, 16, channels=1, seed=0)
    # A model that ignores z can at best predict the per-pixel mean image (KL = 0): its NLL is the
    # bar a VAE that really encodes the dot must beat.
    x = images.reshape(len(images) * 8, -1) / 255.0
    mu = x.mean(0).clip(1e-6, 1 - 1e-6)
    latent_free_nll = -(x * np.log(mu) + (1 - x) * np.log(1 - mu)).sum(1).mean()
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=16, channels=1, latent_dim=4))
    hist = train_vae(model, images, VAETrainConfig(steps=150, batch_size=4, lr=3e-3, disable_progress=True))
    assert set(hist) == {"loss", "recon_ll", "kl"} and len(hist["loss"]) == 150
    first, last = np.mean(hist["loss"][:10]), np.mean(hist["loss"][-10:])
    assert last < 0.5 * first
    assert last < 0.95 * latent_free_nll, (last, latent_free_nll)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_background_model_offsets_the_decoder_by_the_mean_image(likelihood):
    rng = np.random.default_rng(0)
    vae = VAE(VAEConfig(image_size=16, latent_dim=3, likelihood=likelihood, background=True))
    images = rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    vae.set_background(images)
    mean = torch.from_numpy(images.astype(np.float64).mean(0).transpose(2, 0, 1) / 255).float()
    np.testing.assert_allclose(vae.background.mean.numpy(), mean.numpy(), atol=1e-6)
    z = torch.zeros(1, 3)
    with torch.no_grad():
        offset = torch.logit(mean.clamp(0.01, 0.99)) if likelihood == "bernoulli" else mean
        np.testing.assert_allclose(vae._decode(z).numpy(), (vae.decoder(z) + offset).numpy(), atol=1e-5)
        m, _ = vae._encode(mean[None])
        m0, _ = vae.encoder(torch.zeros(1, 3, 16, 16))
        np.testing.assert_allclose(m.numpy(), m0.numpy(), atol=1e-5)
