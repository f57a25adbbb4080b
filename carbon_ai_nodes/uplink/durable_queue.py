"""Store-and-forward queue of summaries on disk (SQLite, WAL), with sequence numbers that are never reused.

Durability policy: the database runs in WAL mode with ``synchronous=FULL``, so every :meth:`DurableQueue.produce`
commit is fsynced to the write-ahead log before it returns: a summary counts as produced only once it is on
disk, and a power cut or SIGKILL after that loses nothing. At one summary per 10 s the fsync cost is
irrelevant (bench/bench_uplink.py measures it). Rows leave only through :meth:`DurableQueue.ack` (the broker's
PUBACK), the time-to-live, or the full policy. The sender's deletions are not fsynced (``sender=True``:
synchronous=NORMAL): one lost in a power cut means a resend that the receiver drops as a duplicate, and skipping
the fsync makes catch-up after an outage several times faster.

Sequence numbers: before a commit uses a number, a separate small file (``<queue>.seq``, :class:`SequenceMark`)
records the next free one, written to a temporary file, fsynced and renamed. Whatever later happens to the SQLite
files (WAL deleted, truncated or with flipped bytes, which SQLite silently treats as "the last commits never
happened"; the main file truncated; pages corrupted), opening compares the two: numbering continues after the
mark, and the numbers the queue no longer knows are reported upstream in a **gap record** (see
``summary_codec``): "of sequences N..M, any you have not received is lost: queue corrupted". A queue SQLite
reports as corrupt is moved aside (``<queue>.corrupt-<UTC time>``, kept for forensics) and a new one started.

Losses are never silent: rows dropped by the full policy or the time-to-live become a gap record too (pending
gaps merge, and wait in the meta table until there is room for their record). Limits follow AWS Greengrass
stream manager's: a maximum stored size (payload bytes plus a fixed per-row allowance), a time-to-live, and a
policy when full: ``drop_oldest`` (keep the newest data) or ``refuse_newest`` (keep the oldest). The files on disk
stay bounded too: SQLite checkpoints the WAL and cuts it back once it outgrows a quarter of ``max_bytes`` (64 KiB
.. 4 MiB); at twice that (the other connection's reads can hold SQLite's own checkpoint back) one is forced here,
and freed pages are returned (incremental auto-vacuum). 4096 B of rows take at most ~94 KB of files.

The sender and the producer may use separate instances (one per thread) on the same file: WAL lets them
read and write concurrently, and the stored-size total is kept by triggers inside each transaction. Only the
producer (``sender=False``) numbers, checks and repairs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from carbon_ai_nodes.common.errors import CarbonAIError, ConfigError
from carbon_ai_nodes.uplink.summary_codec import (
    GAP_REASONS,
    VERSION_GAPS,
    Summary,
    decode_batch,
    encode_batch,
    gap_mask,
    gap_names,
)

FULL_POLICIES = ("drop_oldest", "refuse_newest")
ROW_OVERHEAD_BYTES = 48  # SQLite row header, rowid, asset, sequence, timestamp: measured ~40-50 B per row
GAP_ROW_BYTES = 64 + ROW_OVERHEAD_BYTES  # room kept for one gap record (its CSB2 payload is < 64 B)
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB

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
    ('refused_full', 0), ('gap_records', 0);
CREATE TRIGGER IF NOT EXISTS summaries_ins AFTER INSERT ON summaries BEGIN
    UPDATE meta SET value = value + length(NEW.payload) + {ROW_OVERHEAD_BYTES} WHERE key = 'stored_bytes';
END;
CREATE TRIGGER IF NOT EXISTS summaries_del AFTER DELETE ON summaries BEGIN
    UPDATE meta SET value = value - length(OLD.payload) - {ROW_OVERHEAD_BYTES} WHERE key = 'stored_bytes';
END;
"""


class QueueDamagedError(CarbonAIError):
    """SQLite reports the queue file corrupt while in use: reopen the queue (which repairs it) and retry."""


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
    """Outcome of :meth:`DurableQueue.produce`: the numbered summary, whether it was stored, what was dropped,
    and the gap record stored in the same commit (None if none)."""

    summary: Summary
    stored: bool
    dropped_oldest: int = 0
    gap: Summary | None = None


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """Depth (rows), stored bytes, oldest row's creation time (Unix s, NaN if empty) and loss counters."""

    depth: int
    stored_bytes: int
    oldest_created_s: float
    dropped_full: int
    refused_full: int
    expired: int
    gap_records: int = 0
    file_bytes: int = 0  # the SQLite file and its WAL


