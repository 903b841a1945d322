"""Riding out transient faults, ROS-free on a fake clock (solar_ros.runtime.training_run): StackHealth
(valid messages without long gaps, for a settling time, on every required stream) and FaultBurst (each
kind of cause reported once per burst; only a burst longer than the patience ends the run); the
trainer's saved state (TrainerState: a round trip through its file, and when it may be continued)."""
from __future__ import annotations

import pytest

from solar_ros.runtime.training_run import (
    STATE_FILE,
    EpisodeResult,
    FaultBurst,
    NodeRun,
    StackHealth,
    TrainerState,
    fault_kind,
    resume_problem,
)


def feed(health: StackHealth, stream: str, t0: float, t1: float, period: float, problem=None) -> float:
    """Messages on ``stream`` every ``period`` s in [t0, t1); returns t1."""
    t = t0
    while t < t1 - 1e-12:
        health.note(stream, t, problem)
        t += period
    return t1


def test_healthy_only_after_the_settling_time_on_every_required_stream():
    h = StackHealth(settle_time=2.0, max_gap=0.5, required=("joint_states", "cost"))
    assert h.faults(0.0) == {"joint_states": "nothing received yet", "cost": "nothing received yet"}
    feed(h, "joint_states", 0.0, 3.0, 0.004)
    assert set(h.faults(3.0)) == {"cost"} and not h.settled(3.0)
    feed(h, "cost", 1.5, 3.0, 0.05)
    assert h.faults(3.0) == {} and not h.settled(3.0), "costs for 1.5 s only"
    feed(h, "joint_states", 3.0, 3.6, 0.004)
    feed(h, "cost", 3.0, 3.6, 0.05)
    assert h.settled(3.55)


def test_an_invalid_message_or_a_gap_restarts_the_settling_time():
    h = StackHealth(settle_time=1.0, max_gap=0.3, required=("joint_states",))
    feed(h, "joint_states", 0.0, 2.0, 0.01)
    assert h.settled(2.0)
    h.note("joint_states", 2.0, "joint positions contain NaN or Inf")
    assert h.faults(2.0) == {"joint_states": "joint positions contain NaN or Inf"} and not h.settled(2.0)
    feed(h, "joint_states", 2.01, 2.9, 0.01)
    assert h.faults(2.9) == {} and not h.settled(2.9), "valid again, but not yet for the settling time"
    assert h.settled(3.02)
    # A silence longer than max_gap is a fault while it lasts, and the settling time restarts after it.
    assert "no message for" in h.faults(3.5)["joint_states"]
    feed(h, "joint_states", 3.5, 4.0, 0.01)
    assert h.faults(4.0) == {} and not h.settled(4.0)
    feed(h, "joint_states", 4.0, 4.6, 0.01)
    assert h.settled(4.55)


def test_latents_count_only_while_required():
    h = StackHealth(settle_time=0.5, max_gap=0.3, required=("cost",))
    feed(h, "cost", 0.0, 1.0, 0.05)
    h.note("latent", 0.9, "latent mean is empty or contains NaN or Inf")
    assert h.settled(1.0), "a policy on [q, dq] does not need latents"
    h.require(("cost", "latent"))
    assert not h.settled(1.0) and "NaN" in h.faults(1.0)["latent"]
    feed(h, "cost", 1.0, 2.0, 0.05)
    feed(h, "latent", 1.0, 2.0, 0.05)
    assert h.settled(1.96)


def test_each_cause_is_reported_once_per_burst_and_only_a_long_burst_ends_the_run():
    b = FaultBurst(patience=180.0)
    assert not b.active and not b.expired(1e9)
    reported = []
    t = 100.0
    # A NaN stream for a minute: one report however many messages or polls repeat it.
    for i in range(600):
        for cause in (f"episode ep-{i}: aborted (fault: joints: joint state contains NaN or Inf)",
                      f"joint_states: joint state is stale: {0.05 + i * 1e-3:.3f} s old (limit 0.050 s)"):
            if b.report(t, cause, attempt_failed=cause.startswith("episode")):
                reported.append(cause)
        t += 0.1
    assert len(reported) == 2 and b.attempts == 600
    assert b.causes == reported
    assert b.elapsed(t) == pytest.approx(60.0) and not b.expired(t)
    assert b.expired(100.0 + 180.01), "a fault that outlasts the patience ends the run"
    # An attempt succeeds: the next fault is a new burst, reported again.
    b.end()
    assert not b.active and b.attempts == 0
    assert b.report(500.0, reported[0]) and b.elapsed(501.0) == pytest.approx(1.0)
    assert not b.expired(500.0 + 180.0)


