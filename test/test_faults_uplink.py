"""Fault injection on the uplink, end to end: the uplink_bridge as its own process over DDS, a real mosquitto the
test starts, `carbon-ai uplink-receive` as the cloud side. Faults: SIGKILL of the bridge at random points, the
queue's files damaged between runs (WAL deleted, truncated, bytes flipped; main file truncated; table pages
corrupted), broker stopped and killed mid-stream. The guarantees: a sequence number is never reused, every loss
reaches the receiver as a gap record, no summary is delivered twice, and a damaged queue does not stop the node.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from mqtt_broker import MosquittoBroker
from test_durable_queue import damage
from test_uplink_bridge import Feed, bridge_params, diag_values, start_receiver

from carbon_ai_msgs.msg import CarbonSummary
from carbon_ai_nodes.commands.uplink_receive import Receiver
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos

pytestmark = pytest.mark.timeout(300)


def corrupt_table(path, table="summaries"):
    """Move everything into the main file, then scramble the table's root page (the schema page stays intact,
    so the file opens and only reading the table fails: the node came up and stayed useless before)."""
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    row = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    db.close()
    if row is None:  # killed before it made its tables (a random kill point can be during start-up)
        damage(path, "pages_corrupted")
        return
    (root,) = row
    data = bytearray(path.read_bytes())
    start = (root - 1) * 4096
    for i in range(start, start + 4096):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


class Rig:
    """Broker, receiver, 20 Hz inputs and the bridge's local topic and diagnostics, for one test."""

    def __init__(self, probe, tmp_path, **params):
        self.probe, self.tmp_path = probe, tmp_path
        self.local = probe.collect(CarbonSummary, "/truck1/carbon_summary", qos.latched(depth=10))
        self.diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
        self.out = tmp_path / "received.jsonl"
        self.broker = MosquittoBroker(tmp_path / "broker").start()
        self.receiver = start_receiver(self.broker, self.out)
        self.feed = Feed(probe)
        self.params = bridge_params(tmp_path, self.broker.port, **params)
        self.queue_path = tmp_path / "uplink.sqlite3"
        self.node: NodeProcess | None = None
        self.outputs: list[str] = []

    def start_bridge(self):
        self.diags.clear()  # diagnostics from now on are the new process's
        self.node = NodeProcess("uplink_bridge", namespace="/truck1", params=self.params)

    def stop_bridge(self, sig=signal.SIGTERM):
        code = self.node.stop(sig)
        self.outputs.append(self.node.output)
        return code

    def records(self):
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.endswith("}")]

    def summaries(self):
        return [r for r in self.records() if not r.get("gap")]

    def gaps(self):
        return [r for r in self.records() if r.get("gap")]

    def wait(self, predicate, timeout_s=40.0):
        assert self.probe.spin_until(predicate, timeout_s), (
            f"local {[m.sequence for m in self.local]}, received {[r['sequence'] for r in self.records()]}, gaps "
            f"{[(g['sequence'], g['gap'], g['lost_first'], g['lost_last']) for g in self.gaps()]}, diagnostics "
            f"{diag_values(self.diags)}, node output: {self.node.output[-3000:] if self.node else ''}")

    def finish(self):
        """Stop the inputs, let the last windows close, wait until the queue is drained, stop everything."""
        self.feed.on = False
        self.probe.spin_for(2.0)  # window 0.5 s + hold 1 s + grace 0.1 s
        self.wait(lambda: diag_values(self.diags).get("queue.depth") == "0" and self.settled(), 60)
        assert self.stop_bridge() == 0
        self.receiver.kill()
        self.broker.stop()

    def settled(self):
        """Every local summary has been received or named lost by a received gap record."""
        records = self.records()
        known = {r["sequence"] for r in records}
        for g in records:
            if g.get("gap") and g["lost_first"]:
                known |= set(range(g["lost_first"], g["lost_last"] + 1))
        return bool(self.local) and all(m.sequence in known for m in self.local)

    def accounting(self):
        """produced / delivered / lost-and-reported / silent / duplicated over the whole run."""
        produced = {(m.sequence, round(m.window_start.sec + m.window_start.nanosec * 1e-9, 3)) for m in self.local}
        produced |= {(r["sequence"], round(r["window_start_s"], 3)) for r in self.summaries()}
        reused = len(produced) - len({seq for seq, _ in produced})
        rx = Receiver(self.out)
        rx.close()
        lines = [r["sequence"] for r in self.records()]
        delivered = {r["sequence"] for r in self.summaries()}
        produced_seqs = {seq for seq, _ in produced}
        reported = {seq for seq in produced_seqs - delivered if rx.is_reported("truck1", seq)}
        return {
            "produced": len(produced_seqs), "delivered": len(produced_seqs & delivered),
            "lost_reported": len(reported), "silent": len(produced_seqs - delivered - reported), "reused": reused,
            "duplicated": len(lines) - len(set(lines)), "gap_records": len(self.gaps()),
            "receiver_silent": rx.accounting("truck1")["silent"],
        }


