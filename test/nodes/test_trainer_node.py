"""trainer_node in its own process: bad parameters end it with status 2, a stack that never comes up
ends it with status 1 and a message naming what is missing; against a stand-in stack in the test
process, an aborted episode is retried once the stack is healthy again, each fault cause is logged
once, and a fault that outlasts the patience ends the run with status 1 (the full learning run
through the stack is test_stack_e2e.py)."""
from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import rclpy.task
import yaml
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger

from solar_ros.action import FitModel
from solar_ros.core.types import LinearGaussianPolicy as LGPolicy
from solar_ros.msg import EpisodeEvent, LinearGaussianPolicy, TaskCost
from solar_ros.nodes import contract
from solar_ros.runtime.episode_store import append_index
from solar_ros.runtime.policy_msg import PolicyPackage, policy_to_msg
from solar_ros.runtime.safety import SAWYER_JOINT_NAMES
from solar_ros.srv import ResetArm, StartEpisode

pytestmark = [pytest.mark.ros, pytest.mark.timeout(60)]


def wait_exit(node, timeout: float) -> int:
    try:
        return node.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"trainer still running after {timeout} s:\n{node.log()}") from None


def test_bad_parameters_exit_with_status_2(start_node):
    node = start_node("trainer_node", {"iterations": 0})
    assert wait_exit(node, 30) == 2
    assert "iterations must be >= 1" in node.log()
    node = start_node("trainer_node", {"task": "moon_landing"})
    assert wait_exit(node, 30) == 2
    assert "unknown task 'moon_landing'" in node.log()


def test_missing_stack_ends_the_run_with_status_1_and_the_reason(start_node, tmp_path):
    t0 = time.monotonic()
    node = start_node("trainer_node", {"bringup_timeout": 2.0, "output_dir": str(tmp_path / "out")})
    assert wait_exit(node, 40) == 1
    log = node.log()
    assert "run failed: timed out after 2 s waiting for service /sim/reset" in log, log
    assert not (tmp_path / "out" / "summary.json").exists()
    assert time.monotonic() - t0 < 40


# ---- riding out transient faults, against a stand-in stack -------------------------------------------------------

