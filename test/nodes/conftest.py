"""Harness for the node tests: real node processes under hard timeouts, and a test-side rclpy node.

Each test session gets its own ROS domain (from the pid) and localhost-only discovery, so parallel
runs do not see each other. Node processes are started with ``python -m solar_ros.nodes.<node>``
and a parameter file, their output goes to a log file that failing tests can print, and they are
always stopped (SIGINT, then SIGKILL) at teardown.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

os.environ["ROS_DOMAIN_ID"] = str(20 + os.getpid() % 80)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# UDP loopback, not Fast DDS's shared memory, for the test process and every node it starts: several tests kill a
# node with SIGKILL, and after a subscriber was killed that way a shared-memory writer of the test process once
# delivered nothing to any new subscriber for the rest of the module (a known Fast DDS behaviour with killed
# processes), failing five trainer tests in a row.
os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "UDPv4"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["PYTHONUNBUFFERED"] = "1"

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


class NodeProcess:
    """One node under test, in its own process."""

    def __init__(self, node: str, params: dict, log_dir: Path, extra_args: list[str] | None = None) -> None:
        self.node = node
        params_file = log_dir / f"{node}_{id(self)}.yaml"
        params_file.write_text(yaml.safe_dump({node: {"ros__parameters": params}}))
        self.log_path = log_dir / f"{node}_{id(self)}.log"
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", f"solar_ros.nodes.{node}", "--ros-args", "--params-file", str(params_file)]
        self.proc = subprocess.Popen(cmd + (extra_args or []), stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=dict(os.environ))

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)


class Ros:
    """A test-side rclpy node in its own context, spun on demand."""

    def __init__(self, name: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(0.0, end - time.monotonic())))

    def _spin_until_deadline(self, predicate, end: float) -> bool:
        """Spin until predicate() holds (True) or the monotonic clock passes end (False)."""
        while not predicate():
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.01)
        return True

    def spin_until(self, predicate, timeout: float, what: str = "condition") -> None:
        if not self._spin_until_deadline(predicate, time.monotonic() + timeout):
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def wait_for_subscribers(self, publisher, n: int = 1, timeout: float = 15.0) -> None:
        self.spin_until(lambda: publisher.get_subscription_count() >= n, timeout,
                        f"{n} subscriber(s) on {publisher.topic_name}")

    def wait_for_publishers(self, topic: str, n: int = 1, timeout: float = 15.0) -> None:
        self.spin_until(lambda: self.node.count_publishers(topic) >= n, timeout, f"a publisher on {topic}")

    def call(self, client, request, timeout: float = 10.0, resend_after: float | None = None):
        """Call a service and wait for its reply. With resend_after (only for requests that are safe to repeat) the
        request is sent again each resend_after seconds: a reply to a request sent just as the client was discovered
        can be lost in DDS when the server's reply writer has not yet matched the client's reader."""
        self.spin_until(lambda: client.service_is_ready(), timeout, f"service {client.srv_name}")
        end = time.monotonic() + timeout
        while True:
            future = client.call_async(request)
            attempt_end = end if resend_after is None else min(end, time.monotonic() + resend_after)
            if self._spin_until_deadline(future.done, attempt_end):
                return future.result()
            client.remove_pending_request(future)
            if time.monotonic() >= end:
                raise AssertionError(f"timed out after {timeout} s waiting for reply from {client.srv_name}")

    def topic_types(self) -> dict[str, list[str]]:
        return dict(self.node.get_topic_names_and_types())

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope="module")
def ros(request):
    harness = Ros(f"test_{request.module.__name__.replace('.', '_')}")
    yield harness
    harness.close()


@pytest.fixture
def fresh_ros(request):
    """A test-side node in a DDS participant of its own, for one test: for stand-ins of the stack whose readers a
    test kills with SIGKILL. A killed process's readers stay matched for a while in the participants that talked to
    it. Once in the full suite, the two trainer tests after the one that kills a trainer received no task costs from
    new writers of the module's shared participant within 30 s, and each passed alone; with a participant per test
    no writer outlives its test."""
    harness = Ros(f"test_{request.module.__name__.replace('.', '_')}_{abs(hash(request.node.name)) % 10**8}")
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def start_node(tmp_path_factory):
    """Factory: start_node(node, params) -> NodeProcess; all are stopped at module teardown."""
    log_dir = tmp_path_factory.mktemp("nodes")
    started: list[NodeProcess] = []

    def start(node: str, params: dict, extra_args: list[str] | None = None) -> NodeProcess:
        p = NodeProcess(node, params, log_dir, extra_args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def now_ns(ros: Ros) -> int:
    return ros.node.get_clock().now().nanoseconds
