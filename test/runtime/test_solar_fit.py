"""The model fitting node's SOLAR method (its ROS-free layer) computes what the in-process loop computes:
the same recorded episodes and seed give the same model fits, refits and LQR-FLM updates, hence the same
policy; its saved run (the model file with its LDS posterior, the step state) continues identically."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from solar_ros.algos import solar
from solar_ros.algos.common import StepState, initial_policy, rollout
from solar_ros.envs import make
from solar_ros.runtime import solar_fit
from solar_ros.runtime.fitting import RunSettings, TrainingData, load_policy, save_policy
from solar_ros.runtime.solar_fit import SolarMethod

SEED = 3
# Tiny: 16x16 images, a 3-d latent, 6 pretraining episodes, 20 + 10 gradient steps, 4 episodes per iteration.
TINY = dict(pretrain_episodes=6, rollouts_per_iteration=4, buffer_size=8, latent_dim=3, image_size=16,
            pretrain_steps=20, batch_size=4, lds_update_every=10, refit_steps=10, num_threads=1, adapt_step=True)


def _rollouts(env, goal, n: int, first_seed: int) -> solar.RolloutData:
    rng = np.random.default_rng(first_seed)
    low, high = env.action_space.low, env.action_space.high
    actor = solar.random_actor(rng, 0.5 * env.action_scale, low, high)
    return solar.RolloutData.from_episodes([rollout(env, actor, seed=first_seed + i, options={"goal": goal},
                                                    record_images=True) for i in range(n)])


def _recorded(data: solar.RolloutData, policy_id: str, prefix: str) -> TrainingData:
    """The rollouts as the node reads them from the recorder's files (all run the current policy)."""
    n = data.N
    return TrainingData(episode_ids=[f"{prefix}{i}" for i in range(n)], policy_ids=[policy_id] * n,
                        states=np.zeros((n, data.T, 3)), actions=data.actions, costs=data.costs, images=data.images,
                        root="episodes")


def _point_episodes():
    """A point env (16x16 images), its goal, pretraining rollouts and two iterations' batches."""
    env = make("point", image_obs=True, image_size=16)
    env.reset(seed=SEED)
    goal = env.goal.copy()
    return (env, goal, _rollouts(env, goal, TINY["pretrain_episodes"], 100),
            [_rollouts(env, goal, TINY["rollouts_per_iteration"], 200 + 10 * i) for i in range(2)])


def _sawyer_episodes():
    """A sawyer_reach env (16x16 images), its goal, pretraining rollouts and one iteration's batch."""
    env = make("sawyer_reach", image_obs=True, image_size=16)
    env.reset(seed=SEED)
    goal = env.goal.copy()
    return (env, goal, _rollouts(env, goal, TINY["pretrain_episodes"], 100),
            _rollouts(env, goal, TINY["rollouts_per_iteration"], 200))


def _recorded_with_joints(data: solar.RolloutData, policy_id: str, prefix: str, joints: bool = True) -> TrainingData:
    """:func:`_recorded` with the task's success flags the recorder stores from /solar/cost (none succeeds, as none
    of these random episodes does) and the joint states it stores from /joint_states (unless ``joints`` is false)."""
    r = replace(_recorded(data, policy_id, prefix), successes=np.zeros(data.costs.shape, dtype=bool))
    if not joints:
        return r
    return replace(r, joint_positions=data.states[..., :7], joint_velocities=data.states[..., 7:14])


def _recorder_files(recorded: list[TrainingData]):
    """``load_training_data`` on the recorder's files holding ``recorded`` (in memory here)."""
    rows = {eid: (d, i) for d in recorded for i, eid in enumerate(d.episode_ids)}

    def load(episode_dir, episode_ids, require, horizon):
        assert episode_dir == "episodes" and set(require) <= {"images", "actions", "costs"}
        picked = [rows[eid] for eid in episode_ids]
        stack = lambda name: np.stack([getattr(d, name)[i] for d, i in picked])  # noqa: E731
        return TrainingData(list(episode_ids), [d.policy_ids[i] for d, i in picked], stack("states"),
                            stack("actions"), stack("costs"), images=stack("images"), root=episode_dir)
    return load


