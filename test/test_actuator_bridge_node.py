"""actuator_bridge as its own process over real DDS: deadlines, e-stop, reset, bad input, plan following."""

from __future__ import annotations

import math
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, Twist
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from carbon_ai_msgs.msg import (
    ActuatorCommand,
    ActuatorStatus,
    AssetSchedule,
    CarbonEstimate,
    LoadSchedule,
    ManualOverride,
    RoutePlan,
    RouteStop,
    SourceHealth,
    VehicleRoute,
    VehicleState,
)
from carbon_ai_nodes.actuation.ros import conversions as actuation
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos

CONTROL_HZ = 20.0
TIMEOUT_S = 0.5
WINDOW_S = 1.0
BASE_PARAMS = {
    "asset_id": "truck1",
    "control_rate_hz": CONTROL_HZ,
    "vehicle_state_timeout_s": TIMEOUT_S,
    "carbon_estimate_timeout_s": TIMEOUT_S,
    "healthy_window_s": WINDOW_S,
    "speed_slew_mps_per_s": 100.0,
    "load_slew_pct_per_s": 1000.0,
    "power_slew_kw_per_s": 1000.0,
    "diagnostics_period_s": 0.2,
}


class Rig:
    """Probe-side inputs and outputs of one bridge in namespace ``ns``; inputs stream at 20 Hz while on."""

    def __init__(self, probe, ns: str) -> None:
        self.probe = probe
        node = probe.node
        self.commands: list[tuple[float, ActuatorCommand]] = []
        node.create_subscription(ActuatorCommand, f"{ns}/actuator_command",
                                 lambda m: self.commands.append((time.monotonic(), m)), qos.command(depth=100))
        self.twists = probe.collect(Twist, f"{ns}/cmd_vel_limit", qos.command())
        self.status = probe.collect(ActuatorStatus, f"{ns}/actuator_status", qos.latched())
        self.diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
        self.state_pub = probe.publisher(VehicleState, f"{ns}/vehicle_state", qos.command())
        self.estimate_pub = probe.publisher(CarbonEstimate, f"{ns}/carbon_estimate", qos.command())
        self.estop_pub = probe.publisher(Bool, f"{ns}/estop", qos.command())
        self.plan_pub = probe.publisher(RoutePlan, f"{ns}/route_plan", qos.latched())
        self.schedule_pub = probe.publisher(LoadSchedule, f"{ns}/load_schedule", qos.latched())
        self.reset = node.create_client(Trigger, f"{ns}/reset_estop")
        self.hardware_id = f"{ns}/actuator_bridge"
        self.streaming = True
        self.east_m = 50.0
        self.speed_mps = 10.0
        self.sources: list[SourceHealth] = []  # as fusion would fill VehicleState.sources; [] = not reported
        self.last_input_s = 0.0
        node.create_timer(0.05, self._tick)

    def _tick(self) -> None:
        if not self.streaming:
            return
        stamp = self.probe.node.get_clock().now().to_msg()
        state = VehicleState(asset_id="truck1", speed_mps=self.speed_mps, east_m=self.east_m, north_m=0.0,
                             sources=self.sources)
        state.header.stamp = stamp
        estimate = CarbonEstimate(asset_id="truck1", co2_rate_g_s=5.0)
        estimate.header.stamp = stamp
        self.state_pub.publish(state)
        self.estimate_pub.publish(estimate)
        self.last_input_s = time.monotonic()

    def modes_since(self, t: float) -> list[int]:
        return [m.mode for (rx, m) in self.commands if rx >= t]

    def first(self, mode: int, after: float) -> float | None:
        return next((rx for rx, m in self.commands if rx >= after and m.mode == mode), None)

    def wait_mode(self, mode: int, after: float, timeout_s: float = 30.0) -> float:
        assert self.probe.spin_until(lambda: self.first(mode, after) is not None, timeout_s), (
            f"no mode {mode}; last: {[m.mode for _, m in self.commands[-5:]]} "
            f"{self.commands[-1][1].reason if self.commands else ''}")
        return self.first(mode, after)

    def diag_values(self) -> dict[str, str]:
        for array in reversed(self.diags):
            for s in array.status:
                if s.hardware_id == self.hardware_id:
                    return {kv.key: kv.value for kv in s.values}
        return {}


