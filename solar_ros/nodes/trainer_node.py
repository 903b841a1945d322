"""trainer_node: runs the learning iterations over the node stack, then evaluates and exits.

For a run (``task``, ``method``, ``seed``):

1. waits for the stack (simulator reset service, controller, recorder, model fitting action);
2. resets the arm with the run seed: the goal in use from then on is the one the simulator drew for
   that seed (or ``goal`` when ``fixed_goal``);
3. FitModel iteration 0: the fitter publishes the first policy (zero gains, exploration noise);
4. for each of ``iterations``: ``episodes_per_iteration`` times (the first iteration:
   ``first_iteration_episodes`` when set, e.g. SOLAR's random pretraining episodes): reset the arm
   (/sim/reset, the run's goal, a per-episode seed), wait for fresh state, start an episode on the controller
   (/solar/controller/start_episode, seeded exploration noise; both seeds those of ``solar-ros train``'s
   episodes, :func:`~solar_ros.runtime.training_run.episode_seeds`), wait for its STOP on /solar/episode
   and for the recorder's index entry; then FitModel with those episodes and wait for the new
   policy. One progress line per episode and per iteration;
5. ``eval_episodes`` deterministic episodes (the policy mean, no noise) of the final policy;
6. writes ``summary.json`` (the keys of ``solar-ros train``) and ``learning_curve.png`` to
   ``output_dir``, prints the results table and exits with status 0 (the launcher then stops the
   stack). Any unrecoverable problem ends the node with status 1 and the reason in the log.

Episode costs and distances come from the recorded episodes (the /solar/cost stream aligned to the
controller's steps), i.e. what the fitter trained on. The trainer's ``episode_dir`` must be the
recorder's ``output_dir``.

Transient faults do not end the run. When an episode fails (aborted by an input fault or the
e-stop, recorded incomplete, or a step of it timed out because a node went away), the trainer
waits until the stack is healthy again - fresh, valid /joint_states, /solar/cost and, for a policy
on latents, /solar/latent from the policy's model, without a gap over ``health_max_gap`` s, for
``recovery_settle_time`` s counted from the failure at the earliest (the fault that aborted it may
have reached only the controller) - and retries the episode under a new id. Each kind of fault cause is
logged once per burst of failures, not per message or attempt. Only a burst that outlasts
``fault_patience`` s (counted from the episode's first failure) ends the run, with the causes in
the log and exit status 1 (``max_retries`` >= 0 also caps the number of retries; -1: no cap).

Node crashes do not end the run either. The trainer saves where it is (``trainer_state.json`` in
``output_dir``, atomically) after every episode and every fit; a trainer started with the same
settings (respawned by the launcher after a kill) continues the run from there (``resume``): the
iteration and episode it was in (the episode in flight is run again under a new id), the fit it
was waiting for (asked again: the fitter answers an iteration it already fitted with the saved
result), the results so far. A fitter that dies during a fit is noticed by its silence (no
feedback for ``fit_silence_timeout`` s; a running fit repeats its feedback every second) and the
fit is asked for again once it is back, within ``fault_patience``. An episode whose recording did
not start within ``RECORD_START_TIMEOUT`` s (the recorder is restarting) or that gets no step record
for ``STEP_SILENCE_TIMEOUT`` s (the controller or the simulator is gone) is stopped and counts as a
failed attempt, instead of being waited for until ``episode_timeout``. A fit that fails (success
false) is asked for again up to ``fit_retries`` times; then the iteration keeps the previous
policy, logged, and only ``max_failed_fits`` such iterations in a row end the run. Policies on
/solar/policy that do not pass validation, and episode events of unknown kind, are ignored.

The sequence runs in a worker thread; the node's own thread spins the executor (service and action
replies, topic callbacks).
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger

from ..action import FitModel
from ..algos.probes import diagnostics_line
from ..msg import EpisodeEvent, LatentState, LinearGaussianPolicy, PolicyStep, TaskCost
from ..provenance import pin_commit
from ..runtime.episode_store import load_episode, read_index, safe_name
from ..runtime.policy_msg import policy_from_msg
from ..runtime.safety import SAWYER_JOINT_NAMES, JointNameError, JointStateMapper
from ..runtime.training_run import (
    STATE_FILE,
    EpisodeResult,
    FaultBurst,
    NodeRun,
    StackHealth,
    TrainerState,
    episode_result,
    episode_seeds,
    resume_problem,
)
from ..srv import ResetArm, StartEpisode
from . import contract
from .common import ConfigError, PolledSubscription, StackNode, declare, run_node

HEALTH_POLL_PERIOD = 0.1
"""s between reads of the newest joint state (polled: no callback per 250-500 Hz message)."""


class TrainerError(RuntimeError):
    """The run cannot go on (the message says why)."""


class TrainerStopped(TrainerError):
    """The node is shutting down: not a fault to ride out."""


class EpisodeFailed(RuntimeError):
    """One attempt at an episode failed in a way a healthy stack may not repeat (aborted, recorded
    incomplete, a node not answering); the message says how."""


class FitterLost(RuntimeError):
    """A fit got no answer (the fitter is gone, restarting or busy with an earlier request): ask again."""


class FitFailed(RuntimeError):
    """The fitter answered that the fit failed (the message is its reason)."""


RECORD_START_TIMEOUT = 10.0
"""s after a start within which the recorder must have begun recording the episode."""
STEP_SILENCE_TIMEOUT = 10.0
"""s without a step record of the running episode after which the controller counts as gone."""
POLICIES_KEPT = 20
"""Validated policies kept by id (the current one is looked up by the id the fitter returned)."""


class TrainerNode(StackNode):
    """Drives the learning loop through the other nodes (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("trainer_node")
        self.task = declare(self, "task", "sawyer_reach", "task name (must match the simulator's)")
        self.method = declare(self, "method", "lqr_joints", "FitModel method")
        self.seed = int(declare(self, "seed", 0, "run seed (goal, episode seeds, noise)"))
        self.iterations = int(declare(self, "iterations", 5, "learning iterations"))
        self.episodes_per_iteration = int(declare(self, "episodes_per_iteration", 5, "episodes per iteration"))
        self.first_iteration_episodes = int(declare(
            self, "first_iteration_episodes", 0,
            "episodes of the first iteration (solar: the random pretraining episodes); 0: episodes_per_iteration"))
        self.eval_episodes = int(declare(self, "eval_episodes", 5, "deterministic evaluation episodes at the end"))
        self.fixed_goal = bool(declare(self, "fixed_goal", False,
                                       "true: use `goal`; false: the simulator's draw for the seed"))
        self.goal = [float(g) for g in declare(self, "goal", [0.6, 0.1, 0.1], "goal when fixed_goal")]
        self.horizon = int(declare(self, "horizon", 0, "policy horizon (0: the task's)"))
        self.fit_config = str(declare(self, "fit_config", "", "method settings for the fitter, YAML"))
        self.episode_dir = Path(declare(self, "episode_dir", "runs/episodes", "the recorder's output_dir"))
        self.output_dir = Path(declare(self, "output_dir", "runs/node_train", "where summary.json and the plot go"))
        self.success_threshold = float(declare(self, "success_threshold", 0.0, "m; 0: the task's"))
        self.settle_frames = int(declare(self, "settle_frames", 2,
                                         "fresh /solar/cost samples to wait for after a reset"))
        self.bringup_timeout = float(declare(self, "bringup_timeout", 120.0, "s to wait for the other nodes"))
        self.start_timeout = float(declare(self, "start_timeout", 30.0, "s of retries when a start is refused"))
        self.episode_timeout = float(declare(self, "episode_timeout", 180.0, "s (wall) for one episode to end"))
        self.record_timeout = float(declare(self, "record_timeout", 60.0, "s for the recorder's index entry"))
        self.fit_timeout = float(declare(self, "fit_timeout", 3600.0, "s for one fit"))
        self.max_retries = int(declare(self, "max_retries", -1,
                                       "most retries of a failed episode (-1: no count limit, fault_patience only)"))
        self.fault_patience = float(declare(self, "fault_patience", 180.0,
                                            "s a burst of failures of one episode may last before the run ends"))
        self.recovery_settle_time = float(declare(self, "recovery_settle_time", 2.0,
                                                  "s the stack must be healthy before a failed episode is retried"))
        self.health_max_gap = float(declare(self, "health_max_gap", 0.5,
                                            "s without a valid message after which a stream counts as unhealthy"))
        self.resume = bool(declare(self, "resume", True,
                                   "continue the unfinished run of the same settings saved in output_dir"))
        self.pause_during_fits = bool(declare(self, "pause_during_fits", True,
                                              "pause the simulator (/sim/pause) during model fits, where it "
                                              "offers the service"))
        self.fit_retries = int(declare(self, "fit_retries", 2, "times a failed fit is asked for again"))
        self.max_failed_fits = int(declare(self, "max_failed_fits", 3,
                                           "iterations in a row whose fit failed (previous policy kept) "
                                           "before the run ends"))
        self.fit_silence_timeout = float(declare(self, "fit_silence_timeout", 30.0,
                                                 "s without feedback during a fit before it is asked for again"))
        if self.fit_retries < 0 or self.max_failed_fits < 0 or not self.fit_silence_timeout > 0:
            raise ConfigError("fit_retries and max_failed_fits must be >= 0, fit_silence_timeout > 0")
        for name in ("iterations", "episodes_per_iteration"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.first_iteration_episodes < 0:
            raise ConfigError(f"first_iteration_episodes must be >= 0, got {self.first_iteration_episodes}")
        if self.eval_episodes < 0 or self.max_retries < -1 or self.settle_frames < 1:
            raise ConfigError("eval_episodes must be >= 0, max_retries >= -1, settle_frames >= 1")
        for name in ("fault_patience", "recovery_settle_time", "health_max_gap"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0) or (name == "health_max_gap" and v == 0):
                raise ConfigError(f"{name} must be a {'positive' if name == 'health_max_gap' else 'non-negative'} "
                                  f"number of seconds, got {v}")
        if self.fixed_goal and len(self.goal) == 0:
            raise ConfigError("fixed_goal needs a goal")
        if self.success_threshold <= 0:
            from .. import envs  # the task classes carry their success threshold
            if self.task not in envs.TASKS:
                raise ConfigError(f"unknown task {self.task!r}; valid: {sorted(envs.TASKS)}")
            self.success_threshold = float(envs.TASKS[self.task].success_threshold)

        self.finished = threading.Event()
        self._stop = threading.Event()
        self.exit_code = 1
        self._lock = threading.Lock()
        self._events: dict[str, list[EpisodeEvent]] = {}
        self._policy: LinearGaussianPolicy | None = None
        """The policy the next episodes run (one of ``_policies``)."""
        self._policies: dict[str, LinearGaussianPolicy] = {}
        """Valid policies received on /solar/policy, by id (newest last)."""
        self._last_feedback = 0.0
        self._running_id = ""
        self._last_step = 0.0
        self._state: TrainerState | None = None
        self._t0 = time.monotonic()
        self._elapsed_before = 0.0
        self._cost_count = 0
        self._cost_task = ""
        self._latent_models: dict[str, int] = {}  # model_id -> latents received so far
        self._health_lock = threading.Lock()
        self.health = StackHealth(self.recovery_settle_time, self.health_max_gap, ("joint_states", "cost"))
        self._joint_mapper = JointStateMapper(SAWYER_JOINT_NAMES)
        self._q = np.zeros(len(SAWYER_JOINT_NAMES))

        self.reset_cli = self.create_client(ResetArm, contract.SIM_RESET)
        self.start_cli = self.create_client(StartEpisode, contract.START_EPISODE)
        self.stop_cli = self.create_client(Trigger, contract.STOP_EPISODE)
        self.pause_cli = self.create_client(SetBool, contract.SIM_PAUSE)
        from rclpy.action import ActionClient
        self.fit_cli = ActionClient(self, FitModel, contract.FIT_MODEL)
        self.create_subscription(EpisodeEvent, contract.EPISODE, self._on_event, contract.EVENT_QOS)
        self.create_subscription(LinearGaussianPolicy, contract.POLICY, self._on_policy, contract.POLICY_QOS)
        self.create_subscription(TaskCost, contract.COST, self._on_cost, contract.RELIABLE_QOS)
        self.create_subscription(PolicyStep, contract.STEPS, self._on_step, contract.EVENT_QOS)
        self.create_subscription(LatentState, contract.LATENT, self._on_latent, contract.LATEST_SENSOR_QOS)
        # Deep enough for every joint state between two polls (0.1 s at up to 1 kHz): each one is checked.
        self._joint_states = PolledSubscription(self, JointState, contract.JOINT_STATES, contract.RECORDING_SENSOR_QOS)
        self.create_timer(HEALTH_POLL_PERIOD, self._poll_joint_states)
        self.run_tag = time.strftime("%Y%m%d-%H%M%S")
        self.get_logger().info(
            f"trainer: {self.task} / {self.method}, seed {self.seed}, {self.iterations} iterations x "
            f"{self.episodes_per_iteration} episodes"
            + (f" (the first: {self.first_iteration_episodes})" if self.first_iteration_episodes else "")
            + f", {self.eval_episodes} evaluation episodes; "
            f"episodes from {self.episode_dir.resolve()}, results to {self.output_dir.resolve()}")

    # ---- callbacks (executor thread) -----------------------------------------------------------

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.event not in (EpisodeEvent.START, EpisodeEvent.STOP, EpisodeEvent.ABORT) or not msg.episode_id:
            self.get_logger().warning(f"ignoring a malformed episode event (kind {msg.event}, episode "
                                      f"{msg.episode_id!r})", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._events.setdefault(msg.episode_id, []).append(msg)

    def _on_policy(self, msg: LinearGaussianPolicy) -> None:
        try:
            policy_from_msg(msg)
        except ValueError as err:
            self.get_logger().warning(f"ignoring an invalid policy {msg.policy_id!r} on {contract.POLICY}: {err}",
                                      throttle_duration_sec=5.0)
            return
        with self._lock:
            self._policies.pop(msg.policy_id, None)
            self._policies[msg.policy_id] = msg
            while len(self._policies) > POLICIES_KEPT:
                self._policies.pop(next(iter(self._policies)))

    def _received_policy(self, policy_id: str) -> LinearGaussianPolicy | None:
        with self._lock:
            return self._policies.get(policy_id)

    def _on_cost(self, msg: TaskCost) -> None:
        self._cost_count += 1
        self._cost_task = msg.task
        problem = None
        if not (math.isfinite(msg.cost) and math.isfinite(msg.distance)):
            problem = "cost or distance is NaN or Inf"
        elif msg.task != self.task:
            problem = f"the simulator runs task {msg.task!r}, not {self.task!r}"
        self._note("cost", problem)

    def _on_latent(self, msg: LatentState) -> None:
        self._latent_models[msg.model_id] = self._latent_models.get(msg.model_id, 0) + 1
        problem = None
        expected = self._policy.model_id if self._policy is not None else ""
        if len(msg.mean) == 0 or not np.all(np.isfinite(msg.mean)):
            problem = "latent mean is empty or contains NaN or Inf"
        elif expected and msg.model_id != expected:
            problem = f"latents come from model {msg.model_id!r}, the policy expects {expected!r}"
        self._note("latent", problem)

    def _poll_joint_states(self) -> None:
        """Every joint state since the last poll, checked like the controller checks it (one bad one
        among the valid ones makes the stream unhealthy)."""
        msgs = self._joint_states.take_all()
        if not msgs:
            return
        problem = None
        for msg in msgs:
            problem = self._joint_state_problem(msg)
            if problem is not None:
                break
        self._note("joint_states", problem)

    def _joint_state_problem(self, msg: JointState) -> str | None:
        try:
            self._joint_mapper.extract(msg.name, msg.position, self._q, "position")
            if not np.all(np.isfinite(self._q)):
                return "joint positions contain NaN or Inf"
            if len(msg.velocity) == 0:
                return "joint state has no velocities"
            self._joint_mapper.extract(msg.name, msg.velocity, self._q, "velocity")
            if not np.all(np.isfinite(self._q)):
                return "joint velocities contain NaN or Inf"
        except JointNameError as err:
            return str(err)
        return None

    def _note(self, stream: str, problem: str | None) -> None:
        with self._health_lock:
            self.health.note(stream, time.monotonic(), problem)

    # ---- waiting helpers (worker thread) -------------------------------------------------------

    def _wait(self, predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if self._stop.is_set():
                raise TrainerStopped(f"stopped while waiting for {what}")
            if time.monotonic() > end:
                raise TrainerError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.01)

    def _call(self, client, request, timeout: float = 30.0):
        self._wait(client.service_is_ready, self.bringup_timeout, f"service {client.srv_name}")
        future = client.call_async(request)
        self._wait(future.done, timeout, f"a reply from {client.srv_name}")
        return future.result()

    def _wait_for_stack(self) -> None:
        log = self.get_logger()
        for client in (self.reset_cli, self.start_cli, self.stop_cli):
            self._wait(client.service_is_ready, self.bringup_timeout, f"service {client.srv_name}")
        self._wait(self.fit_cli.server_is_ready, self.bringup_timeout, f"the {contract.FIT_MODEL} action server")
        self._wait(lambda: "recorder_node" in self.get_node_names(), self.bringup_timeout, "recorder_node")
        self._wait(lambda: self._cost_count > 0, self.bringup_timeout, f"task costs on {contract.COST}")
        if self._cost_task != self.task:
            raise TrainerError(f"the simulator runs task {self._cost_task!r}, the trainer is set for {self.task!r}")
        log.info("stack is up: simulator, controller, recorder and model fitting found")

    # ---- the steps of a run --------------------------------------------------------------------

    def _reset(self, seed: int, goal: list[float], wide_start: bool = False) -> list[float]:
        reply = self._call(self.reset_cli, ResetArm.Request(seed=int(seed), goal=list(goal), wide_start=wide_start))
        if not reply.success:
            raise TrainerError(f"/sim/reset refused: {reply.message}")
        return list(reply.goal)

    def _fit_request(self, iteration: int, episode_ids: list[str], goal: list[float],
                     final: bool = False) -> FitModel.Goal:
        """The goal of one fit; ``final``: the fit after the last iteration's episodes (its policy is evaluated)."""
        import yaml

        config = yaml.safe_load(self.fit_config) if self.fit_config.strip() else {}
        if not isinstance(config, dict):
            raise TrainerError("fit_config must be a YAML mapping")
        config.update({"task": self.task, "goal": list(goal), "seed": self.seed})
        if final:
            config["final"] = True
        if self.horizon:
            config["horizon"] = self.horizon
        return FitModel.Goal(episode_ids=list(episode_ids), episode_dir=str(self.episode_dir.resolve()),
                             iteration=iteration, method=self.method, config_yaml=yaml.safe_dump(config))

    def _fit(self, iteration: int, episode_ids: list[str], goal: list[float], final: bool = False
             ) -> FitModel.Result:
        """One fit to its answer, asked for again while the fitter is gone, restarting or busy (within
        ``fault_patience``); sets the new policy as the current one. FitFailed if the fitter says the
        fit failed, TrainerError if it stays away. ``final``: see :meth:`_fit_request`."""
        request = self._fit_request(iteration, episode_ids, goal, final)
        self._pause_simulation(True)
        try:
            return self._fit_answered(iteration, request)
        finally:
            self._pause_simulation(False)

    def _pause_simulation(self, pause: bool) -> None:
        """Pause (or resume) the simulator around a fit (``pause_during_fits``), so that the fit gets the cores
        an idle arm would spend on being simulated, drawn and encoded. Nothing where no simulator offers
        /sim/pause (the real robot); a call that fails or goes unanswered is logged and the run goes on (the
        next /sim/reset resumes the simulator in any case)."""
        if not self.pause_during_fits or not self.pause_cli.service_is_ready():
            return
        future = self.pause_cli.call_async(SetBool.Request(data=pause))
        try:
            self._wait(future.done, 5.0, f"a reply from {self.pause_cli.srv_name}")
        except TrainerError as err:
            self.get_logger().warning(f"could not {'pause' if pause else 'resume'} the simulator: {err}")

    def _fit_answered(self, iteration: int, request: FitModel.Goal) -> FitModel.Result:
        """:meth:`_fit`'s loop: the fit asked for until answered, within ``fault_patience``."""
        burst = FaultBurst(self.fault_patience)
        log = self.get_logger()
        while True:
            try:
                result = self._fit_once(iteration, request)
            except FitterLost as err:
                now = time.monotonic()
                if burst.report(now, str(err), attempt_failed=True):
                    log.warning(f"fit {iteration}: {err}; asking again once the fitter answers (patience left "
                                f"{max(0.0, self.fault_patience - burst.elapsed(now)):.0f} s)")
                if burst.expired(now):
                    raise TrainerError(f"fit {iteration}: no answer from the fitter within the patience of "
                                       f"{self.fault_patience:g} s ({' | '.join(burst.causes)})") from None
                self._sleep(1.0)
                continue
            if burst.active:
                log.info(f"fit {iteration} answered after {burst.attempts} lost attempt(s) over "
                         f"{burst.elapsed(time.monotonic()):.1f} s")
            return result

    def _fit_once(self, iteration: int, request: FitModel.Goal) -> FitModel.Result:
        last = [0.0]

        def feedback(msg) -> None:
            self._last_feedback = time.monotonic()
            fb = msg.feedback
            if time.monotonic() - last[0] > 10.0:
                last[0] = time.monotonic()
                loss = "" if math.isnan(fb.loss) else f", loss {fb.loss:.4g}"
                self.get_logger().info(f"  fit {iteration}: {fb.stage} {100 * fb.progress:.0f}%{loss}")

        try:
            self._wait(self.fit_cli.server_is_ready, 10.0, "the model fitting action server")
            send = self.fit_cli.send_goal_async(request, feedback_callback=feedback)
            self._wait(send.done, 10.0, "the fitter to accept the goal")
        except TrainerStopped:
            raise
        except TrainerError as err:
            raise FitterLost(str(err)) from None
        handle = send.result()
        if not handle.accepted:
            raise FitterLost("the fitter refused the goal (busy with an earlier request?)")
        result_future = handle.get_result_async()
        self._last_feedback = time.monotonic()
        deadline = time.monotonic() + self.fit_timeout
        while not result_future.done():
            if self._stop.is_set():
                raise TrainerStopped(f"stopped while waiting for fit {iteration}")
            silent = time.monotonic() - self._last_feedback
            if silent > self.fit_silence_timeout:
                raise FitterLost(f"no feedback from the fitter for {silent:.0f} s (did it restart?)")
            if time.monotonic() > deadline:
                handle.cancel_goal_async()
                raise TrainerError(f"fit {iteration} took longer than fit_timeout ({self.fit_timeout:g} s)")
            time.sleep(0.02)
        result = result_future.result().result
        if not result.success:
            if result.message == "a fit is already running":
                raise FitterLost("the fitter is busy with an earlier request")
            raise FitFailed(result.message or "no reason given")
        try:
            self._wait(lambda: self._received_policy(result.policy_id) is not None, 30.0,
                       f"policy {result.policy_id} on {contract.POLICY}")
        except TrainerStopped:
            raise
        except TrainerError as err:
            raise FitterLost(str(err)) from None
        self._policy = self._received_policy(result.policy_id)
        return result

    def _update(self, state: TrainerState, goal: list[float]) -> dict[str, float]:
        """The fit after an iteration's episodes (``state.pending_fit``): the next policy, or, when it
        fails ``fit_retries + 1`` times, the previous one kept (TrainerError after ``max_failed_fits``
        such iterations in a row). Returns the fit's metrics."""
        log = self.get_logger()
        iteration = state.fit_iteration + 1
        for attempt in range(1, self.fit_retries + 2):
            try:
                result = self._fit(iteration, state.pending_fit, goal,
                                   final=len(state.run.iterations) == self.iterations - 1)
            except FitFailed as err:
                log.error(f"fit {iteration} failed (attempt {attempt} of {self.fit_retries + 1}): {err}")
                continue
            state.fit_iteration, state.policy_id, state.failed_fits = iteration, result.policy_id, 0
            return dict(zip(result.metric_names, result.metric_values))
        state.failed_fits += 1
        if state.failed_fits > self.max_failed_fits:
            raise TrainerError(f"the fits of {state.failed_fits} iterations in a row failed (max_failed_fits "
                               f"{self.max_failed_fits})")
        log.warning(f"keeping policy {state.policy_id} for the next iteration: fit {iteration} failed "
                    f"{self.fit_retries + 1} times ({state.failed_fits} iteration(s) in a row)")
        return {"fit_failed": 1.0}

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise TrainerStopped("stopped")

    def _settle(self, model_id: str) -> None:
        """Fresh state after a reset: new cost samples (the camera and joint states run with them), and a
        latent from the policy's model when the policy needs one."""
        count = self._cost_count
        self._wait(lambda: self._cost_count >= count + self.settle_frames, 30.0, "fresh state after the reset")
        if model_id:
            seen = self._latent_models.get(model_id, 0)
            self._wait(lambda: self._latent_models.get(model_id, 0) > seen, 60.0, f"latents from model {model_id}")

    def _start(self, episode_id: str, deterministic: bool, noise_seed: int, policy_id: str) -> str:
        """Start an episode with ``policy_id``; returns the id it runs under (a new one if a start had to be undone)."""
        end = time.monotonic() + self.start_timeout
        attempt = 0
        while True:
            run_id = episode_id if attempt == 0 else f"{episode_id}-s{attempt}"
            reply = self._call(self.start_cli, StartEpisode.Request(episode_id=run_id, deterministic=deterministic,
                                                                    noise_seed=int(noise_seed)))
            if reply.success and reply.policy_id == policy_id:
                return run_id
            if reply.success:  # the controller had not received the newest policy yet: undo, under another id
                self._call(self.stop_cli, Trigger.Request())
                attempt += 1
                problem = f"controller ran policy {reply.policy_id!r}, expected {policy_id!r}"
            else:
                problem = reply.message
            if time.monotonic() > end:
                raise TrainerError(f"could not start episode {episode_id!r}: {problem}")
            time.sleep(0.2)

    def _end_event(self, episode_id: str) -> EpisodeEvent | None:
        with self._lock:
            ends = [e for e in self._events.get(episode_id, []) if e.event != EpisodeEvent.START]
        return ends[0] if ends else None

    def _index_entry(self, episode_id: str) -> dict | None:
        if not self.episode_dir.is_dir():
            return None
        matches = [e for e in read_index(self.episode_dir, status=None) if e["episode_id"] == episode_id]
        return matches[-1] if matches else None

    def _episode(self, base_id: str, seeds: tuple[int, int], deterministic: bool,
                 goal: list[float]) -> EpisodeResult:
        """Run one episode to completion, riding out transient faults (see the module docstring)."""
        burst = FaultBurst(self.fault_patience)
        attempt = 0
        while True:
            episode_id = base_id if attempt == 0 else f"{base_id}-retry{attempt}"
            attempt += 1
            try:
                result = self._attempt(episode_id, seeds, deterministic, goal)
            except TrainerStopped:
                raise
            except (EpisodeFailed, TrainerError) as err:
                cause = f"episode {episode_id}: {err}"
            else:
                if burst.active:
                    self.get_logger().info(f"episode {episode_id} completed after {burst.attempts} failed "
                                           f"attempt(s) over {burst.elapsed(time.monotonic()):.1f} s")
                return result
            if 0 <= self.max_retries < attempt:
                raise TrainerError(f"episode {base_id} failed {attempt} times (max_retries {self.max_retries}); "
                                   f"last: {cause}")
            self._recover(burst, base_id, cause)

    def _attempt(self, episode_id: str, seeds: tuple[int, int], deterministic: bool,
                 goal: list[float]) -> EpisodeResult:
        """One try at an episode: reset, settle, start, wait for its end and its recording. ``seeds``: the
        reset's and the exploration noise's."""
        policy = self._policy
        reset_seed, noise_seed = seeds
        self._reset(reset_seed, goal, policy.wide_start)
        self._settle(policy.model_id)
        episode_id = self._start(episode_id, deterministic, noise_seed, policy.policy_id)
        self._watch_episode(episode_id)
        end = self._end_event(episode_id)
        if end.event == EpisodeEvent.ABORT:
            raise EpisodeFailed(f"aborted ({end.reason})")
        try:
            self._wait(lambda: self._index_entry(episode_id) is not None, self.record_timeout,
                       f"the recorder to write {episode_id} (is trainer_node.episode_dir the recorder's output_dir?)")
        except TrainerStopped:
            raise
        except TrainerError as err:
            raise TrainerError(f"{err}; index: {self.episode_dir / 'index.jsonl'}") from None
        entry = self._index_entry(episode_id)
        if entry["status"] != "complete":
            raise EpisodeFailed(f"recorded as {entry['status']} ({entry.get('reason')})")
        try:
            return episode_result(episode_id, load_episode(self.episode_dir, entry), self.success_threshold)
        except ValueError as err:
            raise EpisodeFailed(str(err)) from err

    def _watch_episode(self, episode_id: str) -> None:
        """Wait for the episode's end event, noticing early when a node it needs is gone: no recording
        of it started (the recorder is restarting) or no step record for a while (the controller or
        the simulator's clock stopped). Those end the attempt (EpisodeFailed) after stopping it."""
        started = time.monotonic()
        self._running_id, self._last_step = episode_id, started
        recording = False
        while self._end_event(episode_id) is None:
            if self._stop.is_set():
                raise TrainerStopped(f"stopped while waiting for the end of {episode_id}")
            now = time.monotonic()
            if now - started > self.episode_timeout:
                raise TrainerError(f"timed out after {self.episode_timeout:g} s waiting for the end of {episode_id}")
            problem = None
            if not recording:
                recording = self._recording_started(episode_id)
                if not recording and now - started > RECORD_START_TIMEOUT:
                    problem = (f"the recorder did not start recording it within {RECORD_START_TIMEOUT:g} s "
                               "(restarting? is trainer_node.episode_dir the recorder's output_dir?)")
            if problem is None and now - self._last_step > STEP_SILENCE_TIMEOUT:
                problem = (f"no step records from the controller for {now - self._last_step:.0f} s (controller "
                           f"restarting, or the simulator's clock stopped?)")
            if problem is not None:
                try:
                    self._call(self.stop_cli, Trigger.Request(), timeout=5.0)
                except TrainerError:
                    pass
                raise EpisodeFailed(problem)
            time.sleep(0.01)

    def _on_step(self, msg: PolicyStep) -> None:
        if msg.episode_id == self._running_id:
            self._last_step = time.monotonic()

    def _recording_started(self, episode_id: str) -> bool:
        name = safe_name(episode_id)
        return ((self.episode_dir / f".{name}.partial").is_dir() or (self.episode_dir / name).is_dir()
                or self._index_entry(episode_id) is not None)

    def _recover(self, burst: FaultBurst, base_id: str, cause: str) -> None:
        """After a failed attempt: wait until the stack has been healthy for ``recovery_settle_time``
        (then return, to retry) or the burst has outlasted ``fault_patience`` (TrainerError)."""
        log = self.get_logger()
        now = time.monotonic()
        if burst.report(now, cause, attempt_failed=True):
            log.warning(f"{cause}; retrying once the stack has been healthy for {self.recovery_settle_time:g} s "
                        f"(patience left {max(0.0, self.fault_patience - burst.elapsed(now)):.0f} s)")
        policy = self._policy
        needs_latent = policy is not None and "latent" in policy.state_source
        with self._health_lock:
            self.health.require(("joint_states", "cost") + (("latent",) if needs_latent else ()))
            self.health.restart_settling(now)
        while True:
            if self._stop.is_set():
                raise TrainerStopped(f"stopped while recovering from: {cause}")
            now = time.monotonic()
            with self._health_lock:
                faults = self.health.faults(now)
                settled = self.health.settled(now)
            for stream, problem in faults.items():
                if burst.report(now, f"{stream}: {problem}"):
                    log.warning(f"stack unhealthy: {stream}: {problem}")
            if burst.expired(now):
                still = "; ".join(f"{k}: {v}" for k, v in faults.items()) or "the stack looks healthy"
                raise TrainerError(
                    f"episode {base_id}: a fault outlasted the patience of {self.fault_patience:g} s "
                    f"({burst.attempts} failed attempts; causes: {' | '.join(burst.causes)}; now: {still})")
            if settled:
                log.info(f"stack healthy for {self.recovery_settle_time:g} s, {burst.elapsed(now):.1f} s into the "
                         f"fault; retrying episode {base_id}")
                return
            time.sleep(0.05)

    # ---- the run, and its persisted state ---------------------------------------------------------

    def _identity(self) -> dict:
        """The settings that make a run this run (see TrainerState.identity)."""
        return {"task": self.task, "method": self.method, "seed": self.seed, "iterations": self.iterations,
                "episodes_per_iteration": self.episodes_per_iteration, "eval_episodes": self.eval_episodes,
                "first_iteration_episodes": self.first_iteration_episodes,
                "goal": list(self.goal) if self.fixed_goal else None, "horizon": self.horizon,
                "fit_config": self.fit_config, "episode_dir": str(self.episode_dir.resolve()),
                "success_threshold": self.success_threshold}

    def _saved_state(self) -> TrainerState | None:
        """The saved run to continue, or None (with the reason in the log if there was one)."""
        log = self.get_logger()
        if not self.resume:
            return None
        try:
            state = TrainerState.load(self.output_dir)
        except ValueError as err:
            log.warning(f"starting a new run: {err}")
            return None
        if state is None:
            return None
        done = [e["episode_id"] for e in read_index(self.episode_dir)] if self.episode_dir.is_dir() else []
        problem = resume_problem(state, self._identity(), done)
        if problem is not None:
            log.warning(f"starting a new run, not continuing the one saved in {self.output_dir / STATE_FILE}: "
                        f"{problem}")
            return None
        return state

    def _elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._t0

    def _save(self, state: TrainerState) -> None:
        state.elapsed = self._elapsed()
        state.save(self.output_dir)

    def _episode_id(self, state: TrainerState, name: str) -> str:
        # A continued run's episodes get the restart in their id: the episode a killed trainer had in
        # flight may still be recorded under the old one.
        return f"{state.run_tag}-{name}" + (f"-r{state.restarts}" if state.restarts else "")

    def _begin(self) -> tuple[TrainerState, list[float]]:
        """A new run (first reset and fit), or the saved one continued."""
        log = self.get_logger()
        state = self._saved_state()
        if state is None:
            goal = self._reset(self.seed, self.goal if self.fixed_goal else [])
            log.info(f"goal {np.round(goal, 3).tolist()} (seed {self.seed})")
            for attempt in range(1, self.fit_retries + 2):
                try:
                    result = self._fit(0, [], goal)
                    break
                except FitFailed as err:
                    log.error(f"fit 0 failed (attempt {attempt} of {self.fit_retries + 1}): {err}")
            else:
                raise TrainerError("the first fit (iteration 0) failed every time: no policy to start with")
            run = NodeRun(self.task, self.method, self.seed, goal, self.horizon or int(self._policy.horizon),
                          self.success_threshold,
                          config={"iterations": self.iterations, "episodes_per_iteration": self.episodes_per_iteration,
                                  "first_iteration_episodes": self.first_iteration_episodes,
                                  "fit_config": self.fit_config, "through": "ros2 nodes"})
            state = TrainerState(self._identity(), self.run_tag, run, result.policy_id)
            self._save(state)
            return state, goal
        state.restarts += 1
        self.run_tag = state.run_tag
        self._elapsed_before = state.elapsed
        goal = list(state.run.goal)
        if state.pending_fit is not None:
            where = f"the fit after iteration {len(state.run.iterations)}"
        elif len(state.run.iterations) < self.iterations:
            where = f"iteration {len(state.run.iterations)}, episode {len(state.current) + 1}"
        elif len(state.run.evaluation) < self.eval_episodes:
            where = f"evaluation episode {len(state.run.evaluation) + 1}"
        else:
            where = "the end (writing the results)"
        log.warning(f"continuing the run saved in {self.output_dir / STATE_FILE} (restart {state.restarts}) at "
                    f"{where}, policy {state.policy_id}")
        try:  # an episode the previous trainer process left running ends now (it is run again)
            self._call(self.stop_cli, Trigger.Request(), timeout=10.0)
        except TrainerError as err:
            log.warning(f"could not stop a leftover episode: {err}")
        if state.pending_fit is None:
            self._wait(lambda: self._received_policy(state.policy_id) is not None, self.bringup_timeout,
                       f"policy {state.policy_id} of the saved run on {contract.POLICY} (is model_fitting_node's "
                       f"output_dir the one this run was started with?)")
            self._policy = self._received_policy(state.policy_id)
        self._save(state)
        return state, goal

    def _episodes_in(self, iteration: int) -> int:
        """Training episodes of ``iteration`` (0-based)."""
        if iteration == 0 and self.first_iteration_episodes:
            return self.first_iteration_episodes
        return self.episodes_per_iteration

    def run(self) -> None:
        """The whole run (worker thread); sets ``exit_code`` and ``finished``."""
        log = self.get_logger()
        self._t0 = time.monotonic()
        try:
            self._wait_for_stack()
            state, goal = self._begin()
            self._state = state
            run = state.run
            while len(run.iterations) < self.iterations:
                it = len(run.iterations)
                if state.pending_fit is None:
                    wanted = self._episodes_in(it)
                    while len(state.current) < wanted:
                        j = len(state.current)
                        r = self._episode(self._episode_id(state, f"it{it:02d}-ep{j:02d}"),
                                          episode_seeds(self.seed, it, j), False, goal)
                        state.current.append(r)
                        self._save(state)
                        log.info(f"iteration {it} episode {j + 1}/{wanted}: cost "
                                 f"{r.total_cost:.4g}, final distance {r.final_distance:.3f} m"
                                 f"{' (success)' if r.success else ''}")
                    state.pending_fit = [r.episode_id for r in state.current]
                    self._save(state)
                metrics = self._update(state, goal)
                run.add_iteration(state.current, metrics)
                state.current, state.pending_fit = [], None
                state.wall_times.append(self._elapsed())
                self._save(state)
                row = run.rows(state.wall_times)[-1]
                log.info(f"iteration {it}: mean cost {row.mean_cost:.4g}, final distance {row.final_distance:.3f} m, "
                         f"success {row.success_rate:.0%}, {run.episodes} episodes, {state.wall_times[-1]:.0f} s; "
                         f"policy {state.policy_id}")
                representation = diagnostics_line(metrics)
                if representation:
                    log.info(f"iteration {it} {representation}")
            while len(run.evaluation) < self.eval_episodes:
                j = len(run.evaluation)
                r = self._episode(self._episode_id(state, f"eval-ep{j:02d}"), episode_seeds(self.seed, 0, j, True),
                                  True, goal)
                run.evaluation.append(r)
                self._save(state)
                log.info(f"evaluation episode {j + 1}/{self.eval_episodes}: cost {r.total_cost:.4g}, "
                         f"final distance {r.final_distance:.3f} m{' (success)' if r.success else ''}")
            result, table = run.write(self.output_dir, self._elapsed(), state.wall_times)
            state.finished = True
            self._save(state)
            print(table, flush=True)
            print(f"\n{self.task} / {self.method} through the nodes / seed {self.seed}: success "
                  f"{result.success_rate:.0%} over {result.eval_episodes} evaluation episodes, final distance "
                  f"{result.final_distance:.4f} m, final cost {result.final_cost:.4g}, {result.episodes} training "
                  f"episodes, {result.wall_time_s:.0f} s"
                  + (f" (the trainer was restarted {state.restarts} time(s))" if state.restarts else ""), flush=True)
            print(f"summary: {(self.output_dir / 'summary.json').resolve()}", flush=True)
            print(f"plot:    {(self.output_dir / 'learning_curve.png').resolve()}", flush=True)
            self.exit_code = 0
        except TrainerError as err:
            log.error(f"run failed: {err}")
        except Exception as err:  # noqa: BLE001 - report anything unexpected and exit non-zero
            log.error(f"run failed: {type(err).__name__}: {err}")
            import traceback
            traceback.print_exc()
        finally:
            self.finished.set()

    def stop(self) -> None:
        self._stop.set()


def _loop(node: TrainerNode, executor, stop: threading.Event) -> None:
    worker = threading.Thread(target=node.run, name="trainer", daemon=True)
    worker.start()
    while not stop.is_set() and rclpy.ok() and not node.finished.is_set():
        executor.spin_once(timeout_sec=0.05)
    node.stop()
    worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run solar_ros trainer_node``); exit status 0 when the run finished."""
    pin_commit()  # the run's summary names the code it started with
    holder: list[TrainerNode] = []

    def factory() -> TrainerNode:
        holder.append(TrainerNode())
        return holder[0]

    status = run_node(factory, args, loop=_loop)
    if status != 0 or not holder:
        return status or 1
    return holder[0].exit_code


if __name__ == "__main__":
    raise SystemExit(main())
