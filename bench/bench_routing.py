"""Planner benchmark: gap to the best known cost on public VRPLIB instances at 1 s and 5 s, for the planner's
tuned OR-Tools search next to the textbook setting (cheapest arc + guided local search) measured in the same
run; and the wall time of warm-started 50-stop replans against the replan deadline.

    python bench/bench_routing.py                    # all instances in test/data/vrplib, 1 s and 5 s
    python bench/bench_routing.py --limits 5 --plot /tmp/routes.png

The machine is shared and noisy: compare the two settings' gaps within one run, not across runs.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gap_table(files: list[Path], limits: list[float], plot: str | None) -> None:
    from carbon_ai_nodes.adapters.ortools_routing import OrToolsRoutingSolver
    from carbon_ai_nodes.adapters.vrplib_io import read_instance
    from carbon_ai_nodes.core.routing_model import (
        arc_costs,
        evaluate_routes,
        placeholder_cruise_co2_g_per_m,
        plan_violations,
    )

    print(f"{'instance':<14} {'n':>4} {'BKS':>8} {'limit s':>7} {'plain cost':>10} {'gap %':>6} "
          f"{'tuned cost':>10} {'gap %':>6}")
    summary: dict[tuple[str, float], list[float]] = {}
    for f in files:
        inst = read_instance(f)
        costs = arc_costs(inst.problem, lambda p, v, g, m: placeholder_cruise_co2_g_per_m(1e4, v, g, m))
        for limit in limits:
            row = []
            for search in ("plain", "tuned"):
                print(f"  {inst.name}: {search} {limit:g} s ...", file=sys.stderr, flush=True)
                out = OrToolsRoutingSolver(search, exact_integer_costs=True).solve(
                    inst.problem, costs, time_limit_s=limit)
                plan = evaluate_routes(inst.problem, costs, out.routes, out.dropped)
                assert not plan_violations(inst.problem, plan), plan_violations(inst.problem, plan)[:3]
                gap = (plan.distance_m / inst.best_known_cost - 1) * 100 if math.isfinite(inst.best_known_cost) \
                    else math.nan
                row += [plan.distance_m, gap]
                summary.setdefault((search, limit), []).append(gap)
                if plot and search == "tuned" and limit == max(limits) and f == files[-1]:
                    from carbon_ai_nodes.commands.plan import _plot

                    _plot(inst.problem, plan, plot, f"{inst.name} tuned {limit:g} s: {plan.distance_m:g} "
                                                    f"(gap {gap:.2f} %)")
            print(f"{inst.name:<14} {len(inst.problem.customers()):>4} {inst.best_known_cost:>8g} {limit:>7g} "
                  f"{row[0]:>10g} {row[1]:>6.2f} {row[2]:>10g} {row[3]:>6.2f}", flush=True)
    for limit in limits:
        plain = statistics.mean(summary[("plain", limit)])
        tuned = statistics.mean(summary[("tuned", limit)])
        print(f"mean gap at {limit:g} s: plain {plain:.2f} %, tuned {tuned:.2f} %")


def replan_latency(n_stops: int, deadline_s: float, repeats: int) -> None:
    from carbon_ai_nodes.adapters.ortools_routing import OrToolsRoutingSolver
    from carbon_ai_nodes.core.routing_model import (
        REPLAN_SOLVER_SHARE,
        RoutingProblem,
        Stop,
        Vehicle,
        arc_costs,
        placeholder_cruise_co2_g_per_m,
        plan_routes,
        plan_violations,
        repair_routes,
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
    for i in range(repeats):
        print(f"  replan {i + 1}/{repeats} ...", file=sys.stderr, flush=True)
        old_ids = [s.stop_id for s in problem.stops]
        changed = problem.with_stop(Stop(f"new{i}", rng.uniform(-3000, 3000), rng.uniform(-3000, 3000),
                                         demand_kg=-50.0))
        t0 = time.monotonic()
        costs = arc_costs(changed, co2)
        initial = repair_routes(changed, costs, plan.customer_routes(), old_ids)
        baseline = repair_routes(changed, costs, base, old_ids)
        replan, _ = plan_routes(changed, solver, costs, time_limit_s=deadline_s * REPLAN_SOLVER_SHARE,
                                initial_routes=initial, baseline_routes=baseline, is_replan=True)
        walls.append(time.monotonic() - t0)
        assert not plan_violations(changed, replan)
        # Bare baseline: the same model solved cold with OR-Tools' first solution only (no local search).
        t0 = time.monotonic()
        solver.solve(changed, costs, time_limit_s=0.001)
        bare.append(time.monotonic() - t0)

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    print(f"replan {n_stops} stops, deadline {deadline_s * 1000:.0f} ms: p50 {pct(walls, 0.5) * 1000:.0f} ms, "
          f"p99 {pct(walls, 0.99) * 1000:.0f} ms; bare cold first solution p50 {pct(bare, 0.5) * 1000:.0f} ms; "
          f"ratio p50 {pct(walls, 0.5) / pct(bare, 0.5):.1f}x; within deadline "
          f"{sum(w <= deadline_s for w in walls)}/{len(walls)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", nargs="*", type=Path,
                        default=sorted((REPO / "test" / "data" / "vrplib").glob("*.vrp")))
    parser.add_argument("--limits", nargs="*", type=float, default=[1.0, 5.0])
    parser.add_argument("--replans", type=int, default=10)
    parser.add_argument("--plot", help="PNG of the last instance's tuned routes")
    args = parser.parse_args()
    gap_table(args.instances, args.limits, args.plot)
    replan_latency(50, 0.2, args.replans)
    return 0


if __name__ == "__main__":
    sys.exit(main())
