"""``realtime_priority`` of the real-time nodes: every thread of the process under SCHED_FIFO where the OS grants
it, a warning and the normal scheduler where it does not, a configuration error for a bad value."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


def _granted() -> bool:
    """Whether this machine lets a process of this user take SCHED_FIFO (tried in a child process)."""
    code = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_every_thread_goes_to_sched_fifo_or_nothing_changes():
    code = """
import os, threading
from solar_ros.nodes.common import set_normal_scheduler, set_realtime_priority
started = threading.Event()
t = threading.Thread(target=lambda: started.wait(5)); t.start()   # a thread that exists before the call
try:
    n = set_realtime_priority(7)
except PermissionError:
    print("refused", os.sched_getscheduler(0) == os.SCHED_OTHER)
else:
    policies = {os.sched_getscheduler(int(tid)) for tid in os.listdir("/proc/self/task")}
    print("granted", n >= 2, policies == {os.SCHED_FIFO}, os.sched_getparam(0).sched_priority)
    set_normal_scheduler()
    print({os.sched_getscheduler(int(tid)) for tid in os.listdir("/proc/self/task")} == {os.SCHED_OTHER})
started.set(); t.join()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == (["granted", "True", "True", "7", "True"] if _granted() else ["refused", "True"])


def test_a_background_thread_of_a_real_time_thread_runs_under_the_normal_scheduler():
    code = """
import os, threading
from solar_ros.nodes.common import set_realtime_priority, start_background_thread
try:
    set_realtime_priority(7)
except PermissionError:
    print("refused")
else:
    seen = {}
    plain = threading.Thread(target=lambda: seen.update(plain=os.sched_getscheduler(0))); plain.start(); plain.join()
    start_background_thread(lambda: seen.update(background=os.sched_getscheduler(0)), "loader").join()
    print("granted", seen["plain"] == os.SCHED_FIFO, seen["background"] == os.SCHED_OTHER,
          os.sched_getscheduler(0) == os.SCHED_FIFO)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == (["granted", "True", "True", "True"] if _granted() else ["refused"])


def test_controller_node_applies_it_or_says_why_not(start_node, ros):
    controller = start_node("controller_node", {"state_source": "joints", "realtime_priority": 20})
    deadline = time.monotonic() + 30
    while "controller: state_source" not in controller.log():
        assert controller.alive() and time.monotonic() < deadline, controller.log()
        time.sleep(0.1)
    if _granted():
        assert "SCHED_FIFO priority 20" in controller.log()
        assert os.sched_getscheduler(controller.proc.pid) == os.SCHED_FIFO
        assert os.sched_getparam(controller.proc.pid).sched_priority == 20
    else:
        assert "realtime_priority 20 not granted" in controller.log()
        assert os.sched_getscheduler(controller.proc.pid) == os.SCHED_OTHER


@pytest.mark.parametrize("value", [100, -1, 2.5])
def test_a_bad_priority_is_a_configuration_error(start_node, value):
    node = start_node("controller_node", {"state_source": "joints", "realtime_priority": value})
    assert node.proc.wait(timeout=30) == 2
    assert "realtime_priority must be an integer 0-99" in node.log()
