"""The emissions report's numbers: stored summaries aggregated per asset and month, with data coverage.

Every figure is a sum over stored windows (rows of the fleet store), so it traces back to them. Coverage is
read from the sequence numbers: a bridge numbers its summaries 1, 2, 3, ..., so a missing number is a window
the fleet does not have. A gap is attributed to the month of the window before it. Gap records (a bridge
saying which numbers it lost, and why) are counted apart and carry no totals. A window is late when it was
stored more than ``late_after_s`` after it ended (it was held by an outage of the link or the receiver).

The uplink payload (CSB1) carries no model id, emission factor, measured-fuel share or uncertainty; the report
says so instead of inventing them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

TOTAL = "ALL"  # the asset name of the fleet total rows


@dataclasses.dataclass
class MonthFigures:
    """One asset's (or the fleet's, asset ``ALL``) figures in one UTC month ``YYYY-MM``."""

    month: str
    asset_id: str
    windows: int = 0  # summaries with totals (gap records excluded)
    co2_kg: float = 0.0
    fuel_l: float = 0.0
    distance_km: float = 0.0
    idle_s: float = 0.0
    avoided_co2_kg: float = 0.0  # savings the carbon levers claimed (physics baseline minus estimate)
    covered_s: float = 0.0  # sum of window lengths
    seq_first: int = 0
    seq_last: int = 0
    missing: int = 0  # sequence numbers after a window of this month that never arrived
    gap_records: int = 0
    late: int = 0
    gaps: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # missing ranges, first..last

    @property
    def coverage_pct(self) -> float:
        """Received share of the sequence numbers this month accounts for, %."""
        expected = self.windows + self.gap_records + self.missing
        return 100.0 * (self.windows + self.gap_records) / expected if expected else 0.0


def month_of(t_s: float) -> str:
    """``YYYY-MM`` (UTC) of a Unix time."""
    return time.strftime("%Y-%m", time.gmtime(t_s))


def aggregate(rows: Iterable[dict[str, Any]], late_after_s: float = 300.0) -> list[MonthFigures]:
    """Per asset and month, then the fleet total per month (asset ``ALL``), sorted by month then asset.

    ``rows`` are fleet store rows (dicts with the ``summaries`` columns), in any order."""
    by_asset: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_asset.setdefault(row["asset_id"], []).append(row)
    figures: dict[tuple[str, str], MonthFigures] = {}
    for asset, asset_rows in by_asset.items():
        asset_rows.sort(key=lambda r: r["sequence"])
        for i, row in enumerate(asset_rows):
            month = month_of(row["window_start_s"])
            f = figures.setdefault((month, asset), MonthFigures(month, asset, seq_first=row["sequence"]))
            f.seq_last = row["sequence"]
            if row["gap"]:
                f.gap_records += 1
            else:
                f.windows += 1
                f.co2_kg += row["co2_kg"]
                f.fuel_l += row["fuel_l"]
                f.distance_km += row["distance_km"]
                f.idle_s += row["idle_s"]
                f.avoided_co2_kg += row["avoided_co2_kg"]
                f.covered_s += row["window_end_s"] - row["window_start_s"]
            if row["received_s"] - row["window_end_s"] > late_after_s:
                f.late += 1
            if i + 1 < len(asset_rows) and asset_rows[i + 1]["sequence"] > row["sequence"] + 1:
                first, last = row["sequence"] + 1, asset_rows[i + 1]["sequence"] - 1
                f.gaps.append((first, last))
                f.missing += last - first + 1
    for month in sorted({m for m, _ in figures}):
        total = MonthFigures(month, TOTAL)
        for (m, _), f in figures.items():
            if m == month:
                for name in ("windows", "co2_kg", "fuel_l", "distance_km", "idle_s", "avoided_co2_kg", "covered_s",
                             "missing", "gap_records", "late"):
                    setattr(total, name, getattr(total, name) + getattr(f, name))
        figures[(month, TOTAL)] = total
    # fleet totals after each month's assets
    return sorted(figures.values(), key=lambda f: (f.month, f.asset_id == TOTAL, f.asset_id))
