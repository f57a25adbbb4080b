"""The estimator (and the carbon-ai estimate CLI) against EPA 2022 certification CO2 on manufacturers the
model and the physics constants were NOT fitted on: conventional gasoline vehicles, HWFE and FTP-75."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from carbon_ai_nodes.carbon.carbon_estimator import CarbonEstimator
from carbon_ai_nodes.carbon.emission_model import (
    FTP_BAG1_S,
    coolant_after_start_c,
    cycle_totals,
    ftp75_weighted_g_per_mi,
    load_cycle,
)
from carbon_ai_nodes.carbon.residual_backend import select_backend
from carbon_ai_nodes.carbon.training import epa
from carbon_ai_nodes.commands.estimate import shipped_model_path

M_PER_MI = 1609.344


@pytest.fixture(scope="module")
def held_out(shared_data):
    tests = [t for t in epa.load_tests(shared_data / "epa_2022_test_cars_a_to_l.csv") if epa.is_test_manufacturer(t)]
    assert len(tests) > 400
    return tests


def test_only_conventional_vehicles_with_a_top_gear_ratio(shared_data):
    tests = epa.load_tests(shared_data / "epa_2022_test_cars_a_to_l.csv")
    names = {t.model.upper() for t in tests}
    # hybrids and plug-ins the EPA file names like conventional models are excluded
    assert not names & {"INSIGHT", "IONIQ", "NIRO", "NSX", "330E", "530E XDRIVE", "WRANGLER 4DR 4XE"}
    assert not [t for t in tests if t.manufacturer == "FOMOCO" and t.model == "Maverick"
                and t.profile.displacement_l == 2.5 and t.profile.rated_power_kw < 125]
    assert all(t.profile.top_gear_rpm_per_mps for t in tests)  # the N/V ratio sets the engine speed
    # sanity of the units: a 2022 car turns 1,000-4,000 rpm at 70 mph in top gear
    assert all(1000 < t.profile.top_gear_rpm_per_mps * 31.29 < 4000 for t in tests)
    # the cylinder count sets the cylinder size (friction per litre): 0.25-1.0 L per cylinder in 2022 cars
    assert sum(t.profile.cylinders is None for t in tests) <= 4
    assert all(0.25 < t.profile.displacement_l / t.profile.cylinders < 1.0 for t in tests if t.profile.cylinders)


def test_plug_in_hybrids_named_as_conventional_are_excluded(shared_data):
    # A test vehicle with charge-depleting tests is a plug-in, whatever its name: the held-out "Range Rover
    # Sport" LW807615 (2.0 L 4-cylinder rated at the 400 hp system power, 1 gear; charge-depleting UDDS and
    # highway rows in the file), the Ferrari 296 GTB and SF90. The conventional Range Rover Sport SVR stays.
    tests = epa.load_tests(shared_data / "epa_2022_test_cars_a_to_l.csv")
    rrs = [t for t in tests if t.model.startswith("Range Rover Sport")]
    # (conventional Range Rover Sports with a negative-B coast-down fit, 3.0 L and 5.0 L, stay too)
    assert ("Range Rover Sport SVR", 5.0) in {(t.model, t.profile.displacement_l) for t in rrs}
    assert not [t for t in rrs if t.profile.displacement_l == 2.0]
    assert not [t for t in tests if t.manufacturer == "Ferrari" and ("296" in t.model or "SF90" in t.model)]


def test_every_row_with_a_positive_road_load_curve_is_loaded_and_the_rest_counted(shared_data):
    skipped: dict[str, int] = {}
    tests = epa.load_tests(shared_data / "epa_2022_test_cars_a_to_l.csv", skipped)
    # a negative B is a normal coast-down fit: those vehicles are in (they were silently dropped before)
    negative_b = [t for t in tests if t.profile.b_n_per_mps < 0]
    print(f"\nEPA rows loaded: {len(tests)} tests ({len(negative_b)} with B < 0); skipped: {skipped}")
    assert len(negative_b) > 400 and len(tests) > 1600
    # what is left out is counted by reason: only rows without a number (16 FTP/HWFE rows without CO2)
    assert set(skipped) <= {"a missing or non-numeric value"} and sum(skipped.values()) <= 20


def test_transmission_type_from_the_epa_file(shared_data):
    tests = epa.load_tests(shared_data / "epa_2022_test_cars_a_to_l.csv")
    kinds = {t.profile.transmission for t in tests}
    assert kinds <= {"automatic", "manual", "automated_manual", "cvt", None}
    assert sum(t.profile.transmission is None for t in tests) <= 60  # the file's "Other": the shared gear model
    assert sum(t.profile.transmission == "manual" for t in tests) > 50  # a semi-automatic counts as automatic


def test_mape_per_vehicle_counts_each_vehicle_once(held_out):
    hwfe = [t for t in held_out if t.test == "HWFE"]
    a, b = hwfe[0], next(t for t in hwfe if t.profile != hwfe[0].profile)
    # vehicle a tested three times (100, 110, 120 g/mi: mean 110), vehicle b once (200); predictions 110 and 190
    tests = [dataclasses.replace(a, measured_g_per_mi=m) for m in (100.0, 110.0, 120.0)]
    tests.append(dataclasses.replace(b, measured_g_per_mi=200.0))
    pred = [110.0, 110.0, 110.0, 190.0]
    assert epa.mape_per_vehicle(tests, pred) == pytest.approx((0.0 + 5.0) / 2)
    assert epa.mape(np.array(pred), np.array([t.measured_g_per_mi for t in tests])) == pytest.approx(
        (10 / 100 + 0 + 10 / 120 + 10 / 200) * 100 / 4)
    with pytest.raises(ValueError):
        epa.mape_per_vehicle(tests, pred[:3])


def predict_g_per_mi(estimator: CarbonEstimator, test: str, hw, udds) -> float:
    """The test's reported figure from the estimator: HWFE warm; FTP-75 bags cold/stabilised/hot, weighted."""
    if test == "HWFE":
        e = estimator.estimate_arrays(hw.speed_mps, hw.accel_mps2, hw.grade)
        return cycle_totals(hw.time_s, e.co2_g_s, e.fuel_lph, hw.distance_m).co2_g / (hw.distance_m / M_PER_MI)
    bag1, bag2 = udds.slice_s(0, FTP_BAG1_S), udds.slice_s(FTP_BAG1_S, 1e9)
    totals = []
    for bag, cold in ((bag1, True), (bag2, False), (bag1, False)):
        cool = coolant_after_start_c(bag.time_s) if cold else np.nan
        e = estimator.estimate_arrays(bag.speed_mps, bag.accel_mps2, bag.grade, 0.0, cool)
        totals.append(cycle_totals(bag.time_s, e.co2_g_s, e.fuel_lph, bag.distance_m).co2_g)
    return ftp75_weighted_g_per_mi(totals, [bag1.distance_m, bag2.distance_m, bag1.distance_m])


