"""`solar-ros train`: --set KEY=VALUE on top of the task defaults, negative --goal values, clean errors."""
from __future__ import annotations

import dataclasses
import importlib
import json
import sys

import pytest

from solar_ros import cli
from solar_ros.envs import TASKS
from solar_ros.settings import SettingsError


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_negative_goal_values_are_values_not_options():
    assert cli.join_negative_values(["train", "--goal", "-0.5,0.45", "--seed", "1"]) == \
        ["train", "--goal=-0.5,0.45", "--seed", "1"]
    assert cli.join_negative_values(["--goal", "0.5,-0.45"]) == ["--goal", "0.5,-0.45"]
    assert cli.join_negative_values(["--goal", "--seed"]) == ["--goal", "--seed"]
    parser = cli.build_parser()
    for goal in (["--goal", "-0.5,0.45"], ["--goal=-0.5,0.45"], ["--goal", "-0.5"]):
        args = parser.parse_args(cli.join_negative_values(["train", "--task", "point", "--method", "lqr_state",
                                                           *goal]))
        assert args.goal == ([-0.5, 0.45] if "," in goal[-1] else [-0.5])


@pytest.mark.parametrize("method", sorted(cli.METHODS))
def test_every_method_has_a_config_class_with_task_defaults(method):
    cls = cli.config_class(method)
    assert dataclasses.is_dataclass(cls)
    module = importlib.import_module(cli.METHODS[method][0])
    for task in TASKS:
        cfg = cli.method_config(method, task)
        assert isinstance(cfg, cls)
        default = module.TASK_DEFAULTS.get(task, cls())
        if method == "dsae":
            from solar_ros.algos import lqr_state
            default = dataclasses.replace(default, exploration=lqr_state.TASK_DEFAULTS.get(
                task, lqr_state.LQRStateConfig()))
        assert cfg == default


def test_overrides_apply_on_top_of_the_task_defaults():
    from solar_ros.algos import dsae_pipeline, lqr_state
    cfg = cli.method_config("lqr_state", "point", ["kl_step=2.5", "adapt_step=false"])
    assert cfg == dataclasses.replace(lqr_state.TASK_DEFAULTS["point"], kl_step=2.5, adapt_step=False)
    d = cli.method_config("dsae", "reacher",
                          ["exploration.iterations=3", "conv_channels=16,8,8", "control_points=None"])
    assert d.exploration == dataclasses.replace(lqr_state.TASK_DEFAULTS["reacher"], iterations=3)
    assert d.conv_channels == (16, 8, 8) and d.control_points is None
    assert d.final_iterations == dsae_pipeline.TASK_DEFAULTS["reacher"].final_iterations
    with pytest.raises(SettingsError, match="DSAEPipelineConfig.control_points must be between 1 and the 8"):
        cli.method_config("dsae", "reacher", ["conv_channels=16,8,8", "control_points=9"])


def test_train_with_settings_and_a_negative_goal_writes_them(tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = _run(capsys, "train", "--task", "point", "--method", "lqr_state", "--goal", "-0.5,0.45",
                           "--set", "iterations=1", "--set", "rollouts_per_iteration=2", "--set", "eval_episodes=1",
                           "--out", str(out), "--no-progress")
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["goal"] == [-0.5, 0.45]
    assert summary["episodes"] == 2 and summary["eval_episodes"] == 1
    assert summary["config"]["iterations"] == 1 and summary["config"]["kl_step"] == 5.0  # point's default kept
    assert summary["provenance"]["argv"] == sys.argv  # the command line of the process
    assert "commit" in summary["provenance"]


def test_unknown_setting_is_a_clean_error_listing_the_valid_ones(tmp_path, capsys):
    rc, _, err = _run(capsys, "train", "--task", "point", "--method", "lqr_state", "--set", "kl_stp=2",
                      "--out", str(tmp_path))
    assert rc == 2
    assert "solar-ros train: error: unknown setting 'kl_stp' for LQRStateConfig (did you mean kl_step?)" in err
    assert "valid settings: iterations, rollouts_per_iteration, kl_step" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("setting, message", [
    ("n_epochs=0", "PPOConfig.n_epochs must be a positive integer, got 0"),
    ("n_epochs=many", "setting n_epochs=many: expected an integer"),
    ("image_size=4", "PPOConfig.image_size must be None or an integer >= 8, got 4"),
    ("kl_step", "setting 'kl_step' is not KEY=VALUE"),
])
def test_bad_values_are_clean_errors_with_the_dataclass_message(setting, message, tmp_path, capsys):
    rc, _, err = _run(capsys, "train", "--task", "point", "--method", "ppo", "--set", setting, "--out", str(tmp_path))
    assert rc == 2 and message in err and "Traceback" not in err


def test_solar_settings_are_validated_by_solar_config(tmp_path, capsys):
    rc, _, err = _run(capsys, "train", "--task", "point", "--method", "solar", "--set", "latent_dim=0",
                      "--out", str(tmp_path))
    assert rc == 2 and "SolarConfig.latent_dim must be a positive integer, got 0" in err
    cfg = cli.method_config("vae", "point", ["train_window=None", "kl_step=1.5"])
    from solar_ros.algos.solar import TASK_DEFAULTS, SolarConfig
    assert isinstance(cfg, SolarConfig)
    assert cfg == dataclasses.replace(TASK_DEFAULTS["point"], train_window=None, kl_step=1.5)


def test_a_point_scale_on_a_task_without_block_points_is_refused_before_any_output(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = _run(capsys, "train", "--task", "point", "--method", "solar", "--set", "cost_fit=readout",
                      "--set", "action_cost=task", "--set", "readout_point_scale=2", "--out", str(out))
    assert rc == 2 and "readout_point_scale needs a cost on several 3-D points" in err and "Traceback" not in err
    assert not out.exists()
    cfg = cli.method_config("solar", "sawyer_stack_1", ["readout_point_scale=2"])
    assert cfg.readout_point_scale == 2.0
    rc, _, err = _run(capsys, "train", "--task", "point", "--method", "solar", "--set", "cost_fit=readout",
                      "--set", "action_cost=task", "--set", "approach_height=0.03", "--out", str(out))
    assert rc == 2 and "approach_height needs a cost on 3-D points" in err and "Traceback" not in err
    assert not out.exists()
    assert cli.method_config("solar", "sawyer_stack_0", ["approach_height=0.03"]).approach_height == 0.03


def test_list_settings_shows_the_task_values(capsys):
    rc, out, _ = _run(capsys, "train", "--task", "point", "--method", "dsae", "--list-settings",
                      "--set", "final_kl_step=3")
    assert rc == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "3.0" in lines["final_kl_step"] and "float" in lines["final_kl_step"]
    assert "exploration.kl_step" in lines and "exploration" not in lines


def test_pretraining_from_a_run_without_a_pretraining_checkpoint_is_a_clear_error(capsys, tmp_path):
    rc, _, err = _run(capsys, "train", "--task", "point", "--method", "solar", "--out", str(tmp_path / "out"),
                      "--pretraining-from", str(tmp_path / "nowhere"))
    assert rc == 2 and "no pretrain_checkpoint.pt" in err
    rc, _, err = _run(capsys, "train", "--task", "point", "--method", "lqr_state", "--out", str(tmp_path / "out"),
                      "--pretraining-from", str(tmp_path / "nowhere"))
    assert rc == 2 and "has no pretraining to start from" in err