@dataclasses.dataclass
class Gap:
    """What is lost and why: sequences ``first..last`` (0 = none) and the time span ``start_s..end_s`` (Unix s)."""

    reasons: int
    first: int = 0
    last: int = 0
    start_s: float = math.inf
    end_s: float = -math.inf

    def merge(self, other: Gap) -> Gap:
        """One gap covering both (reasons combined; "any you have not received" keeps a covering range true)."""
        firsts = [g.first for g in (self, other) if g.first]
        return Gap(self.reasons | other.reasons, min(firsts, default=0),
                   max(self.last, other.last) if firsts else 0,
                   min(self.start_s, other.start_s), max(self.end_s, other.end_s))

    def record(self, asset_id: str, sequence: int) -> Summary:
        """The gap record: zero totals over the lost span (an empty span when none is known)."""
        start_s = self.start_s if math.isfinite(self.start_s) else 0.0
        end_s = max(start_s, self.end_s) if math.isfinite(self.end_s) else start_s
        return Summary(asset_id, sequence, start_s, end_s, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0,
                       gap=gap_names(self.reasons), lost_first=self.first, lost_last=self.last)

    @staticmethod
    def of_row(summary: Summary, reason: str) -> Gap:
        """The gap left by dropping a stored row (a dropped gap record passes its own gap on)."""
        gap = Gap(GAP_REASONS[reason], summary.sequence, summary.sequence, summary.window_start_s,
                  summary.window_end_s)
        if summary.gap:
            gap = gap.merge(Gap(gap_mask(summary.gap), summary.lost_first, summary.lost_last))
        return gap


