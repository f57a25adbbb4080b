"""Sensor -> ActuatorCommand latency: which sensor message an output answers, and the probe node's parameters.

An output (ActuatorCommand) answers the newest sensor message sent before the output's header stamp (its
publish time); a sensor message's latency is the receipt time of its first answer minus its send time. Later
outputs after the same message are not answers to it (the actuator bridge also commands on its own control
timer). ``carbon-ai bench latency`` applies the same rule to the bare relay chain, so both are measured alike.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import ClassVar

from carbon_ai_nodes.common.params import ParamSet, param

MODES = ("idle", "feed", "measure")  # not "off": YAML and ROS parameters read that as false


class LatencyMatcher:
    """Send times of the recent sensor messages (s) and the latencies (ms) of the outputs that answered them.

    Memory stays bounded on a long run: only the last ``keep_sent`` send times are kept (an answer older than
    that many messages is not matched) and at most ``max_samples`` latencies (later ones are only counted).
    """

    def __init__(self, keep_sent: int = 10_000, max_samples: int = 1_000_000) -> None:
        self.sent_s: list[float] = []
        self.measured: list[bool] = []
        self.samples_ms: list[float] = []
        self.measured_sent = 0
        self.unrecorded = 0
        self._last_answered_s = -math.inf
        self._keep_sent = keep_sent
        self._max_samples = max_samples

    def sent(self, t_s: float, measured: bool) -> None:
        """A sensor message went out at ``t_s`` (s, non-decreasing); ``measured``: its answer counts."""
        self.sent_s.append(t_s)
        self.measured.append(measured)
        self.measured_sent += measured
        if len(self.sent_s) > 2 * self._keep_sent:  # trimmed in blocks: amortised O(1) per message
            del self.sent_s[:self._keep_sent], self.measured[:self._keep_sent]

    def output(self, published_s: float, received_s: float) -> float | None:
        """An output stamped ``published_s`` arrived at ``received_s`` (s): the latency (ms) of the message it is
        the first answer to, if that message was measured; else None."""
        i = bisect.bisect_right(self.sent_s, published_s) - 1
        if i < 0 or self.sent_s[i] == self._last_answered_s:
            return None
        self._last_answered_s = self.sent_s[i]
        if not self.measured[i]:
            return None
        latency_ms = (received_s - self.sent_s[i]) * 1000.0
        if len(self.samples_ms) < self._max_samples:
            self.samples_ms.append(latency_ms)
        else:
            self.unrecorded += 1
        return latency_ms


@dataclasses.dataclass(frozen=True)
class LatencyProbeParams(ParamSet):
    """Parameters of the latency_probe node (synthetic sensors in, latency of the ActuatorCommand answers)."""

    SECTION: ClassVar[str] = "latency_probe"
    rate_hz: float = param(100.0, "Rate of the synthetic IMU and wheel odometry (GNSS and engine at a tenth)",
                           unit="Hz", gt=0.0, max=2000.0)
    start_mode: str = param("measure", "Mode at activation: idle, feed (publish, do not measure) or measure; "
                            "the topic ~/mode (std_msgs/String) changes it at run time", choices=MODES)
    results_file: str = param("", "Where to write the measured latencies (JSON) at cleanup; empty: nowhere")
