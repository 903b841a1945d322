"""The real-time benchmarks run end to end and print their figures: bench_controller's command stream idle and
beside a model fit, and bench_node_stack's latency inside a learning run of the whole stack (short settings; the
figures themselves are for docs/ros_interfaces.md, not asserted)."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"[\d.]+"


def _run(script: str, *args: str, timeout: float) -> str:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_bench_controller_prints_the_stream_idle_and_beside_a_fit():
    out = _run("bench_controller.py", "--seconds", "1", "--rates", "500", "--skip-latency", "--during-fit",
               timeout=300)
    rows = [line for line in out.splitlines() if line.strip().startswith("500Hz")]
    assert len(rows) == 2 and rows[0].split()[1] == "idle" and rows[1].split()[1] == "fit", out
    for row in rows:
        sent = float(row.split("|")[0].split()[-2])
        assert sent > 100, row  # commands flowed (the rate itself is measured, not asserted)
        assert re.search(rf"controller {NUMBER}%", row), row


def test_bench_node_stack_measures_the_latency_inside_a_learning_run(tmp_path):
    out = _run("bench_node_stack.py", "--skip-latency", "--stack-latency", "--iterations", "1",
               "--episodes-per-iteration", "1", "--eval-episodes", "1", timeout=380)
    m = re.search(rf"frame -> torque inside the run .*: (\d+) of (\d+) frames, p50 ({NUMBER}) ms, p99 ({NUMBER}) ms",
                  out)
    assert m, out
    matched, frames, p50, p99 = int(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert 0 < matched <= frames
    assert 0 < p50 <= p99, "a command cannot come before the frame it was computed from"
    assert re.search(rf"controller during the node run .*: ({NUMBER}) Hz lowest", out), out
    assert "nodes: launch sim (dsae, exploring)" in out
    assert re.search(r"pauses over 20 ms between arrivals here \(s from the launch\): joint states \(first at .*\) .*; "
                     r"commands \(first at ", out), out


def test_pauses_are_the_gaps_over_the_threshold_with_their_start():
    code = ("import sys; sys.path.insert(0, 'scripts'); from bench_node_stack import pauses; "
            "print(pauses([10**9, 10**9 + 2 * 10**6, 10**9 + 338 * 10**6, 10**9 + 340 * 10**6, 10**9 + 361 * 10**6], "
            "10**9 - 5 * 10**8))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    found = ast.literal_eval(out.stdout.strip())
    assert len(found) == 2 and found[0] == pytest.approx((336.0, 0.502)) and found[1] == pytest.approx((21.0, 0.84))


def test_bench_node_stack_prints_the_latency_idle_and_beside_a_fit():
    out = _run("bench_node_stack.py", "--seconds", "1", "--skip-learning", "--during-fit", timeout=380)
    for label in ("svae", "svae, during a model fit (niceness 10)", "dsae", "dsae, during a model fit (niceness 10)"):
        m = re.search(rf"^{re.escape(label)}: frames (\d+), with a command (\d+): latency p50 ({NUMBER}) ms", out,
                      re.MULTILINE)
        assert m and 0 < int(m[2]) <= int(m[1]) and float(m[3]) > 0, out