@pytest.fixture
def rig_factory(probe, tmp_path):
    rigs = []

    def make(**params):
        rigs.append(Rig(probe, tmp_path, **params))
        return rigs[-1]

    yield make
    for rig in rigs:
        if rig.node is not None:
            rig.node.stop(signal.SIGKILL)
        rig.receiver.kill()
        rig.broker.stop()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wal_deleted", "main_truncated"])
def test_queue_state_lost_after_delivery_numbering_continues_and_new_data_arrives(rig_factory, kind):
    """Defect 2: before, numbering restarted at 1 and the receiver dropped 20 of the next 25 as duplicates."""
    rig = rig_factory()
    rig.start_bridge()
    rig.wait(lambda: len(rig.summaries()) >= 6)
    assert rig.stop_bridge(signal.SIGKILL) == -signal.SIGKILL
    first_max = max(m.sequence for m in rig.local)
    damage(rig.queue_path, kind)
    n_before = len(rig.local)
    rig.start_bridge()
    rig.wait(lambda: len(rig.local) >= n_before + 6)
    rig.finish()
    after = [m.sequence for m in rig.local[n_before:]]
    assert min(after) > first_max, (first_max, after)  # never reused
    gaps = rig.gaps()
    assert gaps and gaps[0]["gap"] in ("queue_corrupted", "bridge_crash+queue_corrupted",
                                       "queue_corrupted+bridge_crash"), gaps
    assert "lost (queue_corrupted" in "\n".join(rig.outputs) and "ERROR" in "\n".join(rig.outputs)
    a = rig.accounting()
    assert (a["silent"], a["reused"], a["duplicated"]) == (0, 0, 0), a


@pytest.mark.slow
def test_corrupt_queue_is_moved_aside_and_the_node_keeps_delivering_without_a_reconnect_storm(rig_factory):
    """Defect 3: before, 0 summaries, diagnostics "uplink offline (DatabaseError...)", 67 reconnects in 50 s."""
    rig = rig_factory()
    rig.start_bridge()
    rig.wait(lambda: len(rig.summaries()) >= 3)
    rig.broker.stop()  # rows stay queued, then the queue is damaged while the bridge is down
    rig.wait(lambda: int(diag_values(rig.diags).get("queue.depth", 0)) >= 3)
    assert rig.stop_bridge(signal.SIGKILL) == -signal.SIGKILL
    corrupt_table(rig.queue_path)
    rig.broker.start()
    n_before = len(rig.local)
    rig.start_bridge()
    rig.wait(lambda: len(rig.local) >= n_before + 8 and int(diag_values(rig.diags).get("queue.recoveries", 0)) >= 1)
    values = diag_values(rig.diags)
    assert int(values["link.connects"]) <= 2, values  # one connection (two if the broker was slow to come back)
    assert any(p.name.startswith("uplink.sqlite3.corrupt-") for p in rig.tmp_path.iterdir())
    rig.finish()
    assert any(g["gap"] == "queue_corrupted" for g in rig.gaps()), rig.gaps()
    output = "\n".join(rig.outputs)
    assert "is corrupt" in output and "moved to" in output
    a = rig.accounting()
    assert (a["silent"], a["reused"], a["duplicated"]) == (0, 0, 0), a
    # the rows queued during the outage were in the corrupt file (some may still arrive: a broker stopped with
    # SIGTERM keeps what it received before its PUBACK got out)
    named = [g["lost_last"] - g["lost_first"] + 1 for g in rig.gaps() if g["gap"] == "queue_corrupted"]
    assert named[0] >= 3, rig.gaps()


