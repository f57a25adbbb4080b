"""Intra-process delivery between nodes composed on one executor thread (rclcpp has an intra-process manager
for C++ components; rclpy has none).

In a composed process each vehicle's fusion -> carbon_inference -> actuator_bridge chain is spun by one
executor thread. Through DDS every hop serialises the message, queues it in the middleware and wakes the
executor again; through the bus the publisher calls its subscribers' callbacks itself, on the same thread,
before its publish returns. DDS still carries the message to everyone else (other threads, other processes,
rviz) whenever someone else listens, and the copy a bus subscriber then also receives through DDS is recognised
by its header stamp and dropped, so each message is handled once.

What makes the direct call safe: only nodes spun by one single-threaded executor share a bus (callbacks never
run concurrently), a subscriber does not keep a message after its callback returns (publishers refill theirs),
and only stamped messages (with a ``header``) take the bus, as the stamp is how a DDS duplicate is recognised.
No ROS import: the node base wires it to rclpy publishers and subscriptions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RECENT_STAMPS = 64  # direct deliveries remembered per subscription until their DDS copy arrives (if ever)


def is_stamped(msg_type: Any) -> bool:
    """True if messages of ``msg_type`` (a ROS message class) carry a ``header`` to recognise duplicates by."""
    try:
        return "header" in msg_type.get_fields_and_field_types()
    except AttributeError:
        return False


class BusSubscription:
    """One subscriber callback on the bus; also the callback its DDS subscription is given."""

    __slots__ = ("topic", "callback", "_recent", "dropped_duplicates")

    def __init__(self, callback: Callable[[Any], None]) -> None:
        self.topic = ""
        self.callback = callback
        self._recent: dict[tuple[int, int], None] = {}  # insertion-ordered: the oldest is evicted first
        self.dropped_duplicates = 0

    def deliver(self, msg: Any) -> None:
        """A message handed over by a publisher on the bus."""
        stamp = msg.header.stamp
        recent = self._recent
        recent[(stamp.sec, stamp.nanosec)] = None
        if len(recent) > RECENT_STAMPS:
            del recent[next(iter(recent))]
        self.callback(msg)

    def from_middleware(self, msg: Any) -> None:
        """A message received through DDS: dropped if the bus already delivered it."""
        stamp = msg.header.stamp
        key = (stamp.sec, stamp.nanosec)
        if key in self._recent:
            del self._recent[key]
            self.dropped_duplicates += 1
            return
        self.callback(msg)


class IntraProcessBus:
    """Subscribers by fully resolved topic name, for the nodes of one executor thread."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[BusSubscription]] = {}

    def attach(self, topic: str, sub: BusSubscription) -> None:
        """Deliver messages published on ``topic`` (resolved, e.g. ``/truck1/vehicle_state``) to ``sub``."""
        sub.topic = topic
        self._subscribers.setdefault(topic, []).append(sub)

    def detach(self, sub: BusSubscription) -> None:
        """Stop delivering to ``sub``."""
        subs = self._subscribers.get(sub.topic, [])
        if sub in subs:
            subs.remove(sub)

    def subscriber_count(self, topic: str) -> int:
        """Bus subscribers of ``topic``."""
        return len(self._subscribers.get(topic, ()))

    def deliver(self, topic: str, msg: Any) -> int:
        """Call every bus subscriber of ``topic`` with ``msg``; returns how many there were."""
        subs = self._subscribers.get(topic)
        if not subs:
            return 0
        targets = tuple(subs)  # a callback may detach (a node cleaning up on a message)
        for sub in targets:
            sub.deliver(msg)
        return len(targets)
