"""The ``dsae`` fit method on recorded episodes, ROS-free: a short real run of its life cycle
(untrained autoencoder and exploratory policy -> exploratory update -> autoencoder stage ->
final-controller update), the checkpoints the encoder loads, save/load/resume, and its errors.

Episodes are rolled out in-process the way the node stack runs them: the encoder's latent of each
camera image (the current checkpoint, loaded as the encoder node loads it) concatenated with
[q, dq] is the policy's state, and the recorder's buffers write them to disk.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from solar_ros.envs import make
from solar_ros.runtime.dsae_fit import DSAEMethod, lift_policy
from solar_ros.runtime.episode_store import EpisodeRecording
from solar_ros.runtime.fitting import METHODS, FitError, RunSettings, load_training_data
from solar_ros.runtime.latent_encoder import DSAEEncoder, load_encoder

T = 10
EPISODES = 3
# A tiny autoencoder (4 feature points) and few steps: the test checks the life cycle, not learning.
OVERRIDES = {"explore_iterations": 1, "conv_channels": [8, 8, 4], "dsae_steps": 20, "dsae_window": 5,
             "dsae_batch_size": 2, "control_points": 2, "min_r2": 0.0, "final_dynamics_prior": "global"}
LATENT = 8
DX = LATENT + 14


def record_episodes(env, goal, output, root, tag: str, n: int = EPISODES, images: bool = True) -> list[str]:
    """``n`` noisy episodes of ``output``'s policy on [latent, q, dq], recorded like the recorder does."""
    encoder = load_encoder(output.model_path)
    package = output.policy
    ids = []
    for j in range(n):
        seed = 100 * len(tag) + j
        rng = np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed, options={"goal": goal})
        episode_id = f"{tag}-ep{j}"
        rec = EpisodeRecording(root, episode_id, {"policy_id": package.policy_id}, write_mcap=False)
        for t in range(T):
            stamp = (t + 1) * 50_000_000
            latent = encoder.encode(obs["image"]).mean
            x = np.concatenate([latent, obs["state"][:14]])
            u = np.clip(package.policy.act(t, x, rng.standard_normal(7)), env.action_space.low, env.action_space.high)
            rec.buffers.steps.append(SimpleNamespace(time_index=t, start_ns=stamp, source_ns=stamp, state=x, action=u,
                                                     noise=np.zeros(7), commands=1, clipped=False))
            if images:
                rec.buffers.images.add(stamp, obs["image"])
            rec.buffers.latents.add(stamp, latent, np.eye(latent.size) * 1e-4)
            distance = float(np.linalg.norm(obs["state"][14:17] - goal))
            obs, _, _, _, info = env.step(u)
            rec.buffers.costs.add(stamp, float(info["cost"]), distance)
        rec.finalize("complete")
        ids.append(episode_id)
    return ids


