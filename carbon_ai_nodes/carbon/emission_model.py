"""Physics emission model: road load -> tractive power -> engine (Willans line) -> fuel -> CO2.

Road vehicles: tractive force ``F = a*(m+payload)/m + b*v + c*v^2 + M*a_x + M*g*sin(atan(grade))``
(coast-down form; the constant term is mostly tyre rolling resistance, so it scales with the carried mass
``M``), wheel power ``P_w = F*v``. The engine delivers ``P_b = P_w/eta_dt + P_acc`` and burns fuel power
``P_f = (P_b + P_fric)/eta_i`` (Willans line: a fixed indicated efficiency plus a friction offset
``fmep * displacement * rpm / 120``, so a big or fast-turning engine at light load is inefficient; fmep rises
with specific power and with smaller cylinders, and the accessory load with displacement). The slope
``eta_i`` never exceeds the engine's peak brake efficiency (:func:`peak_brake_efficiency`: by fuel, diesel
46 %, spark ignition 39 %, less for small cylinders), so brake efficiency ``eta_i * P_b / (P_b + P_fric)`` stays
under that ceiling and falls at part load, and tank-to-wheel under ``peak * eta_dt``. Engine
speed comes from the top-gear ratio (EPA "N/V", rpm per unit road speed) times speed, raised at low speed
(lower gears), never below a moving minimum, and raised when the demanded power needs more than a full-load
mean effective pressure at the current speed (a downshift). When the wheels need no power above a low speed
the engine is motored with fuel cut off; at standstill it idles.
A cold engine burns more (extra fraction that fades as the coolant warms). Electric drives convert battery
energy to CO2 with a grid intensity (regeneration credits braking energy). Machines (excavator, kiln,
compressor) use their fuel map against shaft power = engine load x rated power.

Two entry points give identical numbers: :func:`physics_rates` (one state, pure Python: microseconds, for the
inference path) and :func:`cycle_rates` (numpy arrays, for drive cycles, fitting and planners).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TypeVar, overload

import numpy as np

from carbon_ai_nodes.common.frames import G_MPS2
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile

# numpy < 2.0 (Ubuntu 22.04 / Humble) has only trapz; numpy 2's type stubs no longer list it
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # type: ignore[attr-defined]
# a scalar in, a scalar out; an array in, an array out
FloatOrArray = TypeVar("FloatOrArray", float, np.ndarray)

# Fuel properties per litre (CNG counted in litres of gasoline equivalent, as CarbonEstimate states).
# CO2: U.S. EPA, "Greenhouse Gas Emissions from a Typical Passenger Vehicle" (EPA-420-F-18-008):
#   8,887 g CO2/gal gasoline, 10,180 g CO2/gal diesel -> /3.78541 L/gal.
# CNG: IPCC 2006 default for natural gas 56,100 kg CO2/TJ, times the gasoline litre's energy.
# Lower heating values: gasoline ~32.0 MJ/L, diesel ~35.8 MJ/L (U.S. DOE AFDC fuel properties table).
GASOLINE_LHV_MJ_PER_L = 32.0
FUEL_LHV_MJ_PER_L = {"gasoline": GASOLINE_LHV_MJ_PER_L, "diesel": 35.8, "cng": GASOLINE_LHV_MJ_PER_L}
FUEL_CO2_G_PER_L = {
    "gasoline": 8887.0 / 3.78541,
    "diesel": 10180.0 / 3.78541,
    "cng": 56.1 * GASOLINE_LHV_MJ_PER_L,
}


@dataclasses.dataclass(frozen=True)
class EmissionConstants:
    """Engine-model constants shared by all profiles (fitted once on EPA 2022 data; see tools/train_residual.py).

    indicated_efficiency: Willans slope (fuel power -> indicated power) for gasoline; diesel and CNG scale it;
    every slope is held at or below the engine's peak brake efficiency.
    fmep_kpa: friction mean effective pressure, kPa (friction power = fmep * displacement * rpm / 120), of an
    engine rated at fmep_ref_kw_per_l; it grows by fmep_specific_power_gain per unit of relative excess
    specific power (rated kW per litre), since high-output engines carry larger valves, bearings and pumping;
    with the profile's cylinder count it also changes by fmep_cylinder_size_gain per unit of relative excess
    cylinder size (litres per cylinder over fmep_ref_l_per_cyl; no count = the reference size).
    Engine speed when the state carries no measured rpm: idle_rpm at standstill; moving,
    ``max(min_moving_rpm, r*v*(1 + downshift_gain*exp(-v/downshift_speed_mps)), P_b*120/(D*bmep_max_kpa))``
    capped at max_cruise_rpm, with r the profile's top-gear ratio or default_top_gear_rpm_per_mps (rpm per m/s);
    a profile with a manual transmission multiplies downshift_gain by manual_downshift_ratio.
    accessory_kw: a combustion engine's accessory load when the profile gives none, kW (alternator, HVAC), plus
    accessory_kw_per_l per litre of displacement (its engine-driven pumps) up to accessory_max_displacement_l;
    electric_accessory_kw: an electric drive's whole accessory load when the profile gives none, kW.
    peak_brake_efficiency_*: the ceilings of :func:`peak_brake_efficiency` (not fitted).
    cold_extra: extra fuel fraction of a fully cold engine (20 C); warmup_tau_s: coolant warm-up time constant.
    fuel_cut_min_speed_mps: below this speed a coasting engine idles instead of cutting fuel.
    regen_efficiency: fraction of braking power an electric drive returns to the battery.
    """

    # Fitted by ``tools/train_residual.py --fit-physics`` on the EPA 2022 HWFE + FTP-75 tests of the
    # manufacturers not held out (conventional gasoline, every row with a positive road-load curve), with the
    # gasoline slope bounded by the spark-ignition efficiency ceiling (it sits there: the EPA data alone would
    # put it at 0.50, which no production gasoline engine reaches); held-out MAPE in the model card.
    indicated_efficiency: float = 0.39
    fmep_kpa: float = 63.94
    fmep_specific_power_gain: float = 0.6228
    fmep_ref_kw_per_l: float = 60.0
    fmep_cylinder_size_gain: float = 0.5708  # friction per litre rising with cylinder size (the fit's sign)
    fmep_ref_l_per_cyl: float = 0.5
    idle_rpm: float = 750.0
    min_moving_rpm: float = 1477.0
    default_top_gear_rpm_per_mps: float = 57.3  # EPA 2022 median N/V 25.6 rpm/mph
    downshift_gain: float = 6.559
    downshift_speed_mps: float = 7.393
    manual_downshift_ratio: float = 1.430  # a manual's low-gear rpm excess is 43 % above an automatic's
    bmep_max_kpa: float = 1986.0
    max_cruise_rpm: float = 4000.0
    # small: with the efficiency ceiling the fit carries the load-independent losses in friction instead
    accessory_kw: float = 0.07478
    accessory_kw_per_l: float = 0.03891
    accessory_max_displacement_l: float = 6.6  # the largest engine of the EPA fit data: not extrapolated beyond
    # Not fitted (the EPA fit sees only combustion engines): the value the shared accessory constant had before
    # the combustion refit, so refitting gasoline engines does not move electric drives' energy.
    electric_accessory_kw: float = 2.229
    cold_extra: float = 4.143
    warmup_tau_s: float = 200.0
    warm_coolant_c: float = 90.0
    fuel_cut_min_speed_mps: float = 2.0
    regen_efficiency: float = 0.6
    diesel_efficiency_ratio: float = 1.18
    cng_efficiency_ratio: float = 0.95
    # Not fitted: physical ceilings (see peak_brake_efficiency). Best production brake efficiencies: heavy-duty
    # diesels about 46 % (U.S. DOE SuperTruck: 42 % for the 2009 baseline engines, about 46 % for 2020s
    # production engines such as the Cummins X15 and Detroit DD15); spark ignition 36-40 % (Heywood, Internal
    # Combustion Engine Fundamentals, 2nd ed. 2018, ch. 1; Toyota's 2.0 L Dynamic Force engine, 40 %, is the
    # best production figure), knock-limited, so CNG shares the ceiling. Smaller cylinders lose more heat
    # (surface/volume grows as the bore shrinks): 2 points per halving of the cylinder below the reference
    # size, which gives a 0.5 L-per-cylinder passenger-car diesel the 42 % of the best car diesels.
    peak_brake_efficiency_diesel: float = 0.46
    peak_brake_efficiency_spark: float = 0.39
    peak_ref_l_per_cyl_diesel: float = 2.0
    peak_ref_l_per_cyl_spark: float = 0.5
    peak_loss_per_halving: float = 0.02


DEFAULT_CONSTANTS = EmissionConstants()


@dataclasses.dataclass  # not frozen: built once per message on the hot path, where frozen init costs
class Rates:
    """Instantaneous emission rates: CO2 (g/s; negative only for an electric drive regenerating),
    fuel (L/h; 0 for electric), tractive or shaft power demand (kW; negative when braking)."""

    co2_g_s: float
    fuel_lph: float
    power_kw: float
    fuel_cut: bool = False


def peak_brake_efficiency(profile: VehicleProfile, k: EmissionConstants = DEFAULT_CONSTANTS) -> float:
    """The highest brake efficiency (brake work / fuel energy, LHV) the profile's engine may reach.

    The fuel's best production figure for a cylinder of the reference size or larger (diesel 2 L, spark
    ignition 0.5 L), minus ``peak_loss_per_halving`` per halving below it. Without a cylinder count the size is
    that of a typical layout: four cylinders up to 3 L, six above (a 15 L truck diesel: 2.5 L per cylinder).
    """
    diesel = profile.fuel == "diesel"
    peak = k.peak_brake_efficiency_diesel if diesel else k.peak_brake_efficiency_spark
    ref = k.peak_ref_l_per_cyl_diesel if diesel else k.peak_ref_l_per_cyl_spark
    d = profile.displacement_l
    per_cyl = d / profile.cylinders if profile.cylinders else d / (4 if d <= 3.0 else 6)
    if 0.0 < per_cyl < ref:
        peak -= k.peak_loss_per_halving * math.log2(ref / per_cyl)
    return peak


def _eta_i(profile: VehicleProfile, k: EmissionConstants) -> float:
    # The Willans slope (marginal efficiency) is held at or below the engine's peak brake efficiency, so the
    # brake efficiency slope * P_b / (P_b + P_friction) stays below that ceiling at every load and falls at
    # part load, where friction is a larger share (a fitted gasoline slope times 1.18 let a truck diesel
    # reach 0.59 and a 32 t truck 0.45-0.49 tank-to-wheel).
    ratio = {"diesel": k.diesel_efficiency_ratio, "cng": k.cng_efficiency_ratio}.get(profile.fuel, 1.0)
    return min(k.indicated_efficiency * ratio, peak_brake_efficiency(profile, k))


def accessory_kw(profile: VehicleProfile, k: EmissionConstants = DEFAULT_CONSTANTS) -> float:
    """Accessory (alternator, pumps, HVAC) load the engine carries, kW: the profile's, else the shared constant,
    which for a combustion engine grows with its displacement (bigger engine-driven oil and coolant pumps)."""
    own = profile.accessory_power_kw
    if own is not None:
        return own
    if profile.fuel == "electric":
        return k.electric_accessory_kw
    # The per-litre term is fitted on 1.2-6.6 L car engines; held there, a 15 L truck diesel carries 6 kW
    # (heavy trucks' alternator, air compressor and fan average a few kW in cruise), not 12 kW.
    return k.accessory_kw + k.accessory_kw_per_l * min(profile.displacement_l, k.accessory_max_displacement_l)


def _downshift_gain(profile: VehicleProfile, k: EmissionConstants) -> float:
    # A manual is driven (and EPA-tested) on fixed upshift speeds, so at city speeds it sits in a lower gear
    # than an automatic, which upshifts early to keep the engine slow.
    if profile.transmission == "manual":
        return k.downshift_gain * k.manual_downshift_ratio
    return k.downshift_gain


def _rpm_cap(profile: VehicleProfile, k: EmissionConstants) -> float:
    # Heavy diesels cruise far lower (1,200-1,500 rpm) than car engines.
    return min(k.max_cruise_rpm, 1500.0) if profile.fuel == "diesel" else k.max_cruise_rpm


def friction_kw(profile: VehicleProfile, rpm: FloatOrArray,
                k: EmissionConstants = DEFAULT_CONSTANTS) -> FloatOrArray:
    """Engine friction power (kW) at ``rpm``: the Willans-line intercept, fmep * displacement * rpm / 120."""
    d = profile.displacement_l
    specific = profile.rated_power_kw / max(d, 1e-3) / k.fmep_ref_kw_per_l
    # floor at 0.2: the linear trend must not give a low-output engine (a truck diesel) ~zero friction
    fmep = k.fmep_kpa * max(0.2, 1.0 + k.fmep_specific_power_gain * (specific - 1.0))
    n = profile.cylinders
    if n:
        # Small cylinders carry more piston-ring and bearing surface per litre swept, so more friction per
        # litre (the bore terms of SI-engine friction models, e.g. Sandoval & Heywood, SAE 2003-01-0725).
        # Held within half/twice the reference: the EPA data spans 0.325-0.8 L per cylinder.
        size = d / n / k.fmep_ref_l_per_cyl
        size = 0.5 if size < 0.5 else 2.0 if size > 2.0 else size
        fmep *= 1.0 + k.fmep_cylinder_size_gain * (size - 1.0)
    return fmep * d * 1e-3 * rpm / 120.0


def engine_rpm(profile: VehicleProfile, speed_mps: float, brake_kw: float,
               k: EmissionConstants = DEFAULT_CONSTANTS) -> float:
    """Modelled engine speed (rpm) at ``speed_mps`` (m/s) delivering ``brake_kw`` (kW); idle at standstill."""
    if speed_mps < 0.1:
        return k.idle_rpm
    ratio = profile.top_gear_rpm_per_mps or k.default_top_gear_rpm_per_mps
    # Low speed means a low gear, so the engine turns faster than top gear would give; a CVT or a
    # multi-speed box settles near top gear on the highway.
    geared = ratio * speed_mps * (1.0 + _downshift_gain(profile, k) * math.exp(-speed_mps / k.downshift_speed_mps))
    # A power demand beyond the full-load torque at this speed forces a downshift (power = bmep*D*rpm/120).
    torque_limited = brake_kw * 120.0 / (max(profile.displacement_l, 1e-3) * 1e-3 * k.bmep_max_kpa)
    return min(max(k.min_moving_rpm, geared, torque_limited), _rpm_cap(profile, k))


def engine_rpm_array(profile: VehicleProfile, v: np.ndarray, brake_kw: np.ndarray,
                     k: EmissionConstants = DEFAULT_CONSTANTS) -> np.ndarray:
    """Vectorised :func:`engine_rpm` (rpm) for speeds ``v`` (m/s) and brake powers ``brake_kw`` (kW)."""
    ratio = profile.top_gear_rpm_per_mps or k.default_top_gear_rpm_per_mps
    geared = ratio * v * (1.0 + _downshift_gain(profile, k) * np.exp(-v / k.downshift_speed_mps))
    torque_limited = brake_kw * 120.0 / (max(profile.displacement_l, 1e-3) * 1e-3 * k.bmep_max_kpa)
    moving = np.minimum(np.maximum(np.maximum(geared, torque_limited), k.min_moving_rpm), _rpm_cap(profile, k))
    return np.where(v < 0.1, k.idle_rpm, moving)


def road_load_n(profile: VehicleProfile, speed_mps: float, payload_kg: float = 0.0) -> float:
    """Coast-down road load (N) at ``speed_mps`` (m/s) carrying ``payload_kg`` (kg) over the test mass.

    The constant term is mostly tyre rolling resistance, proportional to the weight on the tyres, so it
    grows with payload; the speed terms (drivetrain drag, aerodynamics) do not. 0 at standstill.
    """
    if speed_mps <= 0.0:
        return 0.0
    payload = payload_kg if math.isfinite(payload_kg) else 0.0
    a = profile.a_n * (profile.mass_kg + payload) / profile.mass_kg
    return a + profile.b_n_per_mps * speed_mps + profile.c_n_per_mps2 * speed_mps * speed_mps


def cold_fraction(coolant_temp_c: float, k: EmissionConstants = DEFAULT_CONSTANTS) -> float:
    """How cold the engine is: 0 when warm (>= warm_coolant_c), 1 at 20 C, NaN (unknown) counts as warm."""
    if not math.isfinite(coolant_temp_c):
        return 0.0
    return min(1.5, max(0.0, (k.warm_coolant_c - coolant_temp_c) / (k.warm_coolant_c - 20.0)))


@overload
def coolant_after_start_c(t_s: float, ambient_c: float = ..., k: EmissionConstants = ...) -> float: ...
@overload
def coolant_after_start_c(t_s: np.ndarray, ambient_c: float = ..., k: EmissionConstants = ...) -> np.ndarray: ...
def coolant_after_start_c(t_s: np.ndarray | float, ambient_c: float = 22.0,
                          k: EmissionConstants = DEFAULT_CONSTANTS) -> np.ndarray | float:
    """Coolant temperature (C) ``t_s`` seconds after a cold start at ``ambient_c`` (first-order warm-up)."""
    return k.warm_coolant_c - (k.warm_coolant_c - ambient_c) * np.exp(-np.asarray(t_s) / k.warmup_tau_s)


def physics_rates(profile: VehicleProfile, speed_mps: float, accel_mps2: float, grade: float, payload_kg: float,
                  *, engine_load_pct: float = math.nan, engine_speed_rpm: float = math.nan,
                  coolant_temp_c: float = math.nan, grid_gco2_per_kwh: float = math.nan,
                  constants: EmissionConstants = DEFAULT_CONSTANTS) -> Rates:
    """Instantaneous CO2 (g/s), fuel (L/h) and power (kW) of one state.

    speed_mps >= 0, accel_mps2 (longitudinal), grade (rise/run), payload_kg (added to the test mass; NaN = 0).
    Optional measurements refine it: engine_speed_rpm (friction), coolant_temp_c (cold start),
    engine_load_pct (machines), grid_gco2_per_kwh (electric; NaN = the profile's value).
    """
    k = constants
    payload = payload_kg if math.isfinite(payload_kg) else 0.0
    grid = grid_gco2_per_kwh if math.isfinite(grid_gco2_per_kwh) else profile.grid_gco2_per_kwh
    p_acc = accessory_kw(profile, k)
    if profile.kind == "machine":
        load = min(max(engine_load_pct, 0.0), 100.0) if math.isfinite(engine_load_pct) else 0.0
        power_kw = load / 100.0 * profile.rated_power_kw
        if profile.is_electric:
            return Rates(power_kw * grid / 3600.0, 0.0, power_kw)
        fuel_lph = float(np.interp(power_kw, profile.fuel_map_power_kw, profile.fuel_map_fuel_lph))
        return Rates(fuel_lph * FUEL_CO2_G_PER_L[profile.fuel] / 3600.0, fuel_lph, power_kw)

    v = max(speed_mps, 0.0)
    mass = profile.mass_kg + payload
    sin_t = grade / math.sqrt(1.0 + grade * grade)
    force_n = road_load_n(profile, v, payload) + mass * accel_mps2 + mass * G_MPS2 * sin_t
    wheel_kw = force_n * v / 1000.0
    eta_dt = profile.drivetrain_efficiency
    if profile.is_electric:
        batt_kw = (wheel_kw / eta_dt if wheel_kw > 0 else wheel_kw * eta_dt * k.regen_efficiency) + p_acc
        return Rates(batt_kw * grid / 3600.0, 0.0, wheel_kw)

    eta_i = _eta_i(profile, k)
    cut = False
    if v < 0.1 and profile.idle_fuel_lph is not None:
        fuel_lph = profile.idle_fuel_lph
    elif wheel_kw <= 0.0 and v >= k.fuel_cut_min_speed_mps and profile.fuel_cut:
        fuel_lph, cut = 0.0, True
    else:
        brake_kw = min(max(wheel_kw, 0.0) / eta_dt + p_acc, profile.rated_power_kw)
        if math.isfinite(engine_speed_rpm) and engine_speed_rpm > 0:
            rpm = engine_speed_rpm
        else:
            rpm = engine_rpm(profile, v, brake_kw, k)
        fric_kw = friction_kw(profile, rpm, k)
        fuel_lph = (brake_kw + fric_kw) / eta_i * 3600.0 / (FUEL_LHV_MJ_PER_L[profile.fuel] * 1000.0)
    fuel_lph *= 1.0 + k.cold_extra * cold_fraction(coolant_temp_c, k)
    return Rates(fuel_lph * FUEL_CO2_G_PER_L[profile.fuel] / 3600.0, fuel_lph, wheel_kw, cut)


@dataclasses.dataclass(frozen=True)
class CycleRates:
    """Per-sample rates over a cycle (numpy arrays, same length as the inputs)."""

    co2_g_s: np.ndarray
    fuel_lph: np.ndarray
    power_kw: np.ndarray


def cycle_rates(profile: VehicleProfile, speed_mps: np.ndarray, accel_mps2: np.ndarray, grade: np.ndarray,
                payload_kg: float = 0.0, *, coolant_temp_c: np.ndarray | float = math.nan,
                constants: EmissionConstants = DEFAULT_CONSTANTS) -> CycleRates:
    """Vectorised :func:`physics_rates` for road vehicles (same equations; machines go through the scalar path)."""
    k = constants
    v = np.maximum(np.asarray(speed_mps, float), 0.0)
    a = np.asarray(accel_mps2, float)
    gr = np.broadcast_to(np.asarray(grade, float), v.shape)
    if profile.kind == "machine":
        rows = [physics_rates(profile, 0.0, 0.0, 0.0, payload_kg, constants=k) for _ in v]
        return CycleRates(*(np.array([getattr(r, f) for r in rows]) for f in ("co2_g_s", "fuel_lph", "power_kw")))
    payload = payload_kg if math.isfinite(payload_kg) else 0.0
    mass = profile.mass_kg + payload
    a_n = profile.a_n * mass / profile.mass_kg  # rolling resistance scales with weight (see road_load_n)
    road = np.where(v > 0, a_n + profile.b_n_per_mps * v + profile.c_n_per_mps2 * v * v, 0.0)
    force = road + mass * a + mass * G_MPS2 * gr / np.sqrt(1.0 + gr * gr)
    wheel_kw = force * v / 1000.0
    eta_dt = profile.drivetrain_efficiency
    p_acc = accessory_kw(profile, k)
    if profile.is_electric:
        batt = np.where(wheel_kw > 0, wheel_kw / eta_dt, wheel_kw * eta_dt * k.regen_efficiency) + p_acc
        return CycleRates(batt * profile.grid_gco2_per_kwh / 3600.0, np.zeros_like(v), wheel_kw)
    brake_kw = np.minimum(np.maximum(wheel_kw, 0.0) / eta_dt + p_acc, profile.rated_power_kw)
    rpm = engine_rpm_array(profile, v, brake_kw, k)
    fric_kw = friction_kw(profile, rpm, k)
    fuel = (brake_kw + fric_kw) / _eta_i(profile, k) * 3600.0 / (FUEL_LHV_MJ_PER_L[profile.fuel] * 1000.0)
    if profile.fuel_cut:
        fuel = np.where((wheel_kw <= 0.0) & (v >= k.fuel_cut_min_speed_mps), 0.0, fuel)
    if profile.idle_fuel_lph is not None:
        fuel = np.where(v < 0.1, profile.idle_fuel_lph, fuel)
    cool = np.broadcast_to(np.asarray(coolant_temp_c, float), v.shape)
    cold = np.where(np.isfinite(cool),
                    np.clip((k.warm_coolant_c - cool) / (k.warm_coolant_c - 20.0), 0.0, 1.5), 0.0)
    fuel = fuel * (1.0 + k.cold_extra * cold)
    return CycleRates(fuel * FUEL_CO2_G_PER_L[profile.fuel] / 3600.0, fuel, wheel_kw)


def cruise_co2_g_per_m(profile: VehicleProfile, speed_mps: float, grade: float, payload_kg: float,
                       constants: EmissionConstants = DEFAULT_CONSTANTS) -> float:
    """Steady-cruise CO2 per metre (g/m) at ``speed_mps`` on ``grade`` with ``payload_kg``: the planner's arc cost.

    Downhill stretches where the engine is motored cost nothing (fuel cut); at speed 0 the cost per metre is
    undefined, so speeds are floored at 0.5 m/s.
    """
    v = max(speed_mps, 0.5)
    r = physics_rates(profile, v, 0.0, grade, payload_kg, engine_load_pct=50.0, constants=constants)
    return r.co2_g_s / v


# --------------------------------------------------------------------------------------------- drive cycles
# A drive cycle's samples must be drivable: 100 m/s (360 km/h) is above any road vehicle this models; 60 %
# (31 degrees) is above the steepest public streets (about 35 %) and mine ramps (8-12 %).
CYCLE_MAX_SPEED_MPS = 100.0
CYCLE_MAX_GRADE = 0.6


@dataclasses.dataclass(frozen=True)
class DriveCycle:
    """A speed trace sampled at ``time_s`` (s, increasing): speed_mps and grade (rise/run)."""

    name: str
    time_s: np.ndarray
    speed_mps: np.ndarray
    grade: np.ndarray

    def slice_s(self, start_s: float, end_s: float, name: str = "") -> DriveCycle:
        """The samples with start_s <= t < end_s, time re-based to start at 0."""
        m = (self.time_s >= start_s) & (self.time_s < end_s)
        return DriveCycle(name or self.name, self.time_s[m] - start_s, self.speed_mps[m], self.grade[m])

    @property
    def accel_mps2(self) -> np.ndarray:
        """Acceleration by central differences (forward/backward at the ends), m/s^2."""
        if len(self.time_s) < 2:
            return np.zeros_like(self.speed_mps)
        return np.gradient(self.speed_mps, self.time_s)

    @property
    def distance_m(self) -> float:
        """Distance driven (trapezoidal), m."""
        return float(_trapezoid(self.speed_mps, self.time_s)) if len(self.time_s) > 1 else 0.0


def load_cycle(path: str, name: str = "") -> DriveCycle:
    """Read ``time_s,speed_mps[,grade]`` CSV; raises ConfigError on a malformed file."""
    from pathlib import Path

    from carbon_ai_nodes.common.errors import ConfigError
    from carbon_ai_nodes.common.user_files import read_csv

    p = Path(path)
    rows = read_csv(p, "drive cycle", ("time_s", "speed_mps"))
    try:
        t = np.array([float(r["time_s"]) for r in rows])
        v = np.array([float(r["speed_mps"]) for r in rows])
        g = np.array([float(r.get("grade") or 0.0) for r in rows])
    except ValueError as exc:
        raise ConfigError(f"{p}: non-numeric value in drive cycle ({exc})") from None
    if len(t) < 2 or not np.all(np.isfinite(t) & np.isfinite(v) & np.isfinite(g)):
        raise ConfigError(f"{p}: a drive cycle needs at least two finite rows")
    if np.any(np.diff(t) <= 0) or np.any(v < 0):
        raise ConfigError(f"{p}: time_s must increase strictly and speed_mps be >= 0")
    for col, values, (low, high), unit in (("speed_mps", v, (0.0, CYCLE_MAX_SPEED_MPS), "m/s"),
                                           ("grade", g, (-CYCLE_MAX_GRADE, CYCLE_MAX_GRADE), "rise/run")):
        out = np.flatnonzero((values < low) | (values > high))
        if len(out):
            i = int(out[0])
            raise ConfigError(f"{p}: {col}={values[i]:g} at time_s={t[i]:g} (row {i + 2}): outside the physical "
                              f"range [{low:g}, {high:g}] {unit} ({len(out)} such rows)")
    return DriveCycle(name or p.stem, t, v, g)


@dataclasses.dataclass(frozen=True)
class CycleResult:
    """Totals of a profile over a cycle: CO2 (g), fuel (L), distance (m), plus the per-sample CO2 rate."""

    co2_g: float
    fuel_l: float
    distance_m: float
    co2_g_s: np.ndarray

    @property
    def co2_g_per_km(self) -> float:
        """CO2 per km (g/km); NaN for a zero-distance cycle."""
        return self.co2_g / (self.distance_m / 1000.0) if self.distance_m > 0 else math.nan


def cycle_totals(time_s: np.ndarray, co2_g_s: np.ndarray, fuel_lph: np.ndarray, distance_m: float) -> CycleResult:
    """Integrate rates sampled at ``time_s`` (rectangle rule: each rate holds until the next sample)."""
    dt = np.diff(time_s, append=time_s[-1] + (time_s[-1] - time_s[-2] if len(time_s) > 1 else 1.0))
    return CycleResult(float(np.sum(co2_g_s * dt)), float(np.sum(fuel_lph * dt) / 3600.0), distance_m, co2_g_s)



FTP_BAG1_S = 505.0  # EPA FTP-75: bag 1 = first 505 s of UDDS (cold), bag 2 = the rest, bag 3 = first 505 s hot


def ftp75_weighted_g_per_mi(bag_co2_g: Sequence[float], bag_distance_m: Sequence[float]) -> float:
    """EPA FTP-75 weighted CO2 (g/mi) from bag totals (cold transient, stabilised, hot transient).

    40 CFR 600.113: weighted = 0.43*(Yc+Ys)/(Dc+Ds) + 0.57*(Yh+Ys)/(Dh+Ds).
    """
    (yc, ys, yh), (dc, ds, dh) = bag_co2_g, [d / 1609.344 for d in bag_distance_m]
    return 0.43 * (yc + ys) / (dc + ds) + 0.57 * (yh + ys) / (dh + ds)
