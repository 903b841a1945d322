"""Shared plumbing of the MuJoCo tasks: model loading, sub-stepping, headless offscreen rendering.

Rendering is headless: ``MUJOCO_GL`` defaults to ``egl`` (set here before MuJoCo is first imported,
unless the caller chose a backend already, e.g. ``osmesa``). The renderer is created on the first
image, so ``image_obs=False`` never touches OpenGL.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (must come after the backend is chosen)
import numpy as np  # noqa: E402

from .base import TaskEnv  # noqa: E402


def _chosen_backend() -> str:
    """The OpenGL backend MuJoCo settled on at its import ('' means GLFW, which needs a display)."""
    try:
        from mujoco.rendering.classic import gl_context
    except ImportError:
        return os.environ.get("MUJOCO_GL", "")
    return getattr(gl_context, "_MUJOCO_GL", os.environ.get("MUJOCO_GL", ""))


class MujocoTaskEnv(TaskEnv):
    """A task simulated by MuJoCo: ``n_substeps`` physics steps per control step, images from one camera."""

    camera_name: str
    """Name of the fixed camera the images come from."""

    def _init_mujoco(self, xml: str, control_dt: float) -> None:
        """Compile the model; the physics timestep must divide ``control_dt``."""
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        ratio = control_dt / self.model.opt.timestep
        self.n_substeps = int(round(ratio))
        if abs(ratio - self.n_substeps) > 1e-9 or self.n_substeps < 1:
            raise ValueError(f"physics timestep {self.model.opt.timestep} must divide dt {control_dt}")
        self._renderer: mujoco.Renderer | None = None

    def set_joint_state(self, q, dq=None) -> np.ndarray:
        """Put the arm in configuration ``q`` (velocity ``dq``, default zero); returns the new state vector.

        For tests, scripted starts and evaluation; it does not advance the episode clock.
        """
        if self._t is None:
            raise RuntimeError("call reset() first")
        n = len(self._qpos_adr)
        q = np.asarray(q, dtype=np.float64)
        dq = np.zeros(n) if dq is None else np.asarray(dq, dtype=np.float64)
        if q.shape != (n,) or dq.shape != (n,) or not (np.all(np.isfinite(q)) and np.all(np.isfinite(dq))):
            raise ValueError(f"q and dq must be finite arrays of shape ({n},)")
        self.data.qpos[self._qpos_adr] = q
        self.data.qvel[self._dof_adr] = dq
        mujoco.mj_forward(self.model, self.data)
        self._update_state()
        return self._state().copy()

    def _update_state(self) -> None:
        raise NotImplementedError

    def _physics_step(self, ctrl: np.ndarray) -> None:
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        # mj_step leaves positions-dependent quantities (site poses, Jacobian terms) at the start of its
        # last sub-step; bring them up to the new qpos for the state vector and the image.
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def _render_image(self) -> np.ndarray:
        if self._renderer is None:
            h, w, _ = self.image_shape
            try:
                self._renderer = mujoco.Renderer(self.model, height=h, width=w)
            except Exception as err:  # noqa: BLE001 - say what to do instead of an opaque GL error
                raise RuntimeError(
                    f"headless rendering failed (MuJoCo's OpenGL backend: {_chosen_backend()!r}): {err}. "
                    "MuJoCo picks its backend when it is first imported: import solar_ros.envs before "
                    "mujoco, or set MUJOCO_GL=egl (or osmesa) in the environment. EGL needs the Debian "
                    "packages libegl1 and libgl1-mesa-dri, OSMesa needs libosmesa6; image_obs=False runs "
                    "without either."
                ) from err
        self._renderer.update_scene(self.data, camera=self.camera_name)
        return self._renderer.render()

    def close(self) -> None:
        """Free the OpenGL context (the environment still steps; a later render makes a new one)."""
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None
        super().close()
