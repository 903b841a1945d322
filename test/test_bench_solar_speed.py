"""scripts/bench_solar_speed.py: prints its figures, the measured pretraining fit among them (tiny sizes)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_prints_the_measured_pretraining_fit_with_the_chosen_precision():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_solar_speed.py"), "--task", "sawyer_stack_1", "--image-size",
         "16", "--rollouts", "3", "--horizon", "10", "--step-repeats", "1", "--control-steps", "10", "--pretrain-fit",
         "--pretrain-steps", "6", "--pretrain-episodes", "3", "--precision", "bfloat16"],
        capture_output=True, text=True, timeout=240, check=True, cwd=REPO).stdout
    assert "7 actions; convolutions of gradient steps in bfloat16" in out
    line = next(x for x in out.splitlines() if x.startswith("pretraining fit, measured"))
    assert "(6 steps on 3 rollouts, convolutions in bfloat16)" in line and "against 8 s of rollouts (3 x 2.5 s)" in line
    assert "control step" in out
