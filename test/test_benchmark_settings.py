"""scripts/benchmark.py: --set for every run or one method's, run directories per settings, provenance in the report."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from solar_ros.settings import SettingsError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_apply_to_every_method_or_one(bench):
    settings = ["eval_episodes=3", "solar:kl_step=1.5", "ppo:n_epochs=2"]
    assert bench.method_settings(settings, "solar") == ["eval_episodes=3", "kl_step=1.5"]
    assert bench.method_settings(settings, "lqr_state") == ["eval_episodes=3"]
    assert bench.method_settings(["fit_config=a:b"], "dsae") == ["fit_config=a:b"]  # a ':' in the value


def test_run_directories_name_their_settings(bench):
    assert bench.settings_tag([]) == ""
    assert bench.settings_tag(["kl_step=2", "adapt_step=false"]) == "_set-kl_step=2,adapt_step=false"
    long = bench.settings_tag([f"key{i}=value{i}" for i in range(10)])
    odd = bench.settings_tag(["encoder=a b/c"])
    assert long.startswith("_set-") and len(long) == 17 and odd != "_set-encoder=a b/c" and "/" not in odd
    assert bench.settings_tag(["kl_step=2"]) != bench.settings_tag(["kl_step=3"])


def test_settings_are_checked_for_every_task_and_method(bench):
    bench.check_settings(["point", "reacher"], ["lqr_state", "dsae"], ["eval_episodes=3", "dsae:final_kl_step=2"])
    with pytest.raises(SettingsError, match="dsae on point: unknown setting 'kl_step' for DSAEPipelineConfig"):
        bench.check_settings(["point"], ["lqr_state", "dsae"], ["kl_step=2"])
    with pytest.raises(SettingsError, match="'ppo' is not one of the methods run here"):
        bench.check_settings(["point"], ["lqr_state"], ["ppo:n_epochs=2"])
    with pytest.raises(SettingsError, match="unknown method 'sloar'"):
        bench.check_settings(["point"], ["lqr_state"], ["sloar:kl_step=2"])


def test_reuse_only_takes_runs_with_the_same_settings(bench, tmp_path):
    out = tmp_path / "point_lqr_state_s0"
    settings = ["iterations=1", "rollouts_per_iteration=2", "eval_episodes=1"]
    first = bench.run_one("point", "lqr_state", 0, out, None, settings=settings)
    assert first["episodes"] == 2 and "commit" in first["provenance"]
    assert bench.same_settings(first, "lqr_state", "point", settings)
    assert not bench.same_settings(first, "lqr_state", "point", ["iterations=2"])
    (out / "log.txt").unlink()
    again = bench.run_one("point", "lqr_state", 0, out, None, reuse=True, settings=settings)
    assert again == first and not (out / "log.txt").exists()  # reused, not rerun

    bench.write_report("t", [first], "python scripts/benchmark.py --set iterations=1", tmp_path / "docs",
                       settings=settings, commit="abc1234")
    report = (tmp_path / "docs" / "t.md").read_text()
    assert "Commit of the report: `abc1234`" in report
    assert "Settings: `iterations=1`, `rollouts_per_iteration=2`, `eval_episodes=1` on top of" in report
    run_commit = first["provenance"]["commit"] or "not a git checkout"
    assert f"| {run_commit} |" in report
    assert "## Configurations" in report and json.dumps(first["config"]) in report


def test_reports_of_older_runs_show_an_unknown_commit(bench):
    assert bench.run_commit({}) == "?"
    assert bench.run_commit({"provenance": {"commit": None}}) == "not a git checkout"
