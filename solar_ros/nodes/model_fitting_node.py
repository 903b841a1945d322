"""model_fitting_node: fits the representation and dynamics on recorded episodes and publishes the next policy.

Serves the FitModel action on /solar/fit_model (one goal at a time; others are rejected while a fit
runs). A goal names the recorder's episode directory (``index.jsonl``), the episodes to use (empty:
every complete one), the learning ``iteration`` and the ``method`` (empty: the ``method``
parameter); ``config_yaml`` may override run settings (``task``, ``goal``, ``horizon``, ``dt``,
``seed``) and the method's settings (see :mod:`solar_ros.runtime.fitting`).

* iteration 0 starts a run: the first policy (zero gains, exploration noise) and, for image
  methods, an untrained model so the encoder publishes latents from the first episode on.
* iteration k >= 1 updates the policy from the episodes collected with the current one.

Each fit reports feedback (stage, progress 0..1, loss, step), can be cancelled, and ends with the
new model (if any) announced on /solar/model (std_msgs/String: the checkpoint path; transient
local, so a late encoder still loads it) *before* the new policy goes out on /solar/policy
(transient local), so the encoder starts loading the model while the policy travels. Models,
policies (``policy_NNN.npz``), the method's state and ``current.json`` (the newest policy and
model) are written atomically to ``output_dir``, in that order; a restarted node continues the run
from there: it announces the newest model and policy again at start-up (a controller or encoder
restarted after it still gets them), and a goal for an iteration it had already fitted (its
answer was lost with the process, or with the trainer's) is answered with that fit's saved policy
instead of fitting twice. While a fit runs, its last feedback is sent again every
``HEARTBEAT_PERIOD`` s, so the trainer can tell a long fit from a fitter that died. Bad, missing or
corrupt episodes give a failed result with the reason, never a crash.

The fit runs in a worker thread of a MultiThreadedExecutor (this node has no high-rate
subscriptions), so cancel requests are served while it computes.
"""
from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import rclpy
import yaml
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from std_msgs.msg import String

from ..action import FitModel
from ..msg import LinearGaussianPolicy
from ..runtime.atomic import read_json, write_json_atomic
from ..runtime.fitting import (
    METHODS,
    FitCancelled,
    FitError,
    FitMethod,
    FitOutput,
    RunSettings,
    check_device,
    fit_threads,
    load_policy,
    load_training_data,
    save_policy,
    set_thread_niceness,
)
from ..runtime.policy_msg import policy_to_msg
from ..runtime.resources import FitMeter
from . import contract
from .common import ConfigError, StackNode, declare, run_node

RUN_KEYS = ("task", "goal", "horizon", "dt", "seed")
"""config_yaml keys that describe the run; every other key is a setting of the method."""
CURRENT_FILE = "current.json"
"""In ``output_dir``: the method, iteration, policy and model of the newest successful fit."""
HEARTBEAT_PERIOD = 1.0
"""s between repeats of a running fit's last feedback."""


def _register_optional_methods() -> None:
    """Methods whose dependencies may be missing or still in development register themselves on import."""
    try:
        from ..runtime import solar_fit  # noqa: F401  (adds "solar" and "solar_mpc" to METHODS)
    except ImportError:
        pass
    try:
        from ..runtime import dsae_fit  # noqa: F401  (adds "dsae" to METHODS)
    except ImportError:
        pass


