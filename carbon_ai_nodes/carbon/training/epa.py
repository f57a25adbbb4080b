"""EPA 2022 certification data as training/validation groups for the emission model.

Each EPA test becomes a *group*: the samples of its drive cycle for that vehicle, a per-sample weight that
turns per-sample CO2 (g/s) into the test's reported figure (g/mi), and the measured value. HWFE is one warm
HWFET run; FTP-75 is cold bag 1 (UDDS 0-505 s), bag 2 (UDDS 505 s-end), hot bag 3 (UDDS 0-505 s) weighted
0.43/0.57 (40 CFR 600.113), which is linear in the per-sample CO2, so a per-sample model can be fitted to it.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from carbon_ai_nodes.carbon.emission_model import (
    DEFAULT_CONSTANTS,
    FTP_BAG1_S,
    DriveCycle,
    EmissionConstants,
    coolant_after_start_c,
    cycle_rates,
    load_cycle,
)
from carbon_ai_nodes.carbon.residual_features import feature_matrix
from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile

LBF_N = 4.4482216
MPH_MPS = 0.44704
LB_KG = 0.45359237
HP_KW = 0.745699872
M_PER_MI = 1609.344

HWFE = "HWFE"
FTP = ("Federal fuel 2-day exhaust (w/can load)", "Federal fuel 3-day exhaust")
GASOLINE = "Tier 2 Cert Gasoline"
# Hybrids and plug-ins are not conventional vehicles; the file names many of them like conventional models:
# the words below, BMW "330e"/"X5 xDrive45e", Jeep "4xe", Mini "SE Countryman", Honda Insight/NSX, Hyundai
# Ioniq, Kia Niro (their city CO2 is at or below their highway CO2, which no conventional car manages).
HYBRID = re.compile(r"hybrid|\bhev\b|fhev|phev|\bhev|plug-in|e-?tron|energi|insight|ioniq|niro|\bnsx\b"
                    r"|\b\d{2,3}e\b|xdrive\d{2}e\b|\b4xe\b|\bse countryman", re.I)
# Power-split hybrids listed only by their e-CVT: (manufacturer, displacement L, rated hp) of CVT rows.
# Ford's 2022 CVTs are all hybrid e-CVTs; Honda's 2.0 L 143 hp CVT is the CR-V/Accord hybrid engine.
HYBRID_ECVT = (("FOMOCO", None, None), ("Honda", 2.0, 143.0))
# A test vehicle that also ran a charge-depleting test is a plug-in hybrid whatever its name says: its HWFE and
# FTP-75 rows are charge-sustaining hybrid runs, and its rated power is the combined system power (the 2022
# Range Rover Sport LW807615, 2.0 L 4-cylinder "400 hp", 1 gear; Ferrari 296 GTB and SF90).
PLUG_IN_PROCEDURE = "Charge Depleting"
# Manufacturers held out from every fit (about a third of the tests, makers of both cars and trucks).
TEST_MANUFACTURERS = ("GM", "Hyundai", "Honda", "Jaguar Land Rover L")


@dataclasses.dataclass(frozen=True)
class EpaTest:
    """One EPA test of a conventional gasoline vehicle."""

    manufacturer: str
    model: str
    test: str  # "HWFE" | "FTP"
    profile: VehicleProfile
    measured_g_per_mi: float


def profile_from_row(row: dict[str, str]) -> VehicleProfile:
    """A VehicleProfile from an EPA row (coast-down targets converted from lbf, mph to N, m/s)."""
    return VehicleProfile(
        name=f"{row['Represented Test Veh Make']} {row['Represented Test Veh Model']}".strip(),
        mass_kg=float(row["Equivalent Test Weight (lbs.)"]) * LB_KG,
        a_n=float(row["Target Coef A (lbf)"]) * LBF_N,
        b_n_per_mps=float(row["Target Coef B (lbf/mph)"]) * LBF_N / MPH_MPS,
        c_n_per_mps2=float(row["Target Coef C (lbf/mph**2)"]) * LBF_N / MPH_MPS**2,
        fuel="gasoline",
        rated_power_kw=float(row["Rated Horsepower"]) * HP_KW,
        displacement_l=float(row["Test Veh Displacement (L)"]),
        top_gear_rpm_per_mps=_top_gear(row),
        cylinders=_cylinders(row),
        transmission=_transmission(row),
    )


def _transmission(row: dict[str, str]) -> str | None:
    """VehicleProfile.transmission from the EPA transmission type; None if absent or unknown.

    A "Semi-Automatic" is an automatic with a manual-shift mode; "Automated Manual" (with or without paddles)
    is a clutch gearbox shifted by the controller.
    """
    t = row.get("Tested Transmission Type") or ""
    if t.startswith("Automated Manual"):
        return "automated_manual"
    if t == "Manual":
        return "manual"
    if t.startswith("Continuously Variable"):
        return "cvt"
    if t in ("Automatic", "Semi-Automatic"):
        return "automatic"
    return None


def _cylinders(row: dict[str, str]) -> int | None:
    """Number of cylinders (rotary engines count rotors); None if absent."""
    try:
        n = int(row.get("# of Cylinders and Rotors") or "")
    except ValueError:
        return None
    return n if 1 <= n <= 24 else None


def _top_gear(row: dict[str, str]) -> float | None:
    """Top-gear engine speed per road speed (rpm per m/s) from the EPA N/V ratio (rpm/mph); None if absent."""
    try:
        nv = float(row.get("N/V Ratio") or "nan")
    except ValueError:
        return None
    return nv / MPH_MPS if 5.0 <= nv / MPH_MPS <= 500.0 else None


def _is_ecvt_hybrid(row: dict[str, str]) -> bool:
    if "Continuously Variable" not in row["Tested Transmission Type"]:
        return False
    for maker, disp, hp in HYBRID_ECVT:
        if row["Vehicle Manufacturer Name"] != maker:
            continue
        try:
            if disp is None or (float(row["Test Veh Displacement (L)"]) == disp
                                and float(row["Rated Horsepower"]) == hp):
                return True
        except ValueError:
            return False
    return False


def _vehicle_id(row: dict[str, str]) -> tuple[str, str]:
    # EPA test vehicle IDs are the manufacturers' own numbers, so only unique within a manufacturer
    return row["Vehicle Manufacturer Name"], row["Test Vehicle ID"]


def load_tests(csv_path: str | Path, skipped: dict[str, int] | None = None) -> list[EpaTest]:
    """HWFE and FTP-75 tests of conventional (non-hybrid) vehicles on certification gasoline.

    Excluded: hybrids and plug-ins named as such (HYBRID), e-CVT hybrids (HYBRID_ECVT), and every test vehicle
    that also ran a charge-depleting test (a plug-in hybrid, whatever its name). A conventional gasoline HWFE
    or FTP-75 row that still cannot be used (a missing number, a profile VehicleProfile refuses such as a
    road-load curve that goes negative, no CO2) is counted in ``skipped`` under its reason, never dropped
    silently; a negative B coefficient alone is normal and accepted.
    """
    out = []
    counts = skipped if skipped is not None else {}
    with open(csv_path, newline="", encoding="latin-1") as fh:
        rows = list(csv.DictReader(fh))
    plug_ins = {_vehicle_id(r) for r in rows if r["Test Procedure Description"].startswith(PLUG_IN_PROCEDURE)}
    for row in rows:
        proc = row["Test Procedure Description"]
        if row["Test Fuel Type Description"] != GASOLINE or (proc != HWFE and proc not in FTP):
            continue
        if HYBRID.search(row["Represented Test Veh Model"]) or row["Vehicle Manufacturer Name"].startswith("Karma"):
            continue
        if _vehicle_id(row) in plug_ins:
            continue
        if _is_ecvt_hybrid(row):
            continue
        try:
            profile = profile_from_row(row)
            co2 = float(row["CO2 (g/mi)"])
        except ValueError:
            counts["a missing or non-numeric value"] = counts.get("a missing or non-numeric value", 0) + 1
            continue
        except ConfigError:
            counts["profile refused by VehicleProfile"] = counts.get("profile refused by VehicleProfile", 0) + 1
            continue
        if not co2 > 0:
            counts["CO2 not > 0"] = counts.get("CO2 not > 0", 0) + 1
            continue
        out.append(EpaTest(row["Vehicle Manufacturer Name"], row["Represented Test Veh Model"],
                           "HWFE" if proc == HWFE else "FTP", profile, co2))
    return out


def is_test_manufacturer(t: EpaTest) -> bool:
    """True for tests held out from fitting."""
    return t.manufacturer in TEST_MANUFACTURERS


@dataclasses.dataclass(frozen=True)
class CyclePlan:
    """The cycle samples of one EPA test procedure: speed/accel/grade/coolant and g/mi weights."""

    speed_mps: np.ndarray
    accel_mps2: np.ndarray
    grade: np.ndarray
    coolant_c: np.ndarray
    weight_per_mi: np.ndarray  # sum(co2_g_s * weight) = reported g/mi


def cycle_plans(cycles_dir: str | Path, k: EmissionConstants = DEFAULT_CONSTANTS) -> dict[str, CyclePlan]:
    """HWFE and FTP-75 sample plans from the shared drive cycles (1 Hz; dt = 1 s)."""
    d = Path(cycles_dir)
    hw = load_cycle(str(d / "hwfet.csv"))
    udds = load_cycle(str(d / "udds.csv"))
    plans = {"HWFE": _plan([hw], [np.full(len(hw.time_s), np.nan)], [1.0 / (hw.distance_m / M_PER_MI)])}
    bag1 = udds.slice_s(0, FTP_BAG1_S)
    bag2 = udds.slice_s(FTP_BAG1_S, 1e9)
    bag3 = bag1
    dc, ds, dh = (b.distance_m / M_PER_MI for b in (bag1, bag2, bag3))
    cold = coolant_after_start_c(bag1.time_s, k=k)
    plans["FTP"] = _plan(
        [bag1, bag2, bag3],
        [cold, np.full(len(bag2.time_s), np.nan), np.full(len(bag3.time_s), np.nan)],
        [0.43 / (dc + ds), 0.43 / (dc + ds) + 0.57 / (dh + ds), 0.57 / (dh + ds)],
    )
    return plans


def _plan(parts: list[DriveCycle], coolant: list[np.ndarray], weights: list[float]) -> CyclePlan:
    dt = [np.diff(p.time_s, append=p.time_s[-1] + 1.0) for p in parts]
    return CyclePlan(
        np.concatenate([p.speed_mps for p in parts]),
        np.concatenate([p.accel_mps2 for p in parts]),
        np.concatenate([p.grade for p in parts]),
        np.concatenate(coolant),
        np.concatenate([w * d for w, d in zip(weights, dt, strict=False)]),
    )


def physics_g_per_mi(t: EpaTest, plan: CyclePlan, k: EmissionConstants = DEFAULT_CONSTANTS) -> tuple[float, np.ndarray]:
    """Physics prediction of the test's reported CO2 (g/mi) and the per-sample CO2 rates (g/s)."""
    r = cycle_rates(t.profile, plan.speed_mps, plan.accel_mps2, plan.grade, coolant_temp_c=plan.coolant_c,
                    constants=k)
    return float(np.sum(r.co2_g_s * plan.weight_per_mi)), r.co2_g_s


