"""`carbon-ai uplink-receive` bookkeeping: dedup across restarts of the receiver, gap counting, the plot."""

from __future__ import annotations

import json
import subprocess
import sys

import paho.mqtt.client as mqtt
import pytest
from mqtt_broker import MosquittoBroker
from paho.mqtt.enums import CallbackAPIVersion
from pg_server import PostgresServer, postgres, unavailable_reason  # noqa: F401  (postgres: the fixture)
from test_mqtt_link import wait_for

from carbon_ai_nodes.commands.uplink_receive import Receiver, plot
from carbon_ai_nodes.uplink.fleet_store import open_store
from carbon_ai_nodes.uplink.summary_codec import Summary, encode_batch


def batch(*seqs, **audit):
    """CSB1 (an older sender), or CSB3 with ``audit`` fields."""
    return encode_batch([Summary("van2", s, 1e9 + 10 * s, 1e9 + 10 * s + 10, 0.1 * s, 0.0, 0.0, 0.0, 0.0, 1, 1,
                                 **audit) for s in seqs])


def test_duplicates_are_dropped_also_after_a_restart_and_gaps_counted(tmp_path):
    out = tmp_path / "rx.jsonl"
    r = Receiver(out)
    r.handle("cai/v1/van2/s", batch(1, 2, 3))
    r.handle("cai/v1/van2/s", batch(2, 3))
    r.close()
    assert (r.new, r.duplicates) == (3, 2)
    r = Receiver(out)  # a restarted receiver reads what it already has
    r.handle("cai/v1/van2/s", batch(3, 4, 7))
    r.close()
    assert (r.new, r.duplicates, r.gaps) == (2, 1, 1)
    assert [json.loads(line)["sequence"] for line in out.read_text().splitlines()] == [1, 2, 3, 4, 7]


def test_plot_writes_a_png(tmp_path):
    out = tmp_path / "rx.jsonl"
    r = Receiver(out)
    r.handle("cai/v1/van2/s", batch(*range(1, 20)))
    r.close()
    plot(out, str(tmp_path / "co2.png"))
    assert (tmp_path / "co2.png").read_bytes()[:4] == b"\x89PNG"


def test_gap_records_are_recorded_and_accounted_and_late_rows_still_count(tmp_path):
    out = tmp_path / "rx.jsonl"
    lines = []
    r = Receiver(out, log=lines.append)
    r.handle("cai/v1/van2/s", batch(1, 2, 3))
    gap = Summary("van2", 8, 1e9 + 40, 1e9 + 70, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, gap="queue_corrupted",
                  lost_first=4, lost_last=7)
    r.handle("cai/v1/van2/s", encode_batch([gap]))
    assert r.accounting("van2") == {"delivered": 3, "gap_records": 1, "lost_reported": 4, "silent": 0}
    assert "rows 4..7 named lost (4 not received): queue corrupted" in lines[-1]
    r.handle("cai/v1/van2/s", batch(5, 9, 11))  # 5 was in flight after all; 10 vanished without a word
    r.close()
    assert r.accounting("van2") == {"delivered": 6, "gap_records": 1, "lost_reported": 3, "silent": 1}
    again = Receiver(out)  # the gap record is in the file, so a restarted receiver knows it too
    assert again.accounting("van2") == r.accounting("van2")
    again.close()
    assert json.loads(out.read_text().splitlines()[3])["gap"] == "queue_corrupted"


def test_a_hostile_gap_range_costs_no_memory(tmp_path):
    r = Receiver(tmp_path / "rx.jsonl", log=lambda line: None)
    r.handle("cai/v1/van2/s", batch(1))
    r.handle("cai/v1/van2/s", encode_batch([Summary("van2", 2, 1e9, 1e9, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0,
                                                    gap="expired", lost_first=3, lost_last=2**63)]))
    r.close()
    assert r.accounting("van2") == {"delivered": 1, "gap_records": 1, "lost_reported": 2**63 - 2, "silent": 0}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    return request.getfixturevalue("postgres").create_database("rx")


