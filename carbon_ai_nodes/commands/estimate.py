"""Run a drive cycle (CSV ``time_s,speed_mps[,grade]``) through the carbon estimator (physics + learned
residual, the same code the carbon_inference node runs) and print CO2 (g/km, g/mi), fuel (L) and distance
for each vehicle of the profile file.
"""

from __future__ import annotations

import argparse

HELP = "CO2, fuel and distance of a drive cycle for one or more vehicle profiles"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--vehicle, --cycle, --cold-start, --json, --backend, --model, --payload-kg, --plot."""
    parser.add_argument("--vehicle", required=True, help="profile YAML (one profile or a list)")
    parser.add_argument("--cycle", required=True, help="drive cycle CSV: time_s,speed_mps[,grade]")
    parser.add_argument("--cold-start", action="store_true", help="the engine starts cold at t=0")
    parser.add_argument("--json", action="store_true", help="one JSON object per vehicle per line")
    parser.add_argument("--backend", default="auto",
                        help="auto | tensorrt | onnxruntime-tensorrt | onnxruntime-cuda | onnxruntime-cpu | physics")
    parser.add_argument("--model", default="", help="residual model .onnx (default: the shipped model)")
    parser.add_argument("--payload-kg", type=float, default=0.0, help="payload added to the test mass (kg)")
    parser.add_argument("--plot", default="", help="also write a PNG of speed and CO2 rate over the cycle")


def shipped_model_path() -> str:
    """The residual model installed with the package (carbon_ai_nodes/carbon/models/co2_residual_v1.onnx)."""
    from carbon_ai_nodes.carbon.model_file import SHIPPED_MODEL

    return str(SHIPPED_MODEL)


def run(args: argparse.Namespace) -> int:
    """Print the totals; returns 0."""
    import json
    import math
    import sys

    import numpy as np

    from carbon_ai_nodes.carbon.carbon_estimator import CarbonEstimator
    from carbon_ai_nodes.carbon.emission_model import coolant_after_start_c, cycle_totals, load_cycle
    from carbon_ai_nodes.carbon.residual_backend import select_backend
    from carbon_ai_nodes.common.errors import ConfigError, ModelError
    from carbon_ai_nodes.common.vehicle_profile import load_profiles

    if not math.isfinite(args.payload_kg) or args.payload_kg < 0:
        raise ConfigError(f"--payload-kg={args.payload_kg}: must be >= 0")
    profiles = load_profiles(args.vehicle)
    cycle = load_cycle(args.cycle)
    try:
        selection = select_backend(args.model or shipped_model_path(), args.backend)
    except ModelError as exc:
        raise ConfigError(f"--backend {args.backend}: {exc}") from None
    if not args.json:
        print(f"{cycle.name}: {cycle.distance_m / 1000:.2f} km in {cycle.time_s[-1] - cycle.time_s[0]:.0f} s; "
              f"{selection.describe()}", file=sys.stderr)
    coolant = coolant_after_start_c(cycle.time_s - cycle.time_s[0]) if args.cold_start else math.nan
    rows = []
    for profile in profiles:
        est = CarbonEstimator(profile, selection.backend)
        e = est.estimate_arrays(cycle.speed_mps, cycle.accel_mps2, cycle.grade, args.payload_kg, coolant)
        tot = cycle_totals(cycle.time_s, e.co2_g_s, e.fuel_lph, cycle.distance_m)
        phys = cycle_totals(cycle.time_s, e.physics_co2_g_s, e.fuel_lph, cycle.distance_m)
        km = tot.distance_m / 1000.0
        row = {"name": profile.name, "cycle": cycle.name, "co2_g": round(tot.co2_g, 2),
               "co2_g_per_km": round(tot.co2_g / km, 3) if km > 0 else None,
               "co2_g_per_mi": round(tot.co2_g / (km / 1.609344), 3) if km > 0 else None,
               "physics_co2_g_per_km": round(phys.co2_g / km, 3) if km > 0 else None,
               "fuel_l": round(tot.fuel_l, 4), "distance_km": round(km, 4), "cold_start": args.cold_start,
               "backend": selection.backend.name, "model_id": selection.backend.model_id,
               "out_of_distribution_fraction": round(float(np.mean(e.out_of_distribution)), 4)}
        rows.append((row, e))
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            per_km = f"{row['co2_g_per_km']:.1f} g/km ({row['co2_g_per_mi']:.1f} g/mi)" if km > 0 else "n/a per km"
            print(f"{profile.name}: CO2 {tot.co2_g / 1000:.3f} kg = {per_km}, fuel {tot.fuel_l:.3f} L, "
                  f"distance {km:.2f} km [{row['backend']}; OOD {100 * row['out_of_distribution_fraction']:.0f} %]")
    if args.plot:
        _plot(args.plot, cycle, rows)
    return 0


def _plot(path: str, cycle, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    ax1.plot(cycle.time_s, cycle.speed_mps * 3.6, color="k")
    ax1.set_ylabel("speed (km/h)")
    ax1.set_title(f"{cycle.name}")
    for row, e in rows:
        ax2.plot(cycle.time_s, e.co2_g_s, label=f"{row['name']} ({row['co2_g_per_km']} g/km)")
    ax2.set_ylabel("CO2 (g/s)")
    ax2.set_xlabel("time (s)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
