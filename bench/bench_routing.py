"""Planner benchmark: gap to the best known cost on public VRPLIB instances at 1 s and 5 s (median of a few
runs), for the planner's tuned OR-Tools search next to the textbook setting (cheapest arc + guided local
search) measured in the same run; and the wall time of warm-started 50-stop replans against the deadline.

    python bench/bench_routing.py                        # every instance in test/data/vrplib, 1 s and 5 s, 3 runs
    python bench/bench_routing.py --runs 5 --json        # one JSON object on stdout
    python bench/bench_routing.py --instances test/data/vrplib/E-n101-k8.vrp --limits 5 --replans 0
    python bench/bench_routing.py --limits 5 --replans 0 --settings tuned tuned-nosp   # with/without set partitioning

Time limits are wall clock, model building included. The machine is shared and noisy, so each cell is the
median over ``--runs`` runs with the settings interleaved, and ``cpu/wall`` reports the share of a core
the solver process actually got (1.0 = an idle core): compare the two settings within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


SETTINGS = ("plain", "tuned", "tuned-nosp")  # tuned-nosp: the tuned search without its set-partitioning step


def gap_table(files: list[Path], limits: list[float], runs: int, plot: str | None, quiet: bool,
              searches: tuple[str, ...] = ("plain", "tuned")) -> dict:
    """Median gap (%) per instance, setting and limit; prints the table unless ``quiet``; returns it."""
    # Imported before timing, so neither setting pays the one-off import inside its time limit.
    from ortools.constraint_solver import pywrapcp  # noqa: F401
    from ortools.sat.python import cp_model  # noqa: F401  (the tuned search's set partitioning; 0.4-0.5 s)

    from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver
    from carbon_ai_nodes.planning.routing_model import (
        arc_costs,
        evaluate_routes,
        placeholder_cruise_co2_g_per_m,
        plan_violations,
    )
    from carbon_ai_nodes.planning.vrplib_io import read_instance

    result: dict = {}
    wall_total = cpu_total = 0.0
    wall_of = dict.fromkeys(searches, 0.0)
    cpu_of = dict.fromkeys(searches, 0.0)
    for f in files:
        inst = read_instance(f)
        costs = arc_costs(inst.problem, lambda p, v, g, m: placeholder_cruise_co2_g_per_m(1e4, v, g, m))
        gaps: dict[tuple[str, float], list[float]] = {}
        best_plan = None
        for run in range(runs):
            for limit in limits:
                for search in searches:  # interleaved, so both settings see the same machine load
                    print(f"  {inst.name}: {search} {limit:g} s run {run + 1}/{runs} ...", file=sys.stderr,
                          flush=True)
                    w0, c0 = time.monotonic(), time.process_time()
                    solver = OrToolsRoutingSolver(search.split("-")[0], exact_integer_costs=True,
                                                  set_partitioning=search != "tuned-nosp")
                    out = solver.solve(inst.problem, costs, time_limit_s=limit)
                    wall, cpu = time.monotonic() - w0, time.process_time() - c0
                    wall_total += wall
                    cpu_total += cpu
                    wall_of[search] += wall
                    cpu_of[search] += cpu
                    plan = evaluate_routes(inst.problem, costs, out.routes, out.dropped)
                    problems = plan_violations(inst.problem, plan)
                    assert not problems, problems[:3]
                    gap = (plan.distance_m / inst.best_known_cost - 1) * 100 \
                        if math.isfinite(inst.best_known_cost) else math.nan
                    gaps.setdefault((search, limit), []).append(gap)
                    print(f"    gap {gap:.2f} %, wall {wall:.2f} s, cpu {cpu:.2f} s {out.message}", file=sys.stderr,
                          flush=True)
                    if search.startswith("tuned") and limit == max(limits) and (best_plan is None or
                                                                       plan.distance_m < best_plan[0].distance_m):
                        best_plan = (plan, gap)
        result[inst.name] = {
            "customers": len(inst.problem.customers()), "best_known_cost": inst.best_known_cost,
            **{search: {f"{limit:g}s": round(statistics.median(gaps[(search, limit)]), 2) for limit in limits}
               for search in searches},
            "runs": {f"{search}@{limit:g}s": [round(g, 2) for g in gaps[(search, limit)]]
                     for search in searches for limit in limits},
        }
        if plot and f == files[-1] and best_plan is not None:
            from carbon_ai_nodes.commands.plan import _plot

            _plot(inst.problem, best_plan[0], plot, f"{inst.name} tuned {max(limits):g} s: "
                                                     f"{best_plan[0].distance_m:g} (gap {best_plan[1]:.2f} %)")
    share = cpu_total / wall_total if wall_total > 0 else math.nan
    if not quiet and result:
        heads = [f"{s} {limit:g}s" for s in searches for limit in limits]
        print(f"median gap % to the best known cost over {runs} runs (cpu/wall {share:.2f}: "
              + ", ".join(f"{s} {cpu_of[s] / wall_of[s]:.2f}" for s in searches if wall_of[s] > 0) + ")")
        print(f"{'instance':<12} {'n':>4} {'BKS':>7} " + " ".join(f"{h:>10}" for h in heads))
        for name, row in result.items():
            cells = [row[s][f"{limit:g}s"] for s in searches for limit in limits]
            print(f"{name:<12} {row['customers']:>4} {row['best_known_cost']:>7g} "
                  + " ".join(f"{c:>10.2f}" for c in cells))
        for s in searches:
            for limit in limits:
                mean = statistics.mean(r[s][f"{limit:g}s"] for r in result.values())
                print(f"mean of medians, {s} {limit:g} s: {mean:.2f} %")
    return {"instances": result, "cpu_per_wall": round(share, 2), "runs": runs, "limits_s": limits}


def replan_latency(n_stops: int, deadline_s: float, repeats: int, quiet: bool) -> dict:
    """Wall time of warm-started replans of an ``n_stops`` CO2 problem after one stop is added."""
    from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver
    from carbon_ai_nodes.planning.routing_model import (
        REPLAN_SOLVER_SHARE,
        RoutingProblem,
        Stop,
        Vehicle,
        arc_costs,
        placeholder_cruise_co2_g_per_m,
        plan_routes,
        plan_violations,
        replan_routes,
    )

    rng = random.Random(1)
    stops = [Stop("depot", 0.0, 0.0, is_depot=True)]
    stops += [Stop(f"c{i}", rng.uniform(-3000, 3000), rng.uniform(-3000, 3000), demand_kg=-rng.uniform(20, 200),
                   service_s=60.0) for i in range(n_stops)]
    fleet = tuple(Vehicle(f"v{k}", 1500.0, "depot", "depot", cruise_speed_mps=12.0) for k in range(6))
    problem = RoutingProblem(tuple(stops), fleet, objective="co2")

    def co2(p, v, g, m):
        return placeholder_cruise_co2_g_per_m(3500.0, v, g, m)

    solver = OrToolsRoutingSolver()
    plan, base = plan_routes(problem, solver, arc_costs(problem, co2), time_limit_s=2.0)
    walls, bare = [], []
    failed = 0
    for i in range(repeats):
        print(f"  replan {i + 1}/{repeats} ...", file=sys.stderr, flush=True)
        old_ids = [s.stop_id for s in problem.stops]
        changed = problem.with_stop(Stop(f"new{i}", rng.uniform(-3000, 3000), rng.uniform(-3000, 3000),
                                         demand_kg=-50.0))
        t0 = time.monotonic()
        costs = arc_costs(changed, co2)
        replan, _ = replan_routes(changed, solver, costs, current_routes=plan.customer_routes(), baseline_routes=base,
                                  old_ids=old_ids, time_limit_s=deadline_s * REPLAN_SOLVER_SHARE)
        walls.append(time.monotonic() - t0)
        if replan.status == "infeasible":  # reported, not hidden: no plan within the deadline
            failed += 1
        else:
            assert not plan_violations(changed, replan), plan_violations(changed, replan)[:3]
        # Bare baseline: the same model solved cold with OR-Tools' first solution only (no local search).
        t0 = time.monotonic()
        solver.solve(changed, costs, time_limit_s=0.001)
        bare.append(time.monotonic() - t0)

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    out = {"stops": n_stops, "deadline_ms": deadline_s * 1000, "p50_ms": round(pct(walls, 0.5) * 1000, 1),
           "p99_ms": round(pct(walls, 0.99) * 1000, 1), "bare_first_solution_p50_ms": round(pct(bare, 0.5) * 1000, 1),
           "within_deadline": sum(w <= deadline_s for w in walls), "replans": len(walls),
           "no_plan": failed}
    if not quiet:
        print(f"replan {n_stops} stops, deadline {deadline_s * 1000:.0f} ms: p50 {out['p50_ms']:.0f} ms, "
              f"p99 {out['p99_ms']:.0f} ms; bare cold first solution p50 {out['bare_first_solution_p50_ms']:.0f} "
              f"ms; within deadline {out['within_deadline']}/{out['replans']}; no plan {failed}/{out['replans']}")
    return out

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", nargs="*", type=Path,
                        default=sorted((REPO / "test" / "data" / "vrplib").glob("*.vrp")))
    parser.add_argument("--limits", nargs="*", type=float, default=[1.0, 5.0], help="time limits (s, wall)")
    parser.add_argument("--runs", type=int, default=3, help="runs per cell; the table shows the median")
    parser.add_argument("--replans", type=int, default=10, help="replans to time (0 = skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--plot", help="PNG of the last instance's best tuned routes")
    parser.add_argument("--settings", nargs="*", choices=SETTINGS, default=["plain", "tuned"],
                        help="search settings to compare, interleaved (tuned-nosp: tuned without set partitioning)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    report = gap_table(args.instances, args.limits, args.runs, args.plot, args.json, tuple(args.settings))
    if args.replans > 0:
        report["replan"] = replan_latency(50, 0.2, args.replans, args.json)
    import ortools

    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "python": platform.python_version(), "ortools": ortools.__version__,
                         "load_average_1min": round(os.getloadavg()[0], 1)}
    if args.json:
        print(json.dumps(report))
    return 0

if __name__ == "__main__":
    sys.exit(main())
