"""The sim node as its own process over DDS: publishes the four sensor streams, obeys ActuatorCommand,
refuses bad commands without crashing, and injects faults."""

from __future__ import annotations

import math

from conftest import REPO
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, NavSatFix

from carbon_ai_msgs.msg import ActuatorCommand, CarbonEstimate, EngineTelemetry
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos

SCENARIO = str(REPO / "config" / "scenarios" / "haul_truck_fleet.yaml")


def test_publishes_sensors_and_obeys_the_speed_limit(probe):
    fixes = probe.collect(NavSatFix, "t/gnss/fix", qos.sensor())
    imus = probe.collect(Imu, "t/imu/data", qos.sensor())
    odoms = probe.collect(Odometry, "t/odom/wheel", qos.sensor())
    engine = probe.collect(EngineTelemetry, "t/engine/telemetry", qos.sensor())
    truth = probe.collect(CarbonEstimate, "t/sim/true_emission", qos.command())
    cmd_pub = probe.publisher(ActuatorCommand, "t/actuator_command", qos.command())
    params = {"scenario_file": SCENARIO, "vehicle_id": "truck1", "stop_dwell_s": 0.0, "gnss_sigma_m": 0.5}
    with NodeProcess("sim", namespace="/t", params=params) as node:
        assert probe.spin_until(lambda: len(fixes) >= 5 and len(imus) >= 20 and len(engine) >= 5, 30), node.output
        lat0, lon0 = -22.7180, 117.8150
        assert abs(fixes[-1].latitude - lat0) < 0.05 and abs(fixes[-1].longitude - lon0) < 0.05
        assert fixes[-1].position_covariance[0] == 0.25
        assert engine[-1].payload_kg == 220000  # truck1 starts at the shovel and loads there
        assert truth and truth[-1].backend == "sim-truth"
        # let it speed up, then cap it at 2 m/s with a command stream; a NaN command is refused
        assert probe.spin_until(lambda: odoms and odoms[-1].twist.twist.linear.x > 3.0, 30), node.output
        assert probe.wait_for_subscribers(cmd_pub)
        cmd_pub.publish(ActuatorCommand(speed_limit_mps=math.nan, engine_load_limit_pct=100.0))
        cmd = ActuatorCommand(mode=ActuatorCommand.MODE_AUTO, speed_limit_mps=2.0, engine_load_limit_pct=100.0)
        slow = []

        def commanding() -> bool:
            cmd_pub.publish(cmd)
            if odoms and odoms[-1].twist.twist.linear.x < 2.3:
                slow.append(True)
            return len(slow) >= 20

        assert probe.spin_until(commanding, 30), node.output
        assert node.poll() is None
        assert node.stop() == 0
        assert "Traceback" not in node.output
        assert "rejecting actuator_command" in node.output


def test_nan_burst_fault_is_published_as_nan_then_clears(probe):
    imus = probe.collect(Imu, "f/imu/data", qos.sensor())
    params = {"scenario_file": SCENARIO, "vehicle_id": "truck1", "faults": ["nan_burst"],
              "fault_start_s": 1.0, "fault_length_s": 1.0, "fault_period_s": 3.0}
    with NodeProcess("sim", namespace="/f", params=params) as node:
        assert probe.spin_until(lambda: any(math.isnan(m.linear_acceleration.x) for m in imus), 30), node.output
        first_nan = next(i for i, m in enumerate(imus) if math.isnan(m.linear_acceleration.x))
        assert probe.spin_until(
            lambda: any(math.isfinite(m.linear_acceleration.x) for m in imus[first_nan:]), 30), node.output
        assert "fault injection: nan_burst active" in node.output
        assert node.stop() == 0
