"""Self-calibrating vehicle model (pure; numpy only): one vehicle learns its mass, road load and engine from
its own telemetry.

Small Kalman filters with a random-walk process noise (forgetting), each linear in its states:

- **vehicle** ``x_v = [mass_kg, a_n, c_n_per_mps2, accessory_kw]`` from the engine's brake power
  (``engine_load_pct`` x rated power, J1939 SPN 92 as the simulator reports it)::

      P_b = accessory_kw + (mass*(a + g*sin(theta))*v + a_n*v + b*v^2 + c*v^3) / (1000*eta_dt)

  The inertia term carries the mass, so it is learned only from acceleration and climbs; at steady speed on
  the flat its regressor is zero and its variance does not shrink. ``b`` (drivetrain drag) and ``eta_dt``
  come from the profile (``m/eta_dt`` is what the data carry: a wrong ``eta_dt`` biases the mass by the same
  ratio, never the CO2 prediction).
- **engine** ``x_e = [fuel_at_zero_kw, fuel_per_brake_kw, fuel_curvature]``: a Willans line with a
  curvature, fuel power (kW, LHV) ``F0 + k P_b + q P_b^2 / P_rated`` from brake power ``P_b``, learned
  from the measured fuel rate (``fuel_rate_lph``, J1939 SPN 183). Without a load channel the vehicle model's
  predicted brake power stands in (the engine line then absorbs the vehicle's errors).
- **idle** fuel power (kW), a scalar, learned at standstill, and **overrun** fuel power (kW) per speed band
  (``OVERRUN_BANDS_MPS``), learned while the wheels drive the engine (fuel cut, or idling in gear, as the
  engine's controller decides).

Physics bounds are projected after every update: mass and every force term >= 0 (mass within 0.3x-3x of the
profile), the marginal brake efficiency ``1 / (dF/dP_b)`` at every load never above the engine's peak brake
efficiency (:func:`emission_model.peak_brake_efficiency`, the grounded-carbon ceiling), so tank-to-wheel
stays under ``peak * eta_dt``. Samples are gated (standstill, gear changes seen as rpm jumps, motoring or
braking, non-finite or out-of-range values, stuck channels, innovations beyond ``outlier_sigma``) and counted
by reason; a payload change larger than ``payload_reset_fraction`` of the mass moves the mass by the change and
re-opens its uncertainty. An innovation's influence is bounded (clipped to ``clip_sigma``; a robust Kalman
update), so one sample the model cannot explain (a transient) never throws the estimate to a bound. No
update ever leaves a NaN: a non-finite result restores the last good state.

Priors come from the generic physics model (:mod:`emission_model`) of the vehicle's profile, so an
uncalibrated estimator predicts what the generic model predicts.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from carbon_ai_nodes.carbon.emission_model import (
    DEFAULT_CONSTANTS,
    FUEL_CO2_G_PER_L,
    FUEL_LHV_MJ_PER_L,
    accessory_kw,
    peak_brake_efficiency,
    physics_rates,
)
from carbon_ai_nodes.common.frames import G_MPS2
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
from carbon_ai_nodes.common.vehicle_state_rules import ENGINE_RANGES, MAX_ACCEL_MPS2, MAX_GRADE, MAX_SPEED_MPS

SCHEMA = "carbon_ai.vehicle_calibration"
SCHEMA_VERSION = 1
OVERRUN_STATES = ("overrun_fuel_kw.0-2mps", "overrun_fuel_kw.2-5mps", "overrun_fuel_kw.5-10mps",
                  "overrun_fuel_kw.10-15mps", "overrun_fuel_kw.15+mps")
VEHICLE_STATES = ("mass_kg", "a_n", "c_n_per_mps2", "accessory_kw")
ENGINE_STATES = ("fuel_at_zero_kw", "fuel_per_brake_kw", "fuel_curvature")
REJECT_REASONS = ("non_finite", "out_of_range", "out_of_order", "standstill", "gear_change", "motoring",
                  "no_fuel", "fuel_stuck", "load_stuck", "outlier", "numerical")
_STUCK_SAMPLES = 20  # an exactly repeated reading this many times while the vehicle moves: a frozen channel
_WARMUP_SAMPLES = 30  # the innovation gate starts after this many accepted updates of a filter
_RELEARN_AFTER = 30  # this many outliers in a row: the vehicle changed, re-open the uncertainty
# overrun fuel is learned per band: [0.1, 2), [2, 5), [5, 10), [10, 15), >= 15 m/s (2 m/s: the generic model's
# lowest fuel-cut speed, emission_model.EmissionConstants.fuel_cut_min_speed_mps)
OVERRUN_BANDS_MPS = (2.0, 5.0, 10.0, 15.0)
_RANGED = ("payload_kg", "engine_speed_rpm", "engine_load_pct", "fuel_rate_lph")  # J1939 ranges (vehicle_state_rules)


def _clamp(value: float, low: float, high: float) -> float:
    """``value`` held in [low, high]; NaN reads as the bound nearest 0 (unknown = no motion, flat)."""
    if value != value:
        return min(max(0.0, low), high)
    return min(max(value, low), high)


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """Gates and tuning of :class:`VehicleCalibration` (SI units).

    min_speed_mps: below it nothing but idle fuel is learned. max_rpm_rate_rpm_s: a faster engine-speed change
    is a gear change (torque interrupted), and ``shift_holdoff_s`` after it is skipped too. min_load_pct: below
    this engine load the engine is motored or the brakes work, and the linear models do not hold.
    payload_reset_fraction: a payload change above this fraction of the mass re-opens the mass estimate.
    process_rel_per_sqrt_s: random-walk growth of each state, relative to its prior, per sqrt(second)
    (the forgetting). outlier_sigma: innovations beyond this many standard deviations are rejected.
    """

    min_speed_mps: float = 1.0
    max_rpm_rate_rpm_s: float = 400.0
    shift_holdoff_s: float = 1.0
    min_load_pct: float = 3.0
    max_abs_accel_mps2: float = 4.0
    max_abs_grade: float = 0.3
    payload_reset_fraction: float = 0.05
    process_rel_per_sqrt_s: float = 2e-4
    outlier_sigma: float = 5.0
    clip_sigma: float = 3.0
    payload_change_rel_sigma: float = 0.2  # how well a payload change read on the payload channel is known
    # > 0: the accepted samples of each such period (s) are averaged into one before learning. The node's fused
    # states come at 20-50 Hz with a noisy acceleration and repeat each 10 Hz fuel reading: learned one by one,
    # the noise in the regressors pulled the mass 18-25 % low and the repeats made the filter sure of it
    # (a 120 s van demo, 2026-12-06). 0 = learn from every sample (the bench's 1 Hz data).
    sample_period_s: float = 0.0
    prior_rel_sigma: tuple[float, ...] = (0.3, 0.5, 0.5, 0.5)  # mass, a_n, c_n, accessory
    engine_prior_rel_sigma: tuple[float, float, float] = (0.5, 0.3, 0.15)  # zero-power fuel, slope, curvature

    def __post_init__(self) -> None:
        for name in ("min_speed_mps", "max_rpm_rate_rpm_s", "min_load_pct", "max_abs_accel_mps2", "max_abs_grade",
                     "payload_reset_fraction", "process_rel_per_sqrt_s", "outlier_sigma", "clip_sigma",
                     "payload_change_rel_sigma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"calibration.{name}={value}: must be a finite number > 0")
        if not (math.isfinite(self.sample_period_s) and 0.0 <= self.sample_period_s <= 60.0):
            raise ValueError(f"calibration.sample_period_s={self.sample_period_s}: must be within 0-60 s")
        for name, n in (("prior_rel_sigma", 4), ("engine_prior_rel_sigma", 3)):
            value = getattr(self, name)
            if len(value) != n or not all(math.isfinite(x) and x > 0 for x in value):
                raise ValueError(f"calibration.{name}={value}: must be {n} finite numbers > 0")


@dataclasses.dataclass
class CalibrationSample:
    """One VehicleState's quantities (SI; NaN = channel not available)."""

    time_s: float
    speed_mps: float
    accel_mps2: float
    grade: float
    payload_kg: float = math.nan
    engine_speed_rpm: float = math.nan
    engine_load_pct: float = math.nan
    fuel_rate_lph: float = math.nan


