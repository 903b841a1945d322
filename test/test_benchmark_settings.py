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


def test_the_target_rows_run_solar_at_its_own_budget(bench):
    from solar_ros.algos.solar import TASK_DEFAULTS
    from solar_ros.envs import TASKS
    for t in bench.TARGETS:
        assert t.task.split("_")[0] in {name.split("_")[0] for name in TASKS} and t.task in TASK_DEFAULTS
        assert TASK_DEFAULTS[t.task].training_episodes == t.episodes, t.task
    assert [t.task for t in bench.TARGETS if t.stretch] == ["sawyer_stack_2"]


def test_the_target_table_says_which_rows_are_met(bench):
    def row(task, method, seed, success):
        return {"task": task, "method": method, "seed": seed, "success_rate": success}
    targets = (bench.Target("point", (0, 1), 200, 0.9), bench.Target("sawyer_reach", (0, 1), 500, 0.8),
               bench.Target("sawyer_stack_2", (0,), 500, 0.5, stretch=True))
    rows = [row("point", "solar", 0, 1.0), row("point", "solar", 1, 0.9), row("point", "vae", 0, 0.1),
            row("point", "ppo", 0, 0.0), row("point", "ppo", 1, 0.05),
            row("sawyer_reach", "solar", 0, 1.0), row("sawyer_reach", "solar", 1, 0.75)]
    searches = [{"task": "point", "seed": 0, "episodes": 1500, "cap": 2000},
                {"task": "point", "seed": 1, "episodes": None, "cap": 2000}]
    lines = bench.target_lines(targets, rows, searches)
    assert lines[4] == "| `point` (200) | >= 90%, 2 | 100%, 90% | yes | 10%, - | 0%, 5% | 1500, > 2000 |"
    assert lines[5] == "| `sawyer_reach` (500) | >= 80%, 2 | 100%, 75% | no | -, - | -, - | -, - |"
    assert lines[6] == "| `sawyer_stack_2` (500) | >= 50% (stretch), 1 | - | not run | - | - | - |"


@pytest.mark.parametrize("args, message", [
    (["--targets", "--tasks", "point", "--name", "x"], "--targets sets the tasks"),
    (["--targets", "--seeds", "0-2", "--name", "x"], "leave out --tasks, --methods, --seeds"),
    (["--methods", "solar", "--name", "x"], "give --tasks and --methods, or --targets, or --paper"),
    (["--targets", "--paper", "--name", "x"], "give --targets or --paper, not both"),
    (["--paper", "--episodes", "100", "--name", "x"], "--paper sets the tasks"),
])
def test_targets_and_tasks_do_not_mix(args, message):
    import subprocess
    import sys
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr


def test_targets_mode_plans_every_row_at_its_budget(bench, monkeypatch, tmp_path):
    """--targets runs solar, vae and ppo on each row's seeds at the row's budget, and searches PPO's episodes
    where SOLAR got somewhere (the runs themselves replaced here by their would-be summaries)."""
    planned, searched, reported = [], [], {}

    def fake_run(task, method, seed, out, episodes, reuse=False, settings=None, pretraining_from=None):
        planned.append((task, method, seed, episodes, reuse))
        return {"task": task, "method": method, "seed": seed, "episodes": episodes, "env_steps": 0,
                "success_rate": 1.0 if (method == "solar" and seed == 0) else 0.0, "final_distance": 0.0,
                "wall_time_s": 0.0}

    def fake_search(task, seed, target, cap, out, reuse=False, settings=None):
        searched.append((task, seed, target, cap))
        return {"task": task, "seed": seed, "episodes": None, "cap": cap}

    monkeypatch.setattr(bench, "run_one", fake_run)
    monkeypatch.setattr(bench, "run_ppo_search", fake_search)
    monkeypatch.setattr(bench, "write_report", lambda *a, **k: reported.update(targets=a[7]))
    monkeypatch.setattr(bench.sys, "argv", ["benchmark.py", "--targets", "--name", "t", "--reuse"])
    assert bench.main() == 0
    expected = {(t.task, m, s, t.episodes, True) for t in bench.TARGETS for m in ("solar", "vae", "ppo")
                for s in t.seeds}
    assert set(planned) == expected and len(planned) == len(expected)
    assert len([p for p in planned if p[0] == "point"]) == 15  # 5 seeds x 3 methods
    assert sorted(searched) == sorted((t.task, 0, 1.0, 2000) for t in bench.TARGETS)  # seed 0: SOLAR at 100%
    assert reported["targets"] == bench.TARGETS


