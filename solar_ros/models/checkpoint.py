"""Saving and loading representation models.

A checkpoint is one torch file holding a plain dictionary:

    {"format_version": 1, "kind": "dsae" | "vae" | "svae", "config": {...model config fields...},
     "state_dict": {...}, "extra": {...}}

It is written to a temporary file in the same folder and renamed into place, so a crash never
leaves a half-written checkpoint under the final name. Loading uses torch's weights-only
unpickler (no arbitrary code runs); ``extra`` may hold str/int/float/bool/None, lists, tuples,
dicts with string keys, tensors and numpy arrays (stored as tensors, restored as numpy).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..runtime.atomic import atomic_file
from .dsae import DeepSpatialAutoencoder, DSAEConfig
from .svae import StructuredVAE, SVAEConfig
from .vae import VAE, VAEConfig

FORMAT_VERSION = 1

MODEL_KINDS: dict[str, tuple[type, type]] = {
    "dsae": (DeepSpatialAutoencoder, DSAEConfig),
    "vae": (VAE, VAEConfig),
    "svae": (StructuredVAE, SVAEConfig),
}


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, of another format version, or inconsistent."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model: torch.nn.Module
    """The rebuilt model with its weights (in eval mode)."""
    config: Any
    """The model's config dataclass."""
    extra: dict
    """Whatever was passed as ``extra`` when saving."""
    kind: str
    """'dsae', 'vae' or 'svae'."""


_NDARRAY_TAG = "__ndarray__"


def _pack(obj):
    if isinstance(obj, np.ndarray):
        return {_NDARRAY_TAG: torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _pack(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_pack(v) for v in obj)
    return obj


def _unpack(obj):
    if isinstance(obj, dict):
        if set(obj) == {_NDARRAY_TAG}:
            return obj[_NDARRAY_TAG].numpy()
        return {k: _unpack(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unpack(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config=None, extra: dict | None = None) -> Path:
    """Atomically write ``model`` (its kind, config and weights) and ``extra`` to ``path``.

    ``config`` is the model's config dataclass (default: ``model.config``); it must be the one the
    model was built with, since loading rebuilds the model from it.
    """
    kind = getattr(model, "kind", None)
    if kind not in MODEL_KINDS:
        raise ValueError(f"cannot checkpoint a {type(model).__name__}: expected one of {sorted(MODEL_KINDS)}")
    config = model.config if config is None else config
    if not isinstance(config, MODEL_KINDS[kind][1]):
        raise ValueError(f"config for a {kind} model must be a {MODEL_KINDS[kind][1].__name__}, "
                         f"got {type(config).__name__}")
    payload = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": _pack(dataclasses.asdict(config)),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "extra": _pack(dict(extra or {})),
    }
    path = Path(path)
    with atomic_file(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` and rebuild its model.

    Raises FileNotFoundError for a missing file and :class:`CheckpointError` (a ValueError) for a
    corrupt file, another format version, an unknown model kind or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or not a checkpoint ({err})") from err
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path} is not a solar_ros model checkpoint")
    version = payload["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}; "
                              f"this code reads version {FORMAT_VERSION}")
    missing = {"kind", "config", "state_dict", "extra"} - set(payload)
    if missing:
        raise CheckpointError(f"{path} lacks the fields {sorted(missing)}")
    kind = payload["kind"]
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"{path} holds an unknown model kind {kind!r}")
    model_cls, config_cls = MODEL_KINDS[kind]
    try:
        config = config_cls(**_unpack(payload["config"]))
        model = model_cls(config)
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: the stored {kind} config or weights do not fit ({err})") from err
    model.eval()
    return Checkpoint(model=model, config=config, extra=_unpack(payload["extra"]), kind=kind)
