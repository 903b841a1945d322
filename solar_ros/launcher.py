"""Start the node stack as separate processes, where ``ros2 launch`` is not available.

:data:`PROFILES` is the single description of which node runs with which parameter files in each
profile; the launch files in ``launch/`` build their ``launch_ros`` Node actions from the same
objects, and a test checks that they agree.

``launch("sim")`` starts each node as ``python -m solar_ros.nodes.<node> --ros-args -r
__node:=<node> --params-file config/<node>.yaml --params-file config/<profile>.yaml [...]``,
prefixes every output line with ``[<node>]``, and on Ctrl-C / SIGTERM stops them all: SIGINT, then
SIGTERM after ``grace`` seconds, then SIGKILL.

A node that dies (killed, crashed) is started again after ``respawn_delay`` seconds, as
``launch_ros`` does with ``respawn=True, respawn_delay=...`` in the launch files; the nodes pick up
where they were from their own state (see docs/ros_interfaces.md, "Node crashes"). What ends the
launch instead: the profile's main node (the trainer) exiting by itself (its status is the run's),
a node exiting with status 2 (a configuration error, which a restart would repeat), or a node that
died more than ``max_respawns`` times.
"""
from __future__ import annotations

import difflib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Mapping

import yaml

from .nodes.contract import PARAMETERS, node_parameters
from .provenance import LAUNCH_ENV

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
"""The repository's parameter files (a ROS install uses share/solar_ros/config instead)."""


RESPAWN_DELAY = 2.0
"""s between a node's death and its restart (the launch files use the same value)."""
MAX_RESPAWNS = 20
"""Restarts of one node before the launch gives up on it."""
CONFIG_ERROR_STATUS = 2
FASTDDS_PROFILE = "fastdds_profile.xml"
"""The Fast DDS profile the stack's nodes run with (UDPv4 only; why: the file's own comment)."""
PROFILES_FILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
"""Exit status of a node that refused its parameters (``nodes.common.run_node``): not respawned."""


@dataclass(frozen=True)
class NodeSpec:
    """One node process of a profile."""

    name: str
    """Node name, executable name (``ros2 run solar_ros <name>``) and module ``solar_ros.nodes.<name>``."""
    params_files: tuple[str, ...]
    """Parameter files, relative to the config directory, later files overriding earlier ones."""
    remappings: tuple[tuple[str, str], ...] = ()
    """Topic/service remappings (from, to)."""

    @property
    def module(self) -> str:
        return f"solar_ros.nodes.{self.name}"


@dataclass(frozen=True)
class LaunchSpec:
    """A profile: the node processes of one way to run the stack."""

    profile: str
    description: str
    nodes: tuple[NodeSpec, ...]
    external: tuple[str, ...] = field(default=())
    """What the launch file starts besides these nodes (simulators, bridges), for documentation."""
    main_node: str | None = None
    """A node whose exit ends the whole launch with that node's exit status (the trainer: its clean
    exit is the run's success, however the other nodes had to be stopped). Killed by a signal, it is
    respawned like the others (it resumes the run from its persisted state)."""
    respawn: bool = True
    """Start a node that died again (``launch_ros``'s ``respawn``)."""
    respawn_delay: float = RESPAWN_DELAY
    """Seconds between a node's death and its restart (``launch_ros``'s ``respawn_delay``)."""
    max_respawns: int = MAX_RESPAWNS
    """Restarts per node before its death ends the launch (``launch_ros``'s ``respawn_max_retries``)."""
    optional: tuple[NodeSpec, ...] = field(default=())
    """Nodes started only when their launch argument asks for them (:data:`OPTIONAL_NODES`)."""

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes + self.optional:
            if n.name == name:
                return n
        raise KeyError(f"profile {self.profile!r} has no node {name!r}")


def _nodes(profile: str, names: list[str], remappings: Mapping[str, tuple[tuple[str, str], ...]] | None = None):
    remappings = remappings or {}
    return tuple(NodeSpec(n, (f"{n}.yaml", f"{profile}.yaml"), remappings.get(n, ())) for n in names)