class ModelFittingNode(StackNode):
    """FitModel action server (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("model_fitting_node")
        self.default_method = declare(self, "method", "lqr_joints", "fit method when a goal names none")
        self.output_dir = Path(declare(self, "output_dir", "runs/models", "where models, policies and run state go"))
        self.device = declare(self, "device", "cpu", "torch device for model fits ('cpu', 'cuda')")
        self.num_threads = int(declare(self, "num_threads", 0, "torch intra-op threads during fits (0: every "
                                                                "core; fits run between episodes, at `niceness`)"))
        self.niceness = int(declare(self, "niceness", 10, "CPU niceness of the fits (0..19: higher yields "
                                                          "the cores to the real-time nodes)"))
        task = declare(self, "task", "sawyer_reach", "simulated task (cost model, horizon, action scale)")
        horizon = int(declare(self, "horizon", 0, "policy horizon T (0: the task's)"))
        seed = int(declare(self, "seed", 0, "seed of initial weights and fits"))
        self.default_config = str(declare(self, "config_yaml", "", "default method settings, YAML"))
        _register_optional_methods()
        if self.default_method not in METHODS:
            raise ConfigError(f"method must be one of {sorted(METHODS)}, got {self.default_method!r}")
        try:
            self.device = check_device(self.device)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        try:
            self.num_threads = fit_threads(self.num_threads)
            set_thread_niceness(self.niceness)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        except PermissionError:
            self.get_logger().warning(f"niceness {self.niceness} needs privileges this process lacks; fits run at "
                                      f"niceness {os.getpriority(os.PRIO_PROCESS, 0)}")
        self.base_settings = {"task": task, "horizon": horizon, "seed": seed}
        try:
            self._settings(self.default_config, "")
        except FitError as err:
            raise ConfigError(f"config_yaml: {err}") from err

        self.method: FitMethod | None = None
        self._busy = threading.Lock()
        self._stopping = threading.Event()
        self._running: tuple | None = None  # (goal handle, last feedback) of the fit in progress
        self.policy_pub = self.create_publisher(LinearGaussianPolicy, contract.POLICY, contract.POLICY_QOS)
        self.model_pub = self.create_publisher(String, contract.MODEL, contract.MODEL_QOS)
        self.server = ActionServer(self, FitModel, contract.FIT_MODEL, execute_callback=self._execute,
                                   goal_callback=self._on_goal, cancel_callback=lambda _goal: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup())
        self.create_timer(HEARTBEAT_PERIOD, self._heartbeat)
        self.get_logger().info(f"model fitting: methods {sorted(METHODS)} (default {self.default_method}), "
                               f"device {self.device}, {self.num_threads} torch thread(s) at niceness {self.niceness}, "
                               f"output {self.output_dir.resolve()}")
        self._announce_current()

    # ---- after a restart -----------------------------------------------------------------------

    def _announce_current(self) -> None:
        """Publish the newest model and policy of the run in ``output_dir`` again, if there is one."""
        path = self.output_dir / CURRENT_FILE
        if not path.is_file():
            return
        try:
            current = read_json(path)
            package = load_policy(Path(current["policy_path"]))
            if package.policy_id != current["policy_id"]:
                raise ValueError(f"{current['policy_path']} holds policy {package.policy_id}, not "
                                 f"{current['policy_id']}")
        except (OSError, ValueError, KeyError, TypeError) as err:
            self.get_logger().error(f"cannot announce the saved policy of {path} again: {err}")
            return
        if current.get("model_path"):
            self.model_pub.publish(String(data=str(current["model_path"])))
        self.policy_pub.publish(policy_to_msg(package, LinearGaussianPolicy()))
        self.get_logger().info(f"announced the saved {current.get('method')} run again: iteration "
                               f"{current.get('iteration')}, policy {package.policy_id}"
                               + (f", model {current['model_path']}" if current.get("model_path") else ""))

    def _heartbeat(self) -> None:
        running = self._running
        if running is not None:
            handle, feedback = running
            try:
                handle.publish_feedback(feedback)
            except Exception:  # noqa: BLE001 - the goal may have just ended
                pass

    # ---- goals ---------------------------------------------------------------------------------

    def _on_goal(self, goal: FitModel.Goal) -> GoalResponse:
        if self._busy.locked():
            self.get_logger().warning(f"fit goal for iteration {goal.iteration} rejected: a fit is running")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    @staticmethod
    def _parse_yaml(text: str) -> dict:
        try:
            config = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as err:
            raise FitError(f"config_yaml is not valid YAML: {err}") from err
        if not isinstance(config, dict):
            raise FitError(f"config_yaml must be a mapping, got {type(config).__name__}")
        return config

    def _settings(self, default_yaml: str, goal_yaml: str) -> tuple[RunSettings, dict]:
        """Run settings and method overrides: parameters < the node's config_yaml < the goal's config_yaml."""
        config = {**self._parse_yaml(default_yaml), **self._parse_yaml(goal_yaml)}
        run = {**self.base_settings, **{k: config.pop(k) for k in RUN_KEYS if k in config}}
        try:
            settings = RunSettings(**run)
            settings.goal = [float(g) for g in (settings.goal or [])]
            settings.horizon, settings.seed, settings.dt = int(settings.horizon), int(settings.seed), float(settings.dt)
        except (TypeError, ValueError) as err:
            raise FitError(f"bad run settings {run}: {err}") from err
        return settings, config

    def _execute(self, goal_handle) -> FitModel.Result:
        goal = goal_handle.request
        result = FitModel.Result()
        if not self._busy.acquire(blocking=False):
            goal_handle.abort()
            result.message = "a fit is already running"
            return result
        method_name = goal.method or self.default_method
        meter = FitMeter()
        try:
            with meter:
                output = self._fit(goal, method_name, self._progress_fn(goal_handle))
        except FitCancelled:
            self.method = None  # reload the last saved state next time
            goal_handle.canceled()
            result.message = "cancelled"
            self.get_logger().warning(f"fit for iteration {goal.iteration} cancelled")
            return result
        except Exception as err:  # noqa: BLE001 - a failed fit is a failed result, never a dead node
            self.method = None  # reload the last saved state next time
            goal_handle.abort()
            result.message = str(err) if isinstance(err, FitError) else f"{type(err).__name__}: {err}"
            self.get_logger().error(f"fit for iteration {goal.iteration} ({method_name}) failed: {result.message}")
            return result
        finally:
            self._running = None
            self._busy.release()
        result.success = True
        result.policy_id = output.policy.policy_id
        result.model_path = output.model_path
        result.policy_path = output.metrics.pop("_policy_path", "")
        output.metrics.update(meter.metrics("fit"))  # the whole fit: loading, fitting, saving
        result.metric_names = list(output.metrics)
        result.metric_values = [float(v) for v in output.metrics.values()]
        result.message = f"{method_name} iteration {goal.iteration}: policy {output.policy.policy_id}"
        goal_handle.succeed()
        shown = ", ".join(f"{k}={v:.4g}" for k, v in output.metrics.items() if k not in ("fit_s", "fit_peak_mb"))
        self.get_logger().info(f"fit done in {meter.seconds:.1f} s, peak resident memory {meter.peak_mb:.0f} MB: "
                               f"{result.message} ({shown})")
        return result

    def _progress_fn(self, goal_handle):
        last = [0.0]

        def progress(stage: str, fraction: float, loss: float, step: int) -> None:
            if goal_handle.is_cancel_requested or self._stopping.is_set():
                raise FitCancelled()
            feedback = FitModel.Feedback(stage=stage, progress=float(min(max(fraction, 0.0), 1.0)),
                                         loss=float(loss), step=int(step))
            self._running = (goal_handle, feedback)
            goal_handle.publish_feedback(feedback)
            if time.monotonic() - last[0] > 5.0:
                last[0] = time.monotonic()
                loss_text = "" if math.isnan(loss) else f", loss {loss:.4g}"
                self.get_logger().info(f"fit: {stage} {100 * fraction:.0f}%{loss_text}")
        return progress

    def _fit(self, goal, method_name: str, progress) -> FitOutput:
        if method_name not in METHODS:
            raise FitError(f"unknown method {method_name!r}; available: {sorted(METHODS)}")
        settings, overrides = self._settings(self.default_config, goal.config_yaml)
        final = bool(overrides.pop("final", False))  # the trainer's last fit: its policy is evaluated
        self._set_threads()
        cls = METHODS[method_name]
        progress("loading", 0.0, math.nan, 0)
        if goal.iteration == 0:
            self.method = cls(settings, overrides, self.output_dir, self.device)
            output = self.method.initialize(progress)
        else:
            if (self.method is None or self.method.name != method_name
                    or self.method.iteration not in (goal.iteration - 1, goal.iteration)):
                self.method = cls.load(settings, overrides, self.output_dir, self.device)
            if self.method.iteration == goal.iteration:
                return self._repeat(goal, progress)
            if self.method.iteration != goal.iteration - 1:
                raise FitError(f"the saved {method_name} run is at iteration {self.method.iteration}; "
                               f"this goal is for iteration {goal.iteration}")
            if not goal.episode_dir:
                raise FitError("the goal names no episode_dir")
            data = load_training_data(goal.episode_dir, list(goal.episode_ids), self.method.required_arrays,
                                      horizon=self.method.horizon)
            progress("loading", 0.05, math.nan, 0)
            output = self.method.update(data, int(goal.iteration), progress, final=final)
        progress("saving", 0.95, math.nan, 0)
        # The policy first, then the method's state, then current.json: a process killed in between
        # leaves a state whose policy file exists (see _repeat), or the previous iteration whole.
        policy_path = save_policy(self.output_dir / f"policy_{goal.iteration:03d}.npz", output.policy)
        self.method.save()
        write_json_atomic(self.output_dir / CURRENT_FILE, {
            "method": method_name, "iteration": int(goal.iteration), "policy_id": output.policy.policy_id,
            "policy_path": str(policy_path.resolve()),
            "model_path": str(Path(output.model_path).resolve()) if output.model_path else ""})
        output.metrics["_policy_path"] = str(policy_path.resolve())
        if output.new_model and output.model_path:
            self.model_pub.publish(String(data=str(Path(output.model_path).resolve())))
            self.get_logger().info(f"model {output.policy.model_id} announced on {contract.MODEL}")
        self.policy_pub.publish(policy_to_msg(output.policy, LinearGaussianPolicy()))
        progress("done", 1.0, math.nan, 0)
        return output

    def _repeat(self, goal, progress) -> FitOutput:
        """A goal for the iteration the saved run is already at: the answer to it was lost (the trainer
        or this node restarted). Answer with that fit's saved policy (and model), announced again."""
        method = self.method
        policy_path = self.output_dir / f"policy_{goal.iteration:03d}.npz"
        try:
            package = load_policy(policy_path)
        except (OSError, ValueError, KeyError) as err:
            raise FitError(f"iteration {goal.iteration} was fitted but its policy {policy_path} cannot be read: "
                           f"{err}") from err
        if package.policy_id != method.policy_id:
            raise FitError(f"iteration {goal.iteration} was fitted with policy {method.policy_id}, but "
                           f"{policy_path} holds {package.policy_id}")
        model_path = str(getattr(method, "model_path", "") or "")
        write_json_atomic(self.output_dir / CURRENT_FILE, {
            "method": method.name, "iteration": int(goal.iteration), "policy_id": package.policy_id,
            "policy_path": str(policy_path.resolve()),
            "model_path": str(Path(model_path).resolve()) if model_path else ""})
        if model_path:
            self.model_pub.publish(String(data=str(Path(model_path).resolve())))
        self.policy_pub.publish(policy_to_msg(package, LinearGaussianPolicy()))
        self.get_logger().warning(f"iteration {goal.iteration} was already fitted (its answer was lost): "
                                  f"answering with its saved policy {package.policy_id}")
        progress("done", 1.0, math.nan, 0)
        return FitOutput(package, model_path, new_model=bool(model_path),
                         metrics={"repeated": 1.0, "_policy_path": str(policy_path.resolve())})

    def _set_threads(self) -> None:
        try:  # in the worker thread the fit runs in (the executor's threads may predate the setting)
            set_thread_niceness(self.niceness)
        except PermissionError:
            pass  # warned at start-up
        try:
            import torch
            torch.set_num_threads(self.num_threads)
        except ImportError:
            pass

    def on_shutdown(self) -> None:
        self._stopping.set()


def _spin(node: ModelFittingNode, executor, stop: threading.Event) -> None:
    """Spin on a MultiThreadedExecutor: the fit runs in a pool thread while cancels are served."""
    executor.remove_node(node)
    mt = MultiThreadedExecutor(num_threads=2)
    mt.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            mt.spin_once(timeout_sec=0.1)
    finally:
        node.on_shutdown()
        mt.shutdown(timeout_sec=5.0)


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run solar_ros model_fitting_node``)."""
    return run_node(ModelFittingNode, args, loop=_spin)


if __name__ == "__main__":
    raise SystemExit(main())
