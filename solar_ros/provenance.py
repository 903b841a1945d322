"""Where a result came from: the code's commit, the settings and the command line.

Every ``summary.json`` (``RunResult.provenance``) and benchmark report carries :func:`provenance`,
so a result can be traced to the code and the settings that produced it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""The directory holding the ``solar_ros`` package (the repository root in a checkout)."""

LAUNCH_ENV = "SOLAR_ROS_LAUNCH"
"""Environment variable through which ``solar-ros launch`` tells its nodes how the stack was started
(JSON: the launch command line, the profile and every node's parameters)."""


def git_commit(root: str | os.PathLike = PACKAGE_ROOT, timeout: float = 5.0) -> str | None:
    """``git describe --always --dirty`` of the checkout at ``root``; None when ``root`` is not the top
    of a git checkout (an installed package), git is missing or fails."""
    root = Path(root).resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=timeout)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return None  # not a checkout, or the package sits inside some other repository
        described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True,
                                   text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return (described.stdout.strip() or None) if described.returncode == 0 else None


def launch_info(environ: dict[str, str] | None = None) -> dict | None:
    """What ``solar-ros launch`` recorded for its nodes (see :data:`LAUNCH_ENV`); None outside a launch."""
    text = (os.environ if environ is None else environ).get(LAUNCH_ENV)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}
    return value if isinstance(value, dict) else {"unreadable": text[:200]}


_PINNED: dict[str, str | None] = {}
"""The commit :func:`pin_commit` recorded for this process (empty until then)."""


def pin_commit() -> str | None:
    """Record the checkout's commit now (once per process): :func:`provenance` reports this one from then on.
    A training run reads its code when it starts and writes its result tens of minutes later, when the checkout
    may hold another commit; the entry points pin at their start so that the result names the code it ran."""
    if "commit" not in _PINNED:
        _PINNED["commit"] = git_commit()
    return _PINNED["commit"]


VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
"""The CPU's vector extensions that decide which kernels torch runs: a seeded run gives the same floats only on
the same kind of CPU (and, on this project's measurements, not always across sessions there)."""


def machine_info(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """``{"cpu", "cpus", "vector", "torch"}``: the CPU's model name, how many CPUs this process may use, which of
    :data:`VECTOR_FLAGS` it has, and the torch version (None where torch is not imported)."""
    model, flags = None, set()
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "vector": [f for f in VECTOR_FLAGS if f in flags],
            "torch": getattr(sys.modules.get("torch"), "__version__", None)}


def provenance(config: dict | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """``{"commit", "argv", "python", "machine"}`` (:func:`machine_info`), plus ``"config"`` when given and
    ``"launch"`` inside a ``solar-ros launch`` stack; JSON-serialisable. The commit is the one :func:`pin_commit`
    recorded, if it was called, else the checkout's now."""
    out: dict[str, Any] = {
        "commit": _PINNED["commit"] if "commit" in _PINNED else git_commit(),
        "argv": list(sys.argv if argv is None else argv),
        "python": sys.version.split()[0],
        "machine": machine_info(),
    }
    if config is not None:
        out["config"] = config
    launched = launch_info()
    if launched is not None:
        out["launch"] = launched
    return out
