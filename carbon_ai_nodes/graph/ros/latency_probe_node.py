"""latency_probe: synthetic vehicle sensors in, sensor -> ActuatorCommand latency out.

Publishes ``imu/data`` and ``odom/wheel`` at ``rate_hz`` and ``gnss/fix`` and ``engine/telemetry`` at a tenth
of it (a vehicle driving north at about 10 m/s, so fusion accepts every fix), and times each AUTO
``actuator_command`` against the sensor message it answers (graph/latency_probe.py). Run in a vehicle's
namespace next to its fusion -> carbon_inference -> actuator_bridge chain; composed on the chain's executor
thread (``carbon-ai bench latency --compose``) its messages take the intra-process bus like the chain's own.
``~/mode`` (std_msgs/String: idle, feed, measure) switches feeding and measuring at run time; the latencies go
to /diagnostics (count, p50, p99) and, at cleanup, to ``results_file``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from std_msgs.msg import String

from carbon_ai_msgs.msg import ActuatorCommand
from carbon_ai_nodes.graph.latency_probe import MODES, LatencyMatcher, LatencyProbeParams
from carbon_ai_nodes.graph.ros.synthetic_sensors import SENSOR_TOPICS, synthetic_sensors
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, run_node
from carbon_ai_nodes.ros.stamps import to_seconds
from carbon_ai_nodes.sim.report import percentiles_ms


class LatencyProbe(CarbonNode[LatencyProbeParams]):
    """Feeds the synthetic sensors on a timer and matches each AUTO command to the message it answers."""

    def __init__(self) -> None:
        super().__init__("latency_probe", LatencyProbeParams)
        self.matcher = LatencyMatcher()
        self.mode = "idle"
        self.k = 0

    def configure(self, params: LatencyProbeParams) -> None:
        self.matcher = LatencyMatcher()
        self._pubs = [self.publisher(t, topic, qos.sensor()) for topic, t in SENSOR_TOPICS]
        self.subscription(ActuatorCommand, "actuator_command", self._on_command, qos.command())
        self.subscription(String, "~/mode", self._on_mode, qos.latched())
        self.timer(1.0 / params.rate_hz, self._tick, name="feed")

    def activate(self) -> None:
        self.mode = self.params.start_mode

    def _on_mode(self, msg: String) -> None:
        if msg.data not in MODES:
            self.reject("mode", "unknown", f"{msg.data!r}: use one of {', '.join(MODES)}")
            return
        if msg.data != self.mode:
            self.get_logger().info(f"mode {self.mode} -> {msg.data}")
        self.mode = msg.data

    def _tick(self) -> None:
        if self.mode == "idle":
            return
        now = self._clock.now()
        self.k += 1
        # Recorded before publishing: composed on the bus, the answer arrives inside publish().
        self.matcher.sent(now.nanoseconds * 1e-9, self.mode == "measure")
        for pub, msg in zip(self._pubs, synthetic_sensors(self.k, now.to_msg(), self.params.rate_hz),
                            strict=True):
            if msg is not None:
                pub.publish(msg)

    def _on_command(self, msg: ActuatorCommand) -> None:
        if msg.mode == ActuatorCommand.MODE_AUTO:
            self.matcher.output(to_seconds(msg.header.stamp), self.now_s())

    def cleanup(self) -> None:
        if not self.params.results_file:
            return
        m = self.matcher
        try:
            Path(self.params.results_file).write_text(json.dumps({
                "samples_ms": m.samples_ms, "measured_sent": m.measured_sent, "unrecorded": m.unrecorded}))
        except OSError as exc:
            self.get_logger().error(f"results_file={self.params.results_file!r}: could not write: {exc}")

    def diagnostics_values(self) -> dict[str, str]:
        p = percentiles_ms(self.matcher.samples_ms)
        return {"mode": self.mode, "latency_count": str(p["count"]), "latency_p50_ms": f"{p['p50']:.3f}",
                "latency_p99_ms": f"{p['p99']:.3f}"}


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes latency_probe``."""
    sys.exit(run_node(LatencyProbe, args))


if __name__ == "__main__":
    main()
