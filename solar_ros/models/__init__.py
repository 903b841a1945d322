"""Representation models (torch, ROS-free): deep spatial autoencoder, VAE, SOLAR's structured VAE,
the differentiable Kalman smoother they share, training loops and checkpoints.

Typical SOLAR use::

    model = StructuredVAE(SVAEConfig(image_size=64, latent_dim=10, action_dim=du))
    update = ConjugateLDSUpdate(BayesianLDS.default_prior(10, du))
    history = train_svae(model, images, actions, costs, SVAETrainConfig(steps=2000), lds_update=update)
    mean, cov = model.filter_step(frame)                     # at control time, then with actions
    save_checkpoint("svae.pt", model, extra={"iteration": 0})

Images are uint8 (N, T, H, W, C) sequences or (B, H, W, C) frames; costs are costs, not rewards.
"""
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .dsae import DeepSpatialAutoencoder, DSAEConfig, SpatialSoftmax, feature_points_to_pixels
from .kalman_torch import kalman_smoother
from .lds_update import ConjugateLDSUpdate
from .svae import LatentQuadraticCost, SmoothedStats, StructuredVAE, SVAEConfig, beta_schedule
from .train import DSAETrainConfig, SVAETrainConfig, VAETrainConfig, train_dsae, train_svae, train_vae
from .vae import VAE, VAEConfig

__all__ = [
    "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint",
    "DeepSpatialAutoencoder", "DSAEConfig", "SpatialSoftmax", "feature_points_to_pixels",
    "kalman_smoother", "ConjugateLDSUpdate",
    "LatentQuadraticCost", "SmoothedStats", "StructuredVAE", "SVAEConfig", "beta_schedule",
    "DSAETrainConfig", "SVAETrainConfig", "VAETrainConfig", "train_dsae", "train_svae", "train_vae",
    "VAE", "VAEConfig",
]