# Intera publishes the arm's state on /robot/joint_states and the wrist camera on its own topic.
_INTERA_REMAPS = {
    "camera_node": (("/camera/image_raw", "/io/internal_camera/right_hand_camera/image_raw"),),
    "controller_node": (("/joint_states", "/robot/joint_states"),),
    "recorder_node": (("/joint_states", "/robot/joint_states"),),
    "inspector_node": (("/joint_states", "/robot/joint_states"),),
}

OPTIONAL_NODES: dict[str, str] = {"inspector": "inspector_node", "labeller": "labeller_node"}
"""Launch argument -> the optional node it starts in every profile (``inspector:=true``: the Foxglove
WebSocket inspector; ``labeller:=true``: the scripted person who labels successes, for learning from sparse
labels in simulation); the launch files declare the same arguments (default false)."""


def _optional(profile: str, remappings: Mapping[str, tuple[tuple[str, str], ...]] | None = None):
    return _nodes(profile, list(OPTIONAL_NODES.values()), remappings)

PROFILES: dict[str, LaunchSpec] = {
    "sim": LaunchSpec(
        "sim", "MuJoCo Sawyer (sim_arm_node owns /clock) with the full node stack, learning until the trainer is done",
        _nodes("sim", ["sim_arm_node", "camera_node", "encoder_node", "controller_node", "recorder_node",
                       "model_fitting_node", "trainer_node"]),
        main_node="trainer_node", optional=_optional("sim")),
    "gazebo": LaunchSpec(
        "gazebo", "Gazebo + ros2_control Sawyer with the node stack (needs a full ROS 2 install)",
        _nodes("gazebo", ["camera_node", "controller_node", "recorder_node"]),
        external=("gz sim", "ros_gz_sim create", "ros_gz_bridge (/clock)", "robot_state_publisher",
                  "controller_manager spawner: joint_state_broadcaster, effort_controller"),
        optional=_optional("gazebo")),
    "real_sawyer": LaunchSpec(
        "real_sawyer", "a physical Sawyer through the Intera SDK (ros1_bridge + bin/intera_torque_relay)",
        _nodes("real_sawyer", ["camera_node", "controller_node", "recorder_node"], _INTERA_REMAPS),
        external=("ros1_bridge dynamic_bridge", "intera_torque_relay (ROS 1 side)"),
        optional=_optional("real_sawyer", _INTERA_REMAPS)),
}
"""Profile name -> what runs. ``sim`` is the whole learning stack and ends when its trainer does; the
robot profiles run the stack without a trainer (episodes are started by a person or a script)."""


class LaunchError(ValueError):
    """Launch arguments or parameter files that would not run as written: a malformed override, an
    unknown profile, node or parameter name (ROS itself would silently ignore an unknown parameter)."""


def get_profile(profile: str) -> LaunchSpec:
    if profile not in PROFILES:
        raise LaunchError(f"unknown launch profile {profile!r}; available: {', '.join(PROFILES)}")
    return PROFILES[profile]


def split_optional(spec: LaunchSpec, extra_params: Mapping[str, Any]) -> tuple[list[NodeSpec], dict[str, Any]]:
    """Take the launch arguments of :data:`OPTIONAL_NODES` (``inspector:=true``) out of the overrides;
    returns the optional nodes they switch on and the remaining overrides."""
    rest = dict(extra_params)
    started = []
    for arg, node in OPTIONAL_NODES.items():
        if arg not in rest:
            continue
        value = rest.pop(arg)
        value = _parse_value(value) if isinstance(value, str) else value
        if not isinstance(value, bool):
            raise LaunchError(f"{arg}:={value!r}: expected true or false")
        if value:
            started.append(spec.node(node))
    return started, rest