def _in_process(env, cfg: solar.SolarConfig, pretrain: solar.RolloutData, batches: list[solar.RolloutData],
                successes: list[np.ndarray] | None = None):
    """The policy after the in-process loop's pretraining and iterations (as :func:`solar.train` runs them);
    ``successes``: each batch's episodes' success flags, where the run counts them."""
    torch.manual_seed(solar.derive_seed(SEED, solar.FIT, 0, 0))
    model = solar.SVAELatentModel(cfg.image_size, env.action_dim, cfg)
    model.fit(pretrain, cfg.pretrain_steps, solar.derive_seed(SEED, solar.FIT, 0, 1))
    policy = initial_policy(env.horizon, cfg.latent_dim, env.action_dim, cfg.init_noise * env.action_scale)
    step, data = StepState(), pretrain
    for it, batch in enumerate(batches, start=1):
        hits = None if successes is None else successes[it - 1]
        data = data + batch
        buffer = data.last(cfg.buffer_size)
        if cfg.refit_every and it % cfg.refit_every == 0:
            policy, step, _ = solar.refit(model, data, buffer, policy, step, cfg.refit_steps,
                                          solar.derive_seed(SEED, solar.FIT, it, 0))
        policy, step, _ = solar.solar_step(model, policy, buffer, step, cfg, solar.task_action_weights(env, cfg),
                                           step_costs=batch.costs, history=data, successes=hits, iteration=it)
    return policy, step


@pytest.mark.parametrize("dynamics_latents, refit_every, measured", [("smoothed", 2, False), ("filtered", 0, False),
                                                                     ("smoothed", 1, True), ("smoothed", 1, "final"),
                                                                     ("smoothed", 1, "success"),
                                                                     ("smoothed", 1, "own"),
                                                                     ("smoothed", 1, "warmup")])
