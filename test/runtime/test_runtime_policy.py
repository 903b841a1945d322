"""Policy message (de)serialisation and the controller's policy executor, against direct computations."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from solar_ros.core.noise import standard_normal_sequence
from solar_ros.core.types import LinearGaussianPolicy
from solar_ros.runtime.policy_executor import WAITING, PolicyExecutor
from solar_ros.runtime.policy_msg import PolicyPackage, policy_from_msg, policy_to_msg

RNG = np.random.default_rng(1)
LIMITS = np.array([80, 80, 40, 40, 9, 9, 9.0])
MS = 1_000_000


def random_policy(T=4, du=7, dx=5, scale=1.0):
    A = RNG.standard_normal((T, du, du))
    cov = A @ np.swapaxes(A, 1, 2) * 0.1 + np.eye(du) * 0.01
    return LinearGaussianPolicy(RNG.standard_normal((T, du, dx)) * scale, RNG.standard_normal((T, du)) * scale, cov)


def package(policy=None, policy_id="p", dt=0.05, state_source="latent"):
    return PolicyPackage(policy if policy is not None else random_policy(), policy_id, dt, state_source, iteration=3,
                         model_id="m")


def test_policy_message_round_trip_and_layout():
    pkg = package()
    msg = policy_to_msg(pkg, SimpleNamespace())
    T, du, dx = pkg.policy.K.shape
    # Row-major, stacked over time: gain[t*du*dx + i*dx + j] = K[t, i, j].
    t, i, j = 2, 5, 3
    assert msg.gain[t * du * dx + i * dx + j] == pkg.policy.K[t, i, j]
    assert msg.covariance[t * du * du + i * du + 1] == pkg.policy.cov[t, i, 1]
    back = policy_from_msg(msg)
    np.testing.assert_array_equal(back.policy.K, pkg.policy.K)
    np.testing.assert_array_equal(back.policy.k, pkg.policy.k)
    np.testing.assert_allclose(back.policy.cov, pkg.policy.cov, rtol=0, atol=1e-15)
    assert (back.policy_id, back.dt, back.state_source, back.iteration, back.model_id) == ("p", 0.05, "latent", 3, "m")


@pytest.mark.parametrize("change, match", [
    (dict(horizon=0), "horizon"),
    (dict(gain=[0.0] * 3), "'gain' has 3 entries"),
    (dict(offset=[float("nan")] * 28), "NaN"),
    (dict(state_source="pixels"), "state_source"),
    (dict(dt=0.0), "dt"),
    (dict(policy_id=""), "policy_id"),
])
def test_malformed_policy_messages(change, match):
    msg = policy_to_msg(package(), SimpleNamespace())
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ValueError, match=match):
        policy_from_msg(msg)


def test_non_symmetric_or_indefinite_covariance_is_rejected():
    msg = policy_to_msg(package(), SimpleNamespace())
    cov = np.array(msg.covariance).reshape(4, 7, 7)
    cov[1, 0, 1] += 1.0
    msg.covariance = cov.ravel().tolist()
    with pytest.raises(ValueError, match="symmetric"):
        policy_from_msg(msg)
    cov = np.tile(-np.eye(7), (4, 1, 1))
    msg.covariance = cov.ravel().tolist()
    with pytest.raises(ValueError, match="positive definite"):
        policy_from_msg(msg)


def test_commands_follow_the_policy_with_seeded_per_step_noise():
    pol = random_policy(T=4, dx=5, scale=0.5)
    ex = PolicyExecutor(LIMITS)
    ex.offer(package(pol, dt=0.05))
    ex.start(1000 * MS, "ep", deterministic=False, noise_seed=42)
    eps = np.random.default_rng(42).standard_normal((4, 7))
    u = np.zeros(7)
    records = []
    xs = {}
    for k, now in enumerate(range(1000, 1200, 10)):  # 20 commands, 5 per time index
        t = ex.time_index(now * MS)
        assert t == (now - 1000) // 50
        x = RNG.standard_normal(5)
        xs.setdefault(t, []).append(x)
        _, recs = ex.command(t, x, source_ns=now * MS - 3 * MS, out=u)
        records += recs
        expected = pol.K[t] @ x + pol.k[t] + np.linalg.cholesky(pol.cov[t]) @ eps[t]
        np.testing.assert_allclose(u, np.clip(expected, -LIMITS, LIMITS), rtol=1e-12, atol=1e-12)
    records += ex.finish(1200 * MS)
    assert not ex.running and ex.steps_done == 4
    assert [r.time_index for r in records] == [0, 1, 2, 3]
    for r in records:
        xt = xs[r.time_index]
        np.testing.assert_array_equal(r.state, xt[0])
        mean = np.mean([np.clip(pol.K[r.time_index] @ x + pol.k[r.time_index] + np.linalg.cholesky(
            pol.cov[r.time_index]) @ eps[r.time_index], -LIMITS, LIMITS) for x in xt], axis=0)
        np.testing.assert_allclose(r.action, mean, atol=1e-12)
        np.testing.assert_array_equal(r.noise, eps[r.time_index])
        assert r.commands == 5 and r.start_ns == 1000 * MS + r.time_index * 50 * MS
        assert r.source_ns == 1000 * MS + r.time_index * 50 * MS - 3 * MS


def test_frame_locked_episodes_index_by_the_frame_the_state_came_from():
    """The episode begins on the first frame after the start request; frame t's latent acts with step t's
    gains from its arrival (any latency, camera jitter) until frame t+1's; the clock does not move the
    index, and the step records carry each frame's state and stamp."""
    pol = random_policy(T=3, dx=5, scale=0.5)
    ex = PolicyExecutor(LIMITS)
    ex.offer(package(pol, dt=0.05))
    ex.start(1037 * MS, "ep", deterministic=True, noise_seed=0, after_frame_ns=1000 * MS)
    assert ex.frame_locked and ex.waiting
    assert ex.index(1040 * MS, 1000 * MS) == WAITING and ex.index(1041 * MS, None) == WAITING
    u = np.zeros(7)
    records, sent = [], {}
    # (clock time of the command, capture stamp of the latest frame): frame 0 (captured at 1050) arrives
    # 8 ms late, frame 1 with 2 ms of camera jitter and 30 ms late; commands before each arrival act on
    # the previous frame even though the clock is past the next frame's capture.
    commands = [(1058, 1050), (1090, 1050), (1131, 1050), (1132, 1102), (1150, 1102), (1160, 1150), (1199, 1150)]
    for now, frame in commands:
        t = ex.index(now * MS, frame * MS)
        assert not ex.waiting and ex.start_ns == 1050 * MS
        assert t == round((frame - 1050) / 50)
        x = RNG.standard_normal(5)
        sent.setdefault(t, []).append((x, frame))
        _, recs = ex.command(t, x, frame * MS, u)
        records += recs
        np.testing.assert_allclose(u, np.clip(pol.K[t] @ x + pol.k[t], -LIMITS, LIMITS), atol=1e-12)
    assert ex.index(1201 * MS, None) == 2, "no usable state: the index does not move"
    assert ex.index(1203 * MS, 1200 * MS) == 3, "frame 3 (the horizon) ends the episode"
    records += ex.finish(1203 * MS)
    assert [(r.time_index, r.commands) for r in records] == [(0, 3), (1, 2), (2, 2)]
    for r in records:
        x0, frame = sent[r.time_index][0]
        np.testing.assert_array_equal(r.state, x0)
        assert r.source_ns == frame * MS and r.start_ns == 1050 * MS + r.time_index * 50 * MS
    # A stop request between frames reports the frames acted on, not the clock's indices; one before the
    # first frame reports none.
    ex.start(2000 * MS, "ep2", deterministic=True, noise_seed=0, after_frame_ns=1990 * MS)
    ex.command(ex.index(2045 * MS, 2040 * MS), np.ones(5), 2040 * MS, u)
    assert [r.time_index for r in ex.finish(2130 * MS)] == [0]
    ex.start(2200 * MS, "ep3", deterministic=True, noise_seed=0, after_frame_ns=2190 * MS)
    assert ex.finish(2230 * MS) == [] and not ex.waiting and ex.steps_done == 0
    # A state from before the start frame is time going backwards; clock-indexed episodes ignore the stamps.
    ex.start(3000 * MS, "ep4", deterministic=True, noise_seed=0, after_frame_ns=2990 * MS)
    assert ex.index(3001 * MS, 3040 * MS) == 0 and ex.index(3002 * MS, 2980 * MS) == -1
    ex.finish(3002 * MS)
    ex.start(4000 * MS, "ep5", deterministic=True, noise_seed=0)
    assert not ex.frame_locked and not ex.waiting and ex.index(4060 * MS, 3000 * MS) == 1


