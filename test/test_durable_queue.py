"""Durable queue and payload codec: persistence across reopen and SIGKILL, limits and full policies, TTL,
codec round trip and refusal of hostile payloads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_ai_nodes.common.errors import ConfigError, InputRejectedError
from carbon_ai_nodes.uplink.durable_queue import DurableQueue, QueueLimits
from carbon_ai_nodes.uplink.summary_codec import Summary, decode_batch, encode_batch


def draft(i=0, asset="truck1"):
    return Summary(asset, 0, 1_700_000_000.0 + 10 * i, 1_700_000_010.0 + 10 * i, 0.05 + i * 1e-3, 0.02, 0.3,
                   1.5, -0.002, 100, 2500)


def test_sequences_continue_after_reopen_and_rows_leave_only_on_ack(tmp_path):
    q = DurableQueue(tmp_path / "q.db")
    assert [q.produce(draft(i)).summary.sequence for i in range(3)] == [1, 2, 3]
    rows = q.pending(10)
    assert [s.sequence for _, s in rows] == [1, 2, 3]
    assert q.ack([rows[0][0]]) == 1
    q.close()
    q = DurableQueue(tmp_path / "q.db")
    assert q.next_sequence("truck1") == 4 and q.next_sequence("other") == 1
    assert [s.sequence for _, s in q.pending(10)] == [2, 3]
    assert [s.sequence for _, s in q.pending(10, after_id=rows[1][0])] == [3]
    assert q.produce(draft(3)).summary.sequence == 4


def test_a_produced_summary_survives_sigkill_of_the_writer(tmp_path):
    code = (
        "import os, signal, sys; sys.path.insert(0, {!r})\n"
        "from test_durable_queue import draft\n"
        "from carbon_ai_nodes.uplink.durable_queue import DurableQueue\n"
        "q = DurableQueue({!r})\n"
        "for i in range(5): q.produce(draft(i))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    ).format(os.path.dirname(__file__), str(tmp_path / "q.db"))
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    q = DurableQueue(tmp_path / "q.db")
    assert [s.sequence for _, s in q.pending(10)] == [1, 2, 3, 4, 5]


def accounted(q, asset="truck1"):
    """Every number handed out is either queued or inside a queued gap record's lost range: nothing silent."""
    rows = [s for _, s in q.pending(100_000, asset_id=asset)]
    covered = {s.sequence for s in rows}
    for s in rows:
        if s.gap and s.lost_first:
            covered |= set(range(s.lost_first, s.lost_last + 1))
    waiting = q.pending_gap(asset)  # a full refuse_newest queue keeps the gap until its record fits
    if waiting is not None and waiting.first:
        covered |= set(range(waiting.first, waiting.last + 1))
    return rows, set(range(1, q.next_sequence(asset))) - covered


@pytest.mark.parametrize("policy", ["drop_oldest", "refuse_newest"])
def test_full_queue_applies_its_policy_and_reports_the_loss_as_a_gap_record(tmp_path, policy):
    q = DurableQueue(tmp_path / "q.db", QueueLimits(max_bytes=1024, ttl_s=0, full_policy=policy))
    results = [q.produce(draft(i)) for i in range(40)]
    stats = q.stats()
    assert stats.stored_bytes <= 1024 and 0 < stats.depth < 40
    rows, silent = accounted(q)
    assert silent == set()  # every dropped or refused number is in a gap record
    kept = [s.sequence for s in rows if not s.gap]
    if policy == "drop_oldest":
        assert kept[-1] == results[-1].summary.sequence  # the newest survive
        assert stats.dropped_full > 0 and stats.refused_full == 0
        assert [s.gap for s in rows if s.gap] == ["queue_full"]  # one record: older ones merged into it
    else:
        assert kept == list(range(1, len(kept) + 1))  # the oldest survive
        assert stats.refused_full > 0 and not results[-1].stored
        waiting = q.pending_gap("truck1")
        assert (waiting.first, waiting.last) == (len(kept) + 1, 40)
        q.ack([row_id for row_id, _ in q.pending(100)])  # the link drains the queue: now the record fits
        gap = q.produce(draft(40)).gap
        assert (gap.gap, gap.lost_first, gap.lost_last, gap.sequence) == ("queue_full", len(kept) + 1, 40, 42)
        assert q.pending_gap("truck1") is None
    numbers = [r.summary.sequence for r in results]
    assert numbers == sorted(set(numbers))  # numbers are consumed either way, never twice


