"""trainer_node in its own process, on its own: bad parameters end it with status 2, a stack that
never comes up ends it with status 1 and a message naming what is missing (the full learning run
through the stack is test_stack_e2e.py)."""
from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(60)]


def wait_exit(node, timeout: float) -> int:
    try:
        return node.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"trainer still running after {timeout} s:\n{node.log()}") from None


def test_bad_parameters_exit_with_status_2(start_node):
    node = start_node("trainer_node", {"iterations": 0})
    assert wait_exit(node, 30) == 2
    assert "iterations must be >= 1" in node.log()
    node = start_node("trainer_node", {"task": "moon_landing"})
    assert wait_exit(node, 30) == 2
    assert "unknown task 'moon_landing'" in node.log()


def test_missing_stack_ends_the_run_with_status_1_and_the_reason(start_node, tmp_path):
    t0 = time.monotonic()
    node = start_node("trainer_node", {"bringup_timeout": 2.0, "output_dir": str(tmp_path / "out")})
    assert wait_exit(node, 40) == 1
    log = node.log()
    assert "run failed: timed out after 2 s waiting for service /sim/reset" in log, log
    assert not (tmp_path / "out" / "summary.json").exists()
    assert time.monotonic() - t0 < 40
