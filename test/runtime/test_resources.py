"""FitMeter measures a block's wall time and its own peak resident memory (not the process's earlier peak)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from solar_ros.runtime.resources import FitMeter, resident_high_water_mb


def _touch(mb: int) -> float:
    """Allocate and write ``mb`` MB (so that it is resident), then free it."""
    a = np.ones(mb * 1024 * 1024 // 8)
    return float(a[-1])


def test_the_peak_is_the_blocks_own():
    with FitMeter() as big:
        _touch(300)
        time.sleep(0.05)
    with FitMeter() as small:
        _touch(10)
    assert big.seconds >= 0.05 and small.seconds >= 0
    if not big.peak_is_own:
        pytest.skip("this kernel keeps no resettable peak (VmHWM): FitMeter falls back to the process's peak")
    baseline = resident_high_water_mb()
    # The 300 MB block's peak holds the array; the later small block's does not: each fit's own peak.
    assert big.peak_mb >= small.peak_mb + 250
    assert small.peak_mb < baseline + 50


def test_metrics_are_named_by_the_prefix():
    with FitMeter() as meter:
        pass
    assert set(meter.metrics("model_fit")) == {"model_fit_s", "model_fit_peak_mb"}
    assert meter.metrics("fit")["fit_peak_mb"] > 0
