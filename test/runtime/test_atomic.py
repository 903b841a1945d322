"""Atomic writes (solar_ros.runtime.atomic): a reader never sees a torn file, whether the writer is
rewriting it as fast as it can or is killed (SIGKILL) at an arbitrary moment."""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from solar_ros.runtime.atomic import read_json, write_json_atomic, write_with_atomic

WRITER = """
import hashlib, sys
from solar_ros.runtime.atomic import write_json_atomic
path = sys.argv[1]
n = 0
while True:
    n += 1
    body = str(n) * (200_000 // len(str(n)))  # ~200 kB: many write() calls per file
    write_json_atomic(path, {"n": n, "body": body, "sha": hashlib.sha256(body.encode()).hexdigest()})
"""


def check(path: Path) -> int:
    data = read_json(path)  # a torn file is not valid JSON, or fails the checksum
    assert hashlib.sha256(data["body"].encode()).hexdigest() == data["sha"]
    return data["n"]


@pytest.mark.timeout(60)
def test_a_reader_never_sees_a_torn_file_while_a_writer_rewrites_it_and_is_killed(tmp_path):
    path = tmp_path / "state.json"
    rng = random.Random(0)
    versions: set[int] = set()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    for _ in range(4):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env)
        try:
            end = time.monotonic() + 15
            while not path.exists() and time.monotonic() < end:
                time.sleep(0.01)
            stop_at = time.monotonic() + rng.uniform(0.3, 1.0)
            while time.monotonic() < stop_at:  # read while it writes
                versions.add(check(path))
        finally:
            writer.send_signal(signal.SIGKILL)  # at an arbitrary point of a write
            writer.wait(timeout=10)
        last = check(path)
        assert last >= 1
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "state.json"]
        assert all(name.startswith(".state.json.") and name.endswith(".tmp") for name in leftovers), leftovers
    assert len(versions) > 4, f"the reader saw only versions {sorted(versions)}: it did not read during writes"


def test_failed_writes_leave_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError):
        write_with_atomic(tmp_path / "plot.png", broken)
    assert not (tmp_path / "plot.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"], "no temporary files left behind"
    write_with_atomic(tmp_path / "plot.png", lambda tmp: tmp.write_bytes(b"png"))
    assert (tmp_path / "plot.png").read_bytes() == b"png"
