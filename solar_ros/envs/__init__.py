"""ROS-free simulated tasks with image observations and a gymnasium-style API.

``make(task, **kwargs)`` builds one of :data:`TASKS`:

* ``"point"``         2D point mass, linear dynamics, 32x32 top-down images (:mod:`.point`)
* ``"car"``           the paper's nonholonomic car, bottom right to a fixed target at the top left, 32x32
                      top-down images (:mod:`.car`)
* ``"reacher"``       2-link planar arm in MuJoCo, 64x64 top-down images, random goal (:mod:`.reacher`)
* ``"reacher_paper"`` the same arm in the SOLAR paper's setting: fixed goal (-0.1, -0.1) (bottom left of
                      the image) and fixed start (:class:`.reacher.ReacherPaperEnv`)
* ``"sawyer_reach"``  7-DoF Sawyer in MuJoCo built from ``config/sawyer_parameters.yaml``, 64x64 images
                      from a fixed external camera (:mod:`.sawyer_reach`)
* ``"sawyer_stack"``  the Sawyer sets a block held in its gripper onto a base block on the table, 64x64
                      images of the stacking area (:mod:`.sawyer_stack`); start 0 of the paper's three,
                      ``"sawyer_stack_0"``, ``"sawyer_stack_1"``, ``"sawyer_stack_2"`` pick a start (also the
                      constructor keyword ``start``)
* ``"sawyer_push"``   the Sawyer pushes a mug across the table onto a coaster with its closed gripper, 64x64
                      images of the pushing area (:mod:`.sawyer_push`); learned from sparse success labels

The conventions every task follows (observations, costs vs rewards, goals, success, seeding) are in
:mod:`.base`. Everything here runs headless; MuJoCo renders through EGL unless ``MUJOCO_GL`` says otherwise.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports MuJoCo

from .base import TaskEnv  # noqa: E402
from .car import CarEnv  # noqa: E402
from .point import PointEnv  # noqa: E402
from .reacher import ReacherEnv, ReacherPaperEnv  # noqa: E402
from .sawyer_push import SawyerPushEnv  # noqa: E402
from .sawyer_reach import SawyerReachEnv  # noqa: E402
from .sawyer_stack import SawyerStackEnv, SawyerStackStart1Env, SawyerStackStart2Env  # noqa: E402

TASKS: dict[str, type[TaskEnv]] = {
    "point": PointEnv,
    "car": CarEnv,
    "reacher": ReacherEnv,
    "reacher_paper": ReacherPaperEnv,
    "sawyer_reach": SawyerReachEnv,
    "sawyer_stack": SawyerStackEnv,
    "sawyer_stack_0": SawyerStackEnv,
    "sawyer_stack_1": SawyerStackStart1Env,
    "sawyer_stack_2": SawyerStackStart2Env,
    "sawyer_push": SawyerPushEnv,
}
"""Task name -> environment class."""


def make(task: str, **kwargs) -> TaskEnv:
    """Build the environment for ``task`` (a key of :data:`TASKS`) with its constructor's keyword arguments.

    Common keywords: ``goal`` (fixed goal for every episode), ``image_obs`` (False: no rendering, no
    ``"image"`` in observations), ``image_size``, ``cost_l2`` / ``cost_l1`` / ``cost_action`` (cost weights);
    ``sawyer_reach``, ``sawyer_stack*`` and ``sawyer_push`` also take ``gravity_compensation`` and ``params_path``,
    ``sawyer_stack*`` also ``start`` (0, 1 or 2; overrides the one in the task's name).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[task](**kwargs)


__all__ = ["TASKS", "make", "TaskEnv", "CarEnv", "PointEnv", "ReacherEnv", "ReacherPaperEnv", "SawyerReachEnv",
           "SawyerStackEnv", "SawyerStackStart1Env", "SawyerStackStart2Env", "SawyerPushEnv"]
