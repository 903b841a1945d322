"""scripts/fault_injection.py --quick: the script's smoke mode (a short learning run through the whole
stack, 3 s of malformed messages on every subscribed topic, the trainer SIGKILLed mid-run) ends
with every fault survived, nothing recorded lost, and its report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]


def test_quick_fault_injection_survives_every_fault(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "fault_injection.py"), "--quick", "--out",
                           str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=220)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:] + "\n" + (tmp_path / "faults" / "stack.log").read_text()[-6000:]
    assert "all faults survived with nothing recorded lost: yes" in out
    result = json.loads((tmp_path / "fault_injection.json").read_text())
    names = [f["name"] for f in result["faults"]]
    assert names[0].startswith("malformed messages") and names[1] == "SIGKILL trainer_node"
    assert all(f["survived"] and len(f["lost"]) <= 1 for f in result["faults"])
    assert result["record"]["restarts_of_trainer"] == 1, "the killed trainer continued the run"
    assert all(n > 0 for n in result["record"]["malformed_sent"].values())
    assert result["summary"]["episodes"] == 6
