"""MCAP recording: the ros2msg schema text (pure), and a real DDS recording that reads back with its messages."""

from __future__ import annotations

import math
import os

import pytest
from nav_msgs.msg import Odometry

from carbon_ai_msgs.msg import CarbonEstimate, RoutePlan, VehicleRoute
from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.graph.msg_schema import SEPARATOR, concatenated_definition, field_types, msg_file_reader
from carbon_ai_nodes.ros import qos


def reader():
    return msg_file_reader(os.environ["AMENT_PREFIX_PATH"].split(os.pathsep))


def test_field_types_skip_constants_primitives_and_resolve_packages():
    text = """# comment
uint8 STATUS_OK = 0
string NAME="x"
std_msgs/Header header
Header legacy
float64[] values
string<=8 short
int32[<=3] bounded
Stop[4] stops   # same package
geometry_msgs/msg/Point p
"""
    assert field_types(text, "pkg") == ["std_msgs/Header", "pkg/Stop", "geometry_msgs/Point"]


def test_concatenated_definition_has_each_dependency_once_after_a_separator():
    text = concatenated_definition("nav_msgs/msg/Odometry", reader())
    for dep in ("std_msgs/Header", "builtin_interfaces/Time", "geometry_msgs/PoseWithCovariance",
                "geometry_msgs/Pose", "geometry_msgs/Point", "geometry_msgs/TwistWithCovariance",
                "geometry_msgs/Vector3"):
        assert text.count(f"\nMSG: {dep}\n") == 1, dep
        assert f"{SEPARATOR}\nMSG: {dep}" in text
    assert text.startswith(reader()("nav_msgs/Odometry").rstrip("\n"))
    with pytest.raises(ConfigError, match="nav_msgs/NoSuch not found"):
        concatenated_definition("nav_msgs/msg/NoSuch", reader())


@pytest.mark.timeout(60)
def test_recording_reads_back_with_schemas_and_messages(probe, tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from carbon_ai_nodes.graph.ros.mcap_recorder import McapRecorder

    plans = probe.publisher(RoutePlan, "/rec/route_plan", qos.latched())
    odom = probe.publisher(Odometry, "/rec/odom/wheel", qos.sensor())
    estimates = probe.publisher(CarbonEstimate, "/rec/carbon_estimate", qos.command())
    # published before the recorder exists: transient local must still bring it into the file
    plans.publish(RoutePlan(plan_id="p-1", routes=[VehicleRoute(vehicle_id="truck1")], expected_co2_kg=1.5))
    path = tmp_path / "run.mcap"
    recorder = McapRecorder(path, ("/rec/route_plan", "/rec/odom/wheel", "/rec/carbon_estimate"))
    probe.executor.add_node(recorder.node)
    try:
        want = {"/rec/route_plan", "/rec/odom/wheel", "/rec/carbon_estimate"}
        assert probe.spin_until(lambda: (recorder.discover() or set(recorder.counts) == want), 20), recorder.counts
        assert probe.wait_for_subscribers(odom) and probe.wait_for_subscribers(estimates)
        sent = 0

        def publish_and_check() -> bool:
            nonlocal sent
            sent += 1
            msg = Odometry()
            msg.twist.twist.linear.x = float(sent)
            odom.publish(msg)
            estimates.publish(CarbonEstimate(asset_id="truck1", co2_rate_g_s=float(sent), backend="physics"))
            return all(recorder.counts[t] >= 5 for t in ("/rec/odom/wheel", "/rec/carbon_estimate")) \
                and recorder.counts["/rec/route_plan"] >= 1

        assert probe.spin_until(publish_and_check, 20), recorder.counts
    finally:
        probe.executor.remove_node(recorder.node)
        recorder.close()
    by_topic: dict[str, list] = {}
    with path.open("rb") as f:
        mcap = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = mcap.get_summary()
        assert {s.name for s in summary.schemas.values()} == {
            "carbon_ai_msgs/msg/RoutePlan", "nav_msgs/msg/Odometry", "carbon_ai_msgs/msg/CarbonEstimate"}
        assert all(s.encoding == "ros2msg" for s in summary.schemas.values())
        for _schema, channel, message, decoded in mcap.iter_decoded_messages():
            by_topic.setdefault(channel.topic, []).append(decoded)
            assert channel.message_encoding == "cdr" and message.log_time > 0
    assert by_topic["/rec/route_plan"][0].plan_id == "p-1"
    assert by_topic["/rec/route_plan"][0].routes[0].vehicle_id == "truck1"
    assert math.isclose(by_topic["/rec/route_plan"][0].expected_co2_kg, 1.5)
    speeds = [m.twist.twist.linear.x for m in by_topic["/rec/odom/wheel"]]
    assert speeds == sorted(speeds) and len(speeds) >= 5  # in order, none garbled
    assert {m.backend for m in by_topic["/rec/carbon_estimate"]} == {"physics"}
