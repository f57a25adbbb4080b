"""Subscribe to carbon summaries at an MQTT broker and keep each one, once: in the fleet store (``--db``,
SQLite or PostgreSQL, see carbon_ai_nodes/uplink/fleet_store.py) and/or appended to a JSON-lines file (``--out``).

Duplicates (same asset and sequence, e.g. resent after a reconnect) are dropped, also across runs: the output
file is read back at start, and the store keeps each (asset, sequence) once by its key. Malformed messages
are counted and skipped. Gap records (a bridge saying "of sequences N..M, any you have not received is lost",
or "estimates from T1 to T2 were not summarised") are
written to the file too, with their ``gap`` reason, and logged; a summary that arrives after a gap record named
it still counts as delivered. At exit the tool prints, per asset, what was delivered, reported lost and missing
without any gap record (a silent loss: there should be none). With a fixed --client-id the broker
keeps the subscription while the receiver is away (persistent session, QoS 1), so nothing is missed. A message
is acknowledged to the broker only once stored: while the database is down it is held and retried.
Use it to check a vehicle's link end to end, or as the receiving end in tests.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carbon_ai_nodes.uplink.fleet_store import FleetStore

RETRY_MIN_S, RETRY_MAX_S = 0.5, 10.0  # backoff between writes while the database is down

HELP = "receive uplink summaries from an MQTT broker into the fleet database and/or a JSON-lines file (deduplicated)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Broker, TLS, topic prefix, output file and stop conditions."""
    parser.add_argument("--host", default="localhost", help="broker host (default localhost)")
    parser.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    parser.add_argument("--prefix", default="cai/v1", help="topic prefix of the bridges (default cai/v1)")
    parser.add_argument("--db", default="", help="fleet store URL: sqlite:///fleet.db or postgresql://user@host/db")
    parser.add_argument("--out", default="", help="JSON-lines file to append summaries to")
    parser.add_argument("--shared", default="", metavar="GROUP",
                        help="MQTT 5 shared subscription $share/GROUP/...: receivers of a group split the messages")
    parser.add_argument("--client-id", default="", help="fixed id: the broker keeps a persistent session")
    parser.add_argument("--tls-ca", default="", help="CA file: connect with TLS")
    parser.add_argument("--tls-cert", default="", help="client certificate for mutual TLS")
    parser.add_argument("--tls-key", default="", help="client key for mutual TLS")
    parser.add_argument("--username", default="")
    parser.add_argument("--password-file", default="")
    parser.add_argument("--count", type=int, default=0, help="exit after this many new summaries (0 = run on)")
    parser.add_argument("--timeout", type=float, default=0.0, help="exit after this many seconds (0 = run on)")
    parser.add_argument("--plot", default="", help="at exit, plot CO2 per window of each asset to this PNG")


