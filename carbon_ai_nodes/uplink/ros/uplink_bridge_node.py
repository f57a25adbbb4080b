"""uplink_bridge: windowed CarbonSummary of one asset, stored durably, published locally and sent over MQTT.

Subscribes ``carbon_estimate`` and ``vehicle_state`` (reliable). Each closed window becomes a summary with
the asset's next sequence number, committed (fsynced) to the SQLite queue before anything else happens, then
published on ``carbon_summary`` (reliable, transient local) and sent upstream by the MQTT link thread, which
deletes it from the queue on PUBACK. /diagnostics carries the link state, queue depth, oldest unsent age and
bytes sent.

Every ``checkpoint_period_s`` the windows in progress are checkpointed into the queue; a clean stop writes a
final one. A start after a crash restores the last checkpoint and sends a gap record for the span since it. A
queue found damaged (at start, or by either thread later) is repaired by reopening it (see ``DurableQueue``):
the loss goes upstream as a gap record, the event to the log (ERROR) and /diagnostics (``queue.recoveries``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from carbon_ai_msgs.msg import CarbonEstimate, CarbonSummary, VehicleState
from carbon_ai_nodes.common.errors import ConfigError, InputRejectedError
from carbon_ai_nodes.common.health import ERROR, OK, WARN
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, configured, run_node
from carbon_ai_nodes.uplink.durable_queue import DurableQueue, QueueDamagedError, QueueLimits, QueueStats
from carbon_ai_nodes.uplink.mqtt_link import LinkConfig, LinkStats, MqttUplink
from carbon_ai_nodes.uplink.ros.conversions import carbon_summary, estimate_sample, state_sample
from carbon_ai_nodes.uplink.summary_codec import ASSET_ID_RE, Summary
from carbon_ai_nodes.uplink.summary_window import SummaryWindow, WindowTotals
from carbon_ai_nodes.uplink.uplink_params import UplinkBridgeParams

_RUNTIME_LINK_KEYS = ("bandwidth_limit_bytes_s", "batch_linger_s", "batch_max", "max_inflight",
                      "backoff_min_s", "backoff_max_s")


class UplinkBridge(CarbonNode[UplinkBridgeParams]):
    """Window -> durable queue -> local topic + MQTT; reports the link and the queue on /diagnostics."""

    def __init__(self) -> None:
        super().__init__("uplink_bridge", UplinkBridgeParams)
        self.queue: DurableQueue | None = None
        self.link: MqttUplink | None = None
        self.window: SummaryWindow | None = None
        self.asset_id = ""
        self.produced = 0
        self.recoveries = 0
        self._last_loss = 0
        self._last_recovery = ""
        self._recovery_shown_until_s = 0.0
        self._link_state: tuple[str, str, str] = ("", "", "")
        self._queue_path = ""
        self._limits: QueueLimits | None = None

    @property
    def _live_queue(self) -> DurableQueue:
        """The queue configure opened (the callbacks run only while configured)."""
        return configured(self.queue, "uplink_bridge queue")

    @property
    def _live_window(self) -> SummaryWindow:
        """The summary window configure built."""
        return configured(self.window, "uplink_bridge summary window")

    def configure(self, params: UplinkBridgeParams) -> None:
        asset = params.asset_id or self.get_namespace().strip("/").replace("/", "_")
        if not ASSET_ID_RE.match(asset):
            raise ConfigError(f"uplink_bridge.asset_id={params.asset_id!r}: set it, or start the node in a "
                              "namespace naming the vehicle (e.g. /truck1)")
        self.asset_id = asset
        path = params.queue_path or os.path.join(
            os.path.expanduser(os.environ.get("ROS_HOME", "~/.ros")), "carbon_ai", f"uplink_{asset}.sqlite3")
        limits = QueueLimits(params.queue_max_bytes, params.queue_ttl_s, params.queue_full_policy)
        self._queue_path, self._limits = path, limits
        self._open_queue()
        # A restart continues after the last window it produced, so no window is summarised twice.
        not_before_s = self._live_queue.get_marker(f"window_end/{asset}", -math.inf)
        self.window = SummaryWindow(params.window_s, params.max_hold_s, params.grace_s, not_before_s=not_before_s)
        self._restore_checkpoint()
        if params.mqtt_host:
            password = ""
            if params.password_file:
                try:
                    with open(params.password_file) as f:
                        password = f.read().strip()
                except OSError as exc:
                    raise ConfigError(f"uplink_bridge.password_file={params.password_file!r}: {exc.strerror}") \
                        from exc
            config = LinkConfig(
                host=params.mqtt_host, port=params.mqtt_port, asset_id=asset, client_id=params.client_id,
                topic_prefix=params.topic_prefix, protocol=params.mqtt_protocol, tls_ca_file=params.tls_ca_file,
                tls_cert_file=params.tls_cert_file, tls_key_file=params.tls_key_file, username=params.username,
                password=password, keepalive_s=params.keepalive_s,
                **{k: getattr(params, k) for k in _RUNTIME_LINK_KEYS},
            )
            self.link = MqttUplink(config, lambda: DurableQueue(path, limits, sender=True))
        self._pub = self.publisher(CarbonSummary, "carbon_summary", qos.latched(depth=10))
        self.subscription(CarbonEstimate, "carbon_estimate", self._on_estimate, qos.command(),
                          input_name="carbon_estimate", timeout_s=params.input_timeout_s)
        self.subscription(VehicleState, "vehicle_state", self._on_state, qos.command(),
                          input_name="vehicle_state", timeout_s=params.input_timeout_s)
        self.timer(params.status_period_s, self._tick, name="tick")
        self.timer(params.checkpoint_period_s, self._checkpoint, name="checkpoint")
        self.get_logger().info(
            f"asset {asset}: queue {path} (next sequence {self._live_queue.next_sequence(asset)}), uplink "
            + (f"{'mqtts' if params.tls_ca_file else 'mqtt'}://{params.mqtt_host}:{params.mqtt_port}"
               if params.mqtt_host else "disabled (mqtt_host empty)"))

    def activate(self) -> None:
        self._checkpoint()  # from now on a crash is detectable: the checkpoint says "not stopped cleanly"
        if self.link is not None:
            self.link.start()

    def deactivate(self) -> None:
        if self.link is not None:
            self.link.stop()
        self._checkpoint(clean=True)

    def cleanup(self) -> None:
        if self.link is not None:
            self.link.stop()
            self.link = None
        if self.queue is not None:
            self.queue.close()
            self.queue = None

    # ----------------------------------------------------------------- queue: open, repair, checkpoints
    def _open_queue(self) -> None:
        """Open (and if need be repair) the queue; what the repair found is logged as errors and counted."""
        self.queue = DurableQueue(self._queue_path, self._limits)
        for line in self.queue.recoveries:
            self.recoveries += 1
            self._last_recovery = line
            self._recovery_shown_until_s = time.monotonic() + 60.0
            self.get_logger().error(line)

    def _recover_queue(self, cause: Exception) -> None:
        """A thread found the queue damaged while running: reopen it (moving a corrupt file aside) and resume."""
        self.get_logger().error(f"uplink queue {self._queue_path} failed ({cause}): reopening it")
        if self.link is not None:
            self.link.stop()
        self._live_queue.close()
        self._open_queue()
        if self.link is not None and self.is_active:
            self.link.start()

    def _restore_checkpoint(self) -> None:
        """Continue the windows in progress at the last checkpoint; after a crash, report the span since it."""
        text = self._live_queue.get_text(f"checkpoint/{self.asset_id}")
        if text is None:
            return
        try:
            saved = json.loads(text)
            restored = self._live_window.restore(saved["window"])
            saved_at_s, clean = float(saved["saved_at_s"]), bool(saved["clean"])
        except (ValueError, KeyError, TypeError):
            restored, saved_at_s, clean = False, math.nan, False
        if clean and restored:
            return
        now_s = self.now_s()
        start_s = saved_at_s if math.isfinite(saved_at_s) else self._live_window.not_before_s
        gap = self._live_queue.report_gap(self.asset_id, "bridge_crash", start_s if math.isfinite(start_s) else now_s,
                                    now_s)
        self.get_logger().error(
            f"the bridge was not stopped cleanly: estimates from {start_s:.1f} to {now_s:.1f} (Unix s) are not "
            "summarised; reported upstream as gap record "
            + (str(gap.sequence) if gap else "(waiting for room in the full queue)"))

    def _checkpoint(self, clean: bool = False) -> None:
        if self.queue is None or self.window is None:
            return
        self.queue.set_text(f"checkpoint/{self.asset_id}", json.dumps(
            {"window": self.window.snapshot(), "saved_at_s": self.now_s(), "clean": clean}))

    def params_changed(self, old: UplinkBridgeParams, new: UplinkBridgeParams) -> None:
        if self.link is not None:
            self.link.retune(**{k: getattr(new, k) for k in _RUNTIME_LINK_KEYS})

    # ----------------------------------------------------------------- inputs
    def _check_stamp(self, stamp_s: float) -> None:
        now_s = self.now_s()
        if now_s - stamp_s > self.params.max_age_s:
            raise InputRejectedError("stale", f"stamp {now_s - stamp_s:.1f} s old")
        if stamp_s - now_s > self.params.max_future_s:
            raise InputRejectedError("future", f"stamp {stamp_s - now_s:.1f} s ahead of the clock")

    def _foreign(self, name: str, asset_id: str) -> bool:
        if asset_id and asset_id != self.asset_id:
            self.reject(name, "wrong_asset", f"{asset_id!r} is not {self.asset_id!r}")
            return True
        return False

    def _on_estimate(self, msg: CarbonEstimate) -> None:
        self._on_input("carbon_estimate", msg, estimate_sample, self._live_window.add_estimate)

    def _on_state(self, msg: VehicleState) -> None:
        self._on_input("vehicle_state", msg, state_sample, self._live_window.add_state)

    def _on_input(self, name: str, msg: Any, to_sample: Callable[[Any], Any], add: Callable[[Any], Any]) -> None:
        if self._foreign(name, msg.asset_id):
            return
        try:
            sample = to_sample(msg)
            self._check_stamp(sample.stamp_s)
            closed = add(sample)
        except InputRejectedError as exc:
            self.reject(name, exc.reason, exc.detail)
            return
        self.accept(name)
        self._produce(closed)

    def _tick(self) -> None:
        self.poll_watchdog()
        if self.link is not None:
            stats = self.link.stats()
            self._log_link_change(stats)
            if stats.error_kind == "queue":
                self._recover_queue(QueueDamagedError(stats.last_error))
        self._produce(self._live_window.flush(self.now_s()))

    def _log_link_change(self, s: LinkStats) -> None:
        """Log the link's state once per change: connected (INFO), unreachable (WARN), refused or TLS (ERROR)."""
        key = (s.state if s.state in ("connected", "disabled", "stopped") else "down", s.error_kind, s.last_error)
        if key == self._link_state or s.state == "connecting":
            return
        self._link_state = key
        if s.state == "connected":
            self.get_logger().info(f"uplink connected (MQTT {s.protocol})")
        elif s.error_kind in ("unreachable", "") and s.last_error:
            self.get_logger().warning(f"uplink down: {s.last_error}")
        elif s.last_error:
            self.get_logger().error(f"uplink {s.error_kind}: {s.last_error}")

    # ----------------------------------------------------------------- output
    def _produce(self, closed: list[WindowTotals]) -> None:
        for w in closed:
            draft = Summary(
                asset_id=self.asset_id, sequence=0, window_start_s=w.start_s, window_end_s=w.end_s,
                co2_kg=w.co2_kg, fuel_l=w.fuel_l, distance_km=w.distance_km, idle_s=w.idle_s,
                avoided_co2_kg=w.avoided_co2_kg, estimate_count=w.estimate_count,
                worst_latency_us=w.worst_latency_us, measured_s=w.measured_s, measured_co2_kg=w.measured_co2_kg,
                modelled_co2_kg=w.modelled_co2_kg, co2_sigma_kg=w.co2_sigma_kg, model_ids=w.model_ids,
                emission_factor=w.emission_factor,
            )
            markers = {f"window_end/{self.asset_id}": w.end_s}
            try:
                result = self._live_queue.produce(draft, markers=markers)
            except QueueDamagedError as exc:
                self._recover_queue(exc)
                result = self._live_queue.produce(draft, markers=markers)
            self.produced += 1
            if not result.stored:
                self.get_logger().warning(
                    f"queue full (refuse_newest): summary {result.summary.sequence} not stored for upload; a gap "
                    "record will name it once there is room", throttle_duration_sec=60.0)
            if result.gap is not None:
                g, policy = result.gap, self._live_queue.limits.full_policy
                self.get_logger().warning(
                    f"queue limit ({policy}, ttl): rows {g.lost_first}..{g.lost_last} lost "
                    f"({result.dropped_oldest} dropped now), reported upstream as gap record {g.sequence}",
                    throttle_duration_sec=60.0)
            self._pub.publish(carbon_summary(result.summary, self.get_clock().now().to_msg()))
        if closed and self.link is not None:
            self.link.wake()

    def diagnostics_values(self) -> dict[str, str]:
        if self.queue is None:
            return {}
        q: QueueStats = self.queue.stats()
        oldest_age_s = 0.0 if math.isnan(q.oldest_created_s) else max(0.0, time.time() - q.oldest_created_s)
        values = {
            "asset_id": self.asset_id,
            "summaries_produced": str(self.produced),
            "next_sequence": str(self.queue.next_sequence(self.asset_id)),
            "queue.depth": str(q.depth),
            "queue.oldest_unsent_age_s": f"{oldest_age_s:.1f}",
            "queue.stored_bytes": str(q.stored_bytes),
            "queue.dropped_full": str(q.dropped_full),
            "queue.refused_full": str(q.refused_full),
            "queue.expired": str(q.expired),
            "queue.full_policy": self.queue.limits.full_policy,
            "queue.gap_records": str(q.gap_records),
            "queue.recoveries": str(self.recoveries),
            "queue.file_bytes": str(q.file_bytes),
        }
        level, message = OK, ""
        loss = q.dropped_full + q.refused_full + q.expired
        if loss > self._last_loss:
            level, message = WARN, (f"queue full ({self.queue.limits.full_policy}): {q.dropped_full} dropped, "
                                    f"{q.refused_full} refused, {q.expired} expired")
            self._last_loss = loss
        if time.monotonic() < self._recovery_shown_until_s:  # for a minute; the count stays in queue.recoveries
            level, message = ERROR, self._last_recovery
        if self.link is None:
            values["link.state"] = "disabled"
        else:
            s = self.link.stats()
            values.update({
                "link.state": s.state, "link.protocol": s.protocol, "link.last_error": s.last_error,
                "link.error_kind": s.error_kind, "link.bytes_sent": str(s.bytes_sent),
                "link.messages_sent": str(s.messages_sent), "link.summaries_acked": str(s.summaries_acked),
                "link.inflight": str(s.inflight), "link.connects": str(s.connects),
                "link.connect_failures": str(s.connect_failures),
            })
            if s.state != "connected" and s.error_kind in ("tls_verify", "tls_client_cert", "tls_cert_time",
                                                           "tls_plain_broker", "refused", "publish_refused",
                                                           "queue"):
                level, message = ERROR, f"uplink refused: {s.last_error}; {q.depth} summaries kept"
            elif s.state != "connected" and q.depth and level == OK:
                level, message = WARN, f"uplink offline ({s.last_error or s.state}); {q.depth} summaries queued"
        self.health.set_status(level, message)
        return values


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes uplink_bridge``."""
    sys.exit(run_node(UplinkBridge, args))


if __name__ == "__main__":
    main()
