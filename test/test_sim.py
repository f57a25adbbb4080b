"""Telemetry simulator: the core's dynamics, route following, command obedience and faults; the node over DDS."""

from __future__ import annotations

import math

import pytest

from carbon_ai_nodes.carbon.emission_model import accessory_kw
from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.common.params import ParameterError
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
from carbon_ai_nodes.graph.scenario import load_scenario
from carbon_ai_nodes.sim.vehicle_sim import DriveTrace, Route, SimParams, VehicleSim

DT = 0.02


def haul_sim(vehicle: str = "truck1", **overrides) -> VehicleSim:
    s = load_scenario("haul_truck_fleet")
    v = s.vehicle(vehicle)
    p = SimParams(scenario_file=str(s.path), **overrides)
    return VehicleSim(p, VehicleProfile.from_mapping(v.profile), route=Route.from_list(v.route, v.cruise_speed_mps),
                      origin=s.origin, initial_payload_kg=v.initial_payload_kg)


def run(sim: VehicleSim, seconds: float) -> list:
    out = []
    for _ in range(int(seconds / DT)):
        sim.step(DT)
        out.append(sim.readings(DT))
    return out


def test_truck_loads_at_shovel_climbs_slower_loaded_and_burns_more():
    sim = haul_sim(stop_dwell_s=2.0)
    run(sim, 3.0)  # starts at the shovel: loads, dwells
    assert sim.truth.payload_kg == 220000
    run(sim, 90.0)
    s = sim.truth
    assert s.grade == pytest.approx(0.05)  # on the ramp
    assert 3.0 < s.speed_mps < 12.0  # power-limited below cruise
    assert s.fuel_lph > 300.0 and s.co2_g_s > 200.0
    assert s.up_m > 0.0
    assert s.co2_g == pytest.approx(s.fuel_l * 2689.0, rel=0.01)  # diesel CO2 per litre


def test_engine_load_is_the_engines_output_share_not_the_wheels():
    """J1939's engine load (SPN 92) includes the driveline loss and the accessories: the calibrated mass reads
    brake power = accessories + wheel / eta_dt from it (it read low by eta_dt when the simulator sent wheel / rated)."""
    sim = haul_sim(stop_dwell_s=2.0)
    run(sim, 60.0)  # loaded, on the ramp
    s, p = sim.truth, sim.profile
    assert s.power_kw > 100.0
    expected_kw = min(s.power_kw / p.drivetrain_efficiency + accessory_kw(p), p.rated_power_kw)
    assert s.engine_load_pct == pytest.approx(expected_kw / p.rated_power_kw * 100.0)
    assert s.engine_load_pct > s.power_kw / p.rated_power_kw * 100.0 + 1.0


def test_speed_limit_command_is_obeyed_and_expires():
    sim = haul_sim(stop_dwell_s=0.0, command_timeout_s=1.0)
    run(sim, 40.0)
    for _ in range(int(20 / DT)):  # a fresh command every step
        sim.command(sim.truth.t_s, 3.0, 100.0, False)
        sim.step(DT)
    assert sim.truth.speed_mps == pytest.approx(3.0, abs=0.05)
    run(sim, 30.0)  # the command went stale: the driver returns to its own speed
    assert sim.truth.speed_mps > 5.0


def test_estop_stops_the_vehicle_and_bad_commands_are_refused():
    sim = haul_sim(stop_dwell_s=0.0)
    run(sim, 40.0)
    assert not sim.command(sim.truth.t_s, math.nan, 100.0, False)
    assert not sim.command(sim.truth.t_s, -1.0, 100.0, False)
    for _ in range(int(10 / DT)):
        sim.command(sim.truth.t_s, 10.0, 100.0, True)
        sim.step(DT)
    assert sim.truth.speed_mps == 0.0


def test_faults_nan_burst_gnss_jump_and_silence_within_their_windows():
    sim = haul_sim(faults=("nan_burst", "gnss_jump"), fault_start_s=5.0, fault_length_s=2.0, gnss_sigma_m=0.0)
    before = run(sim, 4.9)
    assert all(r.imu is None or math.isfinite(r.imu[0]) for r in before)
    during = run(sim, 2.0)
    assert any(r.imu is not None and math.isnan(r.imu[0]) for r in during)
    assert any(r.engine is not None and math.isnan(r.engine[2]) for r in during)
    fix = next(r.gnss for r in reversed(during) if r.gnss is not None)
    lat, lon, _ = sim.frame.to_geodetic(sim.truth.east_m, sim.truth.north_m, 0.0)
    assert abs(fix[0] - lat) * 111_000 > 30.0  # jumped ~50 m north
    run(sim, 0.2)
    after = run(sim, 1.0)
    assert all(math.isfinite(r.imu[0]) for r in after if r.imu is not None)

    quiet = haul_sim(faults=("silence",), fault_start_s=1.0, fault_length_s=1.0, fault_period_s=3.0)
    run(quiet, 1.05)
    window = run(quiet, 0.9)
    assert all(r.gnss is None and r.imu is None and r.odom is None and r.engine is None for r in window)
    assert any(r.imu is not None for r in run(quiet, 1.5))


def test_dropouts_follow_the_probability_and_the_seed():
    a = [r.imu is None for r in run(haul_sim(dropout_prob=0.2, seed=7), 20.0)]
    b = [r.imu is None for r in run(haul_sim(dropout_prob=0.2, seed=7), 20.0)]
    assert a == b
    assert 0.15 < sum(a) / len(a) < 0.25


def test_drive_cycle_trace_is_followed(shared_data):
    s = load_scenario("delivery_van_fleet")
    v = s.vehicle("van3")
    trace = DriveTrace.from_csv(str(shared_data / "cycles" / "udds.csv"))
    sim = VehicleSim(SimParams(profile_file="x"), VehicleProfile.from_mapping(v.profile), trace=trace)
    errors = []
    for _ in range(int(300 / DT)):
        sim.step(DT)
        errors.append(abs(sim.truth.speed_mps - trace.at(sim.truth.t_s)[0]))
    assert sum(errors) / len(errors) < 1.0  # tracks the trace within 1 m/s on average
    assert sim.truth.distance_m > 1000.0


def test_bad_parameters_and_routes_name_the_key():
    with pytest.raises(ParameterError, match="sim.faults"):
        SimParams(profile_file="x", faults=("meteor",))
    with pytest.raises(ParameterError, match="sim.scenario_file"):
        SimParams()
    with pytest.raises(ConfigError, match=r"route\[1\].east_m"):
        Route.from_list([[0, 0, 0], [math.nan, 0, 0]])
    with pytest.raises(ConfigError, match="at least two"):
        Route.from_list([[0, 0, 0]])


@pytest.mark.parametrize("east_m, north_m", [(0.0, 1000.0), (1000.0, 0.0), (-3000.0, 4000.0)])
def test_simulated_gnss_decodes_to_the_true_position_in_fusions_frame(east_m, north_m):
    # The simulator once placed fixes on a flat earth while fusion decodes them on WGS84: 1000 m north came back
    # as 994.9 m. Both now use core.geodesy, so a noiseless fix decodes to where the vehicle is.
    from carbon_ai_nodes.common.geodesy import LocalFrame

    sim = haul_sim(gnss_sigma_m=0.0)
    sim.truth.east_m, sim.truth.north_m = east_m, north_m
    fix = sim.readings(DT).gnss
    e, n, _ = LocalFrame(*load_scenario("haul_truck_fleet").origin).to_enu(*fix)
    assert abs(e - east_m) < 0.01 and abs(n - north_m) < 0.01, (e, n)
