"""Fleet store benchmark: N simulated assets send 10 s windows through a real mosquitto into
`carbon-ai uplink-receive --db`, for SQLite and PostgreSQL.

    python bench/bench_fleet_store.py [--assets 1 100 1000] [--windows 20000] [--db sqlite postgresql]

Time is compressed: each asset's windows are 10 s long, but all are published as fast as one paho client can
(QoS 1, one CSB3 summary per message, assets round-robin), so the figure is what one receiver sustains, not what a
fleet offers (1000 assets x one window / 10 s = 100 summaries/s). Per run: summaries/s stored (first to last
stored), end-to-end delay publish -> row committed (received_s minus the publish time carried as window end;
p50/p99) and database bytes per stored summary, scaled to an asset-month of 24/7 10 s windows (259 200 windows,
30 days). PostgreSQL's size is the database minus the empty database measured first.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

WINDOWS_PER_MONTH = 30 * 24 * 360
# what a CSB3 sender adds to each summary: 4 s of 10 metered, its model and emission factor
AUDIT = {"measured_s": 4.0, "measured_co2_kg": 0.021, "modelled_co2_kg": 0.03, "co2_sigma_kg": 0.003,
         "model_ids": "onnxruntime-cpu:residual-3f2a9c", "emission_factor": "diesel 2689 g/L"}


def run_one(db_kind: str, assets: int, windows: int, pg) -> dict[str, float]:
    import paho.mqtt.client as mqtt
    from mqtt_broker import MosquittoBroker
    from paho.mqtt.enums import CallbackAPIVersion

    from carbon_ai_nodes.uplink.fleet_store import open_store
    from carbon_ai_nodes.uplink.summary_codec import Summary, encode_batch

    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    url = f"sqlite:///{work / 'fleet.db'}" if db_kind == "sqlite" else pg.create_database(f"bench{assets}")
    store = open_store(url)  # migrate first so the receiver's start and the empty size are out of the figures
    empty_bytes = store.size_bytes() if db_kind == "postgresql" else 0
    per_asset = max(1, windows // assets)
    total = per_asset * assets
    with MosquittoBroker(work / "broker") as broker:
        rx = subprocess.Popen([sys.executable, "-m", "carbon_ai_nodes.cli", "uplink-receive", "--host", "127.0.0.1",
                               "--port", str(broker.port), "--db", url, "--count", str(total), "--timeout", "900"],
                              stderr=subprocess.PIPE, text=True)
        assert rx.stderr is not None
        line = rx.stderr.readline()  # "subscribed to ..." (SUBSCRIBE sent; the first publishes follow SUBACK)
        if "subscribed" not in line:
            raise RuntimeError(f"receiver did not start: {line}{rx.stderr.read()}")
        time.sleep(0.5)  # SUBACK has no event outside the receiver; the count check below catches a miss
        pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.max_inflight_messages_set(100)
        pub.max_queued_messages_set(0)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        t0 = time.time()
        for n in range(1, per_asset + 1):
            for a in range(assets):
                now = time.time()
                s = Summary(f"asset{a:04d}", n, now - 10.0, now, 0.05, 0.02, 0.1, 0.0, 0.001, 10, 800, **AUDIT)
                pub.publish(f"cai/v1/asset{a:04d}/s", encode_batch([s]), qos=1)
            done = n * assets
            if n % max(1, per_asset // 10) == 0:
                print(f"  {db_kind} {assets} assets: published {done}/{total}", file=sys.stderr, flush=True)
        _, err = rx.communicate(timeout=900)
        pub.loop_stop()
        pub.disconnect()
    rows = store.rows(0, 4e9)
    size = store.size_bytes() - empty_bytes
    store.close()
    shutil.rmtree(work, ignore_errors=True)
    if len(rows) != total:
        raise RuntimeError(f"{len(rows)} of {total} stored: {err[-2000:]}")
    delays = sorted(r["received_s"] - r["window_end_s"] for r in rows)
    received = [r["received_s"] for r in rows]
    span = max(received) - min(received)
    return {"stored": len(rows), "per_s": len(rows) / span if span > 0 else float("nan"),
            "p50_ms": 1e3 * statistics.median(delays), "p99_ms": 1e3 * delays[int(0.99 * (len(delays) - 1))],
            "bytes_per_summary": size / len(rows), "publish_s": received[-1] - t0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--windows", type=int, default=20000, help="summaries per run, spread over the assets")
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    pg = None
    if "postgresql" in args.db:
        from pg_server import PostgresServer, unavailable_reason

        reason = unavailable_reason()
        if reason:
            print(f"skipping PostgreSQL: {reason}", file=sys.stderr)
            args.db.remove("postgresql")
        else:
            pg = PostgresServer(durable=True).start()  # fsync on, as SQLite's commits
    print("db          assets  stored  summaries/s  e2e p50 ms  e2e p99 ms  B/summary  MB/asset-month")
    try:
        for kind in args.db:
            for assets in args.assets:
                r = run_one(kind, assets, args.windows, pg)
                print(f"{kind:<11} {assets:>6} {r['stored']:>7} {r['per_s']:>12.0f} {r['p50_ms']:>11.1f} "
                      f"{r['p99_ms']:>11.1f} {r['bytes_per_summary']:>10.0f} "
                      f"{r['bytes_per_summary'] * WINDOWS_PER_MONTH / 1e6:>15.1f}", flush=True)
    finally:
        if pg is not None:
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
