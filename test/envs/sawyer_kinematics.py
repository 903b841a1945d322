"""Independent Sawyer kinematics and energies from the yaml facts (4x4 transforms), for the tests.

Written from the URDF conventions alone (joint origin = translate then fixed-axis roll/pitch/yaw,
revolute joints about local z), sharing no code with solar_ros.envs.sawyer_model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from solar_ros.envs.sawyer_model import JOINT_ARMATURE  # a modelling choice, not a yaml fact

REPO = Path(__file__).resolve().parents[2]
FACTS = yaml.safe_load((REPO / "config" / "sawyer_parameters.yaml").read_text())
ARM = [f"right_j{i}" for i in range(7)]
G = 9.81


def rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def transform(xyz, rpy):
    """URDF joint origin as a 4x4 matrix: translate, then fixed-axis roll, pitch, yaw."""
    T = np.eye(4)
    T[:3, :3] = rot_z(rpy[2]) @ rot_y(rpy[1]) @ rot_x(rpy[0])
    T[:3, 3] = xyz
    return T


def link_poses(q, joints=FACTS["joints"]):
    """Base-frame 4x4 pose of every link and frame for arm angles q (head_pan at 0).

    ``joints``: dicts with name, type, parent, child, origin_xyz, origin_rpy (the yaml's, or parsed from a URDF).
    """
    angles = dict(zip(ARM, q))
    poses = {"base": np.eye(4)}
    pending = list(joints)
    while pending:
        j = pending.pop(0)
        if j["parent"] not in poses:
            pending.append(j)
            continue
        T = poses[j["parent"]] @ transform(j["origin_xyz"], j["origin_rpy"])
        if j["type"] == "revolute":
            R = np.eye(4)
            R[:3, :3] = rot_z(angles.get(j["name"], 0.0))  # every joint turns about its local z
            T = T @ R
        poses[j["child"]] = T
    return poses


def random_configs(n, seed):
    rng = np.random.default_rng(seed)
    lims = {j["name"]: j["limit"] for j in FACTS["joints"] if j["name"] in ARM}
    lo = np.array([lims[n_]["lower"] for n_ in ARM])
    hi = np.array([lims[n_]["upper"] for n_ in ARM])
    return rng.uniform(lo, hi, size=(n, 7))


MOVING_LINKS = [l for l in FACTS["links"] if l["name"] != "right_arm_base_link"]


def com_positions(q):
    poses = link_poses(q)
    return {l["name"]: poses[l["name"]][:3, :3] @ l["com_xyz"] + poses[l["name"]][:3, 3] for l in MOVING_LINKS}


def potential_energy(q):
    return sum(l["mass"] * G * com_positions(q)[l["name"]][2] for l in MOVING_LINKS)


def inertia_matrix(link):
    I = link["inertia"]
    return np.array([[I["ixx"], I["ixy"], I["ixz"]], [I["ixy"], I["iyy"], I["iyz"]], [I["ixz"], I["iyz"], I["izz"]]])


def kinetic_energy(q, dq, h=1e-6):
    """Sum over links of 1/2 m |v_com|^2 + 1/2 w' R I R' w, velocities by central differences of the FK."""
    plus, minus, now = link_poses(q + h * dq), link_poses(q - h * dq), link_poses(q)
    ke = 0.0
    for link in MOVING_LINKS:
        name = link["name"]
        com = lambda P: P[name][:3, :3] @ link["com_xyz"] + P[name][:3, 3]  # noqa: E731
        v = (com(plus) - com(minus)) / (2 * h)
        R = now[name][:3, :3]
        W = (plus[name][:3, :3] - minus[name][:3, :3]) / (2 * h) @ R.T  # skew matrix of the angular velocity
        w = np.array([W[2, 1], W[0, 2], W[1, 0]])
        ke += 0.5 * link["mass"] * v @ v + 0.5 * w @ (R @ inertia_matrix(link) @ R.T) @ w
    return ke + 0.5 * np.sum(np.array(JOINT_ARMATURE) * dq**2)  # motor rotors spin with the joints
