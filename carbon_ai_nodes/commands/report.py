"""Write the fleet's emissions report from the fleet store: per asset and in total, per UTC month, CO2 (kg),
fuel, distance, the savings the carbon levers claimed, measured vs modelled CO2 with the model ids, emission
factors and uncertainty (CSB3 senders; "unknown" for older ones), and data coverage (sequence gaps, gap records,
late windows), as report.md, report.csv and two PNGs (co2_per_asset.png, coverage.png). Every figure is a sum
of stored windows, computed in the database. --from and --to are UTC dates, both included.
"""

from __future__ import annotations

import argparse
import calendar
import csv
import itertools
import sys
import time
from pathlib import Path
from typing import Any

HELP = "emissions report (Markdown, CSV, PNG) per asset and month from the fleet database"

_CSV_FIELDS = ("month", "asset_id", "windows", "co2_kg", "fuel_l", "distance_km", "idle_s", "avoided_co2_kg",
               "covered_s", "seq_first", "seq_last", "missing", "coverage_pct", "gap_records", "late", "gaps",
               "audited", "measured_s", "measured_co2_kg", "modelled_co2_kg", "measured_pct", "co2_sigma_kg",
               "unaudited_co2_kg", "model_ids", "emission_factors")
UNKNOWN = "unknown"  # an audit figure no window carried (older senders): said, not invented


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Database, period, asset filter and output directory."""
    parser.add_argument("--db", required=True, help="fleet store URL: sqlite:///fleet.db or postgresql://...")
    parser.add_argument("--from", dest="date_from", required=True, help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--to", dest="date_to", required=True, help="last UTC day (included), YYYY-MM-DD")
    parser.add_argument("--asset", default="", help="one asset only (default: every asset)")
    parser.add_argument("--out", required=True, help="directory for report.md, report.csv and the PNGs")
    parser.add_argument("--late-after-s", type=float, default=300.0,
                        help="a window stored more than this after it ended counts as late (default 300)")


def parse_day(text: str, flag: str) -> float:
    """Unix time of 00:00 UTC of a YYYY-MM-DD day; ConfigError naming the flag otherwise."""
    from carbon_ai_nodes.common.errors import ConfigError

    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%d")))
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r}: must be a UTC date YYYY-MM-DD, e.g. 2026-11-01") from exc


def _fmt_gaps(gaps: list[tuple[int, int]]) -> str:
    return " ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in gaps)


def _cell(f: Any, name: str) -> Any:
    """One CSV cell: floats to 6 decimals (percentages 2), lists space-separated, unknown audit figures named."""
    v = _fmt_gaps(f.gaps) if name == "gaps" else getattr(f, name)
    if isinstance(v, list):
        return " ".join(v) or UNKNOWN
    if v is None:
        return UNKNOWN
    return round(v, 2 if name.endswith("_pct") else 6) if isinstance(v, float) else v


def _csv_row(f: Any) -> dict[str, Any]:
    return {name: _cell(f, name) for name in _CSV_FIELDS}


def _kg(v: float | None) -> str:
    return UNKNOWN if v is None else f"{v:.3f}"


def write_markdown(path: Path, figures: list[Any], args: argparse.Namespace, db: str) -> None:
    """report.md: a table per month, then what the figures rest on."""
    from carbon_ai_nodes.uplink.fleet_report import TOTAL

    lines = [f"# Fleet emissions report {args.date_from} .. {args.date_to}", "",
             f"Source: {db}{f', asset {args.asset}' if args.asset else ''}. Generated "
             f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}. Every figure is a sum of stored 10 s-scale "
             "windows (report.csv has the same rows; each window is a row of `summaries`).", ""]
    for month in sorted({f.month for f in figures}):
        lines += [f"## {month}", "",
                  "| asset | windows | CO2 kg | fuel L | distance km | claimed savings kg CO2 | coverage % "
                  "| missing seq | gap records | late | gaps |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for f in figures:
            if f.month == month:
                name = "**total**" if f.asset_id == TOTAL else f.asset_id
                lines.append(f"| {name} | {f.windows} | {f.co2_kg:.3f} | {f.fuel_l:.3f} | {f.distance_km:.3f} | "
                             f"{f.avoided_co2_kg:.3f} | {f.coverage_pct:.2f} | {f.missing} | {f.gap_records} | "
                             f"{f.late} | {_fmt_gaps(f.gaps) or '-'} |")
        lines += ["", "| asset | windows with audit fields | measured CO2 kg | modelled CO2 kg | measured % | "
                  "model 1-sigma kg | CO2 of windows without (kg) | model ids | emission factors |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---|"]
        for f in figures:
            if f.month == month:
                name = "**total**" if f.asset_id == TOTAL else f.asset_id
                pct = UNKNOWN if f.measured_pct is None else f"{f.measured_pct:.1f}"
                lines.append(f"| {name} | {f.audited} of {f.windows} | {_kg(f.measured_co2_kg)} | "
                             f"{_kg(f.modelled_co2_kg)} | {pct} | {_kg(f.co2_sigma_kg)} | {f.unaudited_co2_kg:.3f} "
                             f"| {_cell(f, 'model_ids')} | {_cell(f, 'emission_factors')} |")
        lines.append("")
    lines += ["## What the figures rest on", "",
              "- CO2 kg and fuel: the vehicle's estimates summed per window on the vehicle, sent over the uplink "
              "and stored once per (asset, sequence); sums computed in the database.",
              "- Measured vs modelled (windows from CSB3 senders): measured CO2 is the fuel meter's litres "
              "(VehicleState.fuel_rate_lph) times the emission factor the estimator applied, over the seconds "
              "with a meter reading; modelled CO2 is the estimate over the other seconds. Measured % = measured / "
              "(measured + modelled). The model 1-sigma is the estimator's uncertainty_g_s summed linearly over "
              "the modelled seconds (errors taken as fully correlated); the meter's own error is not included.",
              "- Emission factors: g CO2 per litre as the estimator applied them (its CO2 rate over its fuel "
              "rate), named after the fuel they match in carbon_ai's emission model (U.S. EPA EPA-420-F-18-008: "
              "8,887 g/gal gasoline, 10,180 g/gal diesel; CNG: IPCC 2006, 56.1 kg CO2/GJ).",
              f"- '{UNKNOWN}': windows from senders older than CSB3 carry no split, model or factor; their CO2 is "
              "listed apart (CO2 of windows without) and not attributed.",
              "- Coverage: sequence numbers that never arrived are counted in the month of the window before them; "
              "gap records are the vehicle's own statement of lost windows.",
              f"- Late: stored more than {args.late_after_s:g} s after the window ended.", ""]
    path.write_text("\n".join(lines))


def plot(out: Path, rows: list[dict[str, Any]]) -> None:
    """co2_per_asset.png (cumulative CO2 per asset over time) and coverage.png (received windows per asset,
    missing sequence spans in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assets = sorted({r["asset_id"] for r in rows})
    fig, ax = plt.subplots(figsize=(9, 4))
    for asset in assets:
        mine = [r for r in rows if r["asset_id"] == asset and not r["gap"]]
        total, xs, ys = 0.0, [], []
        for r in mine:
            total += r["co2_kg"]
            xs.append(r["window_end_s"] / 86400.0)
            ys.append(total)
        ax.plot(xs, ys, label=asset)
    ax.set_xlabel("time (days since 1970-01-01, UTC)")
    ax.set_ylabel("cumulative CO2 (kg)")
    if len(assets) <= 20:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "co2_per_asset.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 1 + 0.3 * len(assets)))
    for y, asset in enumerate(assets):
        mine = [r for r in rows if r["asset_id"] == asset]
        ax.broken_barh([(r["window_start_s"] / 3600.0, (r["window_end_s"] - r["window_start_s"]) / 3600.0)
                        for r in mine if not r["gap"]], (y - 0.4, 0.8), color="tab:green")
        holes = [(a["window_end_s"] / 3600.0, (b["window_start_s"] - a["window_end_s"]) / 3600.0)
                 for a, b in itertools.pairwise(mine) if b["sequence"] > a["sequence"] + 1]
        holes += [(r["window_start_s"] / 3600.0, (r["window_end_s"] - r["window_start_s"]) / 3600.0)
                  for r in mine if r["gap"]]  # a gap record's window is the span it says is missing
        ax.broken_barh(holes, (y - 0.4, 0.8), color="tab:red")
    ax.set_yticks(range(len(assets)), assets)
    ax.set_xlabel("time (hours since 1970-01-01, UTC); green: windows received, red: missing")
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Aggregate the period in the database, read its windows for the plots, write the four files."""
    from carbon_ai_nodes.common.errors import ConfigError
    from carbon_ai_nodes.uplink.fleet_report import aggregate
    from carbon_ai_nodes.uplink.fleet_store import open_store

    start = parse_day(args.date_from, "--from")
    end = parse_day(args.date_to, "--to") + 86400.0
    if end <= start:
        raise ConfigError(f"--to {args.date_to}: before --from {args.date_from}: swap them")
    store = open_store(args.db)
    try:
        print(f"report: aggregating {args.date_from} .. {args.date_to} in {store.safe_url()}",
              file=sys.stderr, flush=True)
        figures = aggregate(store, start, end, args.asset, args.late_after_s)
        print("report: reading windows for the plots", file=sys.stderr, flush=True)
        rows = store.rows(start, end, args.asset)
        db = store.safe_url()
    finally:
        store.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "report.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_csv_row(f) for f in figures)
    write_markdown(out / "report.md", figures, args, db)
    print("report: plotting", file=sys.stderr, flush=True)
    if rows:
        plot(out, rows)
    print(f"report: wrote {out}/report.md, report.csv{', co2_per_asset.png, coverage.png' if rows else ''}",
          file=sys.stderr)
    return 0
