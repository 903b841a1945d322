"""controller_node runs the MPC ablation's planner (a policy message with ``planner: cem``): at each camera
frame it plans from the frame's latent with the carried model and cost, and the frame's torque is the plan's
first action (plus the policy's noise, none in a deterministic episode) - the same plans as the in-process
CEM controller computes from the same latents and seed."""
from __future__ import annotations

import numpy as np
import pytest

from solar_ros.core.lqr_flm import QuadraticCost
from solar_ros.core.mpc import CEMSettings, LinearModel
from solar_ros.core.types import LinearGaussianPolicy as LGPolicy
from solar_ros.msg import EpisodeEvent, LatentState, LinearGaussianPolicy, PolicyStep
from solar_ros.nodes import contract
from solar_ros.runtime.policy_executor import PLAN_STREAM
from solar_ros.runtime.policy_msg import LatentPlanner, PolicyPackage, policy_to_msg
from solar_ros.runtime.safety import SAWYER_TORQUE_LIMITS
from solar_ros.srv import StartEpisode

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

FRAME_NS = 50_000_000  # a 20 Hz camera
T, DX, DU = 6, 2, 7


def _planner() -> LatentPlanner:
    rng = np.random.default_rng(0)
    model = LinearModel(np.array([[1.0, 0.05], [0.0, 0.9]]), 0.2 * rng.standard_normal((DX, DU)), np.zeros(DX))
    z = DX + DU
    Cm = np.tile(np.diag(np.r_[np.ones(DX), 0.01 * np.ones(DU)]), (T, 1, 1))
    cv = np.zeros((T, z))
    cv[:, :DX] = -0.5  # a target at x = (0.5, 0.5)
    return LatentPlanner(model, QuadraticCost(Cm, cv, np.zeros(T)),
                         CEMSettings(horizon=4, samples=50, elites=5, iterations=3, init_std=0.5),
                         np.array([2, 2, 1, 1, 0.25, 0.25, 0.25]))


def test_the_controller_replans_on_every_frame(ros, start_node):
    controller = start_node("controller_node", {"state_source": "latent", "rate": 200.0, "max_latent_age": 0.3})
    n = ros.node
    latent_pub = n.create_publisher(LatentState, contract.LATENT, contract.SENSOR_QOS)
    policy_pub = n.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
    events: list[EpisodeEvent] = []
    steps: list[PolicyStep] = []
    n.create_subscription(EpisodeEvent, contract.EPISODE, events.append, contract.EVENT_QOS)
    n.create_subscription(PolicyStep, contract.STEPS, steps.append, contract.EVENT_QOS)
    ros.wait_for_subscribers(latent_pub, timeout=20)

    base = n.get_clock().now().nanoseconds // FRAME_NS * FRAME_NS
    published: dict[int, int] = {}

    def camera() -> None:  # frame k's latent, (sin k, cos k), published 10 ms after its capture
        k = (n.get_clock().now().nanoseconds - 10_000_000 - base) // FRAME_NS
        if k >= 0 and k not in published:
            published[k] = base + k * FRAME_NS
            msg = LatentState(dim=DX, mean=[float(np.sin(k)), float(np.cos(k))])
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(published[k], 1_000_000_000)
            latent_pub.publish(msg)

    n.create_timer(0.002, camera)
    planner = _planner()
    noise = LGPolicy(np.zeros((T, DU, DX)), np.zeros((T, DU)), np.tile(np.eye(DU) * 1e-2, (T, 1, 1)))
    policy_pub.publish(policy_to_msg(PolicyPackage(noise, "mpc", FRAME_NS * 1e-9, "latent", planner=planner),
                                     LinearGaussianPolicy()))
    ros.spin_until(lambda: "policy 'mpc'" in controller.log(), 10, "the MPC policy")
    assert "replanned by CEM every step over 4 steps" in controller.log()
    ros.spin_until(lambda: len(published) >= 2, 5, "two frames")
    reply = ros.call(n.create_client(StartEpisode, contract.START_EPISODE),
                     StartEpisode.Request(episode_id="mpc", deterministic=True, noise_seed=11))
    assert reply.success, reply.message
    ros.spin_until(lambda: any(e.event != EpisodeEvent.START for e in events), 5, "the end of the episode")
    ros.spin(0.1)

    records = sorted((s for s in steps if s.episode_id == "mpc"), key=lambda s: s.time_index)
    assert [s.time_index for s in records] == list(range(T))
    limits = np.asarray(SAWYER_TORQUE_LIMITS)
    reference = planner.controller(-limits, limits, np.random.default_rng([11, PLAN_STREAM]))
    for s in records:
        plan = reference.act(s.time_index, np.asarray(s.state))
        np.testing.assert_allclose(s.action, plan, rtol=1e-9, atol=1e-12)  # every command of the frame sent it
        assert s.commands > 0
    assert np.any(np.abs(records[0].action) > 1e-3)
    assert controller.alive(), controller.log()