def _route_plan() -> RoutePlan:
    def stop(sid: str, x: float, speed: float) -> RouteStop:
        return RouteStop(stop_id=sid, position=Point(x=x, y=0.0, z=0.0), arc_speed_mps=speed,
                         latitude=math.nan, longitude=math.nan)
    route = VehicleRoute(vehicle_id="truck1", stops=[stop("depot", 0.0, math.nan), stop("a", 100.0, 8.0),
                                                     stop("b", 200.0, 14.0)])
    other = VehicleRoute(vehicle_id="truck2", stops=[stop("depot", 0.0, math.nan), stop("c", 100.0, 3.0)])
    return RoutePlan(plan_id="plan-7", routes=[other, route], status=RoutePlan.STATUS_OPTIMAL)


def _double(name: str, value: float) -> Parameter:
    return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value))


def _sources(healthy: bool) -> list[SourceHealth]:
    """VehicleState.sources with every motion sensor healthy, or all of them stale (engine stays healthy)."""
    return [SourceHealth(name=n, enabled=True, healthy=healthy or n == "engine", stale=not healthy and n != "engine",
                         age_s=0.01 if healthy or n == "engine" else 2.0) for n in ("gnss", "imu", "odom", "engine")]


def test_vehicle_position_refuses_a_state_with_no_healthy_motion_source():
    state = VehicleState(asset_id="truck1", speed_mps=3.0, east_m=1.0, north_m=2.0, sources=_sources(healthy=True))
    assert actuation.vehicle_position(state, "truck1")[1:] == (1.0, 2.0)
    state.sources = _sources(healthy=False)
    with pytest.raises(InputRejectedError) as err:
        actuation.vehicle_position(state, "truck1")
    assert err.value.reason == "no_motion_source" and "gnss stale, imu stale, odom stale" in err.value.detail
    assert actuation.vehicle_position(state, "truck1", require_motion_source=False)[1:] == (1.0, 2.0)


def _all_finite(cmd: ActuatorCommand) -> bool:
    return all(math.isfinite(v) for v in (cmd.speed_limit_mps, cmd.engine_load_limit_pct, cmd.power_setpoint_kw))


@pytest.mark.slow
def test_deadline_estop_and_reset_over_dds(probe):
    rig = Rig(probe, "/ab1")
    with NodeProcess("actuator_bridge", namespace="/ab1", params=BASE_PARAMS) as node:
        t0 = time.monotonic()
        auto = rig.wait_mode(ActuatorCommand.MODE_AUTO, t0)

        # Inputs stop: SAFE_FALLBACK within the deadline (plus one control period and scheduling slack),
        # and the command stream keeps its rate.
        rig.streaming = False
        stopped = rig.last_input_s
        fallback = rig.wait_mode(ActuatorCommand.MODE_SAFE_FALLBACK, max(auto, stopped))
        assert fallback - stopped <= TIMEOUT_S + 1.0 / CONTROL_HZ + 0.5, fallback - stopped
        cmd = next(m for rx, m in rig.commands if rx == fallback)
        assert fallback - stopped >= TIMEOUT_S * 0.8, cmd.reason  # not before the deadline either
        assert "stale" in cmd.reason
        assert probe.spin_until(lambda: rig.commands[-1][1].speed_limit_mps == pytest.approx(5.0), 10)  # slewed
        count = len(rig.commands)
        probe.spin_for(1.0)  # letting time pass on purpose: the stream must keep going without inputs
        assert len(rig.commands) - count >= CONTROL_HZ * 0.5, "command stream stalled without inputs"
        assert probe.spin_until(lambda: any(not s.estop_latched and s.mode_name == "SAFE_FALLBACK"
                                            and "vehicle_state" in s.stale_inputs for s in rig.status), 10)

        # Inputs back: AUTO again after the healthy window.
        rig.streaming = True
        resumed = time.monotonic()
        auto = rig.wait_mode(ActuatorCommand.MODE_AUTO, resumed)
        assert auto - resumed >= WINDOW_S * 0.9

        # E-stop: ESTOP within one control period, and nothing else until reset.
        assert probe.wait_for_subscribers(rig.estop_pub)
        pressed = time.monotonic()
        rig.estop_pub.publish(Bool(data=True))
        estop = rig.wait_mode(ActuatorCommand.MODE_ESTOP, pressed)
        assert estop - pressed <= 1.0 / CONTROL_HZ + 0.2, estop - pressed
        rig.estop_pub.publish(Bool(data=False))  # releasing the button does not reset
        probe.spin_for(WINDOW_S + 0.5)
        assert set(rig.modes_since(estop)) == {ActuatorCommand.MODE_ESTOP}
        assert all(m.speed_limit_mps == 0.0 for rx, m in rig.commands if rx >= estop)
        assert rig.twists[-1].linear.x == 0.0

        # Reset: SAFE_FALLBACK first, AUTO only after the healthy window.
        assert rig.reset.wait_for_service(timeout_sec=10)
        future = rig.reset.call_async(Trigger.Request())
        assert probe.spin_until(future.done, 10)
        assert future.result().success, future.result().message
        reset_at = time.monotonic()
        auto = rig.wait_mode(ActuatorCommand.MODE_AUTO, reset_at)
        assert auto - reset_at >= WINDOW_S * 0.9, auto - reset_at
        after_reset = rig.modes_since(reset_at)
        while after_reset and after_reset[0] == ActuatorCommand.MODE_ESTOP:
            after_reset.pop(0)  # published before the reset, delivered alongside its response
        assert after_reset[0] == ActuatorCommand.MODE_SAFE_FALLBACK
        assert ActuatorCommand.MODE_ESTOP not in after_reset
        assert probe.spin_until(lambda: int(rig.diag_values().get("mode_changes.ESTOP->SAFE_FALLBACK", 0)) == 1, 10)
        assert all(_all_finite(m) for _, m in rig.commands)
        assert node.stop() == 0, node.output
    assert "Traceback" not in node.output


