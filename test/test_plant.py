"""The independent plant (sim/plant.py): NREL FASTSim re-drives a speed/grade trace and reports its fuel.

The FASTSim tests run the real FASTSim 3.1.0 (a validation dependency): they skip where it is not installed
(``./setup.sh --no-validation``)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from carbon_ai_nodes.common.errors import ConfigError, PlantError, PlantUnavailableError
from carbon_ai_nodes.graph.scenario import CONFIG_DIR
from carbon_ai_nodes.sim.plant import PlantSpec, Trace, drive, drive_legs, grade_along_route, score
from carbon_ai_nodes.sim.vehicle_sim import Route

LINE_HAUL = str(CONFIG_DIR / "plants" / "Line_Haul_Conv.yaml")


def steady(speed_mps: float, grade: float = 0.0, duration_s: float = 600.0, ramp_s: float = 60.0) -> Trace:
    """From rest up to ``speed_mps`` over ``ramp_s``, then held."""
    t = np.arange(0.0, duration_s + 1.0)
    return Trace(t, np.minimum(t / ramp_s, 1.0) * speed_mps, np.full_like(t, grade))


def held_l_per_100km(result, after_s: float = 120.0) -> float:
    """Consumption over the held part of a steady trace (L/100 km), from the plant's cumulative series."""
    t, dist_m, co2_g = result.series
    i = int(np.searchsorted(t, after_s))
    litres = (co2_g[-1] - co2_g[i]) / co2_g[-1] * result.fuel_l
    return litres / (dist_m[-1] - dist_m[i]) * 1e5


# ---------------------------------------------------------------------------------------------- no FASTSim needed
def test_spec_names_a_file_or_a_reason_and_checks_its_values():
    spec = PlantSpec.from_mapping({"fastsim_file": LINE_HAUL, "mass_kg": 30000, "fuel_cut": True})
    assert spec.mass_kg == 30000.0 and spec.fuel == "diesel" and spec.fuel_cut is True
    assert spec.label == "Line_Haul_Conv at 30.0 t"
    assert PlantSpec.from_mapping({"model_only": "electric machine"}).label == "model only"
    bad = [({}, "give fastsim_file"), ({"fastsim_file": LINE_HAUL, "model_only": "x"}, "not both"),
           ({"fastsim_file": LINE_HAUL, "mass_kg": -5}, "mass_kg=-5.0: must be > 0"),
           ({"fastsim_file": LINE_HAUL, "fuel": "hydrogen"}, "fuel='hydrogen'"),
           ({"fastsim_file": LINE_HAUL, "fuel_cut": "yes"}, "fuel_cut='yes'"),
           ({"fastsim_file": LINE_HAUL, "mass": 1}, "plant.mass: unknown key"),
           ({"fastsim_file": "/nonexistent/truck.yaml"}, "no such file"), ("Line_Haul", "expected a mapping")]
    for data, message in bad:
        with pytest.raises(ConfigError, match=message):
            PlantSpec.from_mapping(data)


def test_trace_refuses_what_a_plant_cannot_drive_with_the_reason():
    t = np.arange(5.0)
    for kwargs, message in (({"speed_mps": np.array([0, 1, np.nan, 1, 0.0])}, "finite"),
                            ({"time_s": np.array([0, 1, 1, 2, 3.0])}, "increase"),
                            ({"speed_mps": np.array([0, 1, -2, 1, 0.0])}, ">= 0"),
                            ({"grade": np.full(5, 0.9)}, "grade"), ({"grade": np.zeros(3)}, "length")):
        args = {"time_s": t, "speed_mps": np.ones(5), "grade": np.zeros(5)} | kwargs
        with pytest.raises(PlantError, match=message):
            Trace(**args)


