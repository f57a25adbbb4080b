"""Echo process for the message round-trip test: every carbon_ai_msgs message received on
``roundtrip/<Type>`` is published back unchanged on ``roundtrip_back/<Type>``."""

from __future__ import annotations

import signal

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

import carbon_ai_msgs.msg as msgs

TYPES = [getattr(msgs, n) for n in dir(msgs) if not n.startswith("_") and hasattr(getattr(msgs, n), "SLOT_TYPES")]


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("echo_messages")
    qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    for t in TYPES:
        pub = node.create_publisher(t, f"roundtrip_back/{t.__name__}", qos)
        node.create_subscription(t, f"roundtrip/{t.__name__}", pub.publish, qos)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop and rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
