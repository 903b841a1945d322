"""The sparse human reward over ROS, through real node processes: the recorder's /solar/label_success service
(std_srvs/Trigger) stores "success now" with the episode (npz, index, bag); the scripted labeller_node presses
once when the task's distance says success, after its delay; label_keyboard presses on ENTER; outside an episode
the call is refused with the reason."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from std_srvs.srv import Trigger

from solar_ros.msg import EpisodeEvent, PolicyStep, TaskCost
from solar_ros.nodes import contract
from solar_ros.runtime.episode_store import iter_mcap_messages, load_episode, read_index

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.ros, pytest.mark.timeout(150)]

S0 = 200_000_000_000
DT = 100_000_000


def _stamp(msg, ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)


class Episode:
    """Publishes one controller episode (events, step records, the simulator's cost) from the test node."""

    def __init__(self, ros):
        n = ros.node
        self.ros = ros
        self.event_pub = n.create_publisher(EpisodeEvent, contract.EPISODE, contract.EVENT_QOS)
        self.step_pub = n.create_publisher(PolicyStep, contract.STEPS, contract.EVENT_QOS)
        self.cost_pub = n.create_publisher(TaskCost, contract.COST, contract.RELIABLE_QOS)

    def event(self, kind: int, episode_id: str, steps: int, horizon: int) -> None:
        e = EpisodeEvent()
        _stamp(e, S0 + steps * DT)
        e.event, e.episode_id, e.horizon, e.dt, e.steps = kind, episode_id, horizon, DT * 1e-9, steps
        e.state_source, e.reason = "latent", "" if kind == EpisodeEvent.START else "horizon reached"
        e.start_stamp.sec, e.start_stamp.nanosec = divmod(S0, 1_000_000_000)
        self.event_pub.publish(e)

    def step(self, episode_id: str, t: int, distance: float, success: bool) -> None:
        c = TaskCost()
        _stamp(c, S0 + t * DT)
        c.task, c.cost, c.distance, c.success = "point", distance, distance, success
        self.cost_pub.publish(c)
        m = PolicyStep()
        _stamp(m, S0 + t * DT)
        m.episode_id, m.time_index = episode_id, t
        m.source_stamp.sec, m.source_stamp.nanosec = divmod(S0 + t * DT, 1_000_000_000)
        m.state, m.action, m.noise, m.commands = [float(t)], [0.0, 0.0], [0.0, 0.0], 1
        self.step_pub.publish(m)


@pytest.mark.parametrize("criterion", ["the task's", "a distance"])
def test_labels_from_the_scripted_labeller_and_the_keyboard_are_stored_with_the_episode(ros, start_node,
                                                                                        tmp_path, criterion):
    """The labeller presses on the task's own success criterion (TaskCost.success; here the distance says success
    from the first step and must be ignored), or with success_distance on the distance (the flag never set)."""
    out = tmp_path / "episodes"

    def subscribers(topic: str) -> set:
        return {bytes(i.endpoint_gid) for i in ros.node.get_subscriptions_info_by_topic(topic)}

    before = {t: subscribers(t) for t in (contract.EPISODE, contract.COST, contract.STEPS)}  # an earlier test's
    recorder = start_node("recorder_node", {"output_dir": str(out), "stop_grace": 2.0})
    by_distance = criterion == "a distance"
    labeller = start_node("labeller_node", {"success_distance": 0.5 if by_distance else 0.0, "delay": 0.3})
    keyboard = subprocess.Popen([sys.executable, "-m", "solar_ros.nodes.label_keyboard"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        client = ros.node.create_client(Trigger, contract.LABEL_SUCCESS)
        # outside an episode the label is refused, with the reason (a refusal is safe to ask for again)
        reply = ros.call(client, Trigger.Request(), timeout=30, resend_after=5.0)
        assert not reply.success and "no episode" in reply.message
        ep = Episode(ros)
        for pub in (ep.event_pub, ep.step_pub, ep.cost_pub):  # this test's recorder and labeller
            wanted = 2 if pub is not ep.step_pub else 1
            ros.spin_until(lambda: len(subscribers(pub.topic_name) - before[pub.topic_name]) >= wanted, 30,
                           f"the new subscribers of {pub.topic_name}")
            ros.wait_for_subscribers(pub, wanted, timeout=30)
        ros.spin(1.0)

        T = 12
        ep.event(EpisodeEvent.START, "lab1", 0, T)
        ros.spin(0.2)
        distances = [1.0, 0.9, 0.8, 0.7, 0.6, 0.45, 0.3, 0.2, 0.2, 0.3, 0.4, 0.2]  # success from step 5 on
        for t, d in enumerate(distances):
            ep.step("lab1", t, d, False) if by_distance else ep.step("lab1", t, 0.01, t >= 5)
            if t == 9:  # the person at the keyboard says it too
                keyboard.stdin.write("\n")
                keyboard.stdin.flush()
            ros.spin(0.15)
        ros.spin(0.5)
        ep.event(EpisodeEvent.STOP, "lab1", T, T)
        ros.spin_until(lambda: (out / "index.jsonl").exists(), 15, "the episode's index line")
        keyboard.stdin.write("q\n")
        keyboard.stdin.flush()
        printed = keyboard.communicate(timeout=30)[0]
    finally:
        if keyboard.poll() is None:
            keyboard.kill()
    assert "ok: success labelled" in printed, printed

    entry = read_index(out)[0]
    assert entry["success_labels"] == 2, (entry, labeller.log(), recorder.log())
    arrays = load_episode(out, "lab1")
    labels = arrays["success_labels"]
    # the simulator's success flag is stored per step beside the cost (the trainer judges episodes by it)
    assert arrays["successes"].tolist() == ([False] * T if by_distance else [t >= 5 for t in range(T)])
    assert labels.shape == (T,) and labels.sum() == 2
    first = int(np.flatnonzero(labels)[0])
    # the labeller pressed once, 0.3 s (two to three steps) after success first held at step 5
    assert 5 <= first <= 9, labels
    assert labels[9:].sum() >= 1  # the keyboard's press, during step 9 or 10
    episodes = [msg.frame_id for topic, msg, _ in iter_mcap_messages(out / entry["mcap"])
                if topic == contract.SUCCESS_LABEL]
    assert episodes == ["lab1", "lab1"]
    assert recorder.alive() and labeller.alive()
    assert "succeeded" not in labeller.log()  # no miss: miss_rate 0


@pytest.mark.parametrize("params, error", [({"miss_rate": 1.5}, "miss_rate"), ({"delay": -1.0}, "delay"),
                                           ({"success_distance": -0.1}, "success_distance")])
def test_the_labeller_refuses_bad_settings(start_node, params, error):
    node = start_node("labeller_node", params)
    deadline = time.monotonic() + 60
    while node.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = node.log()
    assert node.stop() == 2 and error in log, log