class FakeStack:
    """The services, action, topics and recorder files the trainer talks to, in the test process: the
    simulator (/sim/reset, /joint_states, /solar/cost), the controller (start/stop, /solar/episode),
    the fitter (FitModel, /solar/policy) and the recorder (a node named recorder_node, index.jsonl)."""

    def __init__(self, ros, episode_dir: Path):
        from rclpy.action import ActionServer

        self.ros, self.episode_dir = ros, episode_dir
        n = ros.node
        self.recorder = rclpy.create_node("recorder_node", context=ros.context)
        ros.executor.add_node(self.recorder)
        self.joints_nan = False
        self.abort_reasons: list[str] = []
        """Reasons for the next starts to abort with (one per start), then episodes complete."""
        self.starts: list[str] = []
        self._pending: list[tuple[float, str, bool, str]] = []
        self.policy_id = ""
        self.fits: list[int] = []
        """Iterations of the FitModel goals received, in order."""
        self.fit_episodes: list[int] = []
        """How many episodes each FitModel goal carried, in order."""
        self.fit_final: list[bool] = []
        """Whether each FitModel goal was marked as the run's last fit (its policy is evaluated), in order."""
        self.fail_fits: list[int] = []
        """Iterations whose next fit fails (one entry per failure)."""
        self.silent_fits = 0
        """Fits accepted and then never answered (a fitter that died during the fit)."""
        self.wide_fits: set[int] = set()
        """Iterations whose policy asks for the task's wide start (as SOLAR's pretraining policy can)."""
        self._wide_reset = False
        self.started_wide: dict[str, tuple[str, bool]] = {}
        """Episode id -> (policy running, whether the reset before its start asked for the wide start)."""
        self._hung: list = []
        self.joint_pub = n.create_publisher(JointState, contract.JOINT_STATES, contract.RELIABLE_QOS)
        self.cost_pub = n.create_publisher(TaskCost, contract.COST, contract.RELIABLE_QOS)
        self.event_pub = n.create_publisher(EpisodeEvent, contract.EPISODE, contract.EVENT_QOS)
        self.policy_pub = n.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
        self.paused = False
        self.pause_calls: list[bool] = []
        """The /sim/pause requests received (true: pause), in order."""
        self.paused_at_fit: list[bool] = []
        """Whether the simulator was paused when each FitModel goal arrived, in order."""
        self.services = [n.create_service(ResetArm, contract.SIM_RESET, self._reset),
                         n.create_service(SetBool, contract.SIM_PAUSE, self._pause),
                         n.create_service(StartEpisode, contract.START_EPISODE, self._start),
                         n.create_service(Trigger, contract.STOP_EPISODE, self._stop)]
        self.fit_server = ActionServer(n, FitModel, contract.FIT_MODEL, self._fit)
        self.timers = [n.create_timer(0.02, self._publish_joints), n.create_timer(0.05, self._publish_cost),
                       n.create_timer(0.02, self._finish_episodes)]

    def close(self) -> None:
        n = self.ros.node
        for t in self.timers:
            n.destroy_timer(t)
        for s in self.services:
            n.destroy_service(s)
        for future in self._hung:
            future.set_result(None)
        self.fit_server.destroy()
        for p in (self.joint_pub, self.cost_pub, self.event_pub, self.policy_pub):
            n.destroy_publisher(p)
        self.ros.executor.remove_node(self.recorder)
        self.recorder.destroy_node()

    def _publish_joints(self) -> None:
        js = JointState()
        js.header.stamp = self.ros.node.get_clock().now().to_msg()
        js.name = list(SAWYER_JOINT_NAMES)
        js.position = [math.nan if self.joints_nan else 0.1] * 7
        js.velocity = [0.0] * 7
        self.joint_pub.publish(js)

    def _publish_cost(self) -> None:
        self.cost_pub.publish(TaskCost(task="sawyer_reach", cost=1.0, distance=0.2))

    def _pause(self, request, response):
        self.pause_calls.append(bool(request.data))
        self.paused = bool(request.data)
        response.success, response.message = True, "paused" if self.paused else "running"
        return response

    def _reset(self, request, response):
        self.paused = False  # as the simulator: a reset leaves it running
        self._wide_reset = bool(request.wide_start)
        response.success, response.goal = True, [0.6, 0.1, 0.1]
        return response

    def _start(self, request, response):
        self.starts.append(request.episode_id)
        self.started_wide[request.episode_id] = (self.policy_id, self._wide_reset)
        abort = bool(self.abort_reasons)
        reason = self.abort_reasons.pop(0) if abort else "horizon reached"
        self._pending.append((time.monotonic() + 0.2, request.episode_id, abort, reason))
        self.event_pub.publish(EpisodeEvent(event=EpisodeEvent.START, episode_id=request.episode_id))
        response.success, response.episode_id, response.policy_id = True, request.episode_id, self.policy_id
        response.horizon, response.dt = 5, 0.05
        return response

    def _stop(self, request, response):
        response.success = False
        return response

    def _finish_episodes(self) -> None:
        for item in [p for p in self._pending if p[0] <= time.monotonic()]:
            self._pending.remove(item)
            _, episode_id, abort, reason = item
            if not abort:  # the recorder's files, then the controller's STOP
                (self.episode_dir / episode_id).mkdir(parents=True)
                np.savez(self.episode_dir / episode_id / "episode.npz", costs=np.ones(5), distances=np.full(5, 0.01))
                append_index(self.episode_dir, {"episode_id": episode_id, "path": episode_id, "status": "complete",
                                                "npz": f"{episode_id}/episode.npz"})
            self.event_pub.publish(EpisodeEvent(event=EpisodeEvent.ABORT if abort else EpisodeEvent.STOP,
                                                episode_id=episode_id, reason=reason))

    async def _fit(self, goal_handle):
        iteration = goal_handle.request.iteration
        self.paused_at_fit.append(self.paused)
        self.fits.append(iteration)
        self.fit_episodes.append(len(goal_handle.request.episode_ids))
        self.fit_final.append(bool(yaml.safe_load(goal_handle.request.config_yaml).get("final", False)))
        if self.silent_fits > 0:
            self.silent_fits -= 1
            never = rclpy.task.Future()
            self._hung.append(never)
            await never
            goal_handle.abort()
            return FitModel.Result(success=False, message="gone")
        if iteration in self.fail_fits:
            self.fail_fits.remove(iteration)
            goal_handle.abort()
            return FitModel.Result(success=False, message=f"LQR-FLM update failed at iteration {iteration}")
        self.policy_id = f"policy-{goal_handle.request.iteration}"
        package = PolicyPackage(LGPolicy.initial(5, 14, 7, 0.1), self.policy_id, 0.05, "joints",
                                goal_handle.request.iteration, wide_start=iteration in self.wide_fits)
        self.policy_pub.publish(policy_to_msg(package, LinearGaussianPolicy()))
        goal_handle.succeed()
        return FitModel.Result(success=True, message="ok", policy_id=self.policy_id)


