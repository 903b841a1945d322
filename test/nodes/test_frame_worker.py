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


def test_drain_drops_the_waiting_frame_and_waits_for_the_one_being_sent():
    """At a reset no frame of the old state may follow: drain() returns only after the frame in flight was
    sent, and the frame still waiting is never sent."""
    env = envs.make("sawyer_reach", image_obs=True, image_size=64)
    env.reset(seed=0)
    sent: list[int] = []
    started, release = threading.Event(), threading.Event()

    def send(img, stamp):
        started.set()
        assert release.wait(30)
        sent.append(stamp)

    worker = FrameWorker(env, 64, send)
    try:
        worker.submit(env.data, 1)
        assert started.wait(30), "the first frame never reached send"
        worker.submit(env.data, 2)  # waits behind the first
        drained = threading.Event()
        threading.Thread(target=lambda: worker.drain(30) and drained.set(), daemon=True).start()
        assert not drained.wait(0.2), "drain returned while a frame was still being sent"
        release.set()
        assert drained.wait(30)
        assert sent == [1]
        assert worker.dropped == 1, "the drained frame counts as dropped"
        worker.submit(env.data, 3)  # the worker goes on after a drain
        for _ in range(300):
            if sent[-1] == 3:
                break
            threading.Event().wait(0.01)
    finally:
        release.set()
        worker.stop()
    assert sent == [1, 3]
