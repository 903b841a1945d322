#!/usr/bin/env python3
"""Run `solar-ros train` for several tasks x methods x seeds and write a markdown table + plot.

    python scripts/benchmark.py --tasks point,reacher --methods lqr_state --seeds 0-9 --name lqr_state

writes docs/results/<name>.md (per-seed rows, the mean per task/method, and the exact command) and
docs/results/<name>.png. Each run is its own process (`--jobs` at a time); its outputs stay in
runs/benchmark/<name>/<task>_<method>_s<seed>/.

``--set KEY=VALUE`` (repeatable) changes a setting of every run (as `solar-ros train --set`; the key
must be one of each method's settings), ``--set METHOD:KEY=VALUE`` of one method's runs only. Runs
with settings get their own directories (``<task>_<method>_s<seed>_set-<settings>``), so ``--reuse``
never takes a run made with other settings; the report lists the settings, each run's commit and
each task and method's full configuration.

``--ppo-search CAP`` (with ``solar`` among the methods) adds, per task and seed, how many training
episodes PPO needs to reach the success rate SOLAR reached on that seed: PPO is trained and
evaluated (10 noise-free episodes) every 100 episodes up to CAP episodes ("> CAP" when it never
gets there; a SOLAR success of 0% is not searched).

``--targets`` runs the project's target table instead of --tasks/--seeds (:data:`TARGETS`: each task with its
seeds, budget and target success): SOLAR, the VAE ablation and PPO at the same budget on every row, PPO's
episodes to SOLAR's success where SOLAR got somewhere (``--ppo-search``, default 2000 here), and the report
opens with the target table. It takes hours on 2 cores; with ``--reuse`` an interrupted or partial build
goes on where it stopped:

    python scripts/benchmark.py --targets --name targets --jobs 2 --reuse

``--paper`` runs the paper-style table (:data:`PAPER`): every task of the paper's experiments, 3 seeds each, with
SOLAR, the VAE ablation, the MPC ablation, the DSAE pipeline where it applies (the arm tasks with a dense cost) and
PPO at SOLAR's budget. The MPC ablation's runs start from the SOLAR runs' pretraining (so they run after them).
The report opens with the table, each row's target for SOLAR and whether it is met, and checks the paper's
prediction for the MPC ablation. Many hours on 2 cores; ``--reuse`` builds it over several invocations:

    python scripts/benchmark.py --paper --name paper --jobs 2 --reuse
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # solar_ros from this checkout, as the runs themselves

from solar_ros.settings import SettingsError, changed_settings, lookup  # noqa: E402


class Target(NamedTuple):
    """One row of the project's target table: ``task`` learned by SOLAR from images in ``episodes`` training
    episodes to a ``success`` rate (over its evaluation episodes) on every one of ``seeds``; ``stretch``: a row
    to report, whose target is a stretch goal."""

    task: str
    seeds: tuple[int, ...]
    episodes: int
    success: float
    stretch: bool = False


TARGETS = (
    Target("point", tuple(range(5)), 200, 0.90),
    Target("reacher_paper", tuple(range(3)), 500, 0.80),
    Target("sawyer_reach", tuple(range(3)), 500, 0.80),
    Target("sawyer_stack_0", tuple(range(3)), 500, 0.70),
    Target("sawyer_stack_1", tuple(range(3)), 500, 0.70),
    Target("sawyer_stack_2", tuple(range(3)), 500, 0.50, stretch=True),
)
TARGET_METHODS = ("solar", "vae", "ppo")


class PaperRow(NamedTuple):
    """One task of the paper-style table: each of ``methods`` on each of ``seeds`` at ``episodes`` training episodes;
    ``target``: SOLAR's target success on every seed (None: report only); ``stretch``: a stretch target."""

    task: str
    episodes: int
    methods: tuple[str, ...]
    target: float | None = None
    stretch: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)


