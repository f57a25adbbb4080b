"""carbon_inference's calibrated model over real DDS: one CalibratedEstimate per state beside CarbonEstimate,
the measured CO2 when the fuel meter reads, the calibration on /diagnostics, and the calibration file: a
corrupt one is ignored with a warning, a saved one is reloaded at the next start."""

from __future__ import annotations

import json
import math

import pytest
from conftest import REPO
from diagnostic_msgs.msg import DiagnosticArray
from test_inference_node import diag_value, vstate
from test_vehicle_calibration import PAYLOAD_KG, Truck, drive

from carbon_ai_msgs.msg import CalibratedEstimate, CarbonEstimate, VehicleState
from carbon_ai_nodes.carbon.emission_model import FUEL_CO2_G_PER_L
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos

TRUCK_PROFILE = str(REPO / "config" / "vehicles" / "class8_truck.yaml")  # the numbers of the synthetic truck's
N_STATES = 300


def truck_states(n: int) -> list[VehicleState]:
    """A synthetic class-8 truck's states at 1 s steps with engine load and fuel meter (the last 10 without a
    meter reading)."""
    truck, out = Truck(), []
    for i, (t, v, a, g) in enumerate(drive(n, seed=4)):
        m = vstate(1.0 + t, speed=v, accel=a, asset="truck1")
        m.grade, m.payload_kg, m.engine_speed_rpm = g, PAYLOAD_KG, 800.0 + 40.0 * v
        fuel, load = truck.engine(v, a, g)
        m.engine_load_pct = load
        m.fuel_rate_lph = fuel if i < n - 10 else math.nan
        out.append(m)
    return out


def run_node(probe, ns: str, cal_file: str, states: list[VehicleState]):
    """Start carbon_inference on the truck, publish ``states``; returns (calibrated, generic, diags, output)."""
    cal = probe.collect(CalibratedEstimate, f"{ns}/calibrated_estimate", qos.command(depth=1000))
    est = probe.collect(CarbonEstimate, f"{ns}/carbon_estimate", qos.command(depth=1000))
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    pub = probe.publisher(VehicleState, f"{ns}/vehicle_state", qos.command(depth=1000))
    params = {"vehicle_profile": TRUCK_PROFILE, "model_path": "none", "diagnostics_period_s": 0.2,
              "queue_depth": 1000, "calibration_file": cal_file, "calibration_save_period_s": 0.0}
    with NodeProcess("carbon_inference", namespace=ns, params=params) as node:
        assert probe.wait_for_subscribers(pub, timeout_s=30), node.output
        assert probe.wait_for_publishers(f"{ns}/calibrated_estimate", timeout_s=30), node.output
        for m in states:
            pub.publish(m)
        assert probe.spin_until(lambda: len(cal) >= len(states) and len(est) >= len(states), timeout_s=60), \
            (len(cal), len(est), node.output)
        ours = f"{ns}/carbon_inference"
        assert probe.spin_until(lambda: diag_value(diags, ours, "calibration.samples") == str(len(states)),
                                timeout_s=20), [kv.key for a in diags for s in a.status for kv in s.values]
        assert node.stop() == 0
        output = node.output
    assert "Traceback" not in output
    return cal, est, [diags, ours], output


def test_calibrated_estimate_beside_the_generic_one_saved_and_reloaded(probe, tmp_path):
    cal_file = tmp_path / "truck1.json"
    cal_file.write_text("{ this is not json")
    states = truck_states(N_STATES)
    cal, est, (diags, ours), output = run_node(probe, "/calib1", str(cal_file), states)
    assert "unreadable calibration" in output  # the corrupt file: a warning, then a fresh start
    assert len(cal) == N_STATES and [c.header.stamp.sec for c in cal] == [e.header.stamp.sec for e in est]
    co2_per_lph = FUEL_CO2_G_PER_L["diesel"] / 3600.0
    for c, m in zip(cal, states, strict=True):
        assert math.isfinite(c.co2_rate_g_s) and c.co2_rate_g_s >= 0 and math.isfinite(c.uncertainty_g_s)
        if math.isfinite(m.fuel_rate_lph):
            assert c.measured_co2_rate_g_s == pytest.approx(m.fuel_rate_lph * co2_per_lph)
        else:
            assert math.isnan(c.measured_co2_rate_g_s)
    truck = Truck()
    last = cal[-1]
    assert abs(last.mass_kg / truck.mass_kg - 1) <= 0.05  # learned from 5 minutes of driving
    assert abs(cal[0].mass_kg / truck.mass_kg - 1) > 0.05  # the profile + payload it started from
    assert last.parameter_names[0] == "mass_kg" and last.parameter_sigmas[0] == pytest.approx(last.mass_sigma_kg)
    assert float(diag_value(diags, ours, "calibration.mass_kg")) == pytest.approx(last.mass_kg, rel=1e-4)
    assert float(diag_value(diags, ours, "calibration.rejected.no_fuel")) >= 1  # the states without a meter
    assert math.isfinite(float(diag_value(diags, ours, "calibration.error_60s_pct")))
    assert math.isfinite(float(diag_value(diags, ours, "calibration.generic_error_60s_pct")))

    saved = json.loads(cal_file.read_text())  # saved at shutdown
    assert saved["vehicle"]["x"][0] == pytest.approx(last.mass_kg, rel=1e-6)
    later = [vstate(1000.0 + i, speed=0.0, accel=0.0, asset="truck1") for i in range(3)]
    cal2, _, _, output2 = run_node(probe, "/calib2", str(cal_file), later)
    assert "calibration reloaded" in output2
    assert cal2[0].mass_kg == pytest.approx(last.mass_kg, rel=1e-6)
