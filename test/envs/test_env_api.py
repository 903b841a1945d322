"""API conformance of every task: spaces, shapes, truncation, costs vs rewards, seeding, goals, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from solar_ros.envs import TASKS, make

TASK_NAMES = sorted(TASKS)
ENV_NAMES = [n for n in TASK_NAMES if next(m for m in TASK_NAMES if TASKS[m] is TASKS[n]) == n]
"""One name per environment class (an alias of the same class, e.g. sawyer_stack_0, is not tested twice)."""
EXPECTED = {  # (state_dim, action_dim, image shape, horizon, success threshold)
    "point": (4, 2, (32, 32, 3), 50, 0.1),
    "car": (5, 2, (32, 32, 3), 50, 0.15),
    "reacher": (8, 2, (64, 64, 3), 50, 0.05),
    "reacher_paper": (8, 2, (64, 64, 3), 50, 0.05),
    "sawyer_reach": (20, 7, (64, 64, 3), 50, 0.05),
    "sawyer_stack": (32, 7, (64, 64, 3), 50, 0.01),
    "sawyer_stack_1": (32, 7, (64, 64, 3), 50, 0.01),
    "sawyer_stack_2": (32, 7, (64, 64, 3), 50, 0.01),
    "sawyer_push": (26, 7, (64, 64, 3), 50, 0.03),
}
GOAL_COLOR_CHANNEL = {  # red, red, green markers; the stacking goal is shown by the blue base block under it,
    # the pushing goal by the green coaster
    "point": 0, "car": 0, "reacher": 0, "reacher_paper": 0, "sawyer_reach": 1,
    "sawyer_stack": 2, "sawyer_stack_1": 2, "sawyer_stack_2": 2, "sawyer_push": 1,
}
FIXED_GOAL = {"car", "reacher_paper", "sawyer_stack", "sawyer_stack_1", "sawyer_stack_2", "sawyer_push"}
"""Tasks whose default goal is fixed (nothing random is drawn for it)."""
FIXED_START = {"reacher_paper"}
"""Tasks whose initial state does not depend on the seed."""
STACKED_HEIGHT = {"sawyer_stack", "sawyer_stack_1", "sawyer_stack_2", "sawyer_push"}
"""Tasks whose goals must keep the default goal's height (a stacked pose: 3 block points, moved alike; a mug
standing on the table: its centre)."""


def _moved(goal: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """A goal of a STACKED_HEIGHT task moved horizontally: each of its points (3 numbers) by (dx, dy)."""
    return goal + np.tile([dx, dy, 0.0], len(goal) // 3)


def _name(env) -> str:
    return next(n for n, cls in TASKS.items() if type(env) is cls)


def _random_actions(env, seed: int, n: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n or env.horizon, env.action_dim)) * env.action_scale


def _rollout(env, seed: int, actions: np.ndarray):
    obs, info = env.reset(seed=seed)
    states, images, costs, rewards, infos, applied = [obs["state"]], [obs.get("image")], [], [], [], []
    for u in actions:
        obs, reward, terminated, truncated, info = env.step(u)
        states.append(obs["state"])
        images.append(obs.get("image"))
        costs.append(info["cost"])
        rewards.append(reward)
        infos.append(info)
        applied.append(info["action"])
    return np.array(states), images, np.array(costs), np.array(rewards), infos, np.array(applied)


@pytest.fixture(scope="module", params=ENV_NAMES)
def env(request):
    e = make(request.param)
    yield e
    e.close()


def test_make_rejects_unknown_task_listing_valid_names():
    with pytest.raises(ValueError) as err:
        make("pendulum")
    for name in TASK_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize("image_obs", [True, False])
def test_gymnasium_env_checker_passes(env, image_obs):
    name = _name(env)
    checked = make(name, image_obs=image_obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # advice only (unbounded state box, non-normalised torque ranges)
        check_env(checked)
    checked.close()


def test_spaces_and_attributes(env):
    name = _name(env)
    dx, du, image_shape, horizon, threshold = EXPECTED[name]
    assert (env.state_dim, env.action_dim, env.horizon, env.success_threshold) == (dx, du, horizon, threshold)
    assert len(env.state_names) == dx and env.dt == pytest.approx(0.05)
    assert isinstance(env.action_space, spaces.Box) and env.action_space.shape == (du,)
    assert np.all(env.action_space.low < 0) and np.all(env.action_space.high > 0)
    assert env.action_scale.shape == (du,) and np.all(env.action_scale <= env.action_space.high)
    assert isinstance(env.observation_space, spaces.Dict)
    assert env.observation_space["image"].shape == image_shape
    assert env.observation_space["image"].dtype == np.uint8
    assert env.observation_space["state"].shape == (dx,) and env.observation_space["state"].dtype == np.float64
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == image_shape
    assert obs["state"].dtype == np.float64 and obs["state"].shape == (dx,)
    assert set(info) >= {"distance", "success", "goal"}
    assert np.array_equal(info["goal"], env.goal) and env.goal.shape == (env.goal_dim,)


def test_episode_truncates_at_horizon_and_reward_is_minus_cost(env):
    actions = _random_actions(env, seed=1)
    states, images, costs, rewards, infos, applied = _rollout(env, seed=5, actions=actions)
    # Truncation exactly at step T, never termination; stepping on is an error.
    env.reset(seed=5)
    flags = [env.step(u)[2:4] for u in actions]
    assert all(not term for term, _ in flags)
    assert [trunc for _, trunc in flags] == [False] * (env.horizon - 1) + [True]
    with pytest.raises(RuntimeError):
        env.step(actions[0])
    assert np.array_equal(rewards, -costs)
    for info in infos:
        assert set(info) >= {"cost", "distance", "success", "action"}
        assert info["success"] == (info["distance"] < env.success_threshold)
    # info["cost"] is the cost model on (x_t before the action, applied u_t): the learner's cost is identical.
    X, U = states[:-1], applied
    expected = env.cost_model().eval(X, U).l
    np.testing.assert_allclose(costs, expected, rtol=1e-12, atol=0)
    # info["distance"] refers to the state after the step.
    np.testing.assert_allclose([i["distance"] for i in infos],
                               np.linalg.norm(states[1:, list(env.ee_pos_idx)] - env.goal, axis=1), rtol=1e-12)
    for image in images:
        assert env.observation_space["image"].contains(image)


def test_cost_model_terms(env):
    env.reset(seed=2)
    model = env.cost_model()
    dist_term, action_term = model.terms
    assert list(dist_term.idx) == list(env.ee_pos_idx)
    np.testing.assert_array_equal(dist_term.target, env.goal)
    np.testing.assert_allclose(action_term.weights, env.cost_action / env.action_scale**2)
    # A fresh copy: changing it leaves the env's own cost alone.
    model.terms[0].target[:] = 123.0
    assert not np.any(env.cost_model().terms[0].target == 123.0)
    goal = env.goal * 0.5
    if _name(env) in STACKED_HEIGHT:
        goal = _moved(env.goal, -0.05, 0.05)
    other = env.cost_model(goal=goal)
    np.testing.assert_allclose(other.terms[0].target, goal)


def test_same_seed_same_episode_different_seed_differs(env):
    name = _name(env)
    actions = _random_actions(env, seed=7, n=10)
    twin = make(name)
    try:
        a = _rollout(env, seed=11, actions=actions)
        b = _rollout(twin, seed=11, actions=actions)
        c = _rollout(env, seed=12, actions=actions)
    finally:
        twin.close()
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2])
    assert all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))
    if name in FIXED_START:  # the seed changes nothing
        assert np.array_equal(a[0], c[0]) and all(np.array_equal(x, y) for x, y in zip(a[1], c[1]))
        return
    assert not np.allclose(a[0], c[0])
    assert not all(np.array_equal(x, y) for x, y in zip(a[1], c[1]))


def test_goal_from_options_and_constructor(env):
    name = _name(env)
    env.reset(seed=0)
    random_goal = env.goal.copy()
    goal = random_goal * 0.9 + 0.01
    if name in STACKED_HEIGHT:
        goal = _moved(random_goal, -0.05, 0.04)
    _, info = env.reset(seed=0, options={"goal": goal})
    np.testing.assert_array_equal(env.goal, goal)
    np.testing.assert_array_equal(info["goal"], goal)
    np.testing.assert_array_equal(env.cost_model().terms[0].target, goal)
    # The option lasts one episode; the same seed gives the same random goal again.
    env.reset(seed=0)
    np.testing.assert_array_equal(env.goal, random_goal)
    fixed = make(name, goal=goal, image_obs=False)
    for seed in (1, 2):
        fixed.reset(seed=seed)
        np.testing.assert_array_equal(fixed.goal, goal)
    fixed.close()


def test_random_goals_lie_in_the_documented_region(env):
    name = _name(env)
    goals = []
    for seed in range(40):
        env.reset(seed=seed)
        goals.append(env.goal)
    goals = np.array(goals)
    if name in FIXED_GOAL:
        assert np.all(goals == goals[0])
        expected = {"reacher_paper": getattr(env, "paper_goal", None), "car": getattr(env, "target", None),
                    "sawyer_push": getattr(env, "push_goal", None)}.get(name, getattr(env, "stacked_goal", None))
        np.testing.assert_array_equal(goals[0], expected)
        return
    assert len(np.unique(goals[:, 0])) == len(goals)
    if name == "point":
        assert np.all(np.abs(goals) <= env.goal_region)
    elif name == "reacher":
        r = np.linalg.norm(goals, axis=1)
        assert np.all((r >= env.goal_r_range[0]) & (r <= env.goal_r_range[1]))
    else:
        assert np.all((goals >= env.goal_low) & (goals <= env.goal_high))


@pytest.mark.parametrize("bad", [
    "nan", "inf", "short", "long", "matrix", "text",
])
def test_bad_actions_are_rejected(env, bad):
    env.reset(seed=0)
    du = env.action_dim
    action = {
        "nan": np.full(du, np.nan),
        "inf": np.r_[np.inf, np.zeros(du - 1)],
        "short": np.zeros(du - 1),
        "long": np.zeros(du + 1),
        "matrix": np.zeros((1, du)),
        "text": ["a"] * du,
    }[bad]
    with pytest.raises(ValueError):
        env.step(action)
    assert env.t == 0  # nothing happened


def test_actions_are_clipped_to_the_limits(env):
    env.reset(seed=0)
    big = env.action_space.high * 10.0
    _, _, _, _, info = env.step(list(big))  # a plain list is accepted
    np.testing.assert_array_equal(info["action"], env.action_space.high)


def test_bad_goals_and_calls_are_rejected(env):
    name = _name(env)
    fresh = make(name, image_obs=False)
    with pytest.raises(RuntimeError):
        fresh.step(np.zeros(fresh.action_dim))
    with pytest.raises(RuntimeError):
        fresh.cost_model()
    fresh.close()
    with pytest.raises(ValueError):
        env.reset(options={"goal": np.zeros(env.goal_dim + 1)})
    with pytest.raises(ValueError):
        env.reset(options={"goal": np.full(env.goal_dim, np.nan)})
    with pytest.raises(ValueError):
        env.reset(options={"goal": np.full(env.goal_dim, 5.0)})  # out of reach for every task
    with pytest.raises(ValueError):
        env.reset(options={"target": np.zeros(env.goal_dim)})
    with pytest.raises(ValueError):
        make(name, goal=np.full(env.goal_dim, 5.0))


def test_state_only_mode_omits_images_consistently(env):
    name = _name(env)
    actions = _random_actions(env, seed=4, n=5)
    fast = make(name, image_obs=False)
    obs, _ = fast.reset(seed=9)
    assert "image" not in obs and "image" not in fast.observation_space.spaces
    assert fast.observation_space.contains(obs)
    states_fast = _rollout(fast, seed=9, actions=actions)[0]
    states_img = _rollout(env, seed=9, actions=actions)[0]
    np.testing.assert_array_equal(states_fast, states_img)  # rendering does not change the physics
    assert fast.render().shape == env.observation_space["image"].shape  # render() still works on demand
    fast.close()


def test_images_show_the_goal(env):
    """The goal-coloured pixels move with the goal (and the image is not blank)."""
    name = _name(env)
    channel = GOAL_COLOR_CHANNEL[name]
    env.reset(seed=0)
    g0 = env.goal.copy()
    g1 = g0.copy()
    g1[0] += -0.3 if name in ("point", "car") else -0.08  # move the goal along x (towards the robot / left)
    if name in STACKED_HEIGHT:
        g1[3::3] += -0.08  # a stacked pose: its other block points move with the centre
    centroids = []
    for g in (g0, g1):
        obs, _ = env.reset(seed=0, options={"goal": g})
        img = obs["image"].astype(int)
        assert img.std() > 5
        others = [c for c in range(3) if c != channel]
        mask = (img[..., channel] > 150) & np.all(img[..., others] < 90, axis=-1)
        assert mask.sum() >= 2, f"{name}: goal marker not visible"
        rows, cols = np.nonzero(mask)
        centroids.append(np.array([rows.mean(), cols.mean()]))
    assert np.linalg.norm(centroids[1] - centroids[0]) > 1.0


WIDE_START = {"car", "reacher", "reacher_paper", "sawyer_reach", "sawyer_stack", "sawyer_stack_1", "sawyer_stack_2",
              "sawyer_push"}


def test_wide_start_spreads_the_initial_state_seeded_and_keeps_the_goal(env):
    name = _name(env)
    if name not in WIDE_START:
        with pytest.raises(ValueError, match="no wide start"):
            env.reset(seed=0, options={"wide_start": True})
        return
    own = np.array([env.reset(seed=s)[0]["state"] for s in range(6)])
    goals = [env.reset(seed=s)[1]["goal"] for s in range(6)]
    wide = np.array([env.reset(seed=s, options={"wide_start": True})[0]["state"] for s in range(6)])
    for s in range(6):  # the goal is drawn as without the option; the same seed gives the same wide start
        _, info = env.reset(seed=s, options={"wide_start": True})
        np.testing.assert_array_equal(info["goal"], goals[s])
        np.testing.assert_array_equal(env.reset(seed=s, options={"wide_start": True})[0]["state"], wide[s])
    if name.startswith("reacher"):
        assert wide[:, :2].std(0).min() > 5 * own[:, :2].std(0).max() + 0.1
        np.testing.assert_array_equal(wide[:, 2], 0.0)  # at rest
    elif name == "car":  # anywhere, any heading, at rest with the wheels straight
        assert wide[:, :3].std(0).min() > 5 * own[:, :3].std(0).max()
        np.testing.assert_array_equal(wide[:, 3:], 0.0)
    elif name == "sawyer_push":  # the mug anywhere between its start and the goal (own start: within 5 mm), at rest
        mug_distance = np.linalg.norm(wide[:, 14:16] - env.goal[:2], axis=1)
        own_distance = np.linalg.norm(own[:, 14:16] - env.goal[:2], axis=1)
        assert mug_distance.std() > max(0.02, 3 * own_distance.std())
        np.testing.assert_allclose(wide[:, 16], env.goal[2])  # standing on the table
        np.testing.assert_array_equal(wide[:, 7:14], 0.0)
    else:  # the hand (or the held block) anywhere in the goal box (the own start: within a few cm), at rest
        hand = list(env.ee_pos_idx)
        assert wide[:, hand].std(0).min() > max(0.05, 3 * own[:, hand].std(0).max())
        np.testing.assert_array_equal(wide[:, 7:14], 0.0)
