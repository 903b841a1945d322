"""The project's Sawyer model, generated from ``config/sawyer_parameters.yaml``.

One set of facts (the kinematic chain with URDF joint origins, masses, centres of mass, full inertia
tensors, joint limits, torque limits, simplified collision shapes) feeds two generators:

* :func:`build_mjcf` -- the MuJoCo model used by the ``sawyer_reach`` task and the MuJoCo arm driver
  (torque ``<motor>`` actuators, gravity compensation, a fixed scene camera, a table, a target marker),
  with ``stacking=`` (:class:`StackingScene`: gripper, held and base blocks, a second camera) the
  ``sawyer_stack`` task's, and with ``pushing=`` (:class:`PushingScene`: gripper with closed fingers, a mug,
  a coaster, a second camera) the ``sawyer_push`` task's;
* :func:`build_urdf` -- ``urdf/sawyer.urdf`` for robot_state_publisher, rviz and Gazebo (with a
  ``<ros2_control>`` block for ``gz_ros2_control/GazeboSimSystem``), written by
  ``scripts/gen_sawyer_models.py``.

What is not in the yaml is a modelling choice made here and documented next to its constant: joint
damping and armature (reflected rotor inertia), the scene (table, floor, pedestal, camera pose) and
the head, which is fixed at head_pan = 0 because nothing in the project moves it. In MuJoCo the
simplified link shapes collide with the table and floor but not with each other (they overlap at
ordinary poses where the real links do not).

Frames: the world frame is the robot's ``base`` frame (x forward, z up), so positions reported by the
environment and targets are in the base frame, as the real robot's ``endpoint_pose()`` reports them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

ARM_JOINTS: tuple[str, ...] = tuple(f"right_j{i}" for i in range(7))
"""The seven actuated joints, shoulder to wrist (the Intera / ros2_control joint order)."""

PARAMS_FILENAME = "sawyer_parameters.yaml"

# Viscous joint damping (N m s / rad) and armature (kg m^2, the motor's reflected rotor inertia), per
# arm joint. Not in the yaml: chosen so that the light wrist links stay well behaved at a 2 ms physics
# step and so that the arm coasts to rest within about a second after a push, as the real arm's
# geared joints do.
JOINT_DAMPING = (4.0, 4.0, 2.0, 2.0, 0.5, 0.5, 0.4)
JOINT_ARMATURE = (0.3, 0.3, 0.1, 0.1, 0.02, 0.02, 0.01)

HEAD_PAN_ANGLE = 0.0
"""head_pan is modelled as a fixed joint at this angle (the screen faces forward)."""

FLOOR_HEIGHT = -0.93
"""Floor z in the base frame: the arm sits on a pedestal about 0.93 m tall."""

TABLE_CENTER = (0.62, 0.1, -0.26)
"""Centre of the table box (base frame); its top surface is at z = -0.24."""
TABLE_HALF_SIZE = (0.35, 0.55, 0.02)


@dataclass(frozen=True)
class SceneCamera:
    """A fixed external camera, looking at ``lookat`` from ``pos`` (base frame), vertical fov in degrees."""

    pos: tuple[float, float, float] = (1.7, -0.7, 1.1)
    lookat: tuple[float, float, float] = (0.4, 0.1, 0.25)
    fovy: float = 55.0

    def rotation(self) -> np.ndarray:
        """Camera-to-base rotation, columns (right, up, backward): MuJoCo's camera axes (looks along -z)."""
        forward = np.asarray(self.lookat, float) - np.asarray(self.pos, float)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        return np.column_stack([right, up, -forward])

    def project(self, points: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (column, row from the top-left corner; ``image_size`` square) and depth (m) of
        ``points`` (..., 3) in the base frame, for the pinhole camera MuJoCo renders (the square image's
        horizontal fov equals ``fovy``). A point is in the image where both coordinates lie in [0, image_size)."""
        q = (np.asarray(points, float) - np.asarray(self.pos, float)) @ self.rotation()
        depth = -q[..., 2]
        focal = image_size / 2 / np.tan(np.radians(self.fovy) / 2)
        pixels = np.stack([q[..., 0], -q[..., 1]], -1) / depth[..., None] * focal + image_size / 2
        return pixels, depth


SCENE_CAMERA = SceneCamera()

TABLE_TOP = TABLE_CENTER[2] + TABLE_HALF_SIZE[2]
"""z of the table's top surface (base frame)."""


@dataclass(frozen=True)
class StackingScene:
    """What ``build_mjcf(stacking=...)`` adds for block stacking (the ``sawyer_stack`` task).

    * A simplified parallel gripper, body ``right_gripper`` fixed at the ``right_hand`` frame (a palm and
      two fingers; mass ``gripper_mass``, gravity-compensated like the arm; its geoms collide with the
      table and the base block like the arm's).
    * The held block: a box geom ``held_block`` on ``right_gripper`` (rigidly attached, as if gripped),
      centre at ``held_offset`` in the ``right_hand`` frame (site ``held_block`` marks it). It collides
      with the table and the base block (contype 1) but with no arm or gripper geom (conaffinity 0, and
      the arm's geoms have conaffinity 0).
    * The base block: a mocap body ``base_block`` (fixed in the world, moved only by setting its mocap
      position) with a box geom resting on the table at ``base_xy``; it takes the place of the reach
      task's ``target`` marker (the first mocap body either way).
    * A camera ``stack`` (``camera``) that frames the stacking area, in addition to ``scene``.
    """

    held_half_size: tuple[float, float, float] = (0.025, 0.025, 0.025)
    held_offset: tuple[float, float, float] = (0.0, 0.0, 0.06)
    held_rgba: tuple[float, float, float, float] = (1.0, 0.85, 0.0, 1.0)  # bright yellow
    base_half_size: tuple[float, float, float] = (0.04, 0.04, 0.025)
    base_xy: tuple[float, float] = (0.6, 0.05)
    base_rgba: tuple[float, float, float, float] = (0.1, 0.25, 0.9, 1.0)  # blue
    gripper_mass: float = 0.3
    camera: SceneCamera = SceneCamera(pos=(0.85, -0.7, 0.42), lookat=(0.58, 0.06, -0.04), fovy=40.0)

    @property
    def base_pos(self) -> tuple[float, float, float]:
        """Centre of the base block resting on the table."""
        return (self.base_xy[0], self.base_xy[1], TABLE_TOP + self.base_half_size[2])

    @property
    def stacked_pos(self) -> tuple[float, float, float]:
        """Centre of the held block resting on top of the base block, centred above it."""
        x, y, z = self.base_pos
        return (x, y, z + self.base_half_size[2] + self.held_half_size[2])


@dataclass(frozen=True)
class PushingScene:
    """What ``build_mjcf(pushing=...)`` adds for mug pushing (the ``sawyer_push`` task).

    * The gripper of :class:`StackingScene` (body ``right_gripper`` at the ``right_hand`` frame, the same palm
      and mass, gravity-compensated) with its fingers closed and nothing in them: two round fingers
      (capsules of ``finger_radius``, ``finger_length`` from the palm to their round ends) touching side by
      side along the hand's x axis. Their end, ``tip_offset`` along the hand's z axis, is marked by the site
      ``gripper_tip``; they are long enough that the palm passes above the mug. The gripper's geoms
      collide with the table and the mug. (Round, not box, fingers: MuJoCo's multi-point contacts between a
      box edge and the mug's curved side gave normals along the box's face instead of the mug's, which
      shoved the mug sideways.)
    * The mug: a free body ``mug`` (a ``<freejoint>``; its qpos follows the arm's 7 angles) with one
      cylinder geom of ``mug_radius``, height ``2 * mug_half_height`` and ``mug_mass``, standing upright on
      the table at ``mug_xy`` (the task places it at every reset). It collides with the table, the
      gripper and the arm's links. Its contacts take the mug's ``mug_friction`` (geom ``priority`` 1). With
      the table's and the gripper's friction of 1 instead, the scripted push of ``test/envs/test_env_push.py``
      leaned the mug by 6 degrees and moved it 3 cm instead of 15.
    * The coaster: a mocap body ``coaster`` (moved only by setting its mocap position) with a thin disk
      that has no contacts, lying on the table top at ``coaster_xy``; it marks the goal and takes the reach
      task's ``target`` marker's place (the first mocap body either way).
    * A camera ``push`` (``camera``) that frames the pushing area, in addition to ``scene``.
    """

    mug_radius: float = 0.04
    mug_half_height: float = 0.05
    mug_mass: float = 0.3
    mug_rgba: tuple[float, float, float, float] = (1.0, 0.85, 0.0, 1.0)  # bright yellow
    mug_friction: tuple[float, float, float] = (0.3, 0.005, 0.0001)
    mug_xy: tuple[float, float] = (0.5, 0.1)
    coaster_radius: float = 0.05
    coaster_half_thickness: float = 0.001
    coaster_xy: tuple[float, float] = (0.65, 0.05)
    coaster_rgba: tuple[float, float, float, float] = (0.1, 0.85, 0.1, 1.0)  # green
    palm_half_size: tuple[float, float, float] = (0.036, 0.025, 0.015)
    finger_radius: float = 0.008
    finger_length: float = 0.095
    gripper_mass: float = 0.3
    camera: SceneCamera = SceneCamera(pos=(0.54, -0.32, 0.2), lookat=(0.54, 0.08, -0.21), fovy=38.0)

    @property
    def tip_offset(self) -> tuple[float, float, float]:
        """End of the closed fingers in the ``right_hand`` frame: below the palm, along the hand's z axis."""
        return (0.0, 0.0, 2 * self.palm_half_size[2] + self.finger_length)

    @property
    def mug_rest_z(self) -> float:
        """Height of the mug's centre standing upright on the table."""
        return TABLE_TOP + self.mug_half_height

    @property
    def mug_pos(self) -> tuple[float, float, float]:
        """Centre of the mug standing upright at ``mug_xy``."""
        return (self.mug_xy[0], self.mug_xy[1], self.mug_rest_z)

    @property
    def coaster_pos(self) -> tuple[float, float, float]:
        """Centre of the coaster lying on the table top at ``coaster_xy``."""
        return (self.coaster_xy[0], self.coaster_xy[1], TABLE_TOP + self.coaster_half_thickness)


# --------------------------------------------------------------------------------------------------
# The facts
# --------------------------------------------------------------------------------------------------

def default_params_path() -> Path:
    """Where ``sawyer_parameters.yaml`` lives: the source tree's ``config/``, else the installed share dir."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "config" / PARAMS_FILENAME]
    try:  # an installed package keeps its config under share/solar_ros/config
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("solar_ros")) / "config" / PARAMS_FILENAME)
    except Exception:  # noqa: BLE001 - no ament index (plain checkout): only the source tree counts
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"cannot find {PARAMS_FILENAME}; looked in: " + ", ".join(str(p) for p in candidates)
    )


def load_sawyer_params(path: str | Path | None = None) -> dict[str, Any]:
    """Read and check the Sawyer facts (joints, links, neutral pose); ``path`` defaults to the project's yaml."""
    path = Path(path) if path is not None else default_params_path()
    with open(path) as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for key in ("neutral_pose", "joints", "links"):
        if key not in params:
            raise ValueError(f"{path}: missing key {key!r}")
    joints = {j["name"]: j for j in params["joints"]}
    missing = [name for name in ARM_JOINTS if name not in joints]
    if missing:
        raise ValueError(f"{path}: arm joints missing: {missing}")
    for name in ARM_JOINTS:
        j = joints[name]
        if j.get("type") != "revolute" or "limit" not in j:
            raise ValueError(f"{path}: joint {name} must be revolute with limits")
    if len(params["neutral_pose"]) != len(ARM_JOINTS):
        raise ValueError(f"{path}: neutral_pose needs {len(ARM_JOINTS)} angles")
    links = {l["name"] for l in params["links"]}
    for j in params["joints"]:
        if j["parent"] not in links | {"base"} or (j["type"] == "revolute" and j["child"] not in links):
            raise ValueError(f"{path}: joint {j['name']} refers to an unknown link")
    return params


def joint_limits(params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Arrays over the arm joints: lower, upper (rad), velocity (rad/s), effort (N m)."""
    joints = {j["name"]: j for j in params["joints"]}
    out = {k: np.array([float(joints[n]["limit"][k]) for n in ARM_JOINTS])
           for k in ("lower", "upper", "velocity", "effort")}
    return out


# --------------------------------------------------------------------------------------------------
# Small rotation helpers (URDF rpy = fixed-axis roll about x, then pitch about y, then yaw about z)
# --------------------------------------------------------------------------------------------------

def rpy_to_matrix(rpy: Sequence[float]) -> np.ndarray:
    """Rotation matrix Rz(yaw) Ry(pitch) Rx(roll) of a URDF ``rpy``."""
    r, p, y = (float(a) for a in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix, w >= 0."""
    R = np.asarray(R, dtype=float)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def matrix_to_rpy(R: np.ndarray) -> np.ndarray:
    """URDF roll, pitch, yaw of a rotation matrix (inverse of :func:`rpy_to_matrix` away from pitch = +-pi/2)."""
    R = np.asarray(R, dtype=float)
    pitch = math.atan2(-R[2, 0], math.hypot(R[0, 0], R[1, 0]))
    roll = math.atan2(R[2, 1], R[2, 2])
    yaw = math.atan2(R[1, 0], R[0, 0])
    return np.array([roll, pitch, yaw])


def _fmt(values: Sequence[float] | float) -> str:
    """Stable, compact number formatting so that generated files only change when the facts do."""
    if np.isscalar(values):
        values = [values]
    out = []
    for v in values:
        s = f"{float(v):.10g}"
        out.append("0" if s == "-0" else s)
    return " ".join(out)


# --------------------------------------------------------------------------------------------------
# MJCF
# --------------------------------------------------------------------------------------------------

_ARM_RGBA = {"right_arm_base_link": "0.2 0.2 0.2 1", "head": "0.15 0.15 0.15 1", "right_l6": "0.25 0.25 0.25 1"}
_DEFAULT_ARM_RGBA = "0.75 0.12 0.12 1"  # Sawyer red


def _mjcf_inertial(link: dict[str, Any]) -> str:
    I = link["inertia"]
    return (
        f'<inertial pos="{_fmt(link["com_xyz"])}" mass="{_fmt(link["mass"])}" '
        f'fullinertia="{_fmt([I["ixx"], I["iyy"], I["izz"], I["ixy"], I["ixz"], I["iyz"]])}"/>'
    )


def _mjcf_geom(link: dict[str, Any]) -> str:
    col = link.get("collision")
    if not col:
        return ""
    rgba = _ARM_RGBA.get(link["name"], _DEFAULT_ARM_RGBA)
    if col["shape"] == "sphere":
        size = _fmt(col["radius"])
    elif col["shape"] == "cylinder":
        size = _fmt([col["radius"], 0.5 * float(col["length"])])
    else:
        raise ValueError(f"link {link['name']}: unsupported collision shape {col['shape']!r}")
    # Arm geoms collide with the scene (table, floor) but not with each other: the simplified shapes
    # overlap at ordinary poses, which the real arm's links do not.
    return (
        f'<geom name="{link["name"]}_geom" type="{col["shape"]}" size="{size}" pos="{_fmt(col["origin_xyz"])}" '
        f'rgba="{rgba}" contype="1" conaffinity="0"/>'
    )


def _mjcf_target(target_radius: float) -> list[str]:
    """The reach task's goal marker: a mocap body with a non-colliding green sphere."""
    return [
        '    <body name="target" mocap="true" pos="0.6 0 0.1">',
        f'      <geom name="target_marker" type="sphere" size="{_fmt(target_radius)}" rgba="0.1 0.85 0.1 1" '
        'contype="0" conaffinity="0"/>',
        "    </body>",
    ]


def _mjcf_stacking_world(stacking: StackingScene) -> list[str]:
    """The stacking scene's world parts: the ``stack`` camera and the base block (a mocap body)."""
    cam = stacking.camera
    return [
        f'    <camera name="stack" pos="{_fmt(cam.pos)}" quat="{_fmt(matrix_to_quat(cam.rotation()))}" '
        f'fovy="{_fmt(cam.fovy)}"/>',
        f'    <body name="base_block" mocap="true" pos="{_fmt(stacking.base_pos)}">',
        # Static like the table: the held block and the arm collide with it (conaffinity 1).
        f'      <geom name="base_block" type="box" size="{_fmt(stacking.base_half_size)}" '
        f'rgba="{_fmt(stacking.base_rgba)}" contype="0" conaffinity="1"/>',
        "    </body>",
    ]


def _mjcf_gripper_body(hand_joint: dict[str, Any], gravcomp: str, indent: str, *, mass: float,
                       com: Sequence[float], palm_half: Sequence[float], palm_pos: Sequence[float],
                       finger_type: str, finger_size: Sequence[float],
                       finger_pos: tuple[Sequence[float], Sequence[float]], inner: Sequence[str] = ()) -> list[str]:
    """The body ``right_gripper`` at the ``right_hand`` frame: a palm box, a left and a right finger (geoms of
    ``finger_type`` and ``finger_size``; all colliding with the scene like the arm's geoms), then the lines of
    ``inner`` (the body's other elements)."""
    R = rpy_to_matrix(hand_joint["origin_rpy"])
    pose = f'pos="{_fmt(hand_joint["origin_xyz"])}" quat="{_fmt(matrix_to_quat(R))}"'
    dark = 'rgba="0.2 0.2 0.2 1" contype="1" conaffinity="0"'
    m = float(mass)
    return [
        f'{indent}<body name="right_gripper" {pose} gravcomp="{gravcomp}">',
        f'{indent}  <inertial pos="{_fmt(com)}" mass="{_fmt(m)}" '
        f'diaginertia="{_fmt([m * 1e-3, m * 1e-3, m * 7e-4])}"/>',
        f'{indent}  <geom name="gripper_palm" type="box" size="{_fmt(palm_half)}" pos="{_fmt(palm_pos)}" {dark}/>',
        *(f'{indent}  <geom name="gripper_finger_{side}" type="{finger_type}" size="{_fmt(finger_size)}" '
          f'pos="{_fmt(pos)}" {dark}/>' for side, pos in zip(("left", "right"), finger_pos)),
        *(f"{indent}  {line}" for line in inner),
        f"{indent}</body>",
    ]


def _mjcf_gripper(stacking: StackingScene, hand_joint: dict[str, Any], gravcomp: str, indent: str) -> list[str]:
    """The gripper body at the ``right_hand`` frame, holding the block (see :class:`StackingScene`)."""
    hx, hy, hz = stacking.held_half_size
    ox, oy, oz = stacking.held_offset
    top = oz - hz  # the block's top face along the hand's z axis
    palm_half = 0.5 * (top - 0.005)  # the palm spans hand z 0 .. 5 mm above the block
    finger_len = 0.9 * hz  # the fingers grip the upper half of the block, well above its bottom face
    finger_x = hx + 0.006  # the fingers close along the hand's x axis
    finger_z = top + 0.5 * finger_len - 0.005
    return _mjcf_gripper_body(
        hand_joint, gravcomp, indent, mass=stacking.gripper_mass, com=[ox, oy, 0.5 * oz],
        palm_half=[hx + 0.011, hy, palm_half], palm_pos=[ox, oy, palm_half],
        finger_type="box", finger_size=[0.005, 0.4 * hy, 0.5 * finger_len],
        finger_pos=([ox + finger_x, oy, finger_z], [ox - finger_x, oy, finger_z]),
        inner=[
            # The held block: collides with the table and the base block (both conaffinity 1), never with the
            # arm or the gripper (their conaffinity and its own are 0).
            f'<geom name="held_block" type="box" size="{_fmt(stacking.held_half_size)}" '
            f'pos="{_fmt(stacking.held_offset)}" rgba="{_fmt(stacking.held_rgba)}" contype="1" conaffinity="0"/>',
            f'<site name="held_block" pos="{_fmt(stacking.held_offset)}" size="0.005" rgba="0.1 0.8 0.1 1" '
            'group="3"/>',
        ],
    )


def _mjcf_push_gripper(pushing: PushingScene, hand_joint: dict[str, Any], gravcomp: str, indent: str) -> list[str]:
    """The gripper body at the ``right_hand`` frame with its fingers closed (see :class:`PushingScene`)."""
    px, py, pz = pushing.palm_half_size
    r, half = pushing.finger_radius, 0.5 * pushing.finger_length
    finger_z = 2 * pz + half  # from the palm's face down to the tip
    return _mjcf_gripper_body(
        hand_joint, gravcomp, indent, mass=pushing.gripper_mass, com=[0.0, 0.0, pz],
        palm_half=[px, py, pz], palm_pos=[0.0, 0.0, pz],
        finger_type="capsule", finger_size=[r, half - r],  # a capsule's size: radius, half its straight part
        finger_pos=([r, 0.0, finger_z], [-r, 0.0, finger_z]),  # closed: the two fingers touch at x = 0
        inner=[f'<site name="gripper_tip" pos="{_fmt(pushing.tip_offset)}" size="0.005" rgba="0.1 0.8 0.1 1" '
               'group="3"/>'],
    )


def _mjcf_pushing_world(pushing: PushingScene) -> list[str]:
    """The pushing scene's world parts before the arm: the ``push`` camera and the coaster (a mocap body)."""
    cam = pushing.camera
    disk = [pushing.coaster_radius, pushing.coaster_half_thickness]
    return [
        f'    <camera name="push" pos="{_fmt(cam.pos)}" quat="{_fmt(matrix_to_quat(cam.rotation()))}" '
        f'fovy="{_fmt(cam.fovy)}"/>',
        f'    <body name="coaster" mocap="true" pos="{_fmt(pushing.coaster_pos)}">',
        # A mark on the table, no contacts: the mug stands on the table through it.
        f'      <geom name="coaster" type="cylinder" size="{_fmt(disk)}" rgba="{_fmt(pushing.coaster_rgba)}" '
        'contype="0" conaffinity="0"/>',
        "    </body>",
    ]


def _mjcf_mug(pushing: PushingScene) -> list[str]:
    """The mug, a free body after the arm (so that the arm's joints keep qpos 0..6)."""
    return [
        f'    <body name="mug" pos="{_fmt(pushing.mug_pos)}">',
        '      <freejoint name="mug"/>',
        # Collides with the table and the floor (conaffinity 1) and with the gripper and the arm (their contype
        # 1); priority 1: its contacts use its own friction, not the larger one of the table or the gripper.
        f'      <geom name="mug" type="cylinder" size="{_fmt([pushing.mug_radius, pushing.mug_half_height])}" '
        f'mass="{_fmt(pushing.mug_mass)}" friction="{_fmt(pushing.mug_friction)}" priority="1" '
        f'rgba="{_fmt(pushing.mug_rgba)}" contype="1" conaffinity="1"/>',
        "    </body>",
    ]


def build_mjcf(
    params: dict[str, Any] | None = None,
    *,
    image_size: int = 64,
    timestep: float = 0.002,
    gravity_compensation: bool = True,
    target_radius: float = 0.04,
    camera: SceneCamera = SCENE_CAMERA,
    stacking: StackingScene | None = None,
    pushing: PushingScene | None = None,
    hand_marker_radius: float = 0.0,
) -> str:
    """The MuJoCo model (MJCF text) of the Sawyer in its scene.

    * Bodies ``right_arm_base_link`` (fixed to the world at the base frame), ``right_l0`` .. ``right_l6``
      with hinge joints ``right_j0`` .. ``right_j6`` about their local z, placed by the yaml's joint
      origins; ``head`` fixed on ``right_l0`` (head_pan = 0).
    * Site ``right_hand`` (the end-effector frame), sites for ``right_hand_camera`` and ``head_camera``.
    * Torque actuators ``right_j0`` .. ``right_j6``: ``<motor>`` with gear 1 and ctrlrange = the torque
      limit. Gravity compensation (``gravcomp`` on every moving body, routed through the actuators with
      ``actuatorgravcomp``) is added to the commanded torque, and the joint's actuator force range clamps
      the sum to the torque limit, as on the real robot whose controller adds gravity compensation to
      user torques. ``gravity_compensation=False`` builds the model with it off (``model.body_gravcomp``
      can also be changed at run time).
    * A mocap body ``target`` with a non-colliding sphere marker, a table, a floor, a pedestal and a
      fixed camera ``scene`` (``image_size`` x ``image_size`` offscreen buffer).
    * ``stacking``: add the block-stacking scene (a gripper holding a block, a base block on the table in
      place of the target marker, a second camera ``stack``; see :class:`StackingScene`). Without it
      (the default) the model is the reach task's, unchanged.
    * ``pushing``: add the mug-pushing scene (a gripper with closed fingers, a free mug standing on the table,
      a coaster on the table in place of the target marker, a second camera ``push``; see
      :class:`PushingScene`). Not together with ``stacking``.
    * ``hand_marker_radius`` > 0: a bright yellow sphere of that radius (m) resting on the flange (its
      centre one radius along the ``right_hand`` frame's z from its origin), for looks only (no
      contacts, no mass): a salient hand for the camera, like a coloured ball taped to the real
      gripper. 0 (the default): none.
    """
    params = params if params is not None else load_sawyer_params()
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    links = {l["name"]: l for l in params["links"]}
    children: dict[str, list[dict[str, Any]]] = {}
    for j in params["joints"]:
        children.setdefault(j["parent"], []).append(j)
    limits = joint_limits(params)
    damping = dict(zip(ARM_JOINTS, JOINT_DAMPING))
    armature = dict(zip(ARM_JOINTS, JOINT_ARMATURE))
    gravcomp = "1" if gravity_compensation else "0"
    hand_joint = next((j for j in params["joints"] if j["child"] == "right_hand"), None)
    if stacking is not None and pushing is not None:
        raise ValueError("build_mjcf takes one task scene: stacking or pushing, not both")
    if stacking is not None and (hand_joint is None or hand_joint["parent"] not in links):
        raise ValueError("the stacking scene needs a 'right_hand' frame fixed on an arm link")
    if pushing is not None and (hand_joint is None or hand_joint["parent"] not in links):
        raise ValueError("the pushing scene needs a 'right_hand' frame fixed on an arm link")
    if not hand_marker_radius >= 0.0:
        raise ValueError(f"hand_marker_radius must be >= 0, got {hand_marker_radius}")
    if hand_marker_radius > 0.0 and (hand_joint is None or hand_joint["parent"] not in links):
        raise ValueError("a hand marker needs a 'right_hand' frame fixed on an arm link")

    def body(joint: dict[str, Any], indent: str) -> list[str]:
        """A child body for a joint of the yaml (revolute arm joints get a hinge, the rest are rigid)."""
        name, child = joint["name"], joint["child"]
        R = rpy_to_matrix(joint["origin_rpy"])
        if name == "head_pan":
            R = R @ rpy_to_matrix([0.0, 0.0, HEAD_PAN_ANGLE])
        pose = f'pos="{_fmt(joint["origin_xyz"])}" quat="{_fmt(matrix_to_quat(R))}"'
        if child not in links:  # a frame without mass (camera, hand): a site on the parent body
            return [f'{indent}<site name="{child}" {pose} size="0.01" rgba="0.1 0.8 0.1 1" group="3"/>']
        lines = [f'{indent}<body name="{child}" {pose} gravcomp="{gravcomp}">']
        if name in ARM_JOINTS:
            i = ARM_JOINTS.index(name)
            effort = limits["effort"][i]
            lines.append(
                f'{indent}  <joint name="{name}" type="hinge" axis="0 0 1" '
                f'range="{_fmt([limits["lower"][i], limits["upper"][i]])}" damping="{_fmt(damping[name])}" '
                f'armature="{_fmt(armature[name])}" actuatorgravcomp="true" '
                f'actuatorfrcrange="{_fmt([-effort, effort])}"/>'
            )
        lines.append(f"{indent}  {_mjcf_inertial(links[child])}")
        geom = _mjcf_geom(links[child])
        if geom:
            lines.append(f"{indent}  {geom}")
        for sub in children.get(child, []):
            lines += body(sub, indent + "  ")
        if stacking is not None and child == hand_joint["parent"]:
            lines += _mjcf_gripper(stacking, hand_joint, gravcomp, indent + "  ")
        if pushing is not None and child == hand_joint["parent"]:
            lines += _mjcf_push_gripper(pushing, hand_joint, gravcomp, indent + "  ")
        if hand_marker_radius > 0.0 and child == hand_joint["parent"]:
            # On the flange face: the hand frame's origin plus one radius along its z (the tool axis).
            tool_axis = rpy_to_matrix(hand_joint["origin_rpy"])[:, 2]
            centre = np.asarray(hand_joint["origin_xyz"], float) + tool_axis * hand_marker_radius
            lines.append(f'{indent}  <geom name="hand_marker" type="sphere" pos="{_fmt(centre)}" '
                         f'size="{_fmt(hand_marker_radius)}" rgba="1 0.85 0 1" contype="0" conaffinity="0" '
                         'mass="0"/>')
        lines.append(f"{indent}</body>")
        return lines

    mount = children.get("base", [])
    if len(mount) != 1 or mount[0]["child"] != "right_arm_base_link":
        raise ValueError("expected one joint from 'base' to 'right_arm_base_link'")
    base_joint = mount[0]
    base_link = links["right_arm_base_link"]
    arm = [
        f'    <body name="right_arm_base_link" pos="{_fmt(base_joint["origin_xyz"])}" '
        f'quat="{_fmt(matrix_to_quat(rpy_to_matrix(base_joint["origin_rpy"])))}">',
        f"      {_mjcf_inertial(base_link)}",
        f"      {_mjcf_geom(base_link)}",
    ]
    for sub in children.get("right_arm_base_link", []):
        arm += body(sub, "      ")
    arm.append("    </body>")

    cam_quat = matrix_to_quat(camera.rotation())
    pedestal_half = 0.5 * (0.0 - FLOOR_HEIGHT)
    actuators = []
    for i, name in enumerate(ARM_JOINTS):
        e = limits["effort"][i]
        actuators.append(f'    <motor name="{name}" joint="{name}" gear="1" ctrlrange="{_fmt([-e, e])}"/>')

    return "\n".join([
        '<mujoco model="sawyer">',
        '  <compiler angle="radian" autolimits="true"/>',
        f'  <option timestep="{_fmt(timestep)}" integrator="implicitfast" gravity="0 0 -9.81"/>',
        "  <visual>",
        '    <quality shadowsize="0" offsamples="0"/>',
        f'    <global offwidth="{image_size}" offheight="{image_size}"/>',
        '    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0 0 0"/>',
        "  </visual>",
        "  <worldbody>",
        '    <light name="top" directional="true" pos="0 0 3" dir="0 0 -1" diffuse="0.5 0.5 0.5" '
        'castshadow="false"/>',
        # Scene geoms: the table and floor collide with the arm (conaffinity 1), the rest is for looks.
        f'    <geom name="floor" type="plane" pos="0 0 {_fmt(FLOOR_HEIGHT)}" size="6 6 0.1" '
        'rgba="0.55 0.55 0.5 1" contype="0" conaffinity="1"/>',
        '    <geom name="wall" type="plane" pos="-1.2 0 0" xyaxes="0 1 0 0 0 1" size="4 3 0.1" '
        'rgba="0.7 0.72 0.75 1" contype="0" conaffinity="0"/>',
        f'    <geom name="pedestal" type="cylinder" pos="0 0 {_fmt(-pedestal_half)}" '
        f'size="0.1 {_fmt(pedestal_half)}" rgba="0.3 0.3 0.3 1" contype="0" conaffinity="0"/>',
        f'    <geom name="table" type="box" pos="{_fmt(TABLE_CENTER)}" size="{_fmt(TABLE_HALF_SIZE)}" '
        'rgba="0.62 0.48 0.32 1" contype="0" conaffinity="1"/>',
        f'    <camera name="scene" pos="{_fmt(camera.pos)}" quat="{_fmt(cam_quat)}" fovy="{_fmt(camera.fovy)}"/>',
        *(_mjcf_stacking_world(stacking) if stacking is not None
          else _mjcf_pushing_world(pushing) if pushing is not None else _mjcf_target(target_radius)),
        *arm,
        *(_mjcf_mug(pushing) if pushing is not None else []),
        "  </worldbody>",
        "  <actuator>",
        *actuators,
        "  </actuator>",
        "</mujoco>",
        "",
    ])


# --------------------------------------------------------------------------------------------------
# URDF
# --------------------------------------------------------------------------------------------------

def _urdf_origin(xyz: Sequence[float], rpy: Sequence[float]) -> str:
    return f'<origin xyz="{_fmt(xyz)}" rpy="{_fmt(rpy)}"/>'


def _urdf_link(link: dict[str, Any] | None, name: str) -> list[str]:
    if link is None:
        return [f'  <link name="{name}"/>']
    I = link["inertia"]
    lines = [
        f'  <link name="{name}">',
        "    <inertial>",
        f'      {_urdf_origin(link["com_xyz"], [0, 0, 0])}',
        f'      <mass value="{_fmt(link["mass"])}"/>',
        f'      <inertia ixx="{_fmt(I["ixx"])}" ixy="{_fmt(I["ixy"])}" ixz="{_fmt(I["ixz"])}" '
        f'iyy="{_fmt(I["iyy"])}" iyz="{_fmt(I["iyz"])}" izz="{_fmt(I["izz"])}"/>',
        "    </inertial>",
    ]
    col = link.get("collision")
    if col:
        if col["shape"] == "sphere":
            geom = f'<sphere radius="{_fmt(col["radius"])}"/>'
        elif col["shape"] == "cylinder":
            geom = f'<cylinder radius="{_fmt(col["radius"])}" length="{_fmt(col["length"])}"/>'
        else:
            raise ValueError(f"link {name}: unsupported collision shape {col['shape']!r}")
        for tag in ("visual", "collision"):
            lines += [
                f"    <{tag}>",
                f'      {_urdf_origin(col["origin_xyz"], [0, 0, 0])}',
                f"      <geometry>{geom}</geometry>",
            ]
            if tag == "visual":
                color = "sawyer_dark" if name in _ARM_RGBA else "sawyer_red"
                lines.append(f'      <material name="{color}"/>')
            lines.append(f"    </{tag}>")
    lines.append("  </link>")
    return lines


def build_urdf(params: dict[str, Any] | None = None, *, controllers_config: str | None = None,
               camera: SceneCamera = SCENE_CAMERA, camera_image_size: int = 64) -> str:
    """The URDF (text) of the arm, from the same facts as :func:`build_mjcf`.

    Contents: every link and joint of the yaml (``head_pan`` as a fixed joint at the modelled angle),
    limits and damping on ``right_j0..right_j6``, frames ``right_hand``, ``head_camera``,
    ``right_hand_camera``, the simulated scene camera ``scene_camera`` (the MuJoCo ``scene`` camera's
    pose, x forward) with ``scene_camera_optical`` (z forward, x right, y down) and a Gazebo camera sensor
    on it publishing ``camera/image_raw``, and a ``<ros2_control>`` system using
    ``gz_ros2_control/GazeboSimSystem`` with an effort command interface (limits = torque limits) and
    position / velocity / effort state interfaces per arm joint (initial position = neutral pose).

    ``controllers_config``: path of a controller-manager parameters file; when given, the
    ``gz_ros2_control`` Gazebo system plugin is added with it (a plain URDF cannot look the path up
    itself, so a launch file that knows the installed path passes it).
    """
    params = params if params is not None else load_sawyer_params()
    links = {l["name"]: l for l in params["links"]}
    limits = joint_limits(params)
    neutral = [float(a) for a in params["neutral_pose"]]
    frame_names = ["base"] + [l["name"] for l in params["links"]]
    for j in params["joints"]:
        if j["child"] not in frame_names:
            frame_names.append(j["child"])

    out = [
        '<?xml version="1.0"?>',
        "<!-- Generated by scripts/gen_sawyer_models.py from config/sawyer_parameters.yaml: do not edit. -->",
        '<robot name="sawyer">',
        '  <material name="sawyer_red"><color rgba="0.75 0.12 0.12 1"/></material>',
        '  <material name="sawyer_dark"><color rgba="0.2 0.2 0.2 1"/></material>',
    ]
    for name in frame_names:
        out += _urdf_link(links.get(name), name)
    for j in params["joints"]:
        name = j["name"]
        if name in ARM_JOINTS:
            i = ARM_JOINTS.index(name)
            out += [
                f'  <joint name="{name}" type="revolute">',
                f'    <parent link="{j["parent"]}"/>',
                f'    <child link="{j["child"]}"/>',
                f'    {_urdf_origin(j["origin_xyz"], j["origin_rpy"])}',
                f'    <axis xyz="{_fmt(j["axis"])}"/>',
                f'    <limit lower="{_fmt(limits["lower"][i])}" upper="{_fmt(limits["upper"][i])}" '
                f'effort="{_fmt(limits["effort"][i])}" velocity="{_fmt(limits["velocity"][i])}"/>',
                f'    <dynamics damping="{_fmt(JOINT_DAMPING[i])}"/>',
                "  </joint>",
            ]
        else:
            rpy = j["origin_rpy"]
            comment = ""
            if name == "head_pan":
                rpy = matrix_to_rpy(rpy_to_matrix(rpy) @ rpy_to_matrix([0.0, 0.0, HEAD_PAN_ANGLE]))
                comment = ("  <!-- head_pan: revolute on the robot, fixed here "
                           "(nothing in the project moves the head) -->\n")
            out.append(
                f'{comment}  <joint name="{name}" type="fixed">\n'
                f'    <parent link="{j["parent"]}"/>\n'
                f'    <child link="{j["child"]}"/>\n'
                f"    {_urdf_origin(j['origin_xyz'], rpy)}\n"
                "  </joint>"
            )

    # The scene camera: x forward (ROS camera link convention), plus the optical frame.
    R_mj = camera.rotation()  # columns: right, up, backward
    R_link = np.column_stack([-R_mj[:, 2], -R_mj[:, 0], R_mj[:, 1]])  # x forward, y left, z up
    R_optical_in_link = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # z fwd, x right, y down
    hfov = math.radians(camera.fovy)  # square image: horizontal fov = vertical fov
    out += [
        '  <link name="scene_camera"/>',
        '  <joint name="scene_camera_joint" type="fixed">',
        '    <parent link="base"/>',
        '    <child link="scene_camera"/>',
        f"    {_urdf_origin(camera.pos, matrix_to_rpy(R_link))}",
        "  </joint>",
        '  <link name="scene_camera_optical"/>',
        '  <joint name="scene_camera_optical_joint" type="fixed">',
        '    <parent link="scene_camera"/>',
        '    <child link="scene_camera_optical"/>',
        f"    {_urdf_origin([0, 0, 0], matrix_to_rpy(R_optical_in_link))}",
        "  </joint>",
        '  <gazebo reference="scene_camera">',
        '    <sensor name="scene_camera" type="camera">',
        "      <update_rate>20</update_rate>",
        "      <topic>camera/image_raw</topic>",
        "      <gz_frame_id>scene_camera_optical</gz_frame_id>",
        "      <camera>",
        f"        <horizontal_fov>{_fmt(hfov)}</horizontal_fov>",
        f"        <image><width>{camera_image_size}</width><height>{camera_image_size}</height>"
        "<format>R8G8B8</format></image>",
        "        <clip><near>0.05</near><far>10</far></clip>",
        "      </camera>",
        "    </sensor>",
        "  </gazebo>",
    ]

    out += ['  <ros2_control name="SawyerGazeboSystem" type="system">',
            "    <hardware>",
            "      <plugin>gz_ros2_control/GazeboSimSystem</plugin>",
            "    </hardware>"]
    for i, name in enumerate(ARM_JOINTS):
        e = limits["effort"][i]
        out += [
            f'    <joint name="{name}">',
            '      <command_interface name="effort">',
            f'        <param name="min">{_fmt(-e)}</param>',
            f'        <param name="max">{_fmt(e)}</param>',
            "      </command_interface>",
            '      <state_interface name="position">',
            f'        <param name="initial_value">{_fmt(neutral[i])}</param>',
            "      </state_interface>",
            '      <state_interface name="velocity"/>',
            '      <state_interface name="effort"/>',
            "    </joint>",
        ]
    out.append("  </ros2_control>")
    if controllers_config is not None:
        out += [
            "  <gazebo>",
            '    <plugin filename="gz_ros2_control-system" name="gz_ros2_control::GazeboSimROS2ControlPlugin">',
            f"      <parameters>{controllers_config}</parameters>",
            "    </plugin>",
            "  </gazebo>",
        ]
    out += ["</robot>", ""]
    return "\n".join(out)