@dataclasses.dataclass(frozen=True)
class CalibratedRates:
    """A calibrated prediction: CO2 (g/s), fuel (L/h), wheel power (kW) and one standard deviation of CO2 (g/s)."""

    co2_g_s: float
    fuel_lph: float
    wheel_kw: float
    sigma_co2_g_s: float


class _Kalman:
    """A linear Kalman filter over random-walk states with a scalar measurement, a covariance cap and bounds."""

    def __init__(self, x0: np.ndarray, sigma0: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        self.x = x0.astype(float).copy()
        self.p = np.diag(sigma0.astype(float) ** 2)
        self.sigma0 = sigma0.astype(float).copy()
        self.low, self.high = low.astype(float), high.astype(float)
        self.updates = 0
        self.outliers_in_row = 0

    def grow(self, dt_s: float, rel_per_sqrt_s: float) -> None:
        """Process noise for ``dt_s`` seconds, never above the prior variance (no wind-up while unexcited)."""
        q = (self.sigma0 * rel_per_sqrt_s) ** 2 * max(dt_s, 0.0)
        d = np.arange(len(self.x))
        self.p[d, d] = np.minimum(self.p[d, d] + q, self.sigma0 ** 2)

    def innovation(self, h: np.ndarray, y: float, r: float) -> tuple[float, float]:
        """Innovation and its variance for measurement ``y = h.x`` with noise variance ``r``."""
        return y - float(h @ self.x), float(h @ self.p @ h) + r

    def update(self, h: np.ndarray, y: float, r: float, clip_sigma: float = math.inf) -> bool:
        """One measurement, its innovation clipped to ``clip_sigma`` standard deviations; False (state untouched)
        if the result is not finite."""
        nu, s = self.innovation(h, y, r)
        if not (math.isfinite(nu) and math.isfinite(s) and s > 0):
            return False
        limit = clip_sigma * math.sqrt(s)
        nu = min(max(nu, -limit), limit)
        k = self.p @ h / s
        x = np.clip(self.x + k * nu, self.low, self.high)
        i_kh = np.eye(len(x)) - np.outer(k, h)
        p = i_kh @ self.p @ i_kh.T + np.outer(k, k) * r  # Joseph form: stays symmetric positive
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(p))):
            return False
        self.x, self.p = x, 0.5 * (p + p.T)
        self.updates += 1
        return True

    def sigma(self) -> np.ndarray:
        """One standard deviation of each state."""
        return np.sqrt(np.maximum(np.diag(self.p), 0.0))

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x.tolist(), "p": self.p.tolist(), "updates": self.updates}

    def from_json(self, data: Any) -> None:
        """Restore x, P and the update count (ValueError on a wrong shape or a non-finite value)."""
        x = np.asarray(data["x"], float)
        p = np.asarray(data["p"], float)
        n = len(self.x)
        if x.shape != (n,) or p.shape != (n, n) or not (np.all(np.isfinite(x)) and np.all(np.isfinite(p))):
            raise ValueError(f"expected {n} finite states and a {n}x{n} finite covariance")
        if np.any(np.diag(p) < 0):
            raise ValueError("negative variance")
        self.x = np.clip(x, self.low, self.high)
        self.p = np.minimum(0.5 * (p + p.T), np.max(self.sigma0) ** 2 * 1e6)
        self.updates = int(data.get("updates", 0))


