"""The fleet store: every received CarbonSummary, once, in SQLite (embedded default) or PostgreSQL (a fleet).

Opened from a URL: ``sqlite:///fleet.db`` (relative path), ``sqlite:////var/lib/cai/fleet.db`` (absolute) or
``postgresql://user:pass@host:5432/dbname`` (any libpq URL; psycopg 3). Both get the same tables from the same
versioned migrations (:data:`MIGRATIONS`; the applied version is in ``schema_version``). A database migrated
by newer code is refused rather than written in a shape this code does not know.

Exactly once: a summary is identified by (asset id, sequence). ``summary_keys`` holds that key as its primary
key, and a row goes into ``summaries`` only when its key insert was new (``INSERT ... ON CONFLICT DO
NOTHING``), in the same transaction, so redeliveries, a restarted receiver and several receivers behind a shared
subscription all store it once. The key table is separate because PostgreSQL's ``summaries`` is range
partitioned by month on ``window_start_s`` (Unix seconds), and a unique index on a partitioned table must
include the partition key; (asset, sequence) alone would not be unique across months. A month's partition
(``summaries_y2026m12``) is created the first time a window starting in it arrives.
"""

from __future__ import annotations

import calendar
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.uplink.summary_codec import Summary

# Columns of ``summaries`` besides the key: the decoded CarbonSummary fields, when it arrived, the raw record,
# and (schema 2) the CSB3 audit fields. A CSB1/CSB2 sender's summary leaves those NULL: unknown, never invented.
_FIELDS = ("window_start_s", "window_end_s", "co2_kg", "fuel_l", "distance_km", "idle_s", "avoided_co2_kg",
           "estimate_count", "worst_latency_us", "gap", "lost_first", "lost_last")
AUDIT_COLUMNS = ("measured_s", "measured_co2_kg", "modelled_co2_kg", "co2_sigma_kg", "model_ids", "emission_factor")
_COLUMNS = ("asset_id", "sequence", *_FIELDS, "received_s", "raw_json", *AUDIT_COLUMNS)
# Written out, not derived from AUDIT_COLUMNS: a released migration step must never change.
_AUDIT_DDL = ["ALTER TABLE summaries ADD COLUMN measured_s DOUBLE PRECISION",
              "ALTER TABLE summaries ADD COLUMN measured_co2_kg DOUBLE PRECISION",
              "ALTER TABLE summaries ADD COLUMN modelled_co2_kg DOUBLE PRECISION",
              "ALTER TABLE summaries ADD COLUMN co2_sigma_kg DOUBLE PRECISION",
              "ALTER TABLE summaries ADD COLUMN model_ids TEXT",
              "ALTER TABLE summaries ADD COLUMN emission_factor TEXT"]

_SUMMARY_COLUMNS = """
    asset_id TEXT NOT NULL, sequence BIGINT NOT NULL,
    window_start_s DOUBLE PRECISION NOT NULL, window_end_s DOUBLE PRECISION NOT NULL,
    co2_kg DOUBLE PRECISION NOT NULL, fuel_l DOUBLE PRECISION NOT NULL, distance_km DOUBLE PRECISION NOT NULL,
    idle_s DOUBLE PRECISION NOT NULL, avoided_co2_kg DOUBLE PRECISION NOT NULL,
    estimate_count BIGINT NOT NULL, worst_latency_us BIGINT NOT NULL,
    gap TEXT NOT NULL DEFAULT '', lost_first NUMERIC(20) NOT NULL DEFAULT 0, lost_last NUMERIC(20) NOT NULL DEFAULT 0,
    received_s DOUBLE PRECISION NOT NULL, raw_json TEXT NOT NULL"""

# version -> (statements for sqlite, statements for postgresql). Append only; never edit a released step.
MIGRATIONS: dict[int, tuple[list[str], list[str]]] = {
    1: (
        ["CREATE TABLE summary_keys (asset_id TEXT NOT NULL, sequence BIGINT NOT NULL, "
         "PRIMARY KEY (asset_id, sequence))",
         f"CREATE TABLE summaries ({_SUMMARY_COLUMNS}, PRIMARY KEY (asset_id, sequence))",
         "CREATE INDEX summaries_window ON summaries (window_start_s)"],
        ["CREATE TABLE summary_keys (asset_id TEXT NOT NULL, sequence BIGINT NOT NULL, "
         "PRIMARY KEY (asset_id, sequence))",
         f"CREATE TABLE summaries ({_SUMMARY_COLUMNS}, PRIMARY KEY (asset_id, sequence, window_start_s)) "
         "PARTITION BY RANGE (window_start_s)",
         "CREATE INDEX summaries_window ON summaries (window_start_s)"],
    ),
    # CSB3: measured vs modelled CO2, model ids, emission factor, uncertainty; NULL for older senders' rows.
    # ADD COLUMN with no default is instant on both (no table rewrite) and reaches every month partition.
    2: (_AUDIT_DDL, _AUDIT_DDL),
}
SCHEMA_VERSION = max(MIGRATIONS)
_LOCK_KEY = 0x0CA1F1EE7  # PostgreSQL advisory lock: one migrator / partition creator at a time