def test_recovery_loop_on_a_fake_clock():
    """The trainer's rule: after a failure, retry once the stack has settled, give up once the burst is
    longer than the patience. A 40 s NaN outage is ridden out; a permanent one ends the run after 180 s."""

    def run(outage_end: float) -> tuple[str, float]:
        h = StackHealth(settle_time=2.0, max_gap=0.5, required=("joint_states", "cost"))
        b = FaultBurst(patience=180.0)
        feed(h, "cost", 0.0, 10.0, 0.05)
        feed(h, "joint_states", 0.0, 10.0, 0.01)
        t = 10.0
        b.report(t, "episode x: aborted (fault: joints: joint state contains NaN or Inf)", attempt_failed=True)
        while True:
            problem = "joint positions contain NaN or Inf" if t < outage_end else None
            h.note("joint_states", t, problem)
            h.note("cost", t)
            for stream, p in h.faults(t).items():
                b.report(t, f"{stream}: {p}")
            if b.expired(t):
                return "gave up", t
            if h.settled(t):
                return "retry", t
            t = round(t + 0.05, 6)

    outcome, t = run(outage_end=50.0)
    assert outcome == "retry" and 52.0 <= t <= 52.1, t
    outcome, t = run(outage_end=1e9)
    assert outcome == "gave up" and 190.0 < t <= 190.1, t


def test_fault_kind_ignores_numbers():
    assert fault_kind("joint state is stale: 0.061 s old (limit 0.050 s)") == \
        fault_kind("joint state is stale: 1.5 s old (limit 0.050 s)")
    assert fault_kind("episode it00-ep01-retry2: x") == fault_kind("episode it00-ep01-retry3: x")
    assert fault_kind("cost is NaN") != fault_kind("latent is NaN")


def test_bad_settings():
    with pytest.raises(ValueError, match="settle_time"):
        StackHealth(-1.0, 0.5)
    with pytest.raises(ValueError, match="max_gap"):
        StackHealth(1.0, 0.0)
    with pytest.raises(ValueError, match="patience"):
        FaultBurst(float("nan"))


def _state() -> TrainerState:
    run = NodeRun("sawyer_reach", "lqr_joints", 3, [0.6, 0.1, 0.1], 50, 0.05, config={"iterations": 2})
    run.add_iteration([EpisodeResult("t-it00-ep00", 50, 12.5, 0.2, False), EpisodeResult("t-it00-ep01", 50, 11.0,
                                                                                       0.04, True)], {"kl": 0.5})
    return TrainerState({"task": "sawyer_reach", "seed": 3, "goal": None}, "t", run, "policy-1", fit_iteration=1,
                        current=[EpisodeResult("t-it01-ep00-r1", 50, 9.0, 0.03, True)], wall_times=[30.5],
                        elapsed=41.0, restarts=1)


def test_trainer_state_round_trips_through_its_file(tmp_path):
    assert TrainerState.load(tmp_path) is None
    state = _state()
    path = state.save(tmp_path)
    assert path == tmp_path / STATE_FILE
    back = TrainerState.load(tmp_path)
    assert back == state
    assert back.run.rows(back.wall_times)[0].success_rate == 0.5
    assert back.episode_ids() == ["t-it00-ep00", "t-it00-ep01", "t-it01-ep00-r1"]
    path.write_text('{"version": 1, "run": ')  # what a non-atomic write killed midway would leave
    with pytest.raises(ValueError, match="cannot read"):
        TrainerState.load(tmp_path)
    path.write_text('{"version": 99}')
    with pytest.raises(ValueError, match="version"):
        TrainerState.load(tmp_path)


def test_a_saved_run_is_continued_only_with_the_same_settings_and_episodes():
    state = _state()
    ids = state.episode_ids()
    assert resume_problem(state, dict(state.identity), ids + ["other"]) is None
    assert "seed 3 -> 4" in resume_problem(state, {**state.identity, "seed": 4}, ids)
    assert "not in the episode directory" in resume_problem(state, dict(state.identity), ids[:2])
    state.finished = True
    assert resume_problem(state, dict(state.identity), ids) == "its run is finished"


def test_after_a_failed_episode_the_settling_time_counts_from_the_failure():
    h = StackHealth(settle_time=2.0, max_gap=0.5, required=("joint_states",))
    feed(h, "joint_states", 0.0, 5.0, 0.01)
    assert h.settled(5.0)
    # the controller aborted on a bad message that this node never saw: no retry at once
    h.restart_settling(5.0)
    assert not h.settled(5.0) and h.faults(5.0) == {}
    feed(h, "joint_states", 5.0, 7.01, 0.01)
    assert h.settled(7.01)
