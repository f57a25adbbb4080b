"""Carbon-aware scheduling of flexible loads (charger sessions, compressors, batch steps) against a grid
carbon-intensity forecast, as a mixed-integer linear program solved with HiGHS (``scipy.optimize.milp``).

Slots: the forecast's own steps (``slot_s`` each, slot 0 starting at the forecast start). Per job: energy
to deliver, earliest start and deadline (s from slot 0), power cap, and ``interruptible``; a job that is not
interruptible runs once, contiguously, at its power cap (its last slot partly). Per asset: power cap and a
ramp limit (kW change between consecutive slots, from 0 before slot 0). Site: a power cap over all assets.

Minimises sum over slots of intensity x energy. The baseline is "every job as early as possible": each job
at its cap from its earliest start (in job order, within asset and site caps; ramps are not applied to
the baseline, which only makes it look better).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from carbon_ai_nodes.common.errors import ConfigError, SolverError
from carbon_ai_nodes.common.user_files import load_yaml


@dataclasses.dataclass(frozen=True)
class Asset:
    """A controllable load: its power cap (kW) and ramp limit (kW per slot; inf = none)."""

    asset_id: str
    max_power_kw: float
    ramp_kw_per_slot: float = math.inf


@dataclasses.dataclass(frozen=True)
class Job:
    """Energy to deliver on an asset between ``earliest_start_s`` and ``deadline_s`` (s from slot 0)."""

    job_id: str
    asset_id: str
    energy_kwh: float
    earliest_start_s: float
    deadline_s: float
    max_power_kw: float = math.inf
    interruptible: bool = True


@dataclasses.dataclass(frozen=True)
class ScheduleProblem:
    """Assets, jobs, the site cap and the forecast (gCO2/kWh per slot of ``slot_s`` seconds)."""

    assets: tuple[Asset, ...]
    jobs: tuple[Job, ...]
    intensity_g_per_kwh: tuple[float, ...]
    slot_s: float
    site_power_cap_kw: float = math.inf

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", tuple(self.assets))
        object.__setattr__(self, "jobs", tuple(self.jobs))
        object.__setattr__(self, "intensity_g_per_kwh", tuple(float(v) for v in self.intensity_g_per_kwh))
        validate_schedule_problem(self)

    @property
    def slots(self) -> int:
        """Number of slots in the horizon."""
        return len(self.intensity_g_per_kwh)


def validate_schedule_problem(p: ScheduleProblem) -> None:
    """SolverError naming the first bad field (``jobs[2].energy_kwh=-1.0: must be finite and > 0``)."""
    if not (math.isfinite(p.slot_s) and p.slot_s > 0):
        raise SolverError(f"slot_s={p.slot_s!r}: must be finite and > 0")
    if not p.intensity_g_per_kwh:
        raise SolverError("intensity_g_per_kwh: empty forecast")
    if not all(math.isfinite(v) and v >= 0 for v in p.intensity_g_per_kwh):
        raise SolverError("intensity_g_per_kwh: values must be finite and >= 0")
    if math.isnan(p.site_power_cap_kw) or p.site_power_cap_kw <= 0:
        raise SolverError(f"site_power_cap_kw={p.site_power_cap_kw!r}: must be > 0")
    ids = {}
    for i, a in enumerate(p.assets):
        if not a.asset_id or a.asset_id in ids:
            raise SolverError(f"assets[{i}].asset_id={a.asset_id!r}: empty or duplicate")
        ids[a.asset_id] = a
        if not (math.isfinite(a.max_power_kw) and a.max_power_kw > 0):
            raise SolverError(f"assets[{i}].max_power_kw={a.max_power_kw!r}: must be finite and > 0")
        if math.isnan(a.ramp_kw_per_slot) or a.ramp_kw_per_slot <= 0:
            raise SolverError(f"assets[{i}].ramp_kw_per_slot={a.ramp_kw_per_slot!r}: must be > 0")
    horizon_s = p.slots * p.slot_s
    seen = set()
    for i, j in enumerate(p.jobs):
        w = f"jobs[{i}]"
        if not j.job_id or j.job_id in seen:
            raise SolverError(f"{w}.job_id={j.job_id!r}: empty or duplicate")
        seen.add(j.job_id)
        if j.asset_id not in ids:
            raise SolverError(f"{w}.asset_id={j.asset_id!r}: no such asset")
        if not (math.isfinite(j.energy_kwh) and j.energy_kwh > 0):
            raise SolverError(f"{w}.energy_kwh={j.energy_kwh!r}: must be finite and > 0")
        if not (math.isfinite(j.earliest_start_s) and j.earliest_start_s >= 0):
            raise SolverError(f"{w}.earliest_start_s={j.earliest_start_s!r}: must be finite and >= 0")
        if not (math.isfinite(j.deadline_s) and j.deadline_s > j.earliest_start_s):
            raise SolverError(f"{w}.deadline_s={j.deadline_s!r}: must be finite and > earliest_start_s")
        if j.deadline_s > horizon_s + 1e-6:
            raise SolverError(f"{w}.deadline_s={j.deadline_s}: beyond the forecast horizon ({horizon_s} s)")
        if math.isnan(j.max_power_kw) or j.max_power_kw <= 0:
            raise SolverError(f"{w}.max_power_kw={j.max_power_kw!r}: must be > 0")
        power = job_power_kw(p, j)
        window = _window(p, j)
        if power * len(window) * p.slot_s / 3600.0 < j.energy_kwh - 1e-9:
            raise SolverError(f"{w}: {j.energy_kwh} kWh cannot be delivered at {power} kW between "
                              f"{j.earliest_start_s} s and {j.deadline_s} s (slots of {p.slot_s} s)")
        if not j.interruptible and power > ids[j.asset_id].ramp_kw_per_slot + 1e-9:
            raise SolverError(f"{w}: runs at {power} kW without interruption, above its asset's ramp limit "
                              f"({ids[j.asset_id].ramp_kw_per_slot} kW per slot)")


def job_power_kw(p: ScheduleProblem, job: Job) -> float:
    """The job's power cap: its own, bounded by its asset's and the site's."""
    asset = next(a for a in p.assets if a.asset_id == job.asset_id)
    return min(job.max_power_kw, asset.max_power_kw, p.site_power_cap_kw)