def test_the_nodes_solar_method_computes_the_in_process_loops_policy(tmp_path, monkeypatch, dynamics_latents,
                                                                    refit_every, measured):
    torch.set_num_threads(1)
    env, goal, pretrain, batches = _point_episodes()
    if measured:  # the second batch costs more: the update goes back to the anchor (through a refit and a restart)
        batches.sort(key=lambda b: b.costs.sum(1).mean())
    overrides = {**TINY, "dynamics_latents": dynamics_latents, "refit_every": refit_every,
                 **({"measured_step": True, "adapt_step": False} if measured else {}),
                 **({"final_policy": "best_measured"} if measured == "final" else {})}
    if measured == "success":  # the run ends on the policy whose episodes succeeded most often: the first batch's
        overrides = {**TINY, "refit_every": refit_every, "final_policy": "best_success"}
    if measured == "own":  # likewise, acting through the model it ran with (not re-expressed after the refits)
        overrides = {**TINY, "refit_every": refit_every, "final_policy": "best_success", "final_policy_model": "own"}
    if measured == "warmup":  # the KL bound of the first two updates is a third and two thirds of kl_step
        overrides = {**TINY, "refit_every": refit_every, "kl_warmup": 2}
    # each batch's episodes' success at their last step, as the simulator's TaskCost flags them
    flags = [np.array([True, True, True, False]), np.zeros(4, dtype=bool)]
    cfg = replace(solar.TASK_DEFAULTS["point"], **overrides)

    node = SolarMethod(RunSettings(task="point", goal=goal.tolist(), seed=SEED), overrides, tmp_path)
    assert node.config == cfg
    node.initialize()
    recorded = [_recorded(pretrain, node.policy_id, "pre-")]
    node.update(recorded[-1], 1)
    ran_first = (node.model_id, node.model_path, node.policy_id, node.policy)  # what runs the first batch
    with_flags = lambda r, hits: replace(r, successes=np.repeat(hits[:, None], r.T, axis=1))  # noqa: E731
    recorded.append(with_flags(_recorded(batches[0], node.policy_id, "it1-"), flags[0]))
    node.update(recorded[-1], 2)
    # The fitting node restarts between iterations: its saved run continues where it stopped, rereading
    # the episodes it needs from the recorder's files.
    node.save()
    monkeypatch.setattr(solar_fit, "load_training_data", _recorder_files(recorded))
    node = SolarMethod.load(RunSettings(task="point", goal=goal.tolist(), seed=SEED), overrides, tmp_path)
    assert node._data is None
    out = node.update(with_flags(_recorded(batches[1], node.policy_id, "it2-"), flags[1]), 3,
                      final=measured in ("final", "success", "own"))
    if measured == "own":  # the first batch's policy and model, as they ran it, kept through the node's restart
        assert out.metrics["final_own_iteration"] == 2.0 and out.new_model
        assert (out.policy.model_id, out.model_path) == ran_first[:2] and out.policy.policy_id != ran_first[2]
        for name in ("K", "k", "cov"):
            np.testing.assert_array_equal(getattr(out.policy.policy, name), getattr(ran_first[3], name))
        kept = solar.SVAELatentModel(cfg.image_size, env.action_dim, cfg)
        kept.load(ran_first[1])
        assert all(torch.equal(a, b) for a, b in zip(kept.net.state_dict().values(),
                                                      node.model.net.state_dict().values()))
        return

    policy, step = _in_process(env, cfg, pretrain, batches, flags)
    assert np.any(policy.K != 0)
    if measured == "final":  # the trainer's last fit answers with the run's final policy: here the anchor
        assert out.metrics["final_best_measured"] == 1.0
        assert not np.allclose(out.policy.policy.K, policy.K)
        policy = solar.final_policy(policy, step, cfg)
        assert policy is step.anchor
    if measured == "success":  # here the policy that ran the first batch (3 of 4 successes), re-expressed
        assert out.metrics["final_best_success"] == 1.0 and node.step.best_success == pytest.approx(0.75)
        assert not np.allclose(out.policy.policy.K, policy.K)
        policy = solar.final_policy(policy, step, cfg)
        assert policy is step.best
    for name in ("K", "k", "cov"):
        np.testing.assert_allclose(getattr(out.policy.policy, name), getattr(policy, name), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    assert (node.step.step_mult, node.step.eta) == pytest.approx((step.step_mult, step.eta), rel=1e-9)
    if measured in (True, "final"):
        assert out.metrics["reverted"] == 1.0 and node.step.step_mult == pytest.approx(0.5)
        for name in ("K", "k", "cov"):
            np.testing.assert_allclose(getattr(node.step.anchor, name), getattr(step.anchor, name), rtol=1e-9,
                                       atol=1e-12, err_msg=f"anchor {name}")
    if measured == "warmup":
        assert cfg.kl_bound(2) == pytest.approx(2 / 3 * cfg.kl_step)  # the node's second update is iteration 2
        assert out.metrics["kl_target"] == pytest.approx(cfg.kl_bound(2) * out.metrics["step_mult"] * env.horizon,
                                                         rel=1e-9)
    elif not refit_every:  # the second update adapted its step from the first one's prediction
        assert "predicted_improvement" in out.metrics


def test_the_nodes_pretraining_policy_explores_with_the_loops_smoothed_noise(tmp_path):
    torch.set_num_threads(1)
    env = make("point", image_obs=True, image_size=16)
    env.reset(seed=SEED)
    goal = env.goal.copy()
    overrides = {**TINY, "pretrain_smoothing": 2.5}
    node = SolarMethod(RunSettings(task="point", goal=goal.tolist(), seed=SEED), overrides, tmp_path)
    first = node.initialize()
    assert first.policy.noise_smoothing == 2.5  # the controller filters its pretraining draws like random_actor
    assert not first.policy.wide_start
    wide = SolarMethod(RunSettings(task="reacher_paper", seed=SEED), {**TINY, "measured_step": False},
                       tmp_path / "wide").initialize()
    assert wide.policy.wide_start  # the trainer resets the simulator to the task's wide start for these episodes
    assert load_policy(save_policy(tmp_path / "p.npz", wide.policy)).wide_start
    pretrain = _rollouts(env, goal, TINY["pretrain_episodes"], 100)
    after = node.update(_recorded(pretrain, node.policy_id, "pre-"), 1)
    assert after.policy.noise_smoothing == 0.0  # LQR-FLM's policies explore with white noise by default
    assert solar.TASK_DEFAULTS["sawyer_reach"].pretrain_smoothing > 0
    smooth = SolarMethod(RunSettings(task="point", goal=goal.tolist(), seed=SEED),
                         {**overrides, "policy_smoothing": 1.5}, tmp_path / "smooth")
    assert smooth.initialize().policy.noise_smoothing == 2.5
    assert smooth.update(_recorded(pretrain, smooth.policy_id, "pre-"), 1).policy.noise_smoothing == 1.5


def test_the_fit_device_is_checked_with_a_clear_error(monkeypatch):
    from solar_ros.runtime.fitting import check_device
    assert check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="'cpu' or 'cuda"):
        check_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        check_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda") == "cuda"
    with pytest.raises(ValueError, match="sees 1 CUDA"):
        check_device("cuda:1")


