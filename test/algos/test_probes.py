"""The representation diagnostics: linear probes, state groups, coverage (checked against numbers
worked out by hand or by an independent least-squares solve), cost ranking."""
import numpy as np
import pytest

from solar_ros.algos.probes import (
    cost_ranking_report,
    coverage_report,
    diagnostics_line,
    linear_probe,
    probe_report,
    state_groups,
)
from solar_ros.envs import make


def test_probe_recovers_a_linear_map_exactly():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(4, 3))
    x = rng.normal(size=(200, 4))
    y = x @ W + 0.5
    r2 = linear_probe(x[:150], y[:150], x[150:], y[150:], ridge=1e-9)
    np.testing.assert_allclose(r2, 1.0, atol=1e-8)


def test_probe_matches_least_squares_on_noisy_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=1.0, size=300)
    r2 = linear_probe(x[:200], y[:200], x[200:], y[200:], ridge=0.0)
    A = np.c_[x[:200], np.ones(200)]
    coef, *_ = np.linalg.lstsq(A, y[:200], rcond=None)
    pred = np.c_[x[200:], np.ones(100)] @ coef
    expected = 1 - np.sum((y[200:] - pred) ** 2) / np.sum((y[200:] - y[200:].mean()) ** 2)
    np.testing.assert_allclose(r2[0], expected, rtol=1e-9)
    assert 0.7 < r2[0] < 0.9  # signal variance 5.25 against noise 1


def test_uninformative_latent_scores_about_zero_or_below():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 5))
    y = rng.normal(size=(400, 2))
    r2 = linear_probe(x[:300], y[:300], x[300:], y[300:])
    assert np.all(r2 < 0.05)


def test_probe_rejects_bad_input():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(x, np.full((10, 1), np.nan), x, np.zeros((10, 1)))
    with pytest.raises(ValueError, match="same number of rows"):
        linear_probe(x, np.zeros((9, 1)), x, np.zeros((10, 1)))


def test_probe_report_holds_out_whole_rollouts():
    rng = np.random.default_rng(3)
    states = rng.normal(size=(8, 20, 3))
    # The latent equals the state on rollouts 0-5 and is noise on the last two (the held-out ones).
    latents = states.copy()
    latents[6:] = rng.normal(size=(2, 20, 3))
    report = probe_report(latents, states, {"a": [0, 1], "b": [2]}, holdout=0.25)
    assert set(report) == {"probe_a", "probe_b"}
    assert report["probe_a"] < 0.1 and report["probe_b"] < 0.1
    good = probe_report(states, states, {"a": [0, 1], "b": [2]})
    assert good["probe_a"] == pytest.approx(1.0, abs=1e-4) and good["probe_b"] == pytest.approx(1.0, abs=1e-4)


def test_state_groups_of_the_tasks():
    sawyer = make("sawyer_reach", image_obs=False)
    groups = state_groups(sawyer.state_names, sawyer.ee_pos_idx)
    assert groups == {"ee_position": [14, 15, 16], "joint_angles": list(range(7)),
                      "velocities": list(range(7, 14)) + [17, 18, 19]}
    reacher = make("reacher", image_obs=False)
    groups = state_groups(reacher.state_names, reacher.ee_pos_idx)
    assert groups == {"ee_position": [4, 5], "joint_angles": [0, 1], "velocities": [2, 3, 6, 7]}
    point = make("point", image_obs=False)
    assert state_groups(point.state_names, point.ee_pos_idx) == {"ee_position": [0, 1], "velocities": [2, 3]}


def test_coverage_report_numbers():
    # Two rollouts on a line: x from 0 to 0.9 in steps of 0.1, y = z = 0.
    line = np.stack([np.arange(10) * 0.1, np.zeros(10), np.zeros(10)], -1)
    positions = np.stack([line, line[::-1]])
    cov = coverage_report(positions, goal=np.array([0.45, 0.0, 0.3]), cell=0.25)
    assert cov["coverage_cells"] == 4  # x cells 0, 1, 2, 3
    assert cov["coverage_nearest_goal"] == pytest.approx(np.hypot(0.05, 0.3))
    assert cov["coverage_final_spread"] == pytest.approx(0.45)
    assert cov["coverage_span"] == pytest.approx(np.ptp(np.percentile(positions[..., 0], [5, 95])) / 3)


def test_cost_ranking_report_numbers():
    # One rollout of 5 frames at distances 0.4, 0.3, 0.2, 0.1, 0.0 from the goal (on the x axis).
    positions = np.stack([np.array([0.4, 0.3, 0.2, 0.1, 0.0]), np.zeros(5), np.zeros(5)], -1)[None]
    goal = np.zeros(3)
    right = cost_ranking_report(np.array([[4.0, 3.0, 2.0, 1.0, 0.0]]), positions, goal, fraction=0.4)
    assert right["cost_rank_corr"] == pytest.approx(1.0)
    assert right["cost_min_distance"] == pytest.approx(0.05)  # the 2 lowest: 0.0 and 0.1 away
    assert right["cost_min_ideal"] == pytest.approx(0.05)
    # A cost that is lowest 0.3 away and rises both ways: ranks 0.3 < 0.2 = 0.4 < 0.1 < 0.0.
    wrong = cost_ranking_report(np.array([[1.0, 0.0, 1.0, 2.0, 3.0]]), positions, goal, fraction=0.2)
    assert wrong["cost_min_distance"] == pytest.approx(0.3)
    assert wrong["cost_min_ideal"] == pytest.approx(0.0)
    # Spearman by hand: cost ranks (1.5, 0, 1.5, 3, 4) against distance ranks (4, 3, 2, 1, 0).
    rc, rd = np.array([1.5, 0, 1.5, 3, 4]), np.array([4.0, 3, 2, 1, 0])
    expected = np.corrcoef(rc, rd)[0, 1]
    assert wrong["cost_rank_corr"] == pytest.approx(expected)
    assert expected < 0
    with pytest.raises(ValueError):
        cost_ranking_report(np.zeros((1, 4)), positions, goal)
    with pytest.raises(ValueError):
        cost_ranking_report(np.zeros((1, 5)), positions, goal, fraction=0.0)


def test_the_diagnostics_line_names_the_representation_figures_only():
    extra = {"kl": 0.4, "cost_r2": 0.91234, "readout_r2": 0.98765, "probe_ee_position": 0.5, "heldout_cost_r2": -0.25,
             "coverage_span": 0.7, "cost_min_distance": 0.12, "reverted": 1.0, "predicted_cost": 3.0}
    assert diagnostics_line(extra) == ("representation: cost_r2 0.912, readout_r2 0.988, probe_ee_position 0.5, "
                                       "heldout_cost_r2 -0.25, coverage_span 0.7, cost_min_distance 0.12")
    assert diagnostics_line({"kl": 0.4}) == ""
