"""Eco speed profile (planning/eco_speed.EcoProfile) -> RoutePlan for the actuator bridge, nav_msgs/Path and a
MarkerArray coloured by predicted CO2 per metre for rviz."""

from __future__ import annotations

import math

from geometry_msgs.msg import Point, PoseStamped
from nav_msgs.msg import Path
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from carbon_ai_msgs.msg import RoutePlan, RouteStop, VehicleRoute
from carbon_ai_nodes.planning.eco_speed import EcoProfile
from carbon_ai_nodes.planning.ros.route_conversions import co2_colour, stops_marker


def eco_plan(profile: EcoProfile, vehicle_id: str, plan_id: str, header: Header, with_advice: bool) -> RoutePlan:
    """A one-vehicle RoutePlan whose stops are the route points, each with the speed cap of the stretch
    arriving at it (``arc_speed_mps``; NaN everywhere when ``with_advice`` is false) and, for stops, the
    predicted loop CO2 with (expected) and without (baseline) the caps."""
    pts = profile.points
    used = profile.eco if with_advice else profile.baseline
    msg = RoutePlan(header=header, plan_id=plan_id, objective=RoutePlan.OBJECTIVE_CO2 if with_advice else
                    RoutePlan.OBJECTIVE_TIME, status=RoutePlan.STATUS_FEASIBLE,
                    status_message=f"fixed route, eco floor {profile.floor_mps:.1f} m/s, baseline lap "
                    f"{profile.baseline.time_s:.1f} s" if with_advice else "fixed route, no speed advice")
    msg.expected_co2_kg = used.co2_g / 1000.0
    msg.expected_distance_m = used.distance_m
    msg.expected_duration_s = used.time_s
    msg.baseline_co2_kg = profile.baseline.co2_g / 1000.0
    msg.baseline_distance_m = profile.baseline.distance_m
    route = VehicleRoute(vehicle_id=vehicle_id, distance_m=used.distance_m, duration_s=used.time_s,
                         co2_kg=used.co2_g / 1000.0)
    for i in range(len(pts.s_m)):
        arc = pts.s_m[i] - pts.s_m[i - 1] if i > 0 else 0.0
        per_m = profile.co2_g_per_m[i]
        speed = float(profile.speed_cap_mps[i]) if with_advice else math.nan
        route.stops.append(RouteStop(
            stop_id=f"p{i}", position=Point(x=float(pts.east_m[i]), y=float(pts.north_m[i]), z=float(pts.up_m[i])),
            latitude=math.nan, longitude=math.nan, load_after_kg=float(pts.payload_kg[i]),
            window_open_s=0.0, window_close_s=math.inf, arrival_s=math.nan, arc_distance_m=float(arc),
            arc_co2_kg=float(per_m * arc / 1000.0) if math.isfinite(per_m) else 0.0,
            # a cap of 0 would read as "no advice" at the bridge; the stop itself is the vehicle's to make
            arc_speed_mps=speed if speed > 0 else math.nan,
        ))
    msg.routes.append(route)
    return msg


def eco_path(profile: EcoProfile, header: Header) -> Path:
    """The route points as a nav_msgs/Path."""
    path = Path(header=header)
    pts = profile.points
    for i in range(len(pts.s_m)):
        pose = PoseStamped(header=header)
        pose.pose.position = Point(x=float(pts.east_m[i]), y=float(pts.north_m[i]), z=float(pts.up_m[i]))
        pose.pose.orientation.w = 1.0
        path.poses.append(pose)
    return path


def eco_markers(profile: EcoProfile, header: Header) -> MarkerArray:
    """rviz: the route as a LINE_LIST coloured green (lowest predicted CO2 per metre) to red (highest), and the
    load/dump stops as spheres."""
    pts = profile.points
    out = MarkerArray()
    out.markers.append(Marker(header=header, ns="route_co2", action=Marker.DELETEALL))
    rates = [r for r in profile.co2_g_per_m if math.isfinite(r)]
    lo, hi = (min(rates), max(rates)) if rates else (0.0, 0.0)
    line = Marker(header=header, ns="route_co2", id=0, type=Marker.LINE_LIST, action=Marker.ADD)
    line.scale.x = 4.0
    line.pose.orientation.w = 1.0
    for i in range(1, len(pts.s_m)):
        colour = co2_colour(profile.co2_g_per_m[i], lo, hi)
        line.points += [Point(x=float(pts.east_m[i - 1]), y=float(pts.north_m[i - 1]), z=float(pts.up_m[i - 1])),
                        Point(x=float(pts.east_m[i]), y=float(pts.north_m[i]), z=float(pts.up_m[i]))]
        line.colors += [colour, colour]
    out.markers.append(line)
    out.markers.append(stops_marker(header, [Point(x=float(pts.east_m[i]), y=float(pts.north_m[i]),
                                                   z=float(pts.up_m[i]))
                                             for i in range(len(pts.s_m) - 1) if pts.is_stop[i]], 15.0))
    return out