def month_bounds(t_s: float) -> tuple[str, float, float]:
    """The UTC month holding ``t_s`` (Unix s): partition name suffix ``y2026m12``, its start and end (Unix s)."""
    tm = time.gmtime(t_s)
    start = calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0))
    year, month = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
    return f"y{tm.tm_year:04d}m{tm.tm_mon:02d}", float(start), float(calendar.timegm((year, month, 1, 0, 0, 0)))


class FleetStore:
    """Summaries of a fleet in one database; use :func:`open_store`. One thread at a time (no locking here)."""

    def __init__(self, url: str, conn: Any, dialect: str) -> None:
        self.url = url
        self.dialect = dialect  # "sqlite" | "postgresql"
        self._conn = conn
        self._ph = "?" if dialect == "sqlite" else "%s"
        self._months: set[str] = set()  # partitions known to exist (postgresql)
        self._migrate()

    # ------------------------------------------------------------------ schema
    def _begin(self) -> Any:
        """A cursor in a new write transaction. Both connections are in autocommit, so reads hold no
        transaction open (an idle one would block a new month's partition); SQLite takes the write lock at once
        (BEGIN IMMEDIATE), so two processes migrating or writing at once queue instead of failing half way."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
        return cur

    def _migrate(self) -> None:
        cur = self._begin()
        if self.dialect == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cur.execute("SELECT MAX(version) FROM schema_version")
        have = cur.fetchone()[0] or 0
        if have > SCHEMA_VERSION:
            cur.execute("ROLLBACK")
            raise ConfigError(
                f"fleet store {self.safe_url()}: schema version {have} is newer than this carbon_ai understands "
                f"(up to {SCHEMA_VERSION}): upgrade carbon_ai, or point --db at another database")
        for version in range(have + 1, SCHEMA_VERSION + 1):
            for sql in MIGRATIONS[version][0 if self.dialect == "sqlite" else 1]:
                cur.execute(sql)
            cur.execute(f"INSERT INTO schema_version (version) VALUES ({self._ph})", (version,))
        cur.execute("COMMIT")

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        cur = self._conn.cursor()
        cur.execute("SELECT MAX(version) FROM schema_version")
        return int(cur.fetchone()[0] or 0)

    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        if "@" in self.url and "://" in self.url:
            scheme, rest = self.url.split("://", 1)
            cred, host = rest.rsplit("@", 1)
            return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else self.url
        return self.url

    def _ensure_partitions(self, starts: Iterable[float]) -> None:
        cur = self._conn.cursor()
        for t_s in starts:
            name, lo, hi = month_bounds(t_s)
            if name in self._months:
                continue
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))  # two receivers, one new month
            cur.execute(f"CREATE TABLE IF NOT EXISTS summaries_{name} PARTITION OF summaries "
                        f"FOR VALUES FROM ({lo!r}) TO ({hi!r})")
            self._months.add(name)

    def partitions(self) -> list[str]:
        """Names of the month partitions of ``summaries`` (PostgreSQL; empty for SQLite), sorted."""
        if self.dialect != "postgresql":
            return []
        cur = self._conn.cursor()
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'summaries' ORDER BY 1")
        return [row[0] for row in cur.fetchall()]

    # ------------------------------------------------------------------ writing
    def write(self, summaries: list[Summary], received_s: float | None = None) -> list[Summary]:
        """Store each summary not stored before, in one transaction; return those that were new (in order).

        ``received_s`` (Unix s, default now) is kept per row so the report can tell late arrivals."""
        if not summaries:
            return []
        received = time.time() if received_s is None else received_s
        ph = self._ph
        self._reconnect_if_lost()
        cur = self._begin()
        try:
            if self.dialect == "postgresql":
                self._ensure_partitions({s.window_start_s for s in summaries})
            new = []
            for s in summaries:
                cur.execute(f"INSERT INTO summary_keys (asset_id, sequence) VALUES ({ph}, {ph}) "
                            "ON CONFLICT DO NOTHING RETURNING sequence", (s.asset_id, s.sequence))
                if cur.fetchone() is None:
                    continue  # stored before: a redelivery, a resend after reconnect, another receiver's
                row = s.as_dict()
                values = [s.asset_id, s.sequence, *(row.get(f, "" if f == "gap" else 0) for f in _FIELDS),
                          received, json.dumps(row, separators=(",", ":")),
                          *(row.get(f) for f in AUDIT_COLUMNS)]  # None (NULL) when the sender had no CSB3
                values[_COLUMNS.index("lost_first")] = str(s.lost_first)  # up to 2**64: NUMERIC, not BIGINT
                values[_COLUMNS.index("lost_last")] = str(s.lost_last)
                cur.execute(f"INSERT INTO summaries ({', '.join(_COLUMNS)}) "
                            f"VALUES ({', '.join([ph] * len(_COLUMNS))})", values)
                new.append(s)
            cur.execute("COMMIT")
        except BaseException:
            # psycopg's transaction status 2/3: in a transaction / a failed one (4: connection lost, nothing to undo)
            if self._conn.in_transaction if self.dialect == "sqlite" else self._conn.info.transaction_status in (2, 3):
                cur.execute("ROLLBACK")
            raise
        return new

    def _reconnect_if_lost(self) -> None:
        """PostgreSQL: a connection the server dropped (restart, failover) is opened again, so writing resumes
        when the server is back (the receiver retries; psycopg.OperationalError while it is still down)."""
        if self.dialect == "postgresql" and self._conn.broken:
            import psycopg

            self._conn = psycopg.connect(self.url, connect_timeout=10, autocommit=True)
            self._months.clear()  # (partitions made meanwhile by another receiver are found by IF NOT EXISTS)

    # ------------------------------------------------------------------ reading
    def rows(self, start_s: float, end_s: float, asset_id: str = "") -> list[dict[str, Any]]:
        """Stored rows whose window starts in [start_s, end_s) (Unix s), of one asset or all, by asset and
        sequence; each a dict of the ``summaries`` columns."""
        ph = self._ph
        sql = f"SELECT {', '.join(_COLUMNS)} FROM summaries WHERE window_start_s >= {ph} AND window_start_s < {ph}"
        params: list[Any] = [start_s, end_s]
        if asset_id:
            sql += f" AND asset_id = {ph}"
            params.append(asset_id)
        cur = self._conn.cursor()
        cur.execute(sql + " ORDER BY asset_id, sequence", params)
        out = []
        for row in cur.fetchall():
            d = dict(zip(_COLUMNS, row, strict=True))
            d["lost_first"], d["lost_last"] = int(d["lost_first"]), int(d["lost_last"])
            out.append(d)
        return out

    def _where(self, start_s: float, end_s: float, asset_id: str) -> tuple[str, list[Any]]:
        ph = self._ph
        sql = f"WHERE window_start_s >= {ph} AND window_start_s < {ph}"
        return (sql + f" AND asset_id = {ph}", [start_s, end_s, asset_id]) if asset_id else (sql, [start_s, end_s])

    def _select(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        cur = self._conn.cursor()
        cur.execute(sql, params)
        return cur.fetchall()

    def totals(self, start_s: float, end_s: float, asset_id: str = "", late_after_s: float = 300.0) \
            -> list[dict[str, Any]]:
        """Per asset, sums over the windows starting in [start_s, end_s) (Unix s), computed in the database
        (one GROUP BY, the same SQL for SQLite and PostgreSQL; the month's partition only, on PostgreSQL).

        Keys: asset_id, windows, gap_records, co2_kg, fuel_l, distance_km, idle_s, avoided_co2_kg, covered_s,
        seq_first, seq_last, late, audited (windows with audit fields), measured_s, measured_co2_kg,
        modelled_co2_kg, co2_sigma_kg (None when no window had them), unaudited_co2_kg."""
        where, params = self._where(start_s, end_s, asset_id)
        ph, ordinary = self._ph, "gap = ''"
        audited = f"{ordinary} AND measured_s IS NOT NULL"
        sql = (f"SELECT asset_id, SUM(CASE WHEN {ordinary} THEN 1 ELSE 0 END), SUM(CASE WHEN {ordinary} THEN 0 "
               "ELSE 1 END), SUM(co2_kg), SUM(fuel_l), SUM(distance_km), SUM(idle_s), SUM(avoided_co2_kg), "
               f"SUM(CASE WHEN {ordinary} THEN window_end_s - window_start_s ELSE 0 END), MIN(sequence), "
               f"MAX(sequence), SUM(CASE WHEN received_s - window_end_s > {ph} THEN 1 ELSE 0 END), "
               f"SUM(CASE WHEN {audited} THEN 1 ELSE 0 END), SUM(measured_s), SUM(measured_co2_kg), "
               f"SUM(modelled_co2_kg), SUM(co2_sigma_kg), SUM(CASE WHEN {ordinary} AND measured_s IS NULL "
               f"THEN co2_kg ELSE 0 END) FROM summaries {where} GROUP BY asset_id ORDER BY asset_id")
        keys = ("asset_id", "windows", "gap_records", "co2_kg", "fuel_l", "distance_km", "idle_s", "avoided_co2_kg",
                "covered_s", "seq_first", "seq_last", "late", "audited", "measured_s", "measured_co2_kg",
                "modelled_co2_kg", "co2_sigma_kg", "unaudited_co2_kg")
        return [dict(zip(keys, row, strict=True)) for row in self._select(sql, [late_after_s, *params])]

    def sources(self, start_s: float, end_s: float, asset_id: str = "") -> list[tuple[str, str, str, int]]:
        """(asset, model ids, emission factor, windows) of the audited windows starting in [start_s, end_s)."""
        where, params = self._where(start_s, end_s, asset_id)
        return self._select("SELECT asset_id, model_ids, emission_factor, COUNT(*) FROM summaries "
                            f"{where} AND gap = '' AND measured_s IS NOT NULL "
                            "GROUP BY asset_id, model_ids, emission_factor ORDER BY 1, 2, 3", params)

    def holes(self, start_s: float, end_s: float, asset_id: str = "") -> list[tuple[str, int, float, int]]:
        """Sequence numbers that never arrived, found in the database (LEAD over each asset's sequence): one
        (asset, sequence before the hole, that window's start s, next sequence received) per hole."""
        where, params = self._where(start_s, end_s, asset_id)
        return [(a, int(q), float(t), int(n)) for a, q, t, n in self._select(
            "SELECT asset_id, sequence, window_start_s, nxt FROM (SELECT asset_id, sequence, window_start_s, "
            f"LEAD(sequence) OVER (PARTITION BY asset_id ORDER BY sequence) AS nxt FROM summaries {where}) AS t "
            "WHERE nxt > sequence + 1 ORDER BY asset_id, sequence", params)]

    def count(self) -> int:
        """Number of stored summaries."""
        cur = self._conn.cursor()
        cur.execute("SELECT COUNT(*) FROM summaries")
        return int(cur.fetchone()[0])

    def size_bytes(self) -> int:
        """Bytes the store's tables and indexes take on disk (SQLite: the file; PostgreSQL: the database)."""
        cur = self._conn.cursor()
        if self.dialect == "sqlite":
            cur.execute("PRAGMA page_count")
            pages = cur.fetchone()[0]
            cur.execute("PRAGMA page_size")
            return int(pages * cur.fetchone()[0])
        cur.execute("SELECT pg_database_size(current_database())")
        return int(cur.fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def open_store(url: str) -> FleetStore:
    """Open (and create or migrate) the store at ``url``: ``sqlite:///PATH`` or ``postgresql://...``.

    Raises ConfigError naming the URL and the fix when the URL is malformed, the server cannot be reached or
    the schema is newer than this code."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise ConfigError(f"--db {url!r}: no file: write sqlite:///fleet.db or sqlite:////abs/path/fleet.db")
        parent = Path(path).parent
        if not parent.is_dir():
            raise ConfigError(f"--db {url!r}: directory {str(parent)!r} does not exist: create it first")
        try:
            # isolation_level None: transactions are _begin()'s; check_same_thread off: a receiver opens the store
            # in its main thread and writes from the MQTT loop's thread, one at a time
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")  # a report can read while the receiver writes
        except sqlite3.Error as exc:
            raise ConfigError(f"--db {url!r}: cannot open {path!r} ({exc}): check the path and permissions") \
                from exc
        return FleetStore(url, conn, "sqlite")
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(f"--db {url.split('@')[-1]!r}: psycopg is not installed: run ./setup.sh "
                              "(or pip install 'psycopg[binary]')") from exc
        try:
            pg_conn = psycopg.connect(url, connect_timeout=10, autocommit=True)  # transactions: _begin()
        except psycopg.Error as exc:
            host, detail = url.split("@")[-1], " ".join(str(exc).split())
            raise ConfigError(f"--db postgresql://...@{host}: cannot connect ({detail}): check that the "
                              "server runs, the host, port, user, password and database name") from exc
        return FleetStore(url, pg_conn, "postgresql")
    raise ConfigError(f"--db {url!r}: unknown database URL: use sqlite:///fleet.db or "
                      "postgresql://user:password@host:5432/dbname")