def optional_launch_actions(spec: LaunchSpec, config_dir: str) -> list:
    """For the launch files (needs ``launch`` and ``launch_ros``): per optional node, its launch
    argument (default false) and its ``Node`` action, started only when the argument is true."""
    from launch.actions import DeclareLaunchArgument
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    actions = []
    for arg, name in OPTIONAL_NODES.items():
        node = spec.node(name)
        actions += [
            DeclareLaunchArgument(arg, default_value="false", description=f"true: also start {name}"),
            Node(package="solar_ros", executable=node.name, name=node.name, output="screen", emulate_tty=True,
                 parameters=[os.path.join(config_dir, f) for f in node.params_files],
                 remappings=list(node.remappings), respawn=spec.respawn, respawn_delay=spec.respawn_delay,
                 respawn_max_retries=spec.max_respawns, additional_env=middleware_env(config_dir),
                 condition=IfCondition(LaunchConfiguration(arg))),
        ]
    return actions


def parse_overrides(args: Iterable[str]) -> dict[str, str]:
    """Command-line ``name:=value`` arguments -> ``{name: value}`` (see :func:`params_yaml` for the names)."""
    out: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition(":=")
        if not sep or not name.strip():
            raise LaunchError(f"argument {arg!r} is not NAME:=VALUE (e.g. controller_node.rate:=250 for one node, "
                              f"or use_sim_time:=true for every node)")
        out[name.strip()] = value
    return out


def split_name(key: str) -> tuple[str | None, str]:
    """``"controller_node.rate"`` or ``"controller_node:rate"`` -> ("controller_node", "rate");
    ``"rate"`` -> (None, "rate"): a parameter of every node."""
    for sep in (":", "."):
        if sep in key:
            node, name = key.split(sep, 1)
            return node, name
    return None, key


def _listing(names: Iterable[str]) -> str:
    return ", ".join(sorted(set(names)))


