"""Shared node plumbing: the ``main()`` loop with clean shutdown, stamp conversions, config errors."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable

import rclpy
from rclpy.callback_groups import CallbackGroup
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.exceptions import InvalidTopicNameException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


class ConfigError(ValueError):
    """A parameter value the node cannot run with (the node logs it and exits with status 2)."""


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def set_stamp(stamp, ns: int) -> None:
    """Write integer nanoseconds into a builtin_interfaces/Time in place."""
    stamp.sec, stamp.nanosec = divmod(int(ns), 1_000_000_000)


class Throttle:
    """Per-key log throttling: each kind of problem gets its own budget (rclpy throttles per call site,
    so one frequent problem would hide a different one logged from the same line)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) >= self.period:
            self._last[key] = now
            return True
        return False

    @staticmethod
    def key(reason: str) -> str:
        """A problem's kind: the text before its first colon (numbers usually come after it)."""
        return reason.split(":", 1)[0][:60]


class StackNode(Node):
    """A Node with a shutdown hook, and a lean mode for the real-time nodes.

    rclpy's SingleThreadedExecutor rebuilds its wait set from every entity on every iteration, so
    each entity costs time on the hot path. A ``lean`` node (controller, simulator) therefore has
    no parameter services (its parameters are read once at start-up anyway) and its publishers have
    no default QoS-event handlers (incompatible-QoS warnings still come from the subscribers' side);
    on a 2-core machine this raised the controller's achieved command rate by about a fifth.
    """

    def __init__(self, node_name: str, *, lean: bool = False, **kwargs) -> None:
        self._lean = lean  # before Node.__init__, which creates publishers itself
        super().__init__(node_name, start_parameter_services=not lean, **kwargs)

    def create_publisher(self, msg_type, topic, qos_profile, **kwargs):
        if self._lean:
            kwargs.setdefault("event_callbacks", PublisherEventCallbacks(use_default_callbacks=False))
        return super().create_publisher(msg_type, topic, qos_profile, **kwargs)

    def on_shutdown(self) -> None:
        """Last words (e.g. a zero-torque command); ROS communication still works here."""

    def declare_realtime_priority(self) -> int:
        """Declare ``realtime_priority`` and apply it (see :func:`set_realtime_priority`); returns it."""
        priority = declare(self, "realtime_priority", 0,
                           "SCHED_FIFO priority of every thread of this process, 1-99 (0: the normal scheduler)")
        if isinstance(priority, float) and not priority.is_integer() or not 0 <= priority <= 99:
            raise ConfigError(f"realtime_priority must be an integer 0-99, got {priority!r}")
        priority = int(priority)
        if priority:
            try:
                threads = set_realtime_priority(priority)
            except OSError as err:
                self.get_logger().warning(
                    f"realtime_priority {priority} not granted ({err}): running under the normal scheduler; "
                    "it needs CAP_SYS_NICE or an rtprio limit (e.g. @realtime - rtprio 99 in "
                    "/etc/security/limits.conf)")
                return 0
            self.get_logger().info(f"real-time scheduling: SCHED_FIFO priority {priority} ({threads} threads)")
        return priority


class _NotWaitedOn(CallbackGroup):
    """A callback group whose entities the executor never waits on nor runs (see PolledSubscription)."""

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        pass


class PolledSubscription:
    """A subscription read when the node needs its messages (:meth:`take_all`), not by the executor.

    Every message a spinning node receives costs one executor iteration (the wait set is rebuilt in
    Python each time). A node that needs a fast stream only in aggregate - the encoder wants the
    mean of the 500 Hz torque commands once per frame - reads the queue in batches instead: with
    an SVAE model the encoder went from ~40% to ~15% of a core (scripts/bench_node_stack.py). The
    QoS depth must hold the messages that arrive between two reads (older ones are dropped).
    """

    def __init__(self, node: Node, msg_type, topic: str, qos_profile, raw: bool = False) -> None:
        self.node = node
        self.subscription = node.create_subscription(msg_type, topic, _ignore, qos_profile,
                                                     callback_group=_NotWaitedOn(), raw=raw)

    def take_all(self, with_info: bool = False) -> list:
        """Every message received since the last call, oldest first (serialised bytes if created
        with ``raw``); with ``with_info`` as (message, info) pairs, info holding the rmw's
        ``source_timestamp`` and ``received_timestamp`` (ns)."""
        sub = self.subscription
        out = []
        with sub.handle:  # how rclpy's own executor and wait_for_message take messages
            while (taken := sub.handle.take_message(sub.msg_type, sub.raw)) is not None:
                out.append(taken if with_info else taken[0])
        return out

    def destroy(self) -> None:
        self.node.destroy_subscription(self.subscription)


