#!/usr/bin/env python3
"""Fault injection on a learning run through the node stack (docs/reliability.md).

    python scripts/fault_injection.py [--seed 0] [--out runs/fault_injection] [--reference DIR] [--quick]

1. The reference: ``solar-ros launch sim`` learning ``sawyer_reach`` with ``lqr_joints`` (LQR-FLM on
   the joint state, the task's cost through the arm's kinematics; ``--iterations`` x
   ``--episodes-per-iteration`` training episodes, then ``--eval-episodes`` noise-free ones), no
   faults. ``--reference DIR`` reuses the summary of an earlier reference run instead.
2. The same run (same seed, same settings) with faults, one after the other, each once the stack
   has recovered from the previous one:

   a. ``--malformed-seconds`` (15) of malformed messages on every topic a node subscribes to:
      images of an unknown encoding, with a too short step, truncated data, no pixels or an
      impossible size (on /camera/image_raw and /solar/image), and of the wrong size
      (/solar/image); joint states with NaN, wrong names, wrong lengths, no velocities, zero, old
      and future stamps; latents of the wrong size, with NaN, of another model, with a covariance
      of the wrong size; invalid policies (NaN gains, wrong sizes, dt 0, an unknown state source,
      an asymmetric covariance); NaN, Inf, too short, empty and too long torque commands (into the
      simulator and the encoder); episode events of unknown kind or for episodes that are not
      running; NaN costs and costs of another task; step records of the running episode with NaN,
      outside the horizon or of the wrong size; model announcements of missing and non-model
      files. Every topic gets one message every 50 ms, cycling through its kinds.
   b. every node SIGKILLed in turn (the launcher's pid of it), each at a random time (seeded) 1-5 s
      after the stack recovered from the previous fault.

Per fault it prints: whether the run survived it (the node was respawned, the run completed and
lost at most the episode in flight), the time until the node was back (its new process started),
the recovery time (from the kill, or from the end of the malformed burst, to the start of the
first episode after it that the run kept; a fault after the run's last episode has none, and counts as
survived when the run still ends and writes its results), the episodes lost (attempts started from the episode in
flight at the fault until that one, which the run did not keep) and, for the run, the final
success against the reference's. It also checks that every episode the recorder indexed as
complete still loads. ``--quick`` is a smoke test of the script itself: a 2 x 2-episode run with
20-step episodes, 3 s of malformed messages, only the trainer killed, no reference run.
Exit status 0 when every fault was injected and survived and the success matches the reference.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
NODES = ["sim_arm_node", "camera_node", "encoder_node", "controller_node", "recorder_node", "model_fitting_node",
         "trainer_node"]
SUCCESS_TOLERANCE = 0.2
"""Largest difference of evaluation success (fraction) that counts as a match: 2 of 10 episodes."""
MESSAGE_PERIOD = 0.05
"""s between two malformed messages on one topic."""
RECOVERY_TIMEOUT = 300.0
"""s after a fault within which the run must be back to work."""


# ---- the launched stack ---------------------------------------------------------------------------------------

class Stack:
    """``solar-ros launch sim`` in a subprocess; its output goes to a log file and is parsed for the
    launcher's lines (which node was started with which pid, when)."""

    def __init__(self, out: Path, overrides: dict[str, object], env: dict[str, str]) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.cmd = [sys.executable, "-m", "solar_ros.cli", "launch", "sim"] + [f"{k}:={v}" for k, v in
                                                                             overrides.items()]
        self.log_path = out / "stack.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                     text=True, bufsize=1, start_new_session=True)
        self.pids: dict[str, int] = {}
        self.started: dict[str, list[tuple[float, int]]] = {n: [] for n in NODES}
        self.trainer_lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        pattern = re.compile(r"^\[launch\] started (\w+) \(pid (\d+)\)")
        for line in self.proc.stdout:
            now = time.monotonic()
            self._log.write(line)
            self._log.flush()
            m = pattern.match(line)
            if m:
                with self._lock:
                    self.pids[m.group(1)] = int(m.group(2))
                    self.started.setdefault(m.group(1), []).append((now, int(m.group(2))))
            elif line.startswith("[trainer_node"):
                self.trainer_lines.append((now, line.rstrip()))

    def starts_of(self, node: str) -> list[tuple[float, int]]:
        with self._lock:
            return list(self.started.get(node, []))

    def kill(self, node: str) -> tuple[float, int]:
        with self._lock:
            pid = self.pids[node]
        os.kill(pid, signal.SIGKILL)
        return time.monotonic(), pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.thread.join(timeout=5)
        self._log.close()


