"""The learned residual's input vector, its training ranges (out-of-distribution check) and how its output
corrects the physics baseline. Shared by the training script, every inference backend and the CLI, so the
model sees the same features in the cloud as on the machine.

The model maps ``features`` (float32 [N, N_FEATURES], raw units; normalisation is baked into the ONNX graph) to
``correction`` (float32 [N, 1]); the estimate is ``physics_co2 * (1 + clip(correction, -MAX, MAX))``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import overload

import numpy as np

from carbon_ai_nodes.carbon.emission_model import (
    DEFAULT_CONSTANTS,
    EmissionConstants,
    FloatOrArray,
    accessory_kw,
    cold_fraction,
    engine_rpm,
    engine_rpm_array,
    road_load_n,
)
from carbon_ai_nodes.common.frames import G_MPS2
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile

INPUT_NAME = "features"
OUTPUT_NAME = "correction"
FEATURES = (
    "speed_mps",          # m/s
    "accel_mps2",         # m/s^2
    "grade",              # rise/run
    "mass_t",             # test mass + payload, tonnes
    "power_to_mass_kw_per_t",
    "displacement_l",
    "road_load_n_per_kg",  # coast-down force per kg at this speed
    "wheel_power_kw_per_t",
    "cold_fraction",      # 0 warm .. 1 at 20 C
    "engine_krpm",        # modelled engine speed, 1000 rpm (emission_model.engine_rpm)
    "bmep_mpa",           # modelled brake mean effective pressure (engine load), MPa
)
N_FEATURES = len(FEATURES)
MAX_CORRECTION = 0.5  # the residual may move physics by at most +-50 %


def _bmep_mpa(brake_kw: FloatOrArray, displacement_l: float, rpm: FloatOrArray) -> FloatOrArray:
    # brake power = bmep * displacement * rpm / 120 (four-stroke), solved for bmep in MPa
    return brake_kw * 120.0 / (max(displacement_l, 1e-3) * rpm)


def feature_row(profile: VehicleProfile, speed_mps: float, accel_mps2: float, grade: float, payload_kg: float,
                coolant_temp_c: float = math.nan, constants: EmissionConstants = DEFAULT_CONSTANTS) -> list[float]:
    """The feature vector of one state (plain floats, in FEATURES order)."""
    v = max(speed_mps, 0.0)
    mass = profile.mass_kg + (payload_kg if math.isfinite(payload_kg) else 0.0)
    road = road_load_n(profile, v, payload_kg)
    force = road + mass * accel_mps2 + mass * G_MPS2 * grade / math.sqrt(1.0 + grade * grade)
    brake_kw = min(max(force * v / 1000.0, 0.0) / profile.drivetrain_efficiency + accessory_kw(profile, constants),
                   profile.rated_power_kw)
    rpm = engine_rpm(profile, v, brake_kw, constants)
    return [v, accel_mps2, grade, mass / 1000.0, profile.rated_power_kw / mass * 1000.0, profile.displacement_l,
            road / mass, force * v / mass, cold_fraction(coolant_temp_c, constants), rpm / 1000.0,
            _bmep_mpa(brake_kw, profile.displacement_l, rpm)]


def feature_matrix(profile: VehicleProfile, speed_mps: np.ndarray, accel_mps2: np.ndarray, grade: np.ndarray,
                   payload_kg: float = 0.0, coolant_temp_c: np.ndarray | float = math.nan,
                   constants: EmissionConstants = DEFAULT_CONSTANTS) -> np.ndarray:
    """Vectorised :func:`feature_row` for a cycle: float32 [N, N_FEATURES]."""
    k = constants
    v = np.maximum(np.asarray(speed_mps, float), 0.0)
    a = np.asarray(accel_mps2, float)
    g = np.broadcast_to(np.asarray(grade, float), v.shape)
    payload = payload_kg if math.isfinite(payload_kg) else 0.0
    mass = profile.mass_kg + payload
    a_n = profile.a_n * mass / profile.mass_kg  # as road_load_n: rolling resistance scales with weight
    road = np.where(v > 0, a_n + profile.b_n_per_mps * v + profile.c_n_per_mps2 * v * v, 0.0)
    force = road + mass * a + mass * G_MPS2 * g / np.sqrt(1.0 + g * g)
    brake_kw = np.minimum(np.maximum(force * v / 1000.0, 0.0) / profile.drivetrain_efficiency
                          + accessory_kw(profile, k), profile.rated_power_kw)
    rpm = engine_rpm_array(profile, v, brake_kw, k)
    cool = np.broadcast_to(np.asarray(coolant_temp_c, float), v.shape)
    cold = np.where(np.isfinite(cool), np.clip((k.warm_coolant_c - cool) / (k.warm_coolant_c - 20.0), 0, 1.5), 0.0)
    n = len(v)
    return np.column_stack([
        v, a, g, np.full(n, mass / 1000.0), np.full(n, profile.rated_power_kw / mass * 1000.0),
        np.full(n, profile.displacement_l), road / mass, force * v / mass, cold, rpm / 1000.0,
        _bmep_mpa(brake_kw, profile.displacement_l, rpm),
    ]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FeatureRanges:
    """Per-feature [low, high] of the training data, widened by a margin: outside = out of distribution."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def from_data(cls, x: np.ndarray, margin: float = 0.05) -> FeatureRanges:
        """Ranges of a training matrix, widened by ``margin`` of each span."""
        lo, hi = np.min(x, axis=0).astype(float), np.max(x, axis=0).astype(float)
        span = np.maximum(hi - lo, 1e-6)
        return cls(tuple((lo - margin * span).tolist()), tuple((hi + margin * span).tolist()))

    def outside(self, row: Sequence[float]) -> str:
        """Name of the first feature outside its range ('' when all inside; NaN is outside)."""
        for name, x, lo, hi in zip(FEATURES, row, self.low, self.high, strict=False):
            if not lo <= x <= hi:
                return name
        return ""

    def outside_mask(self, x: np.ndarray) -> np.ndarray:
        """Bool [N]: rows with any feature outside its range (or NaN)."""
        return ~np.all((x >= np.asarray(self.low)) & (x <= np.asarray(self.high)), axis=1)


@overload
def correction_factor(correction: float) -> float: ...
@overload
def correction_factor(correction: np.ndarray) -> np.ndarray: ...
def correction_factor(correction: float | np.ndarray) -> float | np.ndarray:
    """The factor on the physics rates: 1 + the residual's correction clipped to +-MAX_CORRECTION.

    A float for a float (the per-message path: builtins, no numpy call), an array for an array. NaN is the
    caller's to handle (it passes through)."""
    if isinstance(correction, np.ndarray):
        return 1.0 + np.clip(correction, -MAX_CORRECTION, MAX_CORRECTION)
    return 1.0 + min(max(correction, -MAX_CORRECTION), MAX_CORRECTION)
