"""LQR-FLM on the true state really learns (small, seeded, fast) and the CLI writes its outputs."""
import json

import numpy as np
import pytest

from solar_ros.algos import lqr_state
from solar_ros.cli import main


def test_point_learns_to_reach_the_goal(tmp_path):
    cfg = lqr_state.LQRStateConfig(iterations=4, rollouts_per_iteration=5, kl_step=5.0, eval_episodes=10)
    result = lqr_state.train("point", seed=3, out=tmp_path, progress=False, config=cfg)
    costs = [row["mean_cost"] for row in result.iterations]
    # The first iteration is the zero-gain exploration policy: learning must cut its cost a lot.
    assert costs[-1] < 0.5 * costs[0]
    assert result.success_rate >= 0.9
    assert result.final_distance < 0.1
    assert result.episodes == 20 and result.env_steps == 20 * 50


def test_same_seed_same_result():
    cfg = lqr_state.LQRStateConfig(iterations=2, rollouts_per_iteration=3, eval_episodes=2)
    a = lqr_state.train("point", seed=7, progress=False, config=cfg)
    b = lqr_state.train("point", seed=7, progress=False, config=cfg)
    assert a.final_cost == b.final_cost
    assert [r["mean_cost"] for r in a.iterations] == [r["mean_cost"] for r in b.iterations]


def test_cli_train_writes_summary_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--task", "point", "--method", "lqr_state", "--seed", "1", "--out", str(out),
               "--episodes", "10", "--goal", "0.5,-0.3", "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("task", "method", "seed", "episodes", "env_steps", "final_cost", "final_distance",
                "success_rate", "wall_time_s"):
        assert key in summary
    assert summary["task"] == "point" and summary["method"] == "lqr_state" and summary["seed"] == 1
    assert summary["episodes"] == 10
    np.testing.assert_allclose(summary["goal"], [0.5, -0.3])
    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "success" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "nope", "--method", "lqr_state", "--out", "x"], "invalid choice"),
    (["train", "--task", "point", "--method", "lqr_state", "--out", "x", "--episodes", "0"], "positive"),
    (["train", "--task", "point", "--method", "lqr_state", "--out", "x", "--goal", "a,b"], "comma-separated"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_goal_outside_the_arena_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError):
        lqr_state.train("point", seed=0, goal=[5.0, 5.0], progress=False,
                        config=lqr_state.LQRStateConfig(iterations=1, rollouts_per_iteration=2, eval_episodes=1))


@pytest.mark.parametrize("field, value", [
    ("iterations", 0), ("rollouts_per_iteration", 2.5), ("eval_episodes", -1), ("kl_step", 0.0),
    ("init_noise", float("nan")), ("prior_strength", -1.0), ("dynamics_prior", "mixture"), ("prior_seed", -3),
    ("adapt_step", "yes"), ("iterations", True),
])
def test_bad_settings_are_rejected_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"LQRStateConfig.{field} "):
        lqr_state.LQRStateConfig(**{field: value})