@pytest.mark.slow
def test_bad_input_is_rejected_counted_and_never_reaches_the_actuator(probe):
    rig = Rig(probe, "/ab2")
    with NodeProcess("actuator_bridge", namespace="/ab2", params=BASE_PARAMS) as node:
        t0 = time.monotonic()
        auto = rig.wait_mode(ActuatorCommand.MODE_AUTO, t0)
        # Runtime parameter changes: refused with the start-up reason, or applied to the next fallback.
        set_params = probe.node.create_client(SetParameters, "/ab2/actuator_bridge/set_parameters")
        request = SetParameters.Request(parameters=[_double("safe_speed_limit_mps", 99.0)])
        result = probe.call(set_params, request, timeout_s=20.0, resend_s=2.0)
        assert not result.results[0].successful
        assert result.results[0].reason.startswith(
            "actuator_bridge.safe_speed_limit_mps=99.0: must be <= speed_limit_max_mps")
        request = SetParameters.Request(parameters=[_double("safe_speed_limit_mps", 4.0)])
        result = probe.call(set_params, request, timeout_s=20.0, resend_s=2.0)
        assert result.results[0].successful
        rig.speed_mps = math.nan
        bad = time.monotonic()
        fallback = rig.wait_mode(ActuatorCommand.MODE_SAFE_FALLBACK, max(auto, bad))
        assert fallback - bad < 5.0
        assert "vehicle_state invalid (nan)" in next(m.reason for rx, m in rig.commands if rx == fallback)
        assert probe.spin_until(lambda: rig.commands[-1][1].speed_limit_mps == pytest.approx(4.0), 10)
        assert probe.spin_until(lambda: int(rig.diag_values().get("rejected.vehicle_state.nan", 0)) >= 3, 10)
        bad_estimate = CarbonEstimate(asset_id="truck1", co2_rate_g_s=math.inf)
        rig.estimate_pub.publish(bad_estimate)
        assert probe.spin_until(lambda: int(rig.diag_values().get("rejected.carbon_estimate.inf", 0)) >= 1, 10)
        assert all(_all_finite(m) for _, m in rig.commands)
        assert all(math.isfinite(t.linear.x) for t in rig.twists)
        rig.speed_mps = 10.0
        rig.wait_mode(ActuatorCommand.MODE_AUTO, time.monotonic())
        # logged once per state change, not per message
        assert node.output.count("rejecting vehicle_state: nan") == 1, node.output
        # A fresh state that fusion only predicted (every motion sensor stale) is no evidence: safe, then back.
        rig.sources = _sources(healthy=False)
        dead_reckoning = time.monotonic()
        fallback = rig.wait_mode(ActuatorCommand.MODE_SAFE_FALLBACK, dead_reckoning)
        reason = next(m.reason for rx, m in rig.commands if rx == fallback)
        assert "vehicle_state invalid (no_motion_source)" in reason, reason
        rig.sources = _sources(healthy=True)
        rig.wait_mode(ActuatorCommand.MODE_AUTO, time.monotonic())
        assert node.stop() == 0
        # SIGTERM deactivates: the last command leaves the actuator on the safe setpoint.
        assert probe.spin_until(lambda: rig.commands[-1][1].reason == "bridge deactivating", 10)
        last = rig.commands[-1][1]
        assert last.mode == ActuatorCommand.MODE_SAFE_FALLBACK and last.speed_limit_mps == pytest.approx(4.0)
    assert "Traceback" not in node.output