def _flat_names(params: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Parameter names of a ``ros__parameters`` mapping (nested mappings are dotted names, as in ROS)."""
    names = []
    for k, v in params.items():
        if isinstance(v, Mapping):
            names += _flat_names(v, f"{prefix}{k}.")
        else:
            names.append(f"{prefix}{k}")
    return names


def _check_names(node: str, names: Iterable[str], where: str) -> None:
    if node not in PARAMETERS:
        close = difflib.get_close_matches(node, PARAMETERS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise LaunchError(f"{where}: unknown node {node!r}{hint}; nodes: {_listing(PARAMETERS)}")
    unknown = sorted(set(names) - set(node_parameters(node)))
    if unknown:
        close = difflib.get_close_matches(unknown[0], node_parameters(node), n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise LaunchError(f"{where}: {node} has no parameter{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}{hint}; its parameters: {_listing(node_parameters(node))}")


def validate_overrides(spec: LaunchSpec, extra_params: Mapping[str, Any]) -> None:
    """Reject overrides naming a node the profile does not run or a parameter the node does not declare;
    a parameter for every node must be one that at least one of the profile's nodes declares."""
    profile_nodes = [n.name for n in spec.nodes + spec.optional]
    for key, value in extra_params.items():
        if isinstance(value, Mapping):
            node, names = key, _flat_names(value)
        else:
            node, name = split_name(key)
            names = [name]
        if node is None:
            valid = {p for n in profile_nodes for p in node_parameters(n)}
            unknown = sorted(set(names) - valid)
            if unknown:
                raise LaunchError(f"override {key!r}: no node of profile {spec.profile!r} has a parameter "
                                  f"{unknown[0]!r}; give NODE.PARAMETER (nodes: {', '.join(profile_nodes)}) or one of "
                                  f"{_listing(valid)}")
            continue
        if node not in profile_nodes:
            close = difflib.get_close_matches(node, profile_nodes, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise LaunchError(f"override {key!r}: profile {spec.profile!r} runs no node {node!r}{hint}; its nodes: "
                              f"{', '.join(profile_nodes)}")
        _check_names(node, names, f"override {key!r}")


def validate_params_files(spec: LaunchSpec, config_dir: str | os.PathLike = CONFIG_DIR,
                          nodes: Iterable[NodeSpec] | None = None) -> dict[str, dict[str, Any]]:
    """Check the parameter files of ``nodes`` (default: all of the profile's) before anything starts:
    each is a mapping of node sections ``{node: {ros__parameters: {...}}}`` (or ``/**`` for every
    node), every section names a known node and every parameter one that node declares. Returns each
    node's parameters as its files set them (later files overriding earlier ones)."""
    nodes = list(spec.nodes if nodes is None else nodes)
    contents: dict[str, dict] = {}
    for n in nodes:
        for f in n.params_files:
            if f in contents:
                continue
            path = Path(config_dir) / f
            if not path.is_file():
                raise FileNotFoundError(f"parameter file {path} is missing")
            try:
                content = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise LaunchError(f"parameter file {path} is not valid YAML: {err}") from None
            if not isinstance(content, dict):
                raise LaunchError(f"parameter file {path}: expected node sections (node: {{ros__parameters: "
                                  f"...}}), got {type(content).__name__}")
            for section, body in content.items():
                where = f"parameter file {path}, section {section!r}"
                if not (isinstance(body, dict) and set(body) == {"ros__parameters"}
                        and isinstance(body["ros__parameters"], dict)):
                    raise LaunchError(f"{where}: expected exactly one key, ros__parameters, holding a mapping")
                names = _flat_names(body["ros__parameters"])
                node = str(section).lstrip("/")
                if node in ("**", "*"):
                    valid = {p for n2 in spec.nodes + spec.optional for p in node_parameters(n2.name)}
                    unknown = sorted(set(names) - valid)
                    if unknown:
                        raise LaunchError(f"{where}: no node of profile {spec.profile!r} has a parameter "
                                          f"{unknown[0]!r}")
                else:
                    _check_names(node, names, where)
            contents[f] = content
    merged: dict[str, dict[str, Any]] = {}
    for n in nodes:
        params: dict[str, Any] = {}
        for f in n.params_files:
            for section, body in contents[f].items():
                if str(section).lstrip("/") in ("**", "*", n.name):
                    params.update(body["ros__parameters"])
        merged[n.name] = params
    return merged


def params_yaml(extra_params: Mapping[str, Any]) -> dict[str, Any]:
    """Turn overrides into a ROS parameter file's content.

    Accepted forms: ``{"rate": 100}`` (every node), ``{"controller_node.rate": 100}`` or
    ``{"controller_node:rate": 100}`` (one node), ``{"controller_node": {"rate": 100}}``. String
    values are parsed as YAML (``"100"`` -> 100, ``"true"`` -> True), as on a command line; text that
    reads as a mapping stays a string (see :func:`_parse_value`).
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, value in extra_params.items():
        if isinstance(value, Mapping):
            node, params = key, dict(value)
        else:
            node, name = split_name(key)
            node = node or "/**"
            params = {name: value}
        params = {k: (_parse_value(v) if isinstance(v, str) else v) for k, v in params.items()}
        out.setdefault(node, {"ros__parameters": {}})["ros__parameters"].update(params)
    return out


def _parse_value(text: str):
    """A command-line value as YAML (``"100"`` -> 100), except that text meaning a mapping stays text:
    a ROS parameter cannot hold a mapping, and YAML settings such as the trainer's ``fit_config``
    (``"{kl_step: 2.0}"``) are strings."""
    value = yaml.safe_load(text)
    return text if isinstance(value, dict) else value


def launch_record(spec: LaunchSpec, file_params: Mapping[str, Mapping[str, Any]],
                  extra_params: Mapping[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """How a stack was started, for the nodes' results: the command line, the profile, and each node's
    parameters (its files, then the overrides)."""
    overrides = params_yaml(extra_params)
    parameters = {}
    for node, params in file_params.items():
        merged = dict(params)
        for section in ("/**", node):
            merged.update(overrides.get(section, {}).get("ros__parameters", {}))
        parameters[node] = merged
    return {"argv": list(sys.argv if argv is None else argv), "profile": spec.profile, "parameters": parameters}


def middleware_env(config_dir: str | os.PathLike = CONFIG_DIR, environ: Mapping[str, str] | None = None
                   ) -> dict[str, str]:
    """The environment the stack's nodes add for the middleware: FASTDDS_DEFAULT_PROFILES_FILE set to the
    project's Fast DDS profile (``config/fastdds_profile.xml``, from ``config_dir`` where it has one), unless
    ``environ`` (default: this process's) already names a profiles file, which then stays in charge."""
    environ = os.environ if environ is None else environ
    if any(environ.get(var) for var in PROFILES_FILE_VARS):
        return {}
    path = Path(config_dir) / FASTDDS_PROFILE
    return {PROFILES_FILE_VARS[0]: str(path if path.is_file() else CONFIG_DIR / FASTDDS_PROFILE)}


def node_command(spec: NodeSpec, config_dir: str | os.PathLike = CONFIG_DIR,
                 extra_params_file: str | os.PathLike | None = None, python: str = sys.executable) -> list[str]:
    """The command line that runs one node here."""
    cmd = [python, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    for f in spec.params_files:
        cmd += ["--params-file", str(Path(config_dir) / f)]
    if extra_params_file is not None:
        cmd += ["--params-file", str(extra_params_file)]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


class _Process:
    """One child process with its output relayed line by line under a prefix."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], out: IO[str], lock: threading.Lock,
                 width: int) -> None:
        self.name = name
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, text=True, bufsize=1)
        prefix = f"[{name}]".ljust(width + 2)

        def relay() -> None:
            for line in self.proc.stdout:
                with lock:
                    out.write(f"{prefix} {line}" if line.endswith("\n") else f"{prefix} {line}\n")
                    out.flush()

        self.thread = threading.Thread(target=relay, name=f"relay-{name}", daemon=True)
        self.thread.start()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


def launch(profile: str, extra_params: Mapping[str, Any] | None = None, *,
           config_dir: str | os.PathLike = CONFIG_DIR, nodes: list[str] | None = None,
           env: Mapping[str, str] | None = None, output: IO[str] | None = None, grace: float = 5.0,
           duration: float | None = None, argv: list[str] | None = None, respawn: bool | None = None,
           respawn_delay: float | None = None, max_respawns: int | None = None) -> int:
    """Run a profile's nodes until Ctrl-C/SIGTERM, until the run ends, or for ``duration`` seconds.

    ``extra_params``: overrides (see :func:`params_yaml`), and ``inspector: true`` to start the
    optional inspector (:data:`OPTIONAL_NODES`); ``nodes``: run only these; ``env``:
    extra environment variables for the children; ``argv``: the command line that asked for this
    launch (default ``sys.argv``), recorded with every node's parameters for the nodes' results
    (:data:`solar_ros.provenance.LAUNCH_ENV`); ``respawn``, ``respawn_delay``, ``max_respawns``:
    the profile's settings unless given. Unknown nodes and parameters, in the overrides or in the
    parameter files, raise :class:`LaunchError` before any node starts.

    A node that dies is respawned (see the module docstring). The launch ends when the main node
    exits by itself, when a node exits with status 2 (configuration error) or dies once more than
    ``max_respawns`` times (or at all, without respawn), on a stop request, or after ``duration``.
    Returns 0 after a requested stop or the duration; the main node's exit status when it ended the
    launch; otherwise the exit status of the node that ended it (1 if that was 0 but others had to
    be stopped and one of them failed).
    """
    spec = get_profile(profile)
    optional, extra_params = split_optional(spec, extra_params or {})
    available = list(spec.nodes) + optional
    chosen = [n for n in available if nodes is None or n.name in nodes]
    if nodes is not None:
        unknown = set(nodes) - {n.name for n in available}
        if unknown:
            raise LaunchError(f"profile {profile!r} has no nodes {sorted(unknown)}; its nodes: "
                              f"{', '.join(n.name for n in available)}")
    respawn = spec.respawn if respawn is None else bool(respawn)
    respawn_delay = spec.respawn_delay if respawn_delay is None else float(respawn_delay)
    max_respawns = spec.max_respawns if max_respawns is None else int(max_respawns)
    if not (respawn_delay >= 0 and max_respawns >= 0):
        raise LaunchError(f"respawn_delay and max_respawns must be >= 0, got {respawn_delay}, {max_respawns}")
    file_params = validate_params_files(spec, config_dir, chosen)
    validate_overrides(spec, extra_params or {})
    out = output if output is not None else sys.stdout
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env.update(middleware_env(config_dir, child_env))
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env[LAUNCH_ENV] = json.dumps(launch_record(spec, file_params, extra_params or {}, argv), default=str)
    extra_file = None
    if extra_params:
        fd, extra_file = tempfile.mkstemp(prefix="solar_ros_params_", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(params_yaml(extra_params), f)

    stop = threading.Event()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            handlers[s] = signal.signal(s, lambda *_: stop.set())
    lock = threading.Lock()
    width = max(len(n.name) for n in chosen)

    def say(text: str) -> None:
        with lock:
            out.write(f"[launch] {text}\n")
            out.flush()

    def start(n: NodeSpec) -> _Process:
        p = _Process(n.name, node_command(n, config_dir, extra_file), child_env, out, lock, width)
        say(f"started {n.name} (pid {p.proc.pid})")
        return p

    procs: dict[str, _Process] = {}
    respawns = {n.name: 0 for n in chosen}
    pending: dict[str, float] = {}  # node -> monotonic time of its restart
    first_exit: tuple[str, int] | None = None
    try:
        for n in chosen:
            procs[n.name] = start(n)
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set() and first_exit is None:
            now = time.monotonic()
            for n in chosen:
                p = procs[n.name]
                if n.name in pending:
                    if now >= pending[n.name]:
                        del pending[n.name]
                        respawns[n.name] += 1
                        procs[n.name] = start(n)
                    continue
                rc = p.proc.poll()
                if rc is None:
                    continue
                p.thread.join(timeout=1.0)  # its last output lines first
                how = _describe_exit(rc)
                if n.name == spec.main_node and rc >= 0:
                    first_exit = (n.name, rc)
                elif rc == CONFIG_ERROR_STATUS:
                    say(f"{n.name} {how} (configuration error): not respawning it")
                    first_exit = (n.name, rc)
                elif respawn and respawns[n.name] < max_respawns:
                    say(f"{n.name} {how}; respawning it in {respawn_delay:g} s "
                        f"(respawn {respawns[n.name] + 1} of at most {max_respawns})")
                    pending[n.name] = now + respawn_delay
                    continue
                else:
                    if respawn:
                        say(f"{n.name} {how} and was already respawned {respawns[n.name]} times: giving up")
                    first_exit = (n.name, rc)
                break
            if first_exit is not None or (deadline is not None and time.monotonic() >= deadline):
                break
            stop.wait(0.1)
        if first_exit is not None:
            say(f"{first_exit[0]} exited with status {first_exit[1]}; stopping the others")
        statuses = _shutdown(list(procs.values()), grace)
    finally:
        for p in procs.values():  # only reached with live children if something above raised
            p.signal(signal.SIGKILL)
        for s, h in handlers.items():
            signal.signal(s, h)
        if extra_file is not None:
            os.unlink(extra_file)
    for p in procs.values():
        p.thread.join(timeout=1.0)
    if first_exit is None:
        return 0
    if first_exit[0] == spec.main_node or first_exit[1] != 0:
        return first_exit[1]
    return 1 if any(rc not in (0, -signal.SIGINT) for name, rc in statuses.items() if name != first_exit[0]) else 0


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


def _shutdown(procs: list[_Process], grace: float) -> dict[str, int]:
    """SIGINT everyone, then SIGTERM after ``grace`` s, then SIGKILL after 2 s more; returns exit statuses."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        alive = [p for p in procs if p.proc.poll() is None]
        if not alive:
            break
        for p in alive:
            p.signal(sig)
        end = time.monotonic() + wait
        while time.monotonic() < end and any(p.proc.poll() is None for p in alive):
            time.sleep(0.05)
    return {p.name: p.proc.wait() for p in procs}