def test_recorded_odometer_samples_become_a_one_hertz_trace_with_the_same_distance_and_the_route_grade():
    rng = np.random.default_rng(3)
    t = np.arange(0.0, 120.0, 0.02)  # 50 Hz wheel speed, noisy, with dropouts (NaN)
    v = np.minimum(t / 10.0, 1.0) * 10.0 + rng.normal(0.0, 0.05, t.size) * (t > 0)
    v[rng.random(t.size) < 0.01] = np.nan
    route = Route.from_list([[0, 0, 0], [500, 0, 25], [500, 300, 25]])  # 5 % up, flat, then down back to 0
    trace = Trace.from_samples(t + 1000.0, v, grade_along_route(route))
    assert trace.time_s[0] == 0.0 and np.all(np.diff(trace.time_s) == 1.0)
    assert trace.speed_mps[0] < 0.1  # it starts at rest, as the recording does
    assert trace.distance_m == pytest.approx(0.5 * 10 * 10 + 10 * 110, rel=0.01)
    d = np.concatenate([[0.0], np.cumsum(0.5 * (trace.speed_mps[1:] + trace.speed_mps[:-1]))])
    assert np.all(trace.grade[d < 490] == pytest.approx(0.05))
    assert np.all(trace.grade[(d > 510) & (d < 790)] == 0.0) and np.all(trace.grade[(d > 810) & (d < 1380)] < 0)
    with pytest.raises(PlantError, match="no wheel-speed samples were recorded"):
        Trace.from_samples([], [])
    cut = trace.until_distance(600.0)
    assert 600.0 <= cut.distance_m < 612.0


def test_missing_fastsim_is_a_clear_error_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastsim", None)  # import fastsim -> ImportError
    with pytest.raises(PlantUnavailableError, match="fastsim is not installed: pip install -r requirements/valid"):
        score(PlantSpec(LINE_HAUL), steady(10.0, duration_s=60))


# ---------------------------------------------------------------------------------------------- real FASTSim
def test_line_haul_truck_burns_the_published_class8_figure_on_the_highway():
    pytest.importorskip("fastsim")
    # published yardstick (shared/data/fastsim/README.md): 6-7 mpg, 34-39 L/100 km at 30-36 t on highways
    for mass_kg in (None, 36000.0):
        r = score(PlantSpec(LINE_HAUL, mass_kg), steady(25.0))
        assert 30.0 < held_l_per_100km(r) < 40.0, (mass_kg, held_l_per_100km(r))
        assert r.distance_km == pytest.approx(r.trace_distance_km, rel=1e-3)
        assert r.co2_kg == pytest.approx(r.fuel_l * 10180.0 / 3.78541 / 1000.0)
        assert r.fuel_energy_mj == pytest.approx(r.fuel_l * 35.8)


def test_more_fuel_uphill_and_with_more_mass_less_downhill():
    pytest.importorskip("fastsim")
    spec = PlantSpec(LINE_HAUL)
    flat, up, down = (held_l_per_100km(score(spec, steady(15.0, g))) for g in (0.0, 0.02, -0.01))
    heavy = held_l_per_100km(score(PlantSpec(LINE_HAUL, 40000.0), steady(15.0, 0.02)))
    assert down < flat < up < heavy
    # 2 % of 32 t lifted at 15 m/s is 94 kW at the wheel: at ~38 % engine x 97 % gearbox about 7 L/h more per
    # 54 km/h, i.e. over 12 L/100 km more than on the flat
    assert up - flat > 12.0


def test_standing_still_burns_only_idle_and_auxiliary_fuel():
    pytest.importorskip("fastsim")
    t = np.arange(0.0, 601.0)
    r = score(PlantSpec(LINE_HAUL), Trace(t, np.zeros_like(t), np.zeros_like(t)))
    assert r.distance_km == 0.0 and np.isnan(r.co2_g_per_km)
    # the file's 3.5 kW auxiliary load at its low-load efficiency: a few litres per hour at most, never zero
    lph = r.fuel_l / 600.0 * 3600.0
    assert 0.3 < lph < 5.0, lph


def test_an_undrivable_trace_and_a_bad_file_are_one_line_errors():
    pytest.importorskip("fastsim")
    with pytest.raises(PlantError, match="not drivable by plant Line_Haul_Conv at t=") as info:
        score(PlantSpec(LINE_HAUL), steady(25.0, 0.04))  # 32 t up 4 % at 90 km/h needs ~ 1 MW, it has 331 kW
    assert "backtrace" not in str(info.value).lower() and "\n" not in str(info.value)
    with pytest.raises(PlantError, match="not a FASTSim 3 vehicle file"):
        score(PlantSpec(str(CONFIG_DIR / "vehicles" / "haul_truck.yaml")), steady(5.0, duration_s=30))


