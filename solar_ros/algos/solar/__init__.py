"""SOLAR: model-based RL from images with a linear-dynamics latent space and LQR-FLM.

``solar-ros train --method solar`` (and ``--method vae``, the ablation) runs :func:`train`. The
package, read in this order:

* :mod:`.config`: the run's settings (:class:`SolarConfig`, :data:`PROJECT_SETTINGS`,
  :data:`TASK_DEFAULTS`);
* :mod:`.models`: the recorded rollouts (:class:`RolloutData`), the latent-model interface
  (:class:`LatentModel`) and its two implementations (SOLAR's structured VAE, the VAE ablation),
  the learned latent cost as LQR-FLM's quadratic;
* :mod:`.loop`: the learning loop (its docstring describes it step by step), its iteration step
  :func:`solar_step` and model refit :func:`refit`, which the model fitting node runs too;
* :mod:`.mpc`: the MPC ablation (``--method solar_mpc``): the same model and loop, actions by CEM MPC;
* :mod:`.persistence`: the run's rollouts and checkpoint on disk.
"""
from .config import PROJECT_SETTINGS, SAWYER_SETTINGS, TASK_DEFAULTS, SolarConfig
from .labels import label_costs, labels_latent_cost, scripted_labels
from .loop import (
    EVAL,
    FIT,
    ITERATION,
    NOISE,
    PRETRAIN,
    derive_seed,
    dynamics_prior,
    evaluate_saved_run,
    final_policy,
    heldout_diagnostics,
    latent_actor,
    latent_diagnostics,
    pretraining_diagnostics,
    random_actor,
    reexpress_policy,
    refit,
    solar_step,
    task_action_weights,
    task_distance_link,
    train,
    train_mpc_ablation,
    train_vae_ablation,
)
from .models import (
    COPY_NOISE_VAR,
    MODEL_CLASSES,
    DistanceLink,
    FitHook,
    FitProgress,
    LatentModel,
    ReadoutHead,
    RolloutData,
    SVAELatentModel,
    VAELatentModel,
    approach_goal,
    cost_r2,
    distance_latent_cost,
    fit_readout,
    latent_cost,
    local_latent_cost,
    readout_latent_cost,
    spread_points,
    train_svae_weighted,
)
from .persistence import CHECKPOINT_NAME, DATA_DIR, load_data, load_run_checkpoint, save_data, save_run_checkpoint

__all__ = [
    "CHECKPOINT_NAME", "COPY_NOISE_VAR", "DATA_DIR", "EVAL", "FIT", "ITERATION", "MODEL_CLASSES", "NOISE", "PRETRAIN",
    "PROJECT_SETTINGS", "SAWYER_SETTINGS", "TASK_DEFAULTS", "FitHook", "FitProgress", "LatentModel", "RolloutData",
    "ReadoutHead", "SVAELatentModel", "SolarConfig", "VAELatentModel", "DistanceLink", "cost_r2", "derive_seed",
    "distance_latent_cost", "dynamics_prior", "evaluate_saved_run", "final_policy",
    "heldout_diagnostics",
    "latent_actor", "latent_cost", "latent_diagnostics", "load_data", "load_run_checkpoint", "local_latent_cost",
    "fit_readout", "readout_latent_cost", "spread_points", "approach_goal",
    "pretraining_diagnostics", "random_actor", "reexpress_policy", "refit", "save_data", "save_run_checkpoint",
    "solar_step", "label_costs", "labels_latent_cost", "scripted_labels", "task_action_weights",
    "task_distance_link", "train", "train_mpc_ablation", "train_svae_weighted",
    "train_vae_ablation",
]