class Receiver:
    """Dedup by (asset, sequence), append JSON lines, count duplicates, gaps, gap records, malformed messages and
    implausible summaries (refused)."""

    def __init__(self, out: Path | None, log: Callable[[str], None] | None = None,
                 store: FleetStore | None = None) -> None:
        self.out = out
        self.store = store
        self.log = log or (lambda line: print(f"uplink-receive: {line}", file=sys.stderr, flush=True))
        self.seen: dict[str, set[int]] = {}
        self.last_seq: dict[str, int] = {}
        # lost ranges named by gap records, as (first, last) intervals: a hostile range must not become a set
        self.reported: dict[str, list[tuple[int, int]]] = {}
        self.gap_seqs: dict[str, set[int]] = {}  # sequences that are gap records
        self.new = self.duplicates = self.malformed = self.gaps = self.gap_records = self.db_errors = 0
        self.db_down = False  # the last write failed: the store is unavailable
        self.implausible = 0  # decoded summaries no vehicle could have sent (summary_plausibility), refused
        self.implausible_assets: set[str] = set()
        if out is not None and out.exists():
            for line in out.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    self._mark(rec["asset_id"], int(rec["sequence"]))
                    if rec.get("gap"):
                        self._report(rec["asset_id"], int(rec["sequence"]), int(rec["lost_first"]),
                                     int(rec["lost_last"]))
                except (ValueError, KeyError, TypeError):
                    continue
        self._file = out.open("a") if out is not None else None

    def _mark(self, asset: str, seq: int) -> None:
        self.seen.setdefault(asset, set()).add(seq)
        self.last_seq[asset] = max(self.last_seq.get(asset, 0), seq)

    def _report(self, asset: str, sequence: int, first: int, last: int) -> None:
        self.gap_seqs.setdefault(asset, set()).add(sequence)
        if first:
            self.reported[asset] = _merge([*self.reported.get(asset, []), (first, last)])

    def is_reported(self, asset: str, sequence: int) -> bool:
        """True if a gap record named ``sequence`` lost (whether or not it arrived later)."""
        return any(a <= sequence <= b for a, b in self.reported.get(asset, ()))

    def _missing(self, asset: str, first: int, last: int) -> int:
        """How many of first..last have not arrived."""
        return last - first + 1 - sum(1 for n in self.seen.get(asset, ()) if first <= n <= last)

    def handle(self, topic: str, payload: bytes) -> bool:
        """One MQTT message; never raises for bad input. False: the store could not take it (database down):
        nothing of it was kept, try the same message again later; True: done with it (stored, a duplicate, or
        malformed and counted)."""
        from carbon_ai_nodes.common.errors import InputRejectedError
        from carbon_ai_nodes.uplink.summary_codec import asset_from_topic, decode_batch
        from carbon_ai_nodes.uplink.summary_plausibility import implausible_reason

        try:
            summaries = decode_batch(asset_from_topic(topic), payload)
        except InputRejectedError as exc:
            self.malformed += 1
            self.log(f"ignored malformed message on {topic[:80]!r}: {exc}")
            return True
        now_s = time.time()
        kept = []
        for s in summaries:
            reason = implausible_reason(s, now_s)
            if not reason:
                kept.append(s)
                continue
            self.implausible += 1
            if s.asset_id not in self.implausible_assets:  # once per asset; the count is in the exit tally
                self.implausible_assets.add(s.asset_id)
                self.log(f"{s.asset_id}: refused summary {s.sequence}: {reason} (further ones only counted)")
        summaries = kept
        fresh = None
        if self.store is not None:
            try:
                fresh = {s.sequence for s in self.store.write(summaries)}
            except Exception as exc:  # noqa: BLE001 - sqlite3/psycopg errors: count, hold the message, retry
                self.db_errors += 1
                if not self.db_down:  # once per outage, not once per retry
                    self.log(f"database error: {' '.join(str(exc).split())[:300]}; holding messages "
                             "(not acknowledged to the broker) and retrying")
                self.db_down = True
                return False
            if self.db_down:
                self.log(f"database back after {self.db_errors} failed writes")
                self.db_down = False
        for s in summaries:
            if s.sequence in self.seen.get(s.asset_id, ()) or (fresh is not None and s.sequence not in fresh):
                self.duplicates += 1
                continue
            if s.sequence > self.last_seq.get(s.asset_id, 0) + 1 and s.asset_id in self.last_seq:
                self.gaps += 1
            self._mark(s.asset_id, s.sequence)
            if s.gap:
                self.gap_records += 1
                self._report(s.asset_id, s.sequence, s.lost_first, s.lost_last)
                rows = (f"rows {s.lost_first}..{s.lost_last} named lost "
                        f"({self._missing(s.asset_id, s.lost_first, s.lost_last)} not received)"
                        if s.lost_first else "no rows lost")
                self.log(f"{s.asset_id}: gap record {s.sequence}: {rows}: "
                         f"{s.gap.replace('_', ' ')}; data from {_utc(s.window_start_s)} to {_utc(s.window_end_s)} "
                         "is not (fully) summarised")
            if self._file is not None:
                self._file.write(json.dumps(s.as_dict(), separators=(",", ":")) + "\n")
            self.new += 1
        if self._file is not None:
            self._file.flush()
        return True

    def accounting(self, asset: str) -> dict[str, int]:
        """Per asset: summaries delivered, gap records, sequences lost and reported, and missing silently
        (numbers between the first and last received that neither arrived nor were named by a gap record)."""
        seen = self.seen.get(asset, set())
        ranges = self.reported.get(asset, [])
        gap_records = len(self.gap_seqs.get(asset, ()))
        lost_reported = sum(self._missing(asset, a, b) for a, b in ranges)
        silent = 0
        if seen:
            lo, hi = min(seen), max(seen)
            in_span = sum(self._missing(asset, max(a, lo), min(b, hi)) for a, b in ranges if a <= hi and b >= lo)
            silent = hi - lo + 1 - len(seen) - in_span
        return {"delivered": len(seen) - gap_records, "gap_records": gap_records, "lost_reported": lost_reported,
                "silent": silent}

    def close(self) -> None:
        """Close the output file and the store."""
        if self._file is not None:
            self._file.close()
        if self.store is not None:
            self.store.close()


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _utc(t_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_s))