def test_deterministic_episode_and_clipping():
    pol = LinearGaussianPolicy.initial(3, 2, 7, std=1.0, k=np.array([100, -1, 1, -50, 0, 10, -10.0]))
    ex = PolicyExecutor(LIMITS)
    ex.offer(package(pol))
    ex.start(0, "ep", deterministic=True, noise_seed=0)
    u = np.zeros(7)
    clipped, _ = ex.command(0, np.zeros(2), 0, u)
    assert clipped
    np.testing.assert_array_equal(u, [80, -1, 1, -40, 0, 9, -9])


def test_skipped_time_indices_are_reported():
    pol = LinearGaussianPolicy.initial(5, 2, 7, std=0.1)
    ex = PolicyExecutor(LIMITS)
    ex.offer(package(pol, dt=0.1))
    ex.start(0, "ep", deterministic=True, noise_seed=0)
    u = np.zeros(7)
    ex.command(0, np.ones(2), 1, u)
    _, recs = ex.command(3, np.ones(2), 2, u)  # the controller stalled through indices 1 and 2
    assert [(r.time_index, r.commands) for r in recs] == [(0, 1), (1, 0), (2, 0)]
    recs = ex.finish(10**9)  # past the horizon: index 3 closes, 4 never ran
    assert [(r.time_index, r.commands) for r in recs] == [(3, 1), (4, 0)]
    ex.start(0, "ep2", True, 0)
    ex.command(1, np.ones(2), 0, u)
    with pytest.raises(ValueError, match="backwards"):
        ex.command(0, np.ones(2), 0, u)


