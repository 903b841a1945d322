"""scripts/state_capacity.py: LQR-FLM on a linear feature of the true state in the shape of a copy-state latent."""
from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from solar_ros.envs import make


@pytest.fixture(scope="module")
def capacity():
    script = Path(__file__).resolve().parents[2] / "scripts" / "state_capacity.py"
    return SimpleNamespace(**runpy.run_path(str(script)))


def test_features_are_the_joint_angles_and_the_block_points(capacity):
    env = make("sawyer_stack_0", image_obs=False)
    env.reset(seed=0)
    assert capacity.feature_columns(env, "joints") == list(range(7))
    assert capacity.feature_columns(env, "block") == list(range(14, 23))
    cols = capacity.feature_columns(env, "both")
    W = capacity.feature_map(env, cols, None)
    x = np.arange(env.state_dim, dtype=float)
    np.testing.assert_array_equal(W @ x, x[cols])
    # principal components: orthonormal rows on those columns only, the largest variance first
    P = capacity.feature_map(env, cols, 5)
    np.testing.assert_allclose(P @ P.T, np.eye(5), atol=1e-12)
    assert not P[:, [i for i in range(env.state_dim) if i not in cols]].any()
    with pytest.raises(ValueError, match="--pca"):
        capacity.feature_map(env, cols, 17)
    with pytest.raises(ValueError, match="joint angles"):
        capacity.feature_columns(make("point", image_obs=False), "joints")


@pytest.mark.slow
def test_the_uncompressed_features_learn_to_stack(capacity):
    # Joint angles and block points, now and one step before, with the readout cost: LQR-FLM stacks
    # (seed 0, as every seed of starts 0 and 1 but start 1 seed 1 when written).
    result = capacity.learn("sawyer_stack_0", 0, "both", None)
    assert result["success_rate"] >= 0.9