def run_overrides(args, out: Path) -> dict[str, object]:
    return {
        "recorder_node.output_dir": out / "episodes", "trainer_node.episode_dir": out / "episodes",
        "model_fitting_node.output_dir": out / "models", "trainer_node.output_dir": out / "run",
        "trainer_node.method": "lqr_joints", "controller_node.state_source": "joints",
        "trainer_node.seed": args.seed, "trainer_node.iterations": args.iterations,
        "trainer_node.episodes_per_iteration": args.episodes_per_iteration,
        "trainer_node.eval_episodes": args.eval_episodes, "trainer_node.horizon": args.horizon,
    }


def summary_of(out: Path) -> dict:
    return json.loads((out / "run" / "summary.json").read_text())


def run_reference(args, out: Path, env: dict[str, str]) -> dict:
    print(f"reference run (no faults) -> {out}", flush=True)
    t0 = time.monotonic()
    stack = Stack(out, run_overrides(args, out), env)
    try:
        rc = stack.proc.wait(timeout=args.run_timeout)
    except subprocess.TimeoutExpired:
        stack.stop()
        raise SystemExit(f"the reference run did not end within {args.run_timeout:g} s; log: {stack.log_path}")
    stack.stop()
    if rc != 0:
        raise SystemExit(f"the reference run failed (status {rc}); log: {stack.log_path}")
    summary = summary_of(out)
    print(f"  done in {time.monotonic() - t0:.0f} s: success {summary['success_rate']:.0%}, final distance "
          f"{summary['final_distance']:.4f} m", flush=True)
    return summary


# ---- watching the run, and the malformed messages --------------------------------------------------------------

