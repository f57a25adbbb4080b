"""uplink_bridge end to end: the node as its own process over DDS, a real mosquitto, and the
`carbon-ai uplink-receive` tool as the receiving end. Fault tests: broker outage, SIGKILL of the bridge,
refused TLS, full queue, hostile inputs."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys

import paho.mqtt.client as mqtt
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from mqtt_broker import MosquittoBroker, free_port, make_pki
from paho.mqtt.enums import CallbackAPIVersion

from carbon_ai_msgs.msg import CarbonEstimate, CarbonSummary, VehicleState
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos

pytestmark = pytest.mark.timeout(240)
NODE = "/truck1/uplink_bridge"


def bridge_params(tmp_path, port, **extra):
    params = {
        "window_s": 0.5, "batch_linger_s": 0.0, "backoff_min_s": 0.2, "backoff_max_s": 1.0,
        "queue_path": str(tmp_path / "uplink.sqlite3"), "mqtt_host": "127.0.0.1", "mqtt_port": port,
        "status_period_s": 0.1, "diagnostics_period_s": 0.3, "grace_s": 0.1,
    }
    params.update(extra)
    return params


class Feed:
    """Publishes CarbonEstimate + VehicleState for truck1 at 20 Hz from the probe's executor."""

    def __init__(self, probe):
        self.probe = probe
        self.est = probe.publisher(CarbonEstimate, "/truck1/carbon_estimate", qos.command())
        self.state = probe.publisher(VehicleState, "/truck1/vehicle_state", qos.command())
        self.timer = probe.node.create_timer(0.05, self.tick)
        self.on = True

    def tick(self):
        if not self.on:
            return
        stamp = self.probe.node.get_clock().now().to_msg()
        e = CarbonEstimate(asset_id="truck1", co2_rate_g_s=3.0, physics_co2_rate_g_s=3.3, fuel_rate_lph=4.0,
                           inference_latency_us=800, uncertainty_g_s=0.3, backend="physics", model_id="physics")
        e.header.stamp = stamp
        s = VehicleState(asset_id="truck1", speed_mps=12.0, fuel_rate_lph=5.0)  # a fuel meter reading
        s.header.stamp = stamp
        self.est.publish(e)
        self.state.publish(s)


def diag_values(diags):
    out = {}
    for array in diags:
        for status in array.status:
            if status.hardware_id == NODE:
                out = {kv.key: kv.value for kv in status.values}
                out["_level"] = status.level[0] if isinstance(status.level, bytes) else status.level
                out["_message"] = status.message
    return out


def start_receiver(broker, out):
    proc = subprocess.Popen(
        [sys.executable, "-m", "carbon_ai_nodes.cli", "uplink-receive", "--host", "127.0.0.1", "--port",
         str(broker.port), "--out", str(out), "--client-id", "test-receiver", "--timeout", "200"],
        stderr=subprocess.PIPE, text=True)
    return proc


def received(out):
    if not out.exists():
        return []
    return [json.loads(line)["sequence"] for line in out.read_text().splitlines()]


def finish(probe, feed, local, out, diags, node):
    """Stop the inputs, let every window close, and wait until the receiver holds every local summary."""
    feed.on = False
    probe.spin_for(2.0)  # time for the last windows to close: window 0.5 s + hold 1 s + grace 0.1 s
    assert probe.spin_until(lambda: diag_values(diags).get("queue.depth") == "0"
                            and int(diag_values(diags).get("next_sequence", 0)) - 1
                            == max(m.sequence for m in local), 60), (
        diag_values(diags), len(local), node.output)
    want = {m.sequence for m in local}
    assert probe.spin_until(lambda: want <= set(received(out)), 60), (sorted(want - set(received(out))),
                                                                     node.output)
    return want


