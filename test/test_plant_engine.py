"""The plant's engine, live (sim/plant_engine.py): the simulator's fuel meter reads a FASTSim file's fuel
converter, not carbon_ai's emission model. Checked against FASTSim itself where it is installed."""

import csv

import numpy as np
import pytest

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.graph.scenario import CHECKOUT_DIR, CONFIG_DIR
from carbon_ai_nodes.sim.plant_engine import PlantEngine

PLANTS = CONFIG_DIR / "plants"
LINE_HAUL = PLANTS / "Line_Haul_Conv.yaml"
PACIFICA = PLANTS / "2026_Chrysler_Pacifica_Select.yaml"
UDDS = CHECKOUT_DIR.parent / "shared" / "data" / "cycles" / "udds.csv"


def test_reads_both_fastsim_array_forms_and_sizes_the_engine_to_the_vehicle():
    lh = PlantEngine.from_file(LINE_HAUL, 331.0, "diesel")
    rd = PlantEngine.from_file(PLANTS / "Regional_Delivery_Class_8_Truck.yaml", 212.0, "diesel")  # {v, dim, data}
    assert lh.eff.max() == pytest.approx(0.40) and rd.eff.max() == pytest.approx(0.42)
    assert lh.aux_w == pytest.approx(3500.0) and lh.transmission_eff == pytest.approx(0.97) and not lh.fuel_cut
    big = PlantEngine.from_file(LINE_HAUL, 1800.0, "diesel", fuel_cut=True)
    assert big.aux_w == pytest.approx(3500.0 * 1800 / 331) and big.fuel_cut
    # the same power fraction burns in proportion to the size: the curve's shape is kept
    assert big.fuel_power_w(0.5 * 1800e3, 10.0) == pytest.approx(lh.fuel_power_w(0.5 * 331e3, 10.0) * 1800 / 331)
    assert "fuel cut on" in big.describe() and "fuel cut off" in lh.describe()


def test_fuel_cut_start_stop_and_idle_policy():
    van = PlantEngine.from_file(PACIFICA, 120.0, "diesel")  # the file: DFCO from 10 m/s at <= -0.3 m/s^2, start-stop
    assert van.fuel_cut and van.start_stop and van.fuel_cut_min_speed_mps == 10.0
    assert van.fuel_power_w(-5000.0, 15.0, -0.5) == 0.0  # overrun above the cut-off speed: no fuel
    idle = van.fuel_power_w(0.0, 0.0) if not van.start_stop else van.idle_fuel_w
    assert van.fuel_power_w(-5000.0, 8.0, -0.5) == pytest.approx(idle)  # below it: the engine idles
    assert van.fuel_power_w(-500.0, 15.0, -0.1) > 0.0  # a gentle coast is not deceleration enough to cut
    assert van.fuel_power_w(0.0, 0.0) == 0.0  # stopped: start-stop switched it off
    truck = PlantEngine.from_file(LINE_HAUL, 331.0, "diesel")
    co2, fuel = truck.rates(0.0, 0.0)
    assert 0.5 < fuel < 3.0 and co2 == pytest.approx(fuel * 10180 / 3.78541 / 3600)  # aux 3.5 kW at low load
    p100 = truck.fuel_power_w(100e3, 20.0)
    # 100 kW at the wheels through the 0.97 gearbox plus 3.5 kW aux is 0.32 of rated: 0.388 on the file's map
    assert (100e3 / 0.97 + 3500.0) / p100 == pytest.approx(0.388, abs=0.002)


def test_bad_plant_files_and_fuels_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pt_type: {BEV: {}}\n")
    with pytest.raises(ConfigError, match="not a FASTSim 3 conventional vehicle file"):
        PlantEngine.from_file(bad, 100.0, "diesel")
    with pytest.raises(ConfigError, match="fuel='electric' has no engine"):
        PlantEngine.from_file(LINE_HAUL, 100.0, "electric")
    with pytest.raises(ConfigError, match="rated_power_kw=0"):
        PlantEngine.from_file(LINE_HAUL, 0.0, "diesel")


def test_the_simulators_fuel_meter_is_the_plant_engine_where_a_plant_is_named():
    from carbon_ai_nodes.carbon.emission_model import physics_rates
    from carbon_ai_nodes.graph.scenario import SCENARIO_DIR
    from carbon_ai_nodes.sim.ros.sim_node import build_sim
    from carbon_ai_nodes.sim.vehicle_sim import SimParams

    sim, _ = build_sim(SimParams(scenario_file=str(SCENARIO_DIR / "haul_truck_fleet.yaml"), vehicle_id="truck2",
                                 stop_dwell_s=0.0))
    assert sim.engine is not None and sim.engine.rated_power_w == 1800e3 and sim.engine.fuel_cut
    diffs = []
    for _ in range(600):  # 30 s away from the crusher
        s = sim.step(0.05)
        model = physics_rates(sim.profile, s.speed_mps, s.accel_mps2, s.grade, s.payload_kg)
        diffs.append(abs(s.fuel_lph - model.fuel_lph) / max(model.fuel_lph, 1.0))
    assert s.speed_mps > 3.0 and max(diffs) > 0.05  # not the emission model grading itself
    tractor, _ = build_sim(SimParams(scenario_file=str(SCENARIO_DIR / "factory_site.yaml"), vehicle_id="tractor1"))
    assert tractor.engine is None  # electric: no engine map; the live meter is the emission model


@pytest.mark.parametrize("plant, rated_kw, fuel, mass_kg, speed_scale, fuel_cut", [
    (PACIFICA, 211.088, "gasoline", 3300.0, 1.0, None),
    (LINE_HAUL, 331.0, "diesel", None, 0.8, None),
    (LINE_HAUL, 331.0, "diesel", None, 0.8, True),
])
def test_engine_map_burns_what_fastsim_burns_for_the_same_wheel_power(plant, rated_kw, fuel, mass_kg, speed_scale,
                                                                      fuel_cut):
    pytest.importorskip("fastsim")
    from carbon_ai_nodes.sim.plant import PlantSpec, Trace, drive

    rows = list(csv.DictReader(UDDS.open()))
    t = [float(r["time_s"]) for r in rows]
    v = [float(r["speed_mps"]) * speed_scale for r in rows]
    out = drive(PlantSpec(str(plant), mass_kg, fuel, fuel_cut), Trace(np.asarray(t), np.asarray(v), np.zeros(len(t))))
    power = np.asarray(out["history"]["pwr_tractive_watts"])
    speed = np.asarray(out["history"]["speed_ach_meters_per_second"])
    engine = PlantEngine.from_file(plant, rated_kw, fuel, fuel_cut)
    dt = np.diff(t)
    accel = np.diff(speed) / dt
    mine = sum(engine.fuel_power_w(p, s, a) * d for p, s, a, d in zip(power[1:], speed[1:], accel, dt, strict=True))
    theirs = out["pt_type"]["Conv"]["fc"]["state"]["energy_fuel_joules"]
    assert mine == pytest.approx(theirs, rel=0.02)