# ---------------------------------------------------------------------------------------------- who is scored by what
def test_every_shipped_vehicle_names_its_plant_and_the_files_exist():
    from carbon_ai_nodes.graph.scenario import list_scenarios, load_scenario
    from carbon_ai_nodes.sim.plant import profile_plants

    kinds = {}
    for path in list_scenarios():
        for v in load_scenario(path).vehicles:
            assert v.plant is not None, f"{path.name}: {v.id} names no plant"
            assert v.plant.model_only or Path(v.plant.fastsim_file).is_file()
            kinds[v.id] = v.plant.label
    assert kinds["truck1"] == kinds["truck2"] == "Line_Haul_Conv scaled 165 t + payload, 1800 kW"
    assert kinds["van1"].startswith("2026_Chrysler_Pacifica_Select at 3.3 t")
    assert kinds["tractor1"] == kinds["tractor2"] == "2022_Renault_Zoe_ZE50_R135 scaled 12 t + payload, 150 kW"
    plants = profile_plants(CONFIG_DIR / "plants" / "vehicles.yaml")
    assert set(plants) == {p.name for p in (CONFIG_DIR / "vehicles").glob("*.yaml")}
    assert all(p.model_only or Path(p.fastsim_file).is_file() for p in plants.values())


def test_a_bad_plant_in_a_scenario_is_a_config_error_naming_the_vehicle(tmp_path):
    import yaml

    from carbon_ai_nodes.graph.scenario import SCENARIO_DIR, load_scenario

    data = yaml.safe_load((SCENARIO_DIR / "haul_truck_fleet.yaml").read_text())
    data["vehicles"][1]["plant"] = {"fastsim_file": "plants/missing.yaml"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"vehicles\[1\]\.plant\.fastsim_file=.*missing.yaml.*no such file"):
        load_scenario(bad)


def test_the_last_sample_of_a_resampled_trace_keeps_the_speed():
    t = np.arange(0.0, 30.0 + 1e-9, 0.02)
    trace = Trace.from_samples(t, np.minimum(t, 12.0))  # at 12 m/s when the recording stops
    assert trace.speed_mps[-1] == pytest.approx(12.0, abs=0.01)


# ---------------------------------------------------------------------------------------------- scaled plant
HAUL_PROFILE = {"mass_kg": 165000.0, "rated_power_kw": 1800.0,
                "road_load": {"a_n": 32400.0, "b_n_per_mps": 0.0, "c_n_per_mps2": 21.6}}


def test_a_scaled_plant_takes_the_vehicles_size_from_its_profile():
    spec = PlantSpec.from_mapping({"fastsim_file": LINE_HAUL, "fuel_cut": True, "scale": True}).scaled_to(HAUL_PROFILE)
    assert (spec.mass_kg, spec.power_kw) == (165000.0, 1800.0)
    assert spec.rr_coef == pytest.approx(32400.0 / (165000.0 * 9.80665))  # 2 % of weight
    assert spec.drag_area_m2 == pytest.approx(36.0)  # 2 c / 1.2 kg/m^3
    assert spec.label == "Line_Haul_Conv scaled 165 t + payload, 1800 kW"
    assert PlantSpec(LINE_HAUL).scaled_to(HAUL_PROFILE) == PlantSpec(LINE_HAUL)  # no scale: unchanged
    for data, message in (({"fastsim_file": LINE_HAUL, "scale": True, "mass_kg": 1}, "drop mass_kg"),
                          ({"fastsim_file": LINE_HAUL, "scale": "yes"}, "scale='yes'"),
                          ({"fastsim_file": LINE_HAUL, "scale": True, "direction_only": True}, "exclude")):
        with pytest.raises(ConfigError, match=message):
            PlantSpec.from_mapping(data)
    with pytest.raises(ConfigError, match="profile needs mass_kg"):
        PlantSpec(LINE_HAUL, scale=True).scaled_to({"mass_kg": 1000.0})


