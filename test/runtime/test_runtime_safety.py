"""Joint mapping, stamp gates, torque clipping and state assembly (solar_ros.runtime.safety)."""
from __future__ import annotations

import numpy as np
import pytest

from solar_ros.runtime.safety import (
    SAWYER_JOINT_NAMES,
    JointNameError,
    JointStateMapper,
    StampGate,
    StateAssembler,
    clip_torques,
    validate_torque_limits,
)

MS = 1_000_000


def test_mapper_reorders_and_ignores_extra_joints():
    names = ["head_pan"] + list(reversed(SAWYER_JOINT_NAMES))
    values = [99.0] + [float(6 - i) for i in range(7)]  # right_jK has value K
    out = np.zeros(7)
    JointStateMapper(SAWYER_JOINT_NAMES).extract(names, values, out)
    np.testing.assert_array_equal(out, np.arange(7.0))


@pytest.mark.parametrize("names, values, match", [
    (list(SAWYER_JOINT_NAMES[:6]) + ["elbow"], [0.0] * 7, "missing joints \\['right_j6'\\]"),
    (list(SAWYER_JOINT_NAMES) + ["right_j0"], [0.0] * 8, "duplicate"),
    (list(SAWYER_JOINT_NAMES), [0.0] * 6, "7 names but 6"),
])
def test_mapper_errors(names, values, match):
    with pytest.raises(JointNameError, match=match):
        JointStateMapper(SAWYER_JOINT_NAMES).extract(names, values, np.zeros(7))


def test_stamp_gate():
    gate = StampGate(future_tolerance_ns=100 * MS)
    assert "no stamp" in gate.check(0, 1000 * MS)
    assert gate.check(500 * MS, 1000 * MS) is None
    assert gate.check(500 * MS, 1000 * MS) is None, "an equal stamp is not out of order"
    assert "out-of-order" in gate.check(499 * MS, 1000 * MS)
    assert "ahead of the clock" in gate.check(1200 * MS, 1000 * MS)
    assert gate.last_ns == 500 * MS


def test_stamp_gate_follows_a_restarted_simulators_clock():
    gate = StampGate(future_tolerance_ns=100 * MS)
    assert gate.check(50_000 * MS, 50_000 * MS) is None
    # the new simulator's first message can arrive before its first /clock: still refused as out of order
    assert "out-of-order" in gate.check(2 * MS, 50_001 * MS)
    assert gate.clock_resets == 0
    # within the tolerance of the clock, an older stamp is still just out of order (no reset)
    assert "out-of-order" in gate.check(49_950 * MS, 49_960 * MS)
    assert gate.clock_resets == 0
    # the node's clock went back to the new timeline: the old stamps are forgotten
    assert gate.check(3 * MS, 4 * MS) is None
    assert gate.clock_resets == 1 and gate.last_ns == 3 * MS
    assert "out-of-order" in gate.check(2 * MS, 5 * MS), "and order is enforced on the new timeline"


def test_clip_torques():
    limits = np.array([80, 80, 40, 40, 9, 9, 9.0])
    u = np.array([100, -10, -50, 0, 9, -9.5, np.nan])
    assert clip_torques(u, limits)
    np.testing.assert_array_equal(u, [80, -10, -40, 0, 9, -9, 0])
    v = np.array([1.0] * 7)
    assert not clip_torques(v, limits)
    with pytest.raises(ValueError):
        validate_torque_limits([1, 2, -3, 4, 5, 6, 7], 7)
    with pytest.raises(ValueError):
        validate_torque_limits([1, 2, 3], 7)


def _assembler(source="latent+joints"):
    return StateAssembler(source, SAWYER_JOINT_NAMES, max_latent_age=0.1, max_joint_age=0.05)


