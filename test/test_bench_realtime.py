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
    log = tmp_path / "node_run.log"
    out = _run("bench_node_stack.py", "--skip-latency", "--stack-latency", "--iterations", "1",
               "--episodes-per-iteration", "1", "--eval-episodes", "1", "--keep-log", str(log), timeout=380)
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
    assert "[controller_node]" in log.read_text() and "timing over" in log.read_text()


def test_pauses_are_the_gaps_over_the_threshold_with_their_start_and_write_gap():
    # arrivals (ms after 1 s): 0, 2, 338 (written 4 ms after the one before: delivered late), 340, 361 (written
    # 21 ms after: the publisher paused); given out of order, as two polled streams may interleave
    code = ("import sys; sys.path.insert(0, 'scripts'); from bench_node_stack import pauses; ms = 10**6; "
            "arrived = [10**9 + a * ms for a in (0, 338, 2, 340, 361)]; "
            "written = [10**9 + w * ms for w in (0, 6, 2, 8, 29)]; "
            "print(pauses(arrived, 10**9 - 5 * 10**8, sent_ns=written)); print(pauses(arrived, 10**9 - 5 * 10**8))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    with_written, without = (ast.literal_eval(line) for line in out.stdout.strip().splitlines())
    assert len(with_written) == 2
    assert with_written[0] == pytest.approx((336.0, 0.502, 4.0))
    assert with_written[1] == pytest.approx((21.0, 0.84, 21.0))
    assert [p[:2] for p in without] == [p[:2] for p in with_written] and all(p[2] is None for p in without)


def test_bench_node_stack_prints_the_latency_idle_and_beside_a_fit():
    out = _run("bench_node_stack.py", "--seconds", "1", "--skip-learning", "--during-fit", "--fit-threads", "1",
               timeout=380)
    fit = "during a model fit (niceness 10, 1 thread(s))"
    for label in ("svae", f"svae, {fit}", "dsae", f"dsae, {fit}"):
        m = re.search(rf"^{re.escape(label)}: frames (\d+), with a command (\d+): latency p50 ({NUMBER}) ms", out,
                      re.MULTILINE)
        assert m and 0 < int(m[2]) <= int(m[1]) and float(m[3]) > 0, out


def test_keep_log_into_a_missing_directory_is_refused_before_the_run(tmp_path):
    missing = tmp_path / "no_such_dir" / "run.log"
    out = subprocess.run([sys.executable, "scripts/bench_node_stack.py", "--skip-latency", "--keep-log", str(missing)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2 and f"--keep-log: no directory {missing.parent}" in out.stderr, out.stderr
    assert "learning sawyer_reach" not in out.stdout and not missing.parent.exists()