class Ros:
    """The script's own ROS node: it watches /solar/episode and /solar/cost and publishes the malformed messages."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from solar_ros.msg import EpisodeEvent, TaskCost
        from solar_ros.nodes import contract

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("fault_injection", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.starts: dict[str, float] = {}
        """Episode id -> monotonic time its START was seen."""
        self.ends: dict[str, float] = {}
        self.running = ""
        self.sim_ns = 0
        """Newest simulated time seen (stamp of /solar/cost)."""
        self.node.create_subscription(EpisodeEvent, contract.EPISODE, self._on_event, contract.EVENT_QOS)
        self.node.create_subscription(TaskCost, contract.COST, self._on_cost, contract.RELIABLE_QOS)
        self._EpisodeEvent = EpisodeEvent

    def _on_event(self, msg) -> None:
        now = time.monotonic()
        if msg.event == self._EpisodeEvent.START:
            self.starts.setdefault(msg.episode_id, now)
            self.running = msg.episode_id
        elif msg.event in (self._EpisodeEvent.STOP, self._EpisodeEvent.ABORT):
            self.ends.setdefault(msg.episode_id, now)
            if msg.episode_id == self.running:
                self.running = ""

    def _on_cost(self, msg) -> None:
        self.sim_ns = max(self.sim_ns, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(0.0, end - time.monotonic())))

    def close(self) -> None:
        import rclpy
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _stamp(msg, ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(max(0, int(ns)), 1_000_000_000)


class Malformed:
    """Publishers of malformed messages for every topic a node subscribes to (see the module docstring)."""

    def __init__(self, ros: Ros, garbage_file: Path) -> None:
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray, String

        from solar_ros.core.types import LinearGaussianPolicy as LGPolicy
        from solar_ros.msg import EpisodeEvent, LatentState, LinearGaussianPolicy, PolicyStep, TaskCost
        from solar_ros.nodes import contract
        from solar_ros.runtime.policy_msg import PolicyPackage, policy_to_msg
        from solar_ros.runtime.safety import SAWYER_JOINT_NAMES

        self.ros = ros
        node = ros.node
        names = list(SAWYER_JOINT_NAMES)
        garbage_file.write_bytes(b"this is not a model checkpoint\n" * 10)

        def now() -> int:
            return ros.sim_ns or 1

        def image(height, width, encoding, step, size, stamp=None):
            def make():
                m = Image()
                _stamp(m, now() if stamp is None else stamp)
                m.height, m.width, m.encoding, m.step = height, width, encoding, step
                m.data = bytes(size)
                return m
            return make

        images = {
            "unknown encoding": image(64, 64, "yuv999", 192, 64 * 192),
            "step shorter than a row": image(64, 64, "rgb8", 100, 6400),
            "truncated data": image(64, 64, "rgb8", 192, 1000),
            "no pixels": image(0, 0, "rgb8", 0, 0),
            "impossible size": image(100_000, 100_000, "rgb8", 300_000, 16),
        }
        model_images = {**images, "wrong size (32x32)": image(32, 32, "rgb8", 96, 32 * 96)}

        def joints(kind):
            def make():
                m = JointState()
                stamp = {"zero stamp": 0, "old stamp": now() - 10_000_000_000,
                         "future stamp": now() + 10_000_000_000}.get(kind, now())
                _stamp(m, stamp)
                m.name = [f"joint_{i}" for i in range(7)] if kind == "wrong names" else list(names)
                m.position = [float("nan")] * 7 if kind == "NaN" else [0.0] * (5 if kind == "wrong lengths" else 7)
                m.velocity = [] if kind == "no velocities" else [0.0] * 7
                return m
            return make

        def latent(dim, mean, cov, model="stray-model"):
            def make():
                m = LatentState()
                _stamp(m, now())
                m.dim, m.mean, m.covariance, m.model_id = dim, mean, cov, model
                return m
            return make

        nan = float("nan")
        valid = PolicyPackage(LGPolicy.initial(50, 14, 7, 1.0), "stray-policy", 0.05, "joints", 0)

        def policy(kind):
            def make():
                m = policy_to_msg(valid, LinearGaussianPolicy())
                m.policy_id = f"stray-{kind.replace(' ', '-')}"
                if kind == "NaN gain":
                    g = list(m.gain)
                    g[0] = nan
                    m.gain = g
                elif kind == "wrong sizes":
                    m.gain = list(m.gain)[:-7]
                elif kind == "dt 0":
                    m.dt = 0.0
                elif kind == "unknown state source":
                    m.state_source = "telepathy"
                elif kind == "asymmetric covariance":
                    c = list(m.covariance)
                    c[1] = 5.0
                    m.covariance = c
                return m
            return make

        def command(values):
            return lambda: Float64MultiArray(data=values)

        def event(kind):
            def make():
                m = EpisodeEvent()
                _stamp(m, now())
                if kind == "unknown kind":
                    m.event, m.episode_id = 9, ros.running or "some-episode"
                elif kind == "stop of an episode not running":
                    m.event, m.episode_id, m.reason = EpisodeEvent.STOP, "no-such-episode", "injected"
                else:
                    m.event, m.episode_id, m.reason = EpisodeEvent.ABORT, "", "injected"
                return m
            return make

        def cost(task, value, distance):
            def make():
                m = TaskCost()
                _stamp(m, now())
                m.task, m.cost, m.distance = task, value, distance
                return m
            return make

        def step(kind):
            def make():
                m = PolicyStep()
                _stamp(m, now())
                m.episode_id = ros.running or "some-episode"
                m.time_index = 10_000 if kind == "outside the horizon" else 3
                m.state = [nan] * 14 if kind == "NaN" else [0.0] * (3 if kind == "wrong size" else 14)
                m.action, m.noise = [0.0] * 7, [0.0] * 7
                return m
            return make

        # topic -> (message type, QoS, {kind: factory})
        self.topics = {
            contract.CAMERA_RAW: (Image, contract.SENSOR_QOS, images),
            contract.MODEL_IMAGE: (Image, contract.SENSOR_QOS, model_images),
            contract.JOINT_STATES: (JointState, contract.RELIABLE_QOS, {
                k: joints(k) for k in ("NaN", "wrong names", "wrong lengths", "no velocities", "zero stamp",
                                       "old stamp", "future stamp")}),
            contract.LATENT: (LatentState, contract.SENSOR_QOS, {
                "dim field disagrees": latent(3, [0.0] * 5, [0.0] * 25),
                "NaN mean": latent(4, [nan] * 4, [1.0] * 16),
                "another model": latent(4, [0.1] * 4, list(np.eye(4).ravel())),
                "covariance of the wrong size": latent(4, [0.0] * 4, [1.0] * 3),
                "empty": latent(0, [], [])}),
            contract.POLICY: (LinearGaussianPolicy, contract.POLICY_QOS, {
                k: policy(k) for k in ("NaN gain", "wrong sizes", "dt 0", "unknown state source",
                                       "asymmetric covariance")}),
            contract.COMMANDS: (Float64MultiArray, contract.RELIABLE_QOS, {
                "NaN": command([nan] * 7), "Inf": command([float("inf")] + [0.0] * 6),
                "too short": command([1.0] * 3), "empty": command([]), "too long": command([0.5] * 20)}),
            contract.EPISODE: (EpisodeEvent, contract.EVENT_QOS, {
                k: event(k) for k in ("unknown kind", "stop of an episode not running", "abort without an id")}),
            contract.COST: (TaskCost, contract.RELIABLE_QOS, {
                "NaN cost": cost("sawyer_reach", nan, 0.1), "Inf distance": cost("sawyer_reach", 1.0, float("inf")),
                "another task": cost("moon_landing", 1.0, 0.0)}),
            contract.STEPS: (PolicyStep, contract.EVENT_QOS, {
                k: step(k) for k in ("NaN", "outside the horizon", "wrong size")}),
            contract.MODEL: (String, contract.MODEL_QOS, {
                "missing file": lambda: String(data="/nonexistent/model_999.pt"),
                "not a model": lambda: String(data=str(garbage_file.resolve()))}),
        }
        self.publishers = {t: node.create_publisher(cls, t, qos) for t, (cls, qos, _) in self.topics.items()}
        self.sent: dict[str, int] = {t: 0 for t in self.topics}
        self._next = {t: 0 for t in self.topics}

    def kinds(self) -> dict[str, list[str]]:
        return {t: list(kinds) for t, (_, _, kinds) in self.topics.items()}

    def publish_round(self) -> None:
        for topic, (_, _, kinds) in self.topics.items():
            factories = list(kinds.values())
            msg = factories[self._next[topic] % len(factories)]()
            self._next[topic] += 1
            self.publishers[topic].publish(msg)
            self.sent[topic] += 1

    def close(self) -> None:
        for pub in self.publishers.values():
            self.ros.node.destroy_publisher(pub)


# ---- the faults -----------------------------------------------------------------------------------------------

@dataclass
class Fault:
    name: str
    onset: float = 0.0
    """monotonic time of the kill, or of the malformed burst's start."""
    end: float = 0.0
    """monotonic time the fault stopped acting (the kill itself; the burst's end)."""
    killed_pid: int = 0
    respawned_after: float | None = None
    """s from the kill to the start of the node's new process."""
    restarted_during: list[str] = field(default_factory=list)
    """Nodes that had to be restarted during a malformed burst (none expected)."""
    recovery_episode: str = ""
    recovery_s: float | None = None
    lost: list[str] = field(default_factory=list)
    in_flight: str = ""
    injected: bool = False
    survived: bool = False
    note: str = ""