def features(t: EpaTest, plan: CyclePlan, k: EmissionConstants = DEFAULT_CONSTANTS) -> np.ndarray:
    """Residual features of every sample of the test."""
    return feature_matrix(t.profile, plan.speed_mps, plan.accel_mps2, plan.grade,
                          coolant_temp_c=plan.coolant_c, constants=k)


def mape(pred: np.ndarray, meas: np.ndarray) -> float:
    """Mean absolute percentage error, %."""
    return float(np.mean(np.abs(np.asarray(pred) - meas) / meas) * 100.0)


def mape_per_vehicle(tests: Sequence[EpaTest], pred: Sequence[float] | np.ndarray) -> float:
    """MAPE (%) with each vehicle counted once: tests grouped by identical profile, mean measured CO2 per group.

    EPA tests some vehicles several times (selectable drive modes, retests), so the same profile appears
    with different measured CO2; the file has no column telling these runs apart. The model sees only the
    profile, so it gives one prediction per vehicle (the group's ``pred`` are equal; their mean is used),
    and the spread of the repeats is error no model of the profile can remove. Comparing that prediction
    with the mean of the repeats (EPA averages repeat tests for its labels) and weighting every vehicle once
    keeps a vehicle tested ten times from counting ten times. ``tests`` and ``pred`` (g/mi) are parallel;
    do not mix test procedures (score HWFE and FTP-75 separately).
    """
    pred = np.asarray(pred, float)
    if len(pred) != len(tests) or not len(tests):
        raise ValueError(f"need one prediction per test, got {len(pred)} for {len(tests)} tests")
    groups: dict[VehicleProfile, list[int]] = {}
    for i, t in enumerate(tests):
        groups.setdefault(t.profile, []).append(i)
    idx = list(groups.values())
    meas = np.array([t.measured_g_per_mi for t in tests])
    return mape(np.array([pred[g].mean() for g in idx]), np.array([meas[g].mean() for g in idx]))
