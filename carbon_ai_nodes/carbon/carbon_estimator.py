"""The estimator every path shares (node, CLI, benchmark): physics baseline + learned residual + OOD guard.

Backends are injected (anything with ``name``, ``model_id``, ``metadata`` and ``run(features) -> [N]``), so
this module stays free of ONNX Runtime, TensorRT and ROS.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

import numpy as np

from carbon_ai_nodes.carbon.emission_model import (
    DEFAULT_CONSTANTS,
    EmissionConstants,
    physics_rates,
)
from carbon_ai_nodes.carbon.residual_backend import ResidualBackend
from carbon_ai_nodes.carbon.residual_features import (
    N_FEATURES,
    FeatureRanges,
    correction_factor,
    feature_row,
)
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.params import ParamSet, param
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
from carbon_ai_nodes.common.vehicle_state_rules import check_vehicle_state

# One standard deviation of the CO2 rate, relative: from the held-out EPA errors (model card) and the
# physics-only fit; applied to cycle-level error, so per-instant figures are indicative.
MODEL_RELATIVE_SIGMA = 0.08
PHYSICS_RELATIVE_SIGMA = 0.12


@dataclasses.dataclass(frozen=True)
class CarbonInferenceParams(ParamSet):
    """Parameters of the carbon_inference node."""

    SECTION: ClassVar[str] = "carbon_inference"
    vehicle_profile: str = param("", "Vehicle profile YAML (one profile, or a list: the first is used) (required)")
    model_path: str = param(
        "", "Residual model .onnx; empty = the model shipped with the package; 'none' = physics only")
    model_public_key: str = param(
        "", "Fleet Ed25519 public key (PEM, `carbon-ai model keygen`); set = a model runs only with a manifest "
            "this key signed for the vehicle's profile (`carbon-ai model sign`); an unsigned, altered or other-class "
            "model is refused (at start the physics model serves; swaps keep the old model); empty = not checked",
        read_only=True)
    backend: str = param("auto", "Inference backend; auto tries them in this order",
                         choices=("auto", "tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda",
                                  "onnxruntime-cpu", "physics"))
    engine_cache_dir: str = param("", "TensorRT engine cache directory; empty = ~/.cache/carbon_ai/trt")
    fp16: bool = param(True, "Build TensorRT engines in FP16 where the GPU supports it")
    assets: tuple[str, ...] = param(
        (), "Fleet mode: namespaces served, each <ns>/vehicle_state -> <ns>/carbon_estimate; "
            "empty = this node's own vehicle_state", read_only=True)
    asset_profiles: tuple[str, ...] = param(
        (), "Fleet mode: a profile YAML per entry of assets (empty = vehicle_profile for all)", read_only=True)
    batch_period_s: float = param(
        0.0, "Micro-batch window: states are gathered this long and run as one batch; "
             "0 = estimate each state as it arrives", unit="s", min=0.0, max=1.0, read_only=True)
    max_state_age_s: float = param(0.0, "Reject states older than this (node clock - header stamp); 0 = no check",
                                   unit="s", min=0.0, max=3600.0)
    state_timeout_s: float = param(
        2.0, "Input watchdog: vehicle_state is stale after this long without a valid message",
        unit="s", gt=0.0, max=600.0, read_only=True)
    grid_gco2_per_kwh: float = param(float("nan"), "Grid intensity for electric profiles; NaN = the profile's value",
                                     unit="gCO2/kWh", min=0.0, max=3000.0, allow_nan=True)
    queue_depth: int = param(
        50, "Depth of the vehicle_state and carbon_estimate queues (reliable: bursts and model loads lose nothing)",
        min=1, max=10000, read_only=True)
    calibration: bool = param(
        True, "Learn each combustion road vehicle's own mass, road load and fuel map from its telemetry and "
              "publish calibrated_estimate beside carbon_estimate", read_only=True)
    calibration_file: str = param(
        "", "JSON file the calibration is reloaded from at start and saved to; empty = no persistence; "
            "fleet mode: <stem>.<asset><suffix> per asset", read_only=True)
    calibration_save_period_s: float = param(
        60.0, "Save the calibration this often (and at shutdown); 0 = only at shutdown", unit="s", min=0.0,
        max=86400.0, read_only=True)
    calibration_confidence: float = param(
        0.05, "Calibrated model is_confident when the mass and reference CO2 predictions are known to this "
              "relative standard deviation", gt=0.0, max=1.0)
    calibration_payload_reset_fraction: float = param(
        0.05, "A payload change above this fraction of the estimated mass re-opens the mass estimate",
        gt=0.0, max=1.0, read_only=True)
    calibration_sample_period_s: float = param(
        1.0, "The calibration learns from the mean of each such period of states (fused acceleration is noisy and "
             "states repeat each fuel reading); 0 = from every state", unit="s", min=0.0, max=60.0, read_only=True)


@dataclasses.dataclass(slots=True)  # slots: built and read once per message on the hot path
class StateInput:
    """The VehicleState fields the estimator uses (SI units; NaN = unknown where allowed)."""

    asset_id: str
    stamp_s: float
    speed_mps: float
    accel_mps2: float
    grade: float
    payload_kg: float = math.nan
    engine_speed_rpm: float = math.nan
    engine_load_pct: float = math.nan
    coolant_temp_c: float = math.nan


@dataclasses.dataclass(slots=True)
class Estimate:
    """One CarbonEstimate's content (g/s, L/h, kW)."""

    asset_id: str
    stamp_s: float
    co2_rate_g_s: float
    fuel_rate_lph: float
    power_kw: float
    physics_co2_rate_g_s: float
    uncertainty_g_s: float
    is_out_of_distribution: bool
    backend: str
    model_id: str


