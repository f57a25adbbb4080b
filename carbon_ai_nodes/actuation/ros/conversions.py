"""Actuator bridge messages <-> safety-envelope dataclasses, with input validation.

Every reader raises :class:`InputRejectedError` with a short reason key (``nan``, ``out_of_range``,
``stale``, ``future_stamp``, ``out_of_order``, ``bad_stamp``, ``other_asset``, ``no_route_for_asset``,
``oversize``, ...) that the node counts on /diagnostics. Stamps follow conversions.time.header_stamp_s (None =
never set). Plans are size-checked before any work that grows with their size. Writers never emit NaN or inf.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist
from rclpy.serialization import deserialize_message

from carbon_ai_msgs.msg import (
    ActuatorCommand,
    ActuatorStatus,
    CarbonEstimate,
    LoadSchedule,
    ManualOverride,
    RoutePlan,
    VehicleState,
)
from carbon_ai_nodes.actuation.actuation_targets import PowerSchedule, RouteTrack
from carbon_ai_nodes.actuation.safety_envelope import (
    ActuatorBridgeParams,
    Command,
    Mode,
    Setpoint,
    motion_sources_problem,
)
from carbon_ai_nodes.common.carbon_estimate_rules import check_co2_rates
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.vehicle_state_rules import check_vehicle_state
from carbon_ai_nodes.fusion.fusion_params import MOTION_SOURCES
from carbon_ai_nodes.ros.stamps import header_stamp_s, to_time

_USABLE_PLAN = (RoutePlan.STATUS_OPTIMAL, RoutePlan.STATUS_FEASIBLE, RoutePlan.STATUS_DEADLINE)
# Local ENU positions farther than this from the datum (m) are nonsense, and their squares overflow.
MAX_LOCAL_OFFSET_M = 1e7


def check_stamp(stamp_s: float, now_s: float, last_stamp_s: float | None, max_age_s: float) -> float:
    """Refuse a message stamp that is too old, from the future, or older than the last accepted one (s)."""
    if max_age_s > 0:
        age_s = now_s - stamp_s
        if age_s > max_age_s:
            raise InputRejectedError("stale", f"stamp {age_s:.2f} s old > {max_age_s:g} s")
        if age_s < -max_age_s:
            raise InputRejectedError("future_stamp", f"stamp {-age_s:.2f} s ahead of the clock")
    if last_stamp_s is not None and stamp_s < last_stamp_s:
        raise InputRejectedError("out_of_order", f"stamp {last_stamp_s - stamp_s:.3f} s before the last one")
    return stamp_s


def _check_asset(msg_asset: str, asset_id: str) -> None:
    if asset_id and msg_asset and msg_asset != asset_id:
        raise InputRejectedError("other_asset", f"{msg_asset!r} is not {asset_id!r}")


def _finite(name: str, *values: float) -> None:
    for v in values:
        if math.isnan(v):
            raise InputRejectedError("nan", name)
        if math.isinf(v):
            raise InputRejectedError("inf", name)


def vehicle_position(msg: VehicleState, asset_id: str,
                     require_motion_source: bool = True) -> tuple[float | None, float, float]:
    """(stamp_s, east_m, north_m) of a VehicleState for this asset: it must pass the VehicleState rule
    (core.vehicle_state_rules) with position and speed required, lie within MAX_LOCAL_OFFSET_M of the datum, and
    (with ``require_motion_source``) a motion source must be healthy (core.safety_envelope.motion_sources_problem)."""
    _check_asset(msg.asset_id, asset_id)
    check_vehicle_state(msg, ("speed_mps", "east_m", "north_m"))
    if max(abs(msg.east_m), abs(msg.north_m)) > MAX_LOCAL_OFFSET_M:
        raise InputRejectedError("out_of_range", f"east_m={msg.east_m}, north_m={msg.north_m}")
    if require_motion_source and msg.sources:
        reason = motion_sources_problem((s.name, s.enabled, s.healthy) for s in msg.sources)
        if reason:
            detail = ", ".join(f"{s.name} {'stale' if s.stale else 'unhealthy' if s.enabled else 'off'}"
                               for s in msg.sources if s.name in MOTION_SOURCES)
            raise InputRejectedError(reason, detail)
    return header_stamp_s(msg.header.stamp), msg.east_m, msg.north_m


def co2_rate(msg: CarbonEstimate, asset_id: str) -> tuple[float | None, float]:
    """(stamp_s, co2_rate_g_s) of a CarbonEstimate for this asset (common.carbon_estimate_rules: finite, negative
    while an electric drive regenerates)."""
    _check_asset(msg.asset_id, asset_id)
    check_co2_rates(msg.co2_rate_g_s, msg.physics_co2_rate_g_s)
    return header_stamp_s(msg.header.stamp), msg.co2_rate_g_s


def _entry_for(msg: RoutePlan | LoadSchedule, entries: Any, id_field: str, wanted: str, what: str,
               reason: str) -> Any:
    """The one entry (``what``: routes, schedules) of a usable plan or schedule whose ``id_field`` is ``wanted``
    (the only entry when ``wanted`` is empty)."""
    if msg.status not in _USABLE_PLAN:
        raise InputRejectedError("plan_status", f"status {msg.status}: {msg.status_message}")
    matching = [e for e in entries if getattr(e, id_field) == wanted] if wanted else list(entries)
    if len(matching) != 1:
        raise InputRejectedError(reason, f"{len(matching)} {what} match {wanted!r}")
    return matching[0]


def plan_message(data: bytes, msg_type: Any, max_bytes: int) -> Any:
    """A route_plan / load_schedule message from its serialised bytes, refused (``oversize``) above
    ``max_bytes`` before deserialising: turning 100,000 stops into Python objects alone takes seconds."""
    if len(data) > max_bytes:
        raise InputRejectedError("oversize", f"{len(data)} B > plan_max_bytes={max_bytes}")
    try:
        return deserialize_message(data, msg_type)
    except Exception as exc:  # whatever the type support raises, the verdict is "malformed"
        raise InputRejectedError("malformed", f"{type(exc).__name__}: {exc}") from exc


def route_track(msg: RoutePlan, vehicle_id: str, max_stops: int | None = None) -> RouteTrack:
    """This vehicle's route of a RoutePlan (the only route if ``vehicle_id`` is empty); more than ``max_stops``
    stops (None = no limit) is refused as ``oversize``."""
    stops = _entry_for(msg, msg.routes, "vehicle_id", vehicle_id, "routes", "no_route_for_asset").stops
    if not stops:
        raise InputRejectedError("empty_route", msg.plan_id)
    if max_stops is not None and len(stops) > max_stops:
        raise InputRejectedError("oversize", f"{len(stops)} stops > route_max_stops={max_stops}")
    east = np.array([s.position.x for s in stops], dtype=float)
    north = np.array([s.position.y for s in stops], dtype=float)
    if not (np.all(np.isfinite(east)) and np.all(np.isfinite(north))):
        raise InputRejectedError("nan", "stop position")
    if max(np.abs(east).max(), np.abs(north).max()) > MAX_LOCAL_OFFSET_M:
        raise InputRejectedError("out_of_range", f"stop position beyond {MAX_LOCAL_OFFSET_M:g} m of the datum")
    speed = np.array([s.arc_speed_mps for s in stops], dtype=float)
    speed[~np.isfinite(speed) | (speed <= 0)] = math.nan  # no usable advice on that arc
    return RouteTrack(msg.plan_id, east, north, speed)


def power_schedule(msg: LoadSchedule, params: ActuatorBridgeParams) -> PowerSchedule:
    """This asset's (``params.asset_id``; the only asset if empty) power slots of a LoadSchedule.

    Refused: a slot length that is not finite or outside [schedule_min_slot_s, schedule_max_slot_s] (a denormal
    one made every control tick raise), more than ``schedule_max_slots`` slots (``oversize``), a start that is
    no valid time (``bad_stamp``), a non-finite power."""
    mine = _entry_for(msg, msg.assets, "asset_id", params.asset_id, "schedules", "no_schedule_for_asset")
    _finite("slot_s", msg.slot_s)
    if not params.schedule_min_slot_s <= msg.slot_s <= params.schedule_max_slot_s:
        raise InputRejectedError("out_of_range", f"slot_s={msg.slot_s!r} outside [schedule_min_slot_s, "
                                                 f"schedule_max_slot_s] = [{params.schedule_min_slot_s:g}, "
                                                 f"{params.schedule_max_slot_s:g}] s")
    if len(mine.power_kw) > params.schedule_max_slots:
        raise InputRejectedError("oversize", f"{len(mine.power_kw)} slots > "
                                             f"schedule_max_slots={params.schedule_max_slots}")
    start_s = header_stamp_s(msg.start)
    power = tuple(float(v) for v in mine.power_kw)
    _finite("power_kw", *power)
    return PowerSchedule(msg.plan_id, 0.0 if start_s is None else start_s, msg.slot_s, power)


def manual_override(msg: ManualOverride) -> tuple[float | None, bool, Setpoint]:
    """(stamp_s, active, setpoint); NaN fields mean "the safe value", inf is refused."""
    values = (msg.speed_limit_mps, msg.engine_load_limit_pct, msg.power_setpoint_kw)
    if any(math.isinf(v) for v in values):
        raise InputRejectedError("inf", "manual_override setpoint")
    return header_stamp_s(msg.header.stamp), msg.active, Setpoint(*values)


def _finite_out(value: float) -> float:
    # The envelope already guarantees this; a message leaving the node must never carry NaN/inf regardless.
    return value if math.isfinite(value) else 0.0


def actuator_command(cmd: Command, stamp: Time, asset_id: str, into: ActuatorCommand | None = None) -> ActuatorCommand:
    """The ActuatorCommand of one envelope step; refills ``into`` when given (a publisher serialises
    synchronously, so one message object can serve every publish)."""
    msg = ActuatorCommand() if into is None else into
    msg.header.stamp = stamp
    msg.asset_id = asset_id
    msg.mode = int(cmd.mode)
    msg.speed_limit_mps = _finite_out(cmd.setpoint.speed_limit_mps)
    msg.engine_load_limit_pct = _finite_out(cmd.setpoint.engine_load_limit_pct)
    msg.power_setpoint_kw = _finite_out(cmd.setpoint.power_setpoint_kw)
    msg.plan_id = cmd.plan_id
    msg.reason = cmd.reason
    return msg


def speed_cap_twist(cmd: Command) -> Twist:
    """geometry_msgs/Twist speed cap for autonomy stacks: linear.x = the speed limit (m/s), 0 in ESTOP."""
    twist = Twist()
    twist.linear.x = 0.0 if cmd.mode == Mode.ESTOP else _finite_out(cmd.setpoint.speed_limit_mps)
    return twist


def actuator_status(cmd: Command, stamp: Time, asset_id: str, since_s: float, stale: list[str],
                    invalid: list[str], estop_latched: bool) -> ActuatorStatus:
    """The bridge's mode and why."""
    msg = ActuatorStatus(
        asset_id=asset_id, mode=int(cmd.mode), mode_name=cmd.mode.name, reason=cmd.reason,
        stale_inputs=stale, invalid_inputs=invalid, estop_latched=estop_latched,
    )
    msg.header.stamp = stamp
    msg.since = to_time(since_s)
    return msg
