"""`carbon-ai report` on a fleet store filled with known windows: totals, months, coverage and the files."""

from __future__ import annotations

import calendar
import csv
import subprocess
import sys

import pytest

from carbon_ai_nodes.cli import main
from carbon_ai_nodes.uplink.fleet_report import aggregate
from carbon_ai_nodes.uplink.fleet_store import open_store
from carbon_ai_nodes.uplink.summary_codec import Summary

NOV30 = calendar.timegm((2026, 11, 30, 23, 0, 0))


def window(asset, seq, start_s, co2_kg=0.5, fuel_l=0.2):
    return Summary(asset, seq, start_s, start_s + 10, co2_kg, fuel_l, 0.1, 2.0, 0.05, 10, 800)


@pytest.fixture
def fleet_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    store = open_store(url)
    # truck1: 1..10 in November with 4-5 missing, then 11..12 in December with 13 missing before 14
    store.write([window("truck1", s, NOV30 + 10 * s) for s in (1, 2, 3, 6, 7, 8, 9, 10)], received_s=NOV30 + 200)
    store.write([window("truck1", s, NOV30 + 3600 + 10 * s, co2_kg=1.0) for s in (11, 12, 14)],
                received_s=NOV30 + 3600 + 250)  # 130, 120 and 100 s after the windows ended: 2 late (> 100 s)
    # truck2: a gap record for 3..4 (queue full) and windows 1, 2, 5
    store.write([window("truck2", 1, NOV30), window("truck2", 2, NOV30 + 10)], received_s=NOV30 + 30)
    store.write([Summary("truck2", 6, NOV30 + 20, NOV30 + 40, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, gap="queue_full",
                         lost_first=3, lost_last=4), window("truck2", 7, NOV30 + 40)], received_s=NOV30 + 60)
    store.close()
    return url


def test_totals_are_sums_of_windows_and_gaps_are_where_they_were_made(fleet_db):
    store = open_store(fleet_db)
    figures = {(f.month, f.asset_id): f for f in aggregate(store.rows(NOV30 - 1, NOV30 + 86400), late_after_s=100)}
    store.close()
    t1_nov, t1_dec = figures[("2026-11", "truck1")], figures[("2026-12", "truck1")]
    assert (t1_nov.windows, t1_nov.co2_kg, t1_nov.fuel_l) == (8, pytest.approx(4.0), pytest.approx(1.6))
    assert (t1_nov.gaps, t1_nov.missing, t1_nov.seq_first, t1_nov.seq_last) == ([(4, 5)], 2, 1, 10)
    assert t1_nov.coverage_pct == pytest.approx(80.0) and t1_nov.late == 6  # windows 1..8 ended > 100 s before
    assert (t1_dec.windows, t1_dec.co2_kg, t1_dec.gaps, t1_dec.late) == (3, pytest.approx(3.0), [(13, 13)], 2)
    t2 = figures[("2026-11", "truck2")]
    assert (t2.windows, t2.gap_records, t2.gaps, t2.co2_kg) == (3, 1, [(3, 5)], pytest.approx(1.5))
    total = figures[("2026-11", "ALL")]
    assert (total.windows, total.co2_kg, total.missing) == (11, pytest.approx(5.5), 5)
    assert total.avoided_co2_kg == pytest.approx(11 * 0.05)


def test_report_command_writes_markdown_csv_and_plots(fleet_db, tmp_path):
    out = tmp_path / "report"
    assert main(["report", "--db", fleet_db, "--from", "2026-11-01", "--to", "2026-12-31", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [(r["month"], r["asset_id"]) for r in rows] == [
        ("2026-11", "truck1"), ("2026-11", "truck2"), ("2026-11", "ALL"), ("2026-12", "truck1"), ("2026-12", "ALL")]
    assert sum(float(r["co2_kg"]) for r in rows if r["asset_id"] != "ALL") == pytest.approx(8.5)
    assert rows[0]["gaps"] == "4-5" and rows[3]["gaps"] == "13" and rows[1]["gap_records"] == "1"
    md = (out / "report.md").read_text()
    assert "| **total** | 11 | 5.500 |" in md and "does not carry it" in md
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