@pytest.mark.slow
def test_sigkill_mid_window_loses_at_most_the_checkpoint_period_and_says_so(rig_factory):
    """Defect 5: before, the window in progress vanished without a sequence gap."""
    rig = rig_factory(window_s=4.0, checkpoint_period_s=0.5, batch_linger_s=0.0)
    rig.start_bridge()
    rig.wait(lambda: len(rig.summaries()) >= 1)
    # kill in the middle of a window (a window closes at a multiple of 4 s since the epoch, 1.6 s later)
    rig.wait(lambda: 1.5 <= time.time() % 4.0 <= 2.5, 10)
    killed_at_s = time.time()
    assert rig.stop_bridge(signal.SIGKILL) == -signal.SIGKILL
    window_start_s = killed_at_s - killed_at_s % 4.0
    rig.probe.spin_for(0.5)
    rig.start_bridge()
    rig.wait(lambda: any(g["gap"] == "bridge_crash" for g in rig.gaps()))
    rig.wait(lambda: any(abs(r["window_start_s"] - window_start_s) < 1e-3 for r in rig.summaries()), 30)
    rig.finish()
    crash = next(g for g in rig.gaps() if g["gap"] == "bridge_crash")
    print(f"\ncrash gap record: starts {killed_at_s - crash['window_start_s']:.2f} s before the SIGKILL, ends "
          f"{crash['window_end_s'] - killed_at_s:.2f} s after it (the restart)")
    assert crash["window_start_s"] <= killed_at_s <= crash["window_end_s"], (crash, killed_at_s)
    assert killed_at_s - crash["window_start_s"] < 0.5 + 1.0, crash  # a checkpoint period (+ scheduling)
    interrupted = next(r for r in rig.summaries() if abs(r["window_start_s"] - window_start_s) < 1e-3)
    assert interrupted["estimate_count"] >= 20  # the checkpointed ~1.5 s (20 Hz) before the kill survived
    a = rig.accounting()
    assert (a["silent"], a["reused"], a["duplicated"]) == (0, 0, 0), a


@pytest.mark.slow
def test_accounting_across_outages_sigkills_and_queue_damage(rig_factory):
    """One run with every fault; prints produced / delivered / lost-and-reported / duplicated."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    rig = rig_factory(batch_linger_s=0.3, checkpoint_period_s=0.5)
    rig.start_bridge()
    rig.wait(lambda: len(rig.summaries()) >= 3)
    faults = ["broker_stop", "sigkill", "wal_deleted", "broker_kill", "wal_truncated", "sigkill",
              "wal_flipped", "main_truncated", "pages_corrupted", "sigkill"]
    for fault in faults:
        n = len(rig.local)
        rig.wait(lambda n=n: len(rig.local) >= n + 2)
        time.sleep(rng.uniform(0.0, 0.5))  # a random point: mid-window, mid-commit, mid-send
        if fault in ("broker_stop", "broker_kill"):
            rig.broker.stop() if fault == "broker_stop" else rig.broker.kill()
            rig.wait(lambda n=n: len(rig.local) >= n + 4)
            rig.broker.start()
            continue
        assert rig.stop_bridge(signal.SIGKILL) == -signal.SIGKILL
        if fault == "pages_corrupted":
            corrupt_table(rig.queue_path)
        elif fault != "sigkill":
            damage(rig.queue_path, fault)
        rig.start_bridge()
    rig.finish()
    a = rig.accounting()
    print(f"\nuplink fault run (seed {seed}; {len(faults)} faults: {', '.join(faults)}):\n"
          f"  summaries produced {a['produced']}, delivered {a['delivered']}, lost and reported "
          f"{a['lost_reported']}, lost silently {a['silent']}, numbers reused {a['reused']}, duplicates delivered "
          f"{a['duplicated']}; {a['gap_records']} gap records")
    assert (a["silent"], a["reused"], a["duplicated"], a["receiver_silent"]) == (0, 0, 0, 0), (seed, a)
    assert a["delivered"] + a["lost_reported"] == a["produced"]
    assert a["gap_records"] >= 3  # 8 restarts after kills and damage; records still queued merge into the next
