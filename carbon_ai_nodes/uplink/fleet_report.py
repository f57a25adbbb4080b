"""The emissions report's numbers: stored summaries aggregated per asset and month, with data coverage.

The sums are the database's (:meth:`FleetStore.totals`, one GROUP BY per month, the same SQL on SQLite and
PostgreSQL), so every figure is a sum over stored windows and traces back to them. Coverage is read from the
sequence numbers: a bridge numbers its summaries 1, 2, 3, ..., so a missing number is a window the fleet does
not have (found in SQL too, :meth:`FleetStore.holes`). A gap is attributed to the month of the window before
it. Gap records (a bridge saying which numbers it lost, and why) are counted apart and carry no totals. A
window is late when it was stored more than ``late_after_s`` after it ended.

Measured vs modelled, model ids, emission factors and the uncertainty come from CSB3 senders only (see
summary_codec). The windows of older senders are counted apart (``unaudited_co2_kg``) and their split is
"unknown", never a guess; a month with no CSB3 window has ``None`` for every audit figure.
"""

from __future__ import annotations

import dataclasses
import time

from carbon_ai_nodes.uplink.fleet_store import FleetStore, month_bounds

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
    audited: int = 0  # windows from CSB3 senders: the audit figures below are theirs
    measured_s: float | None = None  # seconds with a fuel meter reading
    measured_co2_kg: float | None = None  # CO2 from the meter's litres x the emission factor
    modelled_co2_kg: float | None = None  # CO2 from the model (seconds without a meter reading)
    co2_sigma_kg: float | None = None  # the model's 1-sigma, summed over its seconds (fully correlated bound)
    unaudited_co2_kg: float = 0.0  # co2_kg of windows whose split is unknown (CSB1/CSB2 senders)
    model_ids: list[str] = dataclasses.field(default_factory=list)
    emission_factors: list[str] = dataclasses.field(default_factory=list)

    @property
    def measured_pct(self) -> float | None:
        """Measured share of the audited windows' CO2 (measured + modelled), %; None when unknown."""
        if self.measured_co2_kg is None or self.modelled_co2_kg is None:
            return None
        total = self.measured_co2_kg + self.modelled_co2_kg
        return 100.0 * self.measured_co2_kg / total if total > 0 else 0.0

    @property
    def coverage_pct(self) -> float:
        """Received share of the sequence numbers this month accounts for, %."""
        expected = self.windows + self.gap_records + self.missing
        return 100.0 * (self.windows + self.gap_records) / expected if expected else 0.0


def month_of(t_s: float) -> str:
    """``YYYY-MM`` (UTC) of a Unix time."""
    return time.strftime("%Y-%m", time.gmtime(t_s))


_SUMMED = ("windows", "gap_records", "co2_kg", "fuel_l", "distance_km", "idle_s", "avoided_co2_kg", "covered_s",
           "late", "audited", "unaudited_co2_kg")
_AUDIT_SUMS = ("measured_s", "measured_co2_kg", "modelled_co2_kg", "co2_sigma_kg")


def months(start_s: float, end_s: float) -> list[tuple[str, float, float]]:
    """The UTC months ``YYYY-MM`` that [start_s, end_s) touches, each with its part of the period (Unix s)."""
    out, t = [], start_s
    while t < end_s:
        _, lo, hi = month_bounds(t)
        out.append((month_of(lo), t, min(hi, end_s)))
        t = hi
    return out


def _names(joined: list[str]) -> list[str]:
    return sorted({n for text in joined for n in text.split("+") if n})


def aggregate(store: FleetStore, start_s: float, end_s: float, asset_id: str = "",
              late_after_s: float = 300.0) -> list[MonthFigures]:
    """Per asset and month, then the fleet total per month (asset ``ALL``), sorted by month then asset, for the
    windows starting in [start_s, end_s) (Unix s)."""
    figures: dict[tuple[str, str], MonthFigures] = {}
    for month, lo, hi in months(start_s, end_s):
        srcs: dict[str, tuple[list[str], list[str]]] = {}
        for asset, model_ids, factor, _ in store.sources(lo, hi, asset_id):
            srcs.setdefault(asset, ([], []))[0].append(model_ids)
            srcs[asset][1].append(factor or "unknown")
        for t in store.totals(lo, hi, asset_id, late_after_s):
            f = MonthFigures(month, t["asset_id"], **{k: t[k] for k in (*_SUMMED, "seq_first", "seq_last")})
            if f.audited:
                for name in _AUDIT_SUMS:
                    setattr(f, name, t[name])
                models, factors = srcs.get(f.asset_id, ([], []))
                f.model_ids, f.emission_factors = _names(models), _names(factors)
            figures[(month, f.asset_id)] = f
    for asset, seq, window_start_s, nxt in store.holes(start_s, end_s, asset_id):
        f = figures[(month_of(window_start_s), asset)]
        f.gaps.append((seq + 1, nxt - 1))
        f.missing += nxt - 1 - seq
    for month in sorted({m for m, _ in figures}):
        mine = [f for (m, _), f in figures.items() if m == month]
        total = MonthFigures(month, TOTAL, **{k: sum(getattr(f, k) for f in mine) for k in (*_SUMMED, "missing")})
        if total.audited:
            for name in _AUDIT_SUMS:
                setattr(total, name, sum(getattr(f, name) or 0.0 for f in mine))
            total.model_ids = _names([n for f in mine for n in f.model_ids])
            total.emission_factors = _names([n for f in mine for n in f.emission_factors])
        figures[(month, TOTAL)] = total
    # fleet totals after each month's assets
    return sorted(figures.values(), key=lambda f: (f.month, f.asset_id == TOTAL, f.asset_id))