_ESTIMATE_NEEDS = ("stamp_s", "speed_mps", "accel_mps2", "grade")


def validate_state(s: StateInput, profile: VehicleProfile) -> None:
    """Raise InputRejectedError (reason ``nan`` | ``out_of_range``) for a state no estimate should come from:
    the VehicleState rule (core.vehicle_state_rules) with stamp, speed, acceleration and grade required, and a
    payload this profile could carry."""
    check_vehicle_state(s, _ESTIMATE_NEEDS)
    if s.payload_kg > max(profile.payload_capacity_kg * 1.5, 1e5):
        raise InputRejectedError("out_of_range", f"payload_kg={s.payload_kg:g}")


class MeasuredFuelError:
    """The estimator's error against the fuel meter, in the loop: estimated and measured fuel (L) integrated over
    the estimates that had a finite meter reading (VehicleState.fuel_rate_lph), gaps over ``max_gap_s`` skipped."""

    def __init__(self, max_gap_s: float = 1.0) -> None:
        self.max_gap_s = max_gap_s
        self.model_l = 0.0
        self.measured_l = 0.0
        self._last_s = math.nan

    def update(self, stamp_s: float, estimated_lph: float, measured_lph: float) -> None:
        """Add the interval since the previous estimate (s), at this estimate's and meter's rates (L/h)."""
        dt = stamp_s - self._last_s
        if math.isfinite(estimated_lph) and math.isfinite(measured_lph) and 0.0 < dt <= self.max_gap_s:
            self.model_l += estimated_lph * dt / 3600.0
            self.measured_l += measured_lph * dt / 3600.0
        if math.isfinite(stamp_s) and not stamp_s <= self._last_s:
            self._last_s = stamp_s

    @property
    def error_pct(self) -> float:
        """(model - measured) / measured, %; NaN before any measured fuel."""
        return (self.model_l - self.measured_l) / self.measured_l * 100.0 if self.measured_l > 0 else math.nan


def _run_one_as_batch(backend: ResidualBackend) -> Callable[[list[float]], float]:
    """``run_one`` for a backend that has only ``run``: a batch of one row."""
    return lambda row: float(backend.run(np.array([row], dtype=np.float32))[0])


class _Serving(NamedTuple):
    """What an estimate needs of the backend, swapped as one object."""

    backend: ResidualBackend
    ranges: FeatureRanges | None
    not_for_me: str  # why the model does not apply to this profile at all ('' when it does)
    run_one: Callable[[list[float]], float]  # one feature row -> correction


