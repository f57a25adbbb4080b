"""`carbon-ai plan` on public VRPLIB instances (vrplib parser, TSPLIB rounding), and clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import REPO

from carbon_ai_nodes.planning.vrplib_io import read_instance

DATA = REPO / "test" / "data" / "vrplib"


def carbon_ai(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_instance_reading_rounds_euc_2d_and_finds_the_best_known_cost():
    inst = read_instance(DATA / "A-n32-k5.vrp")
    assert inst.best_known_cost == 784.0  # from the COMMENT line
    d = inst.problem.distance_m
    assert (d == d.round()).all()
    x = read_instance(DATA / "X-n106-k14.vrp")
    assert x.best_known_cost == 26362.0  # from the sibling .sol


def test_plan_json_is_feasible_and_close_to_optimal_on_a_n32_k5():
    result = carbon_ai("plan", "--vrplib", str(DATA / "A-n32-k5.vrp"), "--time-limit", "2", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"cost", "routes", "solve_time_s"} <= out.keys()
    customers = sorted(c for r in out["routes"] for c in r)
    assert customers == list(range(2, 33))  # ids as numbered in the file; depot 1 not listed
    demand = {i + 1: d for i, d in enumerate(
        [0, 19, 21, 6, 19, 7, 12, 16, 6, 16, 8, 14, 21, 16, 3, 22, 18, 19, 1, 24, 8, 12, 4, 8, 24, 24, 2, 20, 15, 2,
         14, 9])}
    assert all(sum(demand[c] for c in r) <= 100 for r in out["routes"])
    assert out["cost"] <= 784 * 1.03


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("NAME : bad\nTYPE : CVRP\nDIMENSION : 3\nEDGE_WEIGHT_TYPE : EUC_2D\nCAPACITY : 10\n"
         "NODE_COORD_SECTION\n1 0 0\n2 1 x\nEOF\n", "not a valid VRPLIB instance"),
        ("NAME : inf\nTYPE : CVRP\nDIMENSION : 3\nEDGE_WEIGHT_TYPE : EUC_2D\nCAPACITY : 10\nNODE_COORD_SECTION\n"
         "1 0 0\n2 1 1\n3 2 2\nDEMAND_SECTION\n1 0\n2 5\n3 50\nDEPOT_SECTION\n1\n-1\nEOF\n",
         "exceeds the largest vehicle capacity"),
    ],
    ids=["malformed", "infeasible"],
)
def test_bad_instances_fail_cleanly(tmp_path, content, message):
    path = tmp_path / "x.vrp"
    path.write_text(content)
    result = carbon_ai("plan", "--vrplib", str(path), "--time-limit", "0.5")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert message in result.stderr


def test_missing_file_and_bad_time_limit():
    assert "no such file" in carbon_ai("plan", "--vrplib", "/nonexistent.vrp").stderr
    result = carbon_ai("plan", "--vrplib", str(DATA / "A-n32-k5.vrp"), "--time-limit", "-1")
    assert result.returncode == 2 and "argument --time-limit: -1 s: must be > 0" in result.stderr


def _costs(problem):
    from carbon_ai_nodes.planning.routing_model import arc_costs, placeholder_cruise_co2_g_per_m

    return arc_costs(problem, lambda p, v, g, m: placeholder_cruise_co2_g_per_m(1e4, v, g, m))


def _gap_pct(inst, out) -> float:
    from carbon_ai_nodes.planning.routing_model import evaluate_routes, plan_violations

    plan = evaluate_routes(inst.problem, _costs(inst.problem), out.routes, out.dropped)
    assert not plan_violations(inst.problem, plan)
    return (plan.distance_m / inst.best_known_cost - 1.0) * 100.0


def test_bks_table_overrides_a_stale_comment():
    # The E-n101-k8 file's COMMENT still quotes 817; the proven optimum is 815 (bks.json).
    inst = read_instance(DATA / "E-n101-k8.vrp")
    assert inst.best_known_cost == 815.0
    assert len(inst.problem.customers()) == 100


def test_plain_search_is_the_textbook_setting():
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver

    inst = read_instance(DATA / "A-n32-k5.vrp")
    params = OrToolsRoutingSolver("plain")._parameters(inst.problem, False, pywrapcp, routing_enums_pb2)
    assert params.first_solution_strategy == routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    assert params.local_search_metaheuristic == routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH


def test_stall_limit_ends_a_converged_search_early():
    from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver

    inst = read_instance(DATA / "A-n32-k5.vrp")
    costs = _costs(inst.problem)
    cpu0 = time.process_time()
    out = OrToolsRoutingSolver("tuned", exact_integer_costs=True)._solve_once(
        inst.problem, costs, time_limit_s=20.0, stall_cpu_s=0.05)
    # the CPU-time stall stop fired, not the 20 s wall limit (CPU time: a loaded machine stretches wall time)
    assert time.process_time() - cpu0 < 10.0
    assert out.status != "infeasible" and _gap_pct(inst, out) < 5.0


def test_tuned_search_reaches_the_optimum_of_a_n32_k5_within_2_s():
    from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver

    inst = read_instance(DATA / "A-n32-k5.vrp")
    cpu0 = time.process_time()
    out = OrToolsRoutingSolver("tuned", exact_integer_costs=True).solve(
        inst.problem, _costs(inst.problem), time_limit_s=2.0)
    # it stopped at its own (wall-clock, one-thread) limit: no more CPU than that, however loaded the machine
    assert time.process_time() - cpu0 < 2.5
    assert _gap_pct(inst, out) <= 1.0


def test_tuned_cold_search_iterates_past_the_first_local_optimum():
    # The tuned start (parallel cheapest insertion + local search) stops at 863 (+5.9 %) on E-n101-k8 and
    # guided local search at +3.3 % within 5 s; OR-Tools' iterated local search gets to ~+2 % within 1 s on an
    # idle core. RoutingModel.SolveWithParameters silently ignores use_iterated_local_search, so a search
    # that only sets the flag would stay at +5.9 %.
    from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver

    inst = read_instance(DATA / "E-n101-k8.vrp")
    cpu0 = time.process_time()
    out = OrToolsRoutingSolver("tuned", exact_integer_costs=True).solve(
        inst.problem, _costs(inst.problem), time_limit_s=1.5)
    assert time.process_time() - cpu0 < 2.5  # stopped at its own limit (CPU time: see above)
    assert out.status == "feasible"
    # past the first local optimum (+5.9 %) with a margin; how far it gets in how long is bench_routing.py's
    # figure (a busy machine leaves the search a fraction of its 1.5 s: +4.5 % was missed under load)
    assert _gap_pct(inst, out) < 5.0


@pytest.mark.slow
def test_tuned_search_on_a_100_customer_instance_within_5_s():
    from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver

    inst = read_instance(DATA / "M-n101-k10.vrp")
    costs = _costs(inst.problem)
    cpu0 = time.process_time()
    out = OrToolsRoutingSolver("tuned", exact_integer_costs=True).solve(inst.problem, costs, time_limit_s=5.0)
    # Stopped at its own (wall-clock) limit, by its own clock started at entry...
    assert out.solve_time_s < 5.3, out.message
    # ... and no work hidden outside it (CPU time, which a loaded machine does not stretch): the first solve in a
    # process also loads OR-Tools' modules (0.4 s on the 2-core VM), so 1 s over the limit, not 0.5.
    assert time.process_time() - cpu0 < 6.0
    # 0-0.5 % on an idle core, 1.1 % within 0.3 s; the textbook setting stays at 2.6 %. Loose for shared
    # CI runners, where the solver may get a small share of a core.
    assert _gap_pct(inst, out) <= 3.0


def test_set_partitioning_recombines_pooled_routes_and_never_worsens_the_hint():
    # The tuned cold search ends with a set partitioning (CP-SAT) over the routes it visited, hinted with its
    # best plan. Given a pool holding X-n106-k14's optimal routes next to a worse plan's, it must pick the
    # optimum (26362), every customer exactly once, from pooled routes only; given only the hint's own routes
    # and single-customer routes, it must return a plan no worse than the hint.
    from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver, _set_partitioning_applies

    inst = read_instance(DATA / "X-n106-k14.vrp")
    p = inst.problem
    assert _set_partitioning_applies(p)
    index = {s.stop_id: i for i, s in enumerate(p.stops)}
    optimum = [[index[str(int(c) + 1)] for c in line.split(":")[1].split()]
               for line in (DATA / "X-n106-k14.sol").read_text().splitlines() if line.startswith("Route")]
    solver = OrToolsRoutingSolver("tuned", exact_integer_costs=True)
    costs = _costs(p)
    hint = solver.solve(p, costs, time_limit_s=0.3).routes  # below SP_MIN_LIMIT_S: the search alone
    dist = solver._distance_units(costs)
    hint_cost = sum(solver._route_cost(p, dist, r) for r in hint if r)
    pool = {tuple(r): 26362 for r in optimum} | {tuple(r): hint_cost for r in hint if r}
    routes, info = solver._set_partitioning(p, dist, pool, hint, time.monotonic() + 5.0)
    assert sorted(i for r in routes for i in r) == p.customers(), info
    assert len(routes) == len(p.vehicles) and all(tuple(r) in pool for r in routes if r)
    assert sum(solver._route_cost(p, dist, r) for r in routes if r) == 26362, info

    singles = {(i,): hint_cost for i in p.customers()} | {tuple(r): hint_cost for r in hint if r}
    routes, info = solver._set_partitioning(p, dist, singles, hint, time.monotonic() + 5.0)
    assert sorted(i for r in routes for i in r) == p.customers(), info
    assert sum(solver._route_cost(p, dist, r) for r in routes if r) <= hint_cost


def test_set_partitioning_is_skipped_where_pooled_routes_do_not_recombine():
    # A route's CO2 depends on the load it carries, windows and unlike vehicles make a route's feasibility
    # depend on its vehicle: the set partitioning would assume what does not hold.
    import dataclasses

    from carbon_ai_nodes.planning.ortools_routing import _set_partitioning_applies

    p = read_instance(DATA / "A-n32-k5.vrp").problem
    assert _set_partitioning_applies(p)
    assert not _set_partitioning_applies(dataclasses.replace(p, objective="co2"))
    assert not _set_partitioning_applies(dataclasses.replace(p, allow_dropping=True))
    windowed = (p.stops[0], dataclasses.replace(p.stops[1], window_close_s=3600.0), *p.stops[2:])
    assert not _set_partitioning_applies(dataclasses.replace(p, stops=windowed))
    unlike = (dataclasses.replace(p.vehicles[0], capacity_kg=p.vehicles[0].capacity_kg / 2), *p.vehicles[1:])
    assert not _set_partitioning_applies(dataclasses.replace(p, vehicles=unlike))


def test_tuned_cold_solve_ends_with_the_set_partitioning_within_its_limit():
    from carbon_ai_nodes.planning.ortools_routing import SP_MIN_LIMIT_S, OrToolsRoutingSolver

    inst = read_instance(DATA / "A-n32-k5.vrp")
    cpu0 = time.process_time()
    out = OrToolsRoutingSolver("tuned", exact_integer_costs=True).solve(
        inst.problem, _costs(inst.problem), time_limit_s=SP_MIN_LIMIT_S)
    assert "set partitioning" in out.message and out.status == "feasible"
    assert time.process_time() - cpu0 < SP_MIN_LIMIT_S + 1.0  # within its limit (CPU time: see above)
    assert _gap_pct(inst, out) <= 3.0  # 784 (0 %) at 1 s and 3 s on an idle core, 2026-12-01
