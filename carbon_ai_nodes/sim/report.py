"""Run reports (no ROS): integrate recorded rates into CO2, fuel and distance per vehicle, compare an optimised
run with a baseline run, score each vehicle's driven trace with its independent plant (sim/plant.py, NREL
FASTSim) beside carbon_ai's own model, summarise latencies, and render the Markdown report of ``carbon-ai demo``.
The plant's figures come first: CO2 claims are judged by a model we did not write.

Runs are compared over the *same stretch of route*: both start from the same state, and each vehicle's
totals are cut where it has driven the distance both runs covered (:func:`common_distance_m`). A fixed time
window would compare different parts of the route (an eco run that crests a hill slowly is still on the
zero-fuel downhill when the window closes while the baseline is already on the flat), and CO2 per km over
different stretches says more about the road than about the driving.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from carbon_ai_nodes.sim.plant import PlantResult, PlantSpec, Trace

# below this (a few seconds at walking pace, a handful of the plant's 1 s samples) a per-km figure divides by next
# to nothing and the odometer's first samples decide it: a vehicle that drove less is reported as not scored
MIN_SCORED_DISTANCE_M = 5.0


def integrate(t_s: ArrayLike, rate_per_s: ArrayLike) -> float:
    """Trapezoidal integral of ``rate_per_s`` over ``t_s`` (s), skipping non-finite samples and time going back."""
    t = np.asarray(t_s, float)
    r = np.asarray(rate_per_s, float)
    ok = np.isfinite(t) & np.isfinite(r)
    t, r = t[ok], r[ok]
    if len(t) < 2:
        return 0.0
    order = np.argsort(t, kind="stable")
    t, r = t[order], r[order]
    return float(np.sum(np.diff(t) * 0.5 * (r[1:] + r[:-1])))


def cumulative(t_s: ArrayLike, rate_per_s: ArrayLike) -> np.ndarray:
    """Running trapezoidal integral of ``rate_per_s`` over ``t_s`` (s), from 0 at the first sample."""
    t, r = np.asarray(t_s, float), np.asarray(rate_per_s, float)
    return np.concatenate([[0.0], np.cumsum(np.diff(t) * 0.5 * (r[1:] + r[:-1]))])


@dataclasses.dataclass(frozen=True)
class VehicleResult:
    """Totals of one vehicle over one run: CO2 (kg), fuel (L), distance (km), CO2 per km (g/km)."""

    vehicle_id: str
    co2_kg: float
    fuel_l: float
    distance_km: float
    duration_s: float

    @property
    def co2_g_per_km(self) -> float:
        """CO2 intensity; NaN when the vehicle did not move."""
        return self.co2_kg * 1000.0 / self.distance_km if self.distance_km > 1e-3 else math.nan


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One run: per-vehicle results and their totals."""

    label: str
    vehicles: tuple[VehicleResult, ...]

    @property
    def co2_kg(self) -> float:
        """Total CO2 (kg), the sum over vehicles."""
        return sum(v.co2_kg for v in self.vehicles)

    @property
    def fuel_l(self) -> float:
        """Total fuel (L)."""
        return sum(v.fuel_l for v in self.vehicles)

    @property
    def distance_km(self) -> float:
        """Total distance (km)."""
        return sum(v.distance_km for v in self.vehicles)

    @property
    def co2_g_per_km(self) -> float:
        """Fleet CO2 intensity (g/km)."""
        return self.co2_kg * 1000.0 / self.distance_km if self.distance_km > 1e-3 else math.nan


