"""The whole learning stack, as `solar-ros launch sim` runs it: simulator, camera, encoder, controller,
recorder, model fitting and trainer as separate processes. A short seeded run (lqr_joints on
sawyer_reach) must lower the mean episode cost from the first to the last iteration, end with the
trainer's exit status 0, and leave summary.json (the keys of `solar-ros train`), the learning-curve
plot, every episode in the recorder's index and every policy on disk."""
from __future__ import annotations

import dataclasses
import io
import json

import pytest

from solar_ros.algos.common import RunResult
from solar_ros.launcher import launch
from solar_ros.runtime.episode_store import read_index

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

ITERATIONS, EPISODES, EVAL, HORIZON = 2, 3, 1, 30


def test_learning_run_through_the_nodes_lowers_the_cost(tmp_path):
    out = io.StringIO()
    rc = launch("sim", {
        "recorder_node.output_dir": str(tmp_path / "episodes"), "recorder_node.write_mcap": "false",
        "trainer_node.episode_dir": str(tmp_path / "episodes"), "trainer_node.output_dir": str(tmp_path / "run"),
        "model_fitting_node.output_dir": str(tmp_path / "models"),
        "trainer_node.iterations": ITERATIONS, "trainer_node.episodes_per_iteration": EPISODES,
        "trainer_node.eval_episodes": EVAL, "trainer_node.horizon": HORIZON, "trainer_node.seed": 3,
    }, output=out, duration=270, grace=3.0)
    text = out.getvalue()
    assert rc == 0, text[-6000:]
    assert "[launch] trainer_node exited with status 0" in text
    assert "Traceback" not in text, text[-6000:]

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary) == {f.name for f in dataclasses.fields(RunResult)}
    assert summary["task"] == "sawyer_reach" and summary["method"] == "lqr_joints" and summary["seed"] == 3
    assert summary["episodes"] == ITERATIONS * EPISODES and summary["env_steps"] == ITERATIONS * EPISODES * HORIZON
    assert summary["eval_episodes"] == EVAL
    rows = summary["iterations"]
    assert len(rows) == ITERATIONS
    first, last = rows[0]["mean_cost"], rows[-1]["mean_cost"]
    assert last < 0.8 * first, f"mean episode cost {first:.3g} -> {last:.3g}: no learning through the nodes"
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000

    entries = read_index(tmp_path / "episodes")
    assert len(entries) >= ITERATIONS * EPISODES + EVAL
    assert all(e["steps"] == HORIZON for e in entries)
    assert sorted(p.name for p in (tmp_path / "models").glob("policy_*.npz")) == [
        f"policy_{i:03d}.npz" for i in range(ITERATIONS + 1)]
