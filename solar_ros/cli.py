"""``solar-ros``: the project's command line.

  solar-ros train --task reacher --method lqr_state --seed 0 --out runs/reacher
  solar-ros launch sim            (the node stack, where ``ros2 launch`` is not available)
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

# method name -> (module, function) with the signature
#   train(task, seed, out, episodes=None, goal=None, progress=True, resume=False) -> RunResult
METHODS = {
    "lqr_state": ("solar_ros.algos.lqr_state", "train"),
    "solar": ("solar_ros.algos.solar", "train"),
    "vae": ("solar_ros.algos.solar", "train_vae_ablation"),
    "dsae": ("solar_ros.algos.dsae_pipeline", "train"),
    "ppo": ("solar_ros.algos.ppo", "train"),
}


def _goal(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--goal must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("--goal is empty")
    return values


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .envs import TASKS

    parser = argparse.ArgumentParser(prog="solar-ros", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="learn a task in simulation (ROS-free) and write summary.json + plot")
    train.add_argument("--task", required=True, choices=sorted(TASKS))
    train.add_argument("--method", required=True, choices=sorted(METHODS))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=None, help="output directory (created)")
    train.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="continue an interrupted run from its last checkpoint in DIR")
    train.add_argument("--episodes", type=_positive_int, default=None,
                       help="training episode budget (default: the method's own default for the task)")
    train.add_argument("--goal", type=_goal, default=None,
                       help="goal as comma-separated coordinates (default: drawn from the seed)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    launch = sub.add_parser("launch", help="start the ROS 2 node stack as separate processes")
    launch.add_argument("profile", help="which stack to start, e.g. 'sim'")
    launch.add_argument("args", nargs=argparse.REMAINDER, help="name:=value parameter overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        module, function = METHODS[args.method]
        train = getattr(importlib.import_module(module), function)
        out = args.resume or args.out
        if out is None:
            raise SystemExit("solar-ros train: give --out DIR (or --resume DIR)")
        out.mkdir(parents=True, exist_ok=True)
        kwargs = {}
        if args.resume:
            if "resume" not in inspect.signature(train).parameters:
                raise SystemExit(f"solar-ros train: --method {args.method} has no checkpoints to resume from")
            kwargs["resume"] = True
        result = train(task=args.task, seed=args.seed, out=out, episodes=args.episodes, goal=args.goal,
                       progress=not args.no_progress, **kwargs)
        print(f"\n{result.task} / {result.method} / seed {result.seed}: success {result.success_rate:.0%} over "
              f"{result.eval_episodes} evaluation episodes, final distance {result.final_distance:.4f}, "
              f"{result.episodes} training episodes ({result.env_steps} env steps), {result.wall_time_s:.1f} s")
        print(f"summary: {out / 'summary.json'}\nplot:    {out / 'learning_curve.png'}")
        return 0
    if args.command == "launch":
        from .launcher import launch
        overrides = dict(a.split(":=", 1) for a in args.args if ":=" in a)
        return launch(args.profile, overrides)
    return 2


if __name__ == "__main__":
    sys.exit(main())