def test_fit_threads_zero_means_every_core_this_process_may_use():
    import os

    from solar_ros.runtime.fitting import fit_threads
    assert fit_threads(3) == 3
    assert fit_threads(0) == len(os.sched_getaffinity(0))
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="num_threads must be an integer >= 0"):
            fit_threads(bad)


def test_a_fit_thread_lowers_its_own_cpu_priority_and_not_the_callers():
    import os
    import threading

    from solar_ros.runtime.fitting import set_thread_niceness
    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen = {}

    def fit_thread():
        seen["set"] = set_thread_niceness(min(19, before + 5))
        child = threading.Thread(target=lambda: seen.update(child=os.getpriority(os.PRIO_PROCESS, 0)))
        child.start()
        child.join()

    worker = threading.Thread(target=fit_thread)
    worker.start()
    worker.join()
    assert seen == {"set": min(19, before + 5), "child": min(19, before + 5)}  # threads it starts inherit it
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
    with pytest.raises(ValueError, match="niceness"):
        set_thread_niceness(25)


def test_the_nodes_solar_fit_reports_probes_and_coverage_from_the_recorded_joint_states(tmp_path):
    torch.set_num_threads(1)
    env, goal, pretrain, batch = _sawyer_episodes()

    settings = {**TINY, "adapt_step": False}  # the Sawyer defaults take the measured step
    node = SolarMethod(RunSettings(task="sawyer_reach", goal=goal.tolist(), seed=SEED), settings, tmp_path)
    node.initialize()
    out = node.update(_recorded_with_joints(pretrain, node.policy_id, "pre-"), 1)
    # the task's states, recomputed from the joint states by forward kinematics, are the simulator's own
    np.testing.assert_allclose(node._data.states, pretrain.states, atol=1e-9)
    m = out.metrics
    for key in ("cost_r2", "probe_ee_position", "probe_joint_angles", "probe_velocities", "cost_rank_corr",
                "coverage_span", "coverage_cells", "coverage_nearest_goal"):
        assert key in m and np.isfinite(m[key]), key
    nearest = np.linalg.norm(pretrain.states[..., 14:17] - goal, axis=-1).min()
    assert m["coverage_nearest_goal"] == pytest.approx(nearest)
    out = node.update(_recorded_with_joints(batch, node.policy_id, "it1-"), 2)
    for key in ("heldout_cost_r2", "heldout_probe_ee_position", "probe_ee_position", "cost_r2"):
        assert key in out.metrics and np.isfinite(out.metrics[key]), key

    # episodes without joint states: the same fit, with no probes
    bare = SolarMethod(RunSettings(task="sawyer_reach", goal=goal.tolist(), seed=SEED), settings, tmp_path / "bare")
    bare.initialize()
    plain = bare.update(_recorded_with_joints(pretrain, bare.policy_id, "pre-", joints=False), 1).metrics
    assert not any(k.startswith(("probe_", "coverage_", "cost_rank")) for k in plain)
    assert plain["cost_r2"] == pytest.approx(m["cost_r2"], rel=1e-9)


