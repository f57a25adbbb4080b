"""OR-Tools routing solver behind the small :class:`RoutingSolver` protocol.

The model: one node per stop (plus a free "anywhere" end node for vehicles whose route may end at its
last customer), a per-vehicle arc cost (distance, time or empty-vehicle CO2), a ``load`` dimension holding
the load on board (pickups add, deliveries subtract, the start load is free so a vehicle leaves with what
its deliveries need), a ``time`` dimension with windows, fixed vehicle costs, and for the CO2 objective
OR-Tools' path energy cost ``sum(load on board x co2_per_kg of the arc)``: the load-dependent part of CO2.

Search: ``plain`` is the textbook setting (cheapest-arc start, guided local search). ``tuned`` (default) runs
OR-Tools' iterated local search on a cold solve (SISR ruin-and-recreate: strings of neighbouring customers
removed from a few adjacent routes and reinserted by local cheapest insertion, accepted by simulated
annealing), and for plain distance CVRP ends with a set partitioning over the routes it visited (CP-SAT). A
warm-started solve (a replan, or the baseline plan next to a CO2 plan) keeps its start, so it
runs guided local search from it, as does a problem mixing pickups and deliveries, and given the time
re-optimises groups of neighbouring routes as small OR-Tools problems. Every cost matrix is registered as a
C++ transit matrix (no Python callback per arc evaluation). Gaps: see bench/bench_routing.py.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from carbon_ai_nodes.common.errors import SolverError
from carbon_ai_nodes.planning.routing_model import ArcCosts, RoutingProblem, SolveOutcome

# Objective units are integers in OR-Tools: scale to keep resolution (m -> mm, s -> ms, g -> ug).
DISTANCE_SCALE = 1000
TIME_SCALE = 1000
CO2_SCALE = 1_000_000  # ug: the per-kg slope of short arcs needs the resolution
LOAD_SCALE = 10  # 0.1 kg
BIG_TIME_S = 10 * 86400.0
WARM_START_READ_S = 2.0  # the limit of reading a warm start (milliseconds of work, seconds of a busy machine)
# Search settings of the tuned search, all here (the parameter proto itself is set in _parameters).
# Measured with bench/bench_routing.py on E-n101-k8, M-n101-k10, X-n101-k25 and X-n106-k14 at 5 s on a
# shared 2-core machine (the solver got 0.1-0.6 of a core): guided local search on the whole fleet stops
# improving after ~1 CPU-second on these instances, so the rest of the time goes to re-solving groups of
# neighbouring routes. Stall limits count this process's CPU time: on a loaded machine a fixed wall-clock
# share ended the whole-fleet phase before its first local optimum (gaps of 6-20 % instead of 1-3 %).
DECOMPOSE_FIRST_SHARE = 0.8  # most of the wall limit the whole-fleet phase may take (0.4 left 1 s
#   solves on a loaded machine before the first local optimum: 10-20 % gaps; same at 5 s)
DECOMPOSE_FIRST_STALL_CPU_S = 0.4  # ... which ends earlier once its best cost has been flat this long
DECOMPOSE_GROUP_ROUTES = 4  # routes re-solved together (3 and 5 measured no better; 2 worse)
DECOMPOSE_INNER_LIMIT_S = 0.3  # wall cap of one group's solve (0.1 s too short to improve a group)
DECOMPOSE_INNER_STALL_CPU_S = 0.1  # ... which ends earlier once flat this long: more groups per second
# Cold solves of the tuned search: OR-Tools' iterated local search with SISR ruin-and-recreate (Christiaens and
# Vanden Berghe 2020), run through RoutingModel.SolveWithIteratedLocalSearch (SolveWithParameters ignores
# use_iterated_local_search). Measured on the same four instances, also with a fixed number of ruin-and-recreate
# iterations (load-independent); see _iterated_local_search for what was rejected.
SISR_AVG_REMOVED = 15  # customers removed per ruin on average (5: stuck at +20 % on M-n101-k10; 10, 20, 25 worse)
SISR_MAX_STRING = 15  # longest string removed from one route (10: 0.1-0.6 points worse on E-n101-k8, whose
#   routes hold 12.5 customers, in 9 of 9 fixed-iteration runs; no change where routes are shorter; 20: as 15)
SISR_BYPASS = 0.01  # bypass factor of the split-string removal (the paper's value; 0.1 no better)
# Route-pool set partitioning after the iterated local search (a matheuristic in the spirit of ILS-SP): the
# routes of the solutions the search visits are pooled, and CP-SAT picks the cheapest set of them covering every
# customer once, hinted with the search's best plan (so never worse); the time it leaves goes to a cold search from
# its plan. Only for plain CVRP with the distance objective on a homogeneous fleet (_set_partitioning_applies).
# The measurements behind these settings, and what was tried and rejected: bench/routing_notes.md.
SP_SHARE = 0.1  # share of the wall limit kept for the set partitioning (and the cold search after it) ...
SP_MAX_S = 0.5  # ... at most this long (X-n101-k25: LP + CP-SAT to optimality 0.18-0.25 s on an idle core)
SP_MIN_LIMIT_S = 3.0  # shorter limits run the iterated search alone (at 1 s the 0.1 s left to LP + CP-SAT
#   ended unsolved in 7 of 12 runs, and the search's lost 0.1 s cost E-n101-k8 / X-n101-k25 / X-n106-k14 2.21 /
#   2.67 / 2.48 % against 2.82 / 2.17 / 1.74 without it, 18:30 UTC; 2-4 s not measured)
POOL_SLACK = 0.03  # pool only the routes of solutions within 3 % of the best cost so far (reading every
#   solution's routes in the callback, which fires ~2400-3200 times in 4 s on X-n101-k25, took 0.5 s of the 4 s)
SP_LP_CANDIDATES = 1500  # routes of the cheapest solutions, ranked by their reduced cost in the LP relaxation ...
SP_POOL_MAX = 400  # ... for CP-SAT, which gets those of lowest reduced cost (ranked by solution cost instead,
#   400-800 X-n106-k14 routes stayed unsolved in 1 s; by reduced cost optimal in 0.3 s, 0.1 point better)
SP_POLISH_MIN_S = 0.15  # time left after the set partitioning, if at least this, goes to a cold search from it
ILS_COLD = 0.001  # annealing temperature of that search x the mean arc cost (the final one of the manual
#   schedules measured in _iterated_local_search; in 5 of 11 runs the cold search found 1-6 units)


def _set_partitioning_applies(p: RoutingProblem) -> bool:
    """Whether pooled routes can be recombined freely: distance objective (a route's cost does not depend on
    the load it carries, unlike CO2), no time windows, no dropping, every vehicle alike (start, end, capacity,
    fixed cost), so any route seen in a feasible solution is feasible on any vehicle."""
    v0 = p.vehicles[0] if p.vehicles else None
    return (v0 is not None and p.objective == "distance" and not p.allow_dropping
            and not any(s.window_open_s > 0 or math.isfinite(s.window_close_s) for s in p.stops)
            and all((v.start_stop_id, v.end_stop_id, v.capacity_kg, v.fixed_cost)
                    == (v0.start_stop_id, v0.end_stop_id, v0.capacity_kg, v0.fixed_cost) for v in p.vehicles))


@dataclasses.dataclass
class _Model:
    """An OR-Tools routing model of one problem and what the solve's later steps read from it."""

    problem: RoutingProblem
    manager: Any  # pywrapcp.RoutingIndexManager (OR-Tools ships no type information)
    routing: Any  # pywrapcp.RoutingModel
    size: int  # nodes: the stops, plus the open end node when a route may end anywhere
    starts: list[int]  # start node per vehicle
    ends: list[int]  # end node per vehicle
    node_of: list[int]  # routing variable index -> node
    # Set with the arc costs: the distance matrix in integer units, and the integer units per unit of the
    # objective (m, s or g), which also scale fixed and drop costs.
    dist_int: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    unit: int = 1
    has_windows: bool = False
    _callbacks: dict[bytes, int] = dataclasses.field(default_factory=dict)

    def pad(self, matrix: np.ndarray) -> np.ndarray:
        """An n x n stop matrix grown to the model's nodes (the open end costs nothing to reach or leave)."""
        n = self.problem.n
        out = np.zeros((self.size, self.size), dtype=np.int64)
        out[:n, :n] = matrix
        return out

    def register(self, matrix: np.ndarray) -> int:
        """The transit callback of ``matrix``, registered once per distinct matrix: vehicles with the same
        profile/speed share callbacks, so OR-Tools groups them in one cost class."""
        key = matrix.tobytes()
        if key not in self._callbacks:
            # Matrices stay in C++: a Python callback per arc evaluation would cut the search rate ~10x.
            self._callbacks[key] = self.routing.RegisterTransitMatrix(matrix.tolist())
        return self._callbacks[key]