PAPER_METHODS = ("solar", "vae", "solar_mpc", "dsae", "ppo")
"""The table's columns: SOLAR, its VAE and MPC ablations, the deep spatial autoencoder pipeline, PPO."""
_NO_DSAE = tuple(m for m in PAPER_METHODS if m != "dsae")
PAPER = (
    PaperRow("point", 200, PAPER_METHODS, 0.90),
    PaperRow("reacher_paper", 500, PAPER_METHODS, 0.80),
    PaperRow("car", 500, _NO_DSAE, 0.80),  # no arm: the DSAE pipeline's controller acts on joint states
    PaperRow("sawyer_reach", 500, PAPER_METHODS, 0.80),
    PaperRow("sawyer_stack_0", 500, PAPER_METHODS, 0.70),
    PaperRow("sawyer_stack_1", 500, PAPER_METHODS, 0.70),
    PaperRow("sawyer_stack_2", 500, PAPER_METHODS, 0.50, stretch=True),
    PaperRow("sawyer_push", 500, _NO_DSAE, 0.60),  # sparse labels: no dense cost for the DSAE pipeline
)
"""The paper-style table (``--paper``): the SOLAR paper's tasks with the project's targets."""


def paper_runs(rows: tuple[PaperRow, ...]) -> tuple[list[tuple[str, str, int, int]], list[tuple[str, str, int, int]]]:
    """The table's runs (task, method, seed, episodes) in two phases: every method but the MPC ablation, then the
    MPC ablation, whose runs start from the first phase's SOLAR runs' pretraining."""
    runs = [(r.task, m, s, r.episodes) for r in rows for m in r.methods for s in r.seeds]
    return [x for x in runs if x[1] != "solar_mpc"], [x for x in runs if x[1] == "solar_mpc"]


def paper_lines(rows: tuple[PaperRow, ...], results: list[dict]) -> list[str]:
    """Markdown: the paper-style table (success per seed of each method, SOLAR's target and whether it is met) and
    the paper's prediction for the MPC ablation (it fails where the block must first be lifted) against the runs."""
    by = {(r["task"], r["method"], r["seed"]): r for r in results}

    def cell(row: PaperRow, method: str) -> str:
        if method not in row.methods:
            return "n/a"
        return ", ".join(f"{by[(row.task, method, s)]['success_rate']:.0%}" if (row.task, method, s) in by else "-"
                         for s in row.seeds)

    names = {"solar": "SOLAR", "vae": "VAE ablation", "solar_mpc": "MPC ablation", "dsae": "DSAE", "ppo": "PPO"}
    lines = ["## The paper's table", "", "Success over the noise-free evaluation episodes, per seed.", "",
             "| task (episodes) | SOLAR target | met | " + " | ".join(names[m] for m in PAPER_METHODS) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in PAPER_METHODS) + " |"]
    for row in rows:
        solar = [by.get((row.task, "solar", s)) for s in row.seeds]
        if row.target is None:
            goal, met = "report", ""
        else:
            goal = f">= {row.target:.0%}" + (" (stretch)" if row.stretch else "")
            met = ("not run" if any(r is None for r in solar) else
                   "yes" if all(r["success_rate"] >= row.target for r in solar) else "no")
        lines.append(f"| `{row.task}` ({row.episodes}) | {goal} | {met} | "
                     + " | ".join(cell(row, m) for m in PAPER_METHODS) + " |")

    def mean(task: str, method: str) -> str:
        found = [r["success_rate"] for (t, m, _), r in by.items() if t == task and m == method]
        return f"{np.mean(found):.0%} ({len(found)} runs)" if found else "not run"

    lines += ["", "The paper's prediction: the MPC ablation acts greedily, so it fails where the block must first be "
              f"lifted (`sawyer_stack_2`). Measured, mean success: MPC on start 2 {mean('sawyer_stack_2', 'solar_mpc')}"
              f", on starts 0 and 1 {mean('sawyer_stack_0', 'solar_mpc')} and {mean('sawyer_stack_1', 'solar_mpc')}; "
              f"SOLAR on start 2 {mean('sawyer_stack_2', 'solar')}.", ""]
    return lines


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            seeds.extend(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def method_settings(settings: list[str], method: str) -> list[str]:
    """The ``--set`` items that apply to ``method``'s runs: plain ``KEY=VALUE`` ones and ``METHOD:KEY=VALUE``."""
    out = []
    for item in settings:
        head, sep, rest = item.partition(":")
        if sep and "=" not in head:
            if head == method:
                out.append(rest)
        else:
            out.append(item)
    return out


def settings_tag(settings: list[str]) -> str:
    """A directory-name suffix naming the settings ('' for none): readable when short, else a digest."""
    if not settings:
        return ""
    text = ",".join(settings)
    tag = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)
    if len(tag) > 60 or tag != text:
        tag = hashlib.sha1(text.encode()).hexdigest()[:12]
    return f"_set-{tag}"


