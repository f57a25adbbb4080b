"""Store-and-forward queue of summaries on disk (SQLite, WAL), with sequence numbers that survive restarts.

Durability policy: the database runs in WAL mode with ``synchronous=FULL``, so every :meth:`DurableQueue.produce`
commit is fsynced to the write-ahead log before it returns: a summary counts as produced only once it is on
disk, and a power cut or SIGKILL after that loses nothing. At one summary per 10 s the fsync cost is
irrelevant (bench/bench_uplink.py measures it). Rows leave only through :meth:`DurableQueue.ack` (the broker's
PUBACK), the time-to-live, or the full policy, and the last two are counted. The sender's deletions are not
fsynced (``sender=True``: synchronous=NORMAL): one lost in a power cut means a resend that the receiver drops as
a duplicate, and skipping the fsync makes catch-up after an outage several times faster.

Limits follow AWS Greengrass stream manager's: a maximum stored size (payload bytes plus a fixed per-row
allowance), a time-to-live, and a policy when full: ``drop_oldest`` (keep the newest data) or
``refuse_newest`` (keep the oldest). Either way the sequence number is consumed, so the receiver sees the gap.

The sender and the producer may use separate instances (one per thread) on the same file: WAL lets them
read and write concurrently, and the stored-size total is kept by triggers inside each transaction.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from carbon_ai_nodes.core.errors import ConfigError
from carbon_ai_nodes.core.summary_codec import Summary, decode_batch, encode_batch

FULL_POLICIES = ("drop_oldest", "refuse_newest")
ROW_OVERHEAD_BYTES = 48  # SQLite row header, rowid, asset, sequence, timestamp: measured ~40-50 B per row

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS summaries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    asset TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    created_s REAL NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (asset, sequence)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('stored_bytes', 0), ('dropped_full', 0), ('expired', 0),
    ('refused_full', 0);
CREATE TRIGGER IF NOT EXISTS summaries_ins AFTER INSERT ON summaries BEGIN
    UPDATE meta SET value = value + length(NEW.payload) + {ROW_OVERHEAD_BYTES} WHERE key = 'stored_bytes';
END;
CREATE TRIGGER IF NOT EXISTS summaries_del AFTER DELETE ON summaries BEGIN
    UPDATE meta SET value = value - length(OLD.payload) - {ROW_OVERHEAD_BYTES} WHERE key = 'stored_bytes';
END;
"""


@dataclasses.dataclass(frozen=True)
class QueueLimits:
    """Bounds of the queue: stored bytes, time-to-live (s, 0 = keep until sent) and the policy when full."""

    max_bytes: int = 16_000_000
    ttl_s: float = 30 * 86400.0
    full_policy: str = "drop_oldest"

    def __post_init__(self) -> None:
        if self.max_bytes < 1024:
            raise ConfigError(f"queue max_bytes={self.max_bytes}: must be >= 1024")
        if not self.ttl_s >= 0:
            raise ConfigError(f"queue ttl_s={self.ttl_s}: must be >= 0")
        if self.full_policy not in FULL_POLICIES:
            raise ConfigError(f"queue full_policy={self.full_policy!r}: must be one of {', '.join(FULL_POLICIES)}")


@dataclasses.dataclass(frozen=True)
class Produced:
    """Outcome of :meth:`DurableQueue.produce`: the numbered summary, whether it was stored, what was dropped."""

    summary: Summary
    stored: bool
    dropped_oldest: int = 0


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """Depth (rows), stored bytes, oldest row's creation time (Unix s, NaN if empty) and loss counters."""

    depth: int
    stored_bytes: int
    oldest_created_s: float
    dropped_full: int
    refused_full: int
    expired: int


