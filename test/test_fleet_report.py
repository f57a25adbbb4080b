"""`carbon-ai report` on a fleet store (SQLite and a real PostgreSQL) filled with known windows: totals, months,
coverage, measured vs modelled CO2 with models, factors and uncertainty (CSB3) or "unknown" (CSB1), the files."""

from __future__ import annotations

import calendar
import csv
import dataclasses
import itertools
import subprocess
import sys

import pytest
from pg_server import postgres  # noqa: F401  (the fixture)

from carbon_ai_nodes.cli import main
from carbon_ai_nodes.uplink.fleet_report import aggregate
from carbon_ai_nodes.uplink.fleet_store import open_store
from carbon_ai_nodes.uplink.summary_codec import Summary

NOV30 = calendar.timegm((2026, 11, 30, 23, 0, 0))


def window(asset, seq, start_s, co2_kg=0.5, fuel_l=0.2):
    return Summary(asset, seq, start_s, start_s + 10, co2_kg, fuel_l, 0.1, 2.0, 0.05, 10, 800)


_names = itertools.count()
RES = "onnxruntime-cpu:residual-3f2a9c"
DIESEL = "diesel 2689 g/L"


def audited(seq, start_s, measured_s, measured_kg, modelled_kg, sigma_kg, model=RES):
    return dataclasses.replace(window("truck3", seq, start_s), measured_s=measured_s, measured_co2_kg=measured_kg,
                               modelled_co2_kg=modelled_kg, co2_sigma_kg=sigma_kg, model_ids=model,
                               emission_factor=DIESEL)


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database(f"report{next(_names)}")
    store = open_store(url)
    # truck1: 1..10 in November with 4-5 missing, then 11..12 in December with 13 missing before 14
    store.write([window("truck1", s, NOV30 + 10 * s) for s in (1, 2, 3, 6, 7, 8, 9, 10)], received_s=NOV30 + 200)
    store.write([window("truck1", s, NOV30 + 3600 + 10 * s, co2_kg=1.0) for s in (11, 12, 14)],
                received_s=NOV30 + 3600 + 250)  # 130, 120 and 100 s after the windows ended: 2 late (> 100 s)
    # truck2: a gap record for 3..4 (queue full) and windows 1, 2, 5
    store.write([window("truck2", 1, NOV30), window("truck2", 2, NOV30 + 10)], received_s=NOV30 + 30)
    store.write([Summary("truck2", 6, NOV30 + 20, NOV30 + 40, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, gap="queue_full",
                         lost_first=3, lost_last=4), window("truck2", 7, NOV30 + 40)], received_s=NOV30 + 60)
    # truck3, a CSB3 sender: fully metered, partly metered, unmetered on the physics fallback; then one window
    # from an older (CSB1) sender, whose split is unknown
    store.write([audited(1, NOV30, 10.0, 0.6, 0.0, 0.0), audited(2, NOV30 + 10, 4.0, 0.2, 0.3, 0.03),
                 audited(3, NOV30 + 20, 0.0, 0.0, 0.5, 0.05, model="physics:physics"),
                 window("truck3", 4, NOV30 + 30)], received_s=NOV30 + 50)
    store.close()
    return url