def test_pretraining_from_finds_the_run_of_the_same_task_method_and_seed(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    folder = tmp_path / "runs" / "benchmark" / "base"
    for name in ("point_solar_s1_set-kl_step=8", "point_solar_s10", "point_vae_s1", "reacher_solar_s1"):
        (folder / name).mkdir(parents=True)
        (folder / name / "pretrain_checkpoint.pt").write_bytes(b"")
    (folder / "point_solar_s2").mkdir()  # a run without a pretraining checkpoint
    assert bench.pretraining_source("base", "point", "solar", 1) == folder / "point_solar_s1_set-kl_step=8"
    assert bench.pretraining_source("base", "point", "vae", 1) == folder / "point_vae_s1"
    with pytest.raises(ValueError, match="0 runs of point/solar/seed 2"):
        bench.pretraining_source("base", "point", "solar", 2)
    (folder / "point_solar_s1").mkdir()
    (folder / "point_solar_s1" / "pretrain_checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="2 runs of point/solar/seed 1"):
        bench.pretraining_source("base", "point", "solar", 1)


def test_the_report_says_which_runs_took_another_runs_pretraining(bench):
    source = "/x/runs/benchmark/base/point_solar_s1"
    took = {"iterations": [{"extra": {"phase": "pretrain", "pretraining_from": source}}]}
    own = {"iterations": [{"extra": {"phase": "pretrain"}}]}
    assert bench.pretraining_lines([own, {}]) == []
    line = bench.pretraining_lines([took, own])[0]
    assert line.startswith("Pretraining: 1 of the 2 runs") and "benchmark `base`" in line


def test_the_report_names_the_machines_the_runs_recorded(bench):
    one = {"provenance": {"machine": {"cpu": "CPU A", "cpus": 2, "vector": ["avx2", "avx512f"], "torch": "2.13.0"}}}
    other = {"provenance": {"machine": {"cpu": "CPU B", "cpus": 2, "vector": [], "torch": "2.13.0"}}}
    assert bench.machine_lines([{}]) == []  # runs from before summaries recorded it
    line = bench.machine_lines([one, one])[0]
    assert line == "Machine of the runs: CPU A (2 CPUs; avx2, avx512f vector extensions of note; torch 2.13.0)."
    assert bench.machine_lines([one, other])[0].startswith("Machines of the runs: CPU A (") and "; CPU B (2 CPUs; no" \
        in bench.machine_lines([one, other])[0]


def test_the_paper_table_runs_every_paper_task_and_the_mpc_ablation_after_solar(bench):
    from solar_ros.algos.solar import TASK_DEFAULTS
    from solar_ros.cli import METHODS
    first, later = bench.paper_runs(bench.PAPER)
    assert {r.task for r in bench.PAPER} == {"point", "reacher_paper", "car", "sawyer_reach", "sawyer_stack_0",
                                             "sawyer_stack_1", "sawyer_stack_2", "sawyer_push"}
    for row in bench.PAPER:
        assert TASK_DEFAULTS[row.task].training_episodes == row.episodes and len(row.seeds) == 3, row.task
        assert set(row.methods) <= set(METHODS) and {"solar", "vae", "solar_mpc", "ppo"} <= set(row.methods)
    assert not any(m == "solar_mpc" for _, m, _, _ in first) and all(m == "solar_mpc" for _, m, _, _ in later)
    assert {(t, s) for t, _, s, _ in later} == {(t, s) for t, m, s, _ in first if m == "solar"}
    assert not any(t in ("car", "sawyer_push") and m == "dsae" for t, m, _, _ in first)


def test_the_paper_table_says_which_targets_are_met_and_checks_the_mpc_prediction(bench):
    def row(task, method, seed, success):
        return {"task": task, "method": method, "seed": seed, "success_rate": success}
    rows = (bench.PaperRow("point", 200, bench.PAPER_METHODS, 0.9, seeds=(0, 1)),
            bench.PaperRow("sawyer_stack_2", 500, ("solar", "solar_mpc"), 0.5, stretch=True, seeds=(0,)))
    results = [row("point", "solar", 0, 1.0), row("point", "solar", 1, 0.9), row("point", "solar_mpc", 0, 0.4),
               row("point", "dsae", 1, 0.2), row("sawyer_stack_2", "solar_mpc", 0, 0.0)]
    lines = bench.paper_lines(rows, results)
    assert lines[4] == "| task (episodes) | SOLAR target | met | SOLAR | VAE ablation | MPC ablation | DSAE | PPO |"
    assert lines[6] == "| `point` (200) | >= 90% | yes | 100%, 90% | -, - | 40%, - | -, 20% | -, - |"
    assert lines[7] == "| `sawyer_stack_2` (500) | >= 50% (stretch) | not run | - | n/a | 0% | n/a | n/a |"
    assert "MPC on start 2 0% (1 runs), on starts 0 and 1 not run and not run; SOLAR on start 2 not run." in lines[9]
