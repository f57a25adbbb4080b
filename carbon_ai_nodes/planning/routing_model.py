"""Carbon-aware vehicle routing: the problem, the plan, validation, arc costs and plan evaluation.

No solver and no ROS here: the OR-Tools adapter (``carbon_ai_nodes.planning.ortools_routing``) turns a
:class:`RoutingProblem` plus its :class:`ArcCosts` into visiting orders, and :func:`evaluate_routes` turns
visiting orders into a :class:`RoutePlanResult` (arrival times, loads, per-arc CO2) that
:func:`plan_violations` can check independently of the solver.

Load convention: ``Stop.demand_kg > 0`` is picked up at the stop, ``< 0`` delivered there. A vehicle leaves
its start with exactly the load its deliveries need, so the load on board along a route is
``start_load + cumulative demand``, and it never leaves ``[0, capacity_kg]``.

CO2 of an arc driven with ``payload`` kg on board is modelled as affine in the payload,
``co2_g = e0 + e1 * payload`` with ``e0`` and ``e1`` taken from the emission model at payload 0 and at the
vehicle's capacity (the road-load mass terms, rolling resistance and grade, are linear in mass, so this is
exact for them); the solver charges ``e0`` per arc and ``e1 * load`` through a load x distance term.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from carbon_ai_nodes.common.errors import SolverError
from carbon_ai_nodes.common.frames import G_MPS2
from carbon_ai_nodes.common.params import param
from carbon_ai_nodes.planning.calibrated_model import CalibratedModelParams

if TYPE_CHECKING:
    from carbon_ai_nodes.common.vehicle_profile import VehicleProfile

OBJECTIVES = ("distance", "time", "co2")

# Share of a replan deadline given to the solvers: the rest covers arc costs, warm-start repair, OR-Tools'
# overshoot of its own limit, conversion and publication (measured by bench/bench_routing.py).
REPLAN_SOLVER_SHARE = 0.5

# (profile name, cruise speed m/s, grade rise/run, payload kg) -> steady-cruise CO2 g/m. A model whose CO2 can
# depend on the grid (electric vehicles) also takes a keyword ``grid_gco2_per_kwh`` (NaN = the profile's value);
# arc_costs passes it only when one is given, so grid-blind models need not accept it.
Co2PerMetre = Callable[..., float]


@dataclasses.dataclass(frozen=True)
class Stop:
    """A depot or customer. Positions in a local ENU frame (m); times in seconds from plan start."""

    stop_id: str
    x_m: float
    y_m: float
    demand_kg: float = 0.0
    service_s: float = 0.0
    window_open_s: float = 0.0
    window_close_s: float = math.inf
    is_depot: bool = False
    z_m: float = 0.0
    latitude: float = math.nan
    longitude: float = math.nan


@dataclasses.dataclass(frozen=True)
class Vehicle:
    """One vehicle of a heterogeneous fleet.

    ``end_stop_id`` empty means the route may end at its last customer (no return leg).
    ``fixed_cost`` is in objective units (m, s or g CO2) and is charged if the vehicle is used at all.
    """

    vehicle_id: str
    capacity_kg: float
    start_stop_id: str
    end_stop_id: str = ""
    fixed_cost: float = 0.0
    profile: str = ""
    cruise_speed_mps: float = 13.9
    empty_mass_kg: float = math.nan


@dataclasses.dataclass(frozen=True)
class RoutingProblem:
    """A capacitated, time-windowed, heterogeneous-fleet routing request.

    ``distance_m``: optional explicit (n x n) matrix; otherwise Euclidean from positions (rounded to the
    nearest integer when ``round_distances``, as TSPLIB's EUC_2D specifies). ``speed_mps``: optional (n x n)
    matrix of arc speeds (congestion reports lower them); each vehicle drives ``min(arc speed, its cruise)``.
    """

    stops: tuple[Stop, ...]
    vehicles: tuple[Vehicle, ...]
    objective: str = "distance"
    distance_m: np.ndarray | None = None
    speed_mps: np.ndarray | None = None
    allow_dropping: bool = False
    drop_penalty: float = 1e7
    round_distances: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stops", tuple(self.stops))
        object.__setattr__(self, "vehicles", tuple(self.vehicles))
        validate_problem(self)

    @property
    def n(self) -> int:
        """Number of stops (depots included)."""
        return len(self.stops)

    def index_of(self, stop_id: str) -> int:
        """Index of a stop by id; SolverError if unknown."""
        for i, s in enumerate(self.stops):
            if s.stop_id == stop_id:
                return i
        raise SolverError(f"unknown stop_id {stop_id!r}")

    def customers(self) -> list[int]:
        """Indices of the stops that must (or may, when dropping) be visited."""
        return [i for i, s in enumerate(self.stops) if not s.is_depot]

    def with_stop(self, stop: Stop) -> RoutingProblem:
        """A copy with ``stop`` added (explicit matrices cannot grow: they are dropped to Euclidean)."""
        return dataclasses.replace(self, stops=(*self.stops, stop), distance_m=None,
                                   speed_mps=_grow(self.speed_mps, self.n + 1))

    def without_stop(self, stop_id: str) -> RoutingProblem:
        """A copy without the stop ``stop_id``."""
        i = self.index_of(stop_id)
        if self.stops[i].is_depot:
            raise SolverError(f"stop {stop_id!r} is a depot and cannot be removed")
        keep = [j for j in range(self.n) if j != i]

        def cut(m: np.ndarray | None) -> np.ndarray | None:
            return None if m is None else m[np.ix_(keep, keep)]

        return dataclasses.replace(self, stops=tuple(self.stops[j] for j in keep),
                                   distance_m=cut(self.distance_m), speed_mps=cut(self.speed_mps))

    def with_arc_speed(self, from_id: str, to_id: str, speed_mps: float) -> RoutingProblem:
        """A copy where the arc ``from_id -> to_id`` is driven at most at ``speed_mps`` (congestion)."""
        if not (math.isfinite(speed_mps) and speed_mps > 0):
            raise SolverError(f"arc speed {speed_mps!r}: must be a finite number > 0 m/s")
        speeds = (np.full((self.n, self.n), np.inf) if self.speed_mps is None else self.speed_mps.copy())
        speeds[self.index_of(from_id), self.index_of(to_id)] = speed_mps
        return dataclasses.replace(self, speed_mps=speeds)


def _grow(m: np.ndarray | None, n: int) -> np.ndarray | None:
    if m is None:
        return None
    out = np.full((n, n), np.inf)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def validate_problem(p: RoutingProblem) -> None:
    """Raise SolverError naming the first bad field (``stops[3].demand_kg=nan: must be finite``)."""
    if p.objective not in OBJECTIVES:
        raise SolverError(f"objective={p.objective!r}: must be one of {', '.join(OBJECTIVES)}")
    if not p.stops:
        raise SolverError("stops: empty; give at least one depot")
    if not p.vehicles:
        raise SolverError("vehicles: empty; give at least one vehicle")
    ids = set()
    for i, s in enumerate(p.stops):
        where = f"stops[{i}]"
        if not s.stop_id:
            raise SolverError(f"{where}.stop_id: empty")
        if s.stop_id in ids:
            raise SolverError(f"{where}.stop_id={s.stop_id!r}: duplicate")
        ids.add(s.stop_id)
        for key in ("x_m", "y_m", "z_m", "demand_kg", "service_s", "window_open_s"):
            v = getattr(s, key)
            if not math.isfinite(v):
                raise SolverError(f"{where}.{key}={v!r}: must be finite")
        if s.service_s < 0:
            raise SolverError(f"{where}.service_s={s.service_s}: must be >= 0")
        if math.isnan(s.window_close_s) or s.window_close_s < s.window_open_s:
            raise SolverError(f"{where}.window_close_s={s.window_close_s}: must be >= window_open_s "
                              f"({s.window_open_s})")
        if s.is_depot and s.demand_kg != 0:
            raise SolverError(f"{where}.demand_kg={s.demand_kg}: a depot has no demand")
    max_cap = 0.0
    for k, v in enumerate(p.vehicles):
        where = f"vehicles[{k}]"
        if not (math.isfinite(v.capacity_kg) and v.capacity_kg >= 0):
            raise SolverError(f"{where}.capacity_kg={v.capacity_kg!r}: must be finite and >= 0")
        if not (math.isfinite(v.fixed_cost) and v.fixed_cost >= 0):
            raise SolverError(f"{where}.fixed_cost={v.fixed_cost!r}: must be finite and >= 0")
        if not (math.isfinite(v.cruise_speed_mps) and v.cruise_speed_mps > 0):
            raise SolverError(f"{where}.cruise_speed_mps={v.cruise_speed_mps!r}: must be finite and > 0")
        for key in ("start_stop_id", "end_stop_id"):
            sid = getattr(v, key)
            if key == "end_stop_id" and not sid:
                continue
            if sid not in ids:
                raise SolverError(f"{where}.{key}={sid!r}: no such stop")
            if not p.stops[p.index_of(sid)].is_depot:
                raise SolverError(f"{where}.{key}={sid!r}: must be a depot (is_depot)")
        max_cap = max(max_cap, v.capacity_kg)
    for i, s in enumerate(p.stops):
        if abs(s.demand_kg) > max_cap and not p.allow_dropping:
            raise SolverError(f"stops[{i}].demand_kg={s.demand_kg}: exceeds the largest vehicle capacity "
                              f"({max_cap} kg); no plan can serve it")
    for name in ("distance_m", "speed_mps"):
        m = getattr(p, name)
        if m is None:
            continue
        m = np.asarray(m, dtype=float)
        object.__setattr__(p, name, m)
        if m.shape != (p.n, p.n):
            raise SolverError(f"{name}: shape {m.shape}, expected ({p.n}, {p.n})")
        if np.isnan(m).any() or (m < 0).any() or (name == "distance_m" and np.isinf(m).any()):
            raise SolverError(f"{name}: entries must be finite (speeds may be inf = no limit) and >= 0")
        if name == "speed_mps" and (m[~np.eye(p.n, dtype=bool)] == 0).any():
            raise SolverError("speed_mps: off-diagonal entries must be > 0 (close a road by dropping its stop)")
    if not (math.isfinite(p.drop_penalty) and p.drop_penalty > 0):
        raise SolverError(f"drop_penalty={p.drop_penalty!r}: must be finite and > 0")


# --------------------------------------------------------------------------------------------- arc costs
@dataclasses.dataclass(frozen=True)
class ArcCosts:
    """Per-arc quantities. Matrices are (n x n); per-vehicle ones are (vehicles x n x n).

    ``co2_empty_g[v, i, j]`` is the CO2 of driving arc i->j empty with vehicle v (g), ``co2_per_kg_g[v, i, j]``
    the extra grams per kg on board; ``speed_mps[v, i, j]`` the cruise speed used for both.
    """

    distance_m: np.ndarray
    grade: np.ndarray
    speed_mps: np.ndarray
    time_s: np.ndarray
    co2_empty_g: np.ndarray
    co2_per_kg_g: np.ndarray


def distance_matrix(p: RoutingProblem) -> np.ndarray:
    """Explicit distances, or Euclidean (rounded to integers when ``round_distances``), in m."""
    if p.distance_m is not None:
        return np.asarray(p.distance_m, dtype=float)
    xy = np.array([[s.x_m, s.y_m] for s in p.stops], dtype=float)
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2))
    return np.floor(d + 0.5) if p.round_distances else d


def placeholder_cruise_co2_g_per_m(mass_kg: float, speed_mps: float, grade: float, payload_kg: float) -> float:
    """Stand-in for ``emission_model.cruise_co2_g_per_m`` when no vehicle profile is available.

    A diesel vehicle's road load (rolling 0.007, CdA 6 m^2, air 1.2 kg/m^3) at 35 % tank-to-wheel efficiency,
    2.68 kg CO2 per litre of 35.8 MJ diesel (IPCC 2006 / EN 590 typical values); motoring downhill is free.
    """
    m = mass_kg + payload_kg
    v = max(speed_mps, 0.5)
    force_n = m * G_MPS2 * (0.007 * math.cos(math.atan(grade)) + math.sin(math.atan(grade))) + 0.5 * 1.2 * 6.0 * v * v
    fuel_j_per_m = max(force_n, 0.0) / 0.35
    return fuel_j_per_m / 35.8e6 * 2680.0


def load_profile_map(profile_paths: Sequence[str]) -> dict[str, VehicleProfile]:
    """The profiles in ``profile_paths`` (YAML files or directories of them), keyed by name and by file stem."""
    from carbon_ai_nodes.common.vehicle_profile import load_profiles

    profiles: dict[str, VehicleProfile] = {}
    for raw in profile_paths:
        path = Path(raw)
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for f in files:
            for prof in load_profiles(f):
                profiles[prof.name] = prof
                profiles.setdefault(f.stem, prof)
    return profiles


def default_co2_model(profile_paths: Sequence[str] = ()) -> Co2PerMetre:
    """:func:`profile_co2_model` of the profiles found in ``profile_paths`` (YAML files or directories of them)."""
    return profile_co2_model(load_profile_map(profile_paths))


def profile_co2_model(profiles: Mapping[str, VehicleProfile]) -> Co2PerMetre:
    """The shared emission model (``carbon.emission_model.cruise_co2_g_per_m``) for ``profiles`` (by name and file
    stem, :func:`load_profile_map`); vehicles whose profile is unknown use :func:`placeholder_cruise_co2_g_per_m`
    with a 10 t mass.
    """
    from carbon_ai_nodes.carbon.emission_model import cruise_co2_g_per_m

    # Electric profiles re-rated to a reported grid intensity, keyed (profile, gCO2/kWh); bounded because
    # intensities change all day and only the latest few matter.
    at_grid: dict[tuple[str, float], VehicleProfile] = {}

    def co2(profile: str, speed_mps: float, grade: float, payload_kg: float,
            grid_gco2_per_kwh: float = math.nan) -> float:
        prof = profiles.get(profile)
        if prof is not None:
            grid = float(grid_gco2_per_kwh)
            if prof.is_electric and math.isfinite(grid) and grid != prof.grid_gco2_per_kwh:
                key = (profile, grid)
                if key not in at_grid:
                    if len(at_grid) >= 64:
                        at_grid.clear()
                    at_grid[key] = dataclasses.replace(prof, grid_gco2_per_kwh=grid)
                prof = at_grid[key]
            return float(cruise_co2_g_per_m(prof, speed_mps, grade, payload_kg))
        return placeholder_cruise_co2_g_per_m(10000.0, speed_mps, grade, payload_kg)

    return co2


def calibrated_co2_model(base: Co2PerMetre, names: set[str],
                         rates: Callable[[float, float, float, float], tuple[float, float]]) -> Co2PerMetre:
    """``base`` with the vehicles whose profile is one of ``names`` (a profile's name and file stem) priced by
    their calibrated model: ``rates(speed_mps, accel_mps2, grade, payload_kg) -> (CO2 g/s, fuel L/h)``
    (planning.calibrated_model) at a steady cruise, divided by the speed (g/m; below 0.1 m/s as at 0.1 m/s)."""

    def co2(name: str, speed_mps: float, grade: float, payload_kg: float, **grid: float) -> float:
        if name in names:
            return float(rates(speed_mps, 0.0, grade, payload_kg)[0]) / max(speed_mps, 0.1)
        return base(name, speed_mps, grade, payload_kg, **grid)

    return co2


def co2_depends_on_grid(co2_model: Co2PerMetre, profile: str, speed_mps: float) -> bool:
    """Whether ``co2_model``'s CO2 for ``profile`` at ``speed_mps`` (m/s, level, empty) changes with the grid
    intensity (an electric vehicle), probed at two intensities; False for models without a grid argument."""
    try:
        low = co2_model(profile, speed_mps, 0.0, 0.0, grid_gco2_per_kwh=100.0)
        high = co2_model(profile, speed_mps, 0.0, 0.0, grid_gco2_per_kwh=500.0)
    except TypeError:  # a grid-blind model (no grid_gco2_per_kwh keyword)
        return False
    return bool(low != high)


def arc_costs(p: RoutingProblem, co2_model: Co2PerMetre, grid_gco2_per_kwh: float = math.nan) -> ArcCosts:
    """Distances, grades, speeds, times and the affine CO2 model of every arc for every vehicle.

    ``grid_gco2_per_kwh``: grid carbon intensity (gCO2/kWh) electric vehicles charge at; NaN = each profile's
    own value. Passed to ``co2_model`` only when finite.
    """
    grid_kw = {"grid_gco2_per_kwh": float(grid_gco2_per_kwh)} if math.isfinite(grid_gco2_per_kwh) else {}
    d = distance_matrix(p)
    z = np.array([s.z_m for s in p.stops], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        grade = np.where(d > 0, (z[None, :] - z[:, None]) / d, 0.0)
    grade = np.clip(grade, -0.3, 0.3)
    arc_speed = np.full((p.n, p.n), np.inf) if p.speed_mps is None else p.speed_mps
    nv = len(p.vehicles)
    speed = np.empty((nv, p.n, p.n))
    e0 = np.empty((nv, p.n, p.n))
    e1 = np.empty((nv, p.n, p.n))
    classes: dict[tuple, int] = {}

    def rates(profile: str, v: np.ndarray, g: np.ndarray, payload: float) -> np.ndarray:
        # Most arcs share speed and grade: evaluate the model once per distinct (speed, grade) pair.
        pairs = np.round(np.stack([v.ravel(), g.ravel()], axis=1), 4)
        uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
        vals = np.array([float(co2_model(profile, float(s), float(gr), payload, **grid_kw)) for s, gr in uniq])
        if not np.isfinite(vals).all():
            raise SolverError(f"emission model gave a non-finite g/m for profile {profile!r}")
        # An electric drive regenerates downhill (negative g/m); the solver needs costs >= 0, so such an arc
        # costs nothing and its recovered energy is not credited (the route's CO2 is slightly overstated).
        vals = np.maximum(vals, 0.0)
        return vals[np.asarray(inverse).ravel()].reshape(v.shape)

    for k, veh in enumerate(p.vehicles):
        speed[k] = np.minimum(arc_speed, veh.cruise_speed_mps)
        key = (veh.profile, veh.cruise_speed_mps, veh.capacity_kg)
        if key in classes:  # same profile, speed and capacity: same costs
            e0[k], e1[k] = e0[classes[key]], e1[classes[key]]
            continue
        classes[key] = k
        cap = max(veh.capacity_kg, 1.0)
        g_empty = rates(veh.profile, speed[k], grade, 0.0)
        g_full = rates(veh.profile, speed[k], grade, cap)
        e0[k] = g_empty * d
        e1[k] = np.maximum(g_full - g_empty, 0.0) / cap * d
    time_s = d[None, :, :] / speed
    return ArcCosts(distance_m=d, grade=grade, speed_mps=speed, time_s=time_s, co2_empty_g=e0, co2_per_kg_g=e1)


# --------------------------------------------------------------------------------------------- plans
@dataclasses.dataclass(frozen=True)
class PlannedStop:
    """One visited stop; arc quantities describe the arc arriving here (zero for the route's start)."""

    stop_index: int
    arrival_s: float
    load_after_kg: float
    arc_distance_m: float
    arc_co2_g: float
    arc_speed_mps: float


@dataclasses.dataclass(frozen=True)
class VehiclePlan:
    """The route of one vehicle, start depot first (and end depot last when it returns)."""

    vehicle_index: int
    stops: tuple[PlannedStop, ...]
    distance_m: float
    duration_s: float
    co2_g: float
    returns_to_depot: bool = True

    @property
    def customer_indices(self) -> list[int]:
        """Visited non-depot stops in order (the solver's view of the route)."""
        inner = self.stops[1:-1] if self.returns_to_depot else self.stops[1:]
        return [s.stop_index for s in inner]


STATUSES = ("optimal", "feasible", "deadline", "infeasible", "error")


@dataclasses.dataclass(frozen=True)
class RoutePlanResult:
    """A fleet plan: routes of used vehicles, totals, the distance-shortest plan's CO2 and the solve status."""

    objective: str
    routes: tuple[VehiclePlan, ...]
    dropped: tuple[int, ...]
    objective_value: float
    distance_m: float
    duration_s: float
    co2_g: float
    baseline_co2_g: float = math.nan
    baseline_distance_m: float = math.nan
    solve_time_s: float = 0.0
    status: str = "feasible"
    message: str = ""

    def customer_routes(self) -> list[list[int]]:
        """Per vehicle (all vehicles, in fleet order), the visited customers: the solver's warm start."""
        n_veh = max((r.vehicle_index for r in self.routes), default=-1) + 1
        out: list[list[int]] = [[] for _ in range(n_veh)]
        for r in self.routes:
            out[r.vehicle_index] = r.customer_indices
        return out


def evaluate_routes(p: RoutingProblem, costs: ArcCosts, routes: Sequence[Sequence[int]],
                    dropped: Sequence[int] = ()) -> RoutePlanResult:
    """Simulate the visiting orders (one list of customer indices per vehicle) and total them.

    Arrival times wait for window openings; the objective value includes used vehicles' fixed costs.
    """
    plans = []
    tot_d = tot_t = tot_c = fixed = 0.0
    for k, customers in enumerate(routes):
        if not customers:
            continue
        veh = p.vehicles[k]
        start = p.index_of(veh.start_stop_id)
        seq = [start, *customers] + ([p.index_of(veh.end_stop_id)] if veh.end_stop_id else [])
        demands = [p.stops[i].demand_kg for i in seq]
        prefix = np.cumsum(demands)
        load = max(0.0, -float(prefix.min()))
        t = max(0.0, p.stops[start].window_open_s)
        out = [PlannedStop(start, t, load, 0.0, 0.0, math.nan)]
        d_sum = c_sum = 0.0
        for a, b in zip(seq, seq[1:], strict=False):
            t = max(t + p.stops[a].service_s + float(costs.time_s[k, a, b]), p.stops[b].window_open_s)
            arc_d = float(costs.distance_m[a, b])
            arc_c = float(costs.co2_empty_g[k, a, b] + costs.co2_per_kg_g[k, a, b] * load)
            load += p.stops[b].demand_kg
            out.append(PlannedStop(b, t, load, arc_d, arc_c, float(costs.speed_mps[k, a, b])))
            d_sum += arc_d
            c_sum += arc_c
        duration = t + p.stops[seq[-1]].service_s - out[0].arrival_s
        plans.append(VehiclePlan(k, tuple(out), d_sum, duration, c_sum, bool(veh.end_stop_id)))
        tot_d, tot_t, tot_c, fixed = tot_d + d_sum, tot_t + duration, tot_c + c_sum, fixed + veh.fixed_cost
    value = {"distance": tot_d, "time": tot_t, "co2": tot_c}[p.objective] + fixed
    value += p.drop_penalty * len(dropped)
    return RoutePlanResult(p.objective, tuple(plans), tuple(dropped), value, tot_d, tot_t, tot_c)


def plan_violations(p: RoutingProblem, plan: RoutePlanResult, tol: float = 1e-6) -> list[str]:
    """Every broken constraint of a plan (empty when feasible): each customer served exactly once (or
    dropped when allowed), capacity, time windows, and routes that start and end where their vehicle must."""
    problems = []
    seen: dict[int, int] = {}
    for r in plan.routes:
        veh = p.vehicles[r.vehicle_index]
        if r.stops[0].stop_index != p.index_of(veh.start_stop_id):
            problems.append(f"vehicle {veh.vehicle_id}: does not start at {veh.start_stop_id}")
        if veh.end_stop_id and r.stops[-1].stop_index != p.index_of(veh.end_stop_id):
            problems.append(f"vehicle {veh.vehicle_id}: does not end at {veh.end_stop_id}")
        for s in r.stops:
            stop = p.stops[s.stop_index]
            if not stop.is_depot:
                seen[s.stop_index] = seen.get(s.stop_index, 0) + 1
            if s.load_after_kg < -tol or s.load_after_kg > veh.capacity_kg + tol:
                problems.append(f"vehicle {veh.vehicle_id}: load {s.load_after_kg:.1f} kg at {stop.stop_id} "
                                f"outside [0, {veh.capacity_kg}]")
            if s.arrival_s > stop.window_close_s + 1e-3:
                problems.append(f"vehicle {veh.vehicle_id}: arrives at {stop.stop_id} at {s.arrival_s:.1f} s, "
                                f"after its window closes ({stop.window_close_s} s)")
    for i in p.customers():
        count = seen.get(i, 0)
        if count > 1:
            problems.append(f"stop {p.stops[i].stop_id}: visited {count} times")
        elif count == 0 and not (p.allow_dropping and i in plan.dropped):
            problems.append(f"stop {p.stops[i].stop_id}: not served")
    return problems


# --------------------------------------------------------------------------------------------- parameters
@dataclasses.dataclass(frozen=True)
class PlannerParams(CalibratedModelParams):
    """Parameters of the planner node (carbon-aware routing and load scheduling)."""

    SECTION: ClassVar[str] = "planner"
    objective: str = param("co2", "Default objective of route requests that name none",
                           choices=OBJECTIVES)
    time_limit_s: float = param(2.0, "Solver time limit of a fresh route request", unit="s", gt=0.0, max=600.0)
    replan_deadline_s: float = param(0.2, "A replan (stops added or removed, a road congested, a new grid "
                                          "intensity for an electric fleet) is published within this",
                                      unit="s", gt=0.0, max=60.0)
    vehicle_profiles: tuple[str, ...] = param(
        ["config/vehicles"], "Vehicle profile YAML files or directories (relative: working directory, then the "
                             "installed package share); unknown profiles use the documented placeholder")
    frame_id: str = param("map", "Frame of route positions (Path, markers)")
    load_jobs_file: str = param("", "YAML file of flexible loads to schedule against grid_intensity "
                                    "(empty = no load scheduling)")
    site_power_cap_kw: float = param(1e9, "Site power cap shared by all scheduled loads", unit="kW", gt=0.0)
    schedule_time_limit_s: float = param(2.0, "Load-schedule solver time limit", unit="s", gt=0.0, max=600.0)
    state_timeout_s: float = param(2.0, "vehicle_state older than this is stale", unit="s", gt=0.0)
    max_stops: int = param(500, "Largest route request accepted", min=2, max=5000)


# --------------------------------------------------------------------------------------------- planning
@dataclasses.dataclass(frozen=True)
class SolveOutcome:
    """What a solver returns: one customer list per vehicle, unserved stops, status and wall time."""

    routes: list[list[int]]
    dropped: list[int]
    status: str  # optimal | feasible | deadline | infeasible
    solve_time_s: float
    message: str = ""


class RoutingSolver(Protocol):
    """The port a routing solver fills (ortools_routing.OrToolsRoutingSolver is the shipped one): turns a problem
    and its arc costs into visiting orders."""

    def solve(self, problem: RoutingProblem, costs: ArcCosts, *, time_limit_s: float,
              initial_routes: Sequence[Sequence[int]] | None = None) -> SolveOutcome:
        """Solve within ``time_limit_s`` (wall clock, model building included), warm-started if given."""
        ...


def plan_routes(problem: RoutingProblem, solver: RoutingSolver, costs: ArcCosts, *, time_limit_s: float,
                initial_routes: Sequence[Sequence[int]] | None = None,
                baseline_routes: Sequence[Sequence[int]] | None = None,
                is_replan: bool = False) -> tuple[RoutePlanResult, list[list[int]]]:
    """Solve for the problem's objective and, when that is not distance, for the distance-shortest plan
    too (the baseline whose CO2 every plan reports). Both fit in ``time_limit_s`` (70/30 split) and both
    warm-start when routes are given. Returns the plan and the baseline's routes (the next warm start).

    ``solver`` follows ``adapters.ortools_routing.RoutingSolver``. A replan that used its whole time is
    reported as ``deadline`` (best plan so far); a fresh plan that did so is simply ``feasible``.
    """
    share = 1.0 if problem.objective == "distance" else 0.7
    out = solver.solve(problem, costs, time_limit_s=time_limit_s * share, initial_routes=initial_routes)
    if out.status == "infeasible":
        empty = RoutePlanResult(problem.objective, (), (), math.nan, 0.0, 0.0, 0.0,
                                solve_time_s=out.solve_time_s, status="infeasible", message=out.message)
        return empty, []
    plan = evaluate_routes(problem, costs, out.routes, out.dropped)
    spent = out.solve_time_s
    if problem.objective == "distance":
        base_plan, base_routes = plan, out.routes
    else:
        base_problem = dataclasses.replace(problem, objective="distance")
        remaining = max(time_limit_s - spent, 0.01)
        base = solver.solve(base_problem, costs, time_limit_s=remaining,
                            initial_routes=baseline_routes if baseline_routes is not None else out.routes)
        spent += base.solve_time_s
        base_routes = base.routes if base.status != "infeasible" else out.routes
        base_plan = evaluate_routes(base_problem, costs, base_routes, base.dropped)
    status = out.status if is_replan or out.status != "deadline" else "feasible"
    plan = dataclasses.replace(plan, baseline_co2_g=base_plan.co2_g, baseline_distance_m=base_plan.distance_m,
                               solve_time_s=spent, status=status)
    return plan, [list(r) for r in base_routes]


def replan_routes(problem: RoutingProblem, solver: RoutingSolver, costs: ArcCosts, *,
                  current_routes: Sequence[Sequence[int]], baseline_routes: Sequence[Sequence[int]],
                  old_ids: Sequence[str], time_limit_s: float) -> tuple[RoutePlanResult, list[list[int]]]:
    """A replan of a changed ``problem``, warm-started from the current plan's routes and its baseline's (both
    indexing ``old_ids`` and carried over by :func:`repair_routes`), within ``time_limit_s`` (s)."""
    initial = repair_routes(problem, costs, current_routes, old_ids)
    baseline = repair_routes(problem, costs, baseline_routes, old_ids)
    return plan_routes(problem, solver, costs, time_limit_s=time_limit_s, initial_routes=initial,
                       baseline_routes=baseline, is_replan=True)


def repair_routes(problem: RoutingProblem, costs: ArcCosts, routes: Sequence[Sequence[int]],
                  old_ids: Sequence[str]) -> list[list[int]]:
    """Carry a previous plan over to a changed problem: ``routes`` index ``old_ids``; stops that no longer
    exist are removed and new ones inserted at their cheapest position (by distance) among those that keep
    the vehicle's on-board load within its capacity, or at the cheapest position overall when none does.
    The capacity check matters: OR-Tools rejects a warm start that breaks capacity, and the replan then
    starts cold with a few milliseconds left (measured: no plan at all on a loaded machine). Time windows
    are left to the solver."""
    new_index = {s.stop_id: i for i, s in enumerate(problem.stops)}
    out = [[new_index[old_ids[i]] for i in r if 0 <= i < len(old_ids) and old_ids[i] in new_index
            and not problem.stops[new_index[old_ids[i]]].is_depot] for r in routes]
    out = (out + [[] for _ in problem.vehicles])[: len(problem.vehicles)]
    placed = {i for r in out for i in r}
    d = costs.distance_m
    demand = [s.demand_kg for s in problem.stops]

    def fits(seq: Sequence[int], capacity_kg: float) -> bool:
        # Deliveries (negative demand) are on board from the start; pickups add as they happen.
        load = -sum(min(demand[i], 0.0) for i in seq)
        peak = load
        for i in seq:
            load += demand[i]
            peak = max(peak, load)
        return peak <= capacity_kg + 1e-9

    for c in problem.customers():
        if c in placed:
            continue
        best = (False, math.inf, 0, 0)  # (fits, extra distance m, vehicle, position); fitting ones win
        for k, r in enumerate(out):
            veh = problem.vehicles[k]
            seq = [problem.index_of(veh.start_stop_id), *r]
            end = problem.index_of(veh.end_stop_id) if veh.end_stop_id else None
            for pos in range(len(seq)):
                a = seq[pos]
                b = seq[pos + 1] if pos + 1 < len(seq) else end
                delta = d[a, c] + (d[c, b] - d[a, b] if b is not None else 0.0)
                if best[0] and delta >= best[1]:
                    continue
                ok = fits([*r[:pos], c, *r[pos:]], veh.capacity_kg)
                if (ok and not best[0]) or (ok == best[0] and delta < best[1]):
                    best = (ok, delta, k, pos)
        out[best[2]].insert(best[3], c)
    return out