def check_settings(tasks: list[str], methods: list[str], settings: list[str]) -> None:
    """Every setting must be valid for every task and method it applies to (SettingsError otherwise)."""
    from solar_ros.cli import METHODS, method_config

    for item in settings:
        head, sep, _ = item.partition(":")
        if sep and "=" not in head and head not in methods:
            raise SettingsError(f"--set {item}: {head!r} is not one of the methods run here ({', '.join(methods)})"
                                if head in METHODS else f"--set {item}: unknown method {head!r}")
    for method in methods:
        for task in tasks:
            try:
                method_config(method, task, method_settings(settings, method))
            except SettingsError as err:
                raise SettingsError(f"{method} on {task}: {err}") from None


def same_settings(summary: dict, method: str, task: str, settings: list[str]) -> bool:
    """Whether a stored run's config holds the values ``settings`` ask for."""
    from solar_ros.cli import method_config

    if not settings:
        return True
    wanted = changed_settings(method_config(method, task), settings)
    config = json.loads(json.dumps(summary.get("config") or {}))
    return all(lookup(config, k, object()) == json.loads(json.dumps(v)) for k, v in wanted.items())


def pretraining_source(name: str, task: str, method: str, seed: int) -> Path:
    """The run of benchmark ``name`` whose pretraining the run (task, method, seed) starts from: the one with a
    pretraining checkpoint among ``runs/benchmark/<name>/<task>_<method>_s<seed>[_set-...]``, or, where there is
    none, among the runs of the method whose pretraining it shares (the MPC ablation: SOLAR's; ValueError if there
    is none, or more than one)."""
    from solar_ros.algos.solar.persistence import SAME_PRETRAINING  # torch: only when a pretraining is reused

    folder = ROOT / "runs" / "benchmark" / name
    for source_method in dict.fromkeys((method, SAME_PRETRAINING.get(method, method))):  # its own runs first
        found = sorted(d for d in folder.glob(f"{task}_{source_method}_s{seed}*")
                       if re.fullmatch(rf"{re.escape(task)}_{source_method}_s{seed}(_set-.+)?", d.name)
                       and (d / "pretrain_checkpoint.pt").is_file())
        if found:
            break
    if len(found) != 1:
        raise ValueError(f"--pretraining-from {name}: {len(found)} runs of {task}/{method}/seed {seed} with a "
                         f"pretraining checkpoint under {folder} ({', '.join(d.name for d in found) or 'none'}); "
                         "give a benchmark whose runs have one each")
    return found[0]


