"""Files of a SOLAR run in its output directory.

* the rollouts, ``data/<name>.npz`` (images, actions, costs, and the true states for the diagnostics),
  written once each, atomically;
* the checkpoint, ``checkpoint.pt``, rewritten after every iteration: the whole latent model
  (:meth:`~solar_ros.algos.solar.models.LatentModel.save`: network, LDS posterior, fitted extras;
  the same file format the model fitting node writes) with the loop's state as its ``extra``;
* the pretraining checkpoint, ``pretrain_checkpoint.pt``: the checkpoint as it was after the pretraining fit,
  kept so that another run can start from this run's pretraining (:func:`load_pretraining`);
* with ``final_policy_model='own'``, ``best_checkpoint.pt``: the policy whose rollouts succeeded most often so far
  and the model it acted through when they were collected (:func:`save_own_policy`).
"""
from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from ...core.types import LinearGaussianPolicy
from ...models.checkpoint import load_checkpoint
from ...runtime.atomic import atomic_file
from ..common import RunMismatch, policy_arrays, policy_from_arrays
from .config import ITERATION_SETTINGS, SolarConfig
from .models import LatentModel, RolloutData

CHECKPOINT_NAME = "checkpoint.pt"
PRETRAIN_CHECKPOINT_NAME = "pretrain_checkpoint.pt"
BEST_CHECKPOINT_NAME = "best_checkpoint.pt"
DATA_DIR = "data"


def save_data(out: Path | None, name: str, data: RolloutData) -> str:
    """Write ``data`` as ``out/data/<name>.npz`` (nothing without ``out``); returns ``name``."""
    if out is None:
        return name
    folder = out / DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"images": data.images, "actions": data.actions, "costs": data.costs}
    if data.states is not None:
        arrays["states"] = data.states
    if data.labels is not None:
        arrays["labels"] = data.labels
    with atomic_file(folder / f"{name}.npz") as f:
        np.savez_compressed(f, **arrays)
    return name


def load_data(out: Path, names: list[str]) -> RolloutData:
    """The rollouts written by :func:`save_data` under ``names``, concatenated in that order."""
    parts = []
    for name in names:
        path = out / DATA_DIR / f"{name}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"cannot resume: the checkpoint lists {path}, which is missing")
        with np.load(path) as f:
            parts.append(RolloutData(f["images"], f["actions"], f["costs"], f["states"] if "states" in f else None,
                                     labels=f["labels"] if "labels" in f else None))
    data = parts[0]
    for p in parts[1:]:
        data = data + p
    return data


def load_rollouts_with_states(out: Path, name: str) -> RolloutData:
    """The rollout file ``name`` of the run in ``out``, which must carry the true states (what the analysis
    scripts measure distances with); ValueError naming the file otherwise (missing, unreadable, no states)."""
    try:
        data = load_data(out, [name])
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"cannot read the rollouts {name!r} of {out}: {err}") from err
    if data.states is None:
        raise ValueError(f"the rollouts {name!r} of {out} carry no true states")
    return data


def save_run_checkpoint(path: Path, model: LatentModel, loop_state: dict) -> None:
    """The model and the loop's state (identity, iteration, policy, step state, logs, RNG) in one file."""
    model.save(path, extra=loop_state)


def copy_model(model: LatentModel) -> LatentModel:
    """A separate model with ``model``'s weights and fitted state (not its caches); the RNGs are left as they were."""
    cfg = model.net.config
    with torch.random.fork_rng(devices=[]):  # the twin's initial weights draw from the global RNG
        twin = type(model)(cfg.image_size, model.du, model.cfg, readout_idx=getattr(model, "readout_idx", None))
    twin.net.load_state_dict(model.net.state_dict())
    twin.net.eval()
    twin.load_state(copy.deepcopy(model.state()))
    return twin


def save_own_policy(out: Path | None, model: LatentModel, policy: LinearGaussianPolicy, iteration: int) -> None:
    """Write ``out/best_checkpoint.pt``: ``model`` with ``policy`` and the ``iteration`` whose rollouts it collected
    (nothing without ``out``)."""
    if out is not None:
        model.save(out / BEST_CHECKPOINT_NAME, extra={"iteration": int(iteration), **policy_arrays("own", policy)})