@pytest.mark.slow
def test_broker_outage_every_summary_arrives_exactly_once_in_order(probe, tmp_path):
    local = probe.collect(CarbonSummary, "/truck1/carbon_summary", qos.latched(depth=10))
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    out = tmp_path / "received.jsonl"
    with MosquittoBroker(tmp_path / "broker") as broker:
        receiver = start_receiver(broker, out)
        feed = Feed(probe)
        with NodeProcess("uplink_bridge", namespace="/truck1", params=bridge_params(tmp_path, broker.port)) as node:
            assert probe.spin_until(lambda: len(received(out)) >= 3, 30), node.output
            broker.stop()
            n_before = len(local)
            assert probe.spin_until(lambda: len(local) >= n_before + 6, 30), node.output
            assert probe.spin_until(lambda: diag_values(diags).get("link.state") in ("backoff", "connecting")
                                    and int(diag_values(diags).get("queue.depth", 0)) > 0, 20), diag_values(diags)
            offline = diag_values(diags)
            assert offline["_level"] >= 1 and "offline" in offline["_message"], offline
            broker.start()
            want = finish(probe, feed, local, out, diags, node)
            assert int(diag_values(diags)["link.bytes_sent"]) > 0
            assert node.stop() == 0
        receiver.kill()
    seqs = received(out)
    assert seqs == sorted(set(seqs)), f"duplicates or out of order at the receiver: {seqs}"
    assert set(seqs) == want and seqs == list(range(1, len(seqs) + 1)), (seqs, sorted(want))
    assert all(m.co2_kg > 0 and m.estimate_count > 0 for m in local[1:-1])
    # CSB3 end to end: every estimate had a meter reading, so the CO2 is the meter's 5 L/h x the estimator's
    # factor (3 g/s over 4 L/h = 2700 g/L): 3.75 g/s; model and factor as the estimates named them
    rows = [json.loads(line) for line in out.read_text().splitlines()][1:-1]
    assert rows and all(r["model_ids"] == "physics:physics" and r["emission_factor"] == "fuel 2700 g/L"
                        for r in rows), rows[:3]
    assert all(r["measured_s"] > 0 and r["measured_co2_kg"] == pytest.approx(3.75e-3 * r["measured_s"], rel=0.1)
               for r in rows), rows[:3]


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_stored_summary_and_reports_the_interrupted_span(probe, tmp_path):
    local = probe.collect(CarbonSummary, "/truck1/carbon_summary", qos.latched(depth=10))
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    out = tmp_path / "received.jsonl"
    status = []
    with MosquittoBroker(tmp_path / "broker") as broker:
        receiver = start_receiver(broker, out)
        watcher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        watcher.on_message = lambda c, u, m: status.append(m.payload)
        watcher.connect("127.0.0.1", broker.port)
        watcher.subscribe("cai/v1/truck1/status", qos=1)
        watcher.loop_start()
        feed = Feed(probe)
        # linger 1 s: at the kill some summaries are stored but not yet sent
        params = bridge_params(tmp_path, broker.port, batch_linger_s=1.0)
        node = NodeProcess("uplink_bridge", namespace="/truck1", params=params)
        try:
            assert probe.spin_until(lambda: len(local) >= 6 and len(received(out)) >= 2, 40), node.output
            assert status[-1:] == [b"online"]
            assert node.stop(signal.SIGKILL) == -signal.SIGKILL
            first_run = {m.sequence for m in local}
            assert probe.spin_until(lambda: status[-1:] == [b"offline"], 20)  # the last will
        finally:
            node.stop()
        with NodeProcess("uplink_bridge", namespace="/truck1", params=params) as node:
            assert probe.spin_until(lambda: len({m.sequence for m in local} - first_run) >= 4, 40), node.output
            second_run = {m.sequence for m in local} - first_run
            crash_gap = max(first_run) + 1  # numbering continued from disk, first with the crash's gap record
            assert min(second_run) == crash_gap + 1
            want = finish(probe, feed, local, out, diags, node)
            assert node.stop() == 0
        watcher.loop_stop()
        receiver.kill()
    seqs = received(out)
    assert seqs == sorted(set(seqs)), f"duplicates or out of order at the receiver: {seqs}"
    assert set(seqs) == want | {crash_gap}, (seqs, sorted(want))
    gap = next(json.loads(line) for line in out.read_text().splitlines() if f'"sequence":{crash_gap},' in line)
    assert gap["gap"] == "bridge_crash" and gap["window_end_s"] > gap["window_start_s"], gap


