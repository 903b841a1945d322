"""scripts/bench_solar_speed.py: prints its figures, the measured pretraining fit among them (tiny sizes)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


SMALL = ["--task", "sawyer_stack_1", "--image-size", "16", "--rollouts", "3", "--horizon", "10", "--step-repeats", "1",
         "--control-steps", "10", "--pretrain-fit", "--pretrain-steps", "6"]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "bench_solar_speed.py"), *SMALL, *args],
                          capture_output=True, text=True, timeout=240, cwd=REPO)


def test_prints_the_measured_pretraining_fit_with_the_chosen_precision():
    done = bench("--pretrain-episodes", "3", "--precision", "bfloat16")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "7 actions; convolutions of gradient steps in bfloat16" in out
    line = next(x for x in out.splitlines() if x.startswith("pretraining fit, measured"))
    # 3 rollouts of the 10 steps fitted, each step 0.05 s of the task's time
    assert "(6 steps on 3 rollouts, convolutions in bfloat16)" in line and "against 2 s of rollouts (3 x 0.5 s)" in line
    assert "control step" in out
    mpc = next(x for x in out.splitlines() if x.startswith("MPC ablation's plan per step"))
    # the stacking defaults' planner (200 x 5 over 10 steps) on a latent of 24 and 7 actions, 10 timed steps
    assert "200 sequences x 5 iterations over 10 steps, latent 24, 7 actions" in mpc and "against 50 ms" in mpc


def test_a_bad_setting_is_a_usage_error():
    refused = bench("--pretrain-episodes", "0")
    assert refused.returncode == 2 and "pretrain_episodes must be a positive integer" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_mpc_only_prints_the_plan_time_alone():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_solar_speed.py"), "--task", "point",
                           "--mpc-only", "--control-steps", "5"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("MPC ablation's plan per step")
    assert "latent 10, 2 actions" in lines[0]
