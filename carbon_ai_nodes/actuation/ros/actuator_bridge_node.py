"""actuator_bridge: turns plans and estimates into safe setpoints, with a watchdog, e-stop and manual override.

Subscribes ``route_plan``, ``load_schedule`` (latched), ``carbon_estimate``, ``vehicle_state``,
``manual_override`` (reliable) and ``estop`` (std_msgs/Bool, reliable); publishes ``actuator_command``
(ActuatorCommand) at ``control_rate_hz`` whatever the inputs do, ``cmd_vel_limit`` (geometry_msgs/Twist
speed cap) with it while anything subscribes to it, and ``actuator_status`` (latched) on every mode change and
every ``status_period_s``.
Service ``reset_estop`` (std_srvs/Trigger) clears a latched e-stop. The rules live in
``actuation/safety_envelope.py``; how plans become targets in ``actuation/actuation_targets.py``.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from geometry_msgs.msg import Twist
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from carbon_ai_msgs.msg import (
    ActuatorCommand,
    ActuatorStatus,
    CarbonEstimate,
    LoadSchedule,
    ManualOverride,
    RoutePlan,
    VehicleState,
)
from carbon_ai_nodes.actuation.actuation_targets import PowerSchedule, RouteFollower, co2_tightened_load_pct
from carbon_ai_nodes.actuation.ros import conversions as actuation
from carbon_ai_nodes.actuation.safety_envelope import ActuatorBridgeParams, Command, Mode, SafetyEnvelope, Setpoint
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.health import ERROR, OK, WARN
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, configured, run_node

# Rejections that say nothing about the input's health (a late duplicate, another vehicle's message, a
# skewed stamp): counted and ignored. The watchdog still catches an input that only ever sends such messages.
_IGNORED_REASONS = frozenset({"other_asset", "out_of_order", "stale", "future_stamp"})


class ActuatorBridge(CarbonNode[ActuatorBridgeParams]):
    """Thin node around :class:`SafetyEnvelope`: validates inputs, runs the control timer, publishes."""

    def __init__(self) -> None:
        super().__init__("actuator_bridge", ActuatorBridgeParams)
        self.envelope: SafetyEnvelope | None = None
        self._reset_srv: Any = None
        self._subs: dict[str, Any] = {}
        self._last_stamp_s: dict[str, float] = {}
        self._follower: RouteFollower | None = None
        self._schedule: PowerSchedule | None = None
        self._route_speed_mps: float | None = None
        self._position: tuple[float, float] | None = None
        self._co2_g_s: float | None = None
        self._last_cmd: Command | None = None
        self._fault = ""  # exception type of the control target's current internal fault ("" = none)
        self._mode_changes: Counter[str] = Counter()
        self._commands_published = 0
        self._no_publisher: set[str] = set()
        self._cmd_msg = ActuatorCommand()

    @property
    def _env(self) -> SafetyEnvelope:
        """The envelope configure built (the callbacks run only while configured)."""
        return configured(self.envelope, "actuator_bridge envelope")

    # ------------------------------------------------------------------ lifecycle
    def configure(self, params: ActuatorBridgeParams) -> None:
        self.envelope = SafetyEnvelope(params, self.now_s())
        self._cmd_pub = self.publisher(ActuatorCommand, "actuator_command", qos.command())
        self._twist_pub = self.publisher(Twist, "cmd_vel_limit", qos.command())
        self._status_pub = self.publisher(ActuatorStatus, "actuator_status", qos.latched())
        self._subs = {
            "vehicle_state": self.subscription(
                VehicleState, "vehicle_state", self._on_vehicle_state, qos.command(),
                input_name="vehicle_state", timeout_s=params.vehicle_state_timeout_s),
            "carbon_estimate": self.subscription(
                CarbonEstimate, "carbon_estimate", self._on_carbon_estimate, qos.command(),
                input_name="carbon_estimate", timeout_s=params.carbon_estimate_timeout_s),
            # Plans arrive serialised: an oversize one is refused before it is turned into Python objects.
            "route_plan": self.subscription(
                RoutePlan, "route_plan", self._on_route_plan, qos.latched(),
                input_name="route_plan", timeout_s=params.route_plan_timeout_s, raw=True),
            "load_schedule": self.subscription(
                LoadSchedule, "load_schedule", self._on_load_schedule, qos.latched(),
                input_name="load_schedule", timeout_s=params.load_schedule_timeout_s, raw=True),
        }
        self.subscription(ManualOverride, "manual_override", self._on_manual_override, qos.command(),
                          input_name="manual_override")
        self.subscription(Bool, "estop", self._on_estop, qos.command(), input_name="estop",
                          timeout_s=params.estop_heartbeat_timeout_s)
        self.timer(1.0 / params.control_rate_hz, self._control, name="control")
        self.timer(params.status_period_s, self._publish_status, name="status")
        if params.liveliness_check_period_s > 0:
            self.timer(params.liveliness_check_period_s, self._check_liveliness, name="liveliness")
        self._reset_srv = self.create_service(Trigger, "reset_estop", self._on_reset_estop)

    def activate(self) -> None:
        self._control()

    def deactivate(self) -> None:
        """Leave the actuator on the safe setpoint (or stopped, if the e-stop is latched) before going quiet."""
        if self.envelope is not None:
            self._publish(self.envelope.hold_safe(self.now_s(), "bridge deactivating"))

    def cleanup(self) -> None:
        if self._reset_srv is not None:
            self.destroy_service(self._reset_srv)
            self._reset_srv = None
        self.envelope = None
        self._follower = self._schedule = None
        self._last_stamp_s.clear()
        self._fault = ""

    def params_changed(self, old: ActuatorBridgeParams, new: ActuatorBridgeParams) -> None:
        if self.envelope is not None:
            self.envelope.update_params(new)
        now_s = self.now_s()
        for name in self._subs:
            self.health.watchdog.watch(name, new.timeout_s(name), now_s)
        self.health.watchdog.watch("estop", new.estop_heartbeat_timeout_s, now_s)
        self._refresh_target()

    # ------------------------------------------------------------------ inputs
    def _stamp_ok(self, name: str, stamp_s: float | None, now_s: float | None = None) -> None:
        # None: never stamped (e.g. `ros2 topic pub`), judged by arrival time only. A negative or malformed
        # stamp was already refused as bad_stamp (conversions.time.header_stamp_s).
        if stamp_s is not None:
            actuation.check_stamp(stamp_s, self.now_s() if now_s is None else now_s, self._last_stamp_s.get(name),
                                  self.params.max_input_age_s)
            self._last_stamp_s[name] = stamp_s

    def _rejected(self, name: str, exc: InputRejectedError) -> None:
        self.reject(name, exc.reason, exc.detail)
        if exc.reason not in _IGNORED_REASONS and name in self._subs:
            self._env.input_invalid(name, exc.reason)

    def _accepted(self, name: str, now_s: float | None = None) -> None:
        now_s = self.now_s() if now_s is None else now_s
        self.accept(name, now_s)
        if name in self._subs:
            self._env.input_ok(name, now_s)

    def _on_vehicle_state(self, msg: VehicleState) -> None:
        now_s = self._clock.now().nanoseconds * 1e-9  # read once: this runs at the state rate
        try:
            stamp_s, east_m, north_m = actuation.vehicle_position(msg, self.params.asset_id,
                                                                  self.params.require_motion_source)
            self._stamp_ok("vehicle_state", stamp_s, now_s)
        except InputRejectedError as exc:
            self._rejected("vehicle_state", exc)
            return
        self._accepted("vehicle_state", now_s)
        self._position = (east_m, north_m)
        self._refresh_target(now_s, route=True)  # no event publish: the state stream is fast; the timer follows

    def _on_carbon_estimate(self, msg: CarbonEstimate) -> None:
        # The latency path (sensor -> fusion -> inference -> here -> command): the clock is read once.
        now = self._clock.now()
        now_s = now.nanoseconds * 1e-9
        try:
            stamp_s, co2_g_s = actuation.co2_rate(msg, self.params.asset_id)
            self._stamp_ok("carbon_estimate", stamp_s, now_s)
        except InputRejectedError as exc:
            self._rejected("carbon_estimate", exc)
            return
        self._accepted("carbon_estimate", now_s)
        self._co2_g_s = co2_g_s
        self._input_event(now)

    def _on_route_plan(self, data: bytes) -> None:
        p = self.params
        try:
            msg = actuation.plan_message(data, RoutePlan, p.plan_max_bytes)
            track = actuation.route_track(msg, p.asset_id, p.route_max_stops)
        except InputRejectedError as exc:
            self._follower = None  # a refused newer plan obsoletes the old one: cruise limit until a good one
            self._route_speed_mps = None
            self._rejected("route_plan", exc)
            self._input_event()
            return
        self._accepted("route_plan")
        # A re-sent plan keeps the progress along it: restarting the search at a stop where two lanes meet
        # could pick the wrong lane for one update.
        if self._follower is None or not self._follower.track.same_route(track):
            self._follower = RouteFollower(track)
        self._input_event(route=True)

    def _on_load_schedule(self, data: bytes) -> None:
        try:
            msg = actuation.plan_message(data, LoadSchedule, self.params.plan_max_bytes)
            schedule = actuation.power_schedule(msg, self.params)
        except InputRejectedError as exc:
            self._schedule = None
            self._rejected("load_schedule", exc)
            self._input_event()
            return
        self._accepted("load_schedule")
        self._schedule = schedule
        self._input_event()

    def _on_manual_override(self, msg: ManualOverride) -> None:
        try:
            stamp_s, active, setpoint = actuation.manual_override(msg)
            self._stamp_ok("manual_override", stamp_s)
        except InputRejectedError as exc:
            self._rejected("manual_override", exc)
            return
        self._accepted("manual_override")
        self._env.set_override(active, setpoint, self.now_s())
        self._input_event()

    def _on_estop(self, msg: Bool) -> None:
        self._accepted("estop")
        self._env.set_estop(bool(msg.data), self.now_s())
        if msg.data or self.params.publish_on_input:
            self._control()  # e-stop never waits for the next tick

    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.envelope is None or not self.is_active:
            response.success, response.message = False, "bridge not active"
            return response
        try:
            response.success, response.message = self.envelope.reset_estop(self.now_s())
        except Exception as exc:  # noqa: BLE001 - a service callback must answer, never raise
            self.health.internal_error("reset_estop")
            response.success, response.message = False, f"internal error: {exc}"
            return response
        log = self.get_logger().info if response.success else self.get_logger().warning
        log(f"reset_estop: {response.message}")
        if response.success:
            self._control()
        return response

    # ------------------------------------------------------------------ targets and control
    def _update_route_speed(self) -> None:
        p = self.params
        if self._follower is None or self._position is None:
            self._route_speed_mps = None
            return
        self._route_speed_mps = self._follower.speed_limit_mps(
            *self._position, p.cruise_speed_limit_mps, p.route_max_offset_m)

    def _update_target(self, now_s: float | None = None) -> None:
        p = self.params
        env = self._env
        now_s = self.now_s() if now_s is None else now_s
        speed = self._route_speed_mps if self._route_speed_mps is not None else p.cruise_speed_limit_mps
        load = p.engine_load_limit_pct
        if self._co2_g_s is not None and env.input_fresh("carbon_estimate", now_s):
            load = co2_tightened_load_pct(load, self._co2_g_s, p.co2_limit_g_s, p.co2_min_load_pct)
        power = self._schedule.power_at(now_s, p.default_power_kw) if self._schedule else p.default_power_kw
        plan_ids = []
        if self._follower is not None:
            plan_ids.append(self._follower.track.plan_id)
        if self._schedule is not None and self._schedule.plan_id not in plan_ids:
            plan_ids.append(self._schedule.plan_id)
        env.set_target(Setpoint(speed, load, power), ",".join(plan_ids))

    def _refresh_target(self, now_s: float | None = None, route: bool = False) -> None:
        """Recompute the AUTO target (and, with ``route``, the route speed). Never raises: an exception is an
        internal fault that holds the envelope in SAFE_FALLBACK until a target computes again (logged once
        per state change, every occurrence counted on /diagnostics as internal_errors.control_target)."""
        try:
            if route:
                self._update_route_speed()
            self._update_target(now_s)
        except Exception as exc:  # noqa: BLE001 - the control path must command the safe state, not go silent
            self.health.internal_error("control_target")
            if not self._fault:
                self.get_logger().error(f"control target: {type(exc).__name__}: {exc}; holding the safe setpoint")
            self._fault = type(exc).__name__
            self._env.set_internal_fault(f"{type(exc).__name__}: {exc}")
            return
        if self._fault:
            self.get_logger().info(f"control target computes again (after {self._fault})")
            self._fault = ""
            self._env.set_internal_fault("")

    def _input_event(self, now: Any = None, route: bool = False) -> None:
        """An input changed: new target (with ``route``, a new route speed first), command at once if wanted."""
        if route or not self.params.publish_on_input:
            self._refresh_target(route=route)
        if self.params.publish_on_input:
            self._control(now)  # refreshes the target itself

    def _control(self, now: Any = None) -> None:
        """One envelope step and its command, whatever fails on the way; ``now`` (rclpy Time) if the caller
        already read the clock."""
        if self.envelope is None:
            return
        now = self._clock.now() if now is None else now
        now_s = now.nanoseconds * 1e-9
        self.poll_watchdog(now_s)
        self._refresh_target(now_s)  # power slots and CO2 freshness move with time, not only with inputs
        try:
            cmd = self.envelope.step(now_s)
        except Exception as exc:  # noqa: BLE001 - a broken envelope still owes the actuator a safe command
            if self.health.internal_error("control_step"):
                self.get_logger().error(f"control step: {type(exc).__name__}: {exc}; commanding the safe setpoint")
            p = self.params
            cmd = Command(Mode.SAFE_FALLBACK, Setpoint(p.safe_speed_limit_mps, p.safe_engine_load_limit_pct,
                                                       p.safe_power_setpoint_kw),
                          "", f"internal error ({type(exc).__name__})", False, Mode.SAFE_FALLBACK)
        self._publish(cmd, now)

    def _publish(self, cmd: Command, now: Any = None) -> None:
        stamp = (self._clock.now() if now is None else now).to_msg()
        asset_id = self.params.asset_id
        # One message object refilled per command: publish() serialises synchronously.
        self._cmd_pub.publish(actuation.actuator_command(cmd, stamp, asset_id, into=self._cmd_msg))
        if self._twist_pub.get_subscription_count():  # a speed cap for autonomy stacks: skipped when unwatched
            self._twist_pub.publish(actuation.speed_cap_twist(cmd))
        self._commands_published += 1
        self._last_cmd = cmd
        if cmd.mode_changed:
            self._on_mode_change(cmd)

    def _on_mode_change(self, cmd: Command) -> None:
        self._mode_changes[f"{cmd.previous_mode.name}->{cmd.mode.name}"] += 1
        text = f"mode {cmd.previous_mode.name} -> {cmd.mode.name}: {cmd.reason}"
        if cmd.mode == Mode.ESTOP:
            self.get_logger().error(text)
            self.health.set_status(ERROR, f"ESTOP latched: {cmd.reason}")
        elif cmd.mode == Mode.SAFE_FALLBACK:
            self.get_logger().warning(text)
            self.health.set_status(WARN, f"SAFE_FALLBACK: {cmd.reason}")
        else:
            self.get_logger().info(text)
            self.health.set_status(OK, "" if cmd.mode == Mode.AUTO else cmd.mode.name)
        self._publish_status()

    def _publish_status(self) -> None:
        env = self.envelope
        if env is None or self._last_cmd is None:
            return
        now_s = self.now_s()
        if env.mode == Mode.SAFE_FALLBACK:  # keep the diagnostics message in step with the current reason
            self.health.set_status(WARN, f"SAFE_FALLBACK: {self._last_cmd.reason}")
        self._status_pub.publish(actuation.actuator_status(
            self._last_cmd, self.get_clock().now().to_msg(), self.params.asset_id, env.mode_since_s,
            env.stale_inputs(now_s), env.invalid_inputs(), env.estop_latched))

    def _check_liveliness(self) -> None:
        """Upstream liveliness: a required input whose publishers all left is unhealthy at once."""
        for name in self.params.required_inputs:
            count = self.count_publishers(self._subs[name].topic_name)
            self._env.input_publishers(name, count)
            if count == 0 and name not in self._no_publisher:
                self._no_publisher.add(name)
                self.get_logger().warning(f"{name}: no publisher on {self._subs[name].topic_name}")
            elif count > 0 and name in self._no_publisher:
                self._no_publisher.discard(name)
                self.get_logger().info(f"{name}: publisher back")

    def diagnostics_values(self) -> dict[str, str]:
        env = self.envelope
        values = {f"mode_changes.{k}": str(v) for k, v in sorted(self._mode_changes.items())}
        values["commands_published"] = str(self._commands_published)
        if env is not None:
            values["mode"] = env.mode.name
            values["reason"] = env.reason
            values["estop_latched"] = str(env.estop_latched).lower()
            if self._no_publisher:
                values["no_publisher"] = ", ".join(sorted(self._no_publisher))
        return values


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes actuator_bridge``."""
    sys.exit(run_node(ActuatorBridge, args))


if __name__ == "__main__":
    main()