@dataclasses.dataclass(frozen=True)
class _Deadline:
    """The wall-clock limit of one solve: ``limit_s`` from ``t0_s`` (time.monotonic())."""

    t0_s: float
    limit_s: float

    def left_s(self) -> float:
        """Seconds left (negative once past)."""
        return self.limit_s - (time.monotonic() - self.t0_s)

    def apply(self, params: Any) -> float:
        """Set the search parameters' time limit to what is left (at least 10 ms); returns what is left (s)."""
        remaining = self.left_s()
        params.time_limit.FromMilliseconds(max(int(remaining * 1000), 10))
        return remaining


def _add_load_dimensions(m: _Model, costs: ArcCosts) -> None:
    """Capacity: the load served so far for one-way demand, the load on board when pickups and deliveries
    mix or the objective is CO2, whose load-dependent part is the path energy ``load x co2_per_kg``."""
    p, routing, nv = m.problem, m.routing, len(m.problem.vehicles)
    demands = [int(round(s.demand_kg * LOAD_SCALE)) for s in p.stops] + [0] * (m.size - p.n)
    caps = [int(math.floor(v.capacity_kg * LOAD_SCALE + 1e-9)) for v in p.vehicles]
    if not any(demands):
        return
    one_way = all(d >= 0 for d in demands) or all(d <= 0 for d in demands)
    if one_way:
        # Single-direction demand: the classic capacity dimension (cumul = load served so far)
        # propagates best; the on-board load is needed only for the CO2 energy term below.
        served = [abs(d) for d in demands]
        cb = routing.RegisterUnaryTransitVector(served)
        routing.AddDimensionWithVehicleCapacity(cb, 0, caps, True, "served")
    if p.objective == "co2" or not one_way:
        cb = routing.RegisterUnaryTransitVector(demands)
        routing.AddDimensionWithVehicleCapacity(cb, 0, caps, False, "load")
        if p.objective == "co2":
            # energy = sum over arcs of (load cumul at the arc's start) x (transit of "co2_slope")
            slope = [m.pad(np.rint(costs.co2_per_kg_g[k] * CO2_SCALE / LOAD_SCALE)
                           .astype(np.int64)) for k in range(nv)]
            slope_cbs = [m.register(matrix) for matrix in slope]
            routing.AddDimensionWithVehicleTransits(slope_cbs, 0, int(2**62), True, "co2_slope")
            for k in range(nv):
                routing.SetPathEnergyCostOfVehicle("load", "co2_slope", 1, k)


