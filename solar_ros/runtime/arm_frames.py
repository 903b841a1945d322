"""The arm's frames from its joint angles and its robot description (URDF), without ROS.

What ``robot_state_publisher`` computes on a full ROS 2 install, for the inspector here: every joint
of the URDF gives one transform parent link -> child link, ``origin(xyz, rpy) * rotation(axis,
angle)`` for a revolute joint (the angle from ``/joint_states``), ``origin`` for a fixed one. The
rotation helpers are the ones the project's URDF and MuJoCo model are built with
(:mod:`solar_ros.envs.sawyer_model`), so the frames match the simulated arm
(``test/runtime/test_arm_frames.py`` compares them with MuJoCo's forward kinematics).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from ..envs.sawyer_model import matrix_to_quat, rpy_to_matrix

MOVING_TYPES = ("revolute", "continuous")


@dataclass(frozen=True)
class UrdfJoint:
    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray
    """4x4 homogeneous transform of the child frame in the parent frame at angle 0."""
    axis: np.ndarray


@dataclass(frozen=True)
class Transform:
    """One frame in its parent: translation (x, y, z) in metres, rotation as a unit quaternion (x, y, z, w)."""

    parent: str
    child: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]


def _floats(text: str | None, n: int, what: str) -> np.ndarray:
    values = [float(v) for v in (text or " ".join(["0"] * n)).split()]
    if len(values) != n:
        raise ValueError(f"{what}: expected {n} numbers, got {text!r}")
    return np.array(values)


def parse_urdf(text: str) -> list[UrdfJoint]:
    """The joints of a URDF (``ValueError`` on XML that is not a robot, or joints without parent/child)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise ValueError(f"robot description is not valid XML: {err}") from None
    if root.tag != "robot":
        raise ValueError(f"robot description: root element is <{root.tag}>, expected <robot>")
    joints = []
    for j in root.findall("joint"):
        name = j.get("name", "")
        parent, child = j.find("parent"), j.find("child")
        if parent is None or child is None:
            raise ValueError(f"joint {name!r} has no parent or child link")
        origin = j.find("origin")
        T = np.eye(4)
        if origin is not None:
            T[:3, :3] = rpy_to_matrix(_floats(origin.get("rpy"), 3, f"joint {name!r} rpy"))
            T[:3, 3] = _floats(origin.get("xyz"), 3, f"joint {name!r} xyz")
        axis_el = j.find("axis")
        axis = _floats(axis_el.get("xyz") if axis_el is not None else "1 0 0", 3, f"joint {name!r} axis")
        norm = np.linalg.norm(axis)
        if j.get("type") in MOVING_TYPES and not norm > 0:
            raise ValueError(f"joint {name!r} has a zero axis")
        joints.append(UrdfJoint(name, j.get("type", ""), parent.get("link", ""), child.get("link", ""), T,
                                axis / norm if norm > 0 else axis))
    return joints


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    C = 1.0 - c
    return np.array([
        [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
        [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
        [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
    ])


class ArmFrames:
    """Frames of a robot description for given joint angles.

    ``transforms(positions)`` returns one :class:`Transform` per URDF joint (parent -> child, the
    tree a 3D view composes); ``world(positions)`` the 4x4 pose of every link in the root frame.
    Moving joints missing from ``positions`` keep angle 0 (a URDF's fixed joints never move; the
    Sawyer's head pan is fixed in the project's description).
    """

    def __init__(self, urdf_text: str) -> None:
        self.joints = parse_urdf(urdf_text)
        if not self.joints:
            raise ValueError("robot description has no joints")
        children = [j.child for j in self.joints]
        if len(set(children)) != len(children):
            raise ValueError("robot description: a link is the child of two joints")
        roots = {j.parent for j in self.joints} - set(children)
        if len(roots) != 1:
            raise ValueError(f"robot description: expected one root link, found {sorted(roots)}")
        self.root = roots.pop()
        # parents before children, so one pass composes the poses
        order, known, pending = [], {self.root}, list(self.joints)
        while pending:
            ready = [j for j in pending if j.parent in known]
            if not ready:
                raise ValueError(f"robot description: links not connected to {self.root!r}: "
                                 f"{sorted(j.child for j in pending)}")
            order += ready
            known |= {j.child for j in ready}
            pending = [j for j in pending if j.parent not in known or j.child not in known]
        self.joints = order
        self.moving = [j.name for j in self.joints if j.type in MOVING_TYPES]

    def _local(self, joint: UrdfJoint, positions: dict[str, float]) -> np.ndarray:
        if joint.type not in MOVING_TYPES:
            return joint.origin
        angle = float(positions.get(joint.name, 0.0))
        if not math.isfinite(angle):
            raise ValueError(f"joint {joint.name}: angle {angle} is not finite")
        R = np.eye(4)
        R[:3, :3] = _axis_angle(joint.axis, angle)
        return joint.origin @ R

    def transforms(self, positions: dict[str, float]) -> list[Transform]:
        out = []
        for j in self.joints:
            T = self._local(j, positions)
            w, x, y, z = matrix_to_quat(T[:3, :3])
            out.append(Transform(j.parent, j.child, tuple(float(v) for v in T[:3, 3]),
                                 (float(x), float(y), float(z), float(w))))
        return out

    def world(self, positions: dict[str, float]) -> dict[str, np.ndarray]:
        """4x4 pose of every link in the root link's frame."""
        poses = {self.root: np.eye(4)}
        for j in self.joints:
            poses[j.child] = poses[j.parent] @ self._local(j, positions)
        return poses
