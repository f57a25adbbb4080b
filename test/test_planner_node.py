"""The planner node as its own process over real DDS: route requests, warm-started replans (stops changed,
roads congested, grid intensity changed for electric vehicles), the load schedule on a grid forecast, rviz
outputs, and refusal of bad requests, congestion reports, forecasts and parameters."""

from __future__ import annotations

import math

import pytest
from builtin_interfaces.msg import Time
from conftest import REPO
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point
from nav_msgs.msg import Path
from visualization_msgs.msg import MarkerArray

from carbon_ai_msgs.msg import GridIntensity, LoadSchedule, RoadCongestion, RoutePlan, RouteStop, VehicleSpec
from carbon_ai_msgs.srv import PlanRoute
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos

JOBS = str(REPO / "config" / "planner_loads_example.yaml")


def _request(n_customers: int, objective: str = "co2", extra: tuple[str, float, float] | None = None,
             profile: str = "delivery_van", fleet: str = "van", n_vehicles: int = 3):
    req = PlanRoute.Request(objective=objective, time_limit_s=0.5)
    req.stops.append(RouteStop(stop_id="depot", position=Point(x=0.0, y=0.0)))
    for i in range(n_customers):
        angle = 2 * math.pi * i / n_customers
        req.stops.append(RouteStop(stop_id=f"c{i}", position=Point(x=800 * math.cos(angle), y=500 * math.sin(angle)),
                                   demand_kg=-float(100 + 37 * (i % 5)), service_time_s=60.0))
    if extra:
        req.stops.append(RouteStop(stop_id=extra[0], position=Point(x=extra[1], y=extra[2]), demand_kg=-50.0))
    for k in range(n_vehicles):
        req.vehicles.append(VehicleSpec(vehicle_id=f"{fleet}{k}", profile=profile, capacity_kg=1500.0,
                                        start_stop_id="depot", end_stop_id="depot", max_speed_mps=12.0,
                                        empty_mass_kg=math.nan))
    return req


@pytest.mark.slow
def test_route_requests_replans_and_rviz_outputs(probe):
    plans = probe.collect(RoutePlan, "/fleet/route_plan", qos.latched())
    paths = probe.collect(Path, "/fleet/route_path", qos.latched())
    markers = probe.collect(MarkerArray, "/fleet/route_markers", qos.latched())
    with NodeProcess("planner", namespace="/fleet", params={"replan_deadline_s": 0.3}) as node:
        client = probe.node.create_client(PlanRoute, "/fleet/plan_route")
        first = probe.call(client, _request(20), timeout_s=30.0)
        assert first.success, (first.message, node.output)
        plan = first.plan
        assert plan.status in (RoutePlan.STATUS_FEASIBLE, RoutePlan.STATUS_OPTIMAL)
        served = sorted(s.stop_id for r in plan.routes for s in r.stops if s.stop_id != "depot")
        assert served == sorted(f"c{i}" for i in range(20))
        assert all(r.stops[0].stop_id == "depot" and r.stops[-1].stop_id == "depot" for r in plan.routes)
        assert all(max(s.load_after_kg for s in r.stops) <= 1500.0 + 1e-6 for r in plan.routes)
        assert plan.expected_co2_kg > 0 and plan.baseline_co2_kg > 0
        assert plan.expected_co2_kg <= plan.baseline_co2_kg * 1.02  # CO2 plan no worse than the shortest's
        assert probe.spin_until(lambda: plans and paths and markers, timeout_s=20), node.output
        assert plans[-1].plan_id == plan.plan_id
        assert len(paths[-1].poses) >= 3 and paths[-1].header.frame_id == "map"
        lines = [m for m in markers[-1].markers if m.ns == "route_co2" and m.type == m.LINE_LIST]
        assert lines and all(len(m.colors) == len(m.points) for m in lines)

        # A stop is added: a warm-started replan (the deadline handed to its solvers is test_routing_core's;
        # how fast it comes back is bench/bench_routing.py's).
        second = probe.call(client, _request(20, extra=("late", 100.0, 50.0)), timeout_s=30.0)
        assert second.success, second.message
        assert "(replan)" in second.message
        assert second.plan.solve_time_ms > 0
        assert any(s.stop_id == "late" for r in second.plan.routes for s in r.stops)
        assert probe.spin_until(lambda: plans[-1].plan_id == second.plan.plan_id, timeout_s=20)

        # Malformed request: refused with the field named; the node keeps serving.
        bad = _request(3)
        bad.stops[1].position.x = math.nan
        refused = probe.call(client, bad, timeout_s=30.0)
        assert not refused.success and "x_m=nan" in refused.message
        unknown = _request(3)
        unknown.vehicles[0].start_stop_id = "nowhere"
        refused = probe.call(client, unknown, timeout_s=30.0)
        assert not refused.success and "start_stop_id='nowhere'" in refused.message
        again = probe.call(client, _request(5, objective="distance"), timeout_s=30.0)
        assert again.success
        assert node.stop() == 0
        assert "Traceback" not in node.output


