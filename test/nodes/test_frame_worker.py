"""sim_arm_node's FrameWorker renders, in its own thread, the frame env.render() shows for the submitted state
(the arm and the goal's mocap body), stamped with the submitted stamp; later states do not leak into it."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from solar_ros import envs  # noqa: E402  (imports MuJoCo with the chosen GL backend)
from solar_ros.nodes.sim_arm_node import FrameWorker  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("task", ["sawyer_reach", "sawyer_stack_1"])
def test_the_worker_renders_the_submitted_state(task):
    env = envs.make(task, image_obs=True, image_size=64)
    env.reset(seed=3)
    frames: list[tuple[np.ndarray, int]] = []
    arrived = threading.Event()

    def send(img, stamp):
        frames.append((img.copy(), stamp))
        arrived.set()

    worker = FrameWorker(env, 64, send)
    try:
        rng = np.random.default_rng(0)
        for _ in range(20):
            env.step(0.05 * rng.uniform(-1, 1, env.action_dim) * env.action_space.high)  # the arm stays in view
        expected = env.render().copy()
        worker.submit(env.data, 123_456_789)
        # The live state moves on at once (the arm swung by 0.3 rad a joint); the frame must not see it.
        env.set_joint_state(env.data.qpos[:7] + 0.3, np.zeros(7))
        assert arrived.wait(30), "no frame from the worker"
    finally:
        worker.stop()
    img, stamp = frames[0]
    assert stamp == 123_456_789
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, expected)
    assert not np.array_equal(env.render(), expected), "the later state looks different (the test can fail)"
