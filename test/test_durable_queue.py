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

from carbon_ai_nodes.core.durable_queue import DurableQueue, QueueLimits
from carbon_ai_nodes.core.errors import ConfigError, InputRejectedError
from carbon_ai_nodes.core.summary_codec import Summary, decode_batch, encode_batch


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
        "from carbon_ai_nodes.core.durable_queue import DurableQueue\n"
        "q = DurableQueue({!r})\n"
        "for i in range(5): q.produce(draft(i))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    ).format(os.path.dirname(__file__), str(tmp_path / "q.db"))
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    q = DurableQueue(tmp_path / "q.db")
    assert [s.sequence for _, s in q.pending(10)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("policy", ["drop_oldest", "refuse_newest"])
def test_full_queue_applies_its_policy_and_counts_the_loss(tmp_path, policy):
    q = DurableQueue(tmp_path / "q.db", QueueLimits(max_bytes=1024, ttl_s=0, full_policy=policy))
    results = [q.produce(draft(i)) for i in range(40)]
    stats = q.stats()
    assert stats.stored_bytes <= 1024 and 0 < stats.depth < 40
    kept = [s.sequence for _, s in q.pending(100)]
    if policy == "drop_oldest":
        assert kept == list(range(41 - len(kept), 41))  # the newest survive
        assert stats.dropped_full == 40 - len(kept) and stats.refused_full == 0
    else:
        assert kept == list(range(1, len(kept) + 1))  # the oldest survive
        assert stats.refused_full == 40 - len(kept) and not results[-1].stored
    assert [r.summary.sequence for r in results] == list(range(1, 41))  # numbers are consumed either way


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


def test_a_corrupt_queue_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not sqlite" * 100)
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
    (b"\x02\x01\x01", "version"),
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
