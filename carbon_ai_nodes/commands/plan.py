"""Solve a CVRP / VRPTW benchmark instance (VRPLIB ``.vrp`` or Solomon ``.txt``) with the planner's OR-Tools
solver and print the routes, the cost in instance units and the gap to the best known cost when a sibling
``bks.json``, the file's COMMENT line or a sibling ``.sol`` gives it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from carbon_ai_nodes.commands import arg_types

HELP = "solve a VRPLIB CVRP/VRPTW instance with the planner's solver (routes, cost, gap)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--vrplib FILE, --time-limit S, --objective, --search, --json, --plot PNG."""
    parser.add_argument("--vrplib", required=True, metavar="FILE", help="instance file (.vrp VRPLIB, .txt Solomon)")
    parser.add_argument("--time-limit", type=arg_types.solver_time_limit, default=5.0, metavar="SECONDS",
                        help=f"solver time limit (s, at most {arg_types.MAX_SOLVER_TIME_LIMIT_S:g})")
    parser.add_argument("--objective", choices=("distance", "co2", "time"), default="distance",
                        help="distance = instance cost; co2 = placeholder emission model, load-dependent")
    parser.add_argument("--search", choices=("tuned", "plain"), default="tuned",
                        help="tuned (default) or the textbook cheapest-arc + guided local search")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="PNG", help="also draw the routes to this PNG file")


def run(args: argparse.Namespace) -> int:
    """Read, solve, print."""
    from carbon_ai_nodes.common.errors import SolverError
    from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver
    from carbon_ai_nodes.planning.routing_model import (
        arc_costs,
        evaluate_routes,
        placeholder_cruise_co2_g_per_m,
        plan_violations,
    )
    from carbon_ai_nodes.planning.vrplib_io import read_instance

    inst = read_instance(args.vrplib, objective=args.objective)
    p = inst.problem
    if not args.json:
        print(f"solving {inst.name}: {len(p.customers())} customers, {len(p.vehicles)} vehicles available, "
              f"objective {args.objective}, {args.time_limit:g} s ...", file=sys.stderr, flush=True)
    # Benchmark instances name no vehicle: a 10 t truck placeholder gives the CO2 objective its load term.
    costs = arc_costs(p, lambda prof, v, g, m: placeholder_cruise_co2_g_per_m(10000.0, v, g, m))
    out = OrToolsRoutingSolver(args.search, exact_integer_costs=True).solve(p, costs, time_limit_s=args.time_limit)
    if out.status == "infeasible":
        raise SolverError(f"{args.vrplib}: {out.message}")
    plan = evaluate_routes(p, costs, out.routes, out.dropped)
    problems = plan_violations(p, plan)
    if problems:  # never print an invalid plan as a result
        raise SolverError(f"solver returned an invalid plan: {problems[0]}")
    cost = plan.objective_value
    bks = inst.best_known_cost
    gap = (cost / bks - 1.0) * 100.0 if args.objective == "distance" and math.isfinite(bks) else math.nan
    routes = [[int(p.stops[i].stop_id) for i in r.customer_indices] for r in plan.routes]
    if args.json:
        print(json.dumps({
            "instance": inst.name, "objective": args.objective, "cost": cost, "routes": routes,
            "solve_time_s": round(out.solve_time_s, 3), "distance": plan.distance_m, "co2_g": plan.co2_g,
            "best_known_cost": None if math.isnan(bks) else bks, "gap_pct": None if math.isnan(gap) else gap,
            "search": args.search,
        }))
    else:
        for k, r in enumerate(routes, start=1):
            print(f"Route #{k}: {' '.join(map(str, r))}")
        print(f"Cost {cost:g}")
        extra = f", best known {bks:g} (gap {gap:.2f} %)" if math.isfinite(gap) else ""
        print(f"{len(routes)} routes, solved in {out.solve_time_s:.2f} s{extra}")
    if args.plot:
        _plot(p, plan, args.plot, f"{inst.name}: {args.objective} {cost:g}")
    return 0


def _plot(problem, plan, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7))
    for r in plan.routes:
        xs = [problem.stops[s.stop_index].x_m for s in r.stops]
        ys = [problem.stops[s.stop_index].y_m for s in r.stops]
        ax.plot(xs, ys, "-o", ms=3, lw=1)
    depots = [s for s in problem.stops if s.is_depot]
    ax.plot([s.x_m for s in depots], [s.y_m for s in depots], "ks", ms=9)
    ax.set_title(title)
    ax.set_aspect("equal")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