def _forecast(values, stamp_s=100.0):
    msg = GridIntensity(region="test", gco2_per_kwh=values[0], forecast_step_s=3600.0,
                        forecast_gco2_per_kwh=list(values))
    msg.forecast_start = Time(sec=int(stamp_s))
    return msg


@pytest.mark.slow
def test_load_schedule_follows_the_forecast_and_bad_forecasts_are_rejected(probe):
    schedules = probe.collect(LoadSchedule, "/site/load_schedule", qos.latched())
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    pub = probe.publisher(GridIntensity, "/site/grid_intensity", qos.latched())
    with NodeProcess("planner", namespace="/site", params={
        "load_jobs_file": JOBS, "site_power_cap_kw": 250.0, "diagnostics_period_s": 0.3,
    }) as node:
        assert probe.wait_for_subscribers(pub, timeout_s=20), node.output
        def rejected_nan() -> bool:
            return any(kv.key == "rejected.grid_intensity.nan" and kv.value != "0"
                       for a in diags for st in a.status if st.hardware_id == "/site/planner" for kv in st.values)

        # A forecast with a NaN is rejected and counted (depth-1 latched topics keep only the newest
        # message, so the good forecast goes out after the rejection shows on /diagnostics).
        bad = _forecast([300.0] * 24)
        bad.forecast_gco2_per_kwh[3] = math.nan
        pub.publish(bad)
        assert probe.spin_until(rejected_nan, timeout_s=20), node.output
        assert not schedules
        pub.publish(_forecast([450.0] * 9 + [80.0] * 7 + [450.0] * 8))
        assert probe.spin_until(lambda: schedules, timeout_s=30), node.output
        s = schedules[-1]
        assert s.status == LoadSchedule.STATUS_OPTIMAL
        assert s.expected_co2_kg < 0.7 * s.baseline_co2_kg
        assert s.slot_s == 3600.0 and s.start.sec == 100
        assert {a.asset_id for a in s.assets} == {"depot_charger_1", "depot_charger_2", "air_compressor"}
        total = [sum(a.power_kw[t] for a in s.assets) for t in range(24)]
        assert max(total) <= 250.0 + 1e-6
        assert node.stop() == 0