def set_realtime_priority(priority: int, all_threads: bool = True, reset_on_fork: bool = False) -> int:
    """Put every thread of this process (or, without ``all_threads``, the calling one) under SCHED_FIFO at
    ``priority`` (threads started later inherit it from the thread that starts them); returns how many
    threads. ``reset_on_fork``: processes started from them run under the normal scheduler
    (SCHED_RESET_ON_FORK). OSError (PermissionError) where the OS refuses; a refusal changes nothing.

    A real-time node then preempts everything under the normal scheduler (a model fit, the recorder) the
    moment its message arrives; Linux's real-time throttling (``kernel.sched_rt_runtime_us``, 95% by
    default) keeps a runaway one from taking the whole machine. :func:`set_normal_scheduler` undoes it.
    """
    policy = os.SCHED_FIFO | (os.SCHED_RESET_ON_FORK if reset_on_fork else 0)
    return _set_scheduler(policy, os.sched_param(priority), all_threads)


def set_normal_scheduler(all_threads: bool = True) -> int:
    """Put every thread of this process (or the calling one) back under the normal scheduler."""
    return _set_scheduler(os.SCHED_OTHER, os.sched_param(0), all_threads)


def start_background_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a daemon thread that runs ``target`` under the normal scheduler: a thread inherits SCHED_FIFO from
    the real-time thread that starts it, and slow work there (loading a model) would run above the simulator and
    every process under the normal scheduler. Where the scheduler cannot be changed it runs as it is."""
    def run() -> None:
        try:
            set_normal_scheduler(all_threads=False)
        except OSError:
            pass
        target()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _set_scheduler(policy: int, param, all_threads: bool) -> int:
    on_proc = all_threads and os.path.isdir("/proc/self/task")
    tids = [int(t) for t in os.listdir("/proc/self/task")] if on_proc else [0]
    os.sched_setscheduler(0, policy, param)  # the calling thread first: a refusal changes nothing
    for tid in tids:
        try:
            os.sched_setscheduler(tid, policy, param)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    return len(tids)


def _ignore(_msg) -> None:
    """Callback of a polled subscription (never called)."""


def run_node(factory: Callable[[], StackNode], args: list[str] | None = None,
             spin_timeout: float = 0.1,
             loop: Callable[[StackNode, SingleThreadedExecutor, threading.Event], None] | None = None) -> int:
    """Create the node and spin it on a SingleThreadedExecutor until SIGINT/SIGTERM; returns an exit status.

    Before ``rclpy.init`` the process gets the stack's Fast DDS profile (:func:`~solar_ros.launcher.middleware_env`)
    unless a profiles file is already named.

    The signal handlers only set a flag, so ``on_shutdown`` can still publish before the context
    goes down. Parameter errors (:class:`ConfigError`) are logged and give status 2. ``loop``
    replaces the plain spin loop (the simulator steps physics in its own loop); it must return
    soon after the event is set.
    """
    from ..launcher import middleware_env

    stop = threading.Event()

    def request_stop(signum, _frame):
        stop.set()

    # The stack's Fast DDS profile (UDP, no shared memory: docs/ros_interfaces.md) for a node started by hand too
    # (`ros2 run`), as `solar-ros launch` and the launch files give it; a profiles file already named stays in charge.
    os.environ.update(middleware_env())
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    status = 0
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if loop is not None:
            loop(node, executor, stop)
        else:
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=spin_timeout)
    except (ConfigError, ParameterException, InvalidTopicNameException) as err:
        print(f"[ERROR] configuration: {err}", file=sys.stderr, flush=True)
        status = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            try:
                node.on_shutdown()
            finally:
                node.destroy_node()
        rclpy.try_shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status


def declare(node: Node, name: str, default, description: str = ""):
    """Declare a parameter with a description and return its value.

    Typing is dynamic so that ``rate: 500`` in a YAML file works for a float parameter; callers
    convert the value (``float(...)``) and validate it.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    value = node.declare_parameter(
        name, default, ParameterDescriptor(description=description, dynamic_typing=True)).value
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(f"parameter {name!r} must be true or false, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(default, bool) and (
            isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"parameter {name!r} must be a number, got {value!r}")
    if isinstance(default, list) and not isinstance(value, (list, tuple)):
        raise ConfigError(f"parameter {name!r} must be a list, got {value!r}")
    return value
