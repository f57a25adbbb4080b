"""Eco speed caps on a fixed route: the envelope's shape, the loop prediction, the closed loop in the cores
(simulated truck obeying the caps through RouteFollower) and the follower on a closed two-lane loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from carbon_ai_nodes.actuation.actuation_targets import RouteFollower, RouteTrack
from carbon_ai_nodes.common.params import ParameterError
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
from carbon_ai_nodes.graph.scenario import load_scenario
from carbon_ai_nodes.planning.eco_speed import EcoSpeedParams, eco_profile, resample_route
from carbon_ai_nodes.sim.vehicle_sim import Route, SimParams, VehicleSim


def haul(vehicle: str = "truck1"):
    s = load_scenario("haul_truck_fleet")
    v = s.vehicle(vehicle)
    return VehicleProfile.from_mapping(v.profile), Route.from_list(v.route, v.cruise_speed_mps), v


def test_resampled_loop_carries_payload_grade_and_stops():
    _, route, v = haul()
    pts = resample_route(route, v.initial_payload_kg, 5.0)
    assert pts.s_m[-1] == pytest.approx(sum(route.segment(i)[3] for i in range(len(route.waypoints))))
    assert np.all(np.diff(pts.s_m) <= 5.0 + 1e-9) and np.all(np.diff(pts.s_m) > 0)
    assert pts.is_stop[0] and pts.is_stop[-1] and np.count_nonzero(pts.is_stop[:-1]) == 2  # shovel, crusher
    on_ramp = np.isclose(pts.grade, 0.05)
    assert np.all(pts.payload_kg[on_ramp] == 220000)  # loaded up the ramp
    assert np.all(pts.payload_kg[np.isclose(pts.grade, -0.05)] == 0)  # empty down it


def test_eco_caps_glide_into_stops_and_predict_a_saving_within_the_time_budget():
    profile, route, v = haul()
    ep = eco_profile(profile, route, initial_payload_kg=v.initial_payload_kg, dwell_s=8.0)
    pts, cap = ep.points, ep.speed_cap_mps
    assert np.all(cap <= pts.cruise_mps + 1e-9) and np.all(cap[pts.is_stop] == 0.0)
    # approaching the crusher the cap falls steadily (a glide), not a step to 0 at the stop
    crusher = int(np.flatnonzero(pts.is_stop)[1])
    before = cap[crusher - 20:crusher]
    assert np.all(np.diff(before) <= 1e-9) and before[0] > 3.0 * before[-1] > 0
    assert 0.0 < ep.predicted_saving_pct < 30.0
    assert ep.eco.time_s <= ep.baseline.time_s * 1.15 + 1e-6
    assert ep.eco.distance_m == pytest.approx(ep.baseline.distance_m)


def drive_laps(profile, route, v, dwell_s: float, cruise_mps: float):
    """One full lap with the eco caps (through RouteFollower, as the bridge follows them) and one without, in the
    simulator core. Returns {label: (sim, time_s, speed_mps)} with the driven speed trace of each lap."""
    ep = eco_profile(profile, route, initial_payload_kg=v.initial_payload_kg, dwell_s=dwell_s)
    track = RouteTrack("eco", ep.points.east_m, ep.points.north_m,
                       np.where(ep.speed_cap_mps > 0, ep.speed_cap_mps, math.nan))
    loop_m = ep.points.s_m[-1]
    laps = {}
    for label, advised in (("eco", True), ("baseline", False)):
        sim = VehicleSim(SimParams(scenario_file="x", stop_dwell_s=dwell_s), profile, route=route,
                         initial_payload_kg=v.initial_payload_kg)
        follower = RouteFollower(track)
        dt = 0.05
        t, speed = [0.0], [0.0]
        while sim.truth.distance_m < loop_m:  # one full lap each, same stretch of road
            s = sim.truth
            limit = follower.speed_limit_mps(s.east_m, s.north_m, cruise_mps, 50.0) if advised else 30.0
            sim.command(s.t_s, limit, 100.0, False)
            sim.step(dt)
            t.append(s.t_s)
            speed.append(s.speed_mps)
            assert s.t_s < 1200.0
        laps[label] = (sim, t, speed)
    return laps


def test_caps_save_co2_in_the_closed_loop_of_the_simulated_truck():
    """The simulator's driver and physics (not the eco prediction) judge the caps, over a whole loop."""
    profile, route, v = haul()
    laps = drive_laps(profile, route, v, 8.0, 12.0)
    results = {label: (sim.truth.co2_g, sim.truth.t_s) for label, (sim, _, _) in laps.items()}
    saving = 1.0 - results["eco"][0] / results["baseline"][0]
    assert 0.03 < saving < 0.3, results
    assert results["eco"][1] < results["baseline"][1] * 1.25  # and the lap takes at most a quarter longer


@pytest.mark.parametrize("scenario, vehicle, dwell_s, cruise_mps", [
    ("haul_truck_fleet", "truck1", 8.0, 12.0), ("haul_truck_fleet", "truck2", 8.0, 12.0),
    ("delivery_van_fleet", "van1", 5.0, 13.0)])