def _window(p: ScheduleProblem, job: Job) -> list[int]:
    """Slots entirely inside [earliest_start, deadline]."""
    first = int(math.ceil(job.earliest_start_s / p.slot_s - 1e-9))
    last = int(math.floor(job.deadline_s / p.slot_s + 1e-9))
    return list(range(first, min(last, p.slots)))


def _block_profile(p: ScheduleProblem, job: Job) -> np.ndarray:
    """Power per slot of a non-interruptible job run from its start: full power, the remainder last."""
    power = job_power_kw(p, job)
    slot_kwh = power * p.slot_s / 3600.0
    full = int(math.floor(job.energy_kwh / slot_kwh + 1e-9))
    rest = job.energy_kwh - full * slot_kwh
    prof = [power] * full + ([rest / (p.slot_s / 3600.0)] if rest > 1e-9 else [])
    return np.array(prof)


@dataclasses.dataclass(frozen=True)
class ScheduleResult:
    """Power per job and per asset per slot (kW), CO2 against the as-early-as-possible baseline."""

    job_power_kw: dict[str, np.ndarray]
    asset_power_kw: dict[str, np.ndarray]
    co2_kg: float
    baseline_co2_kg: float
    baseline_asset_power_kw: dict[str, np.ndarray]
    solve_time_s: float
    status: str  # optimal | feasible | deadline | infeasible
    message: str = ""


def schedule_co2_kg(p: ScheduleProblem, total_power_kw: np.ndarray) -> float:
    """CO2 (kg) of a site power profile (kW per slot) under the forecast."""
    return float(np.dot(total_power_kw, p.intensity_g_per_kwh) * p.slot_s / 3600.0 / 1000.0)


def baseline_asap(p: ScheduleProblem) -> dict[str, np.ndarray]:
    """Every job at its cap from its earliest start, in job order, within asset and site caps."""
    asset_power = {a.asset_id: np.zeros(p.slots) for a in p.assets}
    caps = {a.asset_id: a.max_power_kw for a in p.assets}
    site = np.zeros(p.slots)
    h = p.slot_s / 3600.0
    for job in p.jobs:

        def fill(slots: Iterable[int], left_kwh: float, job: Job = job) -> float:
            for t in slots:
                if left_kwh <= 1e-9:
                    break
                room = min(job_power_kw(p, job), caps[job.asset_id] - asset_power[job.asset_id][t],
                           p.site_power_cap_kw - site[t])
                kw = max(0.0, min(room, left_kwh / h))
                asset_power[job.asset_id][t] += kw
                site[t] += kw
                left_kwh -= kw * h
            return left_kwh

        left = fill(_window(p, job), job.energy_kwh)
        if left > 1e-6:
            # Caps force work past the deadline: the baseline still delivers it as soon as room appears.
            fill(range(p.slots), left)
    return asset_power