@pytest.mark.slow
def test_follows_the_route_speed_and_the_load_schedule(probe):
    rig = Rig(probe, "/ab3")
    rig.plan_pub.publish(_route_plan())
    schedule = LoadSchedule(plan_id="load-3", slot_s=3600.0, status=LoadSchedule.STATUS_OPTIMAL,
                            assets=[AssetSchedule(asset_id="truck1", power_kw=[42.0, 10.0])])
    schedule.start = probe.node.get_clock().now().to_msg()
    rig.schedule_pub.publish(schedule)
    params = {**BASE_PARAMS, "healthy_window_s": 0.2, "required_inputs": ["vehicle_state", "route_plan"]}
    with NodeProcess("actuator_bridge", namespace="/ab3", params=params) as node:
        def following(speed: float):
            def check() -> bool:
                if not rig.commands:
                    return False
                last = rig.commands[-1][1]
                return last.mode == ActuatorCommand.MODE_AUTO and last.speed_limit_mps == pytest.approx(speed) \
                    and last.power_setpoint_kw == pytest.approx(42.0)
            return check

        assert probe.spin_until(following(8.0), 30), rig.commands[-1][1] if rig.commands else node.output
        cmd = rig.commands[-1][1]
        assert cmd.plan_id == "plan-7,load-3" and cmd.asset_id == "truck1"
        assert probe.spin_until(lambda: rig.twists[-1].linear.x == pytest.approx(8.0), 10)
        rig.east_m = 150.0  # next arc
        assert probe.spin_until(following(14.0), 30), rig.commands[-1][1]

        # Manual override wins over AUTO while refreshed; a silent operator is a fault, not a return to AUTO.
        override_pub = probe.publisher(ManualOverride, "/ab3/manual_override", qos.command())
        assert probe.wait_for_subscribers(override_pub)
        start = time.monotonic()
        for _ in range(3):
            override_pub.publish(ManualOverride(active=True, speed_limit_mps=3.0, engine_load_limit_pct=math.nan,
                                                power_setpoint_kw=math.inf, operator_id="op"))
            override_pub.publish(ManualOverride(active=True, speed_limit_mps=3.0, engine_load_limit_pct=math.nan,
                                                power_setpoint_kw=1e9, operator_id="op"))
            probe.spin_for(0.2)  # refresh well inside the 1 s override timeout
        manual = rig.wait_mode(ActuatorCommand.MODE_MANUAL_OVERRIDE, start)
        assert probe.spin_until(lambda: rig.commands[-1][1].speed_limit_mps == pytest.approx(3.0), 10)
        cmd = rig.commands[-1][1]
        assert cmd.mode == ActuatorCommand.MODE_MANUAL_OVERRIDE and cmd.power_setpoint_kw <= 500.0
        assert cmd.engine_load_limit_pct == pytest.approx(60.0)  # NaN -> the safe value
        lost = rig.wait_mode(ActuatorCommand.MODE_SAFE_FALLBACK, manual)
        assert "manual_override stale" in next(m.reason for rx, m in rig.commands if rx == lost)
        assert probe.spin_until(lambda: int(rig.diag_values().get("rejected.manual_override.inf", 0)) >= 1, 10)
        assert node.stop() == 0
    assert "Traceback" not in node.output


def test_upstream_node_leaving_is_detected_before_the_deadline(probe):
    rig = Rig(probe, "/ab4")
    params = {**BASE_PARAMS, "vehicle_state_timeout_s": 20.0, "carbon_estimate_timeout_s": 20.0,
              "liveliness_check_period_s": 0.2, "healthy_window_s": 0.2}
    with NodeProcess("actuator_bridge", namespace="/ab4", params=params) as node:
        auto = rig.wait_mode(ActuatorCommand.MODE_AUTO, time.monotonic())
        # AUTO held long enough for the bridge's graph view to have seen the publisher
        assert probe.spin_until(lambda: probe.node.count_subscribers("/ab4/vehicle_state") >= 1, 10)
        probe.spin_for(1.0)
        rig.streaming = False
        probe.node.destroy_publisher(rig.state_pub)
        gone = time.monotonic()
        fallback = rig.wait_mode(ActuatorCommand.MODE_SAFE_FALLBACK, max(auto, gone), timeout_s=15)
        assert fallback - gone < 10.0  # well inside the 20 s deadline
        assert "vehicle_state no publisher" in next(m.reason for rx, m in rig.commands if rx == fallback)
        assert probe.spin_until(lambda: rig.diag_values().get("no_publisher") == "vehicle_state", 10)
        assert node.stop() == 0