class CarbonEstimator:
    """Physics + residual for one profile. Swap the backend with :meth:`set_backend` (atomic for callers)."""

    def __init__(self, profile: VehicleProfile, backend: ResidualBackend, *,
                 constants: EmissionConstants = DEFAULT_CONSTANTS, grid_gco2_per_kwh: float = math.nan) -> None:
        self.profile = profile
        self.constants = constants
        self.grid_gco2_per_kwh = grid_gco2_per_kwh
        self._model = _Serving(backend, None, "", _run_one_as_batch(backend))
        self.set_backend(backend)

    @property
    def backend(self) -> ResidualBackend:
        """The backend now serving."""
        return self._model[0]

    def set_backend(self, backend: ResidualBackend) -> None:
        """Replace the serving backend; one tuple assignment, so an estimate sees the old or the new, never a mix."""
        meta = getattr(backend, "metadata", {}) or {}
        ranges = None
        if "feature_low" in meta and "feature_high" in meta:
            ranges = FeatureRanges(tuple(json.loads(meta["feature_low"])), tuple(json.loads(meta["feature_high"])))
        # The shipped residual was fitted on gasoline road vehicles: any other kind is out of its distribution.
        trained_fuel = meta.get("fuel", "gasoline")
        not_for_me = ""
        if backend.name != "physics" and (self.profile.kind != "road" or self.profile.fuel != trained_fuel):
            not_for_me = f"model trained on {trained_fuel} road vehicles"
        # A backend's own run_one (preallocated buffers) when it has one: the per-message path runs one row.
        run_one = getattr(backend, "run_one", None) or _run_one_as_batch(backend)
        self._model = _Serving(backend, ranges, not_for_me, run_one)

    def estimate(self, s: StateInput, *, validated: bool = False) -> Estimate:
        """One state -> one estimate (raises InputRejectedError for bad input).

        The per-message path of the node, kept lean: same maths as :meth:`estimate_batch` with one row.
        ``validated=True`` skips :func:`validate_state` for a caller that has just run it on ``s``.
        """
        backend, ranges, not_for_me, run_one = self._model
        p, k = self.profile, self.constants
        if not validated:
            validate_state(s, p)
        r = physics_rates(p, s.speed_mps, s.accel_mps2, s.grade, s.payload_kg,
                          engine_load_pct=s.engine_load_pct, engine_speed_rpm=s.engine_speed_rpm,
                          coolant_temp_c=s.coolant_temp_c, grid_gco2_per_kwh=self.grid_gco2_per_kwh, constants=k)
        factor, sigma, ood = 1.0, PHYSICS_RELATIVE_SIGMA, False
        if r.co2_g_s > 0 and not r.fuel_cut and backend.name != "physics":
            row = None if not_for_me else feature_row(p, s.speed_mps, s.accel_mps2, s.grade, s.payload_kg,
                                                      s.coolant_temp_c, k)
            if row is None or (ranges is not None and ranges.outside(row)):
                ood = True
            else:
                c = run_one(row)
                if math.isfinite(c):
                    factor = correction_factor(c)
                    sigma = MODEL_RELATIVE_SIGMA
        co2 = r.co2_g_s * factor
        return Estimate(s.asset_id, s.stamp_s, co2, r.fuel_lph * factor, r.power_kw, r.co2_g_s, abs(co2) * sigma,
                        ood, backend.name, backend.model_id)

    def estimate_batch(self, states: Sequence[StateInput]) -> list[Estimate]:
        """Estimates for many states in one backend call; every state must already pass :func:`validate_state`."""
        backend, ranges, not_for_me, _ = self._model
        p, k = self.profile, self.constants
        phys, rows, use_model = [], [], []
        for s in states:
            validate_state(s, p)
            r = physics_rates(p, s.speed_mps, s.accel_mps2, s.grade, s.payload_kg,
                              engine_load_pct=s.engine_load_pct, engine_speed_rpm=s.engine_speed_rpm,
                              coolant_temp_c=s.coolant_temp_c, grid_gco2_per_kwh=self.grid_gco2_per_kwh,
                              constants=k)
            phys.append(r)
            row = feature_row(p, s.speed_mps, s.accel_mps2, s.grade, s.payload_kg, s.coolant_temp_c, k)
            ok = backend.name != "physics" and not not_for_me and r.co2_g_s > 0 and not r.fuel_cut \
                and (ranges is None or not ranges.outside(row))
            rows.append(row)
            use_model.append(ok)
        corr = [0.0] * len(states)
        if any(use_model):
            picked = [row for row, ok in zip(rows, use_model, strict=True) if ok]
            x = np.asarray(picked, dtype=np.float32).reshape(-1, N_FEATURES)
            out = backend.run(x)
            it = iter(np.asarray(out, dtype=float).reshape(-1).tolist())
            corr = [next(it) if ok else 0.0 for ok in use_model]
        result = []
        is_physics = backend.name == "physics"
        for s, r, c, ok in zip(states, phys, corr, use_model, strict=False):
            if ok and math.isfinite(c):
                factor = correction_factor(c)
                sigma = MODEL_RELATIVE_SIGMA
            else:
                factor, sigma = 1.0, PHYSICS_RELATIVE_SIGMA
            co2 = r.co2_g_s * factor
            # OOD: a model is loaded but could not be trusted for this input (fuel-cut and idle are physics by design).
            ood = not is_physics and not ok and r.co2_g_s > 0 and not r.fuel_cut
            result.append(Estimate(s.asset_id, s.stamp_s, co2, r.fuel_lph * factor, r.power_kw, r.co2_g_s,
                                   abs(co2) * sigma, ood, backend.name, backend.model_id))
        return result

    def ood_reason(self, s: StateInput) -> str:
        """Why this state would be out of distribution ('' when the model applies)."""
        backend, ranges, not_for_me, _ = self._model
        if not_for_me:
            return not_for_me
        if ranges is None:
            return ""
        row = feature_row(self.profile, s.speed_mps, s.accel_mps2, s.grade, s.payload_kg, s.coolant_temp_c,
                          self.constants)
        name = ranges.outside(row)
        return f"{name} outside training range" if name else ""

    def estimate_arrays(self, speed_mps: np.ndarray, accel_mps2: np.ndarray, grade: np.ndarray,
                        payload_kg: float = 0.0, coolant_temp_c: np.ndarray | float = math.nan) -> ArrayEstimate:
        """The same estimate for a whole trace at once (drive cycles, validation): one backend call."""
        from carbon_ai_nodes.carbon.emission_model import cycle_rates
        from carbon_ai_nodes.carbon.residual_features import feature_matrix

        backend, ranges, not_for_me, _ = self._model
        p = self.profile
        r = cycle_rates(p, speed_mps, accel_mps2, grade, payload_kg, coolant_temp_c=coolant_temp_c,
                        constants=self.constants)
        if p.kind == "machine" or backend.name == "physics" or not_for_me:
            n = len(r.co2_g_s)
            ood = np.full(n, backend.name != "physics")
            return ArrayEstimate(r.co2_g_s, r.fuel_lph, r.power_kw, r.co2_g_s, ood & (r.co2_g_s > 0))
        x = feature_matrix(p, speed_mps, accel_mps2, grade, payload_kg, coolant_temp_c, self.constants)
        burning = r.co2_g_s > 0
        ood = ranges.outside_mask(x) if ranges is not None else np.zeros(len(x), bool)
        use = burning & ~ood
        factor = np.ones(len(x))
        if use.any():
            c = np.asarray(backend.run(x[use]), float).reshape(-1)
            factor[use] = correction_factor(np.nan_to_num(c, nan=0.0))
        return ArrayEstimate(r.co2_g_s * factor, r.fuel_lph * factor, r.power_kw, r.co2_g_s, ood & burning)


@dataclasses.dataclass(frozen=True)
class ArrayEstimate:
    """Per-sample estimates of a trace: CO2 (g/s), fuel (L/h), power (kW), physics CO2 (g/s), OOD flags."""

    co2_g_s: np.ndarray
    fuel_lph: np.ndarray
    power_kw: np.ndarray
    physics_co2_g_s: np.ndarray
    out_of_distribution: np.ndarray