def load(method, root, ids):
    return load_training_data(root, ids, method.required_arrays, horizon=method.horizon)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Iterations 0 (initialize), 1 (exploration), 2 (autoencoder), 3 (final controller), saved after each."""
    torch.set_num_threads(1)
    env = make("sawyer_reach", image_obs=True)
    env.reset(seed=0)
    goal = env.goal.copy()
    out, root = tmp_path_factory.mktemp("dsae_models"), tmp_path_factory.mktemp("dsae_episodes")
    settings = RunSettings(task="sawyer_reach", goal=goal.tolist(), horizon=T, seed=0)
    method = DSAEMethod(settings, dict(OVERRIDES), out)
    outputs, batches = [method.initialize()], []
    method.save()
    for iteration in (1, 2, 3):
        ids = record_episodes(env, goal, outputs[-1], root, f"it{iteration}")
        batches.append(ids)
        outputs.append(method.update(load(method, root, ids), iteration))
        method.save()
    return SimpleNamespace(env=env, goal=goal, out=out, root=root, settings=settings, method=method,
                           outputs=outputs, batches=batches)


def test_dsae_is_a_registered_method():
    assert METHODS["dsae"] is DSAEMethod


def test_lift_policy_reads_only_its_columns():
    from solar_ros.algos.common import initial_policy
    small = initial_policy(3, 2, 1, 1.0)
    small.K[:] = [[[1.0, 2.0]]]
    big = lift_policy(small, np.array([4, 1]), 5)
    np.testing.assert_array_equal(big.K[0], [[0.0, 2.0, 0.0, 0.0, 1.0]])
    x = np.arange(5.0)
    assert big.act(0, x, None) == pytest.approx(small.act(0, x[[4, 1]], None))


def test_initialize_announces_an_untrained_model_and_an_exploratory_policy_on_latent_and_joints(run):
    first = run.outputs[0]
    assert first.new_model and first.model_path
    encoder = load_encoder(first.model_path)
    assert isinstance(encoder, DSAEEncoder) and encoder.latent_dim == LATENT
    package = first.policy
    assert package.state_source == "latent+joints" and package.model_id == encoder.model_id
    assert (package.policy.T, package.policy.dx, package.policy.du) == (T, DX, 7)
    assert not package.policy.K[:, :, :LATENT].any()  # the untrained latent is not read


def test_exploration_is_the_lqr_joints_update_lifted_to_the_full_state(run):
    explored = run.outputs[1]
    assert not explored.new_model and explored.policy.model_id == run.outputs[0].policy.model_id
    K = explored.policy.policy.K
    assert not K[:, :, :LATENT].any() and K[:, :, LATENT:].any()
    assert {"kl", "eta", "step_mult"} <= set(explored.metrics)
    assert explored.metrics["phase_final"] == 0.0


def test_autoencoder_stage_gives_a_loadable_checkpoint_targets_and_the_final_controller(run):
    staged = run.outputs[2]
    method = run.method
    assert staged.new_model and staged.model_path != run.outputs[0].model_path
    encoder = load_encoder(staged.model_path)
    assert isinstance(encoder, DSAEEncoder) and encoder.latent_dim == LATENT
    assert staged.policy.model_id == encoder.model_id and staged.policy.state_source == "latent+joints"
    assert staged.policy.policy.dx == DX
    points = method.selection["points"]
    assert len(points) == 2 and len(method.selection["target"]) == 4 and method.selection["weight"] > 0
    # the goal image is the last frame of the exploratory episode that ended closest to the goal
    explored = load_training_data(run.root, run.batches[0] + run.batches[1])
    best = int(np.argmin(explored.distances[:, -1]))
    assert method.selection["goal_episode"] == explored.episode_ids[best]
    target = encoder.encode(explored.images[best, -1]).mean.reshape(-1, 2)[points].ravel()
    np.testing.assert_allclose(method.selection["target"], target, atol=1e-6)
    # the final controller reads only the kept points' coordinates and [q, dq]
    read = np.flatnonzero(np.abs(staged.policy.policy.K).sum((0, 1)) > 0)
    assert set(read) <= set(method.control_columns.tolist())
    unread = sorted(set(range(LATENT)) - set(method.control_columns.tolist()))
    assert len(unread) == LATENT - 4 and not staged.policy.policy.K[:, :, unread].any()
    m = staged.metrics
    assert m["phase_final"] == 1.0 and m["kept_points"] == 2 and "dsae_loss" in m and "kl" in m
    # the earlier exploratory episodes seed the dynamics prior; its first update used the batch it ran
    # (then iteration 3's batch followed)
    assert [len(x) for x in method.final.seen_X] == [EPISODES] * 3
    np.testing.assert_allclose(method.final.seen_X[0][:, :, 4:], explored.states[:EPISODES, :, LATENT:])
    np.testing.assert_allclose(method.final.seen_X[1][:, :, 4:], explored.states[EPISODES:, :, LATENT:])
    # ... with the feature points the trained model's encoder publishes for its images
    kept = method.control_columns[:4]
    published = np.stack([[encoder.encode(image).mean[kept] for image in episode]
                          for episode in explored.images[EPISODES:]])
    np.testing.assert_allclose(method.final.seen_X[1][:, :, :4], published, atol=1e-6)


def test_final_controller_updates_on_the_published_latents(run):
    final = run.outputs[3]
    assert not final.new_model and final.policy.model_id == run.outputs[2].policy.model_id
    assert final.policy.policy.dx == DX and np.isfinite(final.metrics["mean_feature_cost"])
    assert run.method.iteration == 3 and run.method.phase == "final"


def test_saved_run_resumes_exactly(run):
    method = run.method
    loaded = DSAEMethod.load(run.settings, dict(OVERRIDES), run.out)
    assert (loaded.iteration, loaded.policy_id, loaded.phase) == (3, method.policy_id, "final")
    assert loaded.model_id == method.model_id and loaded.selection == method.selection
    np.testing.assert_allclose(loaded.policy.K, method.policy.K)
    ids = record_episodes(run.env, run.goal, run.outputs[3], run.root, "it4")
    data = load(method, run.root, ids)
    a, b = method.update(data, 4), loaded.update(data, 4)
    np.testing.assert_allclose(a.policy.policy.K, b.policy.policy.K, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.policy.policy.k, b.policy.policy.k, rtol=1e-9, atol=1e-12)


def test_exploration_phase_resumes_too(run, tmp_path):
    method = DSAEMethod(run.settings, dict(OVERRIDES), tmp_path)
    first = method.initialize()
    method.save()
    loaded = DSAEMethod.load(run.settings, dict(OVERRIDES), tmp_path)
    assert (loaded.phase, loaded.policy_id, loaded.model_id) == ("explore", first.policy.policy_id,
                                                                  first.policy.model_id)
    np.testing.assert_allclose(loaded.policy.K, first.policy.policy.K)


def test_bad_episodes_and_settings_give_clear_errors(run, tmp_path):
    method = DSAEMethod(run.settings, dict(OVERRIDES), tmp_path / "models")
    with pytest.raises(FitError, match="no run in progress"):
        method.update(load(method, run.root, run.batches[0]), 1)
    first = method.initialize()
    # episodes recorded without camera images
    ids = record_episodes(run.env, run.goal, first, tmp_path / "episodes", "noimg", n=1, images=False)
    with pytest.raises(FitError, match="images"):
        load(method, tmp_path / "episodes", ids)
    data = load_training_data(tmp_path / "episodes", ids, horizon=T)
    with pytest.raises(FitError, match="camera images"):
        method.update(data, 1)
    # episodes that ran another policy, or a joints-only controller
    with pytest.raises(FitError, match="current policy"):
        method.update(load(method, run.root, run.batches[0]), 1)
    ids = record_episodes(run.env, run.goal, first, tmp_path / "episodes", "joints", n=1)
    data = load(method, tmp_path / "episodes", ids)
    with pytest.raises(FitError, match=r"latent\+joints"):
        method.update(dataclasses.replace(data, states=data.states[:, :, LATENT:]), 1)
    with pytest.raises(FitError, match="unknown dsae setting"):
        DSAEMethod(run.settings, {"dsae_stepz": 3}, tmp_path)
    with pytest.raises(FitError, match="explore_iterations"):
        DSAEMethod(run.settings, {"explore_iterations": 0}, tmp_path)
    with pytest.raises(FitError, match="no saved dsae run"):
        DSAEMethod.load(run.settings, {}, tmp_path / "nothing")


def test_final_controller_can_start_from_zero_gains(run, tmp_path):
    method = DSAEMethod(run.settings, {**OVERRIDES, "final_init": "zero", "final_init_noise": 0.5}, tmp_path / "models")
    output = method.initialize()
    for iteration in (1, 2):
        ids = record_episodes(run.env, run.goal, output, tmp_path / "episodes", f"zero{iteration}")
        output = method.update(load(method, tmp_path / "episodes", ids), iteration)
    assert output.new_model and method.phase == "final"
    policy = output.policy.policy
    assert not policy.K.any() and not policy.k.any()
    np.testing.assert_allclose(np.sqrt(np.diagonal(policy.cov[0])), 0.5 * run.env.action_scale)
    # no update yet: every exploratory episode is the dynamics prior's data
    assert [len(x) for x in method.final.seen_X] == [2 * EPISODES] and "kl" not in output.metrics
