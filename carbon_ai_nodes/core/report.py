"""Run reports (no ROS): integrate recorded rates into CO2, fuel and distance per vehicle, compare an optimised
run with a baseline run, summarise latencies, and render the Markdown report of ``carbon-ai demo``.

CO2 is compared per kilometre: a run that drives slower covers less ground in the same time, so total grams
over a fixed duration would flatter it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def integrate(t_s: Sequence[float], rate_per_s: Sequence[float]) -> float:
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


def vehicle_result(vehicle_id: str, t_s: Sequence[float], co2_g_s: Sequence[float], fuel_lph: Sequence[float],
                   speed_t_s: Sequence[float], speed_mps: Sequence[float]) -> VehicleResult:
    """Integrate one vehicle's recorded CO2 rate (g/s), fuel rate (L/h) and speed (m/s)."""
    duration = float(max(t_s) - min(t_s)) if len(t_s) >= 2 else 0.0
    return VehicleResult(vehicle_id, integrate(t_s, co2_g_s) / 1000.0, integrate(t_s, fuel_lph) / 3600.0,
                         integrate(speed_t_s, [max(v, 0.0) for v in speed_mps]) / 1000.0, duration)


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
             notes: Sequence[str] = ()) -> str:
    """The demo report as Markdown: per-vehicle and total CO2/fuel for each run, saving, latencies, plots."""
    lines = [f"# carbon_ai demo: {scenario}", ""]
    for run in runs:
        lines += [f"## {run.label}", "", "| vehicle | CO2 kg | fuel L | distance km | CO2 g/km |",
                  "|---|---|---|---|---|"]
        for v in run.vehicles:
            lines.append(f"| {v.vehicle_id} | {_f(v.co2_kg)} | {_f(v.fuel_l)} | {_f(v.distance_km)} | "
                         f"{_f(v.co2_g_per_km, 1)} |")
        lines += [f"| **total** | {_f(run.co2_kg)} | {_f(run.fuel_l)} | {_f(run.distance_km)} | "
                  f"{_f(run.co2_g_per_km, 1)} |", ""]
    if len(runs) == 2:
        base, opt = runs[1], runs[0]
        saving = saving_pct(base.co2_g_per_km, opt.co2_g_per_km)
        lines += [f"**CO2 saving (per km, optimised vs baseline): {_f(saving, 1)} %**", ""]
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