@pytest.fixture
def ros(fresh_ros):
    """Each test's stand-in stack in a participant of its own (conftest's ``fresh_ros``): one test kills a trainer."""
    return fresh_ros


@pytest.fixture
def stack(ros, tmp_path):
    s = FakeStack(ros, tmp_path / "episodes")
    (tmp_path / "episodes").mkdir()
    yield s
    s.close()


def run_trainer(start_node, ros, tmp_path, timeout: float, **params):
    node = start_node("trainer_node", {"iterations": 1, "episodes_per_iteration": 1, "eval_episodes": 0,
                                       "success_threshold": 0.05, "bringup_timeout": 30.0,
                                       "episode_dir": str(tmp_path / "episodes"), "output_dir": str(tmp_path / "out"),
                                       "recovery_settle_time": 1.0, "health_max_gap": 0.5, **params})
    end = time.monotonic() + timeout
    while node.alive():
        if time.monotonic() > end:
            raise AssertionError(f"trainer still running after {timeout} s:\n{node.log()}")
        ros.spin(0.05)
    return node.proc.wait(timeout=5), node.log()


@pytest.mark.timeout(120)
def test_an_aborted_episode_is_retried_once_the_stack_is_healthy_again(start_node, ros, tmp_path, stack):
    stack.joints_nan = True
    stack.abort_reasons = ["fault: joints: joint state contains NaN or Inf",
                           "fault: joint state is stale: 0.061 s old (limit 0.050 s)",
                           "fault: joint state is stale: 0.083 s old (limit 0.050 s)"]

    def heal_later():
        # 3 s after the first (aborted) start the joint states are valid again.
        if stack.starts and heal_later.t0 == 0.0:
            heal_later.t0 = time.monotonic()
        if heal_later.t0 and time.monotonic() - heal_later.t0 > 3.0:
            stack.joints_nan = False
    heal_later.t0 = 0.0
    timer = ros.node.create_timer(0.05, heal_later)
    try:
        status, log = run_trainer(start_node, ros, tmp_path, 90.0, fault_patience=60.0)
    finally:
        ros.node.destroy_timer(timer)
    assert status == 0, log
    assert (tmp_path / "out" / "summary.json").is_file()
    train = [s for s in stack.starts if "-it00-" in s]
    assert len(train) == 4 and train[1].endswith("-retry1") and train[3].endswith("-retry3"), train
    # Each kind of cause once per burst: the NaN abort, the stale aborts (twice, with other numbers), the
    # unhealthy joint states (seen at every 0.1 s poll for 3 s).
    assert log.count("aborted (fault: joints: joint state contains NaN or Inf)") == 1, log
    assert log.count("aborted (fault: joint state is stale") == 1, log
    assert log.count("stack unhealthy: joint_states: joint positions contain NaN or Inf") == 1, log
    assert log.count("retrying episode") == 3
    assert "completed after 3 failed attempt(s)" in log


