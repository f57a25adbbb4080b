"""The training script end to end on logged telemetry (the on-vehicle data path): fit, ONNX export,
parity check, model card; the exported model then loads in the inference backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import REPO

from carbon_ai_nodes.carbon.emission_model import cycle_rates, load_cycle
from carbon_ai_nodes.carbon.residual_backend import load_backend
from carbon_ai_nodes.carbon.training import mlp
from carbon_ai_nodes.common.vehicle_profile import load_profile


def test_train_on_telemetry_exports_a_checked_model(tmp_path, shared_data):
    vehicle = REPO / "config" / "vehicles" / "example_sedan.yaml"
    profile = load_profile(vehicle)
    cyc = load_cycle(str(shared_data / "cycles" / "udds.csv"))
    phys = cycle_rates(profile, cyc.speed_mps, cyc.accel_mps2, cyc.grade)
    # a vehicle that burns 10 % more than physics at low speed and 5 % less at high speed
    measured = phys.fuel_lph * (1.10 - 0.15 * np.clip(cyc.speed_mps / 25.0, 0, 1))
    csv = tmp_path / "log.csv"
    rows = ["speed_mps,accel_mps2,grade,payload_kg,coolant_temp_c,fuel_rate_lph"]
    rows += [f"{v},{a},{g},0,90,{f}" for v, a, g, f in zip(cyc.speed_mps, cyc.accel_mps2, cyc.grade, measured,
                                                            strict=True)]
    rows.append("nan,0,0,0,90,1.0")  # a broken log line is skipped, not fatal
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "van_residual.onnx"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "train_residual.py"), "--telemetry", str(csv),
                        "--vehicle", str(vehicle), "--out", str(out), "--hidden", "8", "--max-iter", "150"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ONNX parity ok" in r.stdout
    card = json.loads(out.with_suffix(".json").read_text())
    err = card["error"]["train"]["samples"]
    assert err["model_mape_pct"] < err["physics_mape_pct"] / 2
    assert "Model card" in out.with_suffix(".md").read_text()
    backend = load_backend("onnxruntime-cpu", out)
    assert backend.model_id.startswith("van_residual-")


def test_a_model_fitted_on_some_features_ignores_the_others():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    target = 1.0 + 0.1 * np.tanh(x[:, 1])  # one sample per group, physics baseline 1: r should follow x1
    small = mlp.fit_grouped(x[:, [1, 3]], np.ones(300), np.arange(300), target, hidden=(4,), l2=1e-5, max_iter=200)
    wide = mlp.widen(small, [1, 3], 4)
    assert np.allclose(wide.predict(x), small.predict(x[:, [1, 3]]))
    noisy = x.copy()
    noisy[:, [0, 2]] = rng.normal(scale=1e3, size=(300, 2))  # the ignored columns may hold anything finite
    assert np.allclose(wide.predict(noisy), wide.predict(x))
    assert np.corrcoef(wide.predict(x), np.tanh(x[:, 1]))[0, 1] > 0.9  # and it did learn from what it sees


def test_shipped_residual_sees_the_operating_point_not_the_vehicle():
    from carbon_ai_nodes.carbon.residual_features import FEATURES
    from carbon_ai_nodes.commands.estimate import shipped_model_path

    path = Path(shipped_model_path())
    card = json.loads(path.with_suffix(".json").read_text())
    used = card["input"]["features_used"]
    assert {"mass_t", "power_to_mass_kw_per_t", "displacement_l"}.isdisjoint(used) and "bmep_mpa" in used
    backend = load_backend("onnxruntime-cpu", path)
    low, high = np.array(card["input"]["feature_low"]), np.array(card["input"]["feature_high"])
    x = np.random.default_rng(2).uniform(low, high, size=(50, len(FEATURES))).astype(np.float32)
    moved = x.copy()
    for name in ("mass_t", "power_to_mass_kw_per_t", "displacement_l"):
        i = FEATURES.index(name)
        moved[:, i] = np.random.default_rng(3).uniform(low[i], high[i], size=50)
    assert np.allclose(backend.run(moved), backend.run(x), atol=1e-6)