def test_full_lap_saving_holds_by_the_independent_plant(scenario, vehicle, dwell_s, cruise_mps):
    """The same laps, their speed traces re-driven by each vehicle's plant (FASTSim) on the route's grade.

    Where model and plant disagree it is mostly fuel cut: eco_speed's glides save because the engine is motored
    without fuel. The haul trucks' plant (FASTSim's line-haul file, whose FASTSim-2 origin has no decel fuel
    cut-off) is scored with fuel cut on, as heavy diesels run; with the file's stock setting truck1's lap saving
    falls to about -1 % (its glide then burns idle-and-aux fuel for longer), so the claim rests on fuel cut."""
    pytest.importorskip("fastsim")
    import dataclasses

    from carbon_ai_nodes.common.errors import PlantError
    from carbon_ai_nodes.sim.plant import Trace, grade_along_route, payload_along_route, score

    s = load_scenario(scenario)
    v = s.vehicle(vehicle)
    profile, route = VehicleProfile.from_mapping(v.profile), Route.from_list(v.route, v.cruise_speed_mps)
    laps = drive_laps(profile, route, v, dwell_s, cruise_mps)
    payload = payload_along_route(route, v.initial_payload_kg)  # a scaled plant carries the truck's load
    traces = {label: Trace.from_samples(t, speed, grade_along_route(route), payload_of_distance=payload)
              for label, (_, t, speed) in laps.items()}

    def plant_saving_pct(spec) -> float:
        try:
            eco, base = (score(spec, traces[k]) for k in ("eco", "baseline"))
        except PlantError as exc:
            if "FASTSim crashed" not in str(exc):
                raise
            # truck2's eco lap meets the foot of the 5 % ramp loaded at 12 m/s and slows at full power: the plant
            # (1,800 kW less its transmission and auxiliaries, about 1,730 kW at the wheel) is about 3 % short there,
            # and FASTSim 3.1.0 cannot fall behind a trace on that grade: its achieved-speed solver crashes
            # (config/plants/README.md). No figure rather than a wrong one; test_caps_let_gravity_bring_the_speed_
            # back_after_a_crest scores the stretch with the plant engine
            pytest.xfail(f"{vehicle}: {exc}")
        assert eco.distance_km == pytest.approx(base.distance_km, rel=0.01)  # the same lap
        return (1.0 - eco.co2_g_per_km / base.co2_g_per_km) * 100.0

    saving = plant_saving_pct(v.plant)
    model = (1.0 - laps["eco"][0].truth.co2_g / laps["baseline"][0].truth.co2_g) * 100.0
    flipped = v.plant.fuel_cut is False  # the other policy: off, unless the scenario already turned it off
    other = plant_saving_pct(dataclasses.replace(v.plant, fuel_cut=flipped))
    print(f"{vehicle}: full-lap saving by the plant {saving:.2f} % (fuel cut {v.plant.fuel_cut}: None = the "
          f"file's), {other:.2f} % with fuel cut {flipped}; by the emission model {model:.2f} %")
    assert saving > 0.3, (saving, model)
    if v.plant.fuel_cut:  # the stated fuel-cut policy decides part of it
        assert other < saving


def test_caps_let_gravity_bring_the_speed_back_after_a_crest():
    """truck2 from the crusher over the crest and down the ramp, fuel by its plant's engine map (the FASTSim
    line-haul efficiency curve at 1,800 kW, sim/plant_engine.py, fuel cut on overrun). The caps used to jump back
    to cruise beyond the crest, so the driver powered down the hill from the crawl speed (1.3 MW at the wheels)
    while the baseline, held at cruise on the brakes, burned nothing there: the saving by the plant was negative.
    Now the cap rises no faster than gravity brings the speed back: no engine power downhill, CO2 saved."""
    from carbon_ai_nodes.sim.plant_engine import engine_for

    profile, route, v = haul("truck2")
    ep = eco_profile(profile, route, initial_payload_kg=v.initial_payload_kg, dwell_s=8.0)
    track = RouteTrack("eco", ep.points.east_m, ep.points.north_m,
                       np.where(ep.speed_cap_mps > 0, ep.speed_cap_mps, math.nan))
    bottom_m = 228.0 + 1602.0  # crusher -> crest (flat), then the 5 % ramp down to the pit entry
    result = {}
    for label, advised in (("eco", True), ("baseline", False)):
        sim = VehicleSim(SimParams(scenario_file="x", stop_dwell_s=8.0), profile, route=route,
                         initial_payload_kg=v.initial_payload_kg, engine=engine_for(v.plant, profile))
        follower, downhill_kw = RouteFollower(track), 0.0
        while sim.truth.distance_m < bottom_m:
            s = sim.truth
            limit = follower.speed_limit_mps(s.east_m, s.north_m, 12.0, 50.0) if advised else 30.0
            sim.command(s.t_s, limit, 100.0, False)
            sim.step(0.05)
            if s.grade < 0:
                downhill_kw = max(downhill_kw, s.power_kw)
            assert s.t_s < 600.0
        result[label] = (sim.truth.co2_g, sim.truth.t_s, downhill_kw)
    (eco_g, eco_s, eco_kw), (base_g, base_s, _) = result["eco"], result["baseline"]
    assert eco_kw <= 0.0, result  # never powers down the hill
    assert eco_g < base_g, result  # the plant engine's saving on that stretch is positive
    assert eco_s < base_s * 1.25, result


