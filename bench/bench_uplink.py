"""Uplink benchmark: bytes per summary and per asset per month, durable-commit cost, catch-up throughput.

    python bench/bench_uplink.py [--summaries 20000] [--plot bench_uplink.png]

1. Summaries from a drive cycle (../shared/data/cycles/udds.csv, looped; synthetic speeds if absent), windowed by
   the real core at the default 10 s. Bytes per summary of the CSB1 payload and of the MQTT PUBLISH + PUBACK
   that carry it (MQTT 5, QoS 1, topic cai/v1/<asset>/s), for several linger settings and a 100-summary
   catch-up batch; the baseline is compact JSON of the same summary, one per message. Per month = 30 days of
   10 s windows plus keep-alive pings when messages are sparser than the keep-alive. A TCP/IPv4 + TLS 1.3
   estimate is added on top (per exchange: two 40 B TCP/IP headers + 22 B TLS records, and one bare ACK).
2. produce() latency (SQLite WAL, synchronous=FULL: one fsync per summary) vs synchronous=OFF, same run.
3. Catch-up after an outage: N queued summaries drained through a real mosquitto by MqttUplink (SQLite reads,
   PUBACK-driven deletes) vs bare paho publishing the same batches with the same in-flight window.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

from mqtt_broker import MosquittoBroker  # noqa: E402

from carbon_ai_nodes.uplink.durable_queue import DurableQueue, QueueLimits  # noqa: E402
from carbon_ai_nodes.uplink.mqtt_link import LinkConfig, MqttUplink  # noqa: E402
from carbon_ai_nodes.uplink.summary_codec import Summary, encode_batch, mqtt_publish_bytes, summary_topic  # noqa: E402
from carbon_ai_nodes.uplink.summary_window import EstimateSample, StateSample, SummaryWindow  # noqa: E402

ASSET = "truck1"
MONTH_S = 30 * 86400.0
WINDOW_S = 10.0
KEEPALIVE_S = 60.0
TCP_IP_B = 40  # IPv4 20 + TCP 20 per segment (no options)
TLS_RECORD_B = 22  # TLS 1.3 AES-GCM: 5 header + 1 content type + 16 tag
# one PUBLISH/PUBACK exchange: two TLS records in two segments, plus the client's bare (delayed) TCP ACK
PER_EXCHANGE_TCP_TLS_B = 2 * (TCP_IP_B + TLS_RECORD_B) + TCP_IP_B


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def cycle_speeds() -> list[float]:
    path = REPO.parent / "shared" / "data" / "cycles" / "udds.csv"
    if path.exists():
        with path.open() as f:
            return [float(row["speed_mps"]) for row in csv.DictReader(f)]
    return [max(0.0, 12.0 + 10.0 * math.sin(t / 40.0)) for t in range(1370)]


def make_summaries(n: int) -> list[Summary]:
    """Run the window core over the cycle at 10 Hz with a simple road-load CO2 rate (synthetic, for sizes)."""
    speeds = cycle_speeds()
    w = SummaryWindow(window_s=WINDOW_S)
    t0 = 1_800_000_000.0
    out: list[Summary] = []
    i = 0
    prev_v = speeds[0]
    while len(out) < n:
        v = speeds[(i // 10) % len(speeds)]
        a = (v - prev_v)
        prev_v = v if i % 10 == 9 else prev_v
        power_kw = max(0.0, (200.0 + 0.5 * v * v + 1500.0 * a) * v / 1000.0)
        co2 = 0.6 + 0.7 * power_kw  # g/s: idle + ~0.7 g/s per kW for a diesel
        t = t0 + i * 0.1
        closed = w.add_estimate(EstimateSample(t, co2, co2 * 1.05, co2 / 2.65 * 3.6, 800 + (i * 37) % 1500,
                                               co2 * 0.1, "onnxruntime-cpu:residual-3f2a9c"))
        closed += w.add_state(StateSample(t, v, v < 0.1))
        for c in closed:
            out.append(Summary(ASSET, len(out) + 1, c.start_s, c.end_s, c.co2_kg, c.fuel_l, c.distance_km,
                               c.idle_s, c.avoided_co2_kg, c.estimate_count, c.worst_latency_us,
                               measured_s=c.measured_s, measured_co2_kg=c.measured_co2_kg,
                               modelled_co2_kg=c.modelled_co2_kg, co2_sigma_kg=c.co2_sigma_kg,
                               model_ids=c.model_ids, emission_factor=c.emission_factor))
        i += 1
    return out[:n]


def bytes_section(summaries: list[Summary]) -> None:
    from carbon_ai_nodes.uplink.uplink_params import UplinkBridgeParams

    default_linger_s = UplinkBridgeParams().batch_linger_s
    topic = summary_topic("cai/v1", ASSET)
    per_month = MONTH_S / WINDOW_S
    rows = []

    def add(name: str, batch: int, payloads: list[bytes]) -> None:
        payload_b = sum(len(p) for p in payloads) / (len(payloads) * batch)
        mqtt_b = sum(mqtt_publish_bytes(topic, len(p)) for p in payloads) / (len(payloads) * batch)
        # keep-alive pings only when no message goes out within the keep-alive interval (paho's rule)
        gap_s = batch * WINDOW_S
        pings = MONTH_S / KEEPALIVE_S if gap_s > KEEPALIVE_S else 0.0
        month_mqtt = mqtt_b * per_month + pings * 4
        month_wire = month_mqtt + (per_month / batch + pings) * PER_EXCHANGE_TCP_TLS_B
        rows.append((name, payload_b, mqtt_b, month_mqtt / 1e6, month_wire / 1e6))

    audited = summaries
    summaries = [dataclasses.replace(s, measured_s=None) for s in summaries]  # what a CSB1 sender sends
    add("JSON, 1 per message (baseline)", 1,
        [json.dumps(s.as_dict(), separators=(",", ":")).encode() for s in summaries])
    for name, k in (("CSB3, linger 0 (1 per message)", 1), ("CSB3, linger 60 s (6 per message)", 6),
                    ("CSB3, catch-up (100 per message)", 100)):
        if int(default_linger_s / WINDOW_S) == k:
            name += " *default*"
        add(name, k, [encode_batch(audited[j:j + k]) for j in range(0, len(audited) - k + 1, k)])
    for name, k in (("CSB1, linger 0 (1 per message)", 1), ("CSB1, linger 30 s (3 per message)", 3),
                    ("CSB1, linger 60 s (6 per message)", 6), ("CSB1, linger 120 s (12 per message)", 12),
                    ("CSB1, catch-up (100 per message)", 100)):  # older senders: no audit fields
        payloads = [encode_batch(summaries[j:j + k]) for j in range(0, len(summaries) - k + 1, k)]
        add(name, k, payloads)
    print(f"\n== bytes per summary ({len(summaries)} summaries of {WINDOW_S:.0f} s windows, MQTT 5 QoS 1, "
          f"topic {topic!r}) ==")
    print(f"{'format':<48}{'payload B':>10}{'MQTT B':>9}{'MB/month MQTT':>15}{'MB/month +TCP/TLS':>19}")
    for name, payload_b, mqtt_b, month_mb, wire_mb in rows:
        print(f"{name:<48}{payload_b:>10.1f}{mqtt_b:>9.1f}{month_mb:>15.2f}{wire_mb:>19.2f}")
    base = rows[0]
    default = next(r for r in rows if "*default*" in r[0])
    print(f"default vs JSON baseline: {base[3] / default[3]:.1f}x fewer MQTT bytes per month; default = "
          f"{default[3]:.2f} MB per asset per month at the MQTT level, {default[4]:.2f} MB with TCP/IP and TLS "
          f"estimated; aim 10 MB (a tenth of the 0.1 GB edge-first figure)")


def fsync_section(summaries: list[Summary], tmp: Path) -> None:
    print("\n== produce(): durable commit (WAL, synchronous=FULL, fsynced sequence mark) vs synchronous=OFF, "
          "no mark ==")
    results = {}
    for mode in ("FULL", "OFF"):
        q = DurableQueue(tmp / f"fsync_{mode}.db", QueueLimits(max_bytes=10**9, ttl_s=0))
        q._db.execute(f"PRAGMA synchronous={mode}")
        if mode == "OFF":
            q._mark = None  # the bare baseline: no high-water mark file either
        lat = []
        for s in summaries[:300]:
            t = time.perf_counter()
            q.produce(s)
            lat.append((time.perf_counter() - t) * 1e3)
        q.close()
        results[mode] = lat
        print(f"synchronous={mode:<5} p50 {pct(lat, 0.5):7.3f} ms   p99 {pct(lat, 0.99):7.3f} ms")
    print(f"ratio FULL/OFF p50: {pct(results['FULL'], 0.5) / max(pct(results['OFF'], 0.5), 1e-6):.1f}x "
          f"(one commit per {WINDOW_S:.0f} s window: negligible either way)")


def catch_up_section(summaries: list[Summary], tmp: Path, plot: str) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    n = len(summaries)
    print(f"\n== catch-up after an outage: {n} queued summaries, batches of 100, 8 in flight, no cap ==")
    qpath = tmp / "catchup.db"
    q = DurableQueue(qpath, QueueLimits(max_bytes=10**9, ttl_s=0))
    q._db.execute("PRAGMA synchronous=OFF")  # filling is set-up, not the measurement
    t = time.perf_counter()
    for k, s in enumerate(summaries):
        q.produce(s)
        if k % 5000 == 4999:
            print(f"  queued {k + 1}/{n}", flush=True)
    print(f"  queue filled in {time.perf_counter() - t:.1f} s")
    with MosquittoBroker(tmp / "broker", persistence=False) as broker:
        cfg = LinkConfig(host="127.0.0.1", port=broker.port, asset_id=ASSET, batch_max=100, batch_linger_s=0.0,
                         max_inflight=8)
        link = MqttUplink(cfg, lambda: DurableQueue(qpath, QueueLimits(max_bytes=10**9, ttl_s=0), sender=True))
        trace = []
        t0 = time.perf_counter()
        link.start()
        while link.stats().summaries_acked < n and time.perf_counter() - t0 < 600:
            time.sleep(0.05)
            trace.append((time.perf_counter() - t0, link.stats().summaries_acked))
        elapsed = time.perf_counter() - t0
        stats = link.stats()
        link.stop()
        ours = stats.summaries_acked / elapsed
        print(f"MqttUplink (SQLite + PUBACK deletes): {stats.summaries_acked} acked in {elapsed:.2f} s "
              f"= {ours:,.0f} summaries/s, {stats.bytes_sent / elapsed / 1e3:.1f} kB/s")

        payloads = [encode_batch(summaries[j:j + 100]) for j in range(0, n, 100)]
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(8)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        t0 = time.perf_counter()
        infos = [client.publish(summary_topic("cai/v1", ASSET), p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(60)
        bare_s = time.perf_counter() - t0
        client.loop_stop()
        client.disconnect()
        bare = n / bare_s
        print(f"bare paho baseline (no disk):         {n} acked in {bare_s:.2f} s = {bare:,.0f} summaries/s")
        print(f"ratio ours/bare: {ours / bare:.2f}   (a month offline, 259,200 summaries, drains in "
              f"{259_200 / ours:.0f} s)")
    q.close()
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([x for x, _ in trace], [n - y for _, y in trace])
        ax.set_xlabel("time since reconnect (s)")
        ax.set_ylabel("summaries still queued")
        ax.set_title(f"catch-up of {n} summaries ({ours:,.0f}/s)")
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        print(f"plot: {plot}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summaries", type=int, default=20000, help="queued summaries for the catch-up run")
    parser.add_argument("--plot", default="", help="PNG of the queue draining during catch-up")
    args = parser.parse_args()
    print("generating summaries from the drive cycle ...", flush=True)
    real = make_summaries(2000)
    bytes_section(real)
    # the catch-up queue repeats the real windows with continuing sequence numbers and times
    summaries = [dataclasses.replace(real[k % len(real)], sequence=k + 1,
                                     window_start_s=real[0].window_start_s + WINDOW_S * k,
                                     window_end_s=real[0].window_start_s + WINDOW_S * (k + 1))
                 for k in range(max(args.summaries, 300))]
    with tempfile.TemporaryDirectory() as d:
        fsync_section(summaries, Path(d))
        catch_up_section(summaries[:args.summaries], Path(d), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
