"""The named QoS profiles of carbon_ai. Every publisher and subscription picks one of these.

Deadline note: a DDS subscription that *requests* a deadline is incompatible with a publisher that offers
none (the default of most drivers), and then receives nothing. So subscriptions here never request a
deadline by default; input deadlines are enforced by each node's own watchdog (common/health.py), and QoS
deadline events are opt-in per node (``qos_deadline_events``) for stacks whose publishers offer deadlines.
"""

from __future__ import annotations

from rclpy.duration import Duration
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
)


def sensor(deadline_s: float = 0.0, depth: int = 5) -> QoSProfile:
    """Sensor inputs and high-rate streams: best effort, keep last ``depth``, optional deadline (s)."""
    profile = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
    if deadline_s > 0:
        profile.deadline = Duration(seconds=deadline_s)
    return profile


def command(deadline_s: float = 0.0, depth: int = 10) -> QoSProfile:
    """Commands, estimates and e-stop: reliable, volatile, keep last ``depth``, optional deadline (s)."""
    profile = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
        liveliness=LivelinessPolicy.AUTOMATIC,
    )
    if deadline_s > 0:
        profile.deadline = Duration(seconds=deadline_s)
    return profile


def latched(depth: int = 1) -> QoSProfile:
    """Plans, schedules, summaries, status: reliable + transient local, so a late joiner gets the last one."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def diagnostics() -> QoSProfile:
    """/diagnostics as diagnostic_updater publishes it: reliable, volatile, keep last 10."""
    return command(depth=10)
