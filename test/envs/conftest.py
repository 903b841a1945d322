"""Headless rendering for the environment tests, whatever imports MuJoCo first."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