class SequenceMark:
    """The queue's sequence high-water mark, in a file of its own that survives damage to the SQLite files.

    Per asset: ``next`` (first number never handed out), ``prev`` (``next`` before the last reservation: the
    queue equal to it means the last commit was interrupted), ``pending_from`` / ``pending_from_s`` (lowest
    sequence still queued after the last commit, and its window start) and ``produced_to_s``. :meth:`save`
    writes a temporary file, fsyncs it, renames it over the old one and fsyncs the folder: all or nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.assets: dict[str, dict[str, float]] = {}
        self.problem = ""  # why the file could not be read ("" = read fine or absent)
        try:
            data = json.loads(path.read_text())
            self.assets = {str(k): {kk: float(vv) for kk, vv in v.items()} for k, v in data["assets"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.problem = f"{type(exc).__name__}: {exc}"

    def save(self) -> None:
        """Replace the file durably (raises OSError on a full or failing disk: then no number is handed out)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps({"version": 1, "assets": self.assets}, separators=(",", ":")))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DurableQueue:
    """A durable FIFO of summaries keyed by (asset, sequence); ``produce`` numbers and stores in one commit.

    Opening as the producer (``sender=False``) checks the file and the sequence mark and repairs what it can;
    :attr:`recoveries` lists what it found, one line each, for the caller to log as errors.
    """

    def __init__(self, path: str | Path, limits: QueueLimits | None = None,
                 clock: Callable[[], float] = time.time, *, sender: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.limits = limits or QueueLimits()
        self.clock = clock
        self.sender = sender
        self.recoveries: list[str] = []
        self.moved_aside: Path | None = None
        self._wal_limit_bytes = min(max(self.limits.max_bytes // 4, 64 * 1024), 4 * 1024 * 1024)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._open()
            except sqlite3.DatabaseError as exc:
                if sender or not _is_corruption(exc):
                    raise
                self._move_aside(exc)
                self._open()
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"uplink queue {self.path}: {exc} (move the file aside to start a new queue)") from exc
        self._mark: SequenceMark | None = None
        if not sender:
            self._mark = SequenceMark(self.path.with_name(self.path.name + ".seq"))
            self._reconcile()

    def _open(self) -> None:
        self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only
            self._db.execute("PRAGMA journal_mode=WAL")
            # A sender's commits are deletions after PUBACK: losing one in a power cut only resends a summary the
            # receiver then drops as a duplicate, so they skip the fsync (NORMAL); the next FULL commit syncs them.
            self._db.execute("PRAGMA synchronous=NORMAL" if self.sender else "PRAGMA synchronous=FULL")
            # SQLite's own bound: a checkpoint every quarter of max_bytes, and the WAL cut back to that size
            self._db.execute(f"PRAGMA wal_autocheckpoint={max(self._wal_limit_bytes // 4096, 16)}")
            self._db.execute(f"PRAGMA journal_size_limit={self._wal_limit_bytes}")
            self._db.executescript(_SCHEMA)
            if not self.sender:
                problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)").fetchall()]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {'; '.join(problems)}")
        except BaseException:
            self._db.close()
            raise

    def _move_aside(self, exc: Exception) -> None:
        """Keep a corrupt queue for forensics under a new name; a fresh one is opened next."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        self.moved_aside = aside
        self.recoveries.append(f"uplink queue {self.path} is corrupt ({exc}): moved to {aside}, started a new one")

    def _reconcile(self) -> None:
        """Numbering continues after the sequence mark; numbers the queue no longer holds become a gap record."""
        mark = self._mark
        assert mark is not None
        if mark.problem or (self.moved_aside is not None and not mark.assets):
            # nothing survives to continue from: the one case where a number can be handed out twice
            self.recoveries.append(f"sequence mark {mark.path} {mark.problem or 'missing'}: numbering continues from "
                                   "the queue, and a receiver holding the same numbers will drop new summaries as "
                                   "duplicates")
        now_s = self.clock()
        with self._transaction() as db:
            assets = {k.split("/", 1)[1] for (k,) in db.execute(
                "SELECT key FROM meta WHERE key LIKE 'next_sequence/%'")} | set(mark.assets)
            for asset in sorted(assets):
                m = mark.assets.get(asset)
                db_next = self._next(db, asset)
                if m is None or db_next >= m["next"]:
                    continue
                next_seq = int(m["next"])
                interrupted = self.moved_aside is None and db_next == int(m.get("prev", -1))
                reason = "bridge_crash" if interrupted else "queue_corrupted"
                first = db_next if interrupted else max(db_next, int(m.get("pending_from", 1)))
                start_s = m.get("produced_to_s" if interrupted else "pending_from_s", math.nan)
                gap = Gap(GAP_REASONS[reason], first, next_seq - 1, start_s if math.isfinite(start_s) else now_s,
                          now_s)
                self.recoveries.append(
                    f"uplink queue {self.path}: sequences {first}..{next_seq - 1} of {asset} lost ({reason}: the "
                    f"queue knows numbers up to {db_next - 1}, the sequence mark up to {next_seq - 1}); numbering "
                    f"continues at {next_seq} and the loss is reported upstream as a gap record")
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"next_sequence/{asset}",
                                                                                     next_seq))
                produced_to_s = m.get("produced_to_s", -math.inf)
                if math.isfinite(produced_to_s) and produced_to_s > self._marker(db, f"window_end/{asset}"):
                    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                               (f"marker/window_end/{asset}", produced_to_s))
                self._add_gap(db, asset, gap)
                self._store_gap(db, asset)
            for asset in sorted(assets):
                self._update_mark(db, asset, self._next(db, asset))

    # ----------------------------------------------------------------- producer side
    def produce(self, draft: Summary, markers: dict[str, float] | None = None) -> Produced:
        """Give ``draft`` the asset's next sequence number and store it durably (fsynced) in one transaction.

        ``markers`` (see :meth:`set_marker`) are written in the same commit, e.g. the end of this window. A
        pending gap (rows the limits dropped) is stored as a gap record in the same commit when there is room.
        """
        now_s = self.clock()
        asset = draft.asset_id
        with self._transaction() as db:
            for key, value in (markers or {}).items():
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"marker/{key}", value))
            self._expire(db, now_s)
            prev_next = sequence = self._next(db, asset)
            summary = dataclasses.replace(draft, sequence=sequence)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       (f"next_sequence/{asset}", sequence + 1))
            payload = encode_batch([summary])
            need = len(payload) + ROW_OVERHEAD_BYTES
            gap_room = GAP_ROW_BYTES if self._pending_gap(db, asset) else 0
            dropped = 0
            stored = True
            if self._meta(db, "stored_bytes") + need + gap_room > self.limits.max_bytes:
                if self.limits.full_policy == "refuse_newest" or need + GAP_ROW_BYTES > self.limits.max_bytes:
                    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'refused_full'")
                    self._add_gap(db, asset, Gap.of_row(summary, "queue_full"))
                    stored = False
                else:  # drop_oldest: make room for the summary and for the gap record the drops leave
                    while self._meta(db, "stored_bytes") + need + GAP_ROW_BYTES > self.limits.max_bytes:
                        oldest = db.execute("SELECT id, asset, payload FROM summaries ORDER BY id LIMIT 1").fetchone()
                        if oldest is None:
                            break
                        self._drop_row(db, oldest, reason="queue_full")
                        dropped += 1
                    db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_full'", (dropped,))
            if stored:
                db.execute("INSERT INTO summaries (asset, sequence, created_s, payload) VALUES (?, ?, ?, ?)",
                           (asset, sequence, now_s, payload))
            gap = self._store_gap(db, asset)
            self._update_mark(db, asset, prev_next, produced_to_s=draft.window_end_s)
        self._bound_files()
        return Produced(summary, stored=stored, dropped_oldest=dropped, gap=gap)

    def report_gap(self, asset_id: str, reason: str, start_s: float, end_s: float) -> Summary | None:
        """Store a gap record now for a time span whose data is lost (e.g. a crash); None if the queue is full
        (the gap then waits, merged with later ones, for room)."""
        with self._transaction() as db:
            prev_next = self._next(db, asset_id)
            self._add_gap(db, asset_id, Gap(GAP_REASONS[reason], 0, 0, start_s, end_s))
            gap = self._store_gap(db, asset_id)
            self._update_mark(db, asset_id, prev_next)
        return gap

    def pending_gap(self, asset_id: str) -> Gap | None:
        """The loss still waiting for room for its gap record (refuse_newest on a full queue), or None."""
        return self._pending_gap(self._db, asset_id)

    def next_sequence(self, asset_id: str) -> int:
        """The sequence number the asset's next summary will get (1 for a new asset)."""
        return self._next(self._db, asset_id)

    def get_marker(self, key: str, default: float = float("nan")) -> float:
        """A persisted float (e.g. the end of the last produced window), or ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"marker/{key}",)).fetchone()
        return float(row[0]) if row else default

    def set_marker(self, key: str, value: float) -> None:
        """Persist a float under ``key`` (same durability as summaries)."""
        self.set_text(key, value)

    def get_text(self, key: str) -> str | None:
        """A persisted string (e.g. a window checkpoint), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"marker/{key}",)).fetchone()
        return None if row is None else str(row[0])

    def set_text(self, key: str, value: str | float) -> None:
        """Persist ``value`` under ``key``, fsynced (a window checkpoint costs one small commit)."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"marker/{key}", value))
        self._bound_files()

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
            n = db.executemany("DELETE FROM summaries WHERE id = ?", [(i,) for i in ids]).rowcount
        self._bound_files()
        return n

    def expire(self) -> int:
        """Drop rows older than the time-to-live (they become a pending gap); returns how many."""
        with self._transaction() as db:
            return self._expire(db, self.clock())

    def stats(self) -> QueueStats:
        """Current depth, stored bytes, oldest row time, loss counters (since the file was created), file sizes."""
        depth, oldest = self._db.execute("SELECT COUNT(*), MIN(created_s) FROM summaries").fetchone()
        meta = dict(self._db.execute("SELECT key, value FROM meta WHERE key NOT LIKE '%/%'").fetchall())
        wal_bytes, main_bytes = self._file_bytes()
        return QueueStats(
            depth=int(depth), stored_bytes=int(meta.get("stored_bytes", 0)),
            oldest_created_s=float(oldest) if oldest is not None else float("nan"),
            dropped_full=int(meta.get("dropped_full", 0)), refused_full=int(meta.get("refused_full", 0)),
            expired=int(meta.get("expired", 0)), gap_records=int(meta.get("gap_records", 0)),
            file_bytes=main_bytes + wal_bytes,
        )

    def close(self) -> None:
        """Close the connection (the data stays on disk)."""
        self._db.close()

    # ----------------------------------------------------------------- internals
    def _next(self, db: sqlite3.Connection, asset_id: str) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (f"next_sequence/{asset_id}",)).fetchone()
        return int(row[0]) if row else 1

    def _marker(self, db: sqlite3.Connection, key: str) -> float:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (f"marker/{key}",)).fetchone()
        return float(row[0]) if row else -math.inf

    def _pending_gap(self, db: sqlite3.Connection, asset_id: str) -> Gap | None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (f"gap/{asset_id}",)).fetchone()
        return Gap(**json.loads(row[0])) if row else None

    def _add_gap(self, db: sqlite3.Connection, asset_id: str, gap: Gap) -> None:
        pending = self._pending_gap(db, asset_id)
        merged = gap if pending is None else pending.merge(gap)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   (f"gap/{asset_id}", json.dumps(dataclasses.asdict(merged))))

    def _store_gap(self, db: sqlite3.Connection, asset_id: str) -> Summary | None:
        """Turn the asset's pending gap into a numbered gap record row if it fits; returns the record."""
        pending = self._pending_gap(db, asset_id)
        if pending is None:
            return None
        # one queued gap record per asset: an unsent older one is folded into the new one (its own number too)
        for row in db.execute("SELECT id, asset, payload FROM summaries WHERE asset = ? AND substr(payload, 1, 1) "
                              "= ?", (asset_id, bytes([VERSION_GAPS]))).fetchall():
            self._drop_row(db, row, reason=gap_names(pending.reasons).split("+")[0])
        pending = self._pending_gap(db, asset_id)
        assert pending is not None
        if self._meta(db, "stored_bytes") + GAP_ROW_BYTES > self.limits.max_bytes:
            return None
        sequence = self._next(db, asset_id)
        record = pending.record(asset_id, sequence)
        db.execute("INSERT INTO summaries (asset, sequence, created_s, payload) VALUES (?, ?, ?, ?)",
                   (asset_id, sequence, self.clock(), encode_batch([record])))
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"next_sequence/{asset_id}",
                                                                             sequence + 1))
        db.execute("DELETE FROM meta WHERE key = ?", (f"gap/{asset_id}",))
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'gap_records'")
        return record

    def _drop_row(self, db: sqlite3.Connection, row: tuple[int, str, bytes], reason: str) -> None:
        """Delete one summaries row ``(id, asset, payload)``, leaving a gap record that names it."""
        row_id, asset_id, payload = row
        db.execute("DELETE FROM summaries WHERE id = ?", (row_id,))
        self._add_gap(db, asset_id, Gap.of_row(decode_batch(asset_id, payload)[0], reason))

    def _update_mark(self, db: sqlite3.Connection, asset_id: str, prev_next: int,
                     produced_to_s: float | None = None) -> None:
        """Record the next free number durably, inside the transaction and before its COMMIT."""
        if self._mark is None:
            return
        next_seq = self._next(db, asset_id)
        old = self._mark.assets.get(asset_id, {})
        first = db.execute("SELECT sequence, payload FROM summaries WHERE asset = ? ORDER BY id LIMIT 1",
                           (asset_id,)).fetchone()
        entry = {
            "next": next_seq, "prev": prev_next,
            "pending_from": first[0] if first else next_seq,
            "pending_from_s": decode_batch(asset_id, first[1])[0].window_start_s if first else self.clock(),
            "produced_to_s": produced_to_s if produced_to_s is not None else old.get("produced_to_s", -math.inf),
        }
        if entry != old:
            self._mark.assets[asset_id] = entry
            self._mark.save()

    def _expire(self, db: sqlite3.Connection, now_s: float) -> int:
        if self.limits.ttl_s <= 0:
            return 0
        rows = db.execute("SELECT id, asset, payload FROM summaries WHERE created_s < ?",
                          (now_s - self.limits.ttl_s,)).fetchall()
        for row in rows:
            self._drop_row(db, row, reason="expired")
        if rows:
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'expired'", (len(rows),))
        return len(rows)

    def _file_bytes(self) -> tuple[int, int]:
        sizes = []
        for suffix in ("-wal", ""):
            try:
                sizes.append(os.path.getsize(str(self.path) + suffix))
            except OSError:
                sizes.append(0)
        return sizes[0], sizes[1]

    def _bound_files(self) -> None:
        """Keep the files near the stored size: SQLite's auto-checkpoint cannot reset a WAL while the other
        connection reads, so a WAL past twice its limit is checkpointed and truncated here, freed pages returned."""
        if self._file_bytes()[0] <= 2 * self._wal_limit_bytes:
            return
        self._db.execute("PRAGMA incremental_vacuum")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in _CORRUPT_CODES
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock up front, so no deadlock upgrade."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        except sqlite3.DatabaseError as failure:
            if exc is None:
                exc = failure
                if not _is_corruption(failure):
                    raise
        if isinstance(exc, sqlite3.DatabaseError) and _is_corruption(exc):
            raise QueueDamagedError(f"uplink queue: {exc}") from exc