def test_totals_are_sums_of_windows_and_gaps_are_where_they_were_made(fleet_db):
    store = open_store(fleet_db)
    figures = {(f.month, f.asset_id): f for f in aggregate(store, NOV30 - 1, NOV30 + 86400, late_after_s=100)}
    store.close()
    t1_nov, t1_dec = figures[("2026-11", "truck1")], figures[("2026-12", "truck1")]
    assert (t1_nov.windows, t1_nov.co2_kg, t1_nov.fuel_l) == (8, pytest.approx(4.0), pytest.approx(1.6))
    assert (t1_nov.gaps, t1_nov.missing, t1_nov.seq_first, t1_nov.seq_last) == ([(4, 5)], 2, 1, 10)
    assert t1_nov.coverage_pct == pytest.approx(80.0) and t1_nov.late == 6  # windows 1..8 ended > 100 s before
    assert (t1_dec.windows, t1_dec.co2_kg, t1_dec.gaps, t1_dec.late) == (3, pytest.approx(3.0), [(13, 13)], 2)
    t2 = figures[("2026-11", "truck2")]
    assert (t2.windows, t2.gap_records, t2.gaps, t2.co2_kg) == (3, 1, [(3, 5)], pytest.approx(1.5))
    assert (t2.audited, t2.measured_co2_kg, t2.modelled_co2_kg, t2.co2_sigma_kg, t2.measured_pct) \
        == (0, None, None, None, None)  # CSB1: unknown, not zero
    assert (t2.model_ids, t2.emission_factors, t2.unaudited_co2_kg) == ([], [], pytest.approx(1.5))
    t3 = figures[("2026-11", "truck3")]
    assert (t3.windows, t3.audited, t3.co2_kg, t3.unaudited_co2_kg) == (4, 3, pytest.approx(2.0), pytest.approx(0.5))
    assert (t3.measured_s, t3.measured_co2_kg, t3.modelled_co2_kg) == (14.0, pytest.approx(0.8), pytest.approx(0.8))
    assert (t3.measured_pct, t3.co2_sigma_kg) == (pytest.approx(50.0), pytest.approx(0.08))
    assert (t3.model_ids, t3.emission_factors) == (["onnxruntime-cpu:residual-3f2a9c", "physics:physics"], [DIESEL])
    total = figures[("2026-11", "ALL")]
    assert (total.windows, total.co2_kg, total.missing) == (15, pytest.approx(7.5), 5)
    assert total.avoided_co2_kg == pytest.approx(15 * 0.05)
    assert (total.audited, total.measured_co2_kg, total.unaudited_co2_kg) == (3, pytest.approx(0.8), pytest.approx(6.0))
    assert (total.measured_pct, total.model_ids) == (pytest.approx(50.0), t3.model_ids)
    assert figures[("2026-12", "ALL")].measured_co2_kg is None


def test_report_command_writes_markdown_csv_and_plots(fleet_db, tmp_path):
    out = tmp_path / "report"
    assert main(["report", "--db", fleet_db, "--from", "2026-11-01", "--to", "2026-12-31", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [(r["month"], r["asset_id"]) for r in rows] == [
        ("2026-11", "truck1"), ("2026-11", "truck2"), ("2026-11", "truck3"), ("2026-11", "ALL"),
        ("2026-12", "truck1"), ("2026-12", "ALL")]
    assert sum(float(r["co2_kg"]) for r in rows if r["asset_id"] != "ALL") == pytest.approx(10.5)
    assert rows[0]["gaps"] == "4-5" and rows[4]["gaps"] == "13" and rows[1]["gap_records"] == "1"
    assert [rows[0][c] for c in ("measured_co2_kg", "measured_pct", "co2_sigma_kg", "model_ids")] == ["unknown"] * 4
    assert [rows[2][c] for c in ("audited", "measured_co2_kg", "modelled_co2_kg", "measured_pct", "co2_sigma_kg",
                                 "unaudited_co2_kg", "model_ids", "emission_factors")] == [
        "3", "0.8", "0.8", "50.0", "0.08", "0.5", "onnxruntime-cpu:residual-3f2a9c physics:physics", DIESEL]
    md = (out / "report.md").read_text()
    assert "| **total** | 15 | 7.500 |" in md
    assert "| truck3 | 3 of 4 | 0.800 | 0.800 | 50.0 | 0.080 | 0.500 |" in md
    assert "| truck1 | 0 of 8 | unknown | unknown | unknown | unknown | 4.000 | unknown | unknown |" in md
    for png in ("co2_per_asset.png", "coverage.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    one = tmp_path / "one"
    assert main(["report", "--db", fleet_db, "--from", "2026-12-01", "--to", "2026-12-01", "--asset", "truck1",
                 "--out", str(one)]) == 0
    assert [r["asset_id"] for r in csv.DictReader((one / "report.csv").open())] == ["truck1", "ALL"]


def test_a_bad_date_is_a_clear_error(fleet_db, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", "report", "--db", fleet_db, "--from",
                           "2026-13-01", "--to", "2026-12-31", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--from '2026-13-01': must be a UTC date YYYY-MM-DD" in proc.stderr
    assert "Traceback" not in proc.stderr
