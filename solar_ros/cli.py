"""``solar-ros``: the project's command line.

  solar-ros train --task reacher --method lqr_state --seed 0 --out runs/reacher
  solar-ros train --task point --method solar --out runs/p --set kl_step=1.5 --set refit_every=2
  solar-ros train --task point --method solar --list-settings      (the method's settings and their values)
  solar-ros launch sim            (the node stack, where ``ros2 launch`` is not available)
  solar-ros launch sim inspector:=true   (... with the Foxglove WebSocket inspector on port 8765)
  solar-ros inspect --seconds 5   (what the inspector serves: topics, rates, latest values)
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import re
import sys
import typing
from pathlib import Path

# method name -> (module, function) with the signature
#   train(task, seed, out, episodes=None, goal=None, progress=True, resume=False, config=None) -> RunResult
# where ``config`` is the method's config dataclass and the module's TASK_DEFAULTS holds its defaults per task.
METHODS = {
    "lqr_state": ("solar_ros.algos.lqr_state", "train"),
    "solar": ("solar_ros.algos.solar", "train"),
    "vae": ("solar_ros.algos.solar", "train_vae_ablation"),
    "solar_mpc": ("solar_ros.algos.solar", "train_mpc_ablation"),
    "dsae": ("solar_ros.algos.dsae_pipeline", "train"),
    "ppo": ("solar_ros.algos.ppo", "train"),
}

_NUMBERS = re.compile(r"^-[\d.]")
"""A value that starts like a negative number (argparse takes ``-0.5,0.45`` for an option)."""
VALUE_OPTIONS = ("--goal",)
"""Options whose value may start with a minus sign."""


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


def join_negative_values(argv: list[str], options=VALUE_OPTIONS) -> list[str]:
    """``["--goal", "-0.5,0.45"]`` -> ``["--goal=-0.5,0.45"]``, so that argparse does not read the
    value as an option (it only recognises single negative numbers as values)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out.extend(argv[i:])
            break
        if a in options and i + 1 < len(argv) and _NUMBERS.match(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def train_function(method: str):
    module, function = METHODS[method]
    return getattr(importlib.import_module(module), function)


def config_class(method: str) -> type:
    """The config dataclass ``method``'s train() takes as ``config=``."""
    train = train_function(method)
    hint = typing.get_type_hints(train).get("config")
    candidates = [hint, *typing.get_args(hint)]
    found = [c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c)]
    if not found:
        raise TypeError(f"{METHODS[method][0]}.{METHODS[method][1]} takes no config dataclass")
    return found[0]


def method_config(method: str, task: str, overrides: list[str] | None = None):
    """``method``'s settings for ``task``: the task defaults (``TASK_DEFAULTS[task]`` of the method's
    module), with ``key=value`` overrides on top (raises :class:`solar_ros.settings.SettingsError`)."""
    from .settings import apply_overrides

    cls = config_class(method)
    module = importlib.import_module(METHODS[method][0])
    cfg = getattr(module, "TASK_DEFAULTS", {}).get(task) or cls()
    if method == "dsae" and cfg.exploration is None:
        # the pipeline's own default: the exploratory controller of lqr_state for the task
        from .algos import lqr_state
        cfg = dataclasses.replace(cfg, exploration=lqr_state.TASK_DEFAULTS.get(task, lqr_state.LQRStateConfig()))
    cfg = apply_overrides(cfg, overrides or [])
    if getattr(cfg, "cost_fit", None) == "readout" and (cfg.readout_point_scale != 1.0 or cfg.approach_height > 0):
        _check_cost_points(task, cfg)
    return cfg


def _check_cost_points(task: str, cfg) -> None:
    """SettingsError where ``task``'s cost has no several 3-D points to spread (``readout_point_scale``) or no 3-D
    points to raise the goal of (``approach_height``), before anything is run or written."""
    import numpy as np

    from .algos.solar import approach_goal, spread_points
    from .envs import make
    from .settings import SettingsError

    goal = np.zeros(len(make(task, image_obs=False).ee_pos_idx))
    try:
        spread_points(goal, cfg.readout_point_scale)
        if cfg.approach_height > 0:
            approach_goal(goal, 2, cfg.approach_height, cfg.approach_fraction)
    except ValueError as err:
        raise SettingsError(str(err)) from err


def settings_table(cfg) -> str:
    """One line per setting: key, value, type (``--list-settings``)."""
    from .settings import config_fields, lookup, type_name

    values = dataclasses.asdict(cfg)
    fields = config_fields(cfg)
    width = max(len(k) for k in fields)
    lines = []
    for key, tp in fields.items():
        value = lookup(values, key)
        if isinstance(value, dict):
            continue  # a group of settings: its fields follow as group.field
        lines.append(f"{key.ljust(width)}  {value!r:<24} {type_name(tp)}")
    return "\n".join(lines)


