"""The stacking camera's pinhole projection and scripts/camera_coverage.py, which measures what it sees."""
from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from solar_ros.envs import make
from solar_ros.envs.sawyer_model import SceneCamera


@pytest.fixture(scope="module")
def script():
    path = Path(__file__).resolve().parents[2] / "scripts" / "camera_coverage.py"
    return SimpleNamespace(**runpy.run_path(str(path)))


@pytest.mark.parametrize("start", [0, 1, 2])
def test_projection_lands_on_the_rendered_base_block(start):
    env = make("sawyer_stack", start=start)
    obs, _ = env.reset(seed=0)
    img = obs["image"].astype(int)
    rows, cols = np.nonzero((img[..., 2] > 150) & (img[..., 0] < 90) & (img[..., 1] < 110))
    assert rows.size >= 15, "the base block is in view"
    pixel, depth = env.stacking.camera.project(env.base_block_position, 64)
    # pixel centres lie at +0.5; the block is symmetric about its centre up to perspective
    np.testing.assert_allclose(pixel, [cols.mean() + 0.5, rows.mean() + 0.5], atol=1.0)
    assert 0.5 < depth < 3.0


def test_projection_geometry():
    cam = SceneCamera(pos=(1.0, 0.0, 0.0), lookat=(0.0, 0.0, 0.0), fovy=90.0)  # looks along -x, up is +z
    pixels, depth = cam.project(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]), 64)
    np.testing.assert_allclose(pixels[0], [32, 32])  # the look-at point: the image centre
    np.testing.assert_allclose(pixels[1], [32, 0], atol=1e-9)  # 45 degrees up: the top edge (fov 90)
    np.testing.assert_allclose(pixels[2], [64, 32], atol=1e-9)  # +y is to the right when looking along -x with z up
    np.testing.assert_allclose(depth[:3], 1.0)
    assert depth[3] < 0  # behind the camera


def test_coverage_counts_the_positions_in_view(script):
    cam = SceneCamera(pos=(1.0, 0.0, 0.0), lookat=(0.0, 0.0, 0.0), fovy=90.0)
    tracks = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5], [0.0, 0.0, 3.0], [2.0, 0.0, 0.0]])  # in, in, above, behind
    assert script.coverage(cam, tracks) == 0.5
    np.testing.assert_allclose(script.pixels_per_cm(cam, np.zeros(3)), [0.0, 0.32, 0.32], atol=2e-3)


def test_a_wider_framing_sees_more_of_the_exploration_at_a_smaller_scale(script):
    """The trade-off the task's camera makes (module docstring of sawyer_stack): from start 0 the exploring arm
    leaves its image at the top; a framing of the whole arm keeps it in view but shows the goal smaller."""
    task = script.camera_from_args(SimpleNamespace(pos=None, lookat=None, fovy=None))
    wide = script.camera_from_args(SimpleNamespace(pos=(0.96, -1.0, 0.72), lookat=(0.58, 0.06, 0.2), fovy=45.0))
    tracks = script.block_tracks(0, rollouts=4, seed=0)
    assert script.coverage(wide, tracks) > script.coverage(task, tracks) + 0.1
    goal = np.array([0.6, 0.05, -0.115])
    assert np.all(script.pixels_per_cm(wide, goal) < script.pixels_per_cm(task, goal))


def test_bad_options_exit_with_a_message(script, capsys):
    for argv in (["--pos", "1,2"], ["--fovy", "0"], ["--fovy", "nan"], ["--rollouts", "0"], ["--lookat", "a,b,c"],
                 ["--seed", "-1"]):
        with pytest.raises(SystemExit):
            script.main(argv)
        assert "error" in capsys.readouterr().err
