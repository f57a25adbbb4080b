"""An observer node in the caller's own process: it publishes, collects and waits for conditions over real DDS.
The tests drive nodes with it, and the benchmarks and the demo measure with it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile


class Probe:
    """An rclpy node with its own executor: publish, collect messages, wait for conditions.

    Needs ``rclpy.init()`` done by the caller (the tests' session fixture does it).
    """

    def __init__(self, name: str = "probe") -> None:
        self.node = rclpy.create_node(f"{name}_{os.getpid()}_{random.randint(0, 1 << 30)}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def collect(self, msg_type: Any, topic: str, qos: QoSProfile) -> list[Any]:
        """Subscribe and return the list every received message is appended to."""
        received: list[Any] = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def publisher(self, msg_type: Any, topic: str, qos: QoSProfile) -> Any:
        """A plain publisher on ``topic``."""
        return self.node.create_publisher(msg_type, topic, qos)

    def spin_for(self, seconds: float) -> None:
        """Process callbacks for ``seconds`` (use only to let time pass, never to wait for an event)."""
        end = time.monotonic() + seconds
        while (remaining := end - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(remaining, 0.05))

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Process callbacks until ``predicate()`` holds or ``timeout_s`` passes; returns the predicate."""
        end = time.monotonic() + timeout_s
        while not predicate():
            remaining = end - time.monotonic()
            if remaining <= 0:
                return bool(predicate())
            self.executor.spin_once(timeout_sec=min(remaining, 0.05))
        return True

    def wait_for_subscribers(self, publisher: Any, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until ``publisher`` has matched ``count`` subscriptions (discovery is asynchronous)."""
        return self.spin_until(lambda: publisher.get_subscription_count() >= count, timeout_s)

    def wait_for_publishers(self, topic: str, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until ``topic`` has ``count`` publishers in the graph."""
        return self.spin_until(lambda: self.node.count_publishers(topic) >= count, timeout_s)

    def call(self, client: Any, request: Any, timeout_s: float = 10.0, resend_s: float | None = None) -> Any:
        """Call a service and return its response; TimeoutError if none arrives within ``timeout_s``.

        ``resend_s`` (idempotent requests only): send the request again when no response has arrived after this
        long. Just after discovery a response can be lost, because ``wait_for_service`` sees the server before the
        server's response writer has matched this client; a second request goes out once it has.
        """
        end = time.monotonic() + timeout_s
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {client.srv_name} not available within {timeout_s} s")
        futures: list[Any] = []
        while (remaining := end - time.monotonic()) > 0 or not futures:
            futures.append(client.call_async(request))
            if self.spin_until(lambda: any(f.done() for f in futures), min(resend_s or remaining, remaining)):
                return next(f for f in futures if f.done()).result()
        raise TimeoutError(f"no response from {client.srv_name} within {timeout_s} s ({len(futures)} requests sent)")

    def close(self) -> None:
        """Destroy the node."""
        self.executor.remove_node(self.node)
        self.node.destroy_node()