def in_flight_at(ros: Ros, t: float) -> str:
    started = [(s, e) for e, s in ros.starts.items() if s <= t and ros.ends.get(e, float("inf")) > t]
    return max(started)[1] if started else ""


def recovery_episode(ros: Ros, after: float, episode_dir: Path, must_be_used: set[str] | None = None) -> str:
    """The first episode started after ``after`` that was recorded complete (and kept by the run)."""
    from solar_ros.runtime.episode_store import read_index

    try:
        complete = {e["episode_id"] for e in read_index(episode_dir)}
    except ValueError:
        return ""
    for start, episode in sorted((s, e) for e, s in ros.starts.items() if s > after):
        if episode in complete and (must_be_used is None or episode in must_be_used):
            return episode
    return ""


def wait_recovered(ros: Ros, stack: Stack, after: float, episode_dir: Path, node: str | None = None) -> bool:
    end = time.monotonic() + RECOVERY_TIMEOUT
    while time.monotonic() < end and stack.alive():
        ros.spin(0.2)
        respawned = node is None or any(t > after for t, _ in stack.starts_of(node))
        if respawned and recovery_episode(ros, after, episode_dir):
            return True
    return False


def run_with_faults(args, out: Path, env: dict[str, str]) -> tuple[dict, list[Fault], dict]:
    print(f"run with faults -> {out}", flush=True)
    rng = random.Random(args.seed)
    kills = ["trainer_node"] if args.quick else list(NODES)
    ros = Ros()
    stack = Stack(out, run_overrides(args, out), env)
    episode_dir = out / "episodes"
    faults: list[Fault] = []
    malformed = None
    try:
        # Faults begin once the run is learning: its first training episode has started.
        end = time.monotonic() + 300
        while not ros.starts:
            if not stack.alive() or time.monotonic() > end:
                raise SystemExit(f"the run did not start an episode; log: {stack.log_path}")
            ros.spin(0.1)
        ros.spin(rng.uniform(1.0, 3.0))

        # (a) malformed messages on every subscribed topic
        fault = Fault(f"malformed messages, {args.malformed_seconds:g} s, every subscribed topic")
        malformed = Malformed(ros, out / "not_a_model.pt")
        before = {n: len(stack.starts_of(n)) for n in NODES}
        fault.onset = time.monotonic()
        fault.in_flight = ros.running
        print(f"  {fault.name} (in flight: {fault.in_flight or 'none'})", flush=True)
        next_round = fault.onset
        while time.monotonic() < fault.onset + args.malformed_seconds:
            if time.monotonic() >= next_round:
                malformed.publish_round()
                next_round += MESSAGE_PERIOD
            ros.executor.spin_once(timeout_sec=0.005)
        fault.end = time.monotonic()
        fault.injected = True
        malformed.close()
        fault.restarted_during = [n for n in NODES if len(stack.starts_of(n)) > before[n]]
        wait_recovered(ros, stack, fault.end, episode_dir)
        faults.append(fault)

        # (b) each node SIGKILLed in turn, at a random time after the previous recovery
        for node in kills:
            fault = Fault(f"SIGKILL {node}")
            delay = rng.uniform(1.0, 5.0)
            ros.spin(delay)
            if not stack.alive():
                fault.note = "the run had ended before this fault"
                faults.append(fault)
                continue
            fault.in_flight = ros.running
            fault.onset, fault.killed_pid = stack.kill(node)
            fault.end = fault.onset
            fault.injected = True
            print(f"  {fault.name} (pid {fault.killed_pid}) {delay:.1f} s after the previous recovery "
                  f"(in flight: {fault.in_flight or 'none'})", flush=True)
            wait_recovered(ros, stack, fault.onset, episode_dir, node)
            faults.append(fault)

        end = time.monotonic() + args.run_timeout
        while stack.alive() and time.monotonic() < end:  # to the end of the run, still watching its episodes
            ros.spin(0.5)
    finally:
        # the monitor keeps listening to the end of the run (episode starts of the last recovery)
        stack.stop()
        ros.close()
    rc = stack.proc.returncode

    from solar_ros.runtime.episode_store import load_episode, read_index
    from solar_ros.runtime.training_run import TrainerState

    state = TrainerState.load(out / "run")
    used = set(state.episode_ids()) if state is not None else set()
    summary = summary_of(out) if (out / "run" / "summary.json").is_file() else {}
    for fault in faults:
        if not fault.injected:
            continue
        if fault.name.startswith("SIGKILL"):
            node = fault.name.split()[1]
            restarts = [t for t, pid in stack.starts_of(node) if t > fault.onset]
            fault.respawned_after = restarts[0] - fault.onset if restarts else None
        fault.recovery_episode = recovery_episode(ros, fault.end, episode_dir, used)
        recovered_at = ros.starts.get(fault.recovery_episode)
        fault.recovery_s = recovered_at - fault.end if recovered_at is not None else None
        window_start = ros.starts.get(fault.in_flight, fault.onset)
        window_end = recovered_at if recovered_at is not None else float("inf")
        fault.lost = sorted(e for e, s in ros.starts.items() if window_start <= s < window_end and e not in used)
        if fault.name.startswith("SIGKILL"):
            node_ok = fault.respawned_after is not None
        else:
            node_ok = not fault.restarted_during
        # a fault that struck after the run's last episode had started has no episode to recover to: the run
        # survived it if it still ended and wrote its results (on a loaded machine a kill can land there)
        ended_after = (fault.recovery_s is None and bool(summary)
                       and not any(s > fault.end for s in ros.starts.values()))
        if ended_after:
            fault.note = "struck after the run's last episode; the run still ended and wrote its results"
        recovered = fault.recovery_s is not None or ended_after
        fault.survived = bool(rc == 0 and node_ok and recovered and len(fault.lost) <= 1)
    entries = read_index(episode_dir, status=None)
    unreadable = []
    for e in entries:
        if e.get("status") == "complete":
            try:
                load_episode(episode_dir, e)
            except ValueError as err:
                unreadable.append(f"{e['episode_id']}: {err}")
    missing = sorted(used - {e["episode_id"] for e in entries if e.get("status") == "complete"})
    record = {"launch_status": rc, "index_entries": len(entries),
              "complete": sum(e.get("status") == "complete" for e in entries),
              "statuses": {s: sum(e.get("status") == s for e in entries) for s in {e.get("status") for e in entries}},
              "unreadable_complete": unreadable, "used_not_complete": missing, "kept_episodes": len(used),
              "restarts_of_trainer": state.restarts if state is not None else None,
              "malformed_sent": malformed.sent if malformed is not None else {},
              "malformed_kinds": malformed.kinds() if malformed is not None else {}}
    return summary, faults, record