def _error(command: str, message: str) -> int:
    """A user error: one line on stderr, exit status 2 (as argparse's own errors)."""
    print(f"solar-ros {command}: error: {message}", file=sys.stderr)
    return 2


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
    train.add_argument("--pretraining-from", type=Path, default=None, metavar="RUN",
                       help="start from the pretraining (rollouts and fitted model) of the run in RUN, which must "
                            "differ from this one only in settings of the iterations (solar and vae)")
    train.add_argument("--episodes", type=_positive_int, default=None,
                       help="training episode budget (default: the method's own default for the task)")
    train.add_argument("--goal", type=_goal, default=None,
                       help="goal as comma-separated coordinates (default: drawn from the seed)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                       help="change one of the method's settings (a field of its config, on top of the task's "
                            "defaults); repeatable; --list-settings shows them")
    train.add_argument("--list-settings", action="store_true",
                       help="print the method's settings for the task (with any --set applied) and exit")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    launch = sub.add_parser("launch", help="start the ROS 2 node stack as separate processes")
    launch.add_argument("--no-respawn", action="store_true",
                        help="end the launch when a node dies instead of starting it again")
    launch.add_argument("--respawn-delay", type=float, default=None, metavar="S",
                        help="seconds between a node's death and its restart (default 2)")
    launch.add_argument("profile", help="which stack to start, e.g. 'sim'")
    launch.add_argument("args", nargs=argparse.REMAINDER,
                        help="node.parameter:=value overrides; inspector:=true adds the Foxglove inspector")

    inspect_ = sub.add_parser("inspect", help="watch the inspector's topics (a Foxglove WebSocket client)")
    inspect_.add_argument("--url", default="ws://127.0.0.1:8765", help="the inspector's WebSocket address")
    inspect_.add_argument("--seconds", type=float, default=5.0, help="how long to listen")
    inspect_.add_argument("topics", nargs="*", help="topics to subscribe to (default: every advertised one)")
    return parser


BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """Run numpy's linear algebra on one thread unless the environment says otherwise (set before numpy
    loads). The benchmark runs every job so; with another thread count the same seed rounds differently,
    and SOLAR's loop amplifies rounding: a run's result would depend on the command that started it."""
    if "numpy" not in sys.modules:
        for name in BLAS_THREAD_VARIABLES:
            os.environ.setdefault(name, "1")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(join_negative_values(argv))
    if args.command == "train":
        from .provenance import pin_commit

        pin_commit()  # the code this run starts with, whatever the checkout holds when it ends
        one_blas_thread()
        from .settings import SettingsError

        try:
            cfg = method_config(args.method, args.task, args.settings) if (args.settings or args.list_settings) \
                else None
        except SettingsError as err:
            return _error("train", str(err))
        if args.list_settings:
            print(settings_table(cfg))
            return 0
        train = train_function(args.method)
        out = args.resume or args.out
        if out is None:
            return _error("train", "give --out DIR (or --resume DIR)")
        kwargs = {}
        if args.resume:
            if "resume" not in inspect.signature(train).parameters:
                return _error("train", f"--method {args.method} has no checkpoints to resume from")
            kwargs["resume"] = True
        if args.pretraining_from:
            if "pretraining_from" not in inspect.signature(train).parameters:
                return _error("train", f"--method {args.method} has no pretraining to start from")
            kwargs["pretraining_from"] = args.pretraining_from
        if cfg is not None:
            kwargs["config"] = cfg
        out.mkdir(parents=True, exist_ok=True)
        from .algos.common import RunMismatch

        try:
            result = train(task=args.task, seed=args.seed, out=out, episodes=args.episodes, goal=args.goal,
                           progress=not args.no_progress, **kwargs)
        except RunMismatch as err:
            return _error("train", str(err))
        print(f"\n{result.task} / {result.method} / seed {result.seed}: success {result.success_rate:.0%} over "
              f"{result.eval_episodes} evaluation episodes, final distance {result.final_distance:.4f}, "
              f"{result.episodes} training episodes ({result.env_steps} env steps), {result.wall_time_s:.1f} s")
        print(f"summary: {out / 'summary.json'}\nplot:    {out / 'learning_curve.png'}")
        return 0
    if args.command == "launch":
        from .launcher import LaunchError, launch, parse_overrides

        try:
            return launch(args.profile, parse_overrides(args.args), argv=["solar-ros", *argv],
                          respawn=False if args.no_respawn else None, respawn_delay=args.respawn_delay)
        except (LaunchError, FileNotFoundError) as err:
            return _error("launch", str(err))
    if args.command == "inspect":
        import asyncio

        from websockets.exceptions import WebSocketException

        from .runtime.foxglove_client import watch

        try:
            return asyncio.run(watch(args.url, args.topics or None, args.seconds))
        except (OSError, TimeoutError, KeyError, WebSocketException) as err:
            return _error("inspect", f"{args.url}: {err}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
