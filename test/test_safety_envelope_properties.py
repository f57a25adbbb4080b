"""Property tests of the safety envelope: for any input sequence (NaN, inf, huge values, random and even
backwards timing), outputs are finite, within bounds and slew limits, and ESTOP wins within one step."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbon_ai_nodes.actuation.safety_envelope import (
    INPUT_NAMES,
    ActuatorBridgeParams,
    Mode,
    SafetyEnvelope,
    Setpoint,
)

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e300, -1e300, 0.0, -0.0])
TIME_STEP = (st.floats(min_value=-1.0, max_value=5.0)
             | st.sampled_from([0.0, 1e-9, 0.05, math.nan, math.inf, -math.inf]))


@st.composite
def envelope_params(draw) -> ActuatorBridgeParams:
    speed_max = draw(st.floats(0.1, 100.0))
    load_max = draw(st.floats(1.0, 100.0))
    power_min = draw(st.floats(-1000.0, 0.0))
    power_max = draw(st.floats(0.0, 1000.0))
    frac = st.floats(0.0, 1.0)
    return ActuatorBridgeParams(
        control_rate_hz=draw(st.floats(1.0, 1000.0)),
        speed_limit_max_mps=speed_max,
        engine_load_max_pct=load_max,
        power_min_kw=power_min,
        power_max_kw=power_max,
        speed_slew_mps_per_s=draw(st.floats(0.01, 100.0)),
        load_slew_pct_per_s=draw(st.floats(0.01, 1000.0)),
        power_slew_kw_per_s=draw(st.floats(0.01, 1000.0)),
        speed_deadband_mps=draw(st.floats(0.0, 5.0)),
        load_deadband_pct=draw(st.floats(0.0, 5.0)),
        power_deadband_kw=draw(st.floats(0.0, 5.0)),
        safe_speed_limit_mps=draw(frac) * speed_max,
        safe_engine_load_limit_pct=draw(frac) * load_max,
        safe_power_setpoint_kw=min(power_max, power_min + draw(frac) * (power_max - power_min)),
        required_inputs=tuple(draw(st.lists(st.sampled_from(INPUT_NAMES), unique=True, max_size=4))),
        vehicle_state_timeout_s=draw(st.floats(0.0, 2.0)),
        carbon_estimate_timeout_s=draw(st.floats(0.0, 2.0)),
        healthy_window_s=draw(st.floats(0.0, 3.0)),
        estop_heartbeat_timeout_s=draw(st.sampled_from([0.0, 0.0, 0.5, 2.0])),
    )


SETPOINT = st.builds(Setpoint, ANY_FLOAT, ANY_FLOAT, ANY_FLOAT)
EVENT = st.one_of(
    st.tuples(st.just("ok"), st.sampled_from(INPUT_NAMES)),
    st.tuples(st.just("invalid"), st.sampled_from(INPUT_NAMES), st.sampled_from(["nan", "inf", ""])),
    st.tuples(st.just("publishers"), st.sampled_from(INPUT_NAMES), st.integers(0, 3)),
    st.tuples(st.just("target"), SETPOINT),
    st.tuples(st.just("override"), st.booleans(), SETPOINT),
    st.tuples(st.just("estop"), st.booleans()),
    st.tuples(st.just("reset")),
)


def _bounds(p: ActuatorBridgeParams) -> list[tuple[float, float]]:
    return [(0.0, p.speed_limit_max_mps), (0.0, p.engine_load_max_pct), (p.power_min_kw, p.power_max_kw)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=envelope_params(), start_s=st.floats(0.0, 1e6),
       steps=st.lists(st.tuples(TIME_STEP, st.lists(EVENT, max_size=4)), min_size=1, max_size=60))
def test_outputs_bounded_slew_limited_and_estop_wins(params, start_s, steps):
    env = SafetyEnvelope(params, start_s)
    bounds = _bounds(params)
    slews = (params.speed_slew_mps_per_s, params.load_slew_pct_per_s, params.power_slew_kw_per_s)
    t = start_s
    clock_s = start_s  # the envelope's own clock: never runs backwards
    previous = env.output.as_tuple()
    for dt, events in steps:
        t = t + dt if math.isfinite(dt) else dt
        estop_requested = False
        for event in events:
            kind = event[0]
            if kind == "ok":
                env.input_ok(event[1], t)
            elif kind == "invalid":
                env.input_invalid(event[1], event[2])
            elif kind == "publishers":
                env.input_publishers(event[1], event[2])
            elif kind == "target":
                env.set_target(event[1], "plan")
            elif kind == "override":
                env.set_override(event[1], event[2], t)
            elif kind == "estop":
                env.set_estop(event[1], t)
                estop_requested = estop_requested or event[1]
            else:
                ok, _ = env.reset_estop(t)
                if ok:
                    estop_requested = False  # a later reset in the same cycle legitimately clears it
        was_latched = env.estop_latched
        cmd = env.step(t)
        values = cmd.setpoint.as_tuple()

        assert all(math.isfinite(v) for v in values), values
        for v, (low, high) in zip(values, bounds, strict=True):
            assert low <= v <= high, (v, low, high)
        if estop_requested or was_latched:
            assert cmd.mode == Mode.ESTOP
            assert values == (0.0, 0.0, 0.0)
        if cmd.mode != Mode.ESTOP:
            new_clock = max(clock_s, t) if math.isfinite(t) else clock_s
            dt_eff = min(max(new_clock - clock_s, 0.0), 2.0 / params.control_rate_hz)
            for v, prev, slew in zip(values, previous, slews, strict=True):
                assert abs(v - prev) <= slew * dt_eff + 1e-9 * max(1.0, abs(prev)), (v, prev, slew, dt_eff)
        if math.isfinite(t):
            clock_s = max(clock_s, t)
        previous = values


@settings(max_examples=100, deadline=None)
@given(params=envelope_params(), times=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=30))
def test_estop_latches_until_an_explicit_reset_with_the_input_released(params, times):
    env = SafetyEnvelope(params, 0.0)
    env.set_estop(True, 0.0)
    t = 0.0
    for dt in times:
        t += dt
        for name in INPUT_NAMES:
            env.input_ok(name, t)
        env.set_estop(False, t)  # releasing the button alone never clears the latch
        env.set_override(True, Setpoint(1.0, 1.0, 0.0), t)
        assert env.step(t).mode == Mode.ESTOP
    assert env.reset_estop(t)[0]
    assert env.step(t).mode != Mode.ESTOP


@settings(max_examples=100, deadline=None)
@given(params=envelope_params(), dts=st.lists(st.floats(0.001, 0.3), min_size=1, max_size=80))
def test_auto_only_after_required_inputs_healthy_for_the_window(params, dts):
    env = SafetyEnvelope(params, 0.0)
    t = 0.0
    healthy_since = None
    for dt in dts:
        t += dt
        for name in INPUT_NAMES:
            env.input_ok(name, t)
        cmd = env.step(t)
        healthy_since = t if healthy_since is None else healthy_since
        if cmd.mode == Mode.AUTO:
            assert t - healthy_since >= params.healthy_window_s
