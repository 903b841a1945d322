"""ROS-free logic behind the encoder, model fitting and trainer nodes: the joint-space task cost
(against the task's own cost and finite differences), training arrays from recorded episodes (and
their errors), the trainer's bookkeeping, and the latent encoders."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from solar_ros.algos.common import RunResult
from solar_ros.models import VAE, DeepSpatialAutoencoder, DSAEConfig, VAEConfig, save_checkpoint
from solar_ros.runtime.episode_store import EpisodeRecording
from solar_ros.runtime.fitting import FitError, JointSpaceTaskCost, load_training_data, make_task
from solar_ros.runtime.latent_encoder import LatencyRing, file_model_id, load_encoder
from solar_ros.runtime.training_run import NodeRun, episode_result, episode_seeds

GOAL = [0.6, 0.1, 0.1]


@pytest.fixture(scope="module")
def arm():
    env = make_task("sawyer_reach", GOAL)
    return env, JointSpaceTaskCost(env, env.cost_model())


def joint_trajectory(env, T: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.concatenate([env.neutral_pose + 0.2 * rng.standard_normal((T, 7)), 0.5 * rng.standard_normal((T, 7))], 1)
    return X, rng.standard_normal((T, 7))


def test_joint_space_cost_is_the_tasks_cost_with_chain_rule_derivatives(arm):
    env, cost = arm
    X, U = joint_trajectory(env, 6, 0)
    e = cost.eval(X, U)
    # value: the task's cost model on the simulator's full state at those joints
    S = np.stack([env.set_joint_state(x[:7], x[7:]) for x in X])
    np.testing.assert_allclose(e.l, env.cost_model().eval(S, U).l, rtol=1e-12)
    np.testing.assert_allclose(S[:, list(env.ee_pos_idx)], np.stack([cost.full_state(x)[14:17] for x in X]))
    # gradients: central finite differences of the value
    h = 1e-5
    for i in range(14):
        d = np.zeros(14)
        d[i] = h
        fd = (cost.eval(X + d, U).l - cost.eval(X - d, U).l) / (2 * h)
        np.testing.assert_allclose(e.lx[:, i], fd, rtol=1e-5, atol=1e-7)
    for i in range(7):
        d = np.zeros(7)
        d[i] = h
        fd = (cost.eval(X, U + d).l - cost.eval(X, U - d).l) / (2 * h)
        np.testing.assert_allclose(e.lu[:, i], fd, rtol=1e-6, atol=1e-9)
    # Gauss-Newton Hessian: symmetric positive semi-definite, as LQR-FLM needs
    assert np.allclose(e.lxx, np.swapaxes(e.lxx, 1, 2))
    assert np.linalg.eigvalsh(e.lxx).min() > -1e-9
    np.testing.assert_allclose(e.luu, env.cost_model().eval(S, U).luu)


def test_joint_space_cost_rejects_bad_states(arm):
    _env, cost = arm
    with pytest.raises(ValueError, match=r"shape \(T, 14\)"):
        cost.eval(np.zeros((3, 20)), np.zeros((3, 7)))
    with pytest.raises(ValueError, match="NaN"):
        cost.eval(np.full((3, 14), np.nan), np.zeros((3, 7)))


def record(root, episode_id, T=5, status="complete", policy_id="p0", costs=True, nan_at=None, steps=None):
    rec = EpisodeRecording(root, episode_id, {"policy_id": policy_id}, write_mcap=False)
    rng = np.random.default_rng(len(episode_id))
    for t in range(steps if steps is not None else T):
        stamp = (t + 1) * 1000
        state = rng.standard_normal(14)
        if nan_at == t:
            state[0] = np.nan
        rec.buffers.steps.append(SimpleNamespace(time_index=t, start_ns=stamp, source_ns=stamp, state=state,
                                                 action=rng.standard_normal(7), noise=np.zeros(7), commands=3,
                                                 clipped=False))
        if costs:
            rec.buffers.costs.add(stamp, float(t), 0.5 - 0.1 * t)
        rec.buffers.images.add(stamp, np.full((8, 8, 3), t, np.uint8))
    return rec.finalize(status)


def test_training_data_from_recorded_episodes(tmp_path):
    for i in range(3):
        record(tmp_path, f"e{i}")
    record(tmp_path, "aborted", status="aborted")
    data = load_training_data(tmp_path, require=("states", "actions", "costs", "images"))
    assert data.episode_ids == ["e0", "e1", "e2"] and data.policy_ids == ["p0"] * 3
    assert data.states.shape == (3, 5, 14) and data.actions.shape == (3, 5, 7) and data.costs.shape == (3, 5)
    assert data.images.shape == (3, 5, 8, 8, 3) and data.images.dtype == np.uint8
    np.testing.assert_allclose(data.costs[1], np.arange(5.0))
    np.testing.assert_allclose(data.distances[0, -1], 0.1)
    subset = load_training_data(tmp_path, ["e2", "e0"])
    assert subset.episode_ids == ["e2", "e0"]


def test_training_data_errors_name_the_episode_and_the_problem(tmp_path):
    with pytest.raises(FitError, match="does not exist"):
        load_training_data(tmp_path / "nowhere")
    with pytest.raises(FitError, match="no complete episodes"):
        load_training_data(tmp_path)
    record(tmp_path, "good")
    record(tmp_path, "stopped-early", status="stopped")
    record(tmp_path, "costless", costs=False)
    record(tmp_path, "nan", nan_at=2)
    record(tmp_path, "short", steps=3)
    with pytest.raises(FitError, match=r"not in .*index.jsonl"):
        load_training_data(tmp_path, ["good", "ghost"])
    with pytest.raises(FitError, match="did not complete.*stopped-early"):
        load_training_data(tmp_path, ["good", "stopped-early"])
    with pytest.raises(FitError, match=r"'costless' has no \['costs'\]"):
        load_training_data(tmp_path, ["good", "costless"])
    with pytest.raises(FitError, match="'states' of episode 'nan' has NaN/Inf at step 2"):
        load_training_data(tmp_path, ["good", "nan"])
    with pytest.raises(FitError, match="'short' has 3 steps, expected 5"):
        load_training_data(tmp_path, ["good", "short"])
    (tmp_path / "good" / "episode.npz").write_bytes(b"garbage")
    with pytest.raises(FitError, match="'good'.*cannot read"):
        load_training_data(tmp_path, ["good"])


def test_episode_seeds_are_reproducible_and_distinct():
    seeds = [episode_seeds(0, it, j, evaluation) for evaluation in (False, True) for it in range(5) for j in range(10)]
    flat = {s for pair in seeds for s in pair}
    assert len(set(seeds)) == 60 and len(flat) == 120 and all(0 <= s < 2**31 for s in flat)  # eval: no iteration
    assert episode_seeds(7, 1, 2) == episode_seeds(7, 1, 2) != episode_seeds(8, 1, 2)
    with pytest.raises(ValueError):
        episode_seeds(-1, 0, 0)


def test_node_run_summary_has_the_keys_of_solar_ros_train(tmp_path):
    arrays = lambda c, d: {"costs": np.array(c, float), "distances": np.array(d, float)}  # noqa: E731
    r = episode_result("a", arrays([1.0, 2.0, 3.0], [0.3, 0.2, 0.04]), success_threshold=0.05)
    assert (r.total_cost, r.final_distance, r.success, r.steps) == (6.0, 0.04, True, 3)
    with pytest.raises(ValueError, match="no 'distances'"):
        episode_result("b", {"costs": np.ones(3)}, 0.05)
    # the task's own criterion where the episode recorded it (a fallen mug near the coaster, a block out of its box)
    judged = {**arrays([1.0, 1.0], [0.3, 0.04]), "successes": np.array([False, False])}
    assert not episode_result("c", judged, success_threshold=0.05).success
    judged["successes"] = np.array([False, True])
    assert episode_result("c", {**judged, "distances": np.array([0.3, 0.2])}, success_threshold=0.05).success
    run = NodeRun("sawyer_reach", "lqr_joints", 0, GOAL, 3, 0.05)
    run.add_iteration([episode_result("i0", arrays([4, 4, 4], [0.3] * 3), 0.05)] * 2, {"kl": 1.0})
    run.add_iteration([r, episode_result("i1", arrays([2, 2, 2], [0.1] * 3), 0.05)])
    run.evaluation = [r]
    result, table = run.write(tmp_path, 12.0, [5.0, 10.0])
    assert {f.name for f in dataclasses.fields(RunResult)} == set(dataclasses.asdict(result))
    assert (result.episodes, result.env_steps, result.final_cost, result.success_rate) == (4, 12, 6.0, 1.0)
    rows = result.iterations
    assert [row["episodes"] for row in rows] == [2, 4] and rows[0]["mean_cost"] == 12.0 and rows[1]["mean_cost"] == 6.0
    assert rows[1]["success_rate"] == 0.5 and rows[0]["extra"] == {"kl": 1.0}
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "learning_curve.png").is_file()
    assert "mean_cost" in table


def test_latent_encoders_vae_and_dsae(tmp_path):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=16, latent_dim=4, encoder_hidden=16, decoder_hidden=64)).eval()
    save_checkpoint(tmp_path / "vae.pt", vae)
    enc = load_encoder(tmp_path / "vae.pt")
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = enc.encode(img)
    mean, var = vae.encode(img)
    np.testing.assert_allclose(out.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(out.covariance, np.diag(var), rtol=1e-6)
    assert enc.model_id == file_model_id(tmp_path / "vae.pt", "vae") and enc.model_id.startswith("vae-")
    with pytest.raises(ValueError, match="reads 16x16x3"):
        enc.check_image(np.zeros((8, 8, 3), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="reads rgb8"):
        enc.check_image(np.zeros((16, 16, 1), np.uint8), "mono8")

    dsae = DeepSpatialAutoencoder(DSAEConfig(image_size=32, conv_channels=(8, 8, 3))).eval()
    save_checkpoint(tmp_path / "dsae.pt", dsae, extra={"model_id": "fp"})
    enc = load_encoder(tmp_path / "dsae.pt", point_variance=0.01)
    img = np.zeros((32, 32, 3), np.uint8)
    out = enc.encode(img)
    assert enc.model_id == "fp" and out.mean.shape == (6,)
    np.testing.assert_allclose(out.covariance, 0.01 * np.eye(6))
    drawn = enc.feature_points_image(img, out, scale=4)
    assert drawn.shape == (128, 128, 3)
    # each point is drawn where feature_points_to_pixels puts it (upscaled 4x), on the black image
    col, row = ((out.mean.reshape(-1, 2) + 1.0) * 32 / 2.0 - 0.5)[0]
    assert drawn[int(round((row + 0.5) * 4 - 0.5)), int(round((col + 0.5) * 4 - 0.5))].max() > 0
    recon, encoding = enc.reconstruction(img, out)
    assert recon.shape == (8, 8, 1) and encoding == "mono8"


def test_latency_ring_percentiles():
    ring = LatencyRing(size=4)
    assert np.all(np.isnan(ring.percentiles_ms()))
    for ms in (1, 2, 3, 4, 100, 100):  # the ring keeps the newest 4
        ring.add(ms * 1_000_000)
    np.testing.assert_allclose(ring.percentiles_ms((0, 100)), [3.0, 100.0])