def mape_by_test(held_out, backend_name, shared_data) -> dict[str, float]:
    """Held-out MAPE (%) per EPA test (``HWFE``, ``FTP``) and per vehicle (``HWFE/vehicle``, ``FTP/vehicle``)."""
    hw = load_cycle(str(shared_data / "cycles" / "hwfet.csv"))
    udds = load_cycle(str(shared_data / "cycles" / "udds.csv"))
    backend = select_backend(shipped_model_path(), backend_name).backend
    out = {}
    for name in ("HWFE", "FTP"):
        tests = [t for t in held_out if t.test == name]
        pred = np.array([predict_g_per_mi(CarbonEstimator(t.profile, backend), name, hw, udds) for t in tests])
        out[name] = epa.mape(pred, np.array([t.measured_g_per_mi for t in tests]))
        out[f"{name}/vehicle"] = epa.mape_per_vehicle(tests, pred)
    return out


def test_held_out_manufacturers_mape(held_out, shared_data):
    model = mape_by_test(held_out, "onnxruntime-cpu", shared_data)
    physics = mape_by_test(held_out, "physics", shared_data)
    for unit in ("test", "vehicle"):
        key = "" if unit == "test" else "/vehicle"
        print(f"\nheld-out MAPE per {unit}: model HWFE {model['HWFE' + key]:.2f} % FTP-75 {model['FTP' + key]:.2f} %; "
              f"physics HWFE {physics['HWFE' + key]:.2f} % FTP-75 {physics['FTP' + key]:.2f} %", end="")
    print()
    print(f"held-out: {sum(t.test == 'HWFE' for t in held_out)} HWFE and {sum(t.test == 'FTP' for t in held_out)} "
          f"FTP-75 tests, every conventional gasoline vehicle with a positive road-load curve")
    # Scored once, after the choices (2026-12-06, efficiency-bounded physics refitted on every row with a positive
    # road-load curve): physics 4.61 % / 6.27 % per test, 4.17 % / 6.20 % per vehicle; model 4.74 / 6.13 %,
    # 4.31 / 6.12 %. The aims (4 % / 6 %) are not met. The residual is about neutral here and in the
    # leave-one-maker-out figures (it must not make physics much worse).
    assert physics["HWFE"] < 4.75 and physics["FTP"] < 6.4
    assert model["HWFE"] < 4.9 and model["FTP"] < 6.3
    assert model["HWFE"] < physics["HWFE"] + 0.2 and model["FTP"] < physics["FTP"] + 0.2
    # Per vehicle (each vehicle once, its repeat tests averaged; see epa.mape_per_vehicle).
    for e in (physics, model):
        assert e["HWFE/vehicle"] < 4.45 and e["FTP/vehicle"] < 6.35