def test_wrong_ca_is_refused_with_a_clear_diagnostic_and_data_is_kept(probe, tmp_path):
    pki = make_pki(tmp_path / "pki")
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    local = probe.collect(CarbonSummary, "/truck1/carbon_summary", qos.latched(depth=10))
    with MosquittoBroker(tmp_path / "broker", pki=pki, require_cert=True) as broker:
        Feed(probe)
        params = bridge_params(tmp_path, broker.port, tls_ca_file=pki["rogue_ca"],
                               tls_cert_file=pki["client_cert"], tls_key_file=pki["client_key"])
        with NodeProcess("uplink_bridge", namespace="/truck1", params=params) as node:
            assert probe.spin_until(lambda: diag_values(diags).get("link.error_kind") == "tls_verify"
                                    and int(diag_values(diags).get("queue.depth", 0)) >= 2, 30), node.output
            values = diag_values(diags)
            assert values["_level"] == 2
            assert "certificate" in values["_message"] and "tls_ca_file" in values["_message"]
            assert int(values["queue.depth"]) >= 2 and values["link.summaries_acked"] == "0"
            assert len(local) >= 2
            assert probe.spin_until(lambda: int(diag_values(diags).get("link.connect_failures", 0)) >= 3, 30)
            assert node.stop() == 0
    logged = [line for line in node.output.splitlines() if "uplink tls_verify" in line]
    assert len(logged) == 1 and "[ERROR]" in logged[0], logged  # once per state change, not per attempt


def test_full_queue_applies_drop_oldest_and_reports_it(probe, tmp_path):
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    Feed(probe)
    params = bridge_params(tmp_path, free_port(), window_s=0.1, queue_max_bytes=1024,
                           queue_full_policy="drop_oldest")
    with NodeProcess("uplink_bridge", namespace="/truck1", params=params) as node:
        assert probe.spin_until(lambda: int(diag_values(diags).get("queue.dropped_full", 0)) > 0, 30), node.output
        values = diag_values(diags)
        assert int(values["queue.stored_bytes"]) <= 1024
        assert values["queue.full_policy"] == "drop_oldest"
        assert probe.spin_until(lambda: "queue full" in diag_values(diags).get("_message", ""), 10)
        assert node.stop() == 0
    assert "drop_oldest" in node.output


def test_hostile_inputs_are_rejected_counted_and_harmless(probe, tmp_path):
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    local = probe.collect(CarbonSummary, "/truck1/carbon_summary", qos.latched(depth=10))
    est = probe.publisher(CarbonEstimate, "/truck1/carbon_estimate", qos.command())
    params = bridge_params(tmp_path, free_port(), mqtt_host="")
    with NodeProcess("uplink_bridge", namespace="/truck1", params=params) as node:
        assert probe.wait_for_subscribers(est, timeout_s=20)
        now = probe.node.get_clock().now().nanoseconds * 1e-9

        def send(t, asset="truck1", **fields):
            m = CarbonEstimate(asset_id=asset, co2_rate_g_s=2.0, physics_co2_rate_g_s=2.0, fuel_rate_lph=1.0)
            for k, v in fields.items():
                setattr(m, k, v)
            m.header.stamp.sec, m.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
            est.publish(m)

        def rejected():
            return {k.split(".")[2] for k in diag_values(diags) if k.startswith("rejected.carbon_estimate.")}

        # one at a time: a reliable keep-last history could drop part of a burst before the node reads it
        for fields, reason in [
            (dict(co2_rate_g_s=math.nan), "nan"), (dict(fuel_rate_lph=math.inf), "out_of_range"),
            (dict(asset="someone_else"), "wrong_asset"), (dict(t=now + 100.0), "future"),
            (dict(t=now - 100.0), "stale"), (dict(t=now + 0.5), None), (dict(t=now + 0.4), "out_of_order"),
        ]:
            send(fields.pop("t", now), **fields)
            if reason:
                assert probe.spin_until(lambda r=reason: r in rejected(), 20), (diag_values(diags), node.output)
        Feed(probe)  # then good data, which must still make summaries
        assert probe.spin_until(lambda: len(local) >= 1, 20), node.output
        assert all(math.isfinite(m.co2_kg) and m.co2_kg >= 0 for m in local)
        assert node.poll() is None
        assert node.stop() == 0
    assert "Traceback" not in node.output


def test_missing_tls_file_refuses_to_start_with_one_line(tmp_path):
    params = bridge_params(tmp_path, 8883, tls_ca_file="/nonexistent/ca.pem")
    with NodeProcess("uplink_bridge", namespace="/truck1", params=params) as node:
        assert node.wait(timeout_s=30) == 1
        lines = [line for line in node.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "tls_ca_file='/nonexistent/ca.pem'" in lines[0], lines
