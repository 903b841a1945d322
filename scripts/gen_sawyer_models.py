#!/usr/bin/env python3
"""Generate the Sawyer URDF (and optionally the MuJoCo MJCF) from config/sawyer_parameters.yaml.

    python scripts/gen_sawyer_models.py                 # write urdf/sawyer.urdf
    python scripts/gen_sawyer_models.py --check         # exit 1 if urdf/sawyer.urdf is out of date
    python scripts/gen_sawyer_models.py --mjcf out.xml  # also write the MuJoCo model (for inspection;
                                                        # the environments build it in memory)
    python scripts/gen_sawyer_models.py --stack-mjcf out.xml  # also write sawyer_stack's MuJoCo model
                                                              # (the same arm plus gripper, blocks, camera)
    python scripts/gen_sawyer_models.py --push-mjcf out.xml   # also write sawyer_push's MuJoCo model
                                                              # (the same arm plus gripper, mug, coaster, camera)

Both files come from solar_ros.envs.sawyer_model, so the URDF used by ROS tools and the MuJoCo model
used for learning share one set of facts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from solar_ros.envs.sawyer_model import (  # noqa: E402
    PushingScene,
    StackingScene,
    build_mjcf,
    build_urdf,
    load_sawyer_params,
)

DEFAULT_URDF = REPO / "urdf" / "sawyer.urdf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=None,
                        help="Sawyer facts yaml (default: config/sawyer_parameters.yaml)")
    parser.add_argument("--urdf", type=Path, default=DEFAULT_URDF, help="where to write the URDF")
    parser.add_argument("--mjcf", type=Path, default=None, help="also write the MuJoCo model here")
    parser.add_argument("--stack-mjcf", type=Path, default=None,
                        help="also write the block-stacking task's MuJoCo model here")
    parser.add_argument("--push-mjcf", type=Path, default=None,
                        help="also write the mug-pushing task's MuJoCo model here")
    parser.add_argument("--controllers-config", default=None,
                        help="controller-manager parameters file; adds the gz_ros2_control Gazebo plugin to the URDF")
    parser.add_argument("--check", action="store_true", help="only check that the URDF file is up to date")
    args = parser.parse_args(argv)

    params = load_sawyer_params(args.params)
    urdf = build_urdf(params, controllers_config=args.controllers_config)
    if args.check:
        current = args.urdf.read_text() if args.urdf.is_file() else None
        if current != urdf:
            print(f"{args.urdf} is out of date: run scripts/gen_sawyer_models.py", file=sys.stderr)
            return 1
        print(f"{args.urdf} is up to date")
        return 0
    args.urdf.parent.mkdir(parents=True, exist_ok=True)
    args.urdf.write_text(urdf)
    print(f"wrote {args.urdf}")
    if args.mjcf is not None:
        args.mjcf.parent.mkdir(parents=True, exist_ok=True)
        args.mjcf.write_text(build_mjcf(params))
        print(f"wrote {args.mjcf}")
    if args.stack_mjcf is not None:
        args.stack_mjcf.parent.mkdir(parents=True, exist_ok=True)
        args.stack_mjcf.write_text(build_mjcf(params, stacking=StackingScene()))
        print(f"wrote {args.stack_mjcf}")
    if args.push_mjcf is not None:
        args.push_mjcf.parent.mkdir(parents=True, exist_ok=True)
        args.push_mjcf.write_text(build_mjcf(params, pushing=PushingScene()))
        print(f"wrote {args.push_mjcf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
