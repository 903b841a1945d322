"""PPO baseline: the image-only task wrapper (reward = -cost, frames, action mapping), a tiny run end to
end, exact resume, the budget search, and clear errors."""
import json

import numpy as np
import pytest
import torch

from solar_ros.algos import ppo
from solar_ros.algos.ppo import ImageTaskEnv, PPOConfig
from solar_ros.envs import make

TINY = PPOConfig(episodes_per_update=2, batch_size=50, n_epochs=2, checkpoint_every=2, eval_episodes=3,
                 features_dim=16)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_wrapper_reward_is_minus_the_task_cost_and_frames_stack():
    env = ImageTaskEnv("point", goal=[0.3, -0.2], frame_stack=2)
    reference = make("point", image_obs=True, goal=[0.3, -0.2])  # the same task, driven directly
    assert env.observation_space.shape == (32, 32, 6) and env.observation_space.dtype == np.uint8
    assert env.action_space.shape == (2,)
    obs, _ = env.reset(seed=4)
    ref_obs, _ = reference.reset(seed=4)
    np.testing.assert_array_equal(obs[..., :3], ref_obs["image"])  # at reset every slot holds the first image
    np.testing.assert_array_equal(obs[..., 3:], ref_obs["image"])
    cost_model = reference.cost_model()
    rng = np.random.default_rng(0)
    total = 0.0
    for t in range(env.horizon):
        a = rng.uniform(-1.2, 1.2, size=2)  # beyond [-1, 1] on purpose: clipped like the policy's
        u = np.clip(a, -1, 1) * 3.0  # point: limits +-3 N, symmetric
        np.testing.assert_allclose(env.task_action(a), u)
        x = reference.state
        previous_image = obs[..., 3:]
        obs, reward, terminated, truncated, info = env.step(a)
        ref_obs, _, _, _, ref_info = reference.step(u)
        # reward is exactly -cost, and the cost is the task's cost model at (state before, applied action)
        assert reward == -info["cost"]
        assert info["cost"] == pytest.approx(ref_info["cost"], rel=1e-12)
        np.testing.assert_allclose(info["cost"], cost_model.eval(x[None], u[None]).l[0], rtol=1e-12)
        np.testing.assert_allclose(env.task_env.state, reference.state, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(obs[..., 3:], env.task_env.render())  # newest image last
        np.testing.assert_array_equal(obs[..., :3], previous_image)
        total += info["cost"]
        assert not terminated and truncated == (t == env.horizon - 1)
    assert len(env.episode_log) == 1
    record = env.episode_log[0]
    assert record["cost"] == pytest.approx(total)
    assert record["final_distance"] == pytest.approx(ref_info["distance"])
    assert record["success"] == ref_info["success"]
    larger = ImageTaskEnv("point", goal=[0.3, -0.2], frame_stack=3, image_size=64)
    assert larger.observation_space.shape == (64, 64, 9) and larger.reset(seed=0)[0].shape == (64, 64, 9)


def test_tiny_run_end_to_end(tmp_path):
    result = ppo.train("point", seed=0, out=tmp_path, episodes=4, progress=False, config=TINY)
    assert result.method == "ppo" and result.episodes == 4 and result.env_steps == 4 * 50
    assert len(result.iterations) == 2 and [r["episodes"] for r in result.iterations] == [2, 4]
    assert np.isfinite(result.final_cost) and 0.0 <= result.success_rate <= 1.0
    assert result.eval_episodes == 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["method"] == "ppo" and summary["episodes"] == 4
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "checkpoints").glob("ppo_*.zip"))) == 1  # older checkpoints are removed


def test_budget_rounds_up_to_whole_updates():
    result = ppo.train("point", seed=1, episodes=3, progress=False, config=TINY)
    assert result.episodes == 4 and result.env_steps == 200


def test_resume_continues_exactly(tmp_path):
    whole = ppo.train("point", seed=2, out=tmp_path / "whole", episodes=6, progress=False, config=TINY)
    ppo.train("point", seed=2, out=tmp_path / "split", episodes=4, progress=False, config=TINY)
    resumed = ppo.train("point", seed=2, out=tmp_path / "split", episodes=6, progress=False, config=TINY,
                        resume=True)
    assert resumed.episodes == 6
    assert resumed.final_cost == whole.final_cost
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]  # noqa: E731
    assert strip(resumed.iterations) == strip(whole.iterations)
    with pytest.raises(ValueError, match="other settings"):
        ppo.train("point", seed=3, out=tmp_path / "split", episodes=8, progress=False, config=TINY, resume=True)


