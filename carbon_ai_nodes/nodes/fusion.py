"""fusion: fuses GNSS, IMU, wheel odometry and engine telemetry into carbon_ai_msgs/VehicleState.

Subscribes (sensor QoS, all optional, switchable at run time): ``gnss/fix`` (NavSatFix), ``imu/data`` (Imu),
``odom/wheel`` (Odometry), ``engine/telemetry`` (EngineTelemetry).
Publishes at ``rate_hz``: ``vehicle_state`` (VehicleState, reliable) and ``odometry/filtered``
(nav_msgs/Odometry, for rviz and other stacks). The EKF lives in ``carbon_ai_nodes.core.fusion``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, NavSatFix

from carbon_ai_msgs.msg import EngineTelemetry, SourceHealth, VehicleState
from carbon_ai_nodes import qos
from carbon_ai_nodes.conversions import fusion as conv
from carbon_ai_nodes.core.errors import InputRejectedError
from carbon_ai_nodes.core.fusion import SOURCES, FusionFilter, FusionParams
from carbon_ai_nodes.node_base import CarbonNode, run_node

CLOCK_JUMP_S = 1.0  # the node clock stepping back more than this (bag loop, sim restart) resets the filter


class Fusion(CarbonNode[FusionParams]):
    """Thin wrapper: validated messages go to the FusionFilter, a timer publishes its prediction to now."""

    def __init__(self) -> None:
        super().__init__("fusion", FusionParams)
        self.filter: FusionFilter | None = None
        self._last_now_s = -math.inf
        self._last_ok_s: dict[str, float] = {}
        self._last_verdict_ok: dict[str, bool] = {}
        self._publish_timer: Any = None

    # ------------------------------------------------------------------------------------------- lifecycle
    def configure(self, params: FusionParams) -> None:
        self.filter = FusionFilter(params)
        self._last_ok_s.clear()
        self._last_verdict_ok.clear()
        self._state_pub = self.publisher(VehicleState, "vehicle_state", qos.command())
        self._odom_pub = self.publisher(Odometry, "odometry/filtered", qos.command())
        inputs: list[tuple[str, Any, str, Callable[[Any, float], Any], Callable[[Any, float], Any]]] = [
            ("gnss", NavSatFix, "gnss/fix", conv.gnss_fix, lambda m, t: self.filter.update_gnss(m, t)),
            ("imu", Imu, "imu/data", conv.imu_sample, lambda m, t: self.filter.update_imu(m, t)),
            ("odom", Odometry, "odom/wheel", conv.wheel_speed, lambda m, t: self.filter.update_odom(m, t)),
            ("engine", EngineTelemetry, "engine/telemetry", conv.engine_sample, self._update_engine),
        ]
        for name, msg_type, topic, convert, update in inputs:
            self.subscription(
                msg_type, topic, self._make_callback(name, convert, update), qos.sensor(),
                input_name=name, timeout_s=params.timeout_s(name) if params.enabled(name) else 0.0,
            )
        self._publish_timer = self.timer(1.0 / params.rate_hz, self._publish, name="publish")

    def activate(self) -> None:
        self._last_now_s = self.now_s()

    def params_changed(self, old: FusionParams, new: FusionParams) -> None:
        self.filter.set_params(new)
        now = self.now_s()
        for name in SOURCES:
            if new.enabled(name) and (not old.enabled(name) or new.timeout_s(name) != old.timeout_s(name)):
                self.health.watchdog.watch(name, new.timeout_s(name), now)
                self.get_logger().info(f"{name}: enabled, timeout {new.timeout_s(name)} s")
            elif old.enabled(name) and not new.enabled(name):
                self.health.watchdog.unwatch(name)
                self.get_logger().info(f"{name}: disabled; the filter predicts without it")
        if new.rate_hz != old.rate_hz and self._publish_timer is not None:
            self.destroy_timer(self._publish_timer)
            self._carbon_timers.remove(self._publish_timer)
            self._publish_timer = self.timer(1.0 / new.rate_hz, self._publish, name="publish")

    # ------------------------------------------------------------------------------------------- inputs
    def _make_callback(self, name: str, convert: Callable[[Any, float], Any],
                       update: Callable[[Any, float], Any]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            if not self.params.enabled(name):
                return
            now = self.now_s()
            try:
                update(convert(msg, now), now)
            except InputRejectedError as exc:
                self._last_verdict_ok[name] = False
                self.reject(name, exc.reason, exc.detail)
                return
            self._last_verdict_ok[name] = True
            self._last_ok_s[name] = now
            self.accept(name)

        return callback

    def _update_engine(self, sample: Any, now_s: float) -> None:
        for channel in self.filter.update_engine(sample, now_s):
            self.reject(f"engine.{channel}", "out_of_range")

    # ------------------------------------------------------------------------------------------- output
    def _publish(self) -> None:
        now = self.now_s()
        if now < self._last_now_s - CLOCK_JUMP_S:
            self.reject("clock", "jumped_back", f"{self._last_now_s - now:.1f} s")
            self.filter = FusionFilter(self.params)
            self.health.watchdog.rearm(now)
        self._last_now_s = now
        self.poll_watchdog()
        if not self.filter.initialized:
            return  # nothing to say until a motion source has spoken
        state = self.filter.state_at(now)
        stamp = self.get_clock().now().to_msg()
        p = self.params
        self._state_pub.publish(conv.vehicle_state(state, stamp, p.asset_id, p.world_frame, self._sources(now)))
        self._odom_pub.publish(conv.odometry(state, stamp, p.world_frame, p.base_frame))

    def _sources(self, now_s: float) -> list[SourceHealth]:
        watchdog = self.health.watchdog
        out = []
        for name in SOURCES:
            enabled = self.params.enabled(name)
            stale = enabled and watchdog.is_stale(name)
            last = self._last_ok_s.get(name)
            rejected = sum(c for (n, _), c in self.health.rejected_count.items() if n == name)
            out.append(conv.source_health(
                name, enabled, stale, enabled and not stale and self._last_verdict_ok.get(name, False),
                math.inf if last is None else max(0.0, now_s - last),
                self.health.accepted_count[name], rejected,
            ))
        return out

    def diagnostics_values(self) -> dict[str, str]:
        f = self.filter
        if f is None:
            return {}
        values = {
            "initialized": str(f.initialized),
            "position_valid": str(f.position_ok),
            "heading_valid": str(f.heading_ok),
            "late_replays": str(f.replays),
            "gnss_resets": str(f.gnss_resets),
            "stale_inputs": ",".join(sorted(self.health.watchdog.stale)) or "none",
        }
        if f.frame is not None:
            values["datum"] = f"{f.frame.lat_deg:.7f},{f.frame.lon_deg:.7f},{f.frame.alt_m:.2f}"
        return values


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes fusion``."""
    sys.exit(run_node(Fusion, args))


if __name__ == "__main__":
    main()