class RollingError:
    """Prediction error over a sliding time window: (predicted - measured) / measured of the window's totals, %."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._rows: collections.deque[tuple[float, float, float]] = collections.deque()
        self._pred = 0.0
        self._meas = 0.0

    def add(self, time_s: float, predicted: float, measured: float) -> None:
        """One sample's predicted and measured rate (any one unit); non-finite pairs are skipped."""
        if not (math.isfinite(time_s) and math.isfinite(predicted) and math.isfinite(measured)):
            return
        self._rows.append((time_s, predicted, measured))
        self._pred += predicted
        self._meas += measured
        while self._rows and self._rows[0][0] < time_s - self.window_s:
            _, p, m = self._rows.popleft()
            self._pred -= p
            self._meas -= m

    @property
    def error_pct(self) -> float:
        """Signed error of the window's totals, %; NaN before any measured amount."""
        return (self._pred - self._meas) / self._meas * 100.0 if self._meas > 1e-9 else math.nan


def _generic_engine_line(profile: VehicleProfile) -> tuple[float, float, float]:
    """The generic model's idle fuel power and Willans line (fuel kW at zero brake power, fuel kW per brake kW),
    by finite differences of :func:`physics_rates` on two steady climbs at a mid speed (so no private helper of
    the emission model is copied)."""
    lhv_kw_per_lph = FUEL_LHV_MJ_PER_L[profile.fuel] * 1000.0 / 3600.0
    v = 10.0
    mass = profile.mass_kg
    acc_kw = accessory_kw(profile)
    points = []
    for frac in (0.2, 0.5):
        brake_kw = frac * profile.rated_power_kw
        wheel_n = max((brake_kw - acc_kw) * profile.drivetrain_efficiency * 1000.0 / v, 0.0)
        grade_force = wheel_n - (profile.a_n + profile.b_n_per_mps * v + profile.c_n_per_mps2 * v * v)
        sin_t = min(max(grade_force / (mass * G_MPS2), -0.5), 0.5)
        grade = sin_t / math.sqrt(1.0 - sin_t * sin_t)
        r = physics_rates(profile, v, 0.0, grade, 0.0, engine_speed_rpm=1200.0 if profile.fuel == "diesel" else 2000.0)
        b = acc_kw + max(r.power_kw, 0.0) / profile.drivetrain_efficiency
        points.append((b, r.fuel_lph * lhv_kw_per_lph))
    (b1, f1), (b2, f2) = points
    slope = (f2 - f1) / (b2 - b1) if b2 > b1 else 1.0 / peak_brake_efficiency(profile)
    slope = max(slope, 1.0 / peak_brake_efficiency(profile))
    zero = max(f1 - slope * b1, 0.0)
    idle = physics_rates(profile, 0.0, 0.0, 0.0, 0.0).fuel_lph * lhv_kw_per_lph
    return idle, zero, slope