def _add_time_dimension(m: _Model, time_cbs: list[int]) -> None:
    """The ``time`` dimension with the stops' windows (depots' on the vehicles' starts and ends), when there
    are windows or the objective is time; sets ``m.has_windows``."""
    p, routing, nv = m.problem, m.routing, len(m.problem.vehicles)
    m.has_windows = any(s.window_open_s > 0 or math.isfinite(s.window_close_s) for s in p.stops)
    if not (m.has_windows or p.objective == "time"):
        return
    horizon = int(max([s.window_close_s for s in p.stops if math.isfinite(s.window_close_s)]
                      + [BIG_TIME_S]) * TIME_SCALE) + 1
    routing.AddDimensionWithVehicleTransits(time_cbs, horizon, horizon, False, "time")
    tdim = routing.GetDimensionOrDie("time")
    for i, s in enumerate(p.stops):
        lo = int(s.window_open_s * TIME_SCALE)
        hi = int(s.window_close_s * TIME_SCALE) if math.isfinite(s.window_close_s) else horizon
        if s.is_depot:
            for k in range(nv):
                if m.starts[k] == i:
                    tdim.CumulVar(routing.Start(k)).SetRange(lo, hi)
                if m.ends[k] == i:
                    tdim.CumulVar(routing.End(k)).SetRange(lo, hi)
        else:
            tdim.CumulVar(m.manager.NodeToIndex(i)).SetRange(lo, hi)
    for k in range(nv):
        routing.AddVariableMinimizedByFinalizer(tdim.CumulVar(routing.End(k)))
        routing.AddVariableMaximizedByFinalizer(tdim.CumulVar(routing.Start(k)))


def _add_optional_visits(m: _Model) -> None:
    """Depots no vehicle starts or ends at may be skipped at no cost; customers, when dropping is allowed,
    at the drop penalty."""
    p, routing = m.problem, m.routing
    used_depots = set(m.starts) | set(m.ends)
    for i, s in enumerate(p.stops):
        if i in used_depots:
            continue
        if s.is_depot:
            routing.AddDisjunction([m.manager.NodeToIndex(i)], 0)
        elif p.allow_dropping:
            routing.AddDisjunction([m.manager.NodeToIndex(i)], int(round(p.drop_penalty * m.unit)))


def _stop_when_stalled(routing: Any, stall_cpu_s: float) -> None:
    """End the search once the best cost has not improved for ``stall_cpu_s`` of this process's CPU time:
    on a loaded machine a wall-clock share would end the search before it reaches a local optimum."""
    solver = routing.solver()
    best: float | None = None
    best_at_s = time.process_time()

    def on_solution() -> None:
        nonlocal best, best_at_s
        value = routing.CostVar().Value()  # the cost variable exists only once the model is closed
        now = time.process_time()
        if best is None or value < best:
            best, best_at_s = value, now
        elif now - best_at_s > stall_cpu_s:
            solver.FinishCurrentSearch()

    routing.AddAtSolutionCallback(on_solution)