def test_ttl_expires_old_rows(tmp_path):
    now = [1000.0]
    q = DurableQueue(tmp_path / "q.db", QueueLimits(ttl_s=60.0), clock=lambda: now[0])
    q.produce(draft(0))
    now[0] += 30
    q.produce(draft(1))
    now[0] += 40
    assert q.expire() == 1
    assert [s.sequence for _, s in q.pending(10)] == [2]
    assert q.stats().expired == 1


def test_stored_bytes_stay_consistent_across_two_connections(tmp_path):
    producer, sender = DurableQueue(tmp_path / "q.db"), DurableQueue(tmp_path / "q.db")
    for i in range(10):
        producer.produce(draft(i))
    sender.ack([row_id for row_id, _ in sender.pending(6)])
    assert producer.stats().depth == 4
    assert producer.stats().stored_bytes == sender.stats().stored_bytes > 0
    sender.ack([row_id for row_id, _ in sender.pending(6)])
    assert producer.stats().stored_bytes == 0


def test_a_queue_path_that_cannot_be_a_database_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "q.db"
    path.mkdir()
    with pytest.raises(ConfigError, match=str(path)):
        DurableQueue(path)


def test_codec_round_trip_quantises_to_stated_resolution():
    batch = [Summary("truck1", 7 + i + (i > 2) * 3, 1_700_000_000.0 + 10 * i, 1_700_000_010.0 + 10 * i,
                     0.0123456, 0.0456, 0.2999, 3.25, -0.0011, 120, 4321) for i in range(5)]
    payload = encode_batch(batch)
    assert len(payload) < 20 * len(batch)
    back = decode_batch("truck1", payload)
    assert [s.sequence for s in back] == [s.sequence for s in batch]
    for a, b in zip(batch, back, strict=True):
        assert b.window_start_s == a.window_start_s and b.window_end_s == a.window_end_s
        assert b.co2_kg == pytest.approx(a.co2_kg, abs=0.5e-6)
        assert b.fuel_l == pytest.approx(a.fuel_l, abs=0.5e-3)
        assert b.distance_km == pytest.approx(a.distance_km, abs=0.5e-4)
        assert b.idle_s == pytest.approx(a.idle_s, abs=0.05)
        assert b.avoided_co2_kg == pytest.approx(a.avoided_co2_kg, abs=0.5e-6)
        assert (b.estimate_count, b.worst_latency_us) == (120, 4321)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "empty"),
    (b"\x04\x01\x01", "version"),
    (b"\x01\x01", "truncated"),
    (b"\x01" + b"\xff" * 20, "bad_varint"),
    (b"\x01\x00\x01\x01", "bad_count"),
    (b"\x01\xff\xff\x03\x01\x01", "bad_count"),
    (encode_batch([draft(0)]) + b"\x00", "trailing_bytes"),
    (b'{"asset_id": "x", "sequence": 1}', "version"),
])
def test_hostile_payloads_are_refused_with_a_reason(payload, reason):
    with pytest.raises(InputRejectedError) as info:
        decode_batch("truck1", payload)
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_anything_but_a_rejection(data):
    try:
        decode_batch("truck1", data)
    except InputRejectedError:
        pass


