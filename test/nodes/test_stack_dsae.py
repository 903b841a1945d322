"""The ``dsae`` method through the whole stack (`solar-ros launch sim`), with a tiny autoencoder: the
controller runs on [latent, q, dq] throughout; the untrained model's latents feed the exploratory
policy, the trained model is announced, hot-swapped in the encoder between episodes and the final
controller's episodes run on its feature points. Checks the trainer's clean exit, the summary, both
checkpoints and the policies' state layout, not learning (scripts/main.sh is the learning run)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from solar_ros.launcher import launch
from solar_ros.models.checkpoint import load_checkpoint
from solar_ros.runtime.episode_store import load_episode, read_index
from solar_ros.runtime.fitting import load_policy

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

ITERATIONS, EPISODES, EVAL, HORIZON = 3, 2, 1, 20
FIT_CONFIG = ("{explore_iterations: 1, conv_channels: [8, 8, 4], dsae_steps: 20, dsae_window: 5, "
              "dsae_batch_size: 2, control_points: 2, min_r2: 0.0, final_dynamics_prior: global}")


def test_dsae_run_through_the_nodes_swaps_in_the_trained_model(tmp_path):
    out = io.StringIO()
    rc = launch("sim", {
        "recorder_node.output_dir": str(tmp_path / "episodes"), "recorder_node.write_mcap": "false",
        "trainer_node.episode_dir": str(tmp_path / "episodes"), "trainer_node.output_dir": str(tmp_path / "run"),
        "model_fitting_node.output_dir": str(tmp_path / "models"), "model_fitting_node.num_threads": 1,
        "trainer_node.method": "dsae", "controller_node.state_source": "latent+joints",
        "trainer_node.fit_config": FIT_CONFIG,
        "trainer_node.iterations": ITERATIONS, "trainer_node.episodes_per_iteration": EPISODES,
        "trainer_node.eval_episodes": EVAL, "trainer_node.horizon": HORIZON, "trainer_node.seed": 1,
    }, output=out, duration=210, grace=3.0)
    text = out.getvalue()
    assert rc == 0, text[-6000:]
    assert "Traceback" not in text and "rejected policy" not in text, text[-6000:]

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "dsae" and summary["episodes"] == ITERATIONS * EPISODES

    models = tmp_path / "models"
    untrained, trained = load_checkpoint(models / "model_000.pt"), load_checkpoint(models / "model_002.pt")
    assert not untrained.extra["trained"] and trained.extra["trained"] and len(trained.extra["points"]) == 2
    assert f"using model {trained.extra['model_id']}" in text  # the encoder swapped it in
    policies = [load_policy(models / f"policy_{i:03d}.npz") for i in range(ITERATIONS + 1)]
    assert all(p.state_source == "latent+joints" and p.policy.dx == 8 + 14 for p in policies)
    assert [p.model_id for p in policies] == [untrained.extra["model_id"]] * 2 + [trained.extra["model_id"]] * 2
    assert not policies[1].policy.K[:, :, :8].any() and policies[3].policy.K[:, :, :8].any()

    # The final controller's episodes carry the trained model's feature points as the state's latent.
    final = [e for e in read_index(tmp_path / "episodes") if e["policy_id"] == policies[2].policy_id]
    assert len(final) == EPISODES
    arrays = load_episode(tmp_path / "episodes", final[0])
    same = np.all(np.isclose(arrays["states"][:, :8], arrays["latent_mean"], rtol=0, atol=1e-9), axis=1)
    assert same.mean() >= 0.8, "the controller's latent is not the encoder's (best-effort QoS may drop a few)"
    assert np.all(np.abs(arrays["states"][:, :8]) <= 1.0)  # feature points in image coordinates
