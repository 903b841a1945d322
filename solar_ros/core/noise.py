"""Temporally smoothed exploration noise (shared by SOLAR's pretraining and the controller)."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d


def standard_normal_sequence(rng: np.random.Generator, horizon: int, dim: int, smoothing: float = 0.0) -> np.ndarray:
    """``horizon`` x ``dim`` standard-normal draws from ``rng``; ``smoothing`` > 0 filters them over time.

    The filter is a Gaussian of std ``smoothing`` time steps (zero-padded at the ends), and each
    dimension is rescaled to unit std over the sequence, as Guided Policy Search smooths its exploration
    noise: white noise of a given std barely moves a damped body, smoothed noise of the same std does.
    ``smoothing`` 0: the white draws themselves (the same numbers as ``rng.standard_normal((horizon, dim))``).
    """
    if not (np.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"noise smoothing must be a finite number >= 0, got {smoothing!r}")
    noise = rng.standard_normal((int(horizon), int(dim)))
    if smoothing > 0:
        noise = gaussian_filter1d(noise, float(smoothing), axis=0, mode="constant")
        noise /= np.maximum(noise.std(0), 1e-12)
    return noise
