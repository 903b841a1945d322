"""scripts/main.sh checks its options before it sets anything up: bad input exits 2 with a clear message."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

MAIN = Path(__file__).resolve().parents[1] / "scripts" / "main.sh"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(MAIN), *args], capture_output=True, text=True, timeout=30,
                          env=None if env is None else {**os.environ, **env})


@pytest.mark.parametrize("args, message", [
    (("--method", "foo"), "--method must be solar, solar_mpc or dsae, got 'foo'"),
    (("--seed", "x"), "--seed must be a non-negative integer, got 'x'"),
    (("--seed=-1",), "--seed must be a non-negative integer, got '-1'"),
    (("--seed",), "--seed needs a value"),
    (("--bogus",), "unknown option --bogus"),
    (("--set",), "--set needs KEY=VALUE"),
    (("--set", "kl_step"), "--set needs KEY=VALUE (a setting's name, a plain value), got 'kl_step'"),
    (("--set=a=b, c: d",), "--set needs KEY=VALUE"),
])
def test_bad_options_exit_2_with_a_message(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "[setup]" not in result.stdout + result.stderr, "nothing is set up on bad input"


def test_help_names_the_options():
    result = run("--help")
    assert result.returncode == 0 and "--method solar|solar_mpc|dsae" in result.stdout and "--seed N" in result.stdout


@pytest.mark.parametrize("rtf", ["fast", "-1", "nan", "1.5x"])
def test_a_bad_real_time_factor_exits_2_before_any_set_up(rtf):
    result = run(env={"SOLAR_ROS_RTF": rtf})
    assert result.returncode == 2 and f"SOLAR_ROS_RTF must be a non-negative number, got '{rtf}'" in result.stderr, \
        result.stderr
    assert "[setup]" not in result.stdout + result.stderr