def test_bad_parameter_refuses_to_start():
    with NodeProcess("planner", params={"replan_deadline_s": -1.0}) as node:
        assert node.wait(timeout_s=30) == 1
        lines = [line for line in node.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "planner.replan_deadline_s=-1.0: must be > 0.0" in lines[0]


def test_missing_jobs_file_refuses_to_start():
    with NodeProcess("planner", params={"load_jobs_file": "/nonexistent/jobs.yaml"}) as node:
        assert node.wait(timeout_s=30) == 1
        assert "/nonexistent/jobs.yaml" in node.output


def test_missing_vehicle_profiles_name_the_parameter():
    with NodeProcess("planner", params={"vehicle_profiles": ["/nonexistent/vehicles"]}) as node:
        assert node.wait(timeout_s=30) == 1
        lines = [line for line in node.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "planner.vehicle_profiles: /nonexistent/vehicles does not exist" in lines[0]


def _served(plan: RoutePlan) -> list[str]:
    return sorted(s.stop_id for r in plan.routes for s in r.stops if s.stop_id != "depot")


def test_congestion_report_replans_and_bad_reports_are_rejected(probe):
    plans = probe.collect(RoutePlan, "/fleet/route_plan", qos.latched())
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    reports = probe.publisher(RoadCongestion, "/fleet/road_congestion", qos.command())
    with NodeProcess("planner", namespace="/fleet", params={
        "replan_deadline_s": 0.3, "diagnostics_period_s": 0.3,
    }) as node:
        client = probe.node.create_client(PlanRoute, "/fleet/plan_route")
        first = probe.call(client, _request(12), timeout_s=30.0)
        assert first.success, (first.message, node.output)
        assert probe.spin_until(lambda: plans and plans[-1].plan_id == first.plan.plan_id, timeout_s=20)
        assert probe.wait_for_subscribers(reports, timeout_s=20), node.output
        # Congest a customer -> customer road the current plan drives.
        route = next(r for r in first.plan.routes if len(r.stops) >= 4)
        arc = (route.stops[1].stop_id, route.stops[2].stop_id)
        reports.publish(RoadCongestion(from_stop_id=arc[0], to_stop_id=arc[1], speed_mps=1.0))
        assert probe.spin_until(lambda: plans[-1].plan_id != first.plan.plan_id, timeout_s=20), node.output
        replanned = plans[-1]
        assert (replanned.header.stamp.sec, replanned.header.stamp.nanosec) > (
            first.plan.header.stamp.sec, first.plan.header.stamp.nanosec)
        assert replanned.status in (RoutePlan.STATUS_OPTIMAL, RoutePlan.STATUS_FEASIBLE, RoutePlan.STATUS_DEADLINE)
        assert _served(replanned) == sorted(f"c{i}" for i in range(12))  # every customer exactly once
        assert replanned.solve_time_ms > 0  # its speed is bench/bench_routing.py's question
        # If the replan still drives the congested road, it is costed at the reported speed.
        for r in replanned.routes:
            for a, b in zip(r.stops, r.stops[1:], strict=False):
                if (a.stop_id, b.stop_id) == arc:
                    assert b.arc_speed_mps <= 1.0 + 1e-9

        # Bad reports: counted per reason on /diagnostics, no new plan, and the node keeps answering.
        reports.publish(RoadCongestion(from_stop_id="nowhere", to_stop_id=arc[1], speed_mps=5.0))
        reports.publish(RoadCongestion(from_stop_id=arc[0], to_stop_id=arc[1], speed_mps=math.nan))

        def rejected(reason: str) -> bool:
            return any(kv.key == f"rejected.road_congestion.{reason}" and kv.value != "0"
                       for d in diags for st in d.status if st.hardware_id == "/fleet/planner" for kv in st.values)

        assert probe.spin_until(lambda: rejected("unknown_stop") and rejected("nan"), timeout_s=20), node.output
        assert plans[-1].plan_id == replanned.plan_id
        again = probe.call(client, _request(5, objective="distance"), timeout_s=30.0)
        assert again.success
        assert node.stop() == 0
        assert "Traceback" not in node.output


def test_grid_intensity_change_replans_electric_co2_plans_only(probe):
    plans = probe.collect(RoutePlan, "/fleet/route_plan", qos.latched())
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    grid = probe.publisher(GridIntensity, "/fleet/grid_intensity", qos.latched())
    with NodeProcess("planner", namespace="/fleet", params={
        "replan_deadline_s": 0.3, "diagnostics_period_s": 0.3,
    }) as node:
        client = probe.node.create_client(PlanRoute, "/fleet/plan_route")
        # One vehicle, five stops: both plans are optimal, so their CO2 compares exactly.
        ev = _request(5, profile="electric crossover", fleet="ev", n_vehicles=1)
        first = probe.call(client, ev, timeout_s=30.0)
        assert first.success, (first.message, node.output)
        assert probe.spin_until(lambda: plans and plans[-1].plan_id == first.plan.plan_id, timeout_s=20)
        assert probe.wait_for_subscribers(grid, timeout_s=20), node.output

        # The profile's own 400 gCO2/kWh -> 200: the arcs cost half, replanned within the deadline.
        grid.publish(_forecast([200.0] * 24))
        assert probe.spin_until(lambda: plans[-1].plan_id != first.plan.plan_id, timeout_s=20), node.output
        replanned = plans[-1]
        assert _served(replanned) == sorted(f"c{i}" for i in range(5))
        assert replanned.solve_time_ms > 0  # its speed is bench/bench_routing.py's question
        assert replanned.expected_co2_kg == pytest.approx(first.plan.expected_co2_kg * 200.0 / 400.0, rel=1e-3)
        assert replanned.baseline_co2_kg == pytest.approx(first.plan.baseline_co2_kg * 200.0 / 400.0, rel=1e-3)

        def diag(key: str) -> str | None:
            values = [kv.value for d in diags for st in d.status if st.hardware_id == "/fleet/planner"
                      for kv in st.values if kv.key == key]
            return values[-1] if values else None

        # A diesel fleet's CO2 does not depend on the grid: a new intensity is stored but nothing replans.
        diesel = probe.call(client, _request(5, fleet="diesel", n_vehicles=1), timeout_s=30.0)
        assert diesel.success, diesel.message
        assert probe.spin_until(lambda: plans[-1].plan_id == diesel.plan.plan_id, timeout_s=20)
        grid.publish(_forecast([100.0] * 24))
        assert probe.spin_until(lambda: diag("grid_gco2_per_kwh") == "100.0", timeout_s=20), node.output
        assert diag("grid_replans") == "1"
        assert plans[-1].plan_id == diesel.plan.plan_id

        # The stored intensity costs later requests: the electric plan again, now at 100 gCO2/kWh.
        later = probe.call(client, ev, timeout_s=30.0)
        assert later.success, later.message
        assert later.plan.expected_co2_kg == pytest.approx(first.plan.expected_co2_kg * 100.0 / 400.0, rel=1e-3)
        assert node.stop() == 0
        assert "Traceback" not in node.output


@pytest.mark.slow
def test_routes_are_priced_with_the_calibrated_model_once_it_is_confident(probe, tmp_path):
    """carbon_inference's saved calibration of a haul truck (10 % heavier, more rolling and drag, a thirstier
    engine than its profile): the generic model prices routes until it is confident, then the calibrated one,
    and /diagnostics says which."""
    from test_eco_speed_calibrated import learned_truck

    from carbon_ai_nodes.carbon.vehicle_calibration import VehicleCalibration
    from carbon_ai_nodes.common.vehicle_profile import load_profile

    profile = load_profile(REPO / "config" / "vehicles" / "haul_truck.yaml")
    path = tmp_path / "truck1.json"
    VehicleCalibration(profile).save(path)  # the profile's prior: not confident
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())

    def diag(key: str) -> str | None:
        values = [kv.value for d in diags for st in d.status if st.hardware_id == "/mine/planner"
                  for kv in st.values if kv.key == key]
        return values[-1] if values else None

    with NodeProcess("planner", namespace="/mine", params={
        "diagnostics_period_s": 0.3, "calibration_file": str(path), "calibration_check_period_s": 0.5,
    }) as node:
        client = probe.node.create_client(PlanRoute, "/mine/plan_route")
        trucks = _request(5, profile="haul truck", fleet="truck", n_vehicles=1)
        generic = probe.call(client, trucks, timeout_s=30.0)
        assert generic.success, (generic.message, node.output)
        assert probe.spin_until(lambda: diag("co2_model") == "generic" and "not confident" in (
            diag("co2_model_note") or ""), timeout_s=20), node.output

        learned_truck(profile, 0.0)[0].save(path)
        assert probe.spin_until(lambda: diag("co2_model") == "calibrated", timeout_s=20), node.output
        calibrated = probe.call(client, trucks, timeout_s=30.0)
        assert calibrated.success, calibrated.message
        # the same optimal tour, priced for the heavier, draggier, thirstier truck the data describe
        assert calibrated.plan.expected_co2_kg > generic.plan.expected_co2_kg * 1.1
        assert "now priced with the calibrated model" in node.output
        assert node.stop() == 0
        assert "Traceback" not in node.output