def test_assemble_concatenates_latent_q_dq():
    a = _assembler()
    assert a.update_latent(100 * MS, 100 * MS, [1.0, 2.0], "m1") is None
    assert a.update_joints(101 * MS, 101 * MS, SAWYER_JOINT_NAMES, np.arange(7.0), -np.arange(7.0)) is None
    x = np.zeros(16)
    ok, reason, src = a.assemble(120 * MS, x, model_id="m1")
    assert ok, reason
    np.testing.assert_array_equal(x, np.concatenate([[1, 2], np.arange(7.0), -np.arange(7.0)]))
    assert src == 100 * MS, "the latent's (image's) stamp is the state's stamp"
    assert a.state_dim() == 16


def test_assemble_rejects_stale_nan_mismatched_model_and_wrong_size():
    a = _assembler()
    x = np.zeros(16)
    assert "no latent received yet" in a.assemble(0, x)[1]
    a.update_latent(100 * MS, 100 * MS, [1.0, 2.0], "m1")
    a.update_joints(100 * MS, 100 * MS, SAWYER_JOINT_NAMES, np.zeros(7), np.zeros(7))
    ok, reason, _ = a.assemble(160 * MS, x)
    assert not ok and "joint state is stale" in reason
    a.update_joints(190 * MS, 190 * MS, SAWYER_JOINT_NAMES, np.zeros(7), np.zeros(7))
    ok, reason, _ = a.assemble(210 * MS, x)
    assert not ok and "latent is stale" in reason
    a.update_latent(200 * MS, 200 * MS, [1.0, 2.0], "m2")
    ok, reason, _ = a.assemble(210 * MS, x, model_id="m1")
    assert not ok and "model" in reason
    assert not a.assemble(210 * MS, np.zeros(15))[0]
    assert "NaN" in a.update_latent(205 * MS, 205 * MS, [np.nan, 0.0])
    ok, reason, _ = a.assemble(206 * MS, x)
    assert not ok and "NaN" in reason, "a NaN latent invalidates the latent until the next good one"
    assert a.update_latent(207 * MS, 207 * MS, [3.0, 4.0]) is None
    assert a.assemble(208 * MS, x)[0] and x[0] == 3.0


def test_out_of_order_message_is_dropped_but_keeps_the_newer_state():
    a = _assembler("joints")
    a.update_joints(100 * MS, 100 * MS, SAWYER_JOINT_NAMES, np.ones(7), np.zeros(7))
    reason = a.update_joints(90 * MS, 100 * MS, SAWYER_JOINT_NAMES, 5 * np.ones(7), np.zeros(7))
    assert "out-of-order" in reason
    x = np.zeros(14)
    ok, _, src = a.assemble(101 * MS, x)
    assert ok and np.all(x[:7] == 1.0) and src == 100 * MS


def test_joint_errors_invalidate_joints():
    a = _assembler("joints")
    a.update_joints(100 * MS, 100 * MS, SAWYER_JOINT_NAMES, np.ones(7), np.zeros(7))
    assert "missing" in a.update_joints(101 * MS, 101 * MS, list("abcdefg"), np.ones(7), np.zeros(7))
    assert not a.assemble(102 * MS, np.zeros(14))[0]
    assert "no velocities" in a.update_joints(103 * MS, 103 * MS, SAWYER_JOINT_NAMES, np.ones(7), [])
    assert "NaN" in a.update_joints(104 * MS, 104 * MS, SAWYER_JOINT_NAMES, [np.inf] * 7, np.zeros(7))


def test_bad_configuration():
    with pytest.raises(ValueError, match="state_source"):
        StateAssembler("pixels")
    with pytest.raises(ValueError, match="max_joint_age"):
        StateAssembler("joints", max_joint_age=0.0)


# ---- fault reaction bounds, on a fake clock ---------------------------------------------------------------------
# The controller (controller_node) checks the assembled state at every command tick, and a message that invalidates
# an input (NaN/Inf, wrong joint names) also gets a command at once. The loop below replays exactly those rules on
# a fake clock: commands at every tick (period P, any phase), input messages at their own rate with a transport
# delay. Bound required: zero torque within 2 command periods of a fault's onset. The onset of staleness is the
# instant the newest state becomes older than the limit (its stamp + max age); of a NaN, its arrival at the
# controller (the transport delay before it is not the controller's; the node test measures from publication).


