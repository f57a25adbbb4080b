"""eco_speed plans with the vehicle's calibrated model once its calibration is confident, and says which model
it used (planning/calibrated_model.calibrated_model); the generic model otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_eco_speed import haul

from carbon_ai_nodes.carbon.emission_model import FUEL_LHV_MJ_PER_L, G_MPS2
from carbon_ai_nodes.carbon.vehicle_calibration import CalibrationSample, VehicleCalibration
from carbon_ai_nodes.planning.calibrated_model import calibrated_model
from carbon_ai_nodes.planning.eco_speed import eco_profile


def learned_truck(profile, payload_kg: float) -> tuple[VehicleCalibration, float]:
    """A calibration fed 15 min of a haul truck 10 % heavier than its profile with 20 % more rolling resistance,
    30 % more drag and an engine burning 10 % more per kW; returns it and the true empty mass (kg)."""
    mass = (profile.mass_kg + payload_kg) * 1.1
    a_n, c_n = profile.a_n * mass / profile.mass_kg * 1.2, profile.c_n_per_mps2 * 1.3
    cal = VehicleCalibration(profile, payload_kg=payload_kg)
    rng = np.random.default_rng(7)
    v, grade = 0.0, 0.0
    for t in range(900):
        if t % 60 == 0:
            target, grade = float(rng.choice([0.0, 4.0, 8.0, 12.0])), float(rng.choice([0.0, 0.02, -0.02, 0.04]))
        a = float(np.clip(0.1 * (target - v), -0.5, 0.3))
        v_next = max(v + a, 0.0)
        a = v_next - v
        wheel_kw = (mass * (a + G_MPS2 * grade) + a_n + c_n * v * v) * v / 1000.0 if v > 0 else 0.0
        brake_kw = min(40.0 + max(wheel_kw, 0.0) / profile.drivetrain_efficiency, profile.rated_power_kw)
        fuel_kw = (200.0 + brake_kw * 2.6) if v < 0.1 or wheel_kw > 0 else 0.0
        load = brake_kw / profile.rated_power_kw * 100.0 if wheel_kw > 0 else 0.0
        cal.update(CalibrationSample(float(t), v, a, grade, payload_kg, math.nan, load,
                                     fuel_kw / (FUEL_LHV_MJ_PER_L["diesel"] * 1000.0 / 3600.0)))
        v = v_next
    return cal, mass - payload_kg


def test_generic_model_until_a_confident_calibration(tmp_path):
    profile, route, v = haul()
    assert calibrated_model(profile, "", 0.05) == (profile, None, "no calibration_file")
    path = tmp_path / "truck1.json"
    _, rates, note = calibrated_model(profile, str(path), 0.05)
    assert rates is None and "no saved calibration" in note
    VehicleCalibration(profile, payload_kg=v.initial_payload_kg).save(path)  # the profile's prior: not confident
    _, rates, note = calibrated_model(profile, str(path), 0.05)
    assert rates is None and "not confident" in note

    cal, true_empty_kg = learned_truck(profile, v.initial_payload_kg)
    assert cal.is_confident(0.05)
    cal.save(path)
    planned_profile, rates, note = calibrated_model(profile, str(path), 0.05)
    assert rates is not None and note == ""
    assert planned_profile.mass_kg == pytest.approx(true_empty_kg, rel=0.05)
    generic = eco_profile(profile, route, initial_payload_kg=v.initial_payload_kg, dwell_s=8.0)
    calibrated = eco_profile(planned_profile, route, initial_payload_kg=v.initial_payload_kg, dwell_s=8.0,
                             rates=rates)
    assert (generic.model, calibrated.model) == ("generic", "calibrated")
    # the heavier, draggier truck with the thirstier engine costs more per loop than its profile predicts
    assert calibrated.baseline.co2_g > 1.1 * generic.baseline.co2_g
    assert math.isfinite(calibrated.predicted_saving_pct)
    assert np.all(calibrated.speed_cap_mps <= calibrated.points.cruise_mps + 1e-9)


def test_node_switches_to_the_calibrated_model_once_confident(probe, tmp_path):
    from conftest import REPO
    from diagnostic_msgs.msg import DiagnosticArray
    from test_inference_node import diag_value

    from carbon_ai_msgs.msg import RoutePlan
    from carbon_ai_nodes.graph.node_process import NodeProcess
    from carbon_ai_nodes.ros import qos

    profile, _, v = haul()
    path = tmp_path / "truck1.json"
    VehicleCalibration(profile, payload_kg=v.initial_payload_kg).save(path)  # not confident yet
    plans = probe.collect(RoutePlan, "/ecal/route_plan", qos.latched())
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    params = {"scenario_file": str(REPO / "config" / "scenarios" / "haul_truck_fleet.yaml"), "vehicle_id": "truck1",
              "calibration_file": str(path), "calibration_check_period_s": 0.5, "diagnostics_period_s": 0.2}
    ours = "/ecal/eco_speed"
    with NodeProcess("eco_speed", namespace="/ecal", params=params) as node:
        assert probe.spin_until(lambda: plans and diag_value(diags, ours, "model") == "generic", 60), node.output
        assert "not confident" in diag_value(diags, ours, "model_note")
        first = plans[-1]
        learned_truck(profile, v.initial_payload_kg)[0].save(path)
        assert probe.spin_until(lambda: diag_value(diags, ours, "model") == "calibrated"
                                and plans[-1].plan_id != first.plan_id, 60), node.output
        assert node.stop() == 0
    assert "planned with the calibrated model" in node.output
    assert plans[-1].baseline_co2_kg > 1.1 * first.baseline_co2_kg