def test_leave_one_maker_out_figures_of_the_shipped_model_card(shared_data):
    # The cross-validation (physics refitted and residual retrained per fold, on the fitting makers only) takes
    # minutes, so it runs in tools/train_residual.py --cv and its figures are read from the model card; what
    # is cheap is recomputed here: the card describes the shipped constants and the data loaded today.
    from carbon_ai_nodes.carbon.emission_model import DEFAULT_CONSTANTS
    from carbon_ai_nodes.carbon.training.epa import cycle_plans, physics_g_per_mi

    card = json.loads((Path(shipped_model_path()).with_suffix(".json")).read_text())
    lomo = card["error"]["leave_one_manufacturer_out"]
    fitting = [t for t in epa.load_tests(shared_data / "epa_2022_test_cars_a_to_l.csv")
               if not epa.is_test_manufacturer(t)]
    for name in ("HWFE", "FTP"):
        e, tests = lomo[name], [t for t in fitting if t.test == name]
        print(f"\nleave-one-maker-out ({name}, fitting makers, {e['tests']} tests / {e['vehicles']} vehicles): "
              f"physics {e['physics_mape_pct']:.2f} / {e['physics_mape_per_vehicle_pct']:.2f} %, with residual "
              f"{e['model_mape_pct']:.2f} / {e['model_mape_per_vehicle_pct']:.2f} % (per test / per vehicle)", end="")
        # every fitting-maker test was predicted by the fold that had not seen its maker
        assert e["tests"] == len(tests) and e["vehicles"] == len({t.profile for t in tests})
    print()
    for key, value in card["physics_constants"].items():
        assert getattr(DEFAULT_CONSTANTS, key) == pytest.approx(value, rel=1e-3), key
    # the card's training-set physics error, recomputed with the shipped constants
    plans = cycle_plans(shared_data / "cycles")
    for name in ("HWFE", "FTP"):
        tests = [t for t in fitting if t.test == name]
        pred = np.array([physics_g_per_mi(t, plans[name])[0] for t in tests])
        got = epa.mape(pred, np.array([t.measured_g_per_mi for t in tests]))
        assert got == pytest.approx(card["error"]["train"][name]["physics_mape_pct"], abs=0.01)


def test_cli_json_matches_the_estimator_for_epa_vehicles(held_out, shared_data, tmp_path):
    hwfe = [t for t in held_out if t.test == "HWFE"]
    picks = hwfe[:2] + [next(t for t in hwfe if t.profile.b_n_per_mps < 0)]  # a negative B is accepted
    docs = [{"name": t.profile.name, "mass_kg": t.profile.mass_kg,
             "road_load": {"a_n": t.profile.a_n, "b_n_per_mps": t.profile.b_n_per_mps,
                           "c_n_per_mps2": t.profile.c_n_per_mps2},
             "fuel": "gasoline", "rated_power_kw": t.profile.rated_power_kw,
             "displacement_l": t.profile.displacement_l,
             "top_gear_rpm_per_mps": t.profile.top_gear_rpm_per_mps, "cylinders": t.profile.cylinders,
             "transmission": t.profile.transmission}
            for t in picks]
    f = tmp_path / "cars.yaml"
    f.write_text(yaml.safe_dump(docs))
    out = subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", "estimate", "--vehicle", str(f), "--cycle",
                          str(shared_data / "cycles" / "hwfet.csv"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["name"] for r in rows] == [d["name"] for d in docs]
    hw = load_cycle(str(shared_data / "cycles" / "hwfet.csv"))
    backend = select_backend(shipped_model_path(), "auto").backend
    for r, t in zip(rows, picks, strict=False):
        assert {"name", "co2_g_per_km", "co2_g_per_mi", "fuel_l", "distance_km"} <= set(r)
        assert r["distance_km"] == pytest.approx(16.5, abs=0.1)
        assert r["co2_g_per_mi"] == pytest.approx(predict_g_per_mi(CarbonEstimator(t.profile, backend), "HWFE", hw,
                                                                   hw), rel=1e-4)
        assert r["co2_g_per_mi"] == pytest.approx(r["co2_g_per_km"] * 1.609344, rel=1e-4)
        assert r["co2_g_per_mi"] == pytest.approx(t.measured_g_per_mi, rel=0.25)  # sanity: the right ballpark


def test_cli_cold_start_costs_more_and_bad_input_is_one_line(shared_data, tmp_path):
    from conftest import REPO

    van = str(REPO / "config" / "vehicles" / "example_sedan.yaml")
    udds = str(shared_data / "cycles" / "udds.csv")

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", "estimate", "--vehicle", van,
                               "--cycle", udds, "--json", *extra], capture_output=True, text=True, timeout=120)

    warm, cold = json.loads(run().stdout), json.loads(run("--cold-start").stdout)
    assert cold["co2_g_per_km"] > warm["co2_g_per_km"] * 1.02
    curve = tmp_path / "negative.yaml"  # 150 - 20 v + 0.5 v^2 is -50 N at 20 m/s
    curve.write_text("name: x\nmass_kg: 1500\nroad_load: {a_n: 150, b_n_per_mps: -20, c_n_per_mps2: 0.5}\n"
                     "fuel: gasoline\nrated_power_kw: 90\ndisplacement_l: 1.6\n")
    r = subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", "estimate", "--vehicle", str(curve), "--cycle",
                        udds], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "b_n_per_mps=-20" in r.stderr and "-50 N at 20 m/s" in r.stderr
    bad = tmp_path / "c.csv"
    bad.write_text("time_s,speed_mps\n0,1\n0,2\n")
    r = subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", "estimate", "--vehicle", van, "--cycle",
                        str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "increase" in r.stderr
