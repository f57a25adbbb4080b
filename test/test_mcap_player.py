"""mcap_player: which recorded messages it plays, and a one-line refusal of a file it cannot play. Playing into a
live graph is checked by test/test_launch_graph.py (use_sim:=false play:=...)."""

from __future__ import annotations

import subprocess
import sys

from carbon_ai_nodes.graph.ros.mcap_player import recorded_messages


def _record(path, topics: dict[str, list[int]]) -> None:
    from mcap.writer import Writer
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import NavSatFix

    with path.open("wb") as f:
        writer = Writer(f)
        writer.start(profile="ros2", library="test")
        schema = writer.register_schema(name="sensor_msgs/msg/NavSatFix", encoding="ros2msg", data=b"")
        for topic, times in topics.items():
            channel = writer.register_channel(topic=topic, message_encoding="cdr", schema_id=schema)
            for t in times:
                writer.add_message(channel_id=channel, log_time=t, publish_time=t,
                                   data=serialize_message(NavSatFix(latitude=float(t))))
        writer.finish()


def test_only_the_sensor_topics_are_played_in_log_time_order(tmp_path):
    path = tmp_path / "rec.mcap"
    _record(path, {"/truck1/gnss/fix": [30, 10], "/truck1/route_gnss/fixed": [20], "/truck2/gnss/fix": [15]})
    played = recorded_messages(path, ["gnss/fix", "imu/data"])
    assert [(t, topic) for t, topic, _, _ in played] == [(10, "/truck1/gnss/fix"), (15, "/truck2/gnss/fix"),
                                                          (30, "/truck1/gnss/fix")]
    assert {type_name for _, _, type_name, _ in played} == {"sensor_msgs/msg/NavSatFix"}


def _play(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "carbon_ai_nodes.graph.ros.mcap_player", *args], capture_output=True,
                          text=True, timeout=60)


def test_a_file_it_cannot_play_is_refused_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"\x89not an mcap file\x00" * 10)
    empty = tmp_path / "no_sensors.mcap"
    _record(empty, {"/truck1/route_path": [1]})
    for path, reason in ((tmp_path / "missing.mcap", "cannot read"), (garbage, "cannot read"),
                         (empty, "has no topic ending in gnss/fix")):
        result = _play(str(path), "--once")
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0] and str(path) in lines[0], result.stderr


class _StubNode:
    """What play() uses of a node: publishers (counted) and the clock."""

    def __init__(self) -> None:
        self.publishers: list[tuple[str, list]] = []

    def create_publisher(self, _cls, topic: str, _qos):
        sent: list = []
        self.publishers.append((topic, sent))
        return type("Pub", (), {"publish": lambda _self, msg: sent.append(msg)})()

    def get_clock(self):
        import time

        return type("Clock", (), {"now": lambda _self: type("T", (), {"nanoseconds": time.time_ns()})()})()


def test_one_publisher_per_topic_however_many_messages_and_a_stop_ends_the_loop():
    # A recorded file holds thousands of messages on a few topics: one publisher each (one per message once took
    # minutes on a loaded machine before the first message went out), and a set stop ends even a looping play.
    import threading

    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import NavSatFix

    from carbon_ai_nodes.graph.ros.mcap_player import play

    data = serialize_message(NavSatFix())
    messages = [(i * 1000, f"/truck{i % 2 + 1}/gnss/fix", "sensor_msgs/msg/NavSatFix", data) for i in range(3000)]
    node = _StubNode()
    assert play(node, messages, prefix="/site", once=True) == 3000
    assert sorted(t for t, _ in node.publishers) == ["/site/truck1/gnss/fix", "/site/truck2/gnss/fix"]
    assert [len(sent) for _, sent in node.publishers] == [1500, 1500]
    stop = threading.Event()
    stop.set()
    assert play(_StubNode(), messages, once=False, stop=stop) == 0