def test_follower_wraps_a_closed_loop_and_keeps_to_its_lane():
    # out along y=0, back along y=40 (a two-lane haul road) in 10 m arcs; closed: the last stop is the first
    xs = np.arange(0.0, 1001.0, 10.0)
    east = np.concatenate([xs, xs[::-1], [0.0]])
    north = np.concatenate([np.zeros_like(xs), np.full_like(xs, 40.0), [0.0]])
    speed = np.concatenate([[math.nan], np.full(len(xs) - 1, 5.0), [7.0], np.full(len(xs) - 1, 9.0), [4.0]])
    f = RouteFollower(RouteTrack("loop", east, north, speed))
    assert f.closed
    assert f.speed_limit_mps(250.0, 1.0, 12.0, 30.0) == 5.0
    assert f.speed_limit_mps(600.0, 21.0, 12.0, 30.0) == 5.0  # nearer the return lane, which is far ahead
    for x in np.arange(600.0, 1000.0, 50.0):  # driving on: positions come every few metres
        assert f.speed_limit_mps(x, 0.0, 12.0, 30.0) == 5.0
    assert f.speed_limit_mps(1000.0, 20.0, 12.0, 30.0) == 7.0
    for x in np.arange(990.0, 0.0, -50.0):
        assert f.speed_limit_mps(x, 39.0, 12.0, 30.0) == 9.0
    assert f.speed_limit_mps(0.0, 20.0, 12.0, 30.0) == 4.0
    assert f.speed_limit_mps(30.0, 1.0, 12.0, 30.0) == 5.0  # second lap: wrapped past the end
    assert f.speed_limit_mps(5000.0, 5000.0, 12.0, 30.0) == 12.0  # off the route: cruise
    assert f.speed_limit_mps(700.0, 39.0, 12.0, 30.0) == 9.0  # back on it after a detour: found again


def test_params_need_a_scenario():
    with pytest.raises(ParameterError, match="scenario_file"):
        EcoSpeedParams()
    assert EcoSpeedParams(scenario_file="x").spacing_m == 5.0


@pytest.mark.timeout(90)
def test_node_publishes_the_plan_the_bridge_follows_and_none_when_disabled(probe):
    from conftest import REPO
    from nav_msgs.msg import Path
    from visualization_msgs.msg import MarkerArray

    from carbon_ai_msgs.msg import RoutePlan
    from carbon_ai_nodes.actuation.ros.conversions import route_track
    from carbon_ai_nodes.graph.node_process import NodeProcess
    from carbon_ai_nodes.ros import qos

    scenario = str(REPO / "config" / "scenarios" / "haul_truck_fleet.yaml")
    plans = probe.collect(RoutePlan, "/e1/route_plan", qos.latched())
    paths = probe.collect(Path, "/e1/route_path", qos.latched())
    markers = probe.collect(MarkerArray, "/e1/route_markers", qos.latched())
    off = probe.collect(RoutePlan, "/e2/route_plan", qos.latched())
    params = {"scenario_file": scenario, "vehicle_id": "truck1"}
    with NodeProcess("eco_speed", namespace="/e1", params=params) as on, \
            NodeProcess("eco_speed", namespace="/e2", params=dict(params, enabled=False)) as disabled:
        assert probe.spin_until(lambda: plans and paths and markers and off, 60), on.output + disabled.output
        # resent for consumers that were not active yet, unchanged
        assert probe.spin_until(lambda: len(plans) >= 2, 10), on.output
    plan = plans[-1]
    assert plan.plan_id == plans[0].plan_id and plan.objective == RoutePlan.OBJECTIVE_CO2
    assert 0 < plan.expected_co2_kg < plan.baseline_co2_kg
    track = route_track(plan, "truck1")  # what the actuator bridge makes of it
    assert np.nanmax(track.arc_speed_mps) == pytest.approx(12.0) and np.nanmin(track.arc_speed_mps) < 6.0
    assert len(paths[-1].poses) == len(plan.routes[0].stops) and paths[-1].header.frame_id == "map"
    assert any(m.ns == "route_co2" and len(m.colors) > 100 for m in markers[-1].markers)
    assert np.all(np.isnan(route_track(off[-1], "truck1").arc_speed_mps))  # optimisation off: no advice
    assert off[-1].baseline_co2_kg == pytest.approx(off[-1].expected_co2_kg)