# ---- report -----------------------------------------------------------------------------------------------------

def table(faults: list[Fault]) -> str:
    rows = ["| fault | survived | node back after (s) | recovery (s) | episodes lost | in flight at the fault |",
            "|---|---|---|---|---|---|"]
    for f in faults:
        back = "-" if f.respawned_after is None else f"{f.respawned_after:.1f}"
        if not f.name.startswith("SIGKILL"):
            back = "no node restarted" if not f.restarted_during else "restarted: " + ", ".join(f.restarted_during)
        rec = (f"{f.recovery_s:.1f}" if f.recovery_s is not None
               else "after the last episode: the run ended" if f.note and f.survived else "-")
        ok = "yes" if f.survived else ("not injected" if not f.injected else "NO")
        rows.append(f"| {f.name} | {ok} | {back} | {rec} | {len(f.lost)} | {'yes' if f.in_flight else 'no'} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--episodes-per-iteration", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=0, help="policy steps per episode (0: the task's, 50)")
    parser.add_argument("--malformed-seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "fault_injection")
    parser.add_argument("--reference", type=Path, default=None,
                        help="reuse the reference run in this directory (its run/summary.json) instead of running it")
    parser.add_argument("--no-reference", action="store_true", help="no reference run (no success comparison)")
    parser.add_argument("--run-timeout", type=float, default=1800.0, help="s for one learning run")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 x 2 episodes of 20 steps, 3 s of malformed messages, only the trainer "
                             "killed, no reference run")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.episodes_per_iteration, args.eval_episodes = 3, 2, 1
        args.horizon, args.malformed_seconds, args.no_reference = 20, 3.0, True
    args.out = args.out.resolve()
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "MUJOCO_GL")})
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"machine: {os.cpu_count()} CPUs, 1-minute load average {load:.2f} at start; ROS domain "
          f"{env['ROS_DOMAIN_ID']}", flush=True)
    print(f"run: sawyer_reach, lqr_joints through the nodes, seed {args.seed}, {args.iterations} x "
          f"{args.episodes_per_iteration} training episodes, {args.eval_episodes} evaluation episodes", flush=True)
    reference = None
    if args.reference is not None:
        reference = summary_of(args.reference.resolve())
        print(f"reference: {args.reference} (success {reference['success_rate']:.0%})", flush=True)
    elif not args.no_reference:
        reference = run_reference(args, args.out / "reference", env)
    t0 = time.monotonic()
    summary, faults, record = run_with_faults(args, args.out / "faults", env)
    wall = time.monotonic() - t0

    print("\n" + table(faults))
    total_lost = sum(len(f.lost) for f in faults)
    lines = [f"run with faults: launch exit status {record['launch_status']}, {wall:.0f} s wall"]
    if summary:
        lines.append(f"final success {summary['success_rate']:.0%} over {summary['eval_episodes']} evaluation "
                     f"episodes, final distance {summary['final_distance']:.4f} m, {summary['episodes']} training "
                     "episodes")
    if reference is not None:
        lines.append(f"reference (no faults, same seed): success {reference['success_rate']:.0%}, final distance "
                     f"{reference['final_distance']:.4f} m")
    lost_ids = ", ".join(e for f in faults for e in f.lost) or "none"
    lines.append(f"episodes lost to the faults: {total_lost} ({lost_ids})")
    lines.append(f"recorder index: {record['index_entries']} entries {record['statuses']}; complete episodes that "
                 f"do not load: {len(record['unreadable_complete'])}; episodes the run kept that are not complete in "
                 f"the index: {len(record['used_not_complete'])}")
    lines.append("malformed messages sent: " + ", ".join(f"{t} {n}" for t, n in record["malformed_sent"].items()))
    print("\n".join(lines), flush=True)

    match = None
    if reference is not None and summary:
        match = abs(summary["success_rate"] - reference["success_rate"]) <= SUCCESS_TOLERANCE + 1e-9
        print(f"success matches the reference within {SUCCESS_TOLERANCE:.0%}: {'yes' if match else 'NO'}")
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "faults": [asdict(f) for f in faults],
              "summary": summary, "reference": reference, "record": record, "wall_s": wall,
              "success_matches_reference": match, "table": table(faults)}
    (args.out / "fault_injection.json").write_text(json.dumps(result, indent=1, default=str))
    ok = (all(f.injected and f.survived for f in faults) and record["launch_status"] == 0
          and not record["unreadable_complete"] and not record["used_not_complete"] and match is not False)
    print(f"\nall faults survived with nothing recorded lost: {'yes' if ok else 'NO'}; details: "
          f"{args.out / 'fault_injection.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
