"""The fleet store against SQLite and a real PostgreSQL server the test starts (initdb + pg_ctl)."""

from __future__ import annotations

import calendar
import dataclasses
import itertools

import pytest
from pg_server import postgres  # noqa: F401  (the fixture)

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.uplink.fleet_store import AUDIT_COLUMNS, SCHEMA_VERSION, month_bounds, open_store
from carbon_ai_nodes.uplink.summary_codec import Summary

_names = itertools.count()
T0 = calendar.timegm((2026, 11, 30, 23, 59, 0))  # windows cross into December: two month partitions


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    return request.getfixturevalue("postgres").create_database(f"fleet{next(_names)}")


def summaries(asset, *seqs):
    return [Summary(asset, s, T0 + 10 * s, T0 + 10 * s + 10, 0.25 * s, 0.1, 0.2, 1.0, 0.01, 10, 900)
            for s in seqs]


def test_a_double_write_stores_each_summary_once(db_url):
    store = open_store(db_url)
    assert [s.sequence for s in store.write(summaries("van1", 1, 2, 3))] == [1, 2, 3]
    assert store.write(summaries("van1", 2, 3)) == []
    assert [s.sequence for s in store.write(summaries("van1", 3, 4) + summaries("van2", 3))] == [4, 3]
    rows = store.rows(T0 - 1, T0 + 1000)
    assert [(r["asset_id"], r["sequence"]) for r in rows] == [("van1", 1), ("van1", 2), ("van1", 3), ("van1", 4),
                                                               ("van2", 3)]
    assert rows[2]["co2_kg"] == pytest.approx(0.75) and '"sequence":3' in rows[2]["raw_json"]
    assert store.rows(T0 - 1, T0 + 1000, asset_id="van2")[0]["window_start_s"] == T0 + 30
    store.close()


def test_a_reopened_store_drops_redeliveries_and_keeps_gap_records(db_url):
    store = open_store(db_url)
    store.write(summaries("van1", 1, 2))
    store.close()
    store = open_store(db_url)  # a restarted receiver; the broker redelivers what it had not acknowledged
    gap = Summary("van1", 9, T0 + 30, T0 + 80, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, gap="queue_full",
                  lost_first=3, lost_last=2**63)
    assert [s.sequence for s in store.write(summaries("van1", 2) + [gap])] == [9]
    assert store.count() == 3 and store.schema_version() == SCHEMA_VERSION
    row = store.rows(T0, T0 + 1000)[-1]
    assert (row["gap"], row["lost_first"], row["lost_last"]) == ("queue_full", 3, 2**63)
    store.close()


def test_a_newer_schema_is_refused_naming_both_versions(db_url):
    store = open_store(db_url)
    cur = store._conn.cursor()
    cur.execute(f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION + 1})")
    store.close()
    with pytest.raises(ConfigError, match=rf"schema version {SCHEMA_VERSION + 1} is newer .*\(up to "
                                          rf"{SCHEMA_VERSION}\): upgrade carbon_ai"):
        open_store(db_url)


def test_postgresql_keeps_one_partition_per_month(postgres):  # noqa: F811
    store = open_store(postgres.create_database(f"fleet{next(_names)}"))
    assert store.partitions() == []
    store.write(summaries("van1", 1, 2, 3, 4, 5, 6, 7, 8))  # 23:59:10 .. 00:00:30: November and December
    store.write(summaries("van2", 1))
    assert store.partitions() == ["summaries_y2026m11", "summaries_y2026m12"]
    cur = store._conn.cursor()
    cur.execute("SELECT COUNT(*) FROM summaries_y2026m12")
    assert cur.fetchone()[0] == 3  # sequences 6, 7, 8 start at or after midnight
    store.close()


def test_month_bounds():
    assert month_bounds(calendar.timegm((2026, 12, 31, 23, 0, 0))) == (
        "y2026m12", calendar.timegm((2026, 12, 1, 0, 0, 0)), calendar.timegm((2027, 1, 1, 0, 0, 0)))


@pytest.mark.parametrize("url,message", [
    ("mysql://x@h/db", "unknown database URL: use sqlite:///fleet.db or postgresql://"),
    ("sqlite:///", "no file: write sqlite:///fleet.db"),
    ("sqlite:////nonexistent-dir/fleet.db", "'/nonexistent-dir' does not exist: create it first"),
    ("postgresql://u:secret@127.0.0.1:1/db", r"cannot connect .*check that the server runs"),
])
def test_a_bad_url_is_a_clear_error(url, message):
    with pytest.raises(ConfigError, match=message) as err:
        open_store(url)
    assert "secret" not in str(err.value)


def test_a_store_created_at_schema_1_with_rows_migrates_to_audit_columns(db_url, monkeypatch):
    from carbon_ai_nodes.uplink import fleet_store

    # a store as the previous release made it: schema 1 only, rows of CSB1 senders in it (two months)
    with monkeypatch.context() as m:
        m.setattr(fleet_store, "MIGRATIONS", {1: fleet_store.MIGRATIONS[1]})
        m.setattr(fleet_store, "SCHEMA_VERSION", 1)
        old = open_store(db_url)
        assert old.schema_version() == 1
        cur, ph = old._conn.cursor(), old._ph
        if old.dialect == "postgresql":
            old._ensure_partitions(s.window_start_s for s in summaries("van1", 1, 20))
        for s in summaries("van1", 1, 20):
            cur.execute("INSERT INTO summary_keys (asset_id, sequence) VALUES (%s, %s)".replace("%s", ph),
                        (s.asset_id, s.sequence))
            cur.execute("INSERT INTO summaries (asset_id, sequence, window_start_s, window_end_s, co2_kg, fuel_l, "
                        "distance_km, idle_s, avoided_co2_kg, estimate_count, worst_latency_us, received_s, raw_json) "
                        f"VALUES ({', '.join([ph] * 13)})",
                        (s.asset_id, s.sequence, s.window_start_s, s.window_end_s, s.co2_kg, s.fuel_l, s.distance_km,
                         s.idle_s, s.avoided_co2_kg, s.estimate_count, s.worst_latency_us, T0 + 500, "{}"))
        old.close()
    store = open_store(db_url)
    assert store.schema_version() == SCHEMA_VERSION == 2
    new = dataclasses.replace(summaries("van1", 21)[0], measured_s=4.0, measured_co2_kg=1.5, modelled_co2_kg=3.0,
                              co2_sigma_kg=0.3, model_ids="physics:physics", emission_factor="diesel 2689 g/L")
    assert store.write(summaries("van1", 20) + [new]) == [new]  # the old rows still gate redeliveries
    rows = {r["sequence"]: r for r in store.rows(T0, T0 + 1000)}
    assert sorted(rows) == [1, 20, 21] and rows[20]["co2_kg"] == pytest.approx(5.0)
    assert all(rows[q][c] is None for q in (1, 20) for c in AUDIT_COLUMNS)  # unknown, not zero
    assert [rows[21][c] for c in AUDIT_COLUMNS] == [4.0, 1.5, 3.0, 0.3, "physics:physics", "diesel 2689 g/L"]
    store.close()
    assert open_store(db_url).schema_version() == 2  # migrating is done once
