"""The fusion node as its own process over real DDS: rate, content, bad input on /diagnostics, staleness,
runtime input switching, start-up validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import Imu, NavSatFix

from carbon_ai_msgs.msg import EngineTelemetry, VehicleState
from carbon_ai_nodes.common.geodesy import LocalFrame
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos

NS = "/fz"
DATUM = LocalFrame(48.137, 11.575, 520.0)
SPEED_MPS = 10.0


class Feeder:
    """Publishes a straight eastward drive at 10 m/s from the probe, on a 50 Hz probe timer:
    IMU and wheel odometry every tick, GNSS and engine telemetry every 5th tick (10 Hz)."""

    def __init__(self, probe) -> None:
        self.probe = probe
        self.pubs = {
            "gnss": probe.publisher(NavSatFix, f"{NS}/gnss/fix", qos.sensor()),
            "imu": probe.publisher(Imu, f"{NS}/imu/data", qos.sensor()),
            "odom": probe.publisher(Odometry, f"{NS}/odom/wheel", qos.sensor()),
            "engine": probe.publisher(EngineTelemetry, f"{NS}/engine/telemetry", qos.sensor()),
        }
        self.gnss_on = True
        self.on = True  # False: every sensor falls silent
        self.ticks = 0
        self.t0 = self.now()
        self.rng = np.random.default_rng(0)
        probe.node.create_timer(0.02, self.tick)

    def now(self) -> float:
        return self.probe.node.get_clock().now().nanoseconds * 1e-9

    def tick(self) -> None:
        if not self.on:
            return
        stamp = self.probe.node.get_clock().now().to_msg()
        t = self.now() - self.t0
        imu = Imu()
        imu.header.stamp = stamp
        imu.orientation.w = 1.0
        self.pubs["imu"].publish(imu)
        odom = Odometry()
        odom.header.stamp = stamp
        odom.twist.twist.linear.x = SPEED_MPS
        self.pubs["odom"].publish(odom)
        if self.ticks % 5 == 0:
            if self.gnss_on:
                fix = NavSatFix()
                fix.header.stamp = stamp
                noise = self.rng.normal(0, 0.3, 3)
                fix.latitude, fix.longitude, fix.altitude = DATUM.to_geodetic(SPEED_MPS * t + noise[0], noise[1],
                                                                              noise[2])
                fix.position_covariance = [0.09, 0.0, 0.0, 0.0, 0.09, 0.0, 0.0, 0.0, 0.25]
                fix.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
                self.pubs["gnss"].publish(fix)
            eng = EngineTelemetry(engine_speed_rpm=1500.0, engine_load_pct=40.0, fuel_rate_lph=25.0,
                                  coolant_temp_c=85.0, payload_kg=2000.0, ambient_temp_c=18.0)
            eng.header.stamp = stamp
            self.pubs["engine"].publish(eng)
        self.ticks += 1


def diag_values(diags, hardware_id: str) -> dict[str, str]:
    """Key/values of the latest report of one node."""
    for array in reversed(diags):
        for status in array.status:
            if status.hardware_id == hardware_id:
                return {kv.key: kv.value for kv in status.values}
    return {}


def source(state: VehicleState, name: str):
    return next(s for s in state.sources if s.name == name)


def _set_param(probe, name: str, value: bool | float | str) -> bool:
    client = probe.node.create_client(SetParameters, f"{NS}/fusion/set_parameters")
    if isinstance(value, bool):
        pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, str):
        pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    else:
        pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
    return probe.call(client, request, timeout_s=20.0, resend_s=2.0).results[0].successful


@pytest.mark.slow
def test_node_fuses_at_rate_rejects_bad_input_and_flags_staleness(probe):
    states = probe.collect(VehicleState, f"{NS}/vehicle_state", qos.command(depth=200))
    odoms = probe.collect(Odometry, f"{NS}/odometry/filtered", qos.command())
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    feeder = Feeder(probe)
    with NodeProcess("fusion", namespace=NS, params={
        "asset_id": "truck7", "rate_hz": 50.0, "diagnostics_period_s": 0.5, "gnss_timeout_s": 0.5,
        "datum_latitude": DATUM.lat_deg, "datum_longitude": DATUM.lon_deg, "datum_altitude_m": DATUM.alt_m,
    }) as node:
        # Rate and content, once the filter has converged (heading comes from the GNSS track).
        assert probe.spin_until(lambda: len(states) >= 150 and not math.isnan(states[-1].heading_rad),
                                timeout_s=30), node.output
        window = states[-100:]
        stamps = np.array([s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in window])
        rate_hz = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        assert 40.0 < rate_hz < 60.0, rate_hz
        last = states[-1]
        assert last.asset_id == "truck7" and last.header.frame_id == "map"
        assert last.speed_mps == pytest.approx(SPEED_MPS, abs=0.3)
        assert abs(last.heading_rad) < 0.1  # driving east
        assert abs(last.grade) < 0.02 and abs(last.accel_mps2) < 0.5
        assert last.engine_speed_rpm == pytest.approx(1500.0) and last.payload_kg == pytest.approx(2000.0)
        assert last.fuel_rate_lph == pytest.approx(25.0) and not last.is_idle
        assert last.latitude == pytest.approx(DATUM.lat_deg, abs=0.01)
        assert len(last.covariance) == 36 and all(math.isfinite(c) for c in last.covariance)
        assert [s.name for s in last.sources] == ["gnss", "imu", "odom", "engine"]
        assert all(s.enabled and s.healthy and not s.stale and s.age_s < 0.5 for s in last.sources), last.sources
        assert odoms and odoms[-1].twist.twist.linear.x == pytest.approx(SPEED_MPS, abs=0.3)

        # Bad input: rejected, counted by reason on /diagnostics, and the estimate stays sane.
        stamp = probe.node.get_clock().now().to_msg()
        bad_fix = NavSatFix(latitude=math.nan, longitude=11.0, altitude=500.0)
        bad_fix.header.stamp = stamp
        bad_cov = NavSatFix(latitude=DATUM.lat_deg, longitude=DATUM.lon_deg, altitude=520.0,
                            position_covariance=[1.0, 5.0, 0.0, 5.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                            position_covariance_type=NavSatFix.COVARIANCE_TYPE_KNOWN)
        bad_cov.header.stamp = stamp
        bad_imu = Imu()
        bad_imu.header.stamp = stamp
        bad_imu.orientation.w = 1.0
        bad_imu.angular_velocity.z = math.inf
        fast_odom = Odometry()
        fast_odom.header.stamp = stamp
        fast_odom.twist.twist.linear.x = 1.0e4
        old_odom = Odometry()
        old_odom.header.stamp.sec = stamp.sec - 30
        old_odom.twist.twist.linear.x = 0.0
        expected = ["rejected.gnss.nan", "rejected.gnss.bad_covariance", "rejected.imu.nan",
                    "rejected.odom.out_of_range", "rejected.odom.stale"]

        def bad_input_counted() -> bool:
            # Sensor QoS is best effort, keep last 5: on a loaded machine one burst may be overwritten, so
            # send the batch again until every reason shows up.
            for topic, msg in (("gnss", bad_fix), ("gnss", bad_cov), ("imu", bad_imu), ("odom", fast_odom),
                               ("odom", old_odom)):
                feeder.pubs[topic].publish(msg)
            values = diag_values(diags, f"{NS}/fusion")
            return all(int(values.get(k, "0")) >= 1 for k in expected)

        assert probe.spin_until(bad_input_counted, timeout_s=20), diag_values(diags, f"{NS}/fusion")
        assert source(states[-1], "gnss").rejected_count >= 2
        assert states[-1].speed_mps == pytest.approx(SPEED_MPS, abs=0.3)

        # GNSS goes quiet: flagged stale, position covariance grows, the rest stays healthy.
        feeder.gnss_on = False
        cov_before = states[-1].covariance[0]
        assert probe.spin_until(lambda: source(states[-1], "gnss").stale, timeout_s=20)
        assert not source(states[-1], "gnss").healthy and source(states[-1], "odom").healthy
        assert probe.spin_until(lambda: states[-1].covariance[0] > 2 * cov_before, timeout_s=20)
        assert "gnss" in diag_values(diags, f"{NS}/fusion").get("stale_inputs", "") or probe.spin_until(
            lambda: "gnss" in diag_values(diags, f"{NS}/fusion").get("stale_inputs", ""), timeout_s=10)
        feeder.gnss_on = True
        assert probe.spin_until(lambda: source(states[-1], "gnss").healthy, timeout_s=20)

        # Switch wheel odometry off and on at run time, no restart.
        assert _set_param(probe, "odom_enabled", False)
        assert probe.spin_until(lambda: not source(states[-1], "odom").enabled, timeout_s=20)
        assert _set_param(probe, "gnss_enabled", False)  # the IMU is still on
        assert not _set_param(probe, "imu_enabled", False)  # refused: no motion source would be left
        assert _set_param(probe, "gnss_enabled", True) and _set_param(probe, "odom_enabled", True)
        assert probe.spin_until(lambda: source(states[-1], "odom").healthy, timeout_s=20)

        # The output rate changes at run time too.
        assert _set_param(probe, "rate_hz", 10.0)
        count = len(states)
        assert probe.spin_until(lambda: len(states) >= count + 15, timeout_s=20)
        tail = np.array([s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in states[-10:]])
        assert (tail[-1] - tail[0]) / (len(tail) - 1) == pytest.approx(0.1, abs=0.02)
        assert node.stop() == 0, node.output
    assert "Traceback" not in node.output


@pytest.mark.slow
def test_input_mode_goes_quiet_with_the_sensors_and_timer_mode_flags_them_stale(probe):
    states = probe.collect(VehicleState, f"{NS}/vehicle_state", qos.command(depth=200))
    feeder = Feeder(probe)
    with NodeProcess("fusion", namespace=NS, params={
        "asset_id": "truck7", "rate_hz": 50.0, "gnss_timeout_s": 0.5,
        "datum_latitude": DATUM.lat_deg, "datum_longitude": DATUM.lon_deg, "datum_altitude_m": DATUM.alt_m,
    }) as node:
        assert probe.spin_until(lambda: len(states) >= 20, timeout_s=30), node.output
        # publish_mode input (the default): at most one state per sensor tick (IMU and odometry arrive together,
        # yet give one state, not two), never faster than rate_hz on average. Counted over 50 states rather than
        # read from single gaps: on a loaded machine fusion may work off a short backlog, and then two states can
        # come half a period apart.
        ticks0, count0 = feeder.ticks, len(states)
        assert probe.spin_until(lambda: len(states) >= count0 + 50, timeout_s=30), node.output
        window = states[count0:]
        ticks = feeder.ticks - ticks0
        assert 0.5 * ticks <= len(window) <= ticks + 2, (len(window), ticks)
        stamps = np.array([s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in window])
        assert (stamps[-1] - stamps[0]) / (len(stamps) - 1) >= 0.018
        # every sensor falls silent: so does fusion (downstream deadlines see it), instead of predicting on
        feeder.on = False
        probe.spin_for(0.3)  # lets in-flight messages land
        count = len(states)
        probe.spin_for(1.0)  # the observation window: a 50 Hz timer would publish ~50 states in it
        assert len(states) == count, [s.sources for s in states[count:count + 1]]
        # timer mode keeps publishing the prediction, and says no motion source backs it
        assert _set_param(probe, "publish_mode", "timer")
        motion = ("gnss", "imu", "odom")
        assert probe.spin_until(lambda: len(states) > count and all(
            source(states[-1], n).stale and not source(states[-1], n).healthy for n in motion), timeout_s=20)
        assert not _set_param(probe, "publish_mode", "sometimes")
        feeder.on = True
        assert probe.spin_until(lambda: all(source(states[-1], n).healthy for n in ("imu", "odom")), timeout_s=20)
        assert _set_param(probe, "publish_mode", "input")
        count = len(states)
        assert probe.spin_until(lambda: len(states) >= count + 20, timeout_s=20)
        assert node.stop() == 0, node.output
    assert "Traceback" not in node.output


def test_bad_parameter_refuses_to_start_naming_the_key():
    with NodeProcess("fusion", params={"gnss_gate": -1.0}) as node:
        assert node.wait(timeout_s=30) == 1
        lines = [line for line in node.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "fusion.gnss_gate=-1.0: must be > 0.0" in lines[0], lines
