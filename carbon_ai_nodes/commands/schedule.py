"""Schedule flexible loads (a YAML jobs file, see config/planner_loads_example.yaml) against a grid forecast
CSV (``offset_s,gco2_per_kwh``, see config/grid/forecast_example.csv) and print the per-asset setpoints and
the CO2 saved against running every job as early as possible.
"""

from __future__ import annotations

import argparse
import json
import math

from carbon_ai_nodes.commands import arg_types

HELP = "schedule flexible loads against a grid carbon-intensity forecast (CO2 vs as-early-as-possible)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--jobs, --forecast, --slot-s, --horizon-s, --site-cap-kw, --time-limit, --json, --plot."""
    parser.add_argument("--jobs", required=True, metavar="YAML", help="assets and jobs")
    parser.add_argument("--forecast", required=True, metavar="CSV", help="grid forecast, offset_s,gco2_per_kwh")
    parser.add_argument("--slot-s", type=float, default=3600.0, help="slot length (s)")
    parser.add_argument("--horizon-s", type=float, default=86400.0, help="horizon from the forecast start (s)")
    parser.add_argument("--site-cap-kw", type=float, default=math.inf, help="site power cap (kW)")
    parser.add_argument("--time-limit", type=arg_types.solver_time_limit, default=10.0,
                        help=f"solver time limit (s, at most {arg_types.MAX_SOLVER_TIME_LIMIT_S:g})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="PNG", help="draw intensity and asset power to this PNG")


def run(args: argparse.Namespace) -> int:
    """Read, solve, print."""
    from carbon_ai_nodes.common.errors import SolverError
    from carbon_ai_nodes.planning.grid_forecast import GridForecast
    from carbon_ai_nodes.planning.load_schedule import ScheduleProblem, load_jobs_file, solve_schedule

    for name in ("slot_s", "horizon_s"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise SolverError(f"--{name.replace('_', '-')}={value}: must be a number > 0")
    assets, jobs = load_jobs_file(args.jobs)
    forecast = GridForecast.from_csv(args.forecast)
    slots = int(math.floor(args.horizon_s / args.slot_s + 1e-9))
    problem = ScheduleProblem(tuple(assets), tuple(jobs), tuple(forecast.window(0.0, args.slot_s, max(slots, 1))),
                              args.slot_s, args.site_cap_kw)
    result = solve_schedule(problem, args.time_limit)
    if result.status == "infeasible":
        raise SolverError(f"{args.jobs}: {result.message}")
    saved = (1 - result.co2_kg / result.baseline_co2_kg) * 100 if result.baseline_co2_kg > 0 else 0.0
    if args.json:
        print(json.dumps({
            "status": result.status, "co2_kg": result.co2_kg, "baseline_co2_kg": result.baseline_co2_kg,
            "saved_pct": saved, "slot_s": args.slot_s, "solve_time_s": round(result.solve_time_s, 3),
            "asset_power_kw": {k: [round(float(v), 3) for v in p] for k, p in result.asset_power_kw.items()},
        }))
    else:
        for asset, power in result.asset_power_kw.items():
            print(f"{asset:<20} " + " ".join(f"{v:6.1f}" for v in power))
        print(f"CO2 {result.co2_kg:.2f} kg vs {result.baseline_co2_kg:.2f} kg as early as possible "
              f"({saved:.1f} % less), {result.status}, solved in {result.solve_time_s:.2f} s")
    if args.plot:
        _plot(problem, result, args.plot)
    return 0


def _plot(problem, result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    hours = np.arange(problem.slots) * problem.slot_s / 3600.0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.step(hours, problem.intensity_g_per_kwh, where="post", color="k")
    ax1.set_ylabel("grid gCO2/kWh")
    bottom = np.zeros(problem.slots)
    for asset, power in result.asset_power_kw.items():
        ax2.bar(hours, power, width=problem.slot_s / 3600.0, bottom=bottom, align="edge", label=asset)
        bottom += power
    base = sum(result.baseline_asset_power_kw.values(), np.zeros(problem.slots))
    ax2.step(hours, base, where="post", color="r", ls="--", label="as early as possible")
    ax2.set_xlabel("hours from forecast start")
    ax2.set_ylabel("kW")
    ax2.legend(fontsize=8)
    ax1.set_title(f"CO2 {result.co2_kg:.1f} kg vs {result.baseline_co2_kg:.1f} kg as early as possible")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