class OrToolsRoutingSolver:
    """The default solver. ``search`` is ``tuned`` (default) or ``plain``; ``exact_integer_costs`` keeps
    instance distances unscaled (VRPLIB costs are integers, so objective == instance cost)."""

    def __init__(self, search: str = "tuned", exact_integer_costs: bool = False, seed_log: bool = False,
                 set_partitioning: bool = True) -> None:
        if search not in ("tuned", "plain"):
            raise SolverError(f"search={search!r}: must be 'tuned' or 'plain'")
        self.search = search
        self.set_partitioning = set_partitioning
        self.exact_integer_costs = exact_integer_costs
        self.log_search = seed_log
        # Imported at construction (node start-up), not in the first solve: the import takes ~0.3 s, up to
        # 1 s on a loaded machine, which would otherwise eat the first request's whole time limit (the enums
        # module alone took 0.1 s: a first 1 s solve ended at 1.11 s).
        from ortools.constraint_solver import pywrapcp, routing_enums_pb2  # noqa: F401
        if search == "tuned" and set_partitioning:
            from ortools.sat.python import cp_model  # noqa: F401  (0.4 s on first import, measured)

    def solve(self, problem: RoutingProblem, costs: ArcCosts, *, time_limit_s: float,
              initial_routes: Sequence[Sequence[int]] | None = None) -> SolveOutcome:
        """Build the model and search; returns the best plan found when the time limit hits.

        ``tuned`` without ``initial_routes`` runs OR-Tools' iterated local search (SISR ruin-and-recreate)
        for the whole limit when every stop is a delivery or every stop a pickup (with both mixed it measured
        worse than the search below); for distance CVRP on a like fleet without windows the last SP_SHARE of a
        limit of SP_MIN_LIMIT_S or more goes to a set partitioning over the routes it visited. OR-Tools cannot
        start that search from given routes, so other ``tuned``
        solves on a fleet of 4+ vehicles with a limit of 0.5 s or more run guided local search on
        the whole fleet until its best cost has been flat for DECOMPOSE_FIRST_STALL_CPU_S (at most
        DECOMPOSE_FIRST_SHARE of the limit), then spends the rest re-optimising groups of neighbouring
        routes as small OR-Tools problems (a decomposition: each sub-problem is solved nearly to optimality
        in a fraction of a second, which guided local search on the whole fleet does not reach), keeping
        each improvement. Shorter limits (replans) and smaller fleets run the whole-fleet search alone.
        """
        t0 = time.monotonic()
        demands = [s.demand_kg for s in problem.stops]
        one_way = all(d >= 0 for d in demands) or all(d <= 0 for d in demands)
        if self.search == "tuned" and initial_routes is None and one_way:
            if self.set_partitioning and time_limit_s >= SP_MIN_LIMIT_S and _set_partitioning_applies(problem):
                return self._iterated_with_set_partitioning(problem, costs, t0, time_limit_s)
            return self._solve_once(problem, costs, time_limit_s=time_limit_s, iterated=True)
        decompose = self.search == "tuned" and time_limit_s >= 0.5 and len(problem.vehicles) >= 4
        share = DECOMPOSE_FIRST_SHARE if decompose else 1.0
        first = self._solve_once(problem, costs, time_limit_s=time_limit_s * share, initial_routes=initial_routes,
                                 stall_cpu_s=DECOMPOSE_FIRST_STALL_CPU_S if decompose else None)
        if not decompose or first.status == "infeasible":
            return first
        routes = self._decompose(problem, costs, first.routes, first.dropped, t0 + time_limit_s)
        return dataclasses.replace(first, routes=routes, solve_time_s=time.monotonic() - t0)

    def _iterated_with_set_partitioning(self, p: RoutingProblem, costs: ArcCosts, t0: float,
                                        time_limit_s: float) -> SolveOutcome:
        """Iterated local search pooling the routes it visits, then set partitioning over the pool."""
        pool: dict[tuple[int, ...], int] = {}
        sp_s = min(SP_SHARE * time_limit_s, SP_MAX_S)
        ils = self._solve_once(p, costs, time_limit_s=max(time_limit_s - sp_s - (time.monotonic() - t0), 0.01),
                               iterated=True, route_pool=pool)
        if ils.status == "infeasible" or ils.dropped:
            return ils
        notes = [f"search to {time.monotonic() - t0:.2f} s"]
        if t0 + time_limit_s - time.monotonic() < sp_s / 2:
            # The search overran its limit (by 0.6 s once at cpu/wall 0.72): pooling and LP alone took 1 s
            # then, so the set partitioning would overrun the caller's limit as well.
            return dataclasses.replace(ils, solve_time_s=time.monotonic() - t0, message=notes[0] + "; no time left")
        dist = self._distance_units(costs)
        routes, info = self._set_partitioning(p, dist, pool, ils.routes, t0 + time_limit_s)
        notes.append(info)
        left = t0 + time_limit_s - time.monotonic()
        if left >= SP_POLISH_MIN_S:
            # CP-SAT mostly ends within 0.1-0.3 s of its reserve: search on from its plan, cold, keep the better.
            polish = self._solve_once(p, costs, time_limit_s=left, iterated=True, start_routes=routes, cold=True)
            if polish.status != "infeasible" and not polish.dropped:
                before = sum(self._route_cost(p, dist, r) for r in routes if r)
                after = sum(self._route_cost(p, dist, r) for r in polish.routes if r)
                notes.append(f"cold search {left:.2f} s: {before} -> {after}")
                if after < before:
                    routes = polish.routes
        return dataclasses.replace(ils, routes=routes, solve_time_s=time.monotonic() - t0, message="; ".join(notes))

    @property
    def _distance_scale(self) -> int:
        """Solver units per metre (instance units when ``exact_integer_costs``)."""
        return 1 if self.exact_integer_costs else DISTANCE_SCALE

    def _distance_units(self, costs: ArcCosts) -> list[list[int]]:
        """Arc distances in the solver's integer units, as the routing model counts them; Python ints, since
        indexing a list is ~10x faster than a numpy scalar lookup."""
        return np.rint(costs.distance_m * self._distance_scale).astype(np.int64).tolist()

    def _route_cost(self, p: RoutingProblem, dist: list[list[int]], route: Sequence[int]) -> int:
        """The objective of one route as the routing model counts it (distance objective, integer units)."""
        v = p.vehicles[0]
        path = [p.index_of(v.start_stop_id), *route] + ([p.index_of(v.end_stop_id)] if v.end_stop_id else [])
        fixed = int(round(v.fixed_cost * self._distance_scale)) if route else 0
        return int(sum(dist[a][b] for a, b in zip(path, path[1:], strict=False))) + fixed

    def _set_partitioning(self, p: RoutingProblem, dist: list[list[int]], pool: dict[tuple[int, ...], int],
                          best_routes: list[list[int]], deadline: float) -> tuple[list[list[int]], str]:
        """The cheapest set of pooled routes covering every customer exactly once with at most the fleet's
        vehicles (CP-SAT, hinted with ``best_routes``, until ``deadline``); ``best_routes`` if none cheaper is
        found. ``dist``: arc distances in solver units (_distance_units). Returns the routes (one per vehicle)
        and a note of pool size, costs and time."""
        from ortools.sat.python import cp_model

        t0 = time.monotonic()
        nv = len(p.vehicles)
        # One route per customer set, its cheapest order; ranked by the cost of the best solution it was in.
        by_set: dict[frozenset[int], tuple[int, int, tuple[int, ...]]] = {}
        for route, seen in pool.items():
            key = frozenset(route)
            cost = self._route_cost(p, dist, route)
            old = by_set.get(key)
            if old is not None:
                seen = min(seen, old[0])
                if old[1] <= cost:
                    cost, route = old[1], old[2]
            by_set[key] = (seen, cost, route)
        hint = {frozenset(r): (0, self._route_cost(p, dist, r), tuple(r)) for r in best_routes if r}
        hint_cost = sum(c for _, c, _ in hint.values())
        ranked = sorted((k for k in by_set if k not in hint), key=lambda k: by_set[k][0])[:SP_LP_CANDIDATES]
        candidates = [(k, *by_set[k][1:]) for k in ranked]
        customers = set(p.customers())
        reduced = self._reduced_costs(candidates + [(k, c, r) for k, (_, c, r) in hint.items()], customers, nv,
                                      max(deadline - time.monotonic(), 0.01) / 3)
        if reduced is not None:
            order = sorted(range(len(candidates)), key=lambda j: reduced[j])
            candidates = [candidates[j] for j in order]
        chosen = candidates[:SP_POOL_MAX] + [(k, c, r) for k, (_, c, r) in hint.items()]
        t_lp = time.monotonic() - t0
        model = cp_model.CpModel()
        x = [model.NewBoolVar(f"r{j}") for j in range(len(chosen))]
        covering: dict[int, list] = {}
        for j, (key, _, _) in enumerate(chosen):
            for i in key:
                covering.setdefault(i, []).append(x[j])
        for i, xs in covering.items():
            if i in customers:
                model.AddExactlyOne(xs)
            else:  # an optional node (an unused depot): at most once
                model.AddAtMostOne(xs)
        model.Add(sum(x) <= nv)
        model.Minimize(sum(c * xj for (_, c, _), xj in zip(chosen, x, strict=True)))
        for j, (key, _, _) in enumerate(chosen):
            model.AddHint(x[j], key in hint)
        t_build = time.monotonic() - t0
        if deadline - time.monotonic() < 0.03:
            return [list(r) for r in best_routes], f"set partitioning: no time left after {t_build:.2f} s"
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        # linearization 2 (the LP relaxation with cuts) solved pools of 600-1000 X-n101-k25 routes to optimality
        # in 0.3-0.9 s; the default level 1 found nothing better than the hint in 1 s.
        solver.parameters.linearization_level = 2
        solver.parameters.max_time_in_seconds = max(deadline - time.monotonic() - 0.02, 0.01)
        status = solver.Solve(model)
        routes = [list(r) for r in best_routes]
        value = hint_cost
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) and solver.ObjectiveValue() < hint_cost:
            picked = [list(chosen[j][2]) for j in range(len(chosen)) if solver.BooleanValue(x[j])]
            if sorted(i for r in picked for i in r if i in customers) == sorted(customers) and len(picked) <= nv:
                routes, value = picked + [[] for _ in range(nv - len(picked))], int(solver.ObjectiveValue())
        info = (f"set partitioning: pool {len(pool)} routes, {len(by_set)} customer sets, {len(chosen)} to CP-SAT; "
                f"{hint_cost} -> {value} ({solver.StatusName(status)}, {time.monotonic() - t0:.2f} s, "
                f"LP {t_lp:.2f} s, model {t_build:.2f} s)")
        return routes, info

    def _decompose(self, p: RoutingProblem, costs: ArcCosts, routes: list[list[int]], dropped: list[int],
                   deadline: float) -> list[list[int]]:
        """Re-solve groups of neighbouring routes (by centroid) until ``deadline``; keep improvements."""
        from carbon_ai_nodes.planning.routing_model import evaluate_routes

        rng = np.random.default_rng(0)
        routes = [list(r) for r in routes]
        best = evaluate_routes(p, costs, routes, dropped).objective_value
        xy = np.array([[s.x_m, s.y_m] for s in p.stops])
        inner = OrToolsRoutingSolver("tuned", self.exact_integer_costs)
        inner_limit = DECOMPOSE_INNER_LIMIT_S
        while deadline - time.monotonic() > 0.05:
            used = [k for k, r in enumerate(routes) if r]
            if len(used) < 2:
                break
            centroids = np.array([xy[routes[k]].mean(axis=0) for k in used])
            seed = int(rng.integers(len(used)))
            order = np.argsort(((centroids - centroids[seed]) ** 2).sum(axis=1))
            group = [used[i] for i in order[: min(DECOMPOSE_GROUP_ROUTES, len(used))]]
            spare = [k for k, r in enumerate(routes) if not r][:1]  # lets the group open a route if it pays
            vehicles = group + spare
            ends = {p.index_of(p.vehicles[k].end_stop_id) for k in vehicles if p.vehicles[k].end_stop_id}
            depots = sorted({p.index_of(p.vehicles[k].start_stop_id) for k in vehicles} | ends)
            nodes = depots + sorted(i for k in group for i in routes[k])
            local = {g: i for i, g in enumerate(nodes)}
            sub_p = dataclasses.replace(
                p, stops=tuple(p.stops[i] for i in nodes), vehicles=tuple(p.vehicles[k] for k in vehicles),
                distance_m=costs.distance_m[np.ix_(nodes, nodes)], speed_mps=None, allow_dropping=False)
            sub_c = ArcCosts(
                distance_m=costs.distance_m[np.ix_(nodes, nodes)], grade=costs.grade[np.ix_(nodes, nodes)],
                speed_mps=costs.speed_mps[np.ix_(vehicles, nodes, nodes)],
                time_s=costs.time_s[np.ix_(vehicles, nodes, nodes)],
                co2_empty_g=costs.co2_empty_g[np.ix_(vehicles, nodes, nodes)],
                co2_per_kg_g=costs.co2_per_kg_g[np.ix_(vehicles, nodes, nodes)])
            limit = min(inner_limit, deadline - time.monotonic())
            if limit < 0.02:
                break
            out = inner._solve_once(sub_p, sub_c, time_limit_s=limit, stall_cpu_s=DECOMPOSE_INNER_STALL_CPU_S,
                                    initial_routes=[[local[i] for i in routes[k]] for k in vehicles])
            if out.status == "infeasible" or out.dropped:
                continue
            trial = [list(r) for r in routes]
            for j, k in enumerate(vehicles):
                trial[k] = [nodes[i] for i in out.routes[j]]
            value = evaluate_routes(p, costs, trial, dropped).objective_value
            if value < best - 1e-9:
                routes, best = trial, value
        return routes

    def _solve_once(self, problem: RoutingProblem, costs: ArcCosts, *, time_limit_s: float,
                    initial_routes: Sequence[Sequence[int]] | None = None,
                    stall_cpu_s: float | None = None, iterated: bool = False,
                    route_pool: dict[tuple[int, ...], int] | None = None,
                    start_routes: Sequence[Sequence[int]] | None = None, cold: bool = False) -> SolveOutcome:
        """One OR-Tools solve within ``time_limit_s`` (s, counted from the call): build the model, set the
        search parameters, run the search (warm-started from ``initial_routes``, or the iterated search
        starting from ``start_routes``), and read the plan out of the assignment."""
        t0 = time.monotonic()
        if not (math.isfinite(time_limit_s) and time_limit_s > 0):
            raise SolverError(f"time_limit_s={time_limit_s!r}: must be finite and > 0")
        m = self._build_model(problem, costs)
        params = self._search_parameters(m, iterated=iterated, cold=cold, stall_cpu_s=stall_cpu_s,
                                         route_pool=route_pool)
        deadline = _Deadline(t0, time_limit_s)
        assignment = None
        if initial_routes is not None:
            assignment = self._run_from_routes(m, params, initial_routes, deadline)
        if assignment is None:
            assignment = self._run_search(m, params, deadline, iterated=iterated, start_routes=start_routes)
        return self._outcome(m, assignment, time.monotonic() - t0, time_limit_s, iterated=iterated)

    def _build_model(self, p: RoutingProblem, costs: ArcCosts) -> _Model:
        """The routing model of ``p``: nodes, arc costs, load and time dimensions, optional visits."""
        from ortools.constraint_solver import pywrapcp

        n, nv = p.n, len(p.vehicles)
        open_end = n  # a virtual node reached at zero cost from anywhere: the end of open routes
        starts = [p.index_of(v.start_stop_id) for v in p.vehicles]
        ends = [p.index_of(v.end_stop_id) if v.end_stop_id else open_end for v in p.vehicles]
        size = n + 1 if open_end in ends else n
        manager = pywrapcp.RoutingIndexManager(size, nv, starts, ends)
        routing = pywrapcp.RoutingModel(manager)
        node_of = [manager.IndexToNode(i) for i in range(routing.Size() + nv)]
        m = _Model(p, manager, routing, size, starts, ends, node_of)
        time_cbs = self._set_arc_costs(m, costs)
        _add_load_dimensions(m, costs)
        _add_time_dimension(m, time_cbs)
        _add_optional_visits(m)
        return m

    def _set_arc_costs(self, m: _Model, costs: ArcCosts) -> list[int]:
        """Register the cost matrices, set the objective's arc costs and the fixed vehicle costs (in its
        integer units, stored in ``m.unit``); returns the per-vehicle time callbacks."""
        p, routing, nv = m.problem, m.routing, len(m.problem.vehicles)
        dist_scale = self._distance_scale
        m.dist_int = m.pad(np.rint(costs.distance_m * dist_scale).astype(np.int64))
        service_ms = np.array([s.service_s for s in p.stops] + [0.0] * (m.size - p.n)) * TIME_SCALE
        time_int = [m.pad(np.rint(costs.time_s[k] * TIME_SCALE).astype(np.int64))
                    + np.rint(service_ms).astype(np.int64)[:, None] for k in range(nv)]
        co2_int = [m.pad(np.rint(costs.co2_empty_g[k] * CO2_SCALE).astype(np.int64)) for k in range(nv)]
        dist_cb = m.register(m.dist_int)
        time_cbs = [m.register(matrix) for matrix in time_int]
        if p.objective == "distance":
            routing.SetArcCostEvaluatorOfAllVehicles(dist_cb)
            m.unit = dist_scale
        elif p.objective == "time":
            for k in range(nv):
                routing.SetArcCostEvaluatorOfVehicle(time_cbs[k], k)
            m.unit = TIME_SCALE
        else:
            for k in range(nv):
                routing.SetArcCostEvaluatorOfVehicle(m.register(co2_int[k]), k)
            m.unit = CO2_SCALE
        for k, v in enumerate(p.vehicles):
            if v.fixed_cost > 0:
                routing.SetFixedCostOfVehicle(int(round(v.fixed_cost * m.unit)), k)
        return time_cbs

    def _search_parameters(self, m: _Model, *, iterated: bool, cold: bool, stall_cpu_s: float | None,
                           route_pool: dict[tuple[int, ...], int] | None) -> Any:
        """The search parameters (time limit set later), plus the solution callbacks: stop on a stalled
        best cost after ``stall_cpu_s`` of CPU time, and collect routes into ``route_pool``."""
        from ortools.constraint_solver import pywrapcp, routing_enums_pb2

        p, routing = m.problem, m.routing
        params = self._parameters(p, m.has_windows, pywrapcp, routing_enums_pb2, iterated=iterated)
        if iterated and cold:
            # A short search from a good plan: anneal at the final temperature only (re-heating would lose it).
            mean_arc = float(m.dist_int[:p.n, :p.n].mean()) if p.objective == "distance" else 0.0
            sa = params.iterated_local_search_parameters.reference_solution_acceptance_strategy.simulated_annealing
            if mean_arc > 0:
                sa.automatic_temperatures = False
                sa.initial_temperature = sa.final_temperature = ILS_COLD * mean_arc
        if stall_cpu_s is not None:
            _stop_when_stalled(routing, stall_cpu_s)
        if route_pool is not None:
            self._collect_routes(routing, m.node_of, route_pool)
        return params

    @staticmethod
    def _run_from_routes(m: _Model, params: Any, initial_routes: Sequence[Sequence[int]],
                         deadline: _Deadline) -> Any:
        """Guided local search warm-started from ``initial_routes``; None when they do not fit the model."""
        p, routing, nv = m.problem, m.routing, len(m.problem.vehicles)
        remaining = deadline.apply(params)
        routes = [[int(i) for i in r if 0 <= int(i) < p.n and not p.stops[int(i)].is_depot]
                  for r in list(initial_routes)[:nv]]
        routes += [[] for _ in range(nv - len(routes))]
        # Reading the warm start runs under the limit the model is closed with: on a loaded machine a
        # replan's last 10 ms ran out while it was read, and the cold search left found no plan at all.
        # Reading is bounded work, so it gets WARM_START_READ_S; the search then gets what is left.
        read_params = type(params)()
        read_params.CopyFrom(params)
        read_params.time_limit.FromMilliseconds(int(max(remaining, WARM_START_READ_S) * 1000))
        routing.CloseModelWithParameters(read_params)
        initial = routing.ReadAssignmentFromRoutes(routes, True)
        if initial is None:
            return None
        deadline.apply(params)
        assignment = routing.SolveFromAssignmentWithParameters(initial, params)
        if assignment is None:
            # The limit hit before the search even accepted the warm start (a replan's ~100 ms on a
            # loaded machine): ReadAssignmentFromRoutes has checked the warm start against the
            # model, so it is the best plan known, not a reason to report no plan.
            assignment = initial
        return assignment

    @staticmethod
    def _run_search(m: _Model, params: Any, deadline: _Deadline, *, iterated: bool,
                    start_routes: Sequence[Sequence[int]] | None) -> Any:
        """The search without a warm start (guided local search, or the iterated search, whose first
        solution is ``start_routes`` when given); the assignment, or None when it found no plan."""
        routing, nv = m.routing, len(m.problem.vehicles)
        deadline.apply(params)
        if iterated and start_routes is not None:
            # The iterated local search has no warm start, but its first solution strategy extends locked
            # route prefixes: locking every route whole makes the given plan its first solution. The locks
            # bind only that first solution; the search then changes the routes freely.
            routing.CloseModelWithParameters(params)
            locks = [[m.manager.NodeToIndex(int(i)) for i in r] for r in start_routes if r]
            routing.ApplyLocksToAllVehicles(locks + [[] for _ in range(nv - len(locks))], False)
            deadline.apply(params)
        if iterated:
            return routing.SolveWithIteratedLocalSearch(params)
        return routing.SolveWithParameters(params)

    @staticmethod
    def _outcome(m: _Model, assignment: Any, elapsed_s: float, time_limit_s: float, *,
                 iterated: bool) -> SolveOutcome:
        """The routes (stop indices per vehicle), dropped customers and status read from ``assignment``."""
        from ortools.constraint_solver import routing_enums_pb2

        p, routing, nv = m.problem, m.routing, len(m.problem.vehicles)
        status_code = routing.status()
        if iterated and assignment is not None:
            # SolveWithIteratedLocalSearch leaves the status unset; a plan it returns has had its full time.
            status_code = routing_enums_pb2.RoutingSearchStatus.ROUTING_SUCCESS
        if assignment is None:
            reason = "no feasible plan (capacity, time windows or fleet size)"
            if status_code in (routing_enums_pb2.RoutingSearchStatus.ROUTING_FAIL_TIMEOUT,):
                reason = f"no feasible plan found within {time_limit_s:.3g} s"
            return SolveOutcome([[] for _ in range(nv)], [], "infeasible", elapsed_s, reason)
        out_routes = []
        visited = set()
        for k in range(nv):
            idx = assignment.Value(routing.NextVar(routing.Start(k)))
            route = []
            while not routing.IsEnd(idx):
                route.append(m.node_of[idx])
                visited.add(m.node_of[idx])
                idx = assignment.Value(routing.NextVar(idx))
            out_routes.append(route)
        dropped = [i for i in p.customers() if i not in visited]
        status = {
            routing_enums_pb2.RoutingSearchStatus.ROUTING_OPTIMAL: "optimal",
            routing_enums_pb2.RoutingSearchStatus.ROUTING_SUCCESS: "feasible",
        }.get(status_code, "deadline")
        return SolveOutcome(out_routes, dropped, status, elapsed_s)

    @staticmethod
    def _reduced_costs(columns: list[tuple[frozenset[int], int, tuple[int, ...]]], customers: set[int], nv: int,
                       limit_s: float) -> list[float] | None:
        """Reduced costs of the routes in the LP relaxation of the set partitioning (GLOP), None if unsolved."""
        from ortools.linear_solver import pywraplp

        lp = pywraplp.Solver.CreateSolver("GLOP")
        lp.SetTimeLimit(max(int(limit_s * 1000), 1))
        xs = [lp.NumVar(0.0, 1.0, "") for _ in columns]
        rows: dict[int, Any] = {}  # GLOP constraints (OR-Tools ships no type information)
        fleet = lp.Constraint(0.0, float(nv))
        objective = lp.Objective()
        for x, (key, cost, _) in zip(xs, columns, strict=True):
            for i in key:
                if i not in rows:
                    rows[i] = lp.Constraint(1.0 if i in customers else 0.0, 1.0)
                rows[i].SetCoefficient(x, 1.0)
            fleet.SetCoefficient(x, 1.0)
            objective.SetCoefficient(x, float(cost))
        objective.SetMinimization()
        if lp.Solve() != pywraplp.Solver.OPTIMAL:
            return None
        return [x.reduced_cost() for x in xs]

    @staticmethod
    def _collect_routes(routing, node_of: list[int], pool: dict[tuple[int, ...], int]) -> None:
        """Put the routes (stop indices) of every solution within POOL_SLACK of the best cost so far into
        ``pool``, each with the cost of the cheapest solution it was seen in."""
        nexts = [routing.NextVar(i) for i in range(routing.Size())]
        starts = [routing.Start(k) for k in range(routing.vehicles())]
        size = routing.Size()  # end indices are >= Size()
        best = [math.inf]

        def on_solution() -> None:
            value = routing.CostVar().Value()  # exists only once the model is closed
            best[0] = min(best[0], value)
            if value > best[0] * (1 + POOL_SLACK):
                return
            nxt = [v.Value() for v in nexts]
            for s in starts:
                idx, route = nxt[s], []
                while idx < size:
                    route.append(node_of[idx])
                    idx = nxt[idx]
                if route:
                    key = tuple(route)
                    if pool.get(key, math.inf) > value:
                        pool[key] = value

        routing.AddAtSolutionCallback(on_solution)

    def _parameters(self, p: RoutingProblem, has_windows: bool, pywrapcp, enums, iterated: bool = False):
        params = pywrapcp.DefaultRoutingSearchParameters()
        params.log_search = self.log_search
        fss = enums.FirstSolutionStrategy
        meta = enums.LocalSearchMetaheuristic
        if self.search == "plain":
            params.first_solution_strategy = fss.PATH_CHEAPEST_ARC
            params.local_search_metaheuristic = meta.GUIDED_LOCAL_SEARCH
            return params
        # Measured on E-n101-k8, M-n101-k10, X-n101-k25, X-n106-k14 at 5 s (bench/bench_routing.py and
        # single-setting runs): parallel cheapest insertion builds a far better start than cheapest-arc or
        # savings for capacitated fleets, and guided local search is the best OR-Tools metaheuristic here.
        # Tried and left at their defaults because they measured worse or no different: SAVINGS start
        # (+2 points), local cheapest insertion (worse), sequential cheapest insertion (mixed), tabu search
        # and simulated annealing (+1 to +20 points: stuck near the first local optimum), alternating GLS
        # with tabu/annealing (no change), GLS lambda 0.05/0.2/0.3 (no change), ls_operator_neighbors_ratio
        # 0.1-0.3 with min 10-20 neighbours (+4 to +50 points), switching off the pickup/delivery,
        # active/inactive and LNS operators that plain CVRP cannot use (no change), the multi-armed-bandit
        # operator order (worse), solver-internal distance scaling x1000 (no change). (An earlier note said
        # OR-Tools' iterated local search ended at the first local optimum: SolveWithParameters ignores
        # use_iterated_local_search; SolveWithIteratedLocalSearch runs it, see _iterated_local_search.)
        params.first_solution_strategy = fss.PARALLEL_CHEAPEST_INSERTION
        params.local_search_metaheuristic = meta.GUIDED_LOCAL_SEARCH
        if iterated:
            self._iterated_local_search(params, fss, meta)
        return params

    @staticmethod
    def _iterated_local_search(params, fss, meta) -> None:
        """Turn ``params`` into the cold tuned search: local search to the first local optimum, then SISR
        ruin-and-recreate with simulated-annealing acceptance until the time limit."""
        # Mean gap on E-n101-k8, M-n101-k10, X-n101-k25, X-n106-k14 at 5 s on a shared machine: 1.0-1.5 %
        # against 2.1-2.3 % for the guided-local-search decomposition (bench/bench_routing.py and
        # single-setting runs). Rejected: local search on every recreated solution
        # (improve_perturbed_solution: ~40 ms each, ~100 iterations in 5 s instead of ~3000; 2.6-3.0 %),
        # greedy acceptance (1.7-1.8 %), a random or largest-demand-first reinsertion order (M-n101-k10 stuck
        # at +15 %, X-n101-k25 at +5 %), cheapest insertion with neighbour lists, local cheapest cost insertion
        # or savings as the recreate heuristic (2.4-6 %), savings, cheapest-arc or local cheapest insertion as
        # the first solution (1.7-2.6 % against 1.2 %), mixing in random-walk ruins (1.7 %), fixed annealing
        # temperatures (0.05-0.3 x the mean arc cost falling to 1/10-1/100 of that: 1.2-1.6 % against 1.2 %
        # for OR-Tools' automatic ones), guided local search from the best solution for the last second (no
        # better).
        # Also rejected (2026-12-01; median of 3 stop orders at the iteration count an idle core reaches in
        # 5 s, E / M / X-n101-k25 / X-n106-k14 %, against 0.86 / 0.00 / 2.37 / 1.42 for this setting; seeds
        # differ by about +-0.5 points): local search after each recreate with only relocate, exchange, 2-opt,
        # or-opt and cross (1.10 / 0.49 / 2.88 / 1.95), with ls_operator_neighbors_ratio 0.1 (+8 to +39 %),
        # cooler or linear annealing schedules (1.35 / 0-0.61 / 1.92-2.08 / 1.25-1.77), re-heated restarts from
        # the best every half or quarter of the run (1.23-1.96 / 0.00 / 1.89-2.22 / 1.43-1.50), smaller ruins
        # (8 or 11 removed: X-n101-k25 2.09-2.11), re-solving groups of 4 routes in the last 30-50 % of the
        # limit (1.35-2.21 / 0.00 / 2.09-2.28 / 1.59-2.12), a close- or far-first reinsertion order (ignored
        # by OR-Tools 9.15: identical plans). More search does not close the gap either: twice and four times
        # the iterations end at X-n101-k25 1.77 / 2.08 %, X-n106-k14 1.54 / 1.34 %; so neither does a second
        # process (a 2-process portfolio with a shared best, sent through route locks as OR-Tools' iterated
        # search has no warm start: 1.10 / 0.00 / 2.06 / 1.38 at fixed iterations, no better than one process at
        # 5 s on the shared machine). An iteration costs ~1.4 ms of CPU on X-n101-k25, ~1 ms of it fixed.
        # What did close X-n101-k25's gap: recombining the visited routes by set partitioning (see SP_SHARE).
        # X-n106-k14 alone (2026-12-01 evening, medians of 3-6 runs each at 5 s on an idle core; this setting's median
        # there 1.46 %). Its optimum packs 13 routes to 575-600 of 600 and leaves one of 2 customers; a 1.5 % plan
        # shares 57 of its 119 edges, a different basin. Rejected: capacity as a soft bound (10-30 per demand unit over,
        # 5-20 % slack, pooling feasible routes only: 1.54-1.73 %), demand-first or random insertion order (1.63 /
        # 1.72), SISR removals 8-25 with strings 8-15 (1.48-1.98), an added ruin of 1-3 whole close routes or a random
        # walk (1.44-1.67; one 1.18 not repeated: 1.58 next), fixed temperatures 10-300 falling 30-100x (1.56-1.74), 2-6
        # shorter searches from shuffled stop orders sharing one pool (1.34-1.82), guided local search from the best for
        # 1 s feeding the pool (1.52), set covering instead of partitioning (CP-SAT unsolved in 3 s), all ~3,800 pooled
        # sets to CP-SAT for 30 s (26858 -> 26830), and columns priced by LP duals (4 rounds of reduced-cost descent: LP
        # 25955 -> 25569, no cheaper integer plan). A Christofides first solution gave X-n106-k14 1.02-1.21 % but
        # E-n101-k8 2.09 % and X-n101-k25 1.33 %; its local optimum is the worse one there (3.73 % against 2.76 %), so
        # no rule could pick it per instance. Nor did both at once: two processes on two cores, one search from each
        # start, their pools joined: 1.07-1.32 % (5 runs).
        params.local_search_metaheuristic = meta.GREEDY_DESCENT
        params.use_iterated_local_search = True
        ils = params.iterated_local_search_parameters
        ruin = ils.ruin_recreate_parameters
        sisr = ruin.ruin_strategies.add().sisr
        sisr.avg_num_removed_visits = SISR_AVG_REMOVED
        sisr.max_removed_sequence_size = SISR_MAX_STRING
        sisr.bypass_factor = SISR_BYPASS
        ruin.recreate_strategy.heuristic = fss.LOCAL_CHEAPEST_INSERTION
        ils.improve_perturbed_solution = False
        ils.reference_solution_acceptance_strategy.simulated_annealing.automatic_temperatures = True
