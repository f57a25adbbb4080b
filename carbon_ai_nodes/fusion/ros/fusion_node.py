"""fusion: fuses GNSS, IMU, wheel odometry and engine telemetry into carbon_ai_msgs/VehicleState.

Subscribes (sensor QoS, all optional, switchable at run time): ``gnss/fix`` (NavSatFix), ``imu/data`` (Imu),
``odom/wheel`` (Odometry), ``engine/telemetry`` (EngineTelemetry).
Publishes ``vehicle_state`` (VehicleState, reliable) and, while anything subscribes to it, ``odometry/filtered``
(nav_msgs/Odometry, for rviz and other stacks): with ``publish_mode`` ``input`` (the default) right after each
accepted motion measurement, at most about ``rate_hz``, and nothing while no motion source delivers (downstream
deadlines then see the silence); with ``timer`` the prediction at ``rate_hz`` whatever the inputs do.
The EKF lives in ``carbon_ai_nodes.fusion.ekf``, its inputs in ``fusion.measurements``, its parameters in
``fusion.fusion_params``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, NavSatFix

from carbon_ai_msgs.msg import EngineTelemetry, SourceHealth, VehicleState
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.fusion.ekf import FusionFilter
from carbon_ai_nodes.fusion.fusion_params import MOTION_SOURCES, SOURCES, FusionParams
from carbon_ai_nodes.fusion.ros import conversions as conv
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, configured, run_node

CLOCK_JUMP_S = 1.0  # the node clock stepping back more than this (bag loop, sim restart) resets the filter
HOUSEKEEPING_PERIOD_S = 0.1  # input mode: how often staleness and clock jumps are checked without inputs


class Fusion(CarbonNode[FusionParams]):
    """Thin wrapper: validated messages go to the FusionFilter; its estimate goes out on input or on a timer."""

    def __init__(self) -> None:
        super().__init__("fusion", FusionParams)
        self.filter: FusionFilter | None = None
        self._last_now_s = -math.inf
        self._last_ok_s: dict[str, float] = {}
        self._last_verdict_ok: dict[str, bool] = {}
        self._rejected: dict[str, int] = dict.fromkeys(SOURCES, 0)
        self._enabled: dict[str, bool] = {}
        self._on_input = False
        self._half_period_s = 0.0
        self._next_publish_s = -math.inf
        self._last_publish_s = -math.inf
        self._publish_timer: Any = None
        # One VehicleState (with its SourceHealth entries) refilled per publish: publish() serialises
        # synchronously, and rebuilding ~60 checked fields per message is the node's largest per-message cost.
        self._sources_msg = [SourceHealth(name=name) for name in SOURCES]
        self._state_msg = VehicleState(sources=self._sources_msg)
        self._odom_msg = Odometry()

    @property
    def _filter(self) -> FusionFilter:
        """The filter configure built (replaced on a clock jump; the callbacks run only while configured)."""
        return configured(self.filter, "fusion filter")

    # ------------------------------------------------------------------------------------------- lifecycle
    def configure(self, params: FusionParams) -> None:
        self.filter = FusionFilter(params)
        self._last_ok_s.clear()
        self._last_verdict_ok.clear()
        self._rejected = dict.fromkeys(SOURCES, 0)
        self._cache_params(params)
        self._state_pub = self.publisher(VehicleState, "vehicle_state", qos.command())
        self._odom_pub = self.publisher(Odometry, "odometry/filtered", qos.command())
        inputs: list[tuple[str, Any, str, Callable[[Any, float], Any], Callable[[Any, float], Any]]] = [
            ("gnss", NavSatFix, "gnss/fix", conv.gnss_fix, lambda m, t: self._filter.update_gnss(m, t)),
            ("imu", Imu, "imu/data", conv.imu_sample, lambda m, t: self._filter.update_imu(m, t)),
            ("odom", Odometry, "odom/wheel", conv.wheel_speed, lambda m, t: self._filter.update_odom(m, t)),
            ("engine", EngineTelemetry, "engine/telemetry", conv.engine_sample, self._update_engine),
        ]
        for name, msg_type, topic, convert, update in inputs:
            self.subscription(
                msg_type, topic, self._make_callback(name, convert, update), qos.sensor(),
                input_name=name, timeout_s=params.timeout_s(name) if params.enabled(name) else 0.0,
            )
        self._start_timer(params)

    def activate(self) -> None:
        self._last_now_s = self.now_s()
        self._next_publish_s = self._last_publish_s = -math.inf

    def params_changed(self, old: FusionParams, new: FusionParams) -> None:
        self._filter.set_params(new)
        self._cache_params(new)
        now = self.now_s()
        for name in SOURCES:
            if new.enabled(name) and (not old.enabled(name) or new.timeout_s(name) != old.timeout_s(name)):
                self.health.watchdog.watch(name, new.timeout_s(name), now)
                self.get_logger().info(f"{name}: enabled, timeout {new.timeout_s(name)} s")
            elif old.enabled(name) and not new.enabled(name):
                self.health.watchdog.unwatch(name)
                self.get_logger().info(f"{name}: disabled; the filter predicts without it")
        if (new.rate_hz, new.publish_mode) != (old.rate_hz, old.publish_mode) and self._publish_timer is not None:
            self.destroy_timer(self._publish_timer)
            self._carbon_timers.remove(self._publish_timer)
            self._start_timer(new)
            self._next_publish_s = -math.inf

    def _cache_params(self, params: FusionParams) -> None:
        # Read on every message: plain attributes instead of getattr on the frozen dataclass.
        self._enabled = {name: params.enabled(name) for name in SOURCES}
        self._on_input = params.publish_mode == "input"
        self._half_period_s = 0.5 / params.rate_hz

    def _start_timer(self, params: FusionParams) -> None:
        if params.publish_mode == "timer":
            self._publish_timer = self.timer(1.0 / params.rate_hz, self._on_timer, name="publish")
        else:  # outputs follow the inputs; the timer only notices staleness and clock jumps in silence
            self._publish_timer = self.timer(max(1.0 / params.rate_hz, HOUSEKEEPING_PERIOD_S), self._housekeeping,
                                             name="housekeeping")

    # ------------------------------------------------------------------------------------------- inputs
    def _make_callback(self, name: str, convert: Callable[[Any, float], Any],
                       update: Callable[[Any, float], Any]) -> Callable[[Any], None]:
        motion = name in MOTION_SOURCES

        def callback(msg: Any) -> None:
            if not self._enabled[name]:
                return
            now = self._clock.now()
            now_s = now.nanoseconds * 1e-9
            self._check_clock(now_s)
            try:
                update(convert(msg, now_s), now_s)
            except InputRejectedError as exc:
                self._last_verdict_ok[name] = False
                self._rejected[name] += 1
                self.reject(name, exc.reason, exc.detail)
                return
            self._last_verdict_ok[name] = True
            self._last_ok_s[name] = now_s
            self.accept(name, now_s)
            # Token bucket on the publish time: on average at most rate_hz, yet input jitter of up to half a
            # period never makes a measurement wait for the next one (that would cost a whole input period).
            # And never two states within a quarter period: the IMU and odometry of one instant make one state,
            # even after a late one (measured: 3.7 % of 100 Hz ticks gave two states, the second a whole chain
            # run later, before this).
            if (motion and self._on_input and now_s >= self._next_publish_s - self._half_period_s
                    and now_s - self._last_publish_s >= 0.5 * self._half_period_s):
                self._next_publish_s = max(self._next_publish_s + 2.0 * self._half_period_s,
                                           now_s + self._half_period_s)
                self._last_publish_s = now_s
                self._publish(now, now_s)

        return callback

    def _update_engine(self, sample: Any, now_s: float) -> None:
        for channel in self._filter.update_engine(sample, now_s):
            self.reject(f"engine.{channel}", "out_of_range")

    # ------------------------------------------------------------------------------------------- output
    def _check_clock(self, now_s: float) -> None:
        if now_s < self._last_now_s - CLOCK_JUMP_S:
            self.reject("clock", "jumped_back", f"{self._last_now_s - now_s:.1f} s")
            self.filter = FusionFilter(self.params)
            self.health.watchdog.rearm(now_s)
            self._next_publish_s = self._last_publish_s = -math.inf
        self._last_now_s = now_s

    def _housekeeping(self) -> None:
        now_s = self.now_s()
        self._check_clock(now_s)
        self.poll_watchdog(now_s)

    def _on_timer(self) -> None:
        now = self._clock.now()
        now_s = now.nanoseconds * 1e-9
        self._check_clock(now_s)
        self._publish(now, now_s)

    def _publish(self, now: Any, now_s: float) -> None:
        self.poll_watchdog(now_s)
        if not self._filter.initialized:
            return  # nothing to say until a motion source has spoken
        state = self._filter.state_at(now_s)
        stamp = now.to_msg()
        p = self.params
        self._fill_sources(now_s)
        self._state_pub.publish(conv.vehicle_state(state, stamp, p.asset_id, p.world_frame, self._sources_msg,
                                                   into=self._state_msg))
        if self._odom_pub.get_subscription_count():  # for rviz and other stacks: not built when unwatched
            self._odom_pub.publish(conv.odometry(state, stamp, p.world_frame, p.base_frame, into=self._odom_msg))

    def _fill_sources(self, now_s: float) -> None:
        is_stale_input = self.health.watchdog.is_stale
        accepted = self.health.accepted_count
        for entry in self._sources_msg:
            name = entry.name
            enabled = self._enabled[name]
            is_stale = enabled and is_stale_input(name)
            last = self._last_ok_s.get(name)
            conv.fill_source_health(
                entry, enabled, is_stale, enabled and not is_stale and self._last_verdict_ok.get(name, False),
                math.inf if last is None else max(0.0, now_s - last), accepted[name], self._rejected[name],
            )

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