def distance_profile(speed_t_s: Sequence[float], speed_mps: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(time s, cumulative distance m) from speed samples (m/s; negative counts as 0), trapezoidal."""
    t = np.asarray(speed_t_s, float)
    v = np.asarray(speed_mps, float)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], np.maximum(v[ok], 0.0)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    if len(t) < 2:
        return t, np.zeros_like(t)
    return t, np.concatenate([[0.0], np.cumsum(np.diff(t) * 0.5 * (v[1:] + v[:-1]))])


def common_distance_m(*runs: tuple[Sequence[float], Sequence[float]]) -> float:
    """The distance (m) every run covered, given each run's (speed time s, speed m/s) samples."""
    totals = [distance_profile(t, v)[1] for t, v in runs]
    return min((float(d[-1]) if len(d) else 0.0) for d in totals)


def vehicle_result(vehicle_id: str, t_s: Sequence[float], co2_g_s: Sequence[float], fuel_lph: Sequence[float],
                   speed_t_s: Sequence[float], speed_mps: Sequence[float],
                   until_distance_m: float = math.inf) -> VehicleResult:
    """Integrate one vehicle's recorded CO2 rate (g/s), fuel rate (L/h) and speed (m/s), up to the moment it
    has driven ``until_distance_m`` (m; default: the whole recording)."""
    st, dist = distance_profile(speed_t_s, speed_mps)
    t = np.asarray(t_s, float)
    co2, fuel = np.asarray(co2_g_s, float), np.asarray(fuel_lph, float)
    if math.isfinite(until_distance_m) and len(dist) >= 2 and dist[-1] > until_distance_m:
        # the moment the odometer reached the distance, interpolated between speed samples
        t_end = float(np.interp(until_distance_m, dist, st))
        keep = t <= t_end
        t, co2, fuel = t[keep], co2[keep], fuel[keep]
        distance_m = until_distance_m
    else:
        distance_m = float(dist[-1]) if len(dist) else 0.0
    finite_t = t[np.isfinite(t)]
    duration = float(finite_t.max() - finite_t.min()) if len(finite_t) >= 2 else 0.0
    return VehicleResult(vehicle_id, integrate(t, co2) / 1000.0, integrate(t, fuel) / 3600.0,
                         distance_m / 1000.0, duration)


@dataclasses.dataclass(frozen=True)
class PlantScore:
    """One vehicle in one run, scored by its plant and by carbon_ai's model over the same distance.

    ``status``: ``ok``; ``not installed`` (no FASTSim here); ``model only: <why>`` (no independent plant exists);
    ``no plant named``; or ``error: <why>`` (e.g. an undrivable trace). ``plant`` is None unless ``ok``.
    ``meter``: the vehicle's fuel meter over the same stretch (in simulation: the plant's engine map, live)."""

    vehicle_id: str
    plant_label: str
    status: str
    model: VehicleResult
    plant: PlantResult | None = None
    meter: VehicleResult | None = None
    trace: Trace | None = None  # what the plant drove (1 s samples), for the record
    direction_only: bool = False  # the plant is a stand-in of another size: its saving is evidence, not its CO2

    @property
    def not_scored(self) -> str:
        """Why this vehicle has no per-km figure in this run, by the plant or the model ("" when it has one): it
        drove less than :data:`MIN_SCORED_DISTANCE_M` (the plant's error when that is why, e.g. no wheel-speed
        samples were recorded)."""
        driven_m = self.model.distance_km * 1000.0
        if driven_m >= MIN_SCORED_DISTANCE_M:
            return ""
        if self.status.startswith("error: "):
            return self.status.removeprefix("error: ")
        return f"drove {driven_m:.0f} m, too short (a per-km figure needs {MIN_SCORED_DISTANCE_M:.0f} m)"

    @property
    def model_error_pct(self) -> float:
        """carbon_ai's model CO2 per km against the plant's (%; positive = the model says more); NaN if no plant,
        not scored, or the plant is a direction-only stand-in (another size of vehicle)."""
        if self.plant is None or self.direction_only or self.not_scored:
            return math.nan
        p, m = self.plant.co2_g_per_km, self.model.co2_g_per_km
        return (m - p) / p * 100.0 if math.isfinite(p) and p > 0 and math.isfinite(m) else math.nan

    @property
    def model_vs_meter_pct(self) -> float:
        """carbon_ai's model CO2 against the fuel meter's over the same stretch (%); NaN without a meter."""
        if self.meter is None:
            return math.nan
        m = self.meter.co2_kg
        return (self.model.co2_kg - m) / m * 100.0 if m > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        p = self.plant
        plant = None if p is None else {
            "co2_kg": p.co2_kg, "fuel_l": p.fuel_l, "fuel_energy_mj": p.fuel_energy_mj,
            "distance_km": p.distance_km, "trace_distance_km": p.trace_distance_km, "co2_g_per_km": p.co2_g_per_km,
            "kwh_per_km": p.kwh_per_km if p.electric else None, "grid_gco2_per_kwh": p.grid_gco2_per_kwh}
        return json_safe({"vehicle_id": self.vehicle_id, "plant": self.plant_label, "status": self.status,
                          "not_scored": self.not_scored or None, "direction_only": self.direction_only,
                          "by_plant": plant,
                          "by_model": dict(dataclasses.asdict(self.model), co2_g_per_km=self.model.co2_g_per_km),
                          "model_error_pct": self.model_error_pct, "model_vs_meter_pct": self.model_vs_meter_pct})


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in dicts, lists, tuples) replaced by None: report.json
    says null for a figure that does not exist, never NaN (which is not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def plant_line(optimised: PlantScore, baseline: PlantScore | None = None) -> str:
    """One console line per vehicle: CO2 per km by the plant first (baseline -> optimised with two runs, and the
    saving), then by carbon_ai's model and the model's error against the plant; ``<id>: not scored: <why>``
    when a run has no per-km figure; the plant's status when it gave none."""
    o, b = optimised, baseline
    runs = [o] if b is None else [b, o]
    reason = next((s.not_scored for s in runs if s.not_scored), "")
    if reason:
        return f"{o.vehicle_id}: not scored: {reason}"

    def series(values: Sequence[float], digits: int = 1) -> str:
        return " -> ".join(_f(x, digits) for x in values)

    model = f"by the model {series([s.model.co2_g_per_km for s in runs])} g/km"
    plants = [s.plant for s in runs if s.plant is not None]
    if len(plants) < len(runs):
        return f"{o.vehicle_id}: plant {next(s.status for s in runs if s.plant is None)}; {model}"
    plant = f"{o.vehicle_id} by the plant ({o.plant_label}): {series([p.co2_g_per_km for p in plants])} g/km"
    if plants[-1].electric:  # o's
        plant += (f" ({series([p.kwh_per_km for p in plants], 3)} kWh/km from the battery x "
                  f"{plants[-1].grid_gco2_per_kwh:.0f} gCO2/kWh, the model's grid intensity)")
    if b is not None:
        plant += f" ({_f(plant_saving_pct([o], [b], 'plant'), 1)} % saved)"
    errors = " / ".join("n/a" if not math.isfinite(e) else f"{e:+.1f} %" for e in (s.model_error_pct for s in runs))
    return f"{plant}; {model} (model vs plant {errors})"


def plant_score(spec: PlantSpec | None, model: VehicleResult, speed_t_s: Sequence[float],
                speed_mps: Sequence[float], grade_of_distance: Any = None,
                until_distance_m: float = math.inf, meter: VehicleResult | None = None,
                payload_of_distance: Any = None) -> PlantScore:
    """Score a vehicle's recorded odometer speed (s, m/s) with its plant, up to ``until_distance_m`` (m), the
    grade from ``grade_of_distance`` and the payload (a scaled plant carries it) from ``payload_of_distance``
    (see :meth:`Trace.from_samples`); ``model`` is carbon_ai's own result over
    the same stretch. Never raises for a missing FASTSim, a model-only vehicle or an undrivable trace: the
    status says which."""
    from carbon_ai_nodes.common.errors import PlantError, PlantUnavailableError
    from carbon_ai_nodes.sim.plant import Trace, score

    vid = model.vehicle_id
    if spec is None:
        return PlantScore(vid, "none", "no plant named", model, meter=meter)
    if spec.model_only:
        return PlantScore(vid, spec.label, f"model only: {spec.model_only}", model, meter=meter)
    try:
        trace = Trace.from_samples(speed_t_s, speed_mps, grade_of_distance, payload_of_distance=payload_of_distance)
        if math.isfinite(until_distance_m):
            trace = trace.until_distance(until_distance_m)
        return PlantScore(vid, spec.label, "ok", model, score(spec, trace), meter, trace, spec.direction_only)
    except PlantUnavailableError:
        return PlantScore(vid, spec.label, "not installed", model, meter=meter)
    except PlantError as exc:
        return PlantScore(vid, spec.label, f"error: {exc}", model, meter=meter)


def route_payload(vehicle: Any) -> Any:
    """The payload a vehicle carries at a distance along its route (``payload_of_distance``), as the simulator
    loads and dumps it; a drive-cycle vehicle carries its initial payload throughout."""
    from carbon_ai_nodes.sim.plant import payload_along_route
    from carbon_ai_nodes.sim.vehicle_sim import Route

    if vehicle.route:
        return payload_along_route(Route.from_list(vehicle.route, vehicle.cruise_speed_mps), vehicle.initial_payload_kg)
    return lambda distance_m: np.full(np.shape(distance_m), vehicle.initial_payload_kg)


def route_grade(scenario: Any, vehicle: Any) -> Any:
    """The grade a user would record beside the odometer, as ``grade_of_distance``: the route's at the distance
    driven from its first waypoint (where the simulator starts), or the drive cycle's at the distance into it."""
    from carbon_ai_nodes.graph.scenario import expand
    from carbon_ai_nodes.sim.plant import grade_along_cycle, grade_along_route
    from carbon_ai_nodes.sim.vehicle_sim import DriveTrace, Route

    if vehicle.route:
        return grade_along_route(Route.from_list(vehicle.route, vehicle.cruise_speed_mps))
    return grade_along_cycle(DriveTrace.from_csv(expand(vehicle.drive_cycle, scenario)))


def score_fleet(scenario: Any, speed: Mapping[str, Any], estimate: Mapping[str, Any],
                meter: Mapping[str, Any] | None = None,
                until_distance_m: Mapping[str, float] | None = None) -> list[PlantScore]:
    """Every vehicle of ``scenario`` scored by its plant beside carbon_ai's model: per vehicle id, ``speed`` holds
    the recorded (time s, wheel speed m/s), ``estimate`` the model's (time s, CO2 g/s, fuel L/h), ``meter`` the
    fuel meter's in the same form (optional), all cut at ``until_distance_m`` (m; default: everything)."""
    out = []
    for v in scenario.vehicles:
        until = (until_distance_m or {}).get(v.id, math.inf)
        speed_t_s, speed_mps = speed[v.id]
        est_t_s, est_co2_g_s, est_fuel_lph = estimate[v.id]
        model = vehicle_result(v.id, est_t_s, est_co2_g_s, est_fuel_lph, speed_t_s, speed_mps, until_distance_m=until)
        metered = None
        if meter:
            meter_t_s, meter_co2_g_s, meter_fuel_lph = meter[v.id]
            metered = vehicle_result(v.id, meter_t_s, meter_co2_g_s, meter_fuel_lph, speed_t_s, speed_mps,
                                     until_distance_m=until)
        out.append(plant_score(run_plant(scenario, v), model, speed_t_s, speed_mps, route_grade(scenario, v), until,
                               metered, route_payload(v)))
    return out


def run_plant(scenario: Any, vehicle: Any) -> PlantSpec | None:
    """The vehicle's plant with, for an electric plant, the grid intensity carbon_ai's model uses in this scenario:
    the ``carbon_inference`` node's ``grid_gco2_per_kwh`` (the vehicle's own params, else the scenario's) when set
    and finite, else the profile's (already in the spec). Plant and model then differ in the vehicle's energy only."""
    spec = vehicle.plant
    if spec is None or spec.fuel != "electric":
        return spec
    node: Mapping[str, Any] = next((n.params for n in scenario.nodes if n.name == "carbon_inference"), {})
    value = vehicle.params.get("carbon_inference", {}).get("grid_gco2_per_kwh", node.get("grid_gco2_per_kwh"))
    try:
        grid = float(value)
    except (TypeError, ValueError):
        return spec
    return dataclasses.replace(spec, grid_gco2_per_kwh=grid) if math.isfinite(grid) and grid > 0 else spec


def write_plant_traces(out: Any, labels: Sequence[str], scores: Sequence[Sequence[PlantScore]]) -> list[str]:
    """Each trace a plant drove, as ``plant_trace_<run>_<vehicle>.csv`` (time_s,speed_mps,grade) in directory
    ``out``: anyone can re-score a run with FASTSim. Returns the file names."""
    from pathlib import Path

    names = []
    for label, run in zip(labels, scores, strict=True):
        for s in run:
            if s.trace is not None:
                name = f"plant_trace_{label}_{s.vehicle_id}.csv"
                rows = np.column_stack([s.trace.time_s, s.trace.speed_mps, s.trace.grade])
                np.savetxt(Path(out) / name, rows, fmt="%.4f", delimiter=",", header="time_s,speed_mps,grade",
                           comments="")
                names.append(name)
    return names


def plant_saving_pct(optimised: Sequence[PlantScore], baseline: Sequence[PlantScore], by: str) -> float:
    """Saving per km (%) of the vehicles both runs scored with a plant, ``by`` ``"plant"`` or ``"model"``."""
    pairs = [(o, b) for o, b in zip(optimised, baseline, strict=True)
             if o.plant is not None and b.plant is not None and not (o.not_scored or b.not_scored)]
    if not pairs:
        return math.nan

    def per_km(scores: Sequence[PlantScore]) -> float:
        if by == "plant":
            plants = [s.plant for s in scores if s.plant is not None]  # all of them: pairs keep only those
            co2, km = sum(p.co2_kg for p in plants), sum(p.distance_km for p in plants)
        else:
            co2, km = sum(s.model.co2_kg for s in scores), sum(s.model.distance_km for s in scores)
        return co2 / km if km > 1e-6 else math.nan

    return saving_pct(per_km([b for _, b in pairs]), per_km([o for o, _ in pairs]))


def plant_markdown(labels: Sequence[str], scores: Sequence[Sequence[PlantScore]]) -> list[str]:
    """The report's headline: per vehicle and run, CO2 and fuel by the plant, then by carbon_ai's model, the
    model-vs-plant error, and (two runs: optimised first) the saving by each."""
    lines = ["## CO2 by the independent plant (NREL FASTSim re-driving each recorded trace) vs carbon_ai's model",
             "", "| vehicle | plant | run | plant CO2 kg | plant fuel L | plant g/km | model CO2 kg | model fuel L | "
             "model g/km | model vs plant % | model vs fuel meter % |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, run in zip(labels, scores, strict=True):
        for s in run:
            m, p = s.model, s.plant
            plant = f"{s.plant_label} (direction check)" if s.direction_only else s.plant_label
            if s.not_scored:
                lines.append(f"| {s.vehicle_id} | {plant} | {label} | not scored | | | | | | | |")
                continue
            energy = "" if p is None else f"{_f(p.fuel_energy_mj / 3.6)} kWh" if p.electric else _f(p.fuel_l)
            plant_cols = (f"{_f(p.co2_kg)} | {energy} | {_f(p.co2_g_per_km, 1)}" if p is not None
                          else f"{s.status.split(':')[0]} | | ")
            error = "n/a (stand-in)" if s.direction_only else _f(s.model_error_pct, 1)
            lines.append(f"| {s.vehicle_id} | {plant} | {label} | {plant_cols} | {_f(m.co2_kg)} | "
                         f"{_f(m.fuel_l)} | {_f(m.co2_g_per_km, 1)} | {error} | "
                         f"{_f(s.model_vs_meter_pct, 1)} |")
    lines.append("")
    if len(scores) == 2:
        lines += ["| vehicle | saving by the plant % | saving by the model % |", "|---|---|---|"]
        for o, b in zip(*scores, strict=True):
            if o.not_scored or b.not_scored:
                lines.append(f"| {o.vehicle_id} | not scored | not scored |")
                continue
            lines.append(f"| {o.vehicle_id} | {_f(plant_saving_pct([o], [b], 'plant'), 1)} | "
                         f"{_f(saving_pct(b.model.co2_g_per_km, o.model.co2_g_per_km), 1)} |")
        optimised, baseline = scores
        by_plant, by_model = (_f(plant_saving_pct(optimised, baseline, by), 1) for by in ("plant", "model"))
        lines += [f"| **fleet (vehicles with a plant)** | **{by_plant}** | {by_model} |", ""]
    notes = [f"- {s.vehicle_id} ({label} run): not scored: {s.not_scored}" if s.not_scored else
             f"- {s.vehicle_id} ({label} run): plant {s.status}"
             for label, run in zip(labels, scores, strict=True) for s in run
             if s.not_scored or s.status.startswith("error")]
    notes += sorted({f"- {s.vehicle_id}: {s.status}" for run in scores for s in run
                     if s.plant is None and not s.not_scored and not s.status.startswith("error")})
    notes += [f"- {s.vehicle_id} ({label} run): battery-electric; the plant's column is the battery's electrical "
              f"output net of regeneration ({_f(s.plant.kwh_per_km)} kWh/km), its CO2 that x "
              f"{s.plant.grid_gco2_per_kwh:.0f} gCO2/kWh, the grid intensity carbon_ai's model used "
              f"(the model's {_f(s.model.co2_g_per_km / s.plant.grid_gco2_per_kwh)} kWh/km)"
              for label, run in zip(labels, scores, strict=True) for s in run
              if s.plant is not None and s.plant.electric and s.plant.grid_gco2_per_kwh is not None
              and not s.not_scored]
    notes += sorted({f"- {s.vehicle_id}: the plant ({s.plant_label}) is a stand-in of another size; its saving "
                     "is a direction check, its absolute CO2 is not this vehicle's (no model-vs-plant error)"
                     for run in scores for s in run if s.direction_only})
    if any(s.status == "not installed" for run in scores for s in run):
        notes.insert(0, "plant: not installed (FASTSim is a validation dependency: pip install -r "
                        "requirements/validation.txt); the figures below are carbon_ai's own")
    lines += notes + ([""] if notes else [])
    return lines


def saving_pct(baseline: float, optimised: float) -> float:
    """Percentage saved by ``optimised`` relative to ``baseline`` (positive = less CO2); NaN if undefined."""
    if not (math.isfinite(baseline) and math.isfinite(optimised)) or baseline <= 0:
        return math.nan
    return (baseline - optimised) / baseline * 100.0


def percentiles_ms(samples_ms: Sequence[float]) -> dict[str, float]:
    """count, p50, p90, p99 and max of latency samples (ms); NaN when there are none."""
    a = np.asarray([x for x in samples_ms if math.isfinite(x)], float)
    if len(a) == 0:
        return {"count": 0, "p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"count": int(len(a)), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(a.max())}


def run_dict(run: RunResult) -> dict[str, Any]:
    """JSON-able form of a run, totals included."""
    return {
        "label": run.label,
        "vehicles": [dict(dataclasses.asdict(v), co2_g_per_km=v.co2_g_per_km) for v in run.vehicles],
        "total": {"co2_kg": run.co2_kg, "fuel_l": run.fuel_l, "distance_km": run.distance_km,
                  "co2_g_per_km": run.co2_g_per_km},
    }


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def markdown(scenario: str, runs: Sequence[RunResult], latency: Mapping[str, Mapping[str, float]],
             backends: Sequence[str], missing_nodes: Sequence[str], plots: Sequence[str],
             notes: Sequence[str] = (), plant_scores: Sequence[Sequence[PlantScore]] = ()) -> str:
    """The demo report as Markdown: the plant's and the model's CO2 per vehicle first (``plant_scores``, one
    sequence per run), then the simulator's own meter per run, saving, latencies, plots."""
    lines = [f"# carbon_ai demo: {scenario}", ""]
    if plant_scores:
        lines += plant_markdown([r.label for r in runs], plant_scores)
        lines += ["## The fuel meter (simulated: the plant file's engine map; carbon_ai's emission model where a "
                  "vehicle has no plant)", ""]
    for run in runs:
        lines += [f"## {run.label}", "", "| vehicle | CO2 kg | fuel L | distance km | time s | CO2 g/km |",
                  "|---|---|---|---|---|---|"]
        for v in run.vehicles:
            lines.append(f"| {v.vehicle_id} | {_f(v.co2_kg)} | {_f(v.fuel_l)} | {_f(v.distance_km)} | "
                         f"{_f(v.duration_s, 1)} | {_f(v.co2_g_per_km, 1)} |")
        lines += [f"| **total** | {_f(run.co2_kg)} | {_f(run.fuel_l)} | {_f(run.distance_km)} | | "
                  f"{_f(run.co2_g_per_km, 1)} |", ""]
    if len(runs) == 2:
        base, opt = runs[1], runs[0]
        saving = saving_pct(base.co2_g_per_km, opt.co2_g_per_km)
        lines += [f"**CO2 saving (same distance, optimised vs baseline): {_f(saving, 1)} %**", "",
                  "| vehicle | saving % |", "|---|---|"]
        for vb, vo in zip(base.vehicles, opt.vehicles, strict=False):
            lines.append(f"| {vb.vehicle_id} | {_f(saving_pct(vb.co2_g_per_km, vo.co2_g_per_km), 1)} |")
        lines.append("")
    lines += ["## Latency per stage (message age at the observer, ms)", "",
              "| stage | count | p50 | p90 | p99 | max |", "|---|---|---|---|---|---|"]
    for stage, p in latency.items():
        lines.append(f"| {stage} | {p['count']} | {_f(p['p50'], 2)} | {_f(p['p90'], 2)} | {_f(p['p99'], 2)} | "
                     f"{_f(p['max'], 2)} |")
    lines += ["", f"Inference backend: {', '.join(backends) if backends else 'none (no carbon_estimate received)'}", ""]
    if missing_nodes:
        lines += [f"Nodes not in this build (skipped): {', '.join(missing_nodes)}", ""]
    for note in notes:
        lines += [note, ""]
    for plot in plots:
        lines += [f"![{plot}]({plot})", ""]
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class CalibrationTrack:
    """One vehicle's calibrated_estimate stream over a run (arrays of equal length; NaN = not available):
    stamp (s from the run's start), estimated mass and its 1 sigma (kg), the simulator's true mass (kg), and the
    CO2 rates (g/s) of the calibrated model, the generic model and the fuel meter."""

    t_s: np.ndarray
    mass_kg: np.ndarray
    mass_sigma_kg: np.ndarray
    true_mass_kg: np.ndarray
    calibrated_g_s: np.ndarray
    generic_g_s: np.ndarray
    meter_g_s: np.ndarray

    def window_error_pct(self, which: str, window_s: float) -> np.ndarray:
        """|sum of ``which`` ('calibrated' or 'generic') - sum of the meter| / sum of the meter over the
        ``window_s`` before each sample, %; NaN in the first window (a few samples of a starting engine gave
        thousands of %) and while the meter burned nothing in the window."""
        model = np.nan_to_num(getattr(self, f"{which}_g_s"))
        meter = np.nan_to_num(self.meter_g_s)
        dt = np.diff(self.t_s, prepend=self.t_s[0] if len(self.t_s) else 0.0)
        cm, cr = np.cumsum(model * dt), np.cumsum(meter * dt)
        start = np.searchsorted(self.t_s, self.t_s - window_s, side="left")
        dm = cm - np.where(start > 0, cm[np.maximum(start - 1, 0)], 0.0)
        dr = cr - np.where(start > 0, cr[np.maximum(start - 1, 0)], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            full = self.t_s >= self.t_s[0] + window_s if len(self.t_s) else np.zeros(0, bool)
            return np.where(full & (dr > 1e-9), np.abs(dm - dr) / dr * 100.0, np.nan)

    def summary(self, window_s: float) -> dict[str, float]:
        """The run's end: mass estimate, its 1 sigma and error against the true mass (%), and both models' CO2
        error against the meter over the last ``window_s``."""
        if not len(self.t_s):
            return {}
        last = len(self.t_s) - 1
        true = float(self.true_mass_kg[last])
        return {"mass_kg": float(self.mass_kg[last]), "mass_sigma_kg": float(self.mass_sigma_kg[last]),
                "true_mass_kg": true,
                "mass_error_pct": (float(self.mass_kg[last]) / true - 1.0) * 100.0 if true > 0 else math.nan,
                "window_s": window_s,
                "calibrated_error_pct": float(self.window_error_pct("calibrated", window_s)[last]),
                "generic_error_pct": float(self.window_error_pct("generic", window_s)[last])}
