"""What a block of work costs this process: wall time and peak resident memory (ROS-free).

Every model fit is measured with :class:`FitMeter` (the in-process SOLAR loop and the model fitting node),
so that its log row and ``summary.json`` say how long it took and how much memory it needed.

On Linux the peak is the fit's own: writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water
mark of the resident set (``VmHWM``) to the current resident set before the fit, and ``VmHWM`` is read after
it. Where that is not possible (another OS, a kernel that refuses), the peak is the process's since it
started (``getrusage``), which can only overstate the fit's; :attr:`FitMeter.peak_is_own` says which.
"""
from __future__ import annotations

import time
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def resident_high_water_mb() -> float | None:
    """The process's peak resident memory since the last reset (``VmHWM``), in MB; None where unavailable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_resident_high_water() -> bool:
    """Reset ``VmHWM`` to the current resident memory. Returns whether the kernel did."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def process_peak_mb() -> float:
    """The process's peak resident memory, in MB (``getrusage``: since it started where nothing reset it)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS


class FitMeter:
    """Context manager: ``seconds`` (wall time) and ``peak_mb`` (peak resident memory) of the block.

    >>> with FitMeter() as meter:
    ...     model.fit(data, steps)
    >>> meter.metrics("model_fit")   # {"model_fit_s": ..., "model_fit_peak_mb": ...}
    """

    def __init__(self) -> None:
        self.seconds = float("nan")
        self.peak_mb = float("nan")
        self.peak_is_own = False

    def __enter__(self) -> "FitMeter":
        self.peak_is_own = reset_resident_high_water() and resident_high_water_mb() is not None
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        own = resident_high_water_mb() if self.peak_is_own else None
        self.peak_mb = own if own is not None else process_peak_mb()
        self.peak_is_own = own is not None

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}_s`` and ``{prefix}_peak_mb``, for a log row or an action result."""
        return {f"{prefix}_s": self.seconds, f"{prefix}_peak_mb": self.peak_mb}
