"""The MPC ablation (``--method solar_mpc``): SOLAR's model, loop and budget with CEM MPC acting; it shares SOLAR's
pretraining, is seeded, and its saved run evaluates to the same figures. The planner itself is checked against the
linear-quadratic optimum in test/core/test_mpc.py."""
from dataclasses import replace

import numpy as np
import pytest

from solar_ros.algos import solar
from solar_ros.algos.solar.mpc import MPCPlan, cem_settings, latent_dynamics, mpc_actor, mpc_plan, plan_dynamics
from solar_ros.envs import make

# A tiny point run (as test_solar.py's), with a small planner.
TINY = solar.SolarConfig(pretrain_episodes=20, iterations=2, rollouts_per_iteration=6, buffer_size=12,
                         eval_episodes=4, latent_dim=3, image_size=16, pretrain_steps=60, batch_size=4,
                         lds_update_every=20, num_threads=1, mpc_horizon=5, mpc_samples=40, mpc_elites=8,
                         mpc_iterations=3)


@pytest.fixture(scope="module")
def solar_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("solar_for_mpc")
    return out, solar.train("point", seed=3, out=out, progress=False, config=TINY)


def test_the_ablation_starts_from_solars_pretraining_and_gives_its_result_from_scratch(solar_run, tmp_path):
    source, solar_result = solar_run
    scratch = solar.train_mpc_ablation("point", seed=3, out=tmp_path / "scratch", progress=False, config=TINY)
    started = solar.train_mpc_ablation("point", seed=3, out=tmp_path / "started", progress=False, config=TINY,
                                       pretraining_from=source)
    assert scratch.method == started.method == "solar_mpc"
    # the same pretraining as SOLAR's: the same random rollouts and model fit
    assert scratch.iterations[0]["mean_cost"] == solar_result.iterations[0]["mean_cost"]
    assert scratch.iterations[0]["extra"]["cost_r2"] == solar_result.iterations[0]["extra"]["cost_r2"]
    assert started.iterations[0]["extra"].pop("pretraining_from") == str(source)
    for a, b in zip(started.iterations, scratch.iterations):
        assert a["mean_cost"] == b["mean_cost"] and a["final_distance"] == b["final_distance"]
    assert started.final_cost == scratch.final_cost and started.success_rate == scratch.success_rate
    # the iterations act otherwise than SOLAR's policy, and log what the policy-free step has
    assert [r["mean_cost"] for r in scratch.iterations[1:]] != [r["mean_cost"] for r in solar_result.iterations[1:]]
    extra = scratch.iterations[-1]["extra"]
    assert extra["phase"] == "iteration" and "cost_r2" in extra and "heldout_cost_r2" in extra and "kl" not in extra
    # the saved run evaluates to the run's own figures
    again = solar.evaluate_saved_run(tmp_path / "scratch")
    assert again["mean_cost"] == pytest.approx(scratch.final_cost) and again["success_rate"] == scratch.success_rate
    with pytest.raises(ValueError, match="MPC-ablation"):
        solar.evaluate_saved_run(tmp_path / "scratch", which="best_measured")


def test_the_actor_plans_on_the_models_lds_within_the_limits(solar_run):
    source, _ = solar_run
    env = make("point", image_obs=True, image_size=16)
    env.reset(seed=3)
    model = solar.SVAELatentModel(16, env.action_dim, TINY)
    model.load(source / "checkpoint.pt")
    dyn = latent_dynamics(model)
    p = model.lds.mean_params()
    np.testing.assert_array_equal(dyn.A, p.A)
    np.testing.assert_array_equal(dyn.B, p.B)
    assert cem_settings(TINY).horizon == 5 and cem_settings(TINY).samples == 40
    cost = solar.latent_cost(model, env.horizon)
    low, high = env.action_space.low, env.action_space.high
    planned: list = []
    obs, _ = env.reset(seed=0)
    runs = []
    for _ in range(2):
        act = mpc_actor(model, MPCPlan(dyn, cost), TINY, env.action_scale, low, high, np.random.default_rng(0),
                        record=planned)
        runs.append(np.array([act(t, None, obs) for t in range(3)]))
    np.testing.assert_array_equal(runs[0], runs[1])  # seeded planner: the same actions
    assert np.all(runs[0] >= low) and np.all(runs[0] <= high)
    assert len(planned) == 6 and np.all(np.isfinite(planned))


def test_mpc_settings_are_checked():
    for bad in (dict(mpc_horizon=0), dict(mpc_samples=5, mpc_elites=10), dict(mpc_init_std=0.0),
                dict(mpc_noise=-0.1), dict(mpc_iterations=1.5), dict(mpc_dynamics="neural")):
        with pytest.raises(ValueError, match="mpc_"):
            replace(TINY, **bad)


def test_local_dynamics_are_lqr_flms_per_step_fits_and_a_run_plans_with_them(solar_run, tmp_path):
    """mpc_dynamics='local': the plan's dynamics are the per-step fits LQR-FLM's update makes on the buffer's latents
    (with its prior), one per step; a run with them starts from SOLAR's pretraining and evaluates from its save."""
    from solar_ros.core.dynamics import fit_dynamics
    source, _ = solar_run
    cfg = replace(TINY, mpc_dynamics="local")
    env = make("point", image_obs=True, image_size=16)
    env.reset(seed=3)
    model = solar.SVAELatentModel(16, env.action_dim, cfg)
    model.load(source / "checkpoint.pt")
    buffer = solar.persistence.load_data(source, ["pretrain"]).last(cfg.buffer_size)
    latents = model.smooth(buffer)
    local = plan_dynamics(model, latents, buffer, cfg)
    fit = fit_dynamics(latents, buffer.actions, solar.dynamics_prior(model, latents, buffer, cfg))
    assert local.steps == env.horizon - 1
    np.testing.assert_allclose(local.A[7], fit.Fm[7, :, :3], rtol=1e-12)
    np.testing.assert_allclose(local.B[7], fit.Fm[7, :, 3:], rtol=1e-12)
    np.testing.assert_allclose(local.c[7], fit.fv[7], rtol=1e-12)
    assert not np.allclose(local.A[7], latent_dynamics(model).A)
    plan = mpc_plan(model, buffer, cfg, solar.task_action_weights(env, cfg), (list(env.ee_pos_idx), env.goal), None)
    assert plan.dynamics.steps == env.horizon - 1
    run = solar.train_mpc_ablation("point", seed=3, out=tmp_path / "local", progress=False, config=cfg,
                                   pretraining_from=source)
    again = solar.evaluate_saved_run(tmp_path / "local")
    assert again["mean_cost"] == pytest.approx(run.final_cost) and again["success_rate"] == run.success_rate
