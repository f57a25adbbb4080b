"""Record a running graph's topics to an MCAP file that Foxglove (and ``ros2 bag`` with MCAP storage) replays.

Messages are stored as they travel (CDR bytes from raw subscriptions: no decode/encode cost, nothing lost in
translation) with a ``ros2msg`` schema per type built from the installed ``.msg`` files
(graph/msg_schema.py). Topics are discovered while recording, so nodes that come up late are still caught;
each subscription copies its publishers' reliability and durability, so latched plans and summaries arrive
even when they were published before the recorder joined, and best-effort sensor streams still match.

Usage from code (``rclpy.init()`` done by the caller)::

    rec = McapRecorder("run.mcap")          # its own node; add rec.node to an executor, or:
    rec.start_thread()                      # spin it in a background thread
    ...
    rec.close()                             # stops the thread, finishes the file (summary + index)
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.graph.msg_schema import concatenated_definition, msg_file_reader

DEFAULT_EXCLUDE = ("/parameter_events",)


def message_class(type_name: str) -> Any:
    """The Python class of ``pkg/msg/Type``."""
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class McapRecorder:
    """Subscribes to every topic in the graph (or only ``topics``) and writes each message to ``path``; with
    ``path`` None it only counts them (``carbon-ai run``'s messages per topic).

    ``discovery_period_s``: how often new topics are looked for (s). ``exclude``: topics never recorded.
    """

    def __init__(self, path: str | Path | None, topics: Iterable[str] = (), *,
                 exclude: Iterable[str] = DEFAULT_EXCLUDE, discovery_period_s: float = 0.5,
                 node_name: str = "mcap_recorder") -> None:
        self.path = Path(path) if path is not None else None
        self.topics = {t if t.startswith("/") else f"/{t}" for t in topics}
        self.exclude = set(exclude)
        self._file = self._writer = None
        if self.path is not None:
            try:
                from mcap.writer import CompressionType, Writer
            except ImportError:
                raise ConfigError("recording needs the mcap package: pip install -r requirements/base.txt") from None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._read_msg = msg_file_reader(os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep))
            self._file = self.path.open("wb")
            self._writer = Writer(self._file, compression=CompressionType.ZSTD)
            self._writer.start(profile="ros2", library="carbon_ai mcap_recorder")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._skipped: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.node = rclpy.create_node(f"{node_name}_{os.getpid()}")
        self._timer = self.node.create_timer(discovery_period_s, self.discover)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.discover()

    # ---------------------------------------------------------------- discovery
    def discover(self) -> None:
        """Subscribe to topics that appeared since the last look (those with a publisher)."""
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self._channels or topic in self._skipped or topic in self.exclude:
                continue
            if self.topics and topic not in self.topics:
                continue
            if not self.node.get_publishers_info_by_topic(topic):
                continue  # only subscribers so far: its QoS is not known yet
            if len(types) != 1:
                self._skip(topic, f"{len(types)} types on one topic: {', '.join(types)}")
                continue
            self._subscribe(topic, types[0])

    def _skip(self, topic: str, reason: str) -> None:
        self._skipped[topic] = reason
        self.node.get_logger().warning(f"not recording {topic}: {reason}")

    def _qos(self, topic: str) -> QoSProfile:
        infos = self.node.get_publishers_info_by_topic(topic)
        reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        # a reliable subscription would not match a best-effort publisher; a volatile one would miss the
        # plan a transient-local publisher sent before we joined
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _subscribe(self, topic: str, type_name: str) -> None:
        writer = self._writer
        if writer is None:  # counting only
            self.counts[topic] = 0
            self._channels[topic] = -1

            def count(_: bytes, topic: str = topic) -> None:
                self.counts[topic] += 1

            try:
                self.node.create_subscription(message_class(type_name), topic, count, self._qos(topic), raw=True)
            except (ImportError, AttributeError, ValueError) as exc:
                self._skip(topic, str(exc))
            return
        try:
            cls = message_class(type_name)
            if type_name not in self._schemas:
                text = concatenated_definition(type_name, self._read_msg)
                with self._lock:
                    self._schemas[type_name] = writer.register_schema(
                        name=type_name, encoding="ros2msg", data=text.encode())
        except (ConfigError, ImportError, AttributeError, ValueError) as exc:
            self._skip(topic, str(exc))
            return
        with self._lock:
            self._channels[topic] = writer.register_channel(
                topic=topic, message_encoding="cdr", schema_id=self._schemas[type_name])
        self.counts[topic] = 0
        channel = self._channels[topic]

        def on_message(data: bytes, topic: str = topic, channel: int = channel) -> None:
            now = time.time_ns()
            with self._lock:
                if self._closed:
                    return
                writer.add_message(channel_id=channel, log_time=now, data=bytes(data), publish_time=now,
                                         sequence=self.counts[topic])
                self.counts[topic] += 1

        self.node.create_subscription(cls, topic, on_message, self._qos(topic), raw=True)

    # ---------------------------------------------------------------- spinning and closing
    def start_thread(self) -> None:
        """Spin the recorder's node in a background thread (its own executor)."""
        self._thread = spin_in_thread(self.node, self._stop, "mcap_recorder")

    @property
    def message_count(self) -> int:
        """Messages written so far."""
        return sum(self.counts.values())

    def close(self) -> None:
        """Stop recording and finish the file (idempotent)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is not None and self._file is not None:  # opened together
                self._writer.finish()
                self._file.close()
        self.node.destroy_node()

    def __enter__(self) -> McapRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spin_in_thread(node: Any, stop: threading.Event, name: str) -> threading.Thread:
    """Spin ``node`` on its own executor in a started daemon thread until ``stop`` is set."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        executor.remove_node(node)

    thread = threading.Thread(target=spin, name=name, daemon=True)
    thread.start()
    return thread