@pytest.mark.timeout(120)
def test_a_fault_that_outlasts_the_patience_ends_the_run_with_status_1(start_node, ros, tmp_path, stack):
    stack.joints_nan = True
    stack.abort_reasons = ["fault: joints: joint state contains NaN or Inf"] * 100
    t0 = time.monotonic()
    status, log = run_trainer(start_node, ros, tmp_path, 90.0, fault_patience=4.0)
    assert status == 1, log
    print("\n" + "\n".join(line for line in log.splitlines() if "WARN" in line or "ERROR" in line))
    assert "run failed: episode" in log and "a fault outlasted the patience of 4 s" in log, log
    assert "joint positions contain NaN or Inf" in log.split("run failed:")[1], "the reason names the cause"
    assert log.count("stack unhealthy: joint_states: joint positions contain NaN or Inf") == 1, log
    assert len([s for s in stack.starts if "-it00-" in s]) == 1, "no retry while the stack is unhealthy"
    assert not (tmp_path / "out" / "summary.json").exists()
    assert time.monotonic() - t0 < 60



# ---- surviving node crashes and failed fits, against the stand-in stack ------------------------------------------

RUN = {"iterations": 2, "episodes_per_iteration": 3, "eval_episodes": 1}


@pytest.mark.timeout(150)
def test_a_killed_trainer_continues_its_run_where_it_was(start_node, ros, tmp_path, stack):
    import json

    params = {"success_threshold": 0.05, "bringup_timeout": 30.0, "episode_dir": str(tmp_path / "episodes"),
              "output_dir": str(tmp_path / "out"), "recovery_settle_time": 1.0, **RUN}
    first = start_node("trainer_node", params)
    ros.spin_until(lambda: len([s for s in stack.starts if "-it01-" in s]) == 2 or not first.alive(), 60,
                   "the second episode of iteration 1")
    first.kill9()  # in the middle of iteration 1's second episode
    assert stack.fits == [0, 1]
    starts_before = len(stack.starts)
    second = start_node("trainer_node", params)
    end = time.monotonic() + 90
    while second.alive():
        assert time.monotonic() < end, second.log()
        ros.spin(0.05)
    log = second.log()
    assert second.proc.wait(timeout=5) == 0, log
    assert "continuing the run saved in" in log and "(restart 1) at iteration 1, episode 2, policy policy-1" in log
    assert stack.fits == [0, 1, 2], "no fit asked for twice, none skipped"
    after = stack.starts[starts_before:]
    assert [s.split("-", 2)[-1] for s in after] == ["it01-ep01-r1", "it01-ep02-r1", "eval-ep00-r1"], after
    tag = after[0].split("-it01")[0]
    assert stack.starts[0].startswith(tag + "-it00-ep00"), "the run keeps its episode ids' prefix"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["episodes"] == 6 and len(summary["iterations"]) == 2 and summary["eval_episodes"] == 1
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["finished"] and state["restarts"] == 1
    assert [r["episode_id"].split("-", 2)[-1] for r in state["run"]["iterations"][1]] == [
        "it01-ep00", "it01-ep01-r1", "it01-ep02-r1"], "the episode done before the kill is kept"

    # A new trainer with the same settings does not continue a finished run: it starts a new one.
    third = start_node("trainer_node", {**params, "iterations": 1, "episodes_per_iteration": 1, "eval_episodes": 0})
    end = time.monotonic() + 60
    while third.alive():
        assert time.monotonic() < end, third.log()
        ros.spin(0.05)
    assert third.proc.wait(timeout=5) == 0 and "starting a new run" in third.log(), third.log()
    assert stack.fits[3:] == [0, 1]