def test_policies_are_swapped_only_at_episode_start():
    ex = PolicyExecutor(LIMITS)
    with pytest.raises(RuntimeError, match="no policy"):
        ex.start(0, "ep", True, 0)
    a, b = package(policy_id="A"), package(policy_id="B")
    ex.offer(a)
    ex.start(0, "ep1", True, 0)
    ex.offer(b)
    assert ex.active.policy_id == "A" and ex.pending.policy_id == "B"
    with pytest.raises(RuntimeError, match="still running"):
        ex.start(1, "ep2", True, 0)
    ex.finish(1)
    assert ex.start(2, "ep2", True, 0).policy_id == "B" and ex.pending is None
    ex.finish(3)
    assert ex.start(4, "ep3", True, 0).policy_id == "B", "without a new policy the last one runs again"
    with pytest.raises(ValueError, match="actions"):
        ex.offer(package(LinearGaussianPolicy.initial(2, 3, 6, std=1.0)))


def test_smoothed_noise_is_seeded_temporally_correlated_and_of_unit_std():
    pol = LinearGaussianPolicy.initial(50, 3, 7, std=1.0)
    pkg = PolicyPackage(pol, "p", 0.05, "latent", noise_smoothing=3.0)
    assert policy_from_msg(policy_to_msg(pkg, SimpleNamespace())).noise_smoothing == 3.0
    for wide in (False, True):  # the reset option of the policy's episodes travels with it
        assert policy_from_msg(policy_to_msg(replace(pkg, wide_start=wide), SimpleNamespace())).wide_start == wide
    ex = PolicyExecutor(LIMITS)
    ex.offer(pkg)
    ex.start(0, "ep", deterministic=False, noise_seed=7)
    eps = ex._eps
    # the in-process pretraining draws the same sequence from the same generator
    np.testing.assert_array_equal(eps, standard_normal_sequence(np.random.default_rng(7), 50, 7, 3.0))
    np.testing.assert_allclose(eps.std(0), 1.0, rtol=1e-9)
    lag1 = np.mean([np.corrcoef(eps[1:, j], eps[:-1, j])[0, 1] for j in range(7)])
    assert lag1 > 0.8, lag1
    white = np.random.default_rng(7).standard_normal((50, 7))
    assert abs(np.mean([np.corrcoef(white[1:, j], white[:-1, j])[0, 1] for j in range(7)])) < 0.2
    ex.finish(10**9)
    ex.start(10**9, "ep2", deterministic=True, noise_seed=7)
    assert not ex._eps.any()
    with pytest.raises(ValueError, match="noise_smoothing"):
        PolicyPackage(pol, "p", 0.05, "latent", noise_smoothing=-1.0)
    with pytest.raises(ValueError, match="smoothing"):
        standard_normal_sequence(np.random.default_rng(0), 5, 2, float("nan"))
    np.testing.assert_array_equal(standard_normal_sequence(np.random.default_rng(3), 5, 2),
                                  np.random.default_rng(3).standard_normal((5, 2)))


# ---- the MPC ablation's planner ------------------------------------------------------------------------------------

