"""The deep-spatial-autoencoder pipeline on ``point``: feature points follow the point, the feature-point
controller learns, the episode count is complete, resuming is exact, bad input is refused.

One short pipeline run (module fixture) is shared; the resume tests reuse its trained autoencoder.
"""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from solar_ros.algos import dsae_pipeline
from solar_ros.algos.common import policy_from_arrays, rollout
from solar_ros.algos.dsae_pipeline import DSAEPipelineConfig, FeatureState, feature_rollout, state_r2
from solar_ros.algos.lqr_state import LQRStateConfig
from solar_ros.envs import make
from solar_ros.models.checkpoint import load_checkpoint

# Small but complete: 20 exploration + 5 image + 25 final-controller episodes; a tiny autoencoder.
CFG = DSAEPipelineConfig(
    exploration=LQRStateConfig(iterations=4, rollouts_per_iteration=5, kl_step=5.0, dynamics_prior="global",
                               eval_episodes=1),
    image_rollouts=5, image_size=64, conv_channels=(16, 16, 8), dsae_steps=200, dsae_window=6, dsae_lr=3e-3,
    control_points=2, final_iterations=5, final_rollouts=5, final_kl_step=2.0, final_prior_strength=10.0,
    final_dynamics_prior="global", eval_episodes=5,
)
SEED = 0


@pytest.fixture(scope="module")
def single_thread():
    # Small convolutions run faster on one thread, above all when other processes share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory, single_thread):
    out = tmp_path_factory.mktemp("dsae_point")
    result = dsae_pipeline.train("point", seed=SEED, out=out, progress=False, config=CFG)
    return out, result


def _feature_state(out, result) -> FeatureState:
    ckpt = load_checkpoint(out / "checkpoints" / "dsae.pt")
    sel = result.config["selection"]
    return FeatureState(ckpt.model, np.array(sel["points"]), np.array(sel["robot_idx"]), 0.05)


def test_feature_points_follow_the_point(run):
    out, result = run
    fstate = _feature_state(out, result)
    assert len(fstate.points) >= 1 and fstate.robot_idx.size == 0  # the point has no joints
    # Fresh episodes with gentle random forces from the task's own initial states (the region the
    # autoencoder was trained on), never seen in training: each kept feature point must move with
    # the point (image x to the right = world x; image y down = -world y).
    env = make("point", image_obs=True, image_size=64, goal=result.goal)
    rng = np.random.default_rng(123)
    episodes = [rollout(env, lambda t, x, obs: rng.normal(0, 0.5, 2), seed=1000 + i, record_images=True)
                for i in range(6)]
    positions = np.concatenate([e.X[:, :2] for e in episodes])
    features = fstate.features(np.concatenate([e.images for e in episodes])).reshape(len(positions), -1, 2)
    for k in range(features.shape[1]):
        assert np.corrcoef(features[:, k, 0], positions[:, 0])[0, 1] > 0.95
        assert np.corrcoef(features[:, k, 1], positions[:, 1])[0, 1] < -0.95


def _learned_vs_standing_still(out, result, n=10):
    """Mean true cost of the final controller (camera only) and of no force at all, from the same
    initial states, and the controller's success rate (the task's criterion)."""
    fstate = _feature_state(out, result)
    with np.load(out / "checkpoints" / "final.npz") as saved:
        policy = policy_from_arrays("policy", saved)
    env = make("point", image_obs=True, image_size=64, goal=result.goal)
    goal = np.array(result.goal)
    learned = [feature_rollout(env, goal, fstate, policy, None, 500 + i)[0] for i in range(n)]
    still = [rollout(env, lambda t, x, obs: np.zeros(2), seed=500 + i) for i in range(n)]
    return (np.mean([e.costs.sum() for e in learned]), np.mean([e.costs.sum() for e in still]),
            np.mean([e.success for e in learned]))


def test_feature_controller_lowers_the_cost(run):
    out, result = run
    final_rows = [r for r in result.iterations if r["extra"]["stage"] == "final"]
    assert result.final_cost < final_rows[0]["mean_cost"]  # first row: the zero-gain initial policy
    assert final_rows[-1]["extra"]["feature_cost"] < 0.5 * final_rows[0]["extra"]["feature_cost"]
    # The initial policy's mean applies no force: compare from the same initial states.
    learned_cost, still_cost, success = _learned_vs_standing_still(out, result)
    assert learned_cost < 0.5 * still_cost
    assert success >= 0.7


