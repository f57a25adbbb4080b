"""Safety envelope and AUTO targets, scenario by scenario (the properties are in *_properties.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from carbon_ai_nodes.actuation.actuation_targets import (
    PowerSchedule,
    RouteFollower,
    RouteTrack,
    co2_tightened_load_pct,
)
from carbon_ai_nodes.actuation.safety_envelope import (
    ActuatorBridgeParams,
    Mode,
    SafetyEnvelope,
    Setpoint,
    motion_sources_problem,
)
from carbon_ai_nodes.common.errors import ParameterError

FAST = dict(speed_slew_mps_per_s=1000.0, load_slew_pct_per_s=1000.0, power_slew_kw_per_s=1000.0,
            control_rate_hz=10.0)


def _feed(env: SafetyEnvelope, t: float, *names: str) -> None:
    for name in names or ("vehicle_state", "carbon_estimate"):
        env.input_ok(name, t)


def _run_healthy(env: SafetyEnvelope, t0: float, t1: float, dt: float = 0.1):
    t, cmd = t0, None
    while t <= t1 + 1e-9:
        _feed(env, t)
        cmd = env.step(t)
        t += dt
    return cmd


def test_starts_in_fallback_and_enters_auto_only_after_the_healthy_window():
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=1.0, **FAST), 0.0)
    cmd = env.step(0.0)
    assert cmd.mode == Mode.SAFE_FALLBACK and "never received" in cmd.reason
    assert cmd.setpoint == Setpoint(5.0, 60.0, 0.0)
    env.set_target(Setpoint(12.0, 80.0, 3.0), "p1")
    assert _run_healthy(env, 0.1, 1.0).mode == Mode.SAFE_FALLBACK  # healthy 0.9 s < 1.0 s
    cmd = _run_healthy(env, 1.1, 1.2)
    assert cmd.mode == Mode.AUTO and cmd.setpoint == Setpoint(12.0, 80.0, 3.0) and cmd.plan_id == "p1"


def test_stale_input_falls_back_to_the_safe_setpoint_with_the_reason():
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=0.0, **FAST), 0.0)
    env.set_target(Setpoint(12.0, 80.0, 3.0))
    assert _run_healthy(env, 0.0, 1.0).mode == Mode.AUTO
    env.input_ok("carbon_estimate", 1.5)
    cmd = env.step(1.6)  # vehicle_state last at 1.0, timeout 0.5
    assert cmd.mode == Mode.SAFE_FALLBACK and cmd.mode_changed
    assert cmd.reason.startswith("vehicle_state stale")
    assert cmd.setpoint == Setpoint(5.0, 60.0, 0.0)
    assert env.stale_inputs(1.6) == ["vehicle_state"]


def test_invalid_input_falls_back_until_a_valid_one_and_the_window():
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=0.5, **FAST), 0.0)
    _run_healthy(env, 0.0, 1.0)
    env.input_invalid("carbon_estimate", "nan")
    cmd = env.step(1.05)
    assert cmd.mode == Mode.SAFE_FALLBACK and "carbon_estimate invalid (nan)" in cmd.reason
    assert env.invalid_inputs() == ["carbon_estimate"]
    assert _run_healthy(env, 1.1, 1.5).mode == Mode.SAFE_FALLBACK
    assert _run_healthy(env, 1.6, 1.7).mode == Mode.AUTO


def test_optional_inputs_do_not_hold_back_auto_but_required_ones_do():
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=0.0, **FAST), 0.0)
    assert _run_healthy(env, 0.0, 0.2).mode == Mode.AUTO  # no route_plan ever: it is optional by default
    env2 = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=0.0,
                                               required_inputs=("vehicle_state", "route_plan"), **FAST), 0.0)
    assert _run_healthy(env2, 0.0, 0.2).mode == Mode.SAFE_FALLBACK
    env2.input_ok("route_plan", 0.3)
    assert _run_healthy(env2, 0.3, 0.4).mode == Mode.AUTO


def test_lost_publisher_falls_back_before_the_deadline():
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=0.0, **FAST), 0.0)
    env.input_publishers("vehicle_state", 0)  # the graph lags the data at start: not a fault yet
    assert _run_healthy(env, 0.0, 0.5).mode == Mode.AUTO
    env.input_publishers("vehicle_state", 1)
    env.input_publishers("vehicle_state", 0)  # seen, then gone: the upstream node left
    cmd = env.step(0.55)
    assert cmd.mode == Mode.SAFE_FALLBACK and "vehicle_state no publisher" in cmd.reason


def test_estop_wins_at_once_latches_and_resets_only_when_released():
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=1.0, **FAST), 0.0)
    env.set_target(Setpoint(12.0, 80.0, 3.0))
    _run_healthy(env, 0.0, 2.0)
    env.set_override(True, Setpoint(3.0, 30.0, 1.0), 2.0)
    env.set_estop(True, 2.0)
    cmd = env.step(2.01)
    assert cmd.mode == Mode.ESTOP and cmd.setpoint == Setpoint(0.0, 0.0, 0.0)
    assert env.reset_estop(2.1) == (False, "e-stop input still engaged: release it first")
    env.set_estop(False, 2.2)
    env.set_override(False, Setpoint(math.nan, math.nan, math.nan), 2.2)
    assert _run_healthy(env, 2.2, 3.0).mode == Mode.ESTOP  # releasing is not resetting
    ok, message = env.reset_estop(3.0)
    assert ok and "healthy for 1 s" in message
    first = _run_healthy(env, 3.1, 3.1)
    assert first.mode == Mode.SAFE_FALLBACK and first.setpoint.speed_limit_mps == 5.0
    assert _run_healthy(env, 3.2, 4.0).mode == Mode.SAFE_FALLBACK
    assert _run_healthy(env, 4.1, 4.2).mode == Mode.AUTO


def test_estop_heartbeat_loss_latches():
    env = SafetyEnvelope(ActuatorBridgeParams(estop_heartbeat_timeout_s=0.5, **FAST), 0.0)
    env.set_estop(False, 0.2)
    assert env.step(0.6).mode != Mode.ESTOP
    cmd = env.step(0.8)
    assert cmd.mode == Mode.ESTOP and "heartbeat lost" in cmd.reason
    assert env.reset_estop(0.9)[0] is False  # heartbeat still missing
    env.set_estop(False, 1.0)
    assert env.reset_estop(1.0)[0] is True


def test_manual_override_beats_auto_and_fallback_and_a_stale_override_is_a_fault():
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=0.0, **{**FAST, "power_slew_kw_per_s": 1e5}), 0.0)
    env.set_override(True, Setpoint(3.0, math.nan, 1e9), 0.0)
    cmd = env.step(0.05)  # required inputs never received, yet the operator drives
    assert cmd.mode == Mode.MANUAL_OVERRIDE
    assert cmd.setpoint == Setpoint(3.0, 60.0, 500.0)  # NaN -> safe value, huge -> bound
    cmd = env.step(1.2)  # override not refreshed within 1 s
    assert cmd.mode == Mode.SAFE_FALLBACK and "manual_override stale" in cmd.reason
    _feed(env, 1.3)
    assert env.step(1.3).mode == Mode.SAFE_FALLBACK  # still: the operator must say something
    env.set_override(False, Setpoint(math.nan, math.nan, math.nan), 1.4)
    _feed(env, 1.4)
    assert env.step(1.4).mode == Mode.AUTO


def test_slew_limits_and_deadband():
    p = ActuatorBridgeParams(healthy_window_s=0.0, speed_slew_mps_per_s=1.0, speed_deadband_mps=0.5)
    env = SafetyEnvelope(p, 0.0)
    env.set_target(Setpoint(10.0, 60.0, 0.0))
    speeds = []
    for i in range(6):
        _feed(env, i * 0.1)
        speeds.append(env.step(i * 0.1).setpoint.speed_limit_mps)
    assert speeds[0] == 5.0 and speeds[1] == pytest.approx(5.1) and speeds[-1] == pytest.approx(5.5)
    env = SafetyEnvelope(p.replace(speed_slew_mps_per_s=100.0), 0.0)
    env.set_target(Setpoint(10.0, 60.0, 0.0))
    _run_healthy(env, 0.0, 0.5)
    env.set_target(Setpoint(10.4, 60.0, 0.0))  # inside the deadband: held
    assert _run_healthy(env, 0.6, 0.8).setpoint.speed_limit_mps == 10.0
    env.set_target(Setpoint(10.6, 60.0, 0.0))
    assert _run_healthy(env, 0.9, 1.0).setpoint.speed_limit_mps == pytest.approx(10.6)


def test_hold_safe_on_deactivation_then_fallback_until_healthy_again():
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=1.0, **FAST), 0.0)
    env.set_target(Setpoint(20.0, 90.0, 10.0))
    assert _run_healthy(env, 0.0, 1.5).mode == Mode.AUTO
    cmd = env.hold_safe(1.6, "bridge deactivating")
    assert (cmd.mode, cmd.setpoint, cmd.mode_changed) == (Mode.SAFE_FALLBACK, Setpoint(5.0, 60.0, 0.0), True)
    assert _run_healthy(env, 1.7, 2.5).mode == Mode.SAFE_FALLBACK  # a re-activation earns AUTO again
    assert _run_healthy(env, 2.6, 2.8).mode == Mode.AUTO
    env.set_estop(True, 3.0)
    assert env.hold_safe(3.0, "bridge deactivating").setpoint == Setpoint(0.0, 0.0, 0.0)


def test_a_stalled_caller_cannot_step_the_output():
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=0.0, control_rate_hz=10.0), 0.0)
    env.set_target(Setpoint(25.0, 100.0, 0.0))
    _run_healthy(env, 0.0, 0.0)
    _feed(env, 30.0)
    out = env.step(30.0).setpoint  # 30 s gap: the step is capped at two control periods
    assert out.speed_limit_mps == pytest.approx(5.0 + 2.0 * 0.2)


@pytest.mark.parametrize(("changes", "message"), [
    ({"safe_speed_limit_mps": 40.0}, "actuator_bridge.safe_speed_limit_mps=40.0: must be <= speed_limit_max_mps"),
    ({"safe_power_setpoint_kw": -5.0}, "actuator_bridge.safe_power_setpoint_kw=-5.0: must be within"),
    ({"required_inputs": ["gps"]}, "actuator_bridge.required_inputs=['gps']: must be one of"),
    ({"control_rate_hz": 0.0}, "actuator_bridge.control_rate_hz=0.0: must be >= 1.0"),
])
def test_bad_parameters_name_the_key(changes, message):
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ActuatorBridgeParams().replace(**changes)


# ----------------------------------------------------------------------------- AUTO targets
def _track() -> RouteTrack:
    # an L-shaped route out and back: depot (0,0) -> (100,0) -> (100,100) -> depot
    east = np.array([0.0, 100.0, 100.0, 0.0])
    north = np.array([0.0, 0.0, 100.0, 0.0])
    return RouteTrack("r1", east, north, np.array([math.nan, 8.0, 12.0, math.nan]))


def test_route_follower_picks_the_arc_and_never_goes_back():
    f = RouteFollower(_track())
    assert f.speed_limit_mps(50.0, 1.0, 25.0, 20.0) == 8.0
    assert f.speed_limit_mps(99.0, 50.0, 25.0, 20.0) == 12.0
    # near the depot again: the return arc (no advice -> cruise), not the first arc
    assert f.speed_limit_mps(5.0, 4.0, 25.0, 20.0) == 25.0 and f.arc_index == 3
    assert f.speed_limit_mps(500.0, 500.0, 25.0, 20.0) == 25.0  # off route
    assert f.speed_limit_mps(math.nan, 0.0, 25.0, 20.0) == 25.0
    assert RouteFollower(_track()).speed_limit_mps(50.0, 0.0, 6.0, 20.0) == 6.0  # cruise caps the advice


def test_a_resent_plan_is_the_same_route_and_a_changed_one_is_not():
    track = _track()
    assert track.same_route(_track())
    moved = _track()
    moved.east_m[1] += 1.0
    assert not track.same_route(moved)


def test_power_schedule_and_co2_tightening():
    s = PowerSchedule("l1", 100.0, 60.0, (5.0, 0.0, 7.5))
    assert [s.power_at(t, -1.0) for t in (99.0, 100.0, 159.9, 160.0, 280.0)] == [-1.0, 5.0, 5.0, 0.0, -1.0]
    assert s.power_at(math.nan, -1.0) == -1.0
    assert co2_tightened_load_pct(100.0, 5.0, 10.0, 40.0) == 100.0
    assert co2_tightened_load_pct(100.0, 20.0, 10.0, 40.0) == 50.0
    assert co2_tightened_load_pct(100.0, 1000.0, 10.0, 40.0) == 40.0
    assert co2_tightened_load_pct(100.0, 1000.0, 0.0, 40.0) == 100.0  # off


def test_a_state_without_a_healthy_motion_source_is_refused_and_recovery_waits_for_the_window():
    healthy = [("gnss", True, True), ("imu", True, True), ("odom", True, True), ("engine", True, True)]
    assert motion_sources_problem(healthy) == ""
    assert motion_sources_problem([]) == ""  # a producer without per-source health: left to the other checks
    assert motion_sources_problem([("engine", True, False)]) == ""
    # one healthy motion source is enough (GNSS alone during an IMU/odometry NaN burst)
    assert motion_sources_problem([("gnss", True, True), ("imu", True, False), ("odom", True, False)]) == ""
    silent = [("gnss", True, False), ("imu", True, False), ("odom", True, False), ("engine", True, True)]
    assert motion_sources_problem(silent) == "no_motion_source"
    # a disabled source does not count even if flagged healthy
    assert motion_sources_problem([("gnss", False, True), ("imu", True, False)]) == "no_motion_source"
    # the bridge turns the reason into an invalid vehicle_state: SAFE_FALLBACK, AUTO only after the window
    env = SafetyEnvelope(ActuatorBridgeParams(healthy_window_s=0.5, **FAST), 0.0)
    env.set_target(Setpoint(12.0, 80.0, 3.0))
    assert _run_healthy(env, 0.0, 1.0).mode == Mode.AUTO
    env.input_invalid("vehicle_state", motion_sources_problem(silent))
    cmd = env.step(1.05)
    assert cmd.mode == Mode.SAFE_FALLBACK and "vehicle_state invalid (no_motion_source)" in cmd.reason
    assert _run_healthy(env, 1.1, 1.5).mode == Mode.SAFE_FALLBACK
    assert _run_healthy(env, 1.6, 1.7).mode == Mode.AUTO
    assert ActuatorBridgeParams().require_motion_source