def test_the_nodes_readout_cost_reads_the_positions_from_the_recorded_joint_states(tmp_path):
    torch.set_num_threads(1)
    env, goal, pretrain, batch = _sawyer_episodes()

    settings = {**TINY, "adapt_step": False, "cost_fit": "readout", "action_cost": "task"}
    node = SolarMethod(RunSettings(task="sawyer_reach", goal=goal.tolist(), seed=SEED), settings, tmp_path)
    node.initialize()
    node.update(_recorded_with_joints(pretrain, node.policy_id, "pre-"), 1)
    out = node.update(_recorded_with_joints(batch, node.policy_id, "it1-"), 2)
    # the readout is fitted on the hand positions computed from the recorded joints by forward kinematics
    buffer = node._data.last(node.config.buffer_size)
    np.testing.assert_allclose(buffer.states, (pretrain + batch).last(node.config.buffer_size).states, atol=1e-9)
    _, r2 = solar.readout_latent_cost(node.model.smooth(buffer), buffer, solar.task_action_weights(env, node.config),
                                      solar.task_distance_link(env, node.config), list(env.ee_pos_idx), goal)
    assert out.metrics["readout_r2"] == pytest.approx(r2, rel=1e-9) and 0.0 < r2 <= 1.0
    # without joint states the node cannot read the positions: a clear error before any fit
    bare = SolarMethod(RunSettings(task="sawyer_reach", goal=goal.tolist(), seed=SEED), settings, tmp_path / "bare")
    bare.initialize()
    with pytest.raises(solar_fit.FitError, match="joint states"):
        bare.update(_recorded_with_joints(pretrain, bare.policy_id, "pre-", joints=False), 1)
    # ending on the policy that succeeded most often (the task's default) needs each episode's success or distance
    assert node.config.final_policy == "best_success" and node.step.best_success == 0.0
    blind = SolarMethod(RunSettings(task="sawyer_reach", goal=goal.tolist(), seed=SEED), settings, tmp_path / "blind")
    blind.initialize()
    blind.update(_recorded_with_joints(pretrain, blind.policy_id, "pre-"), 1)
    with pytest.raises(solar_fit.FitError, match="success"):
        blind.update(replace(_recorded_with_joints(batch, blind.policy_id, "it1-"), successes=None), 2)