def test_payload_along_a_route_follows_the_load_and_dump_stops():
    from carbon_ai_nodes.sim.plant import payload_along_route

    # shovel (load 220 t) -> 1000 m -> crusher (dump) -> 1000 m back: a 2 km loop
    route = Route.from_list([{"east_m": 0, "north_m": 0, "payload_kg": 220000},
                             {"east_m": 1000, "north_m": 0, "payload_kg": 0}])
    payload = payload_along_route(route, initial_payload_kg=5.0)
    got = payload(np.array([0.0, 500.0, 999.0, 1000.0, 1500.0, 2000.0, 2500.0, 3500.0]))
    assert got.tolist() == [220000, 220000, 220000, 0, 0, 220000, 220000, 0]
    no_stops = payload_along_route(Route.from_list([[0, 0, 0], [100, 0, 0]]), initial_payload_kg=7.0)
    assert no_stops(np.array([0.0, 150.0, 450.0])).tolist() == [7.0, 7.0, 7.0]


def test_the_scaled_line_haul_truck_drives_a_loaded_haul_truck_trace_and_burns_in_proportion():
    pytest.importorskip("fastsim")
    spec = PlantSpec(LINE_HAUL, fuel_cut=True, scale=True).scaled_to(HAUL_PROFILE)
    # 385 t up a 4 % ramp at 4 m/s: about 900 kW at the wheel, three times what the unscaled 331 kW engine has
    trace = steady(4.0, 0.04, duration_s=300.0, ramp_s=20.0)
    with pytest.raises(PlantError, match="not drivable"):
        score(PlantSpec(LINE_HAUL, 385000.0, fuel_cut=True), trace)
    loaded = score(spec, Trace(trace.time_s, trace.speed_mps, trace.grade, np.full(len(trace.time_s), 220000.0)))
    assert loaded.distance_km == pytest.approx(loaded.trace_distance_km, rel=0.01)
    # physics check: wheel work (lift + 2 % rolling) over fuel energy is a diesel's 30-40 % x 97 % gearbox
    work_mj = 385000.0 * 9.80665 * (0.04 + 0.02) * loaded.distance_km * 1000.0 / 1e6
    assert 0.28 < work_mj / loaded.fuel_energy_mj < 0.40, work_mj / loaded.fuel_energy_mj
    empty = score(spec, trace)  # no payload recorded: the empty truck
    assert 0.3 < empty.fuel_l / loaded.fuel_l < 0.55  # 165 t vs 385 t on the same grade


def test_a_payload_change_mid_trace_drives_in_pieces_and_sums_them():
    pytest.importorskip("fastsim")
    spec = PlantSpec(LINE_HAUL, fuel_cut=True, scale=True).scaled_to(HAUL_PROFILE)
    t = np.arange(0.0, 241.0)
    v = np.clip(np.minimum.reduce([t, np.abs(t - 120.0) - 5.0, 240.0 - t]) / 30.0, 0.0, 1.0) * 6.0  # a load stop
    g = np.full_like(t, 0.02)
    payload = np.where(t >= 120.0, 220000.0, 0.0)
    whole = score(spec, Trace(t, v, g, payload))
    first = score(spec, Trace(t[:121], v[:121], g[:121]))
    second = score(spec, Trace(t[120:] - 120.0, v[120:], g[120:], payload[120:]))
    assert whole.fuel_l == pytest.approx(first.fuel_l + second.fuel_l, rel=1e-9)
    assert whole.distance_km == pytest.approx(first.distance_km + second.distance_km, rel=1e-9)
    time_s, dist_m, co2_g = whole.series
    assert np.all(np.diff(time_s) > 0) and np.all(np.diff(dist_m) >= 0) and np.all(np.diff(co2_g) >= 0)
    assert co2_g[-1] == pytest.approx(whole.co2_kg * 1000.0)


