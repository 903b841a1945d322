"""ROS 2 message definitions as MCAP schemas (``ros2msg`` encoding).

An MCAP channel of CDR messages carries its type's full definition: the type's ``.msg`` text
followed by every nested type, each after a ``====`` separator line and a ``MSG: pkg/Type`` line,
the layout rosbag2 writes and Foxglove and the ``mcap`` ROS 2 decoder read. The ``.msg`` files are
found in the ``share/<pkg>/msg`` folders of the ROS installation (``AMENT_PREFIX_PATH``, the
interpreter's prefix) and, for this package's own types, in the repository's ``msg/`` folder.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PRIMITIVE_TYPES = frozenset({
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
    "int64", "uint64", "string", "wstring",
})
_SEPARATOR = "=" * 80


def _search_dirs() -> list[Path]:
    dirs = []
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share")
    dirs.append(Path(sys.prefix) / "share")
    return dirs


def _repo_msg_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "msg"


def split_type_name(type_name: str) -> tuple[str, str]:
    """'sensor_msgs/msg/Image' or 'sensor_msgs/Image' -> ('sensor_msgs', 'Image')."""
    parts = type_name.strip().split("/")
    if len(parts) == 3 and parts[1] == "msg":
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(f"not a ROS 2 message type name: {type_name!r} (expected pkg/msg/Type)")


@lru_cache(maxsize=None)
def message_text(type_name: str) -> str:
    """The ``.msg`` text of one type (``FileNotFoundError`` naming the places searched)."""
    pkg, name = split_type_name(type_name)
    candidates = [d / pkg / "msg" / f"{name}.msg" for d in _search_dirs()]
    if pkg == "solar_ros":
        candidates.insert(0, _repo_msg_dir() / f"{name}.msg")
    for path in candidates:
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError(f"definition of {pkg}/msg/{name} not found; looked in: "
                            + ", ".join(str(p) for p in candidates))


def field_types(text: str, package: str) -> list[str]:
    """Non-primitive field types ('pkg/Type') used by a ``.msg`` text, in order of appearance."""
    types = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        token = line.split()[0]
        token = token.split("[", 1)[0].split("<=", 1)[0]
        if token in PRIMITIVE_TYPES:  # constants are always primitive too
            continue
        if token == "Header":
            dep = "std_msgs/Header"
        elif "/" in token:
            dep = "/".join(split_type_name(token))
        else:
            dep = f"{package}/{token}"
        types.append(dep)
    return types


@lru_cache(maxsize=None)
def message_definition(type_name: str) -> str:
    """Full ``ros2msg`` schema text of ``type_name`` with its nested types appended."""
    pkg, name = split_type_name(type_name)
    main = message_text(f"{pkg}/{name}")
    seen: list[str] = []

    def visit(text: str, package: str) -> None:
        for dep in field_types(text, package):
            if dep not in seen:
                seen.append(dep)
                visit(message_text(dep), split_type_name(dep)[0])

    visit(main, pkg)
    parts = [main.rstrip("\n")]
    for dep in seen:
        parts.append(f"{_SEPARATOR}\nMSG: {dep}\n{message_text(dep).rstrip(chr(10))}")
    return "\n".join(parts) + "\n"
