"""model_fitting_node in its own process: the FitModel action (feedback, result, the policy on
/solar/policy) on episodes recorded in the recorder's format, the update checked against the same
LQR-FLM step computed here, and bad input (corrupt/missing episodes, wrong iteration) giving a
failed result while the node keeps serving."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from std_msgs.msg import String

from solar_ros.action import FitModel
from solar_ros.algos.common import LQRFLMLoop, initial_policy
from solar_ros.models import load_checkpoint
from solar_ros.msg import LinearGaussianPolicy
from solar_ros.nodes import contract
from solar_ros.runtime.episode_store import EpisodeRecording
from solar_ros.runtime.fitting import JointSpaceTaskCost, load_policy, make_task
from solar_ros.runtime.policy_msg import policy_from_msg

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

GOAL = [0.6, 0.1, 0.1]
T = 10


def record_rollouts(root: Path, policy, policy_id: str, seeds: list[int], prefix: str) -> list[str]:
    """Roll the policy out on the joint state [q, dq] of the simulated arm and record each episode
    the way the recorder does (per-step states, actions and costs in episode.npz, an index line)."""
    env = make_task("sawyer_reach", GOAL)
    cost_model = env.cost_model()
    ids = []
    for n, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed, options={"goal": GOAL})
        rec = EpisodeRecording(root, f"{prefix}{n}", {"policy_id": policy_id, "horizon": T, "dt": 0.05,
                                                      "state_source": "joints"}, write_mcap=False)
        for t in range(T):
            x = obs["state"][:14]
            u = np.clip(policy.act(t, x, rng.standard_normal(7)), env.action_space.low, env.action_space.high)
            stamp = (t + 1) * 50_000_000
            rec.buffers.steps.append(SimpleNamespace(time_index=t, start_ns=stamp, source_ns=stamp, state=x, action=u,
                                                     noise=np.zeros(7), commands=10, clipped=False))
            rec.buffers.costs.add(stamp, float(cost_model.eval(obs["state"][None], u[None]).l[0]),
                                  float(env.distance(obs["state"])))
            obs, *_ = env.step(u)
        rec.finalize("complete")
        ids.append(f"{prefix}{n}")
    return ids


class Fitter:
    def __init__(self, ros):
        self.ros = ros
        self.policies: list[LinearGaussianPolicy] = []
        self.feedback: list = []
        ros.node.create_subscription(LinearGaussianPolicy, contract.POLICY, self.policies.append, contract.POLICY_QOS)
        self.client = ActionClient(ros.node, FitModel, contract.FIT_MODEL)

    def fit(self, iteration: int, episode_dir: Path, episode_ids=(), method="lqr_joints", config=None, timeout=60.0):
        config = {"task": "sawyer_reach", "goal": GOAL, "horizon": T, **(config or {})}
        goal = FitModel.Goal(episode_ids=list(episode_ids), episode_dir=str(episode_dir), iteration=iteration,
                             method=method, config_yaml=yaml.safe_dump(config))
        self.ros.spin_until(lambda: self.client.server_is_ready(), 30, "the FitModel action server")
        # After a node restart the request can reach the killed server's lingering endpoint and be lost:
        # send it again (the fitter answers a repeated goal with the same policy, without a second fit).
        for attempt in range(3):
            send = self.client.send_goal_async(goal, feedback_callback=lambda m: self.feedback.append(m.feedback))
            try:
                self.ros.spin_until(send.done, 10, "goal acceptance")
                break
            except AssertionError:
                if attempt == 2:
                    raise
        handle = send.result()
        assert handle.accepted
        result = handle.get_result_async()
        self.ros.spin_until(result.done, timeout, f"the result of fit {iteration}")
        return result.result().result

    def policy(self, policy_id: str):
        self.ros.spin_until(lambda: any(p.policy_id == policy_id for p in self.policies), 10, f"policy {policy_id}")
        return policy_from_msg([p for p in self.policies if p.policy_id == policy_id][-1])


class Rig:
    """What the tests share: the client side, the node process (replaced when a test restarts it) and
    the directory of the run."""

    def __init__(self, fitter, node, out):
        self.fitter, self.node, self.out = fitter, node, out

    def __iter__(self):
        return iter((self.fitter, self.node, self.out))


@pytest.fixture(scope="module")
def rig(ros, start_node, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    node = start_node("model_fitting_node", {"output_dir": str(out / "models"), "num_threads": 1})
    r = Rig(Fitter(ros), node, out)
    yield r
    assert r.node.alive(), r.node.log()


def test_iteration_0_publishes_the_initial_policy(rig):
    fitter, node, out = rig
    res = fitter.fit(0, out / "episodes")
    assert res.success, res.message
    package = fitter.policy(res.policy_id)
    p = package.policy
    assert (package.state_source, p.T, p.dx, p.du, package.iteration) == ("joints", T, 14, 7, 0)
    assert np.all(p.K == 0) and np.all(p.k == 0)
    # init_noise 1.0 x the task's action scale
    env = make_task("sawyer_reach", GOAL)
    np.testing.assert_allclose(np.sqrt(np.diagonal(p.cov[0])), env.action_scale)
    assert Path(res.policy_path).is_file()


def test_update_matches_the_lqr_flm_step_and_reports_feedback(rig):
    fitter, node, out = rig
    first = fitter.policies[-1]
    p0 = policy_from_msg(first)
    ids = record_rollouts(out / "episodes", p0.policy, first.policy_id, [11, 12, 13], "it0-")
    fitter.feedback.clear()
    res = fitter.fit(1, out / "episodes", ids)
    assert res.success, res.message
    assert fitter.feedback, "no feedback during the fit"
    assert {f.stage for f in fitter.feedback} >= {"loading", "dynamics"}
    progress = [f.progress for f in fitter.feedback]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    metrics = dict(zip(res.metric_names, res.metric_values))
    assert metrics["episodes"] == 3 and metrics["kl"] > 0
    # Every fit reports its wall time and its peak resident memory (the node process holds torch: > 50 MB).
    assert 0 < metrics["fit_s"] < 600 and metrics["fit_peak_mb"] > 50
    new = fitter.policy(res.policy_id)
    assert new.policy_id != first.policy_id and new.iteration == 1

    # The same step computed here from the recorded arrays.
    env = make_task("sawyer_reach", GOAL)
    loop = LQRFLMLoop(initial_policy(T, 14, 7, env.action_scale), JointSpaceTaskCost(env, env.cost_model()),
                      prior="global")
    arrays = [np.load(out / "episodes" / i / "episode.npz") for i in ids]
    loop.iterate(np.stack([a["states"] for a in arrays]), np.stack([a["actions"] for a in arrays]))
    np.testing.assert_allclose(new.policy.K, loop.policy.K, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(new.policy.k, loop.policy.k, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(load_policy(Path(res.policy_path)).policy.K, new.policy.K)


def test_bad_episodes_give_a_failed_result_and_the_node_keeps_serving(rig):
    fitter, node, out = rig
    current = fitter.policies[-1]
    ids = record_rollouts(out / "episodes", policy_from_msg(current).policy, current.policy_id, [21, 22], "it1-")
    # corrupt one episode's arrays
    (out / "episodes" / ids[1] / "episode.npz").write_bytes(b"PK\x03\x04 this is not an npz")
    res = fitter.fit(2, out / "episodes", ids)
    assert not res.success and ids[1] in res.message and "cannot read" in res.message
    res = fitter.fit(2, out / "episodes", ["no-such-episode"])
    assert not res.success and "no-such-episode" in res.message and "not in" in res.message
    res = fitter.fit(2, out / "missing-dir", ids)
    assert not res.success and "does not exist" in res.message
    res = fitter.fit(5, out / "episodes", ids[:1])
    assert not res.success and "iteration" in res.message
    res = fitter.fit(2, out / "episodes", ["it0-0"])  # an episode of an older policy
    assert not res.success and "current policy" in res.message
    res = fitter.fit(2, out / "episodes", ids[:1], method="no_such_method")
    assert not res.success and "unknown method" in res.message
    res = fitter.fit(2, out / "episodes", ids[:1], config={"kl_stepp": 1.0})
    assert not res.success and "unknown lqr_joints setting(s) ['kl_stepp']" in res.message
    res = fitter.fit(2, out / "episodes", ids[:1], config={"dynamics_prior": "oracle"})
    assert not res.success and "dynamics_prior must be" in res.message
    # after all that, a good fit still works, continuing from the saved state
    res = fitter.fit(2, out / "episodes", ids[:1])
    assert res.success, res.message
    assert fitter.policy(res.policy_id).iteration == 2
    assert node.alive()


SOLAR_TINY = {"image_size": 32, "latent_dim": 3, "pretrain_steps": 4, "refit_steps": 2, "batch_size": 2,
              "lds_update_every": 2, "buffer_size": 4, "num_threads": 1}


def record_image_rollouts(root: Path, policy_id: str, seeds: list[int], prefix: str) -> list[str]:
    """Random-torque rollouts with 32x32 camera images, recorded like the recorder does."""
    env = make_task("sawyer_reach", GOAL, image_obs=True, image_size=32)
    cost_model = env.cost_model()
    ids = []
    for n, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed, options={"goal": GOAL})
        rec = EpisodeRecording(root, f"{prefix}{n}", {"policy_id": policy_id}, write_mcap=False)
        for t in range(T):
            u = 0.5 * env.action_scale * rng.standard_normal(7)
            stamp = (t + 1) * 50_000_000
            rec.buffers.steps.append(SimpleNamespace(time_index=t, start_ns=stamp, source_ns=stamp, state=np.zeros(3),
                                                     action=u, noise=np.zeros(7), commands=10, clipped=False))
            rec.buffers.images.add(stamp, obs["image"])
            rec.buffers.costs.add(stamp, float(cost_model.eval(obs["state"][None], u[None]).l[0]),
                                  float(env.distance(obs["state"])))
            obs, *_ = env.step(u)
        rec.finalize("complete")
        ids.append(f"{prefix}{n}")
    return ids


def test_solar_method_pretrains_the_model_announces_it_and_updates_the_policy(rig, ros):
    fitter, node, out = rig
    models: list[str] = []
    ros.node.create_subscription(String, contract.MODEL, lambda m: models.append(m.data), contract.MODEL_QOS)
    episodes = out / "solar_episodes"
    res = fitter.fit(0, episodes, method="solar", config=SOLAR_TINY)
    assert res.success, res.message
    p0 = fitter.policy(res.policy_id)
    ros.spin_until(lambda: res.model_path in models, 10, "the initial model's announcement")
    ckpt = load_checkpoint(res.model_path)
    assert (p0.state_source, p0.policy.dx, p0.model_id) == ("latent", 3, ckpt.extra["model_id"])
    assert ckpt.kind == "svae" and ckpt.config.image_size == 32

    fitter.feedback.clear()
    res1 = fitter.fit(1, episodes, record_image_rollouts(episodes, p0.policy_id, [1, 2, 3], "pre-"),
                      method="solar", config=SOLAR_TINY)
    assert res1.success, res1.message
    stages = [f for f in fitter.feedback if f.stage == "representation"]
    assert stages and all(np.isfinite(f.loss) for f in stages), "model-fit progress with the fit's loss"
    p1 = fitter.policy(res1.policy_id)
    ros.spin_until(lambda: res1.model_path in models, 10, "the fitted model's announcement")
    assert res1.model_path != res.model_path and p1.model_id == load_checkpoint(res1.model_path).extra["model_id"]
    assert p1.model_id != p0.model_id and np.all(p1.policy.K == 0)

    res2 = fitter.fit(2, episodes, record_image_rollouts(episodes, p1.policy_id, [4, 5], "it1-"),
                      method="solar", config=SOLAR_TINY)
    assert res2.success, res2.message
    p2 = fitter.policy(res2.policy_id)
    metrics = dict(zip(res2.metric_names, res2.metric_values))
    assert metrics["kl"] > 0 and np.any(p2.policy.K != 0)
    # The project's settings refit the model after every iteration: a new model, announced, that the
    # new policy names (the encoder swaps to it before the policy's first episode).
    ros.spin_until(lambda: res2.model_path in models, 10, "the refitted model's announcement")
    assert res2.model_path != res1.model_path and p2.model_id != p1.model_id
    assert p2.model_id == load_checkpoint(res2.model_path).extra["model_id"] and "model_loss" in metrics


def test_solar_mpc_method_sends_the_controller_a_planner_after_the_pretraining(rig, ros):
    """The MPC ablation through the nodes: its policies on /solar/policy carry the planner (the model's LDS and the
    latent cost, ``planner: cem``) from the first control iteration on."""
    fitter, node, out = rig
    episodes = out / "solar_mpc_episodes"
    config = {**SOLAR_TINY, "mpc_horizon": 3, "mpc_samples": 20, "mpc_elites": 2}
    res = fitter.fit(0, episodes, method="solar_mpc", config=config)
    assert res.success, res.message
    assert fitter.policy(res.policy_id).planner is None
    res1 = fitter.fit(1, episodes, record_image_rollouts(episodes, res.policy_id, [1, 2, 3], "pre-"),
                      method="solar_mpc", config=config)
    assert res1.success, res1.message
    p1 = fitter.policy(res1.policy_id)
    assert p1.planner is not None and p1.planner.settings.horizon == 3 and np.all(p1.policy.K == 0)
    assert (p1.planner.model.dx, p1.planner.model.du, p1.planner.cost.T) == (3, 7, p1.policy.T)


def test_a_long_fit_can_be_cancelled(rig, ros):
    fitter, node, out = rig
    episodes = out / "cancel_episodes"
    config = {**SOLAR_TINY, "pretrain_steps": 5000, "lds_update_every": 1}
    res = fitter.fit(0, episodes, method="solar", config=config)
    assert res.success, res.message
    ids = record_image_rollouts(episodes, res.policy_id, [7, 8], "c-")
    goal = FitModel.Goal(episode_ids=ids, episode_dir=str(episodes), iteration=1, method="solar",
                         config_yaml=yaml.safe_dump({"task": "sawyer_reach", "goal": GOAL, "horizon": T, **config}))
    fitter.feedback.clear()
    send = fitter.client.send_goal_async(goal, feedback_callback=lambda m: fitter.feedback.append(m.feedback))
    ros.spin_until(send.done, 10, "goal acceptance")
    handle = send.result()
    ros.spin_until(lambda: any(f.stage == "representation" for f in fitter.feedback), 60, "the model fit to start")
    cancel = handle.cancel_goal_async()
    ros.spin_until(cancel.done, 10, "the cancel reply")
    result = handle.get_result_async()
    ros.spin_until(result.done, 30, "the cancelled result")
    assert result.result().status == GoalStatus.STATUS_CANCELED
    assert result.result().result.message == "cancelled"
    assert max(f.progress for f in fitter.feedback) < 0.5
    # the node serves the next goal
    res = fitter.fit(0, episodes, config={})
    assert res.success, res.message


def test_a_killed_fitter_comes_back_with_its_run(rig, ros, start_node):
    """kill -9 after a fit whose answer is then lost: the restarted node announces the saved policy
    again, answers the repeated goal with it (no second fit) and continues with the next iteration."""
    fitter, node, out = rig
    start = fitter.fit(0, out / "episodes")  # an lqr_joints run of its own at iteration 0
    assert start.success, start.message
    ids = record_rollouts(out / "episodes", fitter.policy(start.policy_id).policy, start.policy_id, [31, 32], "k0-")
    res = fitter.fit(1, out / "episodes", ids)
    assert res.success, res.message
    node.kill9()
    seen = len(fitter.policies)
    rig.node = start_node("model_fitting_node", {"output_dir": str(out / "models"), "num_threads": 1})
    ros.spin_until(lambda: any(p.policy_id == res.policy_id for p in fitter.policies[seen:]), 30,
                   "the restarted fitter's announcement of the saved policy")
    # (the log line follows the publication: wait for it too)
    ros.spin_until(lambda: "announced the saved lqr_joints run again: iteration 1" in rig.node.log(), 30,
                   "the restarted fitter's log line")
    again = fitter.fit(1, out / "episodes", ids)
    assert again.success and again.policy_id == res.policy_id, again.message
    repeated = dict(zip(again.metric_names, again.metric_values))
    assert {k: v for k, v in repeated.items() if not k.startswith("fit_")} == {"repeated": 1.0}
    ids2 = record_rollouts(out / "episodes", fitter.policy(res.policy_id).policy, res.policy_id, [33, 34], "k1-")
    res2 = fitter.fit(2, out / "episodes", ids2)
    assert res2.success, res2.message
    assert fitter.policy(res2.policy_id).iteration == 2


def test_a_negative_thread_count_stops_the_fitter_with_a_clear_error(start_node, tmp_path):
    """num_threads 0 means every core; below that the node refuses to start (status 2, the reason in one line)."""
    node = start_node("model_fitting_node", {"output_dir": str(tmp_path / "models"), "num_threads": -1})
    assert node.proc.wait(timeout=60) == 2
    assert "num_threads must be an integer >= 0" in node.log()
