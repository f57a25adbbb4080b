"""Which emission model a planning node plans with (pure; no ROS imports): the vehicle's own calibrated model
(carbon_inference's saved calibration, carbon/vehicle_calibration.py) once it is confident, the generic profile
model until then. eco_speed plans its speed caps with it, the planner prices routes with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from carbon_ai_nodes.common.params import ParamSet, param

# (speed m/s, accel m/s^2, grade, payload kg) -> (CO2 g/s, fuel L/h): the emission model a plan is costed with
RatesFn = Callable[[float, float, float, float], tuple[float, float]]


@dataclasses.dataclass(frozen=True)
class CalibratedModelParams(ParamSet):
    """The parameters of a node that plans with a vehicle's calibrated model (no SECTION: the nodes' own
    parameter sets inherit these)."""

    calibration_file: str = param(
        "", "The vehicle's calibration saved by carbon_inference (its calibration_file); once confident, this node "
            "plans with the calibrated model; empty = the generic model")
    calibration_confidence: float = param(
        0.05, "Relative 1-sigma the calibration must reach before it replaces the generic model", gt=0.0, max=1.0)
    calibration_check_period_s: float = param(
        60.0, "While planning with the generic model, re-read calibration_file this often (0 = only at start)",
        unit="s", min=0.0, max=86400.0, read_only=True)


def calibrated_model(profile: Any, calibration_file: str, threshold: float) -> tuple[Any, RatesFn | None, str]:
    """The model to plan with: ``(profile for the dynamics, rates, why)``. A calibration (carbon_inference's
    ``calibration_file``) that is confident to ``threshold`` gives its calibrated profile and rates; otherwise
    ``(profile, None, reason)`` and the generic model plans."""
    from carbon_ai_nodes.carbon.vehicle_calibration import VehicleCalibration

    if not calibration_file:
        return profile, None, "no calibration_file"
    if profile.kind != "road" or profile.is_electric:
        return profile, None, "not a combustion road vehicle"
    cal, warning = VehicleCalibration.load(calibration_file, profile)
    if cal is None:
        return profile, None, warning
    if not cal.is_confident(threshold):
        return profile, None, (f"calibration not confident yet (mass {cal.mass_kg:.0f} kg, reference CO2 sigma "
                               f"{cal.reference_rel_sigma() * 100:.1f} % > {threshold * 100:.1f} %)")

    def rates(v: float, a: float, grade: float, payload_kg: float) -> tuple[float, float]:
        r = cal.predict(v, a, grade, payload_kg)
        return r.co2_g_s, r.fuel_lph

    return cal.vehicle_profile(), rates, ""