def test_every_episode_is_counted_and_outputs_are_written(run):
    out, result = run
    assert result.method == "dsae" and result.task == "point"
    assert result.episodes == 20 + 5 + 25 and result.env_steps == 50 * result.episodes
    stages = [r["extra"]["stage"] for r in result.iterations]
    assert stages == ["explore"] * 4 + ["images"] + ["final"] * 5
    assert [r["episodes"] for r in result.iterations] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 50 and summary["eval_episodes"] == 5
    for name in ("learning_curve.png", "feature_points.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_online_feature_state_matches_the_batch_one(run):
    out, result = run
    fstate = _feature_state(out, result)
    env = make("point", image_obs=True, image_size=64, goal=result.goal)
    rng = np.random.default_rng(5)
    online = []

    def act(t, x, obs):
        online.append(fstate.step(t, x, obs["image"]))
        return rng.normal(0, 1.0, 2)

    episode = rollout(env, act, seed=77, record_images=True)
    batch = fstate.states(episode.X, episode.images)
    np.testing.assert_allclose(np.array(online), batch, rtol=0, atol=1e-12)
    k = len(fstate.points)
    np.testing.assert_allclose(batch[1:, 2 * k:], np.diff(batch[:, :2 * k], axis=0) / 0.05, atol=1e-12)
    assert np.all(batch[0, 2 * k:] == 0)


def test_resume_after_an_interruption_gives_the_same_run(run, tmp_path, monkeypatch):
    out, result = run
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints", resumed_dir / "checkpoints")
    (resumed_dir / "checkpoints" / "final.npz").unlink()
    real_rollout, calls = dsae_pipeline.feature_rollout, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 12:  # inside the third final-controller iteration
            raise KeyboardInterrupt
        return real_rollout(*args, **kwargs)

    monkeypatch.setattr(dsae_pipeline, "feature_rollout", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dsae_pipeline.train("point", seed=SEED, out=resumed_dir, progress=False, resume=True, config=CFG)
    monkeypatch.setattr(dsae_pipeline, "feature_rollout", real_rollout)
    dsae_mtime = (resumed_dir / "checkpoints" / "dsae.pt").stat().st_mtime_ns
    again = dsae_pipeline.train("point", seed=SEED, out=resumed_dir, progress=False, resume=True, config=CFG)
    assert (resumed_dir / "checkpoints" / "dsae.pt").stat().st_mtime_ns == dsae_mtime  # not retrained
    assert again.final_cost == result.final_cost and again.episodes == result.episodes
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]  # noqa: E731
    assert strip(again.iterations) == strip(result.iterations)


def test_ilqr_final_optimiser_reuses_the_autoencoder_and_learns(run, tmp_path):
    out, result = run
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    dsae_mtime = (tmp_path / "checkpoints" / "dsae.pt").stat().st_mtime_ns
    cfg = replace(CFG, optimizer="ilqr", final_iterations=3, eval_episodes=5)
    ilqr_run = dsae_pipeline.train("point", seed=SEED, out=tmp_path, progress=False, resume=True, config=cfg)
    assert (tmp_path / "checkpoints" / "dsae.pt").stat().st_mtime_ns == dsae_mtime
    final_rows = [r for r in ilqr_run.iterations if r["extra"]["stage"] == "final"]
    assert len(final_rows) == 3 and ilqr_run.episodes == 20 + 5 + 15
    assert ilqr_run.final_cost < final_rows[0]["mean_cost"]
    learned_cost, still_cost, _ = _learned_vs_standing_still(tmp_path, ilqr_run)
    assert learned_cost < 0.5 * still_cost


def test_state_r2_against_known_cases():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    affine = X @ rng.normal(size=(3, 2)) + 0.3  # exactly explained
    static = np.full((200, 2), 0.25)  # never moves
    unrelated = rng.normal(size=(200, 2))
    r2 = state_r2(np.hstack([affine, static, unrelated]), X)
    np.testing.assert_allclose(r2[:2], [1.0, 0.0], atol=1e-12)
    # Independent noise: the expected R^2 of 3 regressors (+ intercept) on 400 numbers is small.
    assert 0 <= r2[2] < 0.05
    with pytest.raises(ValueError, match="features"):
        state_r2(np.zeros((10, 3)), np.zeros((10, 2)))


@pytest.mark.parametrize("kwargs, message", [
    ({"control_points": 0}, "control_points"),
    ({"control_points": 5, "conv_channels": (8, 8, 4)}, "control_points"),
    ({"optimizer": "newton"}, "optimizer"),
    ({"final_rollouts": 0}, "final_rollouts"),
    ({"dsae_window": 2}, "dsae_window"),
    ({"image_size": 16}, "image_size"),
    ({"final_kl_step": float("nan")}, "final_kl_step"),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DSAEPipelineConfig(**kwargs)


def test_bad_run_arguments_are_clear_errors(run, tmp_path):
    out, _ = run
    with pytest.raises(ValueError, match="too small"):
        dsae_pipeline.train("point", seed=SEED, episodes=10, progress=False, config=CFG)
    with pytest.raises(ValueError, match="needs the output directory"):
        dsae_pipeline.train("point", seed=SEED, resume=True, progress=False, config=CFG)
    with pytest.raises(ValueError, match="arena"):
        dsae_pipeline.train("point", seed=SEED, goal=[3.0, 0.0], progress=False, config=CFG)
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(ValueError, match="another run"):
        dsae_pipeline.train("point", seed=SEED + 1, out=tmp_path, resume=True, progress=False, config=CFG)