def killed_writer(path, produced=30, acked=20, extra=""):
    """A process that produces ``acked`` summaries, has them acknowledged, produces up to ``produced``, runs
    ``extra``, then SIGKILLs itself (no checkpoint, no close: the WAL holds everything, as after a crash)."""
    code = (
        f"import os, signal, sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from test_durable_queue import draft\n"
        "from carbon_ai_nodes.uplink.durable_queue import DurableQueue\n"
        f"q = DurableQueue({str(path)!r}); s = DurableQueue({str(path)!r}, sender=True)\n"
        f"for i in range({acked}): q.produce(draft(i))\n"
        "s.ack([r for r, _ in s.pending(1000)])\n"
        f"for i in range({acked}, {produced}): q.produce(draft(i))\n"
        f"{extra}\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL


def damage(path, kind):
    wal = path.with_name(path.name + "-wal")
    if kind == "wal_deleted":
        wal.unlink()
    elif kind == "wal_truncated":
        os.truncate(wal, wal.stat().st_size // 2)
    elif kind == "wal_flipped":
        data = bytearray(wal.read_bytes())
        for i in range(len(data) // 2, len(data) // 2 + 64):
            data[i] ^= 0xFF
        wal.write_bytes(bytes(data))
    elif kind == "main_truncated":
        os.truncate(path, 0)
    elif kind == "pages_corrupted":
        data = bytearray(path.read_bytes())
        for page in range(1, len(data) // 4096):  # every page but the first (the header and schema)
            for i in range(page * 4096 + 8, page * 4096 + 200):
                data[i] ^= 0x5A
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["wal_deleted", "wal_truncated", "wal_flipped", "main_truncated",
                                  "pages_corrupted"])
def test_queue_damage_never_reuses_a_number_and_reports_the_loss_as_a_gap_record(tmp_path, kind):
    path = tmp_path / "q.db"
    # pages_corrupted needs the rows in the main file: checkpoint before the crash
    killed_writer(path, extra="q._db.execute('PRAGMA wal_checkpoint(TRUNCATE)')" if kind == "pages_corrupted" else "")
    damage(path, kind)
    q = DurableQueue(path)
    assert q.next_sequence("truck1") > 30  # before the fix: 1 (WAL deleted, main truncated) or 15
    assert q.recoveries, "the loss must be reported"
    rows = [s for _, s in q.pending(100)]
    gaps = [s for s in rows if s.gap]
    assert len(gaps) == 1 and gaps[0].gap == "queue_corrupted" and gaps[0].sequence == 31
    queued = {s.sequence for s in rows if not s.gap}
    lost = set(range(gaps[0].lost_first, gaps[0].lost_last + 1))
    assert set(range(21, 31)) <= queued | lost  # every unsent summary is still queued or reported lost
    assert (gaps[0].lost_first, gaps[0].lost_last) == (21, 30)  # not the delivered ones
    if kind == "pages_corrupted":
        assert q.moved_aside is not None and q.moved_aside.exists()
        assert "corrupt" in q.recoveries[0]
    assert q.produce(draft(31)).summary.sequence == 32
    q.close()
    again = DurableQueue(path)  # a clean reopen finds nothing more to report
    assert again.recoveries == [] and again.next_sequence("truck1") == 33


def test_sigkill_between_reserving_a_number_and_the_commit_reports_that_number(tmp_path):
    path = tmp_path / "q.db"
    killed_writer(path, produced=5, acked=0, extra=(
        "from carbon_ai_nodes.uplink import durable_queue as dq\n"
        "save = dq.SequenceMark.save\n"
        "dq.SequenceMark.save = lambda self: (save(self), os.kill(os.getpid(), signal.SIGKILL))\n"
        "q.produce(draft(5))"))
    q = DurableQueue(path)
    rows = [s for _, s in q.pending(100)]
    assert [s.sequence for s in rows] == [1, 2, 3, 4, 5, 7]
    assert (rows[-1].gap, rows[-1].lost_first, rows[-1].lost_last) == ("bridge_crash", 6, 6)
    assert "bridge_crash" in q.recoveries[0]


def test_files_on_disk_stay_bounded_by_the_limit(tmp_path):
    limits = QueueLimits(max_bytes=4096, ttl_s=0, full_policy="drop_oldest")
    producer = DurableQueue(tmp_path / "q.db", limits)
    sender = DurableQueue(tmp_path / "q.db", limits, sender=True)
    largest, acked = 0, set()
    for i in range(300):
        producer.produce(draft(i))
        if i % 3 == 0:
            rows = sender.pending(2)
            sender.ack([row_id for row_id, _ in rows])
            acked |= {s.sequence for _, s in rows}
        largest = max(largest, producer.stats().file_bytes)
    # before the fix the WAL alone passed 1.8 MB; now: 64 KiB WAL limit (twice, while the sender reads) + pages
    assert largest < 200 * 1024, largest
    assert producer.stats().stored_bytes <= 4096
    rows, silent = accounted(producer)
    assert silent - acked == set() and any(s.gap == "queue_full" for s in rows)