def solve_schedule(p: ScheduleProblem, time_limit_s: float = 5.0) -> ScheduleResult:
    """Minimum-CO2 schedule meeting every constraint; ``infeasible`` (with the reason) when none exists."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    t0 = time.monotonic()
    n_slots, h = p.slots, p.slot_s / 3600.0
    intensity = np.asarray(p.intensity_g_per_kwh)
    # Variables: power of each interruptible job in each slot of its window; one binary per start slot of
    # each non-interruptible job.
    cols: list[tuple[str, int, int]] = []  # (kind, job index, slot)
    lb, ub, integrality, cost = [], [], [], []
    profiles = {}
    for ji, job in enumerate(p.jobs):
        window = _window(p, job)
        if job.interruptible:
            for t in window:
                cols.append(("p", ji, t))
                lb.append(0.0)
                ub.append(job_power_kw(p, job))
                integrality.append(0)
                cost.append(intensity[t] * h)
        else:
            prof = _block_profile(p, job)
            profiles[ji] = prof
            for s in window:
                if s + len(prof) - 1 > window[-1]:
                    break
                cols.append(("s", ji, s))
                lb.append(0.0)
                ub.append(1.0)
                integrality.append(1)
                cost.append(float(np.dot(prof, intensity[s:s + len(prof)]) * h))
    nvar = len(cols)

    def power_terms(filter_job) -> dict[int, list[tuple[int, float]]]:
        """slot -> [(column, kW per unit of the column)] for jobs passing the filter."""
        terms: dict[int, list[tuple[int, float]]] = {}
        for c, (kind, ji, t) in enumerate(cols):
            if not filter_job(p.jobs[ji]):
                continue
            if kind == "p":
                terms.setdefault(t, []).append((c, 1.0))
            else:
                for k, kw in enumerate(profiles[ji]):
                    terms.setdefault(t + k, []).append((c, float(kw)))
        return terms

    rows_lo, rows_hi, rows = [], [], []

    def add_row(entries: list[tuple[int, float]], lo: float, hi: float) -> None:
        rows.append(entries)
        rows_lo.append(lo)
        rows_hi.append(hi)

    for ji, job in enumerate(p.jobs):
        mine = [c for c, (_, j, _) in enumerate(cols) if j == ji]
        if job.interruptible:
            add_row([(c, h) for c in mine], job.energy_kwh, job.energy_kwh)
        else:
            if not mine:
                raise SolverError(f"job {job.job_id}: no room to run it uninterrupted before its deadline")
            add_row([(c, 1.0) for c in mine], 1.0, 1.0)
    site_terms = power_terms(lambda j: True)
    for t in range(n_slots):
        if t in site_terms and math.isfinite(p.site_power_cap_kw):
            add_row(site_terms[t], -math.inf, p.site_power_cap_kw)
    for asset in p.assets:
        terms = power_terms(lambda j, a=asset.asset_id: j.asset_id == a)
        for t in range(n_slots):
            if t in terms:
                add_row(terms[t], -math.inf, asset.max_power_kw)
        if math.isfinite(asset.ramp_kw_per_slot):
            for t in range(n_slots):
                diff: dict[int, float] = {}
                for c, kw in terms.get(t, []):
                    diff[c] = diff.get(c, 0.0) + kw
                for c, kw in terms.get(t - 1, []):
                    diff[c] = diff.get(c, 0.0) - kw
                entries = [(c, v) for c, v in diff.items() if v != 0.0]
                if entries:
                    add_row(entries, -asset.ramp_kw_per_slot, asset.ramp_kw_per_slot)
            # Ramp down after the last slot is not constrained: the horizon ends there.
    a_mat = lil_matrix((len(rows), max(nvar, 1)))
    for r, entries in enumerate(rows):
        for c, v in entries:
            a_mat[r, c] += v
    res = milp(
        c=np.asarray(cost) if nvar else np.zeros(1),
        constraints=LinearConstraint(a_mat.tocsr(), rows_lo, rows_hi),
        integrality=np.asarray(integrality) if nvar else np.zeros(1),
        bounds=Bounds(np.asarray(lb) if nvar else [0.0], np.asarray(ub) if nvar else [0.0]),
        options={"time_limit": max(time_limit_s - (time.monotonic() - t0), 0.05), "disp": False},
    )
    elapsed = time.monotonic() - t0
    base = baseline_asap(p)
    base_co2 = schedule_co2_kg(p, sum(base.values(), np.zeros(n_slots)))
    if res.x is None:
        reason = ("no schedule meets every cap, ramp and deadline" if res.status == 2
                  else f"no schedule found: {res.message}")
        return ScheduleResult({}, {}, math.nan, base_co2, base, elapsed, "infeasible", reason)
    x = res.x
    job_power = {j.job_id: np.zeros(n_slots) for j in p.jobs}
    for c, (kind, ji, t) in enumerate(cols):
        if kind == "p":
            job_power[p.jobs[ji].job_id][t] += x[c]
        elif x[c] > 0.5:
            prof = profiles[ji]
            job_power[p.jobs[ji].job_id][t:t + len(prof)] += prof
    asset_power = {a.asset_id: np.zeros(n_slots) for a in p.assets}
    for j in p.jobs:
        asset_power[j.asset_id] += job_power[j.job_id]
    co2 = schedule_co2_kg(p, sum(asset_power.values(), np.zeros(n_slots)))
    status = "optimal" if res.status == 0 else "deadline"
    return ScheduleResult(job_power, asset_power, co2, base_co2, base, elapsed, status)


def schedule_violations(p: ScheduleProblem, r: ScheduleResult, tol: float = 1e-4) -> list[str]:
    """Every broken constraint of a schedule (empty when it is valid)."""
    out = []
    h = p.slot_s / 3600.0
    site = np.zeros(p.slots)
    for job in p.jobs:
        kw = r.job_power_kw[job.job_id]
        window = set(_window(p, job))
        if abs(kw.sum() * h - job.energy_kwh) > tol * max(1.0, job.energy_kwh):
            out.append(f"{job.job_id}: delivers {kw.sum() * h:.3f} kWh of {job.energy_kwh}")
        for t in np.nonzero(kw > tol)[0]:
            if int(t) not in window:
                out.append(f"{job.job_id}: runs in slot {t}, outside its window")
        if (kw > job_power_kw(p, job) + tol).any():
            out.append(f"{job.job_id}: exceeds its power cap")
        if not job.interruptible:
            on = np.nonzero(kw > tol)[0]
            if len(on) and on[-1] - on[0] + 1 != len(on):
                out.append(f"{job.job_id}: interrupted")
    for a in p.assets:
        kw = r.asset_power_kw[a.asset_id]
        site += kw
        if (kw > a.max_power_kw + tol).any():
            out.append(f"{a.asset_id}: exceeds its power cap")
        steps = np.abs(np.diff(np.concatenate([[0.0], kw])))
        if (steps > a.ramp_kw_per_slot + tol).any():
            out.append(f"{a.asset_id}: ramps {steps.max():.1f} kW in one slot (limit {a.ramp_kw_per_slot})")
    if (site > p.site_power_cap_kw + tol).any():
        out.append(f"site: {site.max():.1f} kW exceeds the cap {p.site_power_cap_kw}")
    return out


def jobs_from_mapping(data: Mapping[str, Any], where: str = "jobs file") -> tuple[list[Asset], list[Job]]:
    """Assets and jobs from a parsed YAML mapping ``{assets: [...], jobs: [...]}``; errors name the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'assets' and 'jobs'")
    assets, jobs = [], []
    entry = "assets[0]"
    try:
        for i, a in enumerate(data.get("assets") or []):
            entry = f"assets[{i}]"
            assets.append(Asset(str(a["asset_id"]), float(a["max_power_kw"]),
                                float(a.get("ramp_kw_per_slot", math.inf))))
        for i, j in enumerate(data.get("jobs") or []):
            entry = f"jobs[{i}]"
            jobs.append(Job(str(j["job_id"]), str(j["asset_id"]), float(j["energy_kwh"]),
                            float(j.get("earliest_start_s", 0.0)), float(j["deadline_s"]),
                            float(j.get("max_power_kw", math.inf)), bool(j.get("interruptible", True))))
    except KeyError as exc:
        raise ConfigError(f"{where}: {entry} misses the key {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {entry}: {exc}") from exc
    if not jobs:
        raise ConfigError(f"{where}: no jobs")
    return assets, jobs


def load_jobs_file(path: str) -> tuple[list[Asset], list[Job]]:
    """Read a YAML jobs file (see config/planner_loads_example.yaml)."""
    return jobs_from_mapping(load_yaml(path, "jobs file"), path)