def load_own_policy(out: Path, model: LatentModel) -> tuple[LinearGaussianPolicy, int] | None:
    """Restore into ``model`` what :func:`save_own_policy` wrote in ``out`` and return the policy and its iteration;
    None when there is no such file."""
    path = Path(out) / BEST_CHECKPOINT_NAME
    if not path.is_file():
        return None
    extra = model.load(path)
    return policy_from_arrays("own", extra), int(extra["iteration"])


def identity_mismatch(state: dict, identity: dict, ignore: frozenset = frozenset()) -> str | None:
    """How the run identity saved in ``state`` differs from ``identity`` (task, seed, method, goal, and the config
    except the keys in ``ignore``), or None when it does not."""
    for key in ("task", "seed", "method"):
        if state.get(key) != identity[key]:
            return f"it was written with {key}={state.get(key)!r}, this run has {key}={identity[key]!r}"
    stored, ours = state.get("config") or {}, identity["config"]
    # a setting the stored run does not name did not exist when it was made: it ran as that setting's default
    defaults = {f.name: f.default for f in fields(SolarConfig)}
    stored = {**{k: defaults[k] for k in set(ours) - set(stored) if k in defaults}, **stored}
    changed = sorted(k for k in (set(stored) | set(ours)) - ignore if stored.get(k) != ours.get(k))
    if changed:
        return "the settings differ (" + ", ".join(f"{k}: {stored.get(k)!r} -> {ours.get(k)!r}" for k in changed) + ")"
    if not np.allclose(state["goal"], identity["goal"]):
        return f"its goal {state['goal']} differs from {identity['goal']}"
    return None


def load_run_checkpoint(path: Path, model: LatentModel, identity: dict) -> dict:
    """Restore ``model`` from the checkpoint at ``path`` and return the loop's state saved with it.

    ``identity`` (task, seed, method, goal, config) must be the checkpoint's: a run resumes only
    with the settings it was started with (:class:`RunMismatch` naming what differs)."""
    state = model.load(path)
    mismatch = identity_mismatch(state, identity)
    if mismatch:
        raise RunMismatch(f"cannot resume from {path}: {mismatch}; resume with the same settings")
    return state


SAME_PRETRAINING = {"solar_mpc": "solar"}
"""Methods whose pretraining is another's (the same random rollouts and model fit): the MPC ablation can start
from a SOLAR run's pretraining and the other way round."""


def load_pretraining(run: Path, model: LatentModel, identity: dict) -> tuple[dict, RolloutData]:
    """Restore ``model`` from the pretraining checkpoint of the run in ``run`` and return the loop's state saved
    with it and the pretraining rollouts.

    The run must have the same task, seed, method (or one with the same pretraining, :data:`SAME_PRETRAINING`)
    and goal, and the same settings except those only the
    iterations read (:data:`~solar_ros.algos.solar.config.ITERATION_SETTINGS`): its pretraining is then the one
    this run would do itself. :class:`RunMismatch` naming what differs, or what is missing, otherwise."""
    path = Path(run) / PRETRAIN_CHECKPOINT_NAME
    if not path.is_file():
        raise RunMismatch(f"cannot start from the pretraining of {run}: it has no {PRETRAIN_CHECKPOINT_NAME} "
                         "(a run writes it after its pretraining fit)")
    ckpt = load_checkpoint(path)
    state = ckpt.extra  # checked before the weights are loaded: another latent size would not fit
    family = lambda method: SAME_PRETRAINING.get(method, method)  # noqa: E731
    mismatch = identity_mismatch({**state, "method": family(state.get("method"))},
                                 {**identity, "method": family(identity["method"])}, ignore=ITERATION_SETTINGS)
    if mismatch:
        raise RunMismatch(f"cannot start from the pretraining of {run}: {mismatch} (beyond the settings of the "
                         "iterations)")
    if state.get("iteration") != 0 or state.get("data_files") != ["pretrain"]:
        raise RunMismatch(f"{path} is not a pretraining checkpoint (iteration {state.get('iteration')})")
    return model.restore(ckpt, path), load_data(Path(run), ["pretrain"])