def _fault_reaction(source: str, fault: str, period_ns: int, msg_period_ns: int, phase_ns: int, delay_ns: int,
                    fault_ns: int = 500 * MS, max_age_ns: int = 50 * MS) -> tuple[int, list[tuple[int, bool]]]:
    """(onset, [(time, command ok) ...]) of a simulated run with ``fault`` ('stale' or 'nan') at ``fault_ns``."""
    a = StateAssembler(source, SAWYER_JOINT_NAMES, max_latent_age=max_age_ns * 1e-9, max_joint_age=max_age_ns * 1e-9)
    end = fault_ns + 300 * MS
    events = [(phase_ns + k * period_ns, 0, None) for k in range((end - phase_ns) // period_ns + 1)]
    last_good = 0
    for k in range(1, end // msg_period_ns + 1):
        stamp = k * msg_period_ns
        if fault == "stale" and stamp > fault_ns:
            break
        bad = fault == "nan" and stamp >= fault_ns
        last_good = stamp if not bad else last_good
        events.append((stamp + delay_ns, 1, (stamp, bad)))
    events.sort(key=lambda e: (e[0], e[1]))  # ticks before messages at the same instant: the later reaction
    onset = last_good + max_age_ns if fault == "stale" else min(t for t, kind, p in events if kind == 1 and p[1])
    dim = (2 if "latent" in source else 0) + (14 if "joints" in source else 0)
    x = np.zeros(dim)
    commands = []
    for t, kind, payload in events:
        if kind == 0:
            commands.append((t, a.assemble(t, x)[0]))
            continue
        stamp, bad = payload
        if "latent" in source:
            a.update_latent(stamp, t, [np.nan, 0.0] if bad else [1.0, 2.0])
            if a.latent_error is not None:
                commands.append((t, a.assemble(t, x)[0]))
        if "joints" in source:
            q = np.full(7, np.nan) if bad else np.zeros(7)
            a.update_joints(stamp, t, SAWYER_JOINT_NAMES, q, np.zeros(7))
            if a.joint_error is not None:
                commands.append((t, a.assemble(t, x)[0]))
    return onset, commands


@pytest.mark.parametrize("source", ["joints", "latent", "latent+joints"])
@pytest.mark.parametrize("fault", ["stale", "nan"])
def test_zero_torque_within_two_command_periods_of_a_fault(source, fault):
    worst = {}
    for period_ms in (1, 2, 4):
        period = period_ms * MS
        for msg_period in (2 * MS, 4 * MS, 10 * MS, 50 * MS if "latent" == source else 4 * MS):
            for phase in np.linspace(0, period, 5, endpoint=False).astype(int):
                for delay in (0, 300_000, 3 * MS):
                    onset, commands = _fault_reaction(source, fault, period, msg_period, int(phase), delay,
                                                      max_age_ns=60 * MS)
                    warm = [ok for t, ok in commands if 100 * MS <= t < onset]
                    assert warm and all(warm), "no zero command before the fault"
                    i = next(i for i, (t, ok) in enumerate(commands) if t >= onset and not ok)
                    assert not any(ok for _, ok in commands[i:]), "zero torque from then on"
                    latency = commands[i][0] - onset
                    assert latency <= 2 * period, (period, msg_period, phase, delay, latency)
                    worst[period_ms] = max(worst.get(period_ms, 0), latency)
    print(f"\n{source} {fault}: worst onset -> first zero command over rates, phases and delays: "
          + ", ".join(f"{w / MS:.3f} ms at a {p} ms period (bound {2 * p} ms)" for p, w in sorted(worst.items())))
    if fault == "nan":
        # Acted on at the NaN's arrival, not at the next tick.
        assert all(w == 0 for w in worst.values())
