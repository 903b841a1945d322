"""The stack's Fast DDS profile (config/fastdds_profile.xml): every node gets it unless a profiles file is already
named, and it really keeps shared memory out (whose port health checks held the controller's input for 333 ms
when a process joined; docs/ros_interfaces.md)."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from solar_ros.launcher import CONFIG_DIR, FASTDDS_PROFILE, launch, middleware_env

PROFILE = str(CONFIG_DIR / FASTDDS_PROFILE)


def test_middleware_env_names_the_profile_unless_one_is_set(tmp_path):
    assert middleware_env(environ={}) == {"FASTDDS_DEFAULT_PROFILES_FILE": PROFILE}
    assert middleware_env(environ={"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"}) == {}
    assert middleware_env(environ={"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"}) == {}
    # a configuration directory without its own profile falls back to the package's
    assert middleware_env(tmp_path, environ={}) == {"FASTDDS_DEFAULT_PROFILES_FILE": PROFILE}
    (tmp_path / FASTDDS_PROFILE).write_text("<dds/>")
    assert middleware_env(tmp_path, environ={}) == {"FASTDDS_DEFAULT_PROFILES_FILE": str(tmp_path / FASTDDS_PROFILE)}


_SHM_MAPS = """
import os, time, rclpy
rclpy.init()
node = rclpy.create_node("profile_check")
time.sleep(0.5)
maps = open("/proc/self/maps").read()
print("shared memory" if "/dev/shm/fastdds" in maps else "none")
node.destroy_node()
rclpy.shutdown()
"""


@pytest.mark.ros
@pytest.mark.timeout(120)
@pytest.mark.parametrize("with_profile", [True, False])
def test_the_profile_keeps_shared_memory_out(with_profile):
    unset = ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_DOMAIN_ID": str(200 + os.getpid() % 30)})
    if with_profile:
        env.update(middleware_env(environ={}))
    out = subprocess.run([sys.executable, "-c", _SHM_MAPS], env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    # without it Fast DDS maps its shared-memory segment and port: the check can tell the two apart
    assert out.stdout.split() == (["none"] if with_profile else ["shared", "memory"]), out.stderr


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_launched_nodes_run_with_the_profile(monkeypatch):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)
    out = io.StringIO()
    runner = threading.Thread(target=launch, args=("sim",), kwargs={"nodes": ["camera_node"], "output": out,
                                                                     "duration": 6.0})
    runner.start()
    deadline = time.monotonic() + 20
    while not (m := re.search(r"started camera_node \(pid (\d+)\)", out.getvalue())):
        assert time.monotonic() < deadline, out.getvalue()
        time.sleep(0.05)
    environ = open(f"/proc/{m[1]}/environ", "rb").read().split(b"\0")
    runner.join(timeout=30)
    assert f"FASTDDS_DEFAULT_PROFILES_FILE={PROFILE}".encode() in environ


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_a_node_started_by_hand_runs_with_the_profile(tmp_path):
    """`ros2 run solar_ros <node>` without the launcher: run_node gives the process the profile before rclpy.init."""
    unset = ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_DOMAIN_ID": str(200 + os.getpid() % 30)})
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "solar_ros.nodes.labeller_node"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "labelling success" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)
        maps = open(f"/proc/{proc.pid}/maps").read()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "/dev/shm/fastdds" not in maps
