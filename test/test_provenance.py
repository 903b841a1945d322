"""solar_ros.provenance: commit, command line and settings recorded with every result."""
from __future__ import annotations

import json
import subprocess
import sys

from solar_ros import provenance as prov
from solar_ros.algos.common import RunResult


def _result(**kwargs) -> RunResult:
    return RunResult(task="point", method="lqr_state", seed=0, episodes=5, env_steps=250, final_cost=1.0,
                     final_distance=0.1, success_rate=0.5, eval_episodes=2, wall_time_s=1.0, goal=[0.1, 0.2],
                     config={"kl_step": 1.0}, iterations=[], **kwargs)


def test_commit_of_this_checkout_matches_git():
    expected = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=prov.PACKAGE_ROOT,
                              capture_output=True, text=True)
    if expected.returncode != 0:  # the tests run from an export without .git
        assert prov.git_commit() is None
    else:
        assert prov.git_commit() == expected.stdout.strip()


def test_no_commit_outside_a_checkout(tmp_path):
    assert prov.git_commit(tmp_path) is None


def test_no_commit_inside_another_repository(tmp_path):
    # a package installed inside some other git repository must not report that repository's commit
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "pkg").mkdir()
    assert prov.git_commit(tmp_path / "pkg") is None


def test_no_commit_without_git(monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("git")
    monkeypatch.setattr(prov, "_PINNED", {})
    monkeypatch.setattr(prov.subprocess, "run", missing)
    assert prov.git_commit() is None
    assert prov.provenance()["commit"] is None


def test_provenance_records_command_line_config_and_launch(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["solar-ros", "train", "--task", "point"])
    monkeypatch.delenv(prov.LAUNCH_ENV, raising=False)
    p = prov.provenance(config={"kl_step": 2.0})
    assert p["argv"] == ["solar-ros", "train", "--task", "point"]
    assert p["config"] == {"kl_step": 2.0}
    assert "launch" not in p and "commit" in p
    json.dumps(p)
    monkeypatch.setenv(prov.LAUNCH_ENV, json.dumps({"argv": ["solar-ros", "launch", "sim"], "profile": "sim"}))
    assert prov.provenance()["launch"]["profile"] == "sim"
    monkeypatch.setenv(prov.LAUNCH_ENV, "{not json")
    assert "unreadable" in prov.provenance()["launch"]


def test_summary_json_has_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(prov, "_PINNED", {})
    monkeypatch.setattr(sys, "argv", ["solar-ros", "train", "--task", "point", "--set", "kl_step=2"])
    result = _result()
    result.write(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["provenance"]["argv"][-2:] == ["--set", "kl_step=2"]
    assert summary["provenance"]["commit"] == prov.git_commit()
    assert summary["config"] == {"kl_step": 1.0}
    given = _result(provenance={"commit": "abc"})
    assert given.provenance == {"commit": "abc"}


def test_node_run_summary_records_the_launch(tmp_path, monkeypatch):
    # the trainer node's summary.json (the main job's) is a RunResult too: inside `solar-ros launch` it
    # also carries the launch command line and every node's parameters
    from solar_ros.runtime.training_run import EpisodeResult, NodeRun
    launched = {"argv": ["solar-ros", "launch", "sim", "trainer_node.method:=dsae"], "profile": "sim",
                "parameters": {"trainer_node": {"method": "dsae", "seed": 0}}}
    monkeypatch.setenv(prov.LAUNCH_ENV, json.dumps(launched))
    run = NodeRun("sawyer_reach", "dsae", 0, [0.6, 0.1, 0.1], horizon=10, success_threshold=0.05,
                  config={"iterations": 1})
    run.add_iteration([EpisodeResult("e0", 10, 1.0, 0.01, True)])
    run.write(tmp_path, 1.0, [1.0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["provenance"]["launch"] == launched
    assert summary["provenance"]["commit"] == prov.git_commit()
    assert summary["provenance"]["argv"] == sys.argv


def test_a_pinned_commit_outlives_a_change_of_checkout(monkeypatch):
    # a run pins the commit it starts with; a commit made while it runs does not change what it reports
    monkeypatch.setattr(prov, "_PINNED", {})
    monkeypatch.setattr(prov, "git_commit", lambda *a, **k: "aaaaaaa")
    assert prov.pin_commit() == "aaaaaaa"
    monkeypatch.setattr(prov, "git_commit", lambda *a, **k: "bbbbbbb")
    assert prov.pin_commit() == "aaaaaaa"
    assert prov.provenance()["commit"] == "aaaaaaa"
    assert _result().provenance["commit"] == "aaaaaaa"
    monkeypatch.setattr(prov, "_PINNED", {})
    assert prov.provenance()["commit"] == "bbbbbbb"  # nothing pinned: the checkout's now


def test_machine_info_names_the_cpu_and_its_vector_units(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f amx_tile\n\n"
                       "processor\t: 1\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f amx_tile\n")
    info = prov.machine_info(cpuinfo)
    assert info["cpu"] == "Some CPU 9000" and info["vector"] == ["avx2", "avx512f", "amx_tile"]
    assert info["cpus"] >= 1
    assert prov.machine_info(tmp_path / "missing")["cpu"] is None
    assert prov.provenance()["machine"]["cpus"] >= 1