def test_a_run_fastsim_drove_on_the_wrong_grade_is_refused_not_reported():
    pytest.importorskip("fastsim")
    # the trace at 10 m/s, the plant made to start at rest: FASTSim 3.1.0 falls behind at once and from then on
    # looks the grade up in an interpolator holding only the first sample's (0): the 3 % climb would be driven flat
    t = np.arange(0.0, 30.0)
    trace = Trace(t, np.full_like(t, 10.0), np.concatenate([[0.0], np.full(29, 0.03)]))
    with pytest.raises(PlantError, match=r"FASTSim drove \d+ % of the moving trace on another grade.*grade lookup"):
        drive(PlantSpec(LINE_HAUL), trace, speed_mps=0.0)
    # the plant starts at the trace's first speed (FASTSim's own start is at rest), so it climbs from the first step
    climbing = score(PlantSpec(LINE_HAUL), trace)
    level = score(PlantSpec(LINE_HAUL), Trace(t, trace.speed_mps, np.zeros_like(t)))
    assert climbing.fuel_l > 1.5 * level.fuel_l
    assert climbing.distance_km == pytest.approx(trace.distance_m / 1000.0, rel=0.01)


def launch_climb_descent(climb: float) -> Trace:
    """A flat launch to 12 m/s at 0.2 m/s^2, held; a ``climb`` (120-180 s), flat, a 2 % descent (240 s on)."""
    t = np.arange(0.0, 301.0)
    grade = np.where((t > 120) & (t <= 180), climb, np.where(t > 240, -0.02, 0.0))
    return Trace(t, np.minimum(t * 0.2, 12.0), grade)


def test_legs_of_one_grade_burn_what_one_run_burns_where_fastsim_follows_the_trace():
    pytest.importorskip("fastsim")
    spec = PlantSpec(LINE_HAUL)
    trace = launch_climb_descent(0.01)  # a 1 % climb the 32 t plant follows: one run, on the trace's grades
    whole = drive_legs(spec, trace)
    legs = drive_legs(spec, trace, by_grade=True)
    assert len(whole) == 1 and [first for first, _ in legs] == [0, 120, 180, 240]
    fuel_j = [sum(out["pt_type"]["Conv"]["fc"]["state"]["energy_fuel_joules"] for _, out in run)
              for run in (whole, legs)]
    dist_m = [sum(out["state"]["dist_meters"] for _, out in run) for run in (whole, legs)]
    assert fuel_j[1] == pytest.approx(fuel_j[0], rel=1e-3)  # within 0.1 %
    assert dist_m[1] == pytest.approx(dist_m[0], rel=1e-4)  # each leg restarts its engine power ramp


def test_a_trace_the_plant_falls_behind_on_is_driven_in_legs_on_its_own_grades():
    pytest.importorskip("fastsim")
    spec = PlantSpec(LINE_HAUL)
    # at the foot of a 3 % climb the 32 t plant needs more power at once than the file's 6 s power ramp lets its
    # engine add in a step: it falls behind, and in one run the rest (climb and descent) is driven flat
    trace = launch_climb_descent(0.03)
    with pytest.raises(PlantError, match="grade lookup fault"):
        drive(spec, trace)
    legs = drive_legs(spec, trace)
    assert [first for first, _ in legs] == [0, 120, 180, 240]
    driven = np.concatenate([np.asarray(out["history"]["grade_curr"])[1:] for _, out in legs])
    assert np.array_equal(driven, trace.grade[1:])  # every step on the recorded grade
    scored = score(spec, trace)
    assert scored.distance_km == pytest.approx(trace.distance_m / 1000.0, rel=0.01)  # behind a few metres
    level = score(spec, Trace(trace.time_s, trace.speed_mps, np.zeros_like(trace.time_s)))
    assert scored.fuel_l > 1.2 * level.fuel_l  # the climb costs more than the descent returns


# ---------------------------------------------------------------------------------------------- electric plant
ZOE = str(CONFIG_DIR / "plants" / "2022_Renault_Zoe_ZE50_R135.yaml")
TRACTOR_PROFILE = {"mass_kg": 12000.0, "rated_power_kw": 150.0, "grid_gco2_per_kwh": 350.0,
                   "road_load": {"a_n": 1180.0, "b_n_per_mps": 20.0, "c_n_per_mps2": 4.0}}


