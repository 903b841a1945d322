#!/usr/bin/env python3
"""Benchmark of the learning node stack.

    python scripts/bench_node_stack.py [--seconds 10] [--iterations 6] [--episodes-per-iteration 5]
                                       [--skip-latency] [--skip-learning] [--during-fit [--fit-niceness 10]]
                                       [--rate HZ] [--controller-clock joint_states|timer] [--realtime-priority P]

1. Camera-frame-to-torque latency through the real nodes: 64x64 rgb8 frames at 20 Hz on
   /camera/image_raw -> camera_node (on_arrival) -> encoder_node with a real 64x64 model -> controller_node
   (state_source latent, 500 Hz, an episode running, so the SVAE encoder filters with the commanded
   torques). Latency = stamp of the first command computed from a frame minus the frame's stamp (all
   processes on the system clock), p50/p99/max, plus the encoder's own per-frame encode time and the CPU
   use of each node process. Once with SOLAR's structured VAE (latent 10, Kalman filtering), once
   with the deep spatial autoencoder (16 feature points). The weights are untrained: a trained model
   of the same architecture costs the same. Measurement code shared with scripts/bench_controller.py
   lives in scripts/bench_common.py.
2. The learning run through the nodes (``solar-ros launch sim``: simulator, camera, encoder,
   controller, recorder, model fitting, trainer; method lqr_joints on sawyer_reach) against
   ``solar-ros train --method lqr_state`` on the same task and seed with the same number of
   episodes: training episodes, wall time, final distance and success of the evaluation episodes,
   the average CPU use of each node process during the node run, and the controller's command rate
   and gaps over the run from its own timing summaries (``--rate`` sets the command and joint-state
   rate, default the sim profile's). With ``--during-fit`` a SOLAR model fit (as the fitting node runs
   it) takes a core beside the stack for the whole run, as on a robot whose fitter trains meanwhile.
   ``--controller-clock timer`` runs the controller on its own timer in simulated time (with /clock after
   every simulator step) instead of the sim profile's joint-state clock, for comparison.
   ``--stack-latency`` also measures the camera-frame-to-torque latency inside that run, through the
   stack's own simulator, camera, encoder and controller: the encoder holds an untrained 16-point deep
   spatial autoencoder from the start (it costs what a trained one does), the controller acts on
   [feature points, q, dq] on every fresh frame, and the trainer runs the ``dsae`` method's exploratory
   iterations only (LQR-FLM on [q, dq] sent with zero gains on the feature points, as in the main job's
   first fits). Latency = arrival here of the first CommandInfo computed from a frame minus the arrival
   here of that frame on /camera/image_raw (both reception stamps of this process, which polls the two
   streams; its threads run at the simulator's SCHED_FIFO priority meanwhile, as a camera driver would).
   It also lists every pause over 20 ms between consecutive joint states and between consecutive torque
   commands (idle ones included) as they arrive here, in seconds from the launch, each with how far apart
   the two messages around it were written (their publishers' write stamps): written as far apart as the
   pause, the publisher stopped writing; written on time, they were delivered late. A pause in the
   commands with none in the joint states is the controller's (its input or its work), not the simulator's.
   ``--keep-log FILE`` keeps the node run's log (every node's output, stamped) to line the pauses up with.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    PROFILE_PRIORITY,
    REPO,
    Bench,
    Proc,
    camera_proc,
    controller_proc,
    cpu_seconds,
    driver_priority,
    frame_to_torque,
    load_text,
    p50_p99_max,
    print_frame_to_torque,
    realtime_priorities,
    stamp_ns,
)

from solar_ros.runtime.fitting import fit_threads  # noqa: E402


def make_checkpoint(kind: str, path: Path) -> tuple[str, int]:
    """A 64x64 model of ``kind`` ('svae' or 'dsae'); returns (model_id, latent dim)."""
    import torch

    from solar_ros.models import DeepSpatialAutoencoder, DSAEConfig, StructuredVAE, SVAEConfig, save_checkpoint

    torch.manual_seed(0)
    if kind == "svae":
        # SOLAR's default model (algos.solar.TASK_DEFAULTS): keypoint encoder, 5 of 10 dimensions observed.
        model = StructuredVAE(SVAEConfig(image_size=64, latent_dim=10, action_dim=7, encoder="keypoints",
                                         observed_dim=5))
        model.set_dynamics(0.95 * np.eye(10), 0.01 * np.ones((10, 7)), np.zeros(10), 0.1 * np.eye(10),
                           np.zeros(10), np.eye(10))
        dim = 10
    else:
        model = DeepSpatialAutoencoder(DSAEConfig(image_size=64))
        dim = 32
    model_id = f"bench-{kind}"
    save_checkpoint(path, model, extra={"model_id": model_id})
    return model_id, dim


def fit_load(niceness: int, threads: int) -> None:
    """Run a SOLAR model fit until killed (``--fit-load``): sawyer_reach's settings, at ``threads`` torch threads
    (0: every core, the fitting node's default) and the given CPU niceness (the node's default is 10), on 40
    random 50-step rollouts of 64x64 images; the load of a fit beside the stack."""
    import torch

    from solar_ros.algos.solar import TASK_DEFAULTS, RolloutData, SVAELatentModel
    from solar_ros.runtime.fitting import set_thread_niceness

    set_thread_niceness(niceness)
    torch.set_num_threads(fit_threads(threads))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = RolloutData(rng.integers(0, 256, (40, 50, 64, 64, 3), dtype=np.uint8), rng.normal(size=(40, 50, 7)),
                       rng.random((40, 50)))
    model = SVAELatentModel(64, 7, TASK_DEFAULTS["sawyer_reach"])
    print(FIT_RUNNING, flush=True)
    model.fit(data, 10**9, 0)


FIT_RUNNING = "fit load running"
FIT_THREADS = 0
"""Torch threads of the fit load (``--fit-threads``; 0: every core, as the fitting node's default)."""


def fit_proc(tmp: Path, niceness: int, timeout: float = 120.0, idle=lambda: time.sleep(0.2)) -> Proc:
    """A process running :func:`fit_load` at ``niceness``, returned once its fit has begun (torch imported, data
    made), so that a measurement started next has the fit beside it from its first second. ``idle()`` is
    called while waiting (e.g. to keep a benchmark node spinning)."""
    proc = Proc([str(Path(__file__).resolve()), "--fit-load", "--fit-niceness", str(niceness),
                 "--fit-threads", str(FIT_THREADS)], "model_fit", None, tmp)
    deadline = time.monotonic() + timeout
    while FIT_RUNNING not in proc.log_path.read_text():
        if proc.p.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"the fit load did not start: {proc.log_path.read_text()[-2000:]}")
        idle()
    return proc