def plot(out: Path, png: str) -> None:
    """CO2 per window over time, one line per asset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("gap"):
            continue  # a gap record has no totals of its own
        series.setdefault(rec["asset_id"], []).append((rec["window_start_s"], rec["co2_kg"]))
    fig, ax = plt.subplots(figsize=(9, 4))
    for asset, points in sorted(series.items()):
        points.sort()
        t0 = points[0][0]
        ax.plot([(t - t0) / 60.0 for t, _ in points], [c for _, c in points], label=asset)
    ax.set_xlabel("time since first window (min)")
    ax.set_ylabel("CO2 per window (kg)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def run(args: argparse.Namespace) -> int:
    """Connect, subscribe, write until --count/--timeout or Ctrl-C."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from carbon_ai_nodes.common.errors import ConfigError
    from carbon_ai_nodes.uplink.fleet_store import open_store
    from carbon_ai_nodes.uplink.mqtt_link import tls_context

    if not (args.db or args.out):
        raise ConfigError("uplink-receive: no destination: give --db sqlite:///fleet.db (or postgresql://...) "
                          "and/or --out FILE.jsonl")
    receiver = Receiver(Path(args.out) if args.out else None, store=open_store(args.db) if args.db else None)
    topic = f"{args.prefix.rstrip('/')}/+/s"
    if args.shared:
        topic = f"$share/{args.shared}/{topic}"
    persistent = bool(args.client_id)
    if args.shared:  # shared subscriptions are MQTT 5; a session is kept with clean_start below
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=args.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
    else:
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=args.client_id,
                             protocol=mqtt.MQTTv311, clean_session=not persistent, manual_ack=True)
    if args.tls_ca:
        client.tls_set_context(tls_context(args.tls_ca, args.tls_cert, args.tls_key))
    if args.username:
        password = Path(args.password_file).read_text().strip() if args.password_file else None
        client.username_pw_set(args.username, password)

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"uplink-receive: broker refused: {reason_code}", file=sys.stderr)
            return
        c.subscribe(topic, qos=1)
        print(f"uplink-receive: subscribed to {topic} at {args.host}:{args.port}", file=sys.stderr, flush=True)

    client.on_connect = on_connect
    # A message is acknowledged only once it is stored: while the database is down it stays unacknowledged, the
    # broker sends no more than its in-flight window meanwhile, and a persistent session (--client-id) gets the
    # unacknowledged ones again after a restart of the receiver. Stored on this thread, in arrival order.
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client.on_message = lambda c, u, msg: inbox.put(msg)
    client.reconnect_delay_set(0.2, 2.0)  # type: ignore[arg-type]  # seconds; paho sleeps floats, annotates int
    try:
        if args.shared:
            client.connect(args.host, args.port, keepalive=30, clean_start=not persistent)
        else:
            client.connect(args.host, args.port, keepalive=30)
    except OSError as exc:
        raise ConfigError(f"cannot connect to {args.host}:{args.port}: {exc}") from exc
    client.loop_start()
    end = time.monotonic() + args.timeout if args.timeout > 0 else float("inf")
    held: mqtt.MQTTMessage | None = None  # a message the store could not take yet
    retry_s = RETRY_MIN_S
    try:
        while time.monotonic() < end and not (args.count and receiver.new >= args.count):
            if held is None:
                try:
                    held = inbox.get(timeout=0.05)
                except queue.Empty:
                    continue
            if receiver.handle(held.topic, bytes(held.payload)):
                client.ack(held.mid, held.qos)
                held, retry_s = None, RETRY_MIN_S
            else:
                time.sleep(min(retry_s, max(end - time.monotonic(), 0.0)))
                retry_s = min(retry_s * 2.0, RETRY_MAX_S)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM is how a long-running receiver stops: still print the tally
        pass
    finally:
        client.loop_stop()
        client.disconnect()
        receiver.close()
    unstored = (held is not None) + inbox.qsize()
    if unstored:
        print(f"uplink-receive: {unstored} messages not stored (database unavailable) and not acknowledged: "
              + ("the broker keeps them for --client-id " + args.client_id if persistent else
                 "without --client-id the broker drops them with the session; use a fixed --client-id"),
              file=sys.stderr)
    db = receiver.store.safe_url() if receiver.store else ""
    print(f"uplink-receive: {receiver.new} new, {receiver.duplicates} duplicates dropped, "
          f"{receiver.gaps} gaps, {receiver.gap_records} gap records, {receiver.malformed} malformed, "
          f"{receiver.implausible} implausible refused, "
          f"{receiver.db_errors} database errors -> {' + '.join(filter(None, [db, args.out]))}",
          file=sys.stderr)
    for asset in sorted(receiver.seen):
        a = receiver.accounting(asset)
        print(f"uplink-receive: {asset}: {a['delivered']} summaries delivered, {a['gap_records']} gap records, "
              f"{a['lost_reported']} lost and reported, {a['silent']} missing without a gap record",
              file=sys.stderr)
    if args.plot and receiver.out is not None and receiver.out.exists() and receiver.out.stat().st_size:
        plot(receiver.out, args.plot)
    return 0