def test_the_factory_tractors_name_an_electric_plant_sized_to_them_with_the_models_grid_intensity():
    from types import SimpleNamespace

    from carbon_ai_nodes.graph.scenario import load_scenario
    from carbon_ai_nodes.sim.report import run_plant

    for v in load_scenario("factory_site").vehicles:
        spec = v.plant
        assert (spec.fuel, spec.scale, spec.mass_kg, spec.power_kw) == ("electric", True, 12000.0, 150.0)
        assert spec.grid_gco2_per_kwh == v.profile["grid_gco2_per_kwh"] == 350.0  # the model's, from the profile
        assert Path(spec.fastsim_file).is_file()
    # a run whose carbon_inference is given another intensity: the plant uses that one too (vehicle's beats node's)
    spec = PlantSpec(ZOE, fuel="electric", scale=True).scaled_to(TRACTOR_PROFILE)
    node = SimpleNamespace(name="carbon_inference", params={"grid_gco2_per_kwh": 120.0})
    run = SimpleNamespace(nodes=[node])
    assert run_plant(run, SimpleNamespace(plant=spec, params={})).grid_gco2_per_kwh == 120.0
    own = {"carbon_inference": {"grid_gco2_per_kwh": 80.0}}
    assert run_plant(run, SimpleNamespace(plant=spec, params=own)).grid_gco2_per_kwh == 80.0
    node.params["grid_gco2_per_kwh"] = float("nan")  # the node's default: the profile's
    assert run_plant(run, SimpleNamespace(plant=spec, params={})).grid_gco2_per_kwh == 350.0
    with pytest.raises(PlantError, match="not a battery-electric"):
        pytest.importorskip("fastsim")
        from carbon_ai_nodes.sim.plant import load_vehicle

        load_vehicle(PlantSpec(LINE_HAUL, fuel="electric", grid_gco2_per_kwh=350.0))


def test_the_scaled_electric_plant_draws_the_road_load_through_a_bev_drive_chain_and_regenerates_downhill():
    pytest.importorskip("fastsim")
    from carbon_ai_nodes.sim.plant import load_vehicle

    spec = PlantSpec(ZOE, fuel="electric", scale=True).scaled_to(TRACTOR_PROFILE)
    assert load_vehicle(spec, 25000.0) is not None  # the tractor with a loaded trailer loads
    flat = score(spec, steady(6.0, ramp_s=30.0))
    assert flat.fuel_l == 0.0 and flat.electric and flat.distance_km == pytest.approx(flat.trace_distance_km, rel=0.01)
    assert flat.co2_kg == pytest.approx(flat.fuel_energy_mj / 3.6 * 350.0 / 1000.0)  # kWh x the grid's g/kWh
    # held at 6 m/s on the flat, the wheels need the road load a + c v^2 (b is not in FASTSim): 1,324 N, 0.368 kWh
    # per km. A battery-electric drive chain (battery ~98 %, motor 85-95 %, gearbox 92 % in this file) takes
    # 70-95 % efficiency to the wheel, plus auxiliaries (250 W x 1.5 = 375 W, 0.017 kWh/km at 6 m/s)
    road_kwh_per_km = (1180.0 + 4.0 * 36.0) / 3600.0
    t, dist_m, co2_g = flat.series
    i = int(np.searchsorted(t, 120.0))
    held = (co2_g[-1] - co2_g[i]) / 350.0 / ((dist_m[-1] - dist_m[i]) / 1000.0)  # kWh/km
    assert road_kwh_per_km / 0.95 < held < road_kwh_per_km / 0.70 + 0.017, held
    # loaded (37 t) braking from 6 m/s to a stop at 0.6 m/s^2: the motor brakes and the battery takes energy back
    # (regeneration), so the battery's net output falls over the stop
    t = np.arange(0.0, 91.0)
    v = np.minimum.reduce([t / 20.0, np.ones_like(t), np.maximum(90.0 - t, 0.0) * 0.1]) * 6.0
    loaded = score(spec, Trace(t, v, np.zeros_like(t), np.full(len(t), 25e3)))
    time_s, _, co2_g = loaded.series
    assert co2_g[-1] < co2_g[int(np.searchsorted(time_s, 80.0))] and loaded.co2_kg > 0
    # a steady descent that needs braking is what FASTSim 3.1.0's BEV cannot drive (the Zoe as shipped neither):
    # a one-line error saying so, never a figure
    with pytest.raises(PlantError, match=r"exceeds current max charge power .*brakes harder than its drive can"):
        score(spec, steady(6.0, -0.02, duration_s=120.0, ramp_s=30.0))
