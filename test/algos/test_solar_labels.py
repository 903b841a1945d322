"""SOLAR on sparse success labels (reward='labels'): the scripted person, the costs the labels give, the latent
success cost, and a run that observes nothing of the task's cost."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from solar_ros.algos import solar
from solar_ros.algos.solar.labels import label_costs, labels_latent_cost, scripted_labels
from solar_ros.algos.solar.persistence import load_data

TINY = solar.SolarConfig(pretrain_episodes=20, iterations=2, rollouts_per_iteration=6, buffer_size=12,
                         eval_episodes=4, latent_dim=3, image_size=16, pretrain_steps=60, batch_size=4,
                         lds_update_every=20, num_threads=1, reward="labels", cost_fit="labels", action_cost="task")


def test_the_scripted_person_presses_once_after_the_first_success_unless_missing():
    successes = np.zeros((4, 10), dtype=bool)
    successes[0, 3:] = True
    successes[1, 8] = True       # the press would come after the episode: on its last step
    successes[3, 2:5] = True
    rngs = [np.random.default_rng(i) for i in range(4)]
    labels = scripted_labels(successes, delay=2, miss_rate=0.0, rngs=rngs)
    np.testing.assert_array_equal(np.flatnonzero(labels[0]), [5])
    np.testing.assert_array_equal(np.flatnonzero(labels[1]), [9])
    assert labels[2].sum() == 0 and labels.sum() == 3
    assert scripted_labels(successes, 2, 1.0, [np.random.default_rng(i) for i in range(4)]).sum() == 0
    costs = label_costs(labels, window=1)
    np.testing.assert_array_equal(costs[0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(costs[2], np.ones(10))
    with pytest.raises(ValueError, match="generator"):
        scripted_labels(successes, 2, 0.0, rngs[:2])


def test_settings_go_together():
    with pytest.raises(ValueError, match="go together"):
        replace(TINY, cost_fit="readout")
    with pytest.raises(ValueError, match="go together"):
        solar.SolarConfig(cost_fit="labels", action_cost="task")
    with pytest.raises(ValueError, match="label_miss_rate"):
        replace(TINY, label_miss_rate=1.5)
    with pytest.raises(ValueError, match="label_window"):
        replace(TINY, label_window=-1)


def test_the_latent_success_cost_is_a_bowl_at_the_labelled_frames():
    rng = np.random.default_rng(0)
    N, T, dx = 60, 20, 2
    centre = np.array([0.5, 0.2])
    # episodes move from a start to an end and stay there; about a third end in the success region
    start = rng.uniform(-1, 1, size=(N, dx))
    end = np.where(rng.random((N, 1)) < 0.35, centre + rng.uniform(-0.15, 0.15, size=(N, dx)),
                   rng.uniform(-1, 1, size=(N, dx)))
    ramp = np.minimum(1.0, np.arange(T) / 10.0)[None, :, None]
    latents = start[:, None] + (end - start)[:, None] * ramp + 0.02 * rng.normal(size=(N, T, dx))
    near = np.linalg.norm(latents - centre, axis=-1) < 0.3
    labels = np.zeros((N, T), dtype=int)
    for n in range(N):  # a press where the latent enters the region to stay; windows of 0 steps
        outside = np.flatnonzero(~near[n])
        if near[n, -1]:
            labels[n, outside[-1] + 1 if outside.size else 0] = 1
    data = solar.RolloutData(np.zeros((N, T, 2, 2, 1), np.uint8), np.zeros((N, T, 1)), label_costs(labels, 0),
                             labels=labels)
    metrics: dict = {}
    cost = labels_latent_cost(latents, data, np.array([0.01]), window=0, ridge=1e-4, metrics=metrics)
    C, c = cost.Cm[0, :dx, :dx], cost.cv[0, :dx]
    assert np.all(np.linalg.eigvalsh(C) > 0)
    assert np.linalg.norm(np.linalg.solve(C, -c) - centre) < 0.15
    assert metrics["label_auc"] > 0.95 and 0 < metrics["label_success_frames"] < 1
    # nothing labelled yet: no pull on the state, only the action penalty
    none = replace(data, labels=np.zeros_like(labels), costs=np.ones((N, T)))
    flat = labels_latent_cost(latents, none, np.array([0.01]), window=0, ridge=1e-4)
    assert np.all(flat.Cm[:, :dx, :dx] == 0) and flat.Cm[0, dx, dx] == pytest.approx(0.01)


def test_a_run_on_labels_observes_no_task_cost(tmp_path):
    result = solar.train("point", seed=1, out=tmp_path, progress=False, config=TINY)
    data = load_data(Path(tmp_path), ["pretrain", "iter_001", "iter_002"])
    # the model learned from the labels' costs only (0 or 1 per frame), stored with the labels
    assert data.labels is not None and set(np.unique(data.costs)) <= {0.0, 1.0}
    np.testing.assert_array_equal(data.costs, label_costs(data.labels, TINY.label_window))
    extra = result.iterations[-1]["extra"]
    assert "label_success_frames" in extra
    # the evaluation still reports the task's own figures
    assert result.final_cost > 1.0 and 0.0 <= result.success_rate <= 1.0


def test_the_success_model_learns_from_every_episode_so_far_not_only_the_buffer():
    """label_history: the buffer's newest episodes may hold no success (sawyer_push's first iterations); the success
    model is then fitted to every episode so far (their latents from the model), else it has nothing to pull to."""
    from solar_ros.algos.solar.loop import iteration_cost
    rng = np.random.default_rng(1)
    N, T, dx = 30, 10, 2
    latents = rng.normal(size=(N, T, dx))
    labels = np.zeros((N, T), dtype=int)
    labels[:10, 5] = 1  # the first (oldest) ten episodes succeeded
    latents[:10, 5:] = np.array([1.0, -1.0]) + 0.05 * rng.normal(size=(10, T - 5, dx))
    history = solar.RolloutData(np.zeros((N, T, 2, 2, 1), np.uint8), np.zeros((N, T, 1)), label_costs(labels, 0),
                                labels=labels)
    buffer = history.last(12)  # no success in it

    class Model:  # the latents the model infers for a batch of episodes (smoothed, as dynamics_latents says)
        def smooth(self, data):
            return latents[-data.N:]

    cfg = replace(TINY, label_window=0, label_ridge=1e-4)
    weights = np.array([0.01])
    with_history = iteration_cost(Model(), latents[-12:], buffer, cfg, weights, history=history)
    expected = labels_latent_cost(latents, history, weights, window=0, ridge=1e-4)
    np.testing.assert_allclose(with_history.Cm, expected.Cm)
    np.testing.assert_allclose(with_history.cv, expected.cv)
    C, c = with_history.Cm[0, :dx, :dx], with_history.cv[0, :dx]
    assert np.linalg.norm(np.linalg.solve(C, -c) - np.array([1.0, -1.0])) < 0.5  # pulled to the successes
    for flat in (iteration_cost(Model(), latents[-12:], buffer, cfg, weights),  # no history given
                 iteration_cost(Model(), latents[-12:], buffer, replace(cfg, label_history=False), weights,
                                history=history)):
        assert np.all(flat.Cm[:, :dx, :dx] == 0)