def bench_latency(kind: str, seconds: float, tmp: Path, during_fit: bool = False, fit_niceness: int = 10,
                  priority: int = 0) -> dict:
    model_id, dim = make_checkpoint(kind, tmp / f"{kind}.pt")
    rt = {name: {"realtime_priority": p} for name, p in realtime_priorities(priority).items()}
    encoder = Proc.node("encoder_node", {"model_path": str(tmp / f"{kind}.pt"), "stats_period": 1.0,
                                         "diagnostics_rate": 0.0, **rt.get("encoder_node", {})}, tmp)

    def encoder_stats() -> str:
        lines = [line for line in encoder.log_path.read_text().splitlines() if "encode latency" in line]
        return lines[-1].split("]: ", 1)[-1] if lines else "(no encoder statistics)"

    procs = [camera_proc(tmp, **rt.get("camera_node", {})), encoder,
             controller_proc(tmp, "latent", **rt.get("controller_node", {}))]
    if during_fit:
        procs.append(fit_proc(tmp, fit_niceness))
    return frame_to_torque(procs, dim, model_id, frame_hz=20.0, seconds=seconds, log_tail=encoder_stats,
                           driver_level=realtime_priorities(priority).get("sim_arm_node", 0))


def _node_pids(parent: int) -> dict[str, int]:
    """Node processes started by the launcher ``parent`` (name -> pid), from /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid != parent:
            continue
        for arg in cmd:
            if arg.startswith(b"solar_ros.nodes."):
                out[arg.decode().rsplit(".", 1)[1]] = int(entry.name)
    return out


TIMING = re.compile(r"timing over (\d+) commands: (\d+) Hz \(wall\), gap p50 ([\d.]+) ms, p99 ([\d.]+) ms, "
                    r"max ([\d.]+) ms")


def controller_timing(log_text: str) -> dict | None:
    """The controller's periodic timing summaries in a launch log (each over its last <= 8192 commands):
    how many, the lowest and median command rate, the worst gap p99 and max."""
    rows = [tuple(float(g) for g in m.groups()) for m in TIMING.finditer(log_text)]
    rows = [r for r in rows if r[0] >= 100]  # summaries over a full window, not the first few commands
    if not rows:
        return None
    hz, p99, gap_max = (np.array([r[i] for r in rows]) for i in (1, 3, 4))
    return {"summaries": len(rows), "hz_min": float(hz.min()), "hz_median": float(np.median(hz)),
            "gap_p99_worst": float(p99.max()), "gap_p99_median": float(np.median(p99)), "gap_max": float(gap_max.max())}


def pauses(arrivals_ns: list[int], start_ns: int, over_ms: float = 20.0,
           sent_ns: list[int] | None = None) -> list[tuple[float, float, float | None]]:
    """Every gap longer than ``over_ms`` between consecutive arrivals: (its length in ms, its start in s after
    ``start_ns``, and with ``sent_ns`` (each arrival's write stamp at its publisher) the gap in ms between the
    writes of the two messages on either side: as long as the pause where the publisher stopped writing, short
    where the messages were written on time and delivered late)."""
    t = np.asarray(arrivals_ns, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    s = None if sent_ns is None else np.asarray(sent_ns, dtype=np.int64)[order]
    gaps = np.diff(t) * 1e-6
    return [(float(g), float((t[i] - start_ns) * 1e-9), None if s is None else float((s[i + 1] - s[i]) * 1e-6))
            for i, g in enumerate(gaps) if g > over_ms]


def _pause_text(name: str, first: float | None, found: list[tuple[float, float, float | None]]) -> str:
    if first is None:
        return f"{name} none received"
    text = [f"{ms:.1f} ms at {at:.1f} s" + ("" if written is None else f" (written {written:.1f} ms apart)")
            for ms, at, written in found]
    return f"{name} (first at {first:.1f} s) " + (", ".join(text) or "none")


class StackLatency:
    """Frame -> torque latency inside a running stack, from this process's reception stamps (see the module
    docstring, ``--stack-latency``)."""

    def __init__(self) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray

        from solar_ros.msg import CommandInfo
        from solar_ros.nodes import contract

        self.bench = Bench("bench_stack_latency")
        self.frames: dict[int, int] = {}  # frame stamp -> its arrival here
        self.first: dict[int, int] = {}  # frame stamp -> arrival of the first command computed from it
        self.commands = 0
        self.arrivals: dict[str, list[int]] = {"joint states": [], "commands": []}  # every arrival here (ns)
        self.sent: dict[str, list[int]] = {"joint states": [], "commands": []}  # its write stamp at the publisher
        self.start_ns = time.time_ns()  # the stack's launch (reception stamps are on the system clock)
        self._active = CommandInfo.ACTIVE
        images = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.BEST_EFFORT,
                            durability=DurabilityPolicy.VOLATILE)
        self.bench.poll(Image, contract.CAMERA_RAW, self._on_frame, images)
        self.bench.poll(CommandInfo, contract.COMMAND_INFO, self._on_info)
        for name, msg_type, topic in (("joint states", JointState, contract.JOINT_STATES),
                                      ("commands", Float64MultiArray, contract.COMMANDS)):
            self.bench.poll(msg_type, topic, self._recorder(name), contract.RECORDING_SENSOR_QOS, sent=True)

    def _recorder(self, name: str):
        arrived, written = self.arrivals[name], self.sent[name]
        return lambda _msg, received_ns, sent_ns: (arrived.append(received_ns), written.append(sent_ns))

    def _on_frame(self, msg, received_ns: int) -> None:
        self.frames.setdefault(stamp_ns(msg.header.stamp), received_ns)

    def _on_info(self, msg, received_ns: int) -> None:
        if msg.status != self._active:
            return
        self.commands += 1
        self.first.setdefault(stamp_ns(msg.source_stamp), received_ns)

    def spin(self, seconds: float) -> None:
        self.bench.spin(seconds)

    def result(self) -> dict:
        lat = [(self.first[s] - t) * 1e-6 for s, t in self.frames.items() if s in self.first]
        return {"frames": len(self.frames), "matched": len(lat), "latency": p50_p99_max(lat),
                "pauses": {name: pauses(a, self.start_ns, sent_ns=self.sent[name])
                           for name, a in self.arrivals.items()},
                "first": {name: (min(a) - self.start_ns) * 1e-9 if a else None for name, a in self.arrivals.items()},
                "launch_ns": self.start_ns}

    def close(self) -> None:
        self.bench.close()


def bench_learning(iterations: int, per_iteration: int, eval_episodes: int, seed: int, tmp: Path,
                   rate: float | None = None, fit_niceness: int | None = None, clock: str | None = None,
                   priority: int = 0, stack_latency: bool = False) -> dict:
    out = tmp / "node_run"
    rates = [] if rate is None else [f"controller_node.rate:={rate}", f"sim_arm_node.control_rate:={rate}"]
    rates += [f"{name}.realtime_priority:={p}" for name, p in realtime_priorities(priority).items()]
    if stack_latency:
        make_checkpoint("dsae", tmp / "dsae.pt")
        method = ["trainer_node.method:=dsae", "controller_node.state_source:=latent+joints",
                  f"encoder_node.model_path:={tmp / 'dsae.pt'}",
                  f"trainer_node.fit_config:={{explore_iterations: {iterations + 1}}}"]
    else:
        method = ["trainer_node.method:=lqr_joints", "controller_node.state_source:=joints"]
    if clock == "timer":  # the controller on a timer in simulated time, which needs /clock after every step
        rates += ["controller_node.clock:=timer", "controller_node.use_sim_time:=true", "sim_arm_node.clock_rate:=0"]
    elif clock is not None:
        rates += [f"controller_node.clock:={clock}"]
    cmd = [sys.executable, "-m", "solar_ros.cli", "launch", "sim",
           f"recorder_node.output_dir:={out / 'episodes'}", f"trainer_node.episode_dir:={out / 'episodes'}",
           f"model_fitting_node.output_dir:={out / 'models'}", f"trainer_node.output_dir:={out}",
           *method, f"trainer_node.seed:={seed}",
           f"trainer_node.iterations:={iterations}", f"trainer_node.episodes_per_iteration:={per_iteration}",
           f"trainer_node.eval_episodes:={eval_episodes}", "controller_node.stats_period:=2.0", *rates]
    log = open(tmp / "node_run.log", "w")
    # The monitor listens from before the launch (the stack's bring-up included), at the simulator's priority:
    # under the normal scheduler its middleware threads would stamp a frame's arrival only once the real-time
    # nodes let them run, after the command computed from it.
    monitor = StackLatency() if stack_latency else None
    last_cpu: dict[str, float] = {}
    try:
        with driver_priority(realtime_priorities(priority)["sim_arm_node"] if monitor else 0, all_threads=True):
            t0 = time.monotonic()
            launcher = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            fit = None if fit_niceness is None else fit_proc(
                tmp, fit_niceness, idle=(lambda: monitor.spin(0.2)) if monitor else (lambda: time.sleep(0.2)))
            while launcher.poll() is None:
                for name, pid in _node_pids(launcher.pid).items():
                    cpu = cpu_seconds(pid)
                    if cpu is not None:
                        last_cpu[name] = cpu
                if fit is not None:
                    last_cpu["SOLAR fit beside the stack"] = fit.cpu_seconds()
                if monitor is not None:
                    monitor.spin(1.0)
                else:
                    time.sleep(1.0)
    finally:
        if monitor is not None:
            monitor.close()
    node_wall = time.monotonic() - t0
    if fit is not None:
        fit.stop()
    log.close()
    if launcher.returncode != 0:
        raise RuntimeError(f"the node run failed (status {launcher.returncode}); log: {tmp / 'node_run.log'}\n"
                           + (tmp / "node_run.log").read_text()[-3000:])
    nodes = json.loads((out / "summary.json").read_text())

    episodes = iterations * per_iteration
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "solar_ros.cli", "train", "--task", "sawyer_reach", "--method", "lqr_state",
                    "--seed", str(seed), "--episodes", str(episodes), "--out", str(tmp / "train_run"), "--no-progress"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    train_wall = time.monotonic() - t0
    direct = json.loads((tmp / "train_run" / "summary.json").read_text())
    # CPU seconds of each node (last sample before it exited) over the node run's wall time
    return {"nodes": nodes, "nodes_wall": node_wall, "train": direct, "train_wall": train_wall,
            "cpu": {n: last_cpu[n] / node_wall for n in last_cpu},
            "timing": controller_timing((tmp / "node_run.log").read_text()),
            "stack_latency": monitor.result() if monitor is not None else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="latency measurement window per model")
    parser.add_argument("--iterations", type=int, default=6, help="learning iterations of the comparison")
    parser.add_argument("--episodes-per-iteration", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--rate", type=float, default=None,
                        help="command and joint-state rate of the learning run (default: the sim profile's)")
    parser.add_argument("--controller-clock", choices=("joint_states", "timer"), default=None,
                        help="the controller's clock in the learning run (default: the sim profile's, joint_states)")
    parser.add_argument("--during-fit", action="store_true",
                        help="measure the latency twice: idle, and with a SOLAR model fit running beside the nodes; "
                             "and run such a fit beside the whole stack through its learning run")
    parser.add_argument("--fit-niceness", type=int, default=10,
                        help="CPU niceness of the fit with --during-fit (model_fitting_node's niceness, default 10)")
    parser.add_argument("--fit-threads", type=int, default=0,
                        help="torch threads of that fit (model_fitting_node's num_threads; default 0: every core)")
    parser.add_argument("--realtime-priority", type=int, default=PROFILE_PRIORITY, metavar="P",
                        help="SCHED_FIFO for the real-time nodes: controller P, simulator P-5, camera and encoder "
                             "P-2 (default 80, the sim profile's; 0: all under the normal scheduler)")
    parser.add_argument("--stack-latency", action="store_true",
                        help="the learning run with a deep spatial autoencoder in the encoder from the start, the "
                             "controller on [feature points, q, dq], the dsae method's exploratory iterations; "
                             "measures the frame-to-torque latency inside the run")
    parser.add_argument("--keep-log", type=Path, metavar="FILE",
                        help="copy the node run's log (every node's output) to FILE")
    parser.add_argument("--fit-load", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keep_log is not None and not args.keep_log.resolve().parent.is_dir():
        parser.error(f"--keep-log: no directory {args.keep_log.resolve().parent} to write {args.keep_log.name} in")
    if args.fit_threads < 0:
        parser.error(f"--fit-threads must be >= 0, got {args.fit_threads}")
    global FIT_THREADS
    FIT_THREADS = args.fit_threads
    if args.fit_load:
        fit_load(args.fit_niceness, args.fit_threads)
        return 0
    os.environ.setdefault("MUJOCO_GL", "egl")
    print(f"machine: {os.cpu_count()} CPUs, {load_text()} at start")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_latency:
            print(f"\ncamera frame -> torque latency: camera_node -> encoder_node (64x64 model) -> controller_node "
                  f"(500 Hz), 20 Hz frames, {args.seconds:g} s")
            for kind in ("svae", "dsae"):
                print_frame_to_torque(kind, bench_latency(kind, args.seconds, tmp, priority=args.realtime_priority))
                if args.during_fit:
                    print_frame_to_torque(f"{kind}, during a model fit (niceness {args.fit_niceness}, "
                                          f"{fit_threads(args.fit_threads)} thread(s))",
                                          bench_latency(kind, args.seconds, tmp, True, args.fit_niceness,
                                                        args.realtime_priority))
        if not args.skip_learning:
            n = args.iterations * args.episodes_per_iteration
            print(f"\nlearning sawyer_reach (seed {args.seed}, {n} training episodes, {args.eval_episodes} evaluation "
                  "episodes): through the nodes vs solar-ros train")
            r = bench_learning(args.iterations, args.episodes_per_iteration, args.eval_episodes, args.seed, tmp,
                               args.rate, args.fit_niceness if args.during_fit else None, args.controller_clock,
                               args.realtime_priority, args.stack_latency)
            if args.keep_log is not None:
                shutil.copyfile(tmp / "node_run.log", args.keep_log)
            print(f"{'run':<48} {'episodes':>8} {'wall s':>7} {'final dist':>10} {'success':>7}")
            node_label = ("nodes: launch sim (" + ("dsae, exploring" if args.stack_latency else "lqr_joints") + ")"
                          + (", fit beside" if args.during_fit else ""))
            for label, s, wall in ((node_label, r["nodes"], r["nodes_wall"]),
                                   ("solar-ros train --method lqr_state", r["train"], r["train_wall"])):
                print(f"{label:<48} {s['episodes']:>8} {wall:>7.1f} {s['final_distance']:>10.4f} "
                      f"{s['success_rate']:>7.0%}")
            print("average CPU per node process during the node run: "
                  + ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(r["cpu"].items(), key=lambda kv: -kv[1])))
            t = r["timing"]
            if t is None:
                print("controller timing: no summaries in the log")
            else:
                rate = args.rate or "the sim profile's"
                clock = args.controller_clock or "the sim profile's"
                print(f"controller during the node run ({rate} Hz, clock {clock}; {t['summaries']} summaries "
                      f"of its last <= 8192 commands): {t['hz_min']:.0f} Hz lowest, {t['hz_median']:.0f} median; "
                      f"gap p99 {t['gap_p99_median']:.2f} ms median, {t['gap_p99_worst']:.2f} worst; "
                      f"max gap {t['gap_max']:.2f} ms")
            if r["stack_latency"] is not None:
                sl = r["stack_latency"]
                lat = sl["latency"]
                print(f"frame -> torque inside the run (/camera/image_raw arrival -> first CommandInfo from that "
                      f"frame, both as received here): {sl['matched']} of {sl['frames']} frames, p50 {lat[0]:.2f} ms, "
                      f"p99 {lat[1]:.2f} ms, max {lat[2]:.2f} ms")
                print(f"launch at {sl['launch_ns'] * 1e-9:.3f} s (system clock); "
                      "pauses over 20 ms between arrivals here (s from the launch): "
                      + "; ".join(_pause_text(name, sl["first"][name], p) for name, p in sl["pauses"].items()))
    print(f"{load_text()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