def mpc_package(T=6, dx=3, du=7, noise=0.05, horizon=3):
    """A zero-gain noise policy with a CEM planner on a random stable LDS and a quadratic cost."""
    from solar_ros.core.lqr_flm import QuadraticCost
    from solar_ros.core.mpc import CEMSettings, LinearModel
    from solar_ros.runtime.policy_msg import LatentPlanner
    A = 0.9 * np.eye(dx) + 0.05 * RNG.standard_normal((dx, dx))
    model = LinearModel(A, 0.1 * RNG.standard_normal((dx, du)), 0.01 * RNG.standard_normal(dx))
    z = dx + du
    Cm = np.tile(np.diag(np.r_[np.ones(dx), 0.01 * np.ones(du)]), (T, 1, 1))
    cost = QuadraticCost(Cm, 0.1 * RNG.standard_normal((T, z)), np.zeros(T))
    scale = np.array([2, 2, 1, 1, 0.25, 0.25, 0.25])
    planner = LatentPlanner(model, cost, CEMSettings(horizon=horizon, samples=40, elites=5, iterations=3,
                                                     init_std=0.5), scale)
    policy = LinearGaussianPolicy(np.zeros((T, du, dx)), np.zeros((T, du)),
                                  np.tile(np.diag((noise * scale) ** 2), (T, 1, 1)))
    return PolicyPackage(policy, "mpc", 0.05, "latent", iteration=2, model_id="m", planner=planner)


@pytest.mark.parametrize("per_step", [False, True])
def test_a_planner_travels_in_the_policy_message_and_in_the_policy_file(tmp_path, per_step):
    from solar_ros.core.mpc import LinearModel
    from solar_ros.runtime.fitting import load_policy, save_policy
    pkg = mpc_package()
    if per_step:  # one model per step (the local dynamics)
        m = pkg.planner.model
        tv = LinearModel(m.A + 0.01 * RNG.standard_normal((5, 3, 3)), np.repeat(m.B[None], 5, 0), np.zeros((5, 3)))
        pkg = replace(pkg, planner=replace(pkg.planner, model=tv))
    msg = policy_to_msg(pkg, SimpleNamespace())
    assert msg.planner == "cem" and len(msg.cost_matrix) == 6 * 10 * 10
    for back in (policy_from_msg(msg), load_policy(save_policy(tmp_path / "p.npz", pkg))):
        p, q = back.planner, pkg.planner
        for a, b in ((p.model.A, q.model.A), (p.model.B, q.model.B), (p.model.c, q.model.c), (p.cost.Cm, q.cost.Cm),
                     (p.cost.cv, q.cost.cv), (p.cost.cc, q.cost.cc), (p.action_scale, q.action_scale)):
            np.testing.assert_array_equal(a, b)
        assert p.settings == q.settings
    # without one, the fields are empty and nothing comes back
    plain = policy_to_msg(package(), SimpleNamespace())
    assert plain.planner == "" and len(plain.dynamics) == 0 and policy_from_msg(plain).planner is None


@pytest.mark.parametrize("change, match", [
    (dict(planner="mppi"), "planner must be one of"),
    (dict(dynamics=[0.0] * 5), "'dynamics' has 5 entries, expected a positive multiple"),
    (dict(dynamics=[]), "'dynamics' has 0 entries"),
    (dict(cost_constant=[float("inf")] * 6), "NaN or Inf"),
    (dict(action_scale=[1.0] * 6), "'action_scale' has 6 entries"),
    (dict(plan_elites=100), "elites"),
    (dict(plan_horizon=0), "horizon"),
])
def test_malformed_planners_are_rejected(change, match):
    msg = policy_to_msg(mpc_package(), SimpleNamespace())
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ValueError, match=match):
        policy_from_msg(msg)


def test_a_planner_replans_once_per_time_index_as_the_in_process_controller_does():
    """Each index's first command plans from its state (as CEMController.act on the same seed) and the index's
    commands add the exploration noise to that plan; a deterministic episode sends the plan alone."""
    from solar_ros.runtime.policy_executor import PLAN_STREAM
    pkg = mpc_package()
    for deterministic in (False, True):
        ex = PolicyExecutor(LIMITS)
        ex.offer(pkg)
        ex.start(0, "ep", deterministic=deterministic, noise_seed=7)
        reference = pkg.planner.controller(-LIMITS, LIMITS, np.random.default_rng([7, PLAN_STREAM]))
        chol = np.linalg.cholesky(pkg.policy.cov[0])
        eps = np.zeros((6, 7)) if deterministic else np.random.default_rng(7).standard_normal((6, 7))
        u = np.zeros(7)
        for t in range(6):
            x = RNG.standard_normal(3)
            plan = reference.act(t, x)
            for k in range(3):  # later commands of the index keep the plan made from its first state
                ex.command(t, x if k == 0 else RNG.standard_normal(3), 0, u)
                np.testing.assert_allclose(u, np.clip(plan + chol @ eps[t], -LIMITS, LIMITS), rtol=1e-12, atol=1e-12)
        assert np.any(plan != 0)
