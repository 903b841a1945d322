"""The cost learned from sparse success labels: targets from the labels, the quadratic logistic fit against a known
success region, and the convex negative log-odds LQR-FLM minimises."""
from __future__ import annotations

import numpy as np
import pytest

from solar_ros.core.success_cost import NoSuccessLabels, fit_success_model, success_cost, success_targets


def test_targets_run_from_a_window_before_the_first_label_to_the_end():
    labels = np.zeros((3, 8), dtype=int)
    labels[0, 5] = 1
    labels[0, 7] = 2  # later labels change nothing
    labels[1, 1] = 1  # the window is cut at the episode's start
    y = success_targets(labels, window=2)
    np.testing.assert_array_equal(y[0], [0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(y[1], [1, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(y[2], np.zeros(8))  # nobody labelled it
    np.testing.assert_array_equal(success_targets(labels, window=0)[0], [0, 0, 0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="window"):
        success_targets(labels, window=-1)
    with pytest.raises(ValueError, match="shape"):
        success_targets(np.zeros(5))


def _region_data(seed: int = 0, n: int = 4000):
    """Latents uniform in [-1, 1]^3, success inside an ellipsoid around a centre, labels with 5% flipped."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 3))
    centre = np.array([0.4, -0.3, 0.1])
    inside = np.sum(((X - centre) / np.array([0.35, 0.5, 0.6])) ** 2, axis=1) < 1.0
    y = inside.astype(float)
    flip = rng.random(n) < 0.05
    y[flip] = 1 - y[flip]
    return X, y, centre, inside


def test_the_logistic_model_finds_the_success_region():
    X, y, centre, inside = _region_data()
    model = fit_success_model(X, y, ridge=1e-4)
    p = model.probability(X)
    # the probability ranks the frames inside the region above those outside (area under the ROC curve; 0.5 by
    # chance, and below 1 only for the region's edge: the model sees the noisy labels, not ``inside``)
    ranks = np.argsort(np.argsort(p)) + 1
    auc = (ranks[inside].sum() - inside.sum() * (inside.sum() + 1) / 2) / (inside.sum() * (~inside).sum())
    assert auc > 0.97
    # a quadratic log-odds cannot be flat inside the region: it peaks at its centre, far above the outside
    assert model.probability(centre[None])[0] > 100 * model.probability(np.array([[-0.9, 0.9, -0.9]]))[0]
    assert model.probability(np.array([[-0.9, 0.9, -0.9]]))[0] < 0.01


def test_the_cost_is_a_convex_bowl_at_the_success_region():
    X, y, centre, _ = _region_data(1)
    C, c, c0, held = success_cost(X, y, ridge=1e-4)
    assert np.all(np.linalg.eigvalsh(C) >= -1e-12)
    minimum = np.linalg.solve(C, -c)
    assert np.linalg.norm(minimum - centre) < 0.1
    cost = lambda x: 0.5 * x @ C @ x + c @ x + c0  # noqa: E731
    np.testing.assert_allclose(cost(X[0]), -held.log_odds(X[0]), rtol=1e-10)
    assert cost(centre) < cost(np.array([-0.9, 0.9, -0.9])) - 4.0  # success costs far less (log-odds) than failure


def test_no_success_yet_is_said_not_fitted():
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(NoSuccessLabels, match="no success label"):
        fit_success_model(X, np.zeros(50))
    with pytest.raises(NoSuccessLabels, match="every frame"):
        success_cost(X, np.ones(50))
    with pytest.raises(ValueError, match="targets"):
        fit_success_model(X, np.zeros(49))
