"""The independent plant (pure; no ROS): NREL FASTSim scores a driven speed/grade trace.

carbon_ai's own emission model decides what the optimiser does, so it cannot also be the judge of the CO2 it
saves. A *plant* is a FASTSim 3 vehicle file (NREL's engine map, inertia, transmission, auxiliaries and
fuel-cut logic) that re-drives a recorded trace (time, speed from the odometer, grade from the route) and
reports the fuel it burns. FASTSim (PyPI ``fastsim``, Apache-2.0) is a validation dependency
(requirements/validation.txt): every use here is import-guarded and a missing install is a clear
:class:`PlantUnavailableError`, never a traceback.

A scenario vehicle names its plant (``plant:`` beside ``profile:``; see config/plants/README.md)::

    plant: {fastsim_file: $(config)/plants/Line_Haul_Conv.yaml, mass_kg: 30000, fuel: diesel, fuel_cut: true}
    plant: {model_only: "why there is no independent plant for this machine"}
    plant: {fastsim_file: $(config)/plants/Line_Haul_Conv.yaml, fuel: diesel, fuel_cut: true, scale: true}
    plant: {fastsim_file: $(config)/plants/2022_Renault_Zoe_ZE50_R135.yaml, fuel: electric, scale: true}

``scale: true`` is an *assumption, named*: FASTSim's physics and the file's engine map (efficiency per power
fraction), transmission and fuel-cut logic on a vehicle re-sized to the scenario's (:meth:`PlantSpec.scaled_to`):
its empty mass plus the payload it carries at each point of the trace, its rated power, and its rolling
resistance and drag area from its coast-down road load. There is no FASTSim model of a mining truck; a scaled
line-haul truck is the nearest independent physics, so its figures are absolute but its engine is NREL's
class-8 map stretched to 1,800 kW, not a measured mining engine.

Fuel energy (lower heating value) becomes litres and CO2 with the emission model's own constants
(``emission_model.FUEL_LHV_MJ_PER_L`` / ``FUEL_CO2_G_PER_L``), so model and plant differ in the engine and
vehicle, never in a conversion factor. An electric plant (``fuel: electric``, a FASTSim BEV file) gives the
battery's electrical output over the trace (kWh, net of what regenerative braking returned, as FASTSim computes
it with its motor, transmission and battery efficiencies), and its CO2 is that energy times the grid intensity
carbon_ai's model used for the same vehicle (:meth:`PlantSpec.scaled_to` takes the profile's; the report uses
the run's ``carbon_inference.grid_gco2_per_kwh`` when set), so again only the vehicle's energy differs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from carbon_ai_nodes.common.errors import ConfigError, PlantError, PlantUnavailableError

PLANT_FUELS = ("diesel", "gasoline", "electric")
AIR_DENSITY_KG_M3 = 1.2  # FASTSim's constant air density (SimParams.f2_const_air_density, its default)
G_MPS2 = 9.80665
GRADE_MISMATCH_MAX = 0.02  # share of the moving steps FASTSim may drive on another grade than the trace's
INSTALL_HINT = "pip install -r requirements/validation.txt (./setup.sh installs it unless --no-validation)"


@dataclasses.dataclass(frozen=True)
class PlantSpec:
    """Which plant scores a vehicle: a FASTSim 3 vehicle file (``fastsim_file``, resolved path), an optional
    test-mass override (kg, the whole vehicle as driven), the fuel its engine burns, and an optional fuel-cut
    override (``None`` = the file's own decel fuel cut-off setting). ``model_only`` set (the reason) = no
    independent plant exists for this vehicle; its figures are carbon_ai's model only. ``direction_only``: the
    plant is a stand-in of another size (e.g. a 32 t truck for a 385 t mining truck): its saving is evidence
    of direction, its absolute CO2 is not the vehicle's and no model-vs-plant error is claimed. ``scale``: the
    file is re-sized to the scenario vehicle (:meth:`scaled_to` fills ``mass_kg`` with its empty mass,
    ``power_kw``, ``rr_coef`` and ``drag_area_m2``; a trace's payload is added to the mass)."""

    fastsim_file: str = ""
    mass_kg: float | None = None
    fuel: str = "diesel"
    fuel_cut: bool | None = None
    model_only: str = ""
    direction_only: bool = False
    scale: bool = False
    power_kw: float | None = None  # scaled: the engine's (fuel converter's) or motor's max output power, kW
    rr_coef: float | None = None  # scaled: rolling resistance coefficient (force / weight)
    drag_area_m2: float | None = None  # scaled: drag coefficient x frontal area (m^2)
    grid_gco2_per_kwh: float | None = None  # electric: CO2 per kWh drawn from the battery (the model's intensity)

    def __post_init__(self) -> None:
        if bool(self.fastsim_file) == bool(self.model_only):
            raise ConfigError("plant: give fastsim_file (a FASTSim vehicle file) or model_only (the reason there "
                              "is no independent plant), not both")
        if self.mass_kg is not None and not (math.isfinite(self.mass_kg) and self.mass_kg > 0):
            raise ConfigError(f"plant.mass_kg={self.mass_kg}: must be > 0 (kg, the vehicle as driven)")
        if self.fuel not in PLANT_FUELS:
            raise ConfigError(f"plant.fuel={self.fuel!r}: must be one of {', '.join(PLANT_FUELS)}")
        if self.scale and self.direction_only:
            raise ConfigError("plant: scale (re-sized to the vehicle) and direction_only (a stand-in of another "
                              "size) exclude each other")
        for name in ("power_kw", "rr_coef", "drag_area_m2", "grid_gco2_per_kwh"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"plant.{name}={value}: must be > 0")

    def scaled_to(self, profile: Mapping[str, Any]) -> PlantSpec:
        """The plant fitted to vehicle ``profile`` (a VehicleProfile mapping). An electric plant takes the
        profile's grid intensity (``grid_gco2_per_kwh``, gCO2/kWh; VehicleProfile's default 400), the one
        carbon_ai's model uses unless its node is given another. With ``scale`` set, the plant is re-sized: empty
        mass (kg), rated power (kW), rolling resistance ``a_n / (mass g)`` and drag area ``2 c / rho`` at
        FASTSim's 1.2 kg/m^3. The road load's linear term ``b_n_per_mps`` has no FASTSim counterpart and is left
        out (the error is ``b v`` N; the haul truck's b is 0). Otherwise ``self`` unchanged."""
        spec = self
        if self.fuel == "electric" and self.grid_gco2_per_kwh is None:
            try:
                spec = dataclasses.replace(self, grid_gco2_per_kwh=float(profile.get("grid_gco2_per_kwh", 400.0)))
            except (TypeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"plant: the profile's grid_gco2_per_kwh is not a number ({exc})") from None
        if not self.scale:
            return spec
        try:
            mass = float(profile["mass_kg"])
            power = float(profile["rated_power_kw"])
            road = profile["road_load"]
            a_n, c_n = float(road["a_n"]), float(road["c_n_per_mps2"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"plant.scale: the profile needs mass_kg, rated_power_kw and road_load a_n, "
                              f"c_n_per_mps2 ({type(exc).__name__}: {exc})") from None
        return dataclasses.replace(spec, mass_kg=mass, power_kw=power, rr_coef=a_n / (mass * G_MPS2),
                                   drag_area_m2=2.0 * c_n / AIR_DENSITY_KG_M3)

    @property
    def label(self) -> str:
        """Short name for reports: the file's stem and the mass override, or ``model only``."""
        if self.model_only:
            return "model only"
        if self.scale:
            size = (f" {self.mass_kg / 1000:.0f} t + payload, {self.power_kw:.0f} kW"
                    if self.mass_kg is not None and self.power_kw else "")  # sized by scaled_to
            return f"{Path(self.fastsim_file).stem} scaled{size}"
        mass = f" at {self.mass_kg / 1000:.1f} t" if self.mass_kg else ""
        return f"{Path(self.fastsim_file).stem}{mass}"

    @classmethod
    def from_mapping(cls, data: Any, where: str = "plant",
                     expand: Any = None) -> PlantSpec:
        """From scenario YAML; ``expand`` substitutes ``$(config)``/``$(shared)`` in the file path. The file must
        exist (a missing plant is a configuration error at load time, not at the end of a demo run)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with fastsim_file (and mass_kg, fuel, fuel_cut, scale) or "
                              f"model_only, got {type(data).__name__}")
        known = {"fastsim_file", "mass_kg", "fuel", "fuel_cut", "model_only", "direction_only", "scale"}
        for key in data:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key; known: {', '.join(sorted(known))}")
        path = str(data.get("fastsim_file") or "")
        if path and expand is not None:
            path = expand(path)
        if path and not Path(path).is_file():
            raise ConfigError(f"{where}.fastsim_file={path!r}: no such file (plant files live in config/plants)")
        mass = data.get("mass_kg")
        fuel_cut = data.get("fuel_cut")
        if fuel_cut is not None and not isinstance(fuel_cut, bool):
            raise ConfigError(f"{where}.fuel_cut={fuel_cut!r}: must be true, false or absent (the file's setting)")
        flags = {key: data.get(key, False) for key in ("direction_only", "scale")}
        for key, value in flags.items():
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}={value!r}: must be true or false")
        if flags["scale"] and mass is not None:
            raise ConfigError(f"{where}: scale takes the mass from the vehicle profile; drop mass_kg")
        try:
            return cls(path, None if mass is None else float(mass), str(data.get("fuel", "diesel")), fuel_cut,
                       str(data.get("model_only") or ""), flags["direction_only"], flags["scale"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None


def profile_plants(plants_file: str | Path) -> dict[str, PlantSpec]:
    """The plant of each vehicle profile file (config/plants/vehicles.yaml: ``<profile file name>: <plant>``;
    plant file paths relative to that file's folder; a ``scale`` plant sized to the profile in ../vehicles/)."""
    import yaml

    path = Path(plants_file)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping <profile file name>: <plant>")
    plants = {str(name): PlantSpec.from_mapping(spec, f"{path}: {name}", expand=lambda p: str(path.parent / p))
              for name, spec in data.items()}
    profiles = path.parent.parent / "vehicles"  # config/plants/ -> config/vehicles/
    return {name: spec.scaled_to(yaml.safe_load((profiles / name).read_text())) if spec.scale else spec
            for name, spec in plants.items()}


@dataclasses.dataclass(frozen=True)
class Trace:
    """A driven trace for the plant: time (s, increasing), speed (m/s, >= 0), grade (rise/run) per sample, and
    optionally the payload carried (kg, >= 0; a scaled plant adds it to the vehicle's mass)."""

    time_s: np.ndarray
    speed_mps: np.ndarray
    grade: np.ndarray
    payload_kg: np.ndarray | None = None

    def __post_init__(self) -> None:
        t, v, g = self.time_s, self.speed_mps, self.grade
        if not len(t) == len(v) == len(g):
            raise PlantError(f"trace: time_s, speed_mps and grade differ in length ({len(t)}, {len(v)}, {len(g)})")
        if len(t) < 2:
            raise PlantError(f"trace: needs at least 2 samples, got {len(t)}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(v)) and np.all(np.isfinite(g))):
            raise PlantError("trace: time_s, speed_mps and grade must be finite (drop NaN samples first)")
        if np.any(np.diff(t) <= 0):
            raise PlantError("trace: time_s must increase")
        if np.any(v < 0):
            raise PlantError(f"trace: speed_mps must be >= 0 (min {float(v.min()):.3f})")
        if np.any(np.abs(g) > 0.5):
            raise PlantError(f"trace: |grade| must be <= 0.5 (max {float(np.abs(g).max()):.3f})")
        p = self.payload_kg
        if p is not None and (len(p) != len(t) or not np.all(np.isfinite(p) & (p >= 0))):
            raise PlantError("trace: payload_kg must be finite, >= 0 and one per sample")

    @property
    def distance_m(self) -> float:
        """Distance of the trace (m, trapezoidal)."""
        return float(_cumulative_m(self.time_s, self.speed_mps)[-1])

    @classmethod
    def from_samples(cls, time_s: Sequence[float], speed_mps: Sequence[float], grade_of_distance: Any = None,
                     dt_s: float = 1.0, payload_of_distance: Any = None) -> Trace:
        """A plant trace from recorded odometer samples (any rate, noisy, maybe with NaN): resampled every
        ``dt_s`` (s) as the mean speed over each step (distance kept), time from 0; the grade at each sample is
        the mean of ``grade_of_distance(distance_m)`` (numpy array in and out; default flat) over the step ending
        there, the payload
        ``payload_of_distance(distance_m)`` (kg; default none recorded)."""
        t = np.asarray(time_s, float)
        v = np.asarray(speed_mps, float)
        ok = np.isfinite(t) & np.isfinite(v)
        t, v = t[ok], np.maximum(v[ok], 0.0)
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        if len(t) == 0:
            raise PlantError("trace: no wheel-speed samples were recorded (did the vehicle publish odom/wheel?)")
        if len(t) < 2 or t[-1] - t[0] < 2 * dt_s:
            raise PlantError(f"trace: {len(t)} finite samples over {t[-1] - t[0]:.1f} s; needs at least "
                             f"{2 * dt_s:.0f} s")
        t = t - t[0]
        dist = _cumulative_m(t, v)
        grid = np.arange(0.0, t[-1] + 1e-9, dt_s)
        edges_s = np.clip(np.concatenate([grid - dt_s / 2, [grid[-1] + dt_s / 2]]), 0.0, t[-1])
        speed = np.diff(np.interp(edges_s, t, dist)) / np.maximum(np.diff(edges_s), 1e-9)  # ends: half steps
        speed[0] = v[0]  # the recording starts where the vehicle was, usually at rest
        d = np.interp(grid, t, dist)
        grade = np.zeros_like(grid) if grade_of_distance is None else _step_grade(grade_of_distance, d)
        payload = None if payload_of_distance is None else np.asarray(payload_of_distance(d), float)
        return cls(grid, speed, grade, payload)

    def until_distance(self, distance_m: float) -> Trace:
        """The first part of the trace, up to the sample where ``distance_m`` (m) has been driven."""
        d = _cumulative_m(self.time_s, self.speed_mps)
        n = max(2, int(np.searchsorted(d, distance_m - 1e-9)) + 1)
        return Trace(self.time_s[:n], self.speed_mps[:n], self.grade[:n],
                     None if self.payload_kg is None else self.payload_kg[:n])


def _step_grade(grade_of_distance: Any, distance_m: np.ndarray, points: int = 8) -> np.ndarray:
    """The grade FASTSim should apply on each step: the mean of ``grade_of_distance`` over the distance driven
    since the previous sample (the first sample: the grade where it is). FASTSim applies a sample's grade to the
    whole step ending there, so a step straddling the foot of a ramp gets its share of the climb, not all of it
    (all of it asks the plant for more power than the recorded drive used, and a missed trace breaks FASTSim
    3.1.0's grade lookup for the rest of the run, see :func:`_check_grade`)."""
    d = np.asarray(distance_m, float)
    frac = (np.arange(points) + 0.5) / points
    sub = d[:-1, None] + (d[1:] - d[:-1])[:, None] * frac[None, :]
    mean = np.asarray(grade_of_distance(sub.ravel()), float).reshape(sub.shape).mean(axis=1)
    return np.concatenate([np.asarray(grade_of_distance(d[:1]), float), mean])


def _cumulative_m(time_s: np.ndarray, speed_mps: np.ndarray) -> np.ndarray:
    """Distance driven (m) at each sample, from 0, trapezoidal."""
    return np.concatenate([[0.0], np.cumsum(np.diff(time_s) * 0.5 * (speed_mps[1:] + speed_mps[:-1]))])


def grade_along_route(route: Any) -> Any:
    """``grade_of_distance`` for :meth:`Trace.from_samples`: the grade of a closed
    :class:`~carbon_ai_nodes.sim.vehicle_sim.Route` at a distance (m) driven from its first waypoint."""
    n = len(route.waypoints)
    segs = [route.segment(i) for i in range(n)]
    ends = np.cumsum([s[3] for s in segs])
    grades = np.asarray([s[2] for s in segs])

    def grade_of(distance_m: np.ndarray) -> np.ndarray:
        s = np.mod(np.asarray(distance_m, float), ends[-1])
        return grades[np.minimum(np.searchsorted(ends, s, side="right"), n - 1)]

    return grade_of


def payload_along_route(route: Any, initial_payload_kg: float = 0.0) -> Any:
    """``payload_of_distance`` for :meth:`Trace.from_samples`: the payload (kg) a vehicle carries at a distance
    (m) driven round a closed route from its first waypoint, as the simulator sets it: a waypoint's
    ``payload_kg`` applies from arriving there (the first waypoint's from the start), else
    ``initial_payload_kg``."""
    n = len(route.waypoints)
    arrive_m = np.concatenate([[0.0], np.cumsum([route.segment(i)[3] for i in range(n)])])  # waypoints 0..n(=0)
    loads = [route.waypoints[i % n].payload_kg for i in range(n + 1)]
    sets = [(d, p) for d, p in zip(arrive_m, loads, strict=True) if p is not None]
    lap_m = arrive_m[-1]

    def payload_of(distance_m: np.ndarray) -> np.ndarray:
        out = []
        for d in np.atleast_1d(np.asarray(distance_m, float)):
            lap, s = divmod(max(float(d), 0.0), lap_m)
            done = [p for at, p in sets if at <= s + 1e-6]
            out.append(done[-1] if done else sets[-1][1] if sets and lap >= 1 else initial_payload_kg)
        return np.asarray(out, float)

    return payload_of


def grade_along_cycle(cycle: Any) -> Any:
    """``grade_of_distance`` for a replayed drive cycle (:class:`~carbon_ai_nodes.sim.vehicle_sim.DriveTrace`):
    the cycle's grade at a distance (m) into it, looping."""
    t, v, g = (np.asarray(x, float) for x in (cycle.time_s, cycle.speed_mps, cycle.grade))
    ends = _cumulative_m(t, v)[1:]

    def grade_of(distance_m: np.ndarray) -> np.ndarray:
        if ends[-1] <= 0:
            return np.full(np.shape(distance_m), g[0])
        s = np.mod(np.asarray(distance_m, float), ends[-1])
        return g[np.minimum(np.searchsorted(ends, s, side="right"), len(g) - 1)]

    return grade_of


@dataclasses.dataclass(frozen=True)
class PlantResult:
    """What the plant burned on a trace: fuel (L of its fuel; 0 for an electric plant), CO2 (kg), energy (MJ:
    fuel LHV, or for an electric plant the battery's electrical output net of regeneration), distance the plant
    drove (km; equals the trace's unless it fell behind), the trace's own distance (km), duration (s), and
    cumulative series per step (time s, distance m, CO2 g) for plots."""

    plant: str
    fuel_l: float
    co2_kg: float
    fuel_energy_mj: float
    distance_km: float
    trace_distance_km: float
    duration_s: float
    series: tuple[np.ndarray, np.ndarray, np.ndarray]
    grid_gco2_per_kwh: float | None = None  # an electric plant: the grid intensity its CO2 was reckoned with

    @property
    def electric(self) -> bool:
        """True for a battery-electric plant (its energy is the battery's, its fuel 0)."""
        return self.grid_gco2_per_kwh is not None

    @property
    def kwh_per_km(self) -> float:
        """Energy drawn per km (kWh/km; for an electric plant, from the battery); NaN when it did not move."""
        return self.fuel_energy_mj / 3.6 / self.distance_km if self.distance_km > 1e-3 else math.nan

    @property
    def co2_g_per_km(self) -> float:
        """CO2 intensity (g/km); NaN when the plant did not move."""
        return self.co2_kg * 1e6 / (self.distance_km * 1000.0) if self.distance_km > 1e-3 else math.nan

    @property
    def fuel_l_per_100km(self) -> float:
        """Fuel consumption (L/100 km); NaN when the plant did not move."""
        return self.fuel_l / self.distance_km * 100.0 if self.distance_km > 1e-3 else math.nan


def fastsim_available() -> bool:
    """True when FASTSim can be imported here."""
    try:
        import fastsim  # noqa: F401
    except ImportError:
        return False
    return True


def _fastsim() -> Any:
    try:
        import fastsim
    except ImportError:
        raise PlantUnavailableError(f"fastsim is not installed: {INSTALL_HINT}") from None
    return fastsim


def _first_line(exc: BaseException) -> str:
    """A Rust error's message without its backtrace: the lines that say what failed (trace misses first)."""
    return _first_line_of(str(exc))


def _first_line_of(message: str) -> str:
    """:func:`_first_line` of an error's text."""
    lines = [ln.strip() for ln in message.split("Stack backtrace")[0].splitlines() if ln.strip()]
    telling = [ln for ln in lines if re.match(r"(trace miss|achieved|prescribed|failed to meet|edrv .* exceeds)", ln)]
    return "; ".join((telling or lines)[:4]).rstrip("]")


def load_vehicle(spec: PlantSpec, payload_kg: float = 0.0, speed_mps: float = 0.0) -> Any:
    """The FASTSim vehicle of ``spec`` with its overrides applied (mass plus ``payload_kg``, fuel cut, scale),
    moving at ``speed_mps`` (m/s; FASTSim starts a run at its state's speed, not the trace's). PlantError on a
    bad file."""
    fastsim = _fastsim()
    if spec.model_only:
        raise PlantError(f"no plant: {spec.model_only}")
    try:
        data = fastsim.Vehicle.from_file(spec.fastsim_file).to_dict()
    except Exception as exc:  # noqa: BLE001 - FASTSim raises RuntimeError/ValueError/OSError alike
        raise PlantError(f"plant {spec.fastsim_file}: not a FASTSim 3 vehicle file ({_first_line(exc)[:300]})") \
            from None
    kind = _powertrain(spec)
    pt = data.get("pt_type", {}).get(kind)
    if pt is None:
        what = "a battery-electric (BEV)" if kind == "BEV" else "a conventional (fuel-only, Conv)"
        raise PlantError(f"plant {spec.fastsim_file}: powertrain {sorted(data.get('pt_type', {}))} is not "
                         f"{what} vehicle, which fuel {spec.fuel!r} needs")
    if spec.mass_kg is not None:
        data["mass_kilograms"] = spec.mass_kg + payload_kg
    if spec.fuel_cut is not None and isinstance(pt.get("dfco_cntrl"), dict):
        pt["dfco_cntrl"]["dfco_enabled"] = spec.fuel_cut
    if spec.scale:
        _scale(data, pt, spec)
    data["state"]["speed_ach_meters_per_second"] = speed_mps
    try:
        return fastsim.Vehicle.from_dict(data)
    except Exception as exc:  # noqa: BLE001
        raise PlantError(f"plant {spec.fastsim_file}: overrides refused ({_first_line(exc)[:300]})") from None


def _powertrain(spec: PlantSpec) -> str:
    """FASTSim's powertrain key for the plant's fuel: ``BEV`` for electric, else ``Conv``."""
    return "BEV" if spec.fuel == "electric" else "Conv"


def _scale(data: dict[str, Any], pt: dict[str, Any], spec: PlantSpec) -> None:
    """Re-size a FASTSim vehicle dict to ``spec`` (scaled_to filled it): the engine's (a BEV: the motor's) max
    power (its efficiency map is per power fraction, so its shape stays) with no start-up ramp, the fuel store's
    (battery's) max power and energy and the auxiliary load in proportion (as sim/plant_engine sizes the live
    meter), rolling resistance and drag area. FASTSim's transmission has no power limit in these files, only an
    efficiency, which stays."""
    if spec.power_kw is None or spec.rr_coef is None or spec.drag_area_m2 is None:
        raise PlantError(f"plant {spec.fastsim_file}: scale needs the vehicle's size (PlantSpec.scaled_to(profile))")
    motor, store = (pt["em"], pt["res"]) if "em" in pt else (pt["fc"], pt["fs"])
    chassis = data["chassis"]
    ratio = spec.power_kw * 1000.0 / float(motor["pwr_out_max_watts"])
    motor["pwr_out_max_watts"] = spec.power_kw * 1000.0
    for part, key in ((store, "pwr_out_max_watts"), (store, "energy_capacity_joules"), (data, "pwr_aux_base_watts")):
        if part.get(key):
            part[key] = float(part[key]) * ratio
    chassis["wheel_rr_coef"] = spec.rr_coef
    chassis["drag_coef"] = spec.drag_area_m2 / float(chassis["frontal_area_square_meters"])
    # full power at once, no start-up ramp (pwr_out_max_init, pwr_ramp_lag): the simulated truck launches at its
    # rated power, and a launch the plant lags breaks FASTSim 3.1.0's grade lookup for the rest of the run
    if "pwr_out_max_init_watts" in motor:
        motor["pwr_out_max_init_watts"] = motor["pwr_out_max_watts"]


def drive(spec: PlantSpec, trace: Trace, payload_kg: float = 0.0, speed_mps: float | None = None) -> dict[str, Any]:
    """FASTSim's record of the plant of ``spec`` driving ``trace`` (its ``SimDrive.to_dict()["veh"]``: state and
    per-step history), starting at ``speed_mps`` (m/s; default the trace's first). FASTSim may fall slightly behind
    a trace the plant's engine cannot quite follow (its ``AllowChecked`` trace-miss option: within 5 % / 100 m of
    distance); beyond that the trace is undrivable and a PlantError says where. ``payload_kg`` (kg) adds to a mass
    override. Raises PlantUnavailableError when FASTSim is missing."""
    fastsim = _fastsim()
    veh = load_vehicle(spec, payload_kg, float(trace.speed_mps[0]) if speed_mps is None else speed_mps)
    params = fastsim.SimParams.default().to_dict()
    params["trace_miss_opts"] = "AllowChecked"
    cycle = fastsim.Cycle.from_dict({"time_seconds": trace.time_s.tolist(),
                                     "speed_meters_per_second": trace.speed_mps.tolist(),
                                     "grade": trace.grade.tolist()})
    sd = fastsim.SimDrive(veh, cycle, fastsim.SimParams.from_dict(params))
    fix = "the plant's engine or mass does not fit the trace: smooth it, or size the plant to the vehicle (scale: true)"
    status, value = _run_forked(sd)
    if status == "crashed":
        raise PlantError(f"trace not drivable by plant {spec.label}: FASTSim crashed ({value}; FASTSim 3.1.0's "
                         f"achieved-speed solver does this where the plant falls behind on a grade); {fix}")
    if status == "error" and "exceeds current max charge power" in value:
        # seen with the Renault Zoe as shipped too (2 % down at 6 m/s), so not the scaling: FASTSim's BEV asks its
        # motor for all the braking, instead of friction-braking what the motor or battery cannot take
        fix = ("FASTSim 3.1.0's battery-electric model fails when the trace brakes harder than its drive can "
               "regenerate (the motor's rated power, or on a steady descent its battery's charge limit) instead of "
               "friction-braking the rest; no figure rather than a wrong one")
    if status == "error":
        step = re.search(r"time step: (\d+)", value)
        at = f" at t={trace.time_s[min(int(step.group(1)), len(trace.time_s) - 1)]:.0f} s" if step else ""
        raise PlantError(f"trace not drivable by plant {spec.label}{at} ({_first_line_of(value)[:300]}); {fix}")
    _check_grade(value, trace, spec.label)
    return value


def drive_legs(spec: PlantSpec, trace: Trace, payload_kg: float = 0.0,
               by_grade: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """:func:`drive` ``trace``, or where FASTSim 3.1.0 would drive part of it on the wrong grade (or ``by_grade``),
    drive it in legs of one grade each: ``[(first sample of the leg, FASTSim record of the leg)]``, each leg
    starting where the last one ended (sample and speed the plant reached).

    Why: once FASTSim 3.1.0 falls behind a trace (``cyc_met_overall`` false for good) it takes the grade from
    ``Cycle.grade_interp``, which its ``Cycle::init`` builds over distance only when *every* sample's grade differs
    from the first (``grade.iter().all(|g| g != g0)``: never, the first equals itself), so it is a constant
    holding the first sample's grade and the rest of the run is driven on that. An interpolator over distance
    cannot be put in instead (``Cycle.from_dict(..., skip_init=True)``): 3.1.0 stops at the first step of any cycle
    that has one (simdrive/mod.rs:441; FASTSim's own too, built when the first grade is NaN). On a leg of one grade
    that constant is the leg's grade (the leg's first sample, whose grade no step uses, is given it), so the plant
    may fall behind inside a leg and still climb or descend what the trace did. Every leg's grade history is still
    checked (:func:`_check_grade`)."""
    if not by_grade:
        try:
            return [(0, drive(spec, trace, payload_kg))]
        except PlantError as exc:
            if "grade lookup fault" not in str(exc):
                raise
    steps = trace.grade[1:]
    cuts = [i for i in range(1, len(steps)) if steps[i] != steps[i - 1]]  # sample i ends a leg, starts the next
    legs: list[tuple[int, dict[str, Any]]] = []
    speed = float(trace.speed_mps[0])
    for first, last in zip([0, *cuts], [*cuts, len(trace.time_s) - 1], strict=True):
        t = trace.time_s[first:last + 1]
        grade = np.full(len(t), trace.grade[first + 1])
        out = drive(spec, Trace(t - t[0], trace.speed_mps[first:last + 1], grade), payload_kg, speed)
        legs.append((first, out))
        speed = float(out["state"]["speed_ach_meters_per_second"])
    return legs


def _run_forked(sd: Any) -> tuple[str, Any]:
    """Run FASTSim ``sd`` in a forked child: ``("ok", its veh record)``, ``("error", FASTSim's message)`` or
    ``("crashed", how)``. FASTSim 3.1.0 can kill the process (a segmentation fault, not an exception) on a trace
    its engine cannot follow up a grade (seen: 32 t from rest up 5 %, 385 t up 4 %); a report must survive it."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def child() -> None:
        import faulthandler

        faulthandler.disable()  # a crash here is the expected outcome reported below, not a traceback to print
        try:
            sd.run()
            send.send(("ok", sd.to_dict()["veh"]))
        except Exception as exc:  # noqa: BLE001 - FASTSim raises RuntimeError/ValueError alike
            send.send(("error", str(exc)))

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = None
    proc.join()
    receive.close()
    if result is None:
        return "crashed", f"exit code {proc.exitcode}"
    return result


def _check_grade(out: Mapping[str, Any], trace: Trace, label: str) -> None:
    """PlantError when FASTSim drove the trace on other grades than the trace's. Once FASTSim 3.1.0 falls behind a
    trace by any amount (its ``cyc_met_overall`` turns false for good) it looks the grade up by distance in an
    interpolator that holds only the first sample's grade, so the rest of the run is driven on that grade (a
    descent driven flat) and the fuel is wrong without any error. Compared per step while moving (FASTSim's
    ``grade_curr`` history)."""
    used = np.asarray(out.get("history", {}).get("grade_curr", []), float)
    n = min(len(used), len(trace.grade))
    moving = trace.speed_mps[1:n] > 0.5
    if n < 2 or not np.any(moving):
        return
    # FASTSim's grade at a step may be the next sample's (it averages over the step): either counts as right
    wrong = (np.abs(used[1:n] - trace.grade[1:n]) > 1e-3) & (np.abs(used[1:n] - trace.grade[:n - 1]) > 1e-3)
    share = float(np.mean(wrong[moving]))
    if share > GRADE_MISMATCH_MAX:
        first = int(np.flatnonzero(wrong & moving)[0]) + 1
        raise PlantError(f"plant {label}: FASTSim drove {share * 100:.0f} % of the moving trace on another grade "
                         f"than recorded (from t={trace.time_s[first]:.0f} s: {used[first]:+.3f} instead of "
                         f"{trace.grade[first]:+.3f}; a FASTSim 3.1.0 grade lookup fault); its fuel would be wrong")


def score(spec: PlantSpec, trace: Trace) -> PlantResult:
    """Drive ``trace`` with the plant of ``spec`` in FASTSim (:func:`drive`) and return what it burned. A scaled
    plant carries the trace's payload: FASTSim's mass is fixed per run, so the trace is driven in pieces of one
    payload each (split where it changes, at the load/dump stops; each piece starts where the last ended)."""
    from carbon_ai_nodes.carbon.emission_model import FUEL_CO2_G_PER_L, FUEL_LHV_MJ_PER_L

    electric, grid_gco2_per_kwh = spec.fuel == "electric", spec.grid_gco2_per_kwh
    if electric and grid_gco2_per_kwh is None:
        raise PlantError(f"plant {spec.label}: an electric plant needs the grid intensity (PlantSpec.scaled_to)")
    # per joule drawn: litres of fuel (LHV) and CO2 per litre; a battery draws no fuel and its CO2 is the grid's
    lhv_j_per_l = math.inf if electric else FUEL_LHV_MJ_PER_L[spec.fuel] * 1e6
    co2_g_per_j = (grid_gco2_per_kwh / 3.6e6 if electric and grid_gco2_per_kwh is not None
                   else FUEL_CO2_G_PER_L[spec.fuel] / lhv_j_per_l)
    store, energy_key = ("res", "energy_out_electrical_joules") if electric else ("fc", "energy_fuel_joules")
    payload = trace.payload_kg if spec.scale and trace.payload_kg is not None else np.zeros(len(trace.time_s))
    cuts = [i for i in range(1, len(payload) - 1) if payload[i] != payload[i - 1]]
    energy_j, dist_m, times, dists, energies = 0.0, 0.0, [trace.time_s[:1]], [np.zeros(1)], [np.zeros(1)]
    for a, b in zip([0, *cuts], [*cuts, len(payload) - 1], strict=True):
        t = trace.time_s[a:b + 1]
        piece = Trace(t - t[0], trace.speed_mps[a:b + 1], trace.grade[a:b + 1])
        for first, out in drive_legs(spec, piece, float(payload[a])):
            part = out["pt_type"][_powertrain(spec)][store]
            hist_e = np.asarray(part.get("history", {}).get(energy_key, []), float)
            hist_d = np.asarray(out.get("history", {}).get("dist_meters", []), float)
            n = min(len(hist_e), len(hist_d))
            times.append(t[first + 1:first + n])
            dists.append(dist_m + hist_d[1:n])
            energies.append(energy_j + hist_e[1:n])
            energy_j += float(part["state"][energy_key])
            dist_m += float(out["state"]["dist_meters"])
    series = (np.concatenate(times), np.concatenate(dists), np.concatenate(energies) * co2_g_per_j)
    return PlantResult(spec.label, energy_j / lhv_j_per_l, energy_j * co2_g_per_j / 1000.0, energy_j / 1e6,
                       dist_m / 1000.0, trace.distance_m / 1000.0, float(trace.time_s[-1] - trace.time_s[0]), series,
                       spec.grid_gco2_per_kwh if electric else None)