def test_budget_search_returns_the_first_budget_that_reaches_the_target(monkeypatch):
    # The search logic with scripted evaluation results (training runs for real, briefly).
    scripted = iter([0.0, 0.5, 0.9, 1.0])
    monkeypatch.setattr(ppo._PPORun, "evaluate",
                        lambda self, n=None: {"mean_cost": 1.0, "final_distance": 0.1, "success_rate": next(scripted)})
    found = ppo.episodes_to_success("point", seed=0, target_success=0.8, eval_every=2, max_episodes=20, config=TINY)
    assert found.episodes == 6
    assert [e["episodes"] for e in found.evaluations] == [2, 4, 6]
    scripted = iter([0.0, 0.1])
    missed = ppo.episodes_to_success("point", seed=0, target_success=0.8, eval_every=2, max_episodes=4, config=TINY)
    assert missed.episodes is None and len(missed.evaluations) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"gamma": 1.5}, "gamma"),
    ({"episodes_per_update": 0}, "episodes_per_update"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"ent_coef": -1.0}, "ent_coef"),
    ({"image_size": 4}, "image_size"),
    ({"torch_threads": 0}, "torch_threads"),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**kwargs)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="episodes"):
        ppo.train("point", seed=0, episodes=0, progress=False, config=TINY)
    with pytest.raises(ValueError, match="needs the output directory"):
        ppo.train("point", seed=0, episodes=2, resume=True, progress=False, config=TINY)
    with pytest.raises(ValueError, match="unknown task"):
        ppo.train("nope", seed=0, episodes=2, progress=False, config=TINY)
    with pytest.raises(ValueError, match="arena"):
        ppo.train("point", seed=0, episodes=2, goal=[2.0, 0.0], progress=False, config=TINY)
    with pytest.raises(ValueError, match="target_success"):
        ppo.episodes_to_success("point", seed=0, target_success=0.0, config=TINY)
    with pytest.raises(ValueError, match="frame_stack"):
        ImageTaskEnv("point", goal=None, frame_stack=0)


def _drive_to_goal(env: ImageTaskEnv) -> tuple[list[float], list[bool]]:
    """One episode of a PD controller onto the point's goal (actions in [-1, 1] = +-3 N): rewards, successes."""
    env.reset(seed=1)
    rewards, successes = [], []
    for _ in range(env.horizon):
        x = env.task_env.state
        a = np.clip((8.0 * (np.array([0.3, -0.2]) - x[:2]) - 4.0 * x[2:4]) / 3.0, -1, 1)
        _, reward, _, _, info = env.step(a)
        rewards.append(reward)
        successes.append(info["success"])
    return rewards, successes


@pytest.mark.parametrize("delay", [0, 3])
def test_sparse_labels_reward_one_press_after_the_task_first_succeeds(delay):
    """reward='labels': 1 at the scripted person's press (``label_delay`` steps after the success criterion first
    holds, as SOLAR's scripted person presses), 0 elsewhere; a missed episode gets nothing; costs still logged."""
    from solar_ros.algos.solar import scripted_labels
    env = ImageTaskEnv("point", goal=[0.3, -0.2], frame_stack=1, reward="labels", label_delay=delay)
    rewards, successes = _drive_to_goal(env)
    assert any(successes) and sum(rewards) == 1.0
    expected = scripted_labels(np.array([successes]), delay, 0.0, [np.random.default_rng(0)])[0]
    np.testing.assert_array_equal(rewards, expected)
    assert env.episode_log[-1]["cost"] > 0
    missed = ImageTaskEnv("point", goal=[0.3, -0.2], frame_stack=1, reward="labels", label_miss_rate=0.999)
    rewards, successes = _drive_to_goal(missed)
    assert any(successes) and sum(rewards) == 0.0
    with pytest.raises(ValueError, match="reward must be one of"):
        PPOConfig(reward="sparse")
    with pytest.raises(ValueError, match="label_miss_rate"):
        ImageTaskEnv("point", goal=None, reward="labels", label_miss_rate=1.0)