class DurableQueue:
    """A durable FIFO of summaries keyed by (asset, sequence); ``produce`` numbers and stores in one commit."""

    def __init__(self, path: str | Path, limits: QueueLimits | None = None,
                 clock: Callable[[], float] = time.time, *, sender: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.limits = limits or QueueLimits()
        self.clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # A sender's commits are deletions after PUBACK: losing one in a power cut only resends a summary the
            # receiver then drops as a duplicate, so they skip the fsync (NORMAL); the next FULL commit syncs them.
            self._db.execute("PRAGMA synchronous=NORMAL" if sender else "PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"uplink queue {self.path}: {exc} (move the file aside to start a new queue)") from exc

    # ----------------------------------------------------------------- producer side
    def produce(self, draft: Summary, markers: dict[str, float] | None = None) -> Produced:
        """Give ``draft`` the asset's next sequence number and store it durably (fsynced) in one transaction.

        ``markers`` (see :meth:`set_marker`) are written in the same commit, e.g. the end of this window.
        """
        now_s = self.clock()
        with self._transaction() as db:
            for key, value in (markers or {}).items():
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"marker/{key}", value))
            self._expire(db, now_s)
            key = f"next_sequence/{draft.asset_id}"
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            sequence = int(row[0]) if row else 1
            summary = dataclasses.replace(draft, sequence=sequence)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, sequence + 1))
            payload = encode_batch([summary])
            need = len(payload) + ROW_OVERHEAD_BYTES
            stored_bytes = self._meta(db, "stored_bytes")
            dropped = 0
            if stored_bytes + need > self.limits.max_bytes:
                if self.limits.full_policy == "refuse_newest" or need > self.limits.max_bytes:
                    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'refused_full'")
                    return Produced(summary, stored=False)
                while stored_bytes + need > self.limits.max_bytes:
                    oldest = db.execute("SELECT id FROM summaries ORDER BY id LIMIT 16").fetchall()
                    if not oldest:
                        break
                    for (row_id,) in oldest:
                        db.execute("DELETE FROM summaries WHERE id = ?", (row_id,))
                        dropped += 1
                        stored_bytes = self._meta(db, "stored_bytes")
                        if stored_bytes + need <= self.limits.max_bytes:
                            break
                db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_full'", (dropped,))
            db.execute("INSERT INTO summaries (asset, sequence, created_s, payload) VALUES (?, ?, ?, ?)",
                       (summary.asset_id, sequence, now_s, payload))
        return Produced(summary, stored=True, dropped_oldest=dropped)

    def next_sequence(self, asset_id: str) -> int:
        """The sequence number the asset's next summary will get (1 for a new asset)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"next_sequence/{asset_id}",)).fetchone()
        return int(row[0]) if row else 1

    def get_marker(self, key: str, default: float = float("nan")) -> float:
        """A persisted float (e.g. the end of the last produced window), or ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"marker/{key}",)).fetchone()
        return float(row[0]) if row else default

    def set_marker(self, key: str, value: float) -> None:
        """Persist a float under ``key`` (same durability as summaries)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"marker/{key}", value))

    # ----------------------------------------------------------------- sender side
    def pending(self, limit: int, after_id: int = 0, asset_id: str | None = None) -> list[tuple[int, Summary]]:
        """Up to ``limit`` oldest rows with id > ``after_id`` (the sender's in-flight cursor), oldest first."""
        return [(row_id, s) for row_id, _, s in self.pending_with_age(limit, after_id, asset_id)]

    def pending_with_age(self, limit: int, after_id: int = 0,
                         asset_id: str | None = None) -> list[tuple[int, float, Summary]]:
        """As :meth:`pending`, with each row's creation time (Unix s): (row id, created_s, summary)."""
        if asset_id is None:
            rows = self._db.execute(
                "SELECT id, created_s, asset, payload FROM summaries WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit))
        else:
            rows = self._db.execute(
                "SELECT id, created_s, asset, payload FROM summaries WHERE id > ? AND asset = ? ORDER BY id LIMIT ?",
                (after_id, asset_id, limit))
        return [(row_id, created_s, decode_batch(asset, payload)[0])
                for row_id, created_s, asset, payload in rows.fetchall()]

    def ack(self, row_ids: Iterable[int]) -> int:
        """Remove rows the broker acknowledged; returns how many were still there."""
        ids = list(row_ids)
        if not ids:
            return 0
        with self._transaction() as db:
            cur = db.executemany("DELETE FROM summaries WHERE id = ?", [(i,) for i in ids])
            return cur.rowcount

    def expire(self) -> int:
        """Drop rows older than the time-to-live; returns how many."""
        with self._transaction() as db:
            return self._expire(db, self.clock())

    def stats(self) -> QueueStats:
        """Current depth, stored bytes, oldest row time and loss counters (cumulative over restarts)."""
        depth, oldest = self._db.execute("SELECT COUNT(*), MIN(created_s) FROM summaries").fetchone()
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        return QueueStats(
            depth=int(depth), stored_bytes=int(meta.get("stored_bytes", 0)),
            oldest_created_s=float(oldest) if oldest is not None else float("nan"),
            dropped_full=int(meta.get("dropped_full", 0)), refused_full=int(meta.get("refused_full", 0)),
            expired=int(meta.get("expired", 0)),
        )

    def close(self) -> None:
        """Close the connection (the data stays on disk)."""
        self._db.close()

    # ----------------------------------------------------------------- internals
    def _expire(self, db: sqlite3.Connection, now_s: float) -> int:
        if self.limits.ttl_s <= 0:
            return 0
        n = db.execute("DELETE FROM summaries WHERE created_s < ?", (now_s - self.limits.ttl_s,)).rowcount
        if n:
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'expired'", (n,))
        return n

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock up front, so no deadlock upgrade."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
