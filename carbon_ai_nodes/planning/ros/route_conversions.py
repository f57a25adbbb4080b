"""PlanRoute requests, RoadCongestion reports, GridIntensity, RoutePlan, LoadSchedule, nav_msgs/Path and rviz
markers <-> the planning cores."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseStamped
from nav_msgs.msg import Path
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from carbon_ai_msgs.msg import (
    AssetSchedule,
    GridIntensity,
    LoadSchedule,
    RoadCongestion,
    RoutePlan,
    RouteStop,
    VehicleRoute,
)
from carbon_ai_nodes.common.errors import InputRejectedError, SolverError
from carbon_ai_nodes.planning.load_schedule import ScheduleProblem, ScheduleResult
from carbon_ai_nodes.planning.routing_model import RoutePlanResult, RoutingProblem, Stop, Vehicle
from carbon_ai_nodes.ros.stamps import header_stamp_s, to_time

STATUS_CODES = {
    "optimal": RoutePlan.STATUS_OPTIMAL, "feasible": RoutePlan.STATUS_FEASIBLE,
    "deadline": RoutePlan.STATUS_DEADLINE, "infeasible": RoutePlan.STATUS_INFEASIBLE,
    "error": RoutePlan.STATUS_ERROR,
}


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) and value > 0 else default


def request_to_problem(stops: list[RouteStop], vehicles: list, objective: str, default_speed_mps: float,
                       allow_dropping: bool = False) -> RoutingProblem:
    """A RoutingProblem from PlanRoute's fields. Depots are the stops vehicles start or end at; a window
    close of 0 (the message default) or +inf means "open"; a vehicle without max_speed_mps cruises at
    ``default_speed_mps``. Raises SolverError naming the bad field."""
    depot_ids = {v.start_stop_id for v in vehicles} | {v.end_stop_id for v in vehicles if v.end_stop_id}
    core_stops = []
    for i, s in enumerate(stops):
        close = s.window_close_s if s.window_close_s > 0 else math.inf
        is_depot = s.stop_id in depot_ids
        if is_depot and s.demand_kg != 0:
            raise SolverError(f"stops[{i}] ({s.stop_id}): a depot (vehicle start/end) cannot have demand_kg")
        core_stops.append(Stop(
            stop_id=s.stop_id, x_m=s.position.x, y_m=s.position.y, z_m=s.position.z, demand_kg=s.demand_kg,
            service_s=s.service_time_s, window_open_s=s.window_open_s, window_close_s=close,
            is_depot=is_depot, latitude=s.latitude, longitude=s.longitude,
        ))
    fleet = []
    for v in vehicles:
        fleet.append(Vehicle(
            vehicle_id=v.vehicle_id, capacity_kg=v.capacity_kg, start_stop_id=v.start_stop_id,
            end_stop_id=v.end_stop_id, fixed_cost=v.fixed_cost, profile=v.profile,
            cruise_speed_mps=_finite_or(v.max_speed_mps, default_speed_mps), empty_mass_kg=v.empty_mass_kg,
        ))
    return RoutingProblem(tuple(core_stops), tuple(fleet), objective=objective, allow_dropping=allow_dropping)


def congestion_from_msg(msg: RoadCongestion) -> tuple[list[tuple[str, str]], float]:
    """The arcs (from stop_id, to stop_id) a congestion report covers and their speed cap in m/s, where
    ``math.inf`` (the routing core's "no limit") means the report is cleared (``SPEED_CLEAR``).
    InputRejectedError for unusable reports; whether the stops exist is the caller's to check."""
    a, b = msg.from_stop_id, msg.to_stop_id
    if not a or not b:
        raise InputRejectedError("empty", f"from_stop_id={a!r}, to_stop_id={b!r}: both must be set")
    if a == b:
        raise InputRejectedError("out_of_range", f"from_stop_id == to_stop_id == {a!r}: not a road")
    v = msg.speed_mps
    if math.isnan(v):
        raise InputRejectedError("nan", f"speed_mps=nan on {a} -> {b}")
    if not math.isfinite(v) or v < 0:
        raise InputRejectedError("out_of_range", f"speed_mps={v} on {a} -> {b}: must be finite and >= 0")
    speed = math.inf if v == RoadCongestion.SPEED_CLEAR else float(v)
    return ([(a, b), (b, a)] if msg.bidirectional else [(a, b)]), speed


def plan_to_msg(plan: RoutePlanResult, problem: RoutingProblem | None, plan_id: str, header: Header) -> RoutePlan:
    """RoutePlan message (CO2 in kg, per-arc CO2 and speed on each stop)."""
    msg = RoutePlan(header=header, plan_id=plan_id, objective=plan.objective,
                    status=STATUS_CODES.get(plan.status, RoutePlan.STATUS_ERROR), status_message=plan.message)
    msg.expected_co2_kg = plan.co2_g / 1000.0
    msg.expected_distance_m = plan.distance_m
    msg.expected_duration_s = plan.duration_s
    msg.baseline_co2_kg = plan.baseline_co2_g / 1000.0
    msg.baseline_distance_m = plan.baseline_distance_m
    msg.solve_time_ms = plan.solve_time_s * 1000.0
    if problem is None:
        return msg
    msg.dropped_stop_ids = [problem.stops[i].stop_id for i in plan.dropped]
    for r in plan.routes:
        route = VehicleRoute(vehicle_id=problem.vehicles[r.vehicle_index].vehicle_id, distance_m=r.distance_m,
                             duration_s=r.duration_s, co2_kg=r.co2_g / 1000.0)
        for ps in r.stops:
            s = problem.stops[ps.stop_index]
            route.stops.append(RouteStop(
                stop_id=s.stop_id, position=Point(x=s.x_m, y=s.y_m, z=s.z_m), latitude=s.latitude,
                longitude=s.longitude, demand_kg=s.demand_kg, load_after_kg=ps.load_after_kg,
                service_time_s=s.service_s, window_open_s=s.window_open_s, window_close_s=s.window_close_s,
                arrival_s=ps.arrival_s, arc_distance_m=ps.arc_distance_m, arc_co2_kg=ps.arc_co2_g / 1000.0,
                arc_speed_mps=ps.arc_speed_mps,
            ))
        msg.routes.append(route)
    return msg


def plan_to_path(plan: RoutePlanResult, problem: RoutingProblem, header: Header) -> Path:
    """The first vehicle's route as a nav_msgs/Path (stop positions in visiting order)."""
    path = Path(header=header)
    if plan.routes:
        for ps in plan.routes[0].stops:
            s = problem.stops[ps.stop_index]
            pose = PoseStamped(header=header)
            pose.pose.position = Point(x=s.x_m, y=s.y_m, z=s.z_m)
            pose.pose.orientation.w = 1.0
            path.poses.append(pose)
    return path


def co2_colour(g_per_m: float, lo: float, hi: float) -> ColorRGBA:
    """Green (lowest CO2 per metre of the route, ``lo``) to red (highest, ``hi``); unknown (NaN) is green."""
    f = 0.0 if hi <= lo or not math.isfinite(g_per_m) else min(max((g_per_m - lo) / (hi - lo), 0.0), 1.0)
    return ColorRGBA(r=f, g=1.0 - f, b=0.0, a=1.0)


def stops_marker(header: Header, points: list[Point], size_m: float) -> Marker:
    """The stops of a route as one SPHERE_LIST marker of ``size_m`` (m) spheres."""
    stops = Marker(header=header, ns="route_stops", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD)
    stops.scale.x = stops.scale.y = stops.scale.z = size_m
    stops.pose.orientation.w = 1.0
    stops.color = ColorRGBA(r=0.1, g=0.4, b=1.0, a=1.0)
    stops.points = points
    return stops


def plan_to_markers(plan: RoutePlanResult, problem: RoutingProblem, header: Header) -> MarkerArray:
    """rviz markers: one LINE_LIST per vehicle coloured by CO2 per metre of each arc, and the stops."""
    out = MarkerArray()
    out.markers.append(Marker(header=header, ns="route_co2", action=Marker.DELETEALL))
    rates = [ps.arc_co2_g / ps.arc_distance_m for r in plan.routes for ps in r.stops[1:] if ps.arc_distance_m > 0]
    lo, hi = (min(rates), max(rates)) if rates else (0.0, 0.0)
    for k, r in enumerate(plan.routes):
        m = Marker(header=header, ns="route_co2", id=k, type=Marker.LINE_LIST, action=Marker.ADD)
        m.scale.x = 2.0
        m.pose.orientation.w = 1.0
        for a, b in zip(r.stops, r.stops[1:], strict=False):
            sa, sb = problem.stops[a.stop_index], problem.stops[b.stop_index]
            colour = co2_colour(b.arc_co2_g / b.arc_distance_m if b.arc_distance_m > 0 else lo, lo, hi)
            m.points += [Point(x=sa.x_m, y=sa.y_m, z=sa.z_m), Point(x=sb.x_m, y=sb.y_m, z=sb.z_m)]
            m.colors += [colour, colour]
        out.markers.append(m)
    out.markers.append(stops_marker(header, [Point(x=s.x_m, y=s.y_m, z=s.z_m) for s in problem.stops], 6.0))
    return out


def forecast_from_msg(msg: GridIntensity) -> tuple[float, float, list[float]]:
    """(forecast start s, step s, gCO2/kWh values); InputRejectedError for unusable forecasts (and an unset,
    negative or malformed forecast_start: ``bad_stamp``)."""
    values = list(msg.forecast_gco2_per_kwh)
    if not values:
        raise InputRejectedError("empty", "forecast has no values")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise InputRejectedError("nan", "forecast values must be finite and >= 0")
    if not (math.isfinite(msg.forecast_step_s) and msg.forecast_step_s > 0):
        raise InputRejectedError("out_of_range", f"forecast_step_s={msg.forecast_step_s}")
    start_s = header_stamp_s(msg.forecast_start)  # the stamp rule of every node: negative is bad_stamp
    if start_s is None:
        raise InputRejectedError("bad_stamp", "forecast_start not set")
    return start_s, float(msg.forecast_step_s), values


def current_intensity_from_msg(msg: GridIntensity) -> float:
    """The grid intensity now (gCO2/kWh) that electric vehicles' arcs are costed at; InputRejectedError when it
    is NaN, infinite or negative."""
    v = msg.gco2_per_kwh
    if math.isnan(v):
        raise InputRejectedError("nan", "gco2_per_kwh=nan")
    if not math.isfinite(v) or v < 0:
        raise InputRejectedError("out_of_range", f"gco2_per_kwh={v}: must be finite and >= 0")
    return float(v)


def schedule_to_msg(result: ScheduleResult, problem: ScheduleProblem, plan_id: str, header: Header,
                    start_s: float) -> LoadSchedule:
    """LoadSchedule message: per-asset setpoints per slot, expected and baseline CO2."""
    status = {"optimal": LoadSchedule.STATUS_OPTIMAL, "feasible": LoadSchedule.STATUS_FEASIBLE,
              "deadline": LoadSchedule.STATUS_DEADLINE, "infeasible": LoadSchedule.STATUS_INFEASIBLE}
    msg = LoadSchedule(header=header, plan_id=plan_id, slot_s=problem.slot_s,
                       expected_co2_kg=result.co2_kg, baseline_co2_kg=result.baseline_co2_kg,
                       solve_time_ms=result.solve_time_s * 1000.0,
                       status=status.get(result.status, LoadSchedule.STATUS_ERROR), status_message=result.message)
    msg.start = to_time(start_s) if start_s > 0 else Time()
    for a in problem.assets:
        power = result.asset_power_kw.get(a.asset_id)
        values = [float(v) for v in power] if power is not None else []
        msg.assets.append(AssetSchedule(asset_id=a.asset_id, max_power_kw=a.max_power_kw, power_kw=values,
                                        energy_kwh=sum(values) * problem.slot_s / 3600.0))
    return msg
