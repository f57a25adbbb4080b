"""Play the sensor topics of an MCAP file (``carbon-ai run --record``, Foxglove, ``ros2 bag`` with MCAP storage)
into a live graph as a vehicle's sensors would publish them: recorded pacing, header stamps moved to the present
(fusion refuses stale stamps), the sensor QoS. The launch files start it with ``use_sim:=false play:=FILE.mcap``.

    python -m carbon_ai_nodes.graph.ros.mcap_player FILE.mcap [--topics gnss/fix imu/data ...]
        [--namespace-prefix /site] [--once]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SENSOR_TOPICS = ("gnss/fix", "imu/data", "odom/wheel", "engine/telemetry")


def recorded_messages(path: Path, topic_suffixes: Iterable[str]) -> list[tuple[int, str, str, bytes]]:
    """(log time ns, topic, type name, CDR bytes) of the channels whose topic ends with one of the suffixes."""
    from mcap.reader import make_reader

    suffixes = tuple(f"/{s.strip('/')}" for s in topic_suffixes)
    with path.open("rb") as f:
        return [(m.log_time, c.topic, s.name, m.data) for s, c, m in make_reader(f).iter_messages(log_time_order=True)
                if s is not None and c.topic.endswith(suffixes)]


def play(node: Any, messages: Sequence[tuple[int, str, str, bytes]], prefix: str = "", once: bool = False,
         stop: threading.Event | None = None) -> int:
    """Publish ``messages`` at their recorded pace, restamped to now, looping unless ``once`` or until ``stop`` is
    set; returns the number of messages sent."""
    from rclpy.serialization import deserialize_message
    from rclpy.time import Time

    from carbon_ai_nodes.graph.ros.mcap_recorder import message_class
    from carbon_ai_nodes.ros import qos

    channels = {topic: type_name for _, topic, type_name, _ in messages}
    classes = {type_name: message_class(type_name) for type_name in set(channels.values())}
    # One publisher per topic (a comprehension over the messages made one per message: 15,000 publishers took
    # minutes to create on a loaded machine, and the graph saw no sensor data meanwhile)
    publishers = {topic: node.create_publisher(classes[type_name], prefix.rstrip("/") + topic, qos.sensor())
                  for topic, type_name in channels.items()}
    stop = stop or threading.Event()
    sent = 0
    while True:
        start_ns, first_ns = time.monotonic_ns(), messages[0][0]
        offset_ns = node.get_clock().now().nanoseconds - first_ns  # recorded log time -> this clock
        for log_ns, topic, type_name, data in messages:
            delay_s = (log_ns - first_ns - (time.monotonic_ns() - start_ns)) / 1e9
            if stop.wait(max(delay_s, 0.0)):  # pacing: a sensor publishes on its own clock
                return sent
            msg = deserialize_message(data, classes[type_name])
            if hasattr(msg, "header"):
                stamp_ns = Time.from_msg(msg.header.stamp).nanoseconds + offset_ns
                msg.header.stamp = Time(nanoseconds=stamp_ns).to_msg()
            publishers[topic].publish(msg)
            sent += 1
        if once:
            return sent


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: play until the file ends (``--once``) or until interrupted."""
    parser = argparse.ArgumentParser(prog="mcap_player", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="MCAP file recorded from a graph")
    parser.add_argument("--topics", nargs="+", default=list(SENSOR_TOPICS),
                        help="topic name endings to play (default: the sensor inputs)")
    parser.add_argument("--namespace-prefix", default="", help="prepended to every played topic, e.g. /site3")
    parser.add_argument("--once", action="store_true", help="stop at the end of the file instead of looping")
    args = parser.parse_args(argv)
    from mcap.exceptions import McapError

    try:
        messages = recorded_messages(args.path, args.topics)
    except (OSError, McapError) as exc:  # missing, cut short, or not an MCAP file
        print(f"mcap_player: cannot read {args.path}: {exc}", file=sys.stderr)
        return 2
    if not messages:
        print(f"mcap_player: {args.path} has no topic ending in {', '.join(args.topics)}", file=sys.stderr)
        return 2
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    from carbon_ai_nodes.graph.stop_signals import sets_event

    # SIGINT/SIGTERM (ros2 launch's shutdown) end the loop between messages: with rclpy's own handlers the pacing
    # loop, which never spins, kept publishing until launch escalated to SIGKILL.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, sets_event(stop))  # (main thread waits on stop)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("mcap_player")
    node.get_logger().info(f"playing {len(messages)} messages on {len({m[1] for m in messages})} topics "
                           f"from {args.path}{'' if args.once else ' (looping)'}")
    try:
        play(node, messages, args.namespace_prefix, args.once, stop)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