def run_one(task: str, method: str, seed: int, out: Path, episodes: int | None, reuse: bool = False,
            settings: list[str] | None = None, pretraining_from: Path | None = None) -> dict:
    settings = list(settings or [])
    if reuse and (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
        if (summary.get("episodes") == episodes or episodes is None) and same_settings(summary, method, task,
                                                                                      settings):
            return summary
    cmd = [sys.executable, "-m", "solar_ros.cli", "train", "--task", task, "--method", method,
           "--seed", str(seed), "--out", str(out), "--no-progress"]
    if episodes:
        cmd += ["--episodes", str(episodes)]
    for item in settings:
        cmd += ["--set", item]
    if pretraining_from is not None:
        cmd += ["--pretraining-from", str(pretraining_from)]
    return run_logged(cmd, out, "summary.json", f"{task}/{method}/seed {seed}")


def run_logged(cmd: list[str], out: Path, result_file: str, what: str) -> dict:
    """Run ``cmd`` single-threaded with its output in out/log.txt; returns the JSON it wrote to out/result_file."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.txt", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if proc.returncode != 0:
        tail = (out / "log.txt").read_text().splitlines()[-5:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail))
    return json.loads((out / result_file).read_text())


def run_ppo_search(task: str, seed: int, target: float, cap: int, out: Path, reuse: bool = False,
                   settings: list[str] | None = None) -> dict:
    """PPO's episodes to ``target`` success (its own process, like the runs); writes and returns search.json.
    ``settings``: ``KEY=VALUE`` settings of PPO."""
    settings = list(settings or [])
    if reuse and (out / "search.json").is_file():
        found = json.loads((out / "search.json").read_text())
        if found["target_success"] == target and found["cap"] == cap and found.get("settings", []) == settings:
            return found
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-ppo-search", task, str(seed), str(target), str(cap),
           str(out), *settings]
    return run_logged(cmd, out, "search.json", f"ppo search {task}/seed {seed}")


def ppo_search_worker(task: str, seed: int, target: float, cap: int, out: Path, settings: list[str]) -> None:
    from solar_ros.algos import ppo
    from solar_ros.cli import method_config
    from solar_ros.provenance import provenance

    config = method_config("ppo", task, settings) if settings else None
    found = ppo.episodes_to_success(task, seed, target_success=target, eval_every=100, max_episodes=cap,
                                    config=config)
    result = {"task": task, "seed": seed, "target_success": target, "cap": cap, "episodes": found.episodes,
              "evaluations": found.evaluations, "settings": settings, "provenance": provenance()}
    (out / "search.json").write_text(json.dumps(result, indent=1))


def search_lines(searches: list[dict], rows: list[dict]) -> list[str]:
    """Markdown: PPO's episodes to SOLAR's success per task/seed, and the ratio to SOLAR's episodes."""
    solar = {(r["task"], r["seed"]): r for r in rows if r["method"] == "solar"}
    lines = ["", "## PPO: episodes to reach SOLAR's success", "",
             "| task | seed | SOLAR success | SOLAR episodes | PPO episodes to that success | ratio | cap |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for q in sorted(searches, key=lambda q: (q["task"], q["seed"])):
        ref = solar[(q["task"], q["seed"])]
        if q["episodes"] is None:
            found, ratio = f"> {q['cap']}", f"> {q['cap'] / ref['episodes']:.1f}x"
        else:
            found, ratio = str(q["episodes"]), f"{q['episodes'] / ref['episodes']:.1f}x"
        lines.append(f"| {q['task']} | {q['seed']} | {ref['success_rate']:.0%} | {ref['episodes']} | {found} | "
                     f"{ratio} | {q['cap']} |")
    return lines


def target_lines(targets: tuple[Target, ...], rows: list[dict], searches: list[dict]) -> list[str]:
    """Markdown: the target table, one line per :class:`Target`: SOLAR's success per seed against the target,
    the VAE ablation's and PPO's beside it, and PPO's episodes to SOLAR's success per seed."""
    by = {(r["task"], r["method"], r["seed"]): r for r in rows}
    found = {(q["task"], q["seed"]): q for q in searches}

    def per_seed(task: str, method: str, seeds) -> str:
        return ", ".join(f"{by[(task, method, s)]['success_rate']:.0%}" if (task, method, s) in by else "-"
                         for s in seeds)

    lines = ["## Targets", "",
             "| task (episodes) | target, seeds | SOLAR per seed | met | VAE ablation | PPO "
             "| PPO's episodes to SOLAR's success, per seed |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for t in targets:
        solar = [by.get((t.task, "solar", s)) for s in t.seeds]
        if any(r is None for r in solar):
            met = "not run"
        else:
            met = "yes" if all(r["success_rate"] >= t.success for r in solar) else "no"
        searched = ", ".join(("-" if (t.task, s) not in found else
                              str(found[(t.task, s)]["episodes"] or f"> {found[(t.task, s)]['cap']}"))
                             for s in t.seeds)
        goal = f">= {t.success:.0%}" + (" (stretch)" if t.stretch else "") + f", {len(t.seeds)}"
        lines.append(f"| `{t.task}` ({t.episodes}) | {goal} | {per_seed(t.task, 'solar', t.seeds)} | {met} | "
                     f"{per_seed(t.task, 'vae', t.seeds)} | {per_seed(t.task, 'ppo', t.seeds)} | {searched} |")
    return lines + [""]


def run_commit(summary: dict) -> str:
    """The commit a run's summary records ('?' for runs from before summaries recorded it)."""
    prov = summary.get("provenance") or {}
    if "commit" not in prov:
        return "?"
    return prov["commit"] or "not a git checkout"


def machine_lines(rows: list[dict]) -> list[str]:
    """The report's line on the machines the runs recorded (none for runs from before summaries recorded it): a
    seeded run gives the same floats only on the same kind of CPU."""
    seen = sorted({f"{m.get('cpu') or 'unknown CPU'} ({m.get('cpus')} CPUs; {', '.join(m.get('vector') or []) or 'no'}"
                   f" vector extensions of note; torch {m.get('torch')})"
                   for r in rows if (m := (r.get("provenance") or {}).get("machine"))})
    return [f"Machine{'s' if len(seen) > 1 else ''} of the runs: " + "; ".join(seen) + ".", ""] if seen else []


def pretraining_lines(rows: list[dict]) -> list[str]:
    """The report's line on runs that started from another run's pretraining (none if no run did)."""
    sources = [r["iterations"][0].get("extra", {}).get("pretraining_from") if r.get("iterations") else None
               for r in rows]
    taken = sorted({Path(str(src)).parent.name for src in sources if src})
    if not taken:
        return []
    names = ", ".join(f"`{t}`" for t in taken)
    return [f"Pretraining: {sum(1 for src in sources if src)} of the {len(rows)} runs started from the pretraining of "
            f"the same task, method and seed in benchmark {names} (`--pretraining-from`); their wall times include "
            "that pretraining.", ""]


def write_report(name: str, rows: list[dict], command: str, docs: Path, searches: list[dict] | None = None,
                 settings: list[str] | None = None, commit: str | None = None,
                 targets: tuple[Target, ...] | None = None, paper: tuple[PaperRow, ...] | None = None) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    commits = sorted({run_commit(r) for r in rows})
    lines = [f"# Benchmark: {name}", "", "Produced by:", "", "```bash", command, "```", "",
             f"Commit of the report: `{commit or 'not a git checkout'}`; of the runs: "
             + ", ".join(f"`{c}`" for c in commits) + " (per run below).", "",
             "Settings: " + (", ".join(f"`{s}`" for s in settings) + " on top of each method's task defaults"
                             if settings else "each method's task defaults") + " (full configurations below).", "",
             *machine_lines(rows),
             *pretraining_lines(rows),
             *(target_lines(targets, rows, searches or []) if targets else []),
             *(paper_lines(paper, rows) if paper else []),
             "## Summary (mean over seeds)", "",
             "| task | method | seeds | success rate | final distance | training episodes | env steps "
             "| wall time (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (task, method), rs in sorted(groups.items()):
        succ = np.array([r["success_rate"] for r in rs])
        lines.append(
            f"| {task} | {method} | {len(rs)} | {succ.mean():.0%} (min {succ.min():.0%}) | "
            f"{np.mean([r['final_distance'] for r in rs]):.4f} | {np.mean([r['episodes'] for r in rs]):.0f} | "
            f"{np.mean([r['env_steps'] for r in rs]):.0f} | {np.mean([r['wall_time_s'] for r in rs]):.1f} |")
    lines += ["", "## Per seed", "",
              "| task | method | seed | goal | success rate | eval episodes | final distance | final cost | episodes "
              "| wall time (s) | commit |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["task"], r["method"], r["seed"])):
        goal = ", ".join(f"{g:.3f}" for g in r["goal"])
        lines.append(f"| {r['task']} | {r['method']} | {r['seed']} | ({goal}) | {r['success_rate']:.0%} | "
                     f"{r['eval_episodes']} | {r['final_distance']:.4f} | {r['final_cost']:.3f} | {r['episodes']} | "
                     f"{r['wall_time_s']:.1f} | {run_commit(r)} |")
    if searches:
        lines += search_lines(searches, rows)
    lines += config_lines(groups)
    lines += ["", f"![learning curves]({name}.png)", ""]
    (docs / f"{name}.md").write_text("\n".join(lines))
    plot(groups, docs / f"{name}.png")


def config_lines(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    """Markdown: the full configuration of each task and method, as its runs' summaries record it."""
    lines = ["", "## Configurations", ""]
    for (task, method), rs in sorted(groups.items()):
        configs: dict[str, list[dict]] = {}  # the same configuration in any key order -> its runs
        for r in rs:
            configs.setdefault(json.dumps(r.get("config"), sort_keys=True), []).append(r)
        for same in configs.values():
            which = "" if len(configs) == 1 else f" (seeds {', '.join(str(r['seed']) for r in same)})"
            lines += [f"{task} / {method}{which}:", "", "```json", json.dumps(same[0].get("config")), "```", ""]
    return lines


def plot(groups: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for t, _ in groups})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for (t, method), rs in sorted(groups.items()):
            if t != task:
                continue
            for i, r in enumerate(rs):
                eps = [it["episodes"] for it in r["iterations"]]
                dist = [it["final_distance"] for it in r["iterations"]]
                ax.plot(eps, dist, color=f"C{sorted(m for _, m in groups).index(method)}", alpha=0.5,
                        label=method if i == 0 else None)
        ax.set_title(task)
        ax.set_xlabel("training episodes")
        ax.set_ylabel("final distance (training rollouts)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker-ppo-search":
        task, seed, target, cap, out = sys.argv[2:7]
        ppo_search_worker(task, int(seed), float(target), int(cap), Path(out), sys.argv[7:])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", help="comma-separated task names")
    p.add_argument("--methods", help="comma-separated method names")
    p.add_argument("--targets", action="store_true",
                   help="run the project's target table (every task with its seeds and budget; solar, vae, ppo)")
    p.add_argument("--paper", action="store_true",
                   help="run the paper-style table (every paper task, 3 seeds; solar, vae, solar_mpc, dsae, ppo)")
    p.add_argument("--seeds", type=parse_seeds, default=None, help="e.g. 0-9 or 0,3,5 (default 0-4)")
    p.add_argument("--episodes", type=positive_int, default=None, help="training episode budget (default: method's)")
    p.add_argument("--ppo-episodes", type=positive_int, default=None,
                   help="PPO's training episode budget (default: --episodes, else PPO's own default)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse runs whose outputs already exist under runs/benchmark/<name>/ (same budget)")
    p.add_argument("--name", required=True, help="report name: docs/results/<name>.md")
    p.add_argument("--jobs", type=positive_int, default=2, help="runs in parallel")
    p.add_argument("--ppo-search", type=positive_int, default=0, metavar="CAP",
                   help="also find PPO's episodes to SOLAR's success per seed, up to CAP episodes")
    p.add_argument("--pretraining-from", metavar="NAME", default=None,
                   help="start each solar/vae/solar_mpc run from the pretraining of the same task, method and seed in "
                        "runs/benchmark/NAME/ (for settings of the iterations only; see solar-ros train)")
    p.add_argument("--set", action="append", default=[], metavar="[METHOD:]KEY=VALUE", dest="settings",
                   help="change a setting of every run (or of one method's runs), as `solar-ros train --set`; "
                        "repeatable")
    args = p.parse_args()
    command = "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    target_rows, paper_rows = None, None
    if args.targets and args.paper:
        p.error("give --targets or --paper, not both")
    if args.targets or args.paper:
        mode = "--targets" if args.targets else "--paper"
        if args.tasks or args.methods or args.seeds or args.episodes or args.ppo_episodes:
            p.error(f"{mode} sets the tasks, methods, seeds and budgets itself: leave out --tasks, --methods, "
                    "--seeds, --episodes and --ppo-episodes")
    if args.targets:
        target_rows = TARGETS
        tasks, methods = [t.task for t in target_rows], list(TARGET_METHODS)
        args.ppo_search = args.ppo_search or 2000
    elif args.paper:
        paper_rows = PAPER
        tasks, methods = [r.task for r in paper_rows], list(PAPER_METHODS)
    elif not (args.tasks and args.methods):
        p.error("give --tasks and --methods, or --targets, or --paper")
    else:
        tasks, methods = args.tasks.split(","), args.methods.split(",")
        args.seeds = args.seeds or parse_seeds("0-4")
    try:
        if paper_rows:  # each method on the rows it runs on
            for m in methods:
                check_settings([r.task for r in paper_rows if m in r.methods], [m], method_settings(args.settings, m))
        else:
            check_settings(tasks, methods, args.settings)
    except SettingsError as err:
        p.error(str(err))
    from solar_ros.provenance import git_commit
    commit = git_commit()

    def run_dir(t: str, m: str, s: int) -> Path:
        tag = settings_tag(method_settings(args.settings, m))
        return ROOT / "runs" / "benchmark" / args.name / f"{t}_{m}_s{s}{tag}"

    later: list[tuple[str, str, int, int | None]] = []
    if target_rows:  # every method at the row's budget, on the row's seeds
        runs = [(t.task, m, s, t.episodes) for t in target_rows for m in methods for s in t.seeds]
    elif paper_rows:  # the MPC ablation after SOLAR, from its pretraining
        runs, later = paper_runs(paper_rows)
    else:
        runs = [(t, m, s, (args.ppo_episodes or args.episodes) if m == "ppo" else args.episodes)
                for t in tasks for m in methods for s in args.seeds]

    def sources_for(batch, name: str) -> dict[tuple[str, str, int], Path]:
        return {(t, m, s): pretraining_source(name, t, m, s) for t, m, s, _ in batch
                if m in ("solar", "vae", "solar_mpc")}

    sources: dict[tuple[str, str, int], Path] = {}
    if args.pretraining_from:
        try:
            sources = sources_for(runs + later, args.pretraining_from)
        except ValueError as err:
            p.error(str(err))
    started = time.perf_counter()
    rows = []

    def execute(batch, sources) -> None:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_one, t, m, s, run_dir(t, m, s), episodes, args.reuse,
                                   method_settings(args.settings, m), sources.get((t, m, s)))
                       for t, m, s, episodes in batch]
            for (t, m, s, _), f in zip(batch, futures):
                r = f.result()
                rows.append(r)
                print(f"{t:>13} {m:>10} seed {s:>2}: success {r['success_rate']:.0%}, final distance "
                      f"{r['final_distance']:.4f}, {r['episodes']} episodes, {r['wall_time_s']:.1f} s", flush=True)

    execute(runs, sources)
    if later:
        execute(later, sources or sources_for(later, args.name))
    searches = []
    if args.ppo_search:
        targets = [(r["task"], r["seed"], r["success_rate"]) for r in rows
                   if r["method"] == "solar" and r["success_rate"] > 0]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            ppo_settings = method_settings(args.settings, "ppo")
            futures = [pool.submit(run_ppo_search, t, s, target, args.ppo_search,
                                   ROOT / "runs" / "benchmark" / args.name / f"{t}_ppo-search_s{s}"
                                   f"{settings_tag(ppo_settings)}", args.reuse, ppo_settings)
                       for t, s, target in targets]
            for (t, s, target), f in zip(targets, futures):
                q = f.result()
                searches.append(q)
                print(f"{t:>13} ppo search seed {s:>2}: {q['episodes'] or '> ' + str(q['cap'])} episodes to "
                      f"{target:.0%} success", flush=True)
    write_report(args.name, rows, command, ROOT / "docs" / "results", searches, args.settings, commit, target_rows,
                 paper_rows)
    print(f"wrote docs/results/{args.name}.md and .png ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