def test_a_redelivered_summary_is_stored_once_through_a_real_broker(tmp_path, db_url):
    with MosquittoBroker(tmp_path / "broker") as broker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "carbon_ai_nodes.cli", "uplink-receive", "--host", "127.0.0.1", "--port",
             str(broker.port), "--db", db_url, "--count", "3", "--timeout", "60"],
            stderr=subprocess.PIPE, text=True)
        pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        store = open_store(db_url)
        try:
            # the subscription exists once a batch arrives: resend until it is stored (redeliveries already)
            assert wait_for(lambda: (pub.publish("cai/v1/van2/s", batch(1, 2), qos=1).wait_for_publish(10),
                                     store.count() >= 2)[1])
            pub.publish("cai/v1/van2/s", batch(1, 2), qos=1).wait_for_publish(10)  # one more redelivery
            csb3 = batch(3, measured_s=2.5, measured_co2_kg=0.08, modelled_co2_kg=0.225, co2_sigma_kg=0.0225,
                         model_ids="physics:physics", emission_factor="")  # a CSB3 sender beside the CSB1 one
            pub.publish("cai/v1/van2/s", csb3, qos=1).wait_for_publish(10)
            _, err = proc.communicate(timeout=60)
            rows = store.rows(0, 2e9)
        finally:
            store.close()
            pub.loop_stop()
            proc.kill()
    assert proc.returncode == 0, err
    assert [r["sequence"] for r in rows] == [1, 2, 3]
    assert rows[2]["co2_kg"] == pytest.approx(0.3)
    assert [rows[2][c] for c in ("measured_s", "measured_co2_kg", "modelled_co2_kg", "co2_sigma_kg", "model_ids",
                                 "emission_factor")] == [2.5, 0.08, 0.225, 0.0225, "physics:physics", ""]
    assert rows[0]["measured_s"] is None and rows[0]["model_ids"] is None  # CSB1: unknown
    assert "3 new" in err and "0 database errors" in err and "Traceback" not in err, err
    assert int(err.split(" duplicates dropped")[0].rsplit(" ", 1)[1]) >= 2, err


def test_no_destination_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", "uplink-receive", "--port", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "no destination: give --db sqlite:///fleet.db" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_two_receivers_on_a_shared_subscription_store_each_summary_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    store = open_store(url)  # migrated before both receivers start
    with MosquittoBroker(tmp_path / "broker") as broker:
        receivers = [subprocess.Popen(
            [sys.executable, "-m", "carbon_ai_nodes.cli", "uplink-receive", "--host", "127.0.0.1", "--port",
             str(broker.port), "--db", url, "--shared", "rx", "--timeout", "120"],
            stderr=subprocess.PIPE, text=True) for _ in range(2)]
        pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            for proc in receivers:  # each prints "subscribed" once its SUBSCRIBE is sent
                assert proc.stderr is not None and "subscribed to $share/rx/" in proc.stderr.readline()
            # until both subscriptions are live a batch may reach no one: resend the first until it is stored
            assert wait_for(lambda: (pub.publish("cai/v1/van2/s", batch(1), qos=1).wait_for_publish(10),
                                     store.count() >= 1)[1])
            for seq in range(2, 41):
                pub.publish("cai/v1/van2/s", batch(seq), qos=1).wait_for_publish(10)
            assert wait_for(lambda: store.count() >= 40)
            for proc in receivers:
                proc.send_signal(2)  # SIGINT: the receiver stops and prints its counts
            errs = [proc.communicate(timeout=60)[1] for proc in receivers]
            rows = store.rows(0, 2e9)
        finally:
            store.close()
            pub.loop_stop()
            for proc in receivers:
                proc.kill()
    assert [r["sequence"] for r in rows] == list(range(1, 41))
    new = [int(err.split(" new,")[0].rsplit(" ", 1)[1]) for err in errs]
    assert sum(new) == 40 and min(new) > 0, errs  # both took a share, and no summary was stored twice


def test_summaries_that_arrive_while_the_database_is_down_are_stored_once_it_is_back(tmp_path):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()  # its own server: this test stops it
    log = tmp_path / "receiver.txt"
    try:
        db_url = server.create_database("rx")
        with MosquittoBroker(tmp_path / "broker") as broker, log.open("w") as err_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "carbon_ai_nodes.cli", "uplink-receive", "--host", "127.0.0.1", "--port",
                 str(broker.port), "--db", db_url, "--client-id", "rx-outage", "--count", "4", "--timeout", "120"],
                stderr=err_file, text=True)
            pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            store = open_store(db_url)
            try:
                assert wait_for(lambda: (pub.publish("cai/v1/van2/s", batch(1), qos=1).wait_for_publish(10),
                                         store.count() >= 1)[1])  # the receiver is subscribed and storing
                store.close()
                server.halt()  # the outage: these three arrive while the database is down
                for seq in (2, 3, 4):
                    pub.publish("cai/v1/van2/s", batch(seq), qos=1).wait_for_publish(10)
                assert wait_for(lambda: "holding messages" in log.read_text(), 60), log.read_text()
                server.resume()
                proc.wait(timeout=120)
                store = open_store(db_url)
                rows = store.rows(0, 2e9)
            finally:
                store.close()
                pub.loop_stop()
                proc.kill()
    finally:
        server.stop()
    err = log.read_text()
    assert proc.returncode == 0, err
    assert [r["sequence"] for r in rows] == [1, 2, 3, 4], err  # nothing lost, nothing twice
    assert "holding messages (not acknowledged to the broker) and retrying" in err, err
    assert err.count("database error:") == 1 and "database back after" in err, err  # logged once per outage
    assert "Traceback" not in err, err