def test_the_nodes_solar_fit_learns_from_the_recorded_success_labels_as_the_loop_does(tmp_path):
    """reward='labels' through the nodes: the recorder's success_labels (not the recorded task costs) give the costs,
    the same as in the in-process loop, and LQR-FLM minimises the latent success model's cost."""
    torch.set_num_threads(1)
    env = make("point", image_obs=True, image_size=16)
    env.reset(seed=SEED)
    goal = env.goal.copy()
    rng = np.random.default_rng(0)

    def labelled(data: solar.RolloutData) -> solar.RolloutData:
        labels = (rng.random((data.N, data.T)) < 0.05).astype(np.int64)
        labels[0, data.T // 2] = 1  # at least one labelled episode
        return replace(data, labels=labels, costs=solar.label_costs(labels, 3))

    pretrain = labelled(_rollouts(env, goal, TINY["pretrain_episodes"], 100))
    batch = labelled(_rollouts(env, goal, TINY["rollouts_per_iteration"], 200))
    overrides = {**TINY, "reward": "labels", "cost_fit": "labels", "action_cost": "task"}
    cfg = replace(solar.TASK_DEFAULTS["point"], **overrides)
    node = SolarMethod(RunSettings(task="point", goal=goal.tolist(), seed=SEED), overrides, tmp_path)
    assert node.required_arrays == ("states", "actions", "success_labels", "images")
    node.initialize()

    def recorded(data, prefix):  # the recorded task costs are something else entirely: they must not be used
        return replace(_recorded(data, node.policy_id, prefix), costs=np.full(data.costs.shape, 7.0),
                       labels=data.labels.astype(float))

    node.update(recorded(pretrain, "pre-"), 1)
    out = node.update(recorded(batch, "it1-"), 2)
    np.testing.assert_array_equal(node._data.costs, np.concatenate([pretrain.costs, batch.costs]))
    assert "label_success_frames" in out.metrics
    policy, _ = _in_process(env, cfg, pretrain, [batch])
    for name in ("K", "k", "cov"):
        np.testing.assert_allclose(getattr(out.policy.policy, name), getattr(policy, name), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    with pytest.raises(solar_fit.FitError, match="success labels"):
        node._rollouts(replace(recorded(batch, "x-"), labels=None))


@pytest.mark.parametrize("mpc_dynamics", ["global", "local"])
def test_the_nodes_mpc_ablation_plans_with_the_in_process_ablations_model_and_cost(tmp_path, monkeypatch,
                                                                                  mpc_dynamics):
    """method solar_mpc through the nodes: after the pretraining's fit and after each iteration's refit the
    controller gets the in-process ablation's planner (the model's LDS, the cost its step computes, the mpc_*
    settings) and a zero-gain policy with the ablation's white exploration noise; the saved run continues."""
    from solar_ros.algos.solar import mpc as solar_mpc
    from solar_ros.runtime.solar_fit import SolarMpcMethod
    torch.set_num_threads(1)
    env, goal, pretrain, batches = _point_episodes()
    overrides = {**TINY, "mpc_horizon": 4, "mpc_samples": 30, "mpc_elites": 3, "mpc_noise": 0.2,
                 "mpc_dynamics": mpc_dynamics}
    cfg = replace(solar.TASK_DEFAULTS["point"], **overrides)
    settings = RunSettings(task="point", goal=goal.tolist(), seed=SEED)
    node = SolarMpcMethod(settings, overrides, tmp_path)
    first = node.initialize()
    assert first.policy.planner is None  # the pretraining explores at random, as SOLAR's
    recorded = [_recorded(pretrain, node.policy_id, "pre-")]
    outs = [node.update(recorded[-1], 1)]
    recorded.append(_recorded(batches[0], node.policy_id, "it1-"))
    outs.append(node.update(recorded[-1], 2))
    node.save()
    monkeypatch.setattr(solar_fit, "load_training_data", _recorder_files(recorded))
    node = SolarMpcMethod.load(settings, overrides, tmp_path)
    outs.append(node.update(_recorded(batches[1], node.policy_id, "it2-"), 3, final=True))

    # the in-process ablation (solar.train's mpc branch) on the same episodes
    torch.manual_seed(solar.derive_seed(SEED, solar.FIT, 0, 0))
    model = solar.SVAELatentModel(cfg.image_size, env.action_dim, cfg)
    model.fit(pretrain, cfg.pretrain_steps, solar.derive_seed(SEED, solar.FIT, 0, 1))
    weights, hand = solar.task_action_weights(env, cfg), (list(env.ee_pos_idx), goal)
    link = solar.task_distance_link(env, cfg)
    expected = [solar_mpc.mpc_plan(model, pretrain.last(cfg.buffer_size), cfg, weights, hand, link)]
    policy, step, data = initial_policy(env.horizon, cfg.latent_dim, env.action_dim, env.action_scale), StepState(), \
        pretrain
    for it, batch in enumerate(batches, start=1):
        data = data + batch
        buffer = data.last(cfg.buffer_size)
        policy, step, _ = solar.refit(model, data, buffer, policy, step, cfg.refit_steps,
                                      solar.derive_seed(SEED, solar.FIT, it, 0))
        expected.append(solar_mpc.mpc_step(model, buffer, cfg, weights, hand, link)[0])
    for out, plan in zip(outs, expected):
        cost, dynamics = plan.cost, plan.dynamics
        planner = out.policy.planner
        assert planner.settings == solar_mpc.cem_settings(cfg) and out.policy.noise_smoothing == 0.0
        for a, b in ((planner.cost.Cm, cost.Cm), (planner.cost.cv, cost.cv), (planner.cost.cc, cost.cc),
                     (planner.model.A, dynamics.A), (planner.model.B, dynamics.B), (planner.model.c, dynamics.c)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        assert planner.model.steps == (1 if mpc_dynamics == "global" else env.horizon - 1)
        np.testing.assert_array_equal(out.policy.policy.K, 0.0)
        np.testing.assert_allclose(out.policy.policy.cov[0], np.diag((0.2 * env.action_scale) ** 2), rtol=1e-12)
    assert "cost_r2" in outs[1].metrics  # the iteration's diagnostics, as SOLAR's step reports them


def test_the_nodes_refuse_a_share_of_wide_start_pretraining(tmp_path):
    """The pretraining's episodes share one policy package, hence one start: a wide-start share is in process only."""
    with pytest.raises(ValueError, match="pretrain_wide_fraction is not available through the nodes"):
        SolarMethod(RunSettings(task="point", seed=SEED), {**TINY, "pretrain_wide_fraction": 0.5}, tmp_path)
