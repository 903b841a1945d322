"""labeller_node: plays the person who gives the sparse reward, in simulation.

In SOLAR's mug pushing the only reward is a person pressing a key when the task succeeds. This node presses
for them: it follows the episodes (/solar/episode) and the task's state (/solar/cost, which only the simulator
publishes), and once per episode, when the task's own success criterion first holds (``TaskCost.success``: the
rule ``info["success"]`` applies in process, e.g. the mug standing within 3 cm of the coaster), it calls
/solar/label_success (std_srvs/Trigger, served by the recorder) ``delay`` seconds later (node clock: simulated
time in simulation), as a person would after seeing it. With probability ``miss_rate`` (drawn per episode from
``seed``) it misses that episode. ``success_distance`` > 0 replaces the criterion by the task's distance falling
to that many metres. A person at the robot uses ``label_keyboard`` instead.
"""
from __future__ import annotations

import numpy as np
from std_srvs.srv import Trigger

from ..msg import EpisodeEvent, TaskCost
from . import contract
from .common import ConfigError, StackNode, declare, run_node


class LabellerNode(StackNode):
    """Calls the success-label service once per episode when the task succeeds (module docstring)."""

    def __init__(self) -> None:
        super().__init__("labeller_node")
        self.success_distance = float(declare(
            self, "success_distance", 0.0, "m; > 0: success is the distance at or below this (0: the task's own rule)"))
        self.delay = float(declare(self, "delay", 0.5, "s between seeing success and pressing (node clock)"))
        self.miss_rate = float(declare(self, "miss_rate", 0.0, "probability of missing an episode's success"))
        seed = declare(self, "seed", 0, "seed of the misses")
        if not (np.isfinite(self.success_distance) and self.success_distance >= 0):
            raise ConfigError(f"success_distance must be >= 0 m, got {self.success_distance}")
        if not (np.isfinite(self.delay) and self.delay >= 0):
            raise ConfigError(f"delay must be >= 0 s, got {self.delay}")
        if not 0.0 <= self.miss_rate <= 1.0:
            raise ConfigError(f"miss_rate must be in [0, 1], got {self.miss_rate}")
        self.rng = np.random.default_rng(int(seed))
        self.client = self.create_client(Trigger, contract.LABEL_SUCCESS)
        self.create_subscription(EpisodeEvent, contract.EPISODE, self._on_event, contract.EVENT_QOS)
        self.create_subscription(TaskCost, contract.COST, self._on_cost, contract.RELIABLE_QOS)
        self.episode: str | None = None
        self.pressed = True  # nothing to press before a START
        self.missing = False
        self.timer = None
        self.presses = 0
        self.get_logger().info(f"labelling success on {contract.LABEL_SUCCESS} after {self.delay:g} s, missing "
                               f"{self.miss_rate:.0%} of the episodes")

    def _succeeded(self, msg: TaskCost) -> bool:
        if self.success_distance > 0:
            return msg.distance <= self.success_distance
        return bool(msg.success)

    def _on_event(self, msg: EpisodeEvent) -> None:
        self._cancel()
        if msg.event == EpisodeEvent.START:
            self.episode, self.pressed = msg.episode_id, False
            self.missing = bool(self.rng.random() < self.miss_rate)
        else:
            self.episode, self.pressed = None, True

    def _on_cost(self, msg: TaskCost) -> None:
        if self.episode is None or self.pressed or not self._succeeded(msg):
            return
        self.pressed = True  # once per episode: a person presses when they first see it
        if self.missing:
            self.get_logger().info(f"episode {self.episode!r} succeeded (distance {msg.distance:.3f} m): missed")
            return
        episode = self.episode
        self.timer = self.create_timer(max(self.delay, 1e-3), lambda: self._press(episode))

    def _press(self, episode: str) -> None:
        self._cancel()
        if episode != self.episode:
            return  # the episode ended before the press
        if not self.client.service_is_ready():
            self.get_logger().error(f"{contract.LABEL_SUCCESS} is not available: is the recorder running?")
            return
        self.presses += 1
        self.client.call_async(Trigger.Request()).add_done_callback(self._on_reply)

    def _on_reply(self, future) -> None:
        reply = future.result()
        if reply is None or not reply.success:
            self.get_logger().warning(f"label refused: {getattr(reply, 'message', 'no reply')}")
        else:
            self.get_logger().info(reply.message)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.destroy_timer(self.timer)
            self.timer = None


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run solar_ros labeller_node``)."""
    return run_node(LabellerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