class VehicleCalibration:
    """Online estimate of one combustion road vehicle's mass, road load and fuel map, with uncertainty.

    ``update(sample)`` learns from one VehicleState-like sample (returns what it learned from, '' if nothing);
    ``predict(...)`` gives calibrated rates; ``save``/``load`` persist the estimate as JSON.
    """

    def __init__(self, profile: VehicleProfile, config: CalibrationConfig | None = None,
                 payload_kg: float = math.nan) -> None:
        if profile.kind != "road" or profile.is_electric:
            raise ValueError(f"vehicle calibration: profile {profile.name!r} is not a combustion road vehicle "
                             f"(kind={profile.kind}, fuel={profile.fuel}): nothing to calibrate")
        self.profile = profile
        self.config = config or CalibrationConfig()
        cfg = self.config
        payload = payload_kg if math.isfinite(payload_kg) and payload_kg > 0 else 0.0
        mass0 = profile.mass_kg + payload
        acc0 = accessory_kw(profile)
        a0 = profile.a_n * mass0 / profile.mass_kg
        x_v = np.array([mass0, a0, profile.c_n_per_mps2, acc0])
        s_v = np.array(cfg.prior_rel_sigma) * np.maximum(x_v, [1.0, 1.0, 0.01, 0.5])
        heaviest = (profile.mass_kg + max(profile.payload_capacity_kg, 0.0)) * 3.0
        self.vehicle = _Kalman(x_v, s_v, np.array([0.3 * profile.mass_kg, 0.0, 0.0, 0.0]),
                               np.array([heaviest, 20.0 * max(a0, 1.0), 20.0 * max(profile.c_n_per_mps2, 0.01),
                                         0.5 * profile.rated_power_kw]))
        idle_kw, zero_kw, slope = _generic_engine_line(profile)
        self.peak_efficiency = peak_brake_efficiency(profile, DEFAULT_CONSTANTS)
        s_e = np.array(cfg.engine_prior_rel_sigma) * np.array([max(zero_kw, 1.0), slope, slope])
        self.engine = _Kalman(np.array([zero_kw, slope, 0.0]), s_e,
                              np.array([0.0, 1.0 / self.peak_efficiency, -slope]),
                              np.array([profile.rated_power_kw, 20.0, slope]))
        self.idle = _Kalman(np.array([idle_kw]), np.array([max(idle_kw, 0.5)]), np.array([0.0]),
                            np.array([0.2 * profile.rated_power_kw]))
        overrun0 = np.array([0.0 if profile.fuel_cut and lo >= DEFAULT_CONSTANTS.fuel_cut_min_speed_mps else idle_kw
                             for lo in (0.1, *OVERRUN_BANDS_MPS)])
        self.overrun = _Kalman(overrun0, np.full(len(overrun0), max(idle_kw, 0.5)), np.zeros(len(overrun0)),
                               np.full(len(overrun0), 0.2 * profile.rated_power_kw))
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.payload_resets = 0
        self.relearns = 0
        self.samples = 0
        self.error_60s = RollingError(60.0)
        self._last_time_s = -math.inf
        self._period: list[CalibrationSample] = []  # accepted samples of the averaging period in progress
        self._last_payload_kg = payload_kg if math.isfinite(payload_kg) else math.nan
        self._last_rpm = math.nan
        self._last_rpm_time_s = math.nan
        self._shift_until_s = -math.inf
        self._fuel_repeat = (math.nan, 0)
        self._load_repeat = (math.nan, 0)

    # ------------------------------------------------------------------ estimates
    @property
    def mass_kg(self) -> float:
        """Estimated total mass (kg, payload included)."""
        return float(self.vehicle.x[0])

    def parameters(self) -> dict[str, tuple[float, float]]:
        """Every estimated parameter: name -> (value, one standard deviation), in the units of its name."""
        out = {}
        for filt, names in ((self.vehicle, VEHICLE_STATES), (self.engine, ENGINE_STATES),
                            (self.idle, ("idle_fuel_kw",)), (self.overrun, OVERRUN_STATES)):
            for name, value, sigma in zip(names, filt.x, filt.sigma(), strict=True):
                out[name] = (float(value), float(sigma))
        return out

    def _wheel_regressors(self, speed_mps: float, accel_mps2: float, grade: float) -> tuple[np.ndarray, float]:
        """Brake-power regressor over x_v (kW per state unit) and the known part (profile's b term, kW)."""
        v = max(speed_mps, 0.0)
        sin_t = grade / math.sqrt(1.0 + grade * grade)
        scale = v / (1000.0 * self.profile.drivetrain_efficiency)
        h = np.array([(accel_mps2 + G_MPS2 * sin_t) * scale, scale, v * v * scale, 1.0])
        return h, self.profile.b_n_per_mps * v * scale

    def wheel_kw(self, speed_mps: float, accel_mps2: float, grade: float) -> float:
        """Calibrated wheel power (kW; negative when braking or coasting)."""
        h, known = self._wheel_regressors(speed_mps, accel_mps2, grade)
        x = self.vehicle.x
        return float((h[:3] @ x[:3] + known) * self.profile.drivetrain_efficiency)

    def predict(self, speed_mps: float, accel_mps2: float, grade: float,
                payload_kg: float = math.nan) -> CalibratedRates:
        """Calibrated CO2 (g/s), fuel (L/h), wheel power (kW) and CO2 sigma for one state. The mass estimate is
        the vehicle as it is now (payload changes move it), so ``payload_kg`` only shifts it by a payload change
        the estimator has not yet seen."""
        p = self.profile
        v = _clamp(speed_mps, 0.0, MAX_SPEED_MPS)
        a = _clamp(accel_mps2, -MAX_ACCEL_MPS2, MAX_ACCEL_MPS2)
        g = _clamp(grade, -MAX_GRADE, MAX_GRADE)
        h, known = self._wheel_regressors(v, a, g)
        x = self.vehicle.x.copy()
        if math.isfinite(payload_kg) and math.isfinite(self._last_payload_kg):
            x[0] = _clamp(x[0] + payload_kg - self._last_payload_kg, self.vehicle.low[0], self.vehicle.high[0])
        wheel_kw = float((h[:3] @ x[:3] + known) * p.drivetrain_efficiency)
        lph_per_kw = 3600.0 / (FUEL_LHV_MJ_PER_L[p.fuel] * 1000.0)
        if v < 0.1:
            fuel_kw = float(self.idle.x[0])
            var_kw = float(self.idle.p[0, 0])
        elif wheel_kw <= 0.0:
            band = _band(v)
            fuel_kw, var_kw = float(self.overrun.x[band]), float(self.overrun.p[band, band])
        else:
            brake_kw = min(float(h @ x) + known, p.rated_power_kw)
            e = self.engine.x
            he = self._engine_regressors(brake_kw)
            fuel_kw = max(float(he @ e), float(self.idle.x[0]))
            marginal = e[1] + 2.0 * e[2] * max(brake_kw, 0.0) / p.rated_power_kw
            var_kw = float(marginal ** 2 * (h @ self.vehicle.p @ h) + he @ self.engine.p @ he)
        fuel_lph = fuel_kw * lph_per_kw
        co2_per_lph = FUEL_CO2_G_PER_L[p.fuel] / 3600.0
        return CalibratedRates(fuel_lph * co2_per_lph, fuel_lph, wheel_kw,
                               math.sqrt(max(var_kw, 0.0)) * lph_per_kw * co2_per_lph)

    def vehicle_profile(self) -> VehicleProfile:
        """The profile with the calibrated mass (less the payload last reported), rolling and aero terms and
        accessory load, for planners that need the vehicle's dynamics (coast-down decelerations); fuel still comes
        from :meth:`predict`."""
        payload = self._last_payload_kg if math.isfinite(self._last_payload_kg) else 0.0
        mass, a_n, c_n, acc_kw = (float(x) for x in self.vehicle.x)
        empty = max(mass - payload, self.vehicle.low[0])
        return dataclasses.replace(self.profile, mass_kg=empty, a_n=max(a_n * empty / mass, 1e-3),
                                   c_n_per_mps2=c_n, accessory_power_kw=acc_kw)

    def predict_fuel_rate_lph(self, speed_mps: float, accel_mps2: float, grade: float,
                              payload_kg: float = math.nan) -> float:
        """Calibrated fuel rate (L/h) of one state."""
        return self.predict(speed_mps, accel_mps2, grade, payload_kg).fuel_lph

    def predict_co2_g_s(self, speed_mps: float, accel_mps2: float, grade: float,
                        payload_kg: float = math.nan) -> float:
        """Calibrated CO2 rate (g/s) of one state."""
        return self.predict(speed_mps, accel_mps2, grade, payload_kg).co2_g_s

    def reference_rel_sigma(self) -> float:
        """Largest relative CO2 sigma over three reference states (cruise, acceleration, climb at 10 m/s)."""
        worst = 0.0
        for accel, grade in ((0.0, 0.0), (0.3, 0.0), (0.0, 0.03)):
            r = self.predict(10.0, accel, grade)
            if r.co2_g_s > 0:
                worst = max(worst, r.sigma_co2_g_s / r.co2_g_s)
        return worst

    def is_confident(self, threshold: float = 0.05) -> bool:
        """True when the mass and the reference CO2 predictions are known to ``threshold`` (relative 1 sigma)."""
        m, s_m = self.parameters()["mass_kg"]
        return s_m / m <= threshold and self.reference_rel_sigma() <= threshold

    # ------------------------------------------------------------------ learning
    def _engine_regressors(self, brake_kw: float) -> np.ndarray:
        """Fuel-power regressor over x_e at ``brake_kw`` (kW)."""
        return np.array([1.0, brake_kw, brake_kw * brake_kw / self.profile.rated_power_kw])

    def _project_engine(self) -> None:
        """Hold the marginal brake efficiency at every load in [0, rated] under the engine's peak: the slope at
        full load, ``k + 2 q``, is at least ``1 / peak`` too (``k`` alone is held by its bound)."""
        e = self.engine.x
        e[2] = max(e[2], (1.0 / self.peak_efficiency - e[1]) / 2.0)

    def _reject(self, reason: str) -> str:
        self.rejected[reason] += 1
        return ""

    def _average(self, s: CalibrationSample) -> CalibrationSample | None:
        """The mean of the period ``s`` closes (the channels' finite readings; NaN where a channel had none), or
        None while ``s`` still belongs to the period in progress. Its acceleration is the least-squares slope of
        the speeds when they span half the period: noise in the acceleration regressor biases the mass low (errors
        in variables), and the speed, from the wheels, is far less noisy than the fused acceleration."""
        if not self._period or s.time_s - self._period[0].time_s < self.config.sample_period_s:
            self._period.append(s)
            return None
        done, self._period = self._period, [s]

        def mean(name: str) -> float:
            values = [v for v in (getattr(x, name) for x in done) if math.isfinite(v)]
            return math.fsum(values) / len(values) if values else math.nan

        avg = CalibrationSample(done[-1].time_s, *(mean(f.name) for f in dataclasses.fields(CalibrationSample)[1:]))
        t = np.array([x.time_s for x in done])
        if len(done) >= 3 and t[-1] - t[0] >= 0.5 * self.config.sample_period_s:
            v = np.array([x.speed_mps for x in done])
            slope = float(np.polyfit(t - t[0], v, 1)[0])
            if math.isfinite(slope):
                avg.accel_mps2 = slope
        return avg

    def _stuck(self, attr: str, value: float) -> bool:
        last, n = getattr(self, attr)
        n = n + 1 if value == last and value != 0.0 else 0  # 0 is a real reading (fuel cut, coasting)
        setattr(self, attr, (value, n))
        return n >= _STUCK_SAMPLES

    def _gated_update(self, filt: _Kalman, h: np.ndarray, y: float, r: float) -> bool:
        """Measurement update behind the innovation gate; a long run of outliers re-opens the uncertainty."""
        nu, s = filt.innovation(h, y, r)
        if filt.updates >= _WARMUP_SAMPLES and abs(nu) > self.config.outlier_sigma * math.sqrt(s):
            filt.outliers_in_row += 1
            if filt.outliers_in_row >= _RELEARN_AFTER:
                d = np.arange(len(filt.x))
                filt.p[d, d] = np.maximum(filt.p[d, d], (0.5 * filt.sigma0) ** 2)
                filt.outliers_in_row = 0
                self.relearns += 1
            self._reject("outlier")
            return False
        filt.outliers_in_row = 0
        if not filt.update(h, y, r, self.config.clip_sigma):
            self._reject("numerical")
            return False
        return True

    def _payload_change(self, payload_kg: float) -> None:
        """A payload change beyond the threshold: the mass moves by it, the rolling force in proportion, and both
        uncertainties grow by ``payload_change_rel_sigma`` of the change (correlations with them dropped). The
        first reading of an estimator that has learned no mass yet counts as a change from empty."""
        if not math.isfinite(payload_kg):
            return
        last = self._last_payload_kg
        if not math.isfinite(last):
            if self.vehicle.updates:
                self._last_payload_kg = payload_kg
                return
            last = 0.0
        delta = payload_kg - last
        if abs(delta) <= self.config.payload_reset_fraction * self.mass_kg:
            return
        v = self.vehicle
        old = v.x[0]
        v.x[0] = min(max(old + delta, v.low[0]), v.high[0])
        v.x[1] = min(max(v.x[1] * v.x[0] / old, v.low[1]), v.high[1])  # rolling resistance follows the weight
        rel = self.config.payload_change_rel_sigma
        for i, extra in ((0, rel * abs(delta)), (1, rel * abs(v.x[1] * delta / v.x[0]))):
            var = v.p[i, i] + extra * extra
            v.p[i, :] = 0.0
            v.p[:, i] = 0.0
            v.p[i, i] = min(var, v.sigma0[i] ** 2)
        self._last_payload_kg = payload_kg
        self.payload_resets += 1

    def update(self, s: CalibrationSample) -> str:
        """Learn from one sample. Returns which filters it updated (e.g. ``"vehicle+engine"``, ``"idle"``) or
        '' when it was rejected or carried no information (each reject counted in ``rejected``)."""
        cfg, p = self.config, self.profile
        self.samples += 1
        if not all(math.isfinite(x) for x in (s.time_s, s.speed_mps, s.accel_mps2, s.grade)):
            return self._reject("non_finite")
        if s.time_s <= max(self._last_time_s, self._period[-1].time_s if self._period else -math.inf):
            return self._reject("out_of_order")
        if not -0.5 <= s.speed_mps <= MAX_SPEED_MPS or abs(s.accel_mps2) > cfg.max_abs_accel_mps2 \
                or abs(s.grade) > cfg.max_abs_grade or any(
                    math.isfinite(x) and not lo <= x <= hi
                    for x, (lo, hi) in ((getattr(s, name), ENGINE_RANGES[name]) for name in _RANGED)):
            return self._reject("out_of_range")
        if cfg.sample_period_s > 0:
            averaged = self._average(s)
            if averaged is None:
                return ""  # still gathering this period
            s = averaged
        dt = min(s.time_s - self._last_time_s, 10.0) if math.isfinite(self._last_time_s) else 0.0
        self._last_time_s = s.time_s
        for filt in (self.vehicle, self.engine, self.idle, self.overrun):
            filt.grow(dt, cfg.process_rel_per_sqrt_s)
        self._payload_change(s.payload_kg)
        v = max(s.speed_mps, 0.0)
        lhv_kw_per_lph = FUEL_LHV_MJ_PER_L[p.fuel] * 1000.0 / 3600.0
        fuel_kw = s.fuel_rate_lph * lhv_kw_per_lph if math.isfinite(s.fuel_rate_lph) else math.nan
        if math.isfinite(fuel_kw) and v >= cfg.min_speed_mps and self._stuck("_fuel_repeat", fuel_kw):
            fuel_kw = math.nan
            self._reject("fuel_stuck")
        if math.isfinite(fuel_kw):
            self.error_60s.add(s.time_s, self.predict(v, s.accel_mps2, s.grade).fuel_lph, s.fuel_rate_lph)
        if v < 0.1:
            if not math.isfinite(fuel_kw):
                return self._reject("no_fuel")
            r_idle = (0.05 * max(fuel_kw, 0.5)) ** 2
            return "idle" if self._gated_update(self.idle, np.array([1.0]), fuel_kw, r_idle) else ""
        if v < cfg.min_speed_mps:
            return self._reject("standstill")
        if math.isfinite(s.engine_speed_rpm):
            if math.isfinite(self._last_rpm) and s.time_s > self._last_rpm_time_s:
                rate = abs(s.engine_speed_rpm - self._last_rpm) / (s.time_s - self._last_rpm_time_s)
                if rate > cfg.max_rpm_rate_rpm_s:
                    self._shift_until_s = s.time_s + cfg.shift_holdoff_s
            self._last_rpm, self._last_rpm_time_s = s.engine_speed_rpm, s.time_s
        if s.time_s <= self._shift_until_s:
            return self._reject("gear_change")
        h, known = self._wheel_regressors(v, s.accel_mps2, s.grade)
        load = s.engine_load_pct
        if math.isfinite(load) and self._stuck("_load_repeat", load):
            load = math.nan
            self._reject("load_stuck")
        brake_kw = load / 100.0 * p.rated_power_kw if math.isfinite(load) else float(h @ self.vehicle.x) + known
        if brake_kw < cfg.min_load_pct / 100.0 * p.rated_power_kw:
            # the wheels drive the engine (or the brakes work): only the overrun fuel is learned
            if not math.isfinite(fuel_kw):
                return self._reject("motoring")
            band = _band(v)
            hb = np.zeros(len(self.overrun.x))
            hb[band] = 1.0
            r_o = (0.05 * max(fuel_kw, float(self.idle.x[0]), 0.5)) ** 2
            return "overrun" if self._gated_update(self.overrun, hb, fuel_kw, r_o) else ""
        learned = []
        if math.isfinite(load) and load < 99.5:  # at full load the engine's limit, not the vehicle, sets power
            r_v = (0.01 * p.rated_power_kw + 0.03 * brake_kw) ** 2
            if self._gated_update(self.vehicle, h, brake_kw - known, r_v):
                learned.append("vehicle")
        if math.isfinite(fuel_kw):
            r_e = (0.005 * p.rated_power_kw / self.peak_efficiency + 0.03 * fuel_kw) ** 2
            if self._gated_update(self.engine, self._engine_regressors(brake_kw), fuel_kw, r_e):
                self._project_engine()
                learned.append("engine")
        elif not learned:
            return self._reject("no_fuel")
        return "+".join(learned)

    def diagnostics(self) -> dict[str, str]:
        """Key/value strings for /diagnostics: each parameter and its sigma, the prediction error against the
        fuel meter over the last minute, confidence, and the counters (samples, resets, rejects by reason)."""
        out = {}
        for name, (value, sigma) in self.parameters().items():
            out[name] = f"{value:.6g}"
            out[f"{name}.sigma"] = f"{sigma:.3g}"
        out["error_60s_pct"] = f"{self.error_60s.error_pct:.1f}"
        out["samples"] = str(self.samples)
        out["updates"] = (f"vehicle {self.vehicle.updates}, engine {self.engine.updates}, idle {self.idle.updates}, "
                          f"overrun {self.overrun.updates}")
        out["payload_resets"] = str(self.payload_resets)
        out["relearns"] = str(self.relearns)
        out.update({f"rejected.{reason}": str(n) for reason, n in self.rejected.items() if n})
        return out

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        """The estimate as a JSON-able mapping (schema + version, the profile it belongs to, each filter)."""
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, "profile": self.profile.name,
                "vehicle": self.vehicle.to_json(), "engine": self.engine.to_json(), "idle": self.idle.to_json(),
                "overrun": self.overrun.to_json(),
                "last_payload_kg": None if math.isnan(self._last_payload_kg) else self._last_payload_kg,
                "payload_resets": self.payload_resets, "rejected": dict(self.rejected)}

    def save(self, path: str | Path) -> None:
        """Write the estimate to ``path`` atomically (a temporary file renamed over it); OSError on failure."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | Path, profile: VehicleProfile,
             config: CalibrationConfig | None = None) -> tuple[VehicleCalibration | None, str]:
        """A saved estimate for ``profile``, or (None, why) for a missing, unreadable, corrupt, other-version or
        other-vehicle file. Never raises: a bad file means starting from the profile, with the reason logged."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return None, f"{path}: no saved calibration yet; starting from the profile"
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return None, f"{path}: unreadable calibration ({type(exc).__name__}: {exc}); starting from the profile"
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            return None, f"{path}: not a carbon_ai vehicle calibration; starting from the profile"
        if data.get("version") != SCHEMA_VERSION:
            return None, (f"{path}: calibration schema version {data.get('version')!r}, this build reads "
                          f"{SCHEMA_VERSION}; starting from the profile")
        if data.get("profile") != profile.name:
            return None, (f"{path}: calibration of {data.get('profile')!r}, not of {profile.name!r}; "
                          "starting from the profile")
        try:
            cal = cls(profile, config)
            for name in ("vehicle", "engine", "idle", "overrun"):
                getattr(cal, name).from_json(data[name])
            last = data.get("last_payload_kg")
            cal._last_payload_kg = float(last) if last is not None else math.nan
            cal.payload_resets = int(data.get("payload_resets", 0))
        except (KeyError, TypeError, ValueError) as exc:
            return None, f"{path}: corrupt calibration ({type(exc).__name__}: {exc}); starting from the profile"
        return cal, ""


def _band(speed_mps: float) -> int:
    """Index of the overrun speed band of ``speed_mps``."""
    return sum(speed_mps >= edge for edge in OVERRUN_BANDS_MPS)


def calibration_path(path: str, asset: str = "") -> str:
    """The calibration file of one vehicle: ``path`` itself, or in fleet mode (``asset`` set) ``<stem>.<asset>
    <suffix>`` beside it (each vehicle learns its own model); '' = no persistence."""
    if not path:
        return ""
    if not asset:
        return path
    p = Path(path)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in asset.strip("/"))
    return str(p.with_name(f"{p.stem}.{safe}{p.suffix or '.json'}"))