@pytest.mark.timeout(120)
def test_a_failed_fit_keeps_the_previous_policy_and_the_run_goes_on(start_node, ros, tmp_path, stack):
    stack.fail_fits = [1, 1]  # the fit after iteration 0 fails twice
    status, log = run_trainer(start_node, ros, tmp_path, 90.0, iterations=2, episodes_per_iteration=1,
                              fit_retries=1)
    assert status == 0, log
    assert log.count("fit 1 failed (attempt") == 2 and "LQR-FLM update failed at iteration 1" in log
    assert "keeping policy policy-0 for the next iteration" in log
    assert stack.fits == [0, 1, 1, 1], "iteration 1 ran policy-0 again and its episodes were fitted as fit 1"
    assert stack.fit_final == [False, False, False, True], "only the fit after the last iteration is marked final"
    import json
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["iterations"][0]["extra"] == {"fit_failed": 1.0}


@pytest.mark.timeout(120)
def test_episodes_start_from_the_wide_start_while_their_policy_asks_for_it(start_node, ros, tmp_path, stack):
    stack.wide_fits = {0}  # the first policy (SOLAR's pretraining with pretrain_wide_start), not the next
    status, log = run_trainer(start_node, ros, tmp_path, 90.0, iterations=2, episodes_per_iteration=2)
    assert status == 0, log
    assert sorted(set(stack.started_wide.values())) == [("policy-0", True), ("policy-1", False)], stack.started_wide


@pytest.mark.timeout(120)
def test_the_first_iteration_can_have_its_own_number_of_episodes(start_node, ros, tmp_path, stack):
    # SOLAR's random pretraining episodes, then smaller iterations
    status, log = run_trainer(start_node, ros, tmp_path, 90.0, iterations=2, episodes_per_iteration=1,
                              first_iteration_episodes=3)
    assert status == 0, log
    assert stack.fits == [0, 1, 2] and stack.fit_episodes == [0, 3, 1], (stack.fits, stack.fit_episodes)
    assert stack.fit_final == [False, False, True]
    assert "iteration 0 episode 3/3" in log and "iteration 1 episode 1/1" in log


@pytest.mark.timeout(150)
def test_the_simulator_is_paused_during_each_fit_and_resumed_after(start_node, ros, tmp_path, stack):
    status, log = run_trainer(start_node, ros, tmp_path, 60.0, iterations=2, episodes_per_iteration=1)
    assert status == 0, log
    assert stack.fits == [0, 1, 2] and stack.paused_at_fit == [True, True, True]
    assert stack.pause_calls == [True, False] * 3 and not stack.paused
    stack.pause_calls.clear(), stack.paused_at_fit.clear()
    status, log = run_trainer(start_node, ros, tmp_path, 60.0, iterations=1, episodes_per_iteration=1,
                              pause_during_fits=False, output_dir=str(tmp_path / "out2"))
    assert status == 0, log
    assert stack.pause_calls == [] and stack.paused_at_fit == [False, False]


@pytest.mark.timeout(120)
def test_a_fitter_that_falls_silent_is_asked_again(start_node, ros, tmp_path, stack):
    stack.silent_fits = 1  # the first fit goal is accepted and never answered, with no feedback
    t0 = time.monotonic()
    status, log = run_trainer(start_node, ros, tmp_path, 90.0, fit_silence_timeout=2.0)
    assert status == 0, log
    assert "fit 0: no feedback from the fitter for 2 s (did it restart?); asking again" in log, log
    assert "fit 0 answered after 1 lost attempt(s)" in log
    assert stack.fits[:2] == [0, 0]
    assert time.monotonic() - t0 < 60
