"""carbon_inference as its own process over real DDS: one estimate per state, bad input rejected and counted,
hot swap without dropping messages, a corrupt model refused while the old one serves, fleet micro-batching."""

from __future__ import annotations

import math

import pytest
from conftest import REPO
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from carbon_ai_msgs.msg import CarbonEstimate, VehicleState
from carbon_ai_msgs.srv import SwapModel
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.stamps import to_time

SEDAN = str(REPO / "config" / "vehicles" / "example_sedan.yaml")
MODEL = str(REPO / "carbon_ai_nodes" / "carbon" / "models" / "co2_residual_v1.onnx")


def vstate(stamp_s: float, speed: float = 12.0, accel: float = 0.2, asset: str = "car1") -> VehicleState:
    m = VehicleState(asset_id=asset, speed_mps=speed, accel_mps2=accel, grade=0.0, payload_kg=math.nan,
                     engine_speed_rpm=math.nan, engine_load_pct=math.nan, fuel_rate_lph=math.nan,
                     coolant_temp_c=math.nan, ambient_temp_c=math.nan)
    m.header.stamp = to_time(stamp_s)
    m.header.frame_id = "map"
    return m


def diag_value(diags, ns_node, key):
    vals = [kv.value for a in diags for s in a.status if s.hardware_id == ns_node for kv in s.values if kv.key == key]
    return vals[-1] if vals else None


def test_one_estimate_per_state_and_bad_input_is_rejected(probe):
    ns = "/inf1"
    got = probe.collect(CarbonEstimate, f"{ns}/carbon_estimate", qos.command(depth=200))
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    pub = probe.publisher(VehicleState, f"{ns}/vehicle_state", qos.command(depth=200))
    with NodeProcess("carbon_inference", namespace=ns,
                     params={"vehicle_profile": SEDAN, "diagnostics_period_s": 0.2}) as node:
        assert probe.wait_for_subscribers(pub, timeout_s=30), node.output
        assert probe.wait_for_publishers(f"{ns}/carbon_estimate", timeout_s=30), node.output
        good = [vstate(1.0 + i * 0.1, speed=5.0 + i) for i in range(10)]
        bad = [vstate(3.0, speed=math.nan), vstate(3.1, speed=-20.0), vstate(0.5)]  # NaN, range, out of order
        for m in good[:5] + bad + good[5:]:
            pub.publish(m)
        assert probe.spin_until(lambda: len(got) >= 10, timeout_s=30), node.output
        probe.spin_for(0.3)  # nothing more may arrive: the three bad states produce no estimate
        assert len(got) == 10
        assert [e.header.stamp.sec + e.header.stamp.nanosec * 1e-9 for e in got] == pytest.approx(
            [1.0 + i * 0.1 for i in range(10)], abs=1e-6)
        e = got[3]
        assert e.backend == "onnxruntime-cpu" and e.model_id.startswith("co2_residual_v1-")
        assert e.asset_id == "car1" and e.header.frame_id == "map"
        assert e.co2_rate_g_s > 0 and e.physics_co2_rate_g_s > 0 and e.uncertainty_g_s > 0
        assert 0 < e.inference_latency_us < 1_000_000
        ours = f"{ns}/carbon_inference"
        assert probe.spin_until(lambda: diag_value(diags, ours, "rejected.vehicle_state.nan") == "1"
                                and diag_value(diags, ours, "rejected.vehicle_state.out_of_order") == "1",
                                timeout_s=20), [kv.key for a in diags for s in a.status for kv in s.values]
        assert diag_value(diags, ours, "backend") == "onnxruntime-cpu"
        assert node.stop() == 0
        assert "Traceback" not in node.output


def test_missing_profile_is_a_one_line_error():
    with NodeProcess("carbon_inference", params={"vehicle_profile": "/nonexistent/v.yaml"}) as node:
        assert node.wait(timeout_s=30) == 1
        lines = [x for x in node.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "/nonexistent/v.yaml" in lines[0]


def test_hot_swap_keeps_every_message_and_corrupt_model_is_refused(probe, tmp_path):
    ns = "/inf2"
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    copy = tmp_path / "other_model.onnx"
    copy.write_bytes(open(MODEL, "rb").read())
    got = probe.collect(CarbonEstimate, f"{ns}/carbon_estimate", qos.command(depth=200))
    pub = probe.publisher(VehicleState, f"{ns}/vehicle_state", qos.command(depth=200))
    swap = probe.node.create_client(SwapModel, f"{ns}/swap_model")
    with NodeProcess("carbon_inference", namespace=ns, params={"vehicle_profile": SEDAN, "queue_depth": 200}) as node:
        assert probe.wait_for_subscribers(pub, timeout_s=30), node.output
        assert probe.wait_for_publishers(f"{ns}/carbon_estimate", timeout_s=30), node.output
        assert swap.wait_for_service(timeout_sec=30)
        sent = 0

        def send(n):
            nonlocal sent
            for _ in range(n):
                sent += 1
                pub.publish(vstate(sent * 0.01))

        send(20)
        # the first 20 are served by the shipped model before any swap (a loaded CI run served them after both)
        assert probe.spin_until(lambda: len(got) >= 20, timeout_s=30), len(got)
        future = swap.call_async(SwapModel.Request(model_path=str(corrupt)))
        send(20)
        assert probe.spin_until(future.done, 20)
        bad = future.result()
        assert not bad.success and str(corrupt) in bad.message
        assert bad.model_id.startswith("co2_residual_v1-")  # the old model keeps serving
        future = swap.call_async(SwapModel.Request(model_path=str(copy)))
        send(20)
        assert probe.spin_until(future.done, 20)
        assert future.result().success, future.result().message
        assert future.result().model_id.startswith("other_model-")
        send(20)
        assert probe.spin_until(lambda: len(got) >= sent, timeout_s=30), (len(got), sent)
        assert len(got) == sent == 80  # nothing dropped across the swaps
        ids = [e.model_id for e in got]
        assert ids[0].startswith("co2_residual_v1-") and ids[-1].startswith("other_model-")
        # once switched, never back: the swap is atomic
        first_new = next(i for i, x in enumerate(ids) if x.startswith("other_model-"))
        assert all(x.startswith("other_model-") for x in ids[first_new:])
        assert node.stop() == 0


def test_fleet_mode_micro_batches_each_asset(probe):
    ns = "/fleet"
    assets = ["truck1", "truck2", "truck3"]
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    got = {a: probe.collect(CarbonEstimate, f"{ns}/{a}/carbon_estimate", qos.command(depth=200)) for a in assets}
    pubs = {a: probe.publisher(VehicleState, f"{ns}/{a}/vehicle_state", qos.command(depth=200)) for a in assets}
    van = str(REPO / "config" / "vehicles" / "delivery_van.yaml")
    with NodeProcess("carbon_inference", namespace=ns, params={
            "vehicle_profile": SEDAN, "assets": assets, "asset_profiles": [SEDAN, SEDAN, van],
            "batch_period_s": 0.02, "diagnostics_period_s": 0.2}) as node:
        for a, p in pubs.items():
            assert probe.wait_for_subscribers(p, timeout_s=30), node.output
            assert probe.wait_for_publishers(f"{ns}/{a}/carbon_estimate", timeout_s=30), node.output
        for i in range(15):
            for a in assets:
                pubs[a].publish(vstate(1.0 + i * 0.1, speed=8.0 + i, asset=a))
        assert probe.spin_until(lambda: all(len(g) >= 15 for g in got.values()), timeout_s=30), \
            {a: len(g) for a, g in got.items()}
        probe.spin_for(0.2)
        assert all(len(g) == 15 for g in got.values())
        assert {e.asset_id for e in got["truck2"]} == {"truck2"}
        # the diesel van is outside the gasoline model: physics, flagged
        assert all(e.is_out_of_distribution for e in got["truck3"])
        assert got["truck1"][5].co2_rate_g_s == pytest.approx(got["truck2"][5].co2_rate_g_s)
        # states that arrived within one window went through the backend together
        assert probe.spin_until(lambda: int(diag_value(diags, f"{ns}/carbon_inference", "max_batch_size") or 0) > 1,
                                timeout_s=20)
        assert node.stop() == 0


def test_model_path_parameter_swaps_or_is_refused(probe, tmp_path):
    ns = "/inf3"
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"")
    copy = tmp_path / "param_model.onnx"
    copy.write_bytes(open(MODEL, "rb").read())
    got = probe.collect(CarbonEstimate, f"{ns}/carbon_estimate", qos.command(depth=200))
    pub = probe.publisher(VehicleState, f"{ns}/vehicle_state", qos.command(depth=200))
    set_params = probe.node.create_client(SetParameters, f"{ns}/carbon_inference/set_parameters")

    def set_model(path):
        p = Parameter(name="model_path", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=path))
        return probe.call(set_params, SetParameters.Request(parameters=[p]), timeout_s=20.0, resend_s=2.0).results[0]

    with NodeProcess("carbon_inference", namespace=ns, params={"vehicle_profile": SEDAN}) as node:
        assert probe.wait_for_subscribers(pub, timeout_s=30), node.output
        assert probe.wait_for_publishers(f"{ns}/carbon_estimate", timeout_s=30), node.output
        refused = set_model(str(corrupt))
        assert not refused.successful and str(corrupt) in refused.reason
        pub.publish(vstate(1.0))
        assert probe.spin_until(lambda: len(got) == 1, timeout_s=20), node.output
        assert got[0].model_id.startswith("co2_residual_v1-")
        assert set_model(str(copy)).successful
        pub.publish(vstate(2.0))
        assert probe.spin_until(lambda: len(got) == 2, timeout_s=20), node.output
        assert got[1].model_id.startswith("param_model-")
        assert set_model("none").successful
        pub.publish(vstate(3.0))
        assert probe.spin_until(lambda: len(got) == 3, timeout_s=20), node.output
        assert got[2].backend == "physics" and got[2].co2_rate_g_s == got[2].physics_co2_rate_g_s
        assert node.stop() == 0


def test_measured_fuel_error_integrates_only_intervals_with_a_meter_reading():
    from carbon_ai_nodes.carbon.carbon_estimator import MeasuredFuelError

    err = MeasuredFuelError(max_gap_s=1.0)
    assert math.isnan(err.error_pct)
    for i, (est, meas) in enumerate([(10.0, 8.0), (10.0, 8.0), (10.0, math.nan), (10.0, 8.0)]):
        err.update(i * 0.5, est, meas)
    err.update(10.0, 10.0, 8.0)  # after a 8.5 s gap: not counted
    err.update(9.0, 99.0, 1.0)  # out of order: not counted
    assert err.model_l == pytest.approx(10.0 * 1.0 / 3600) and err.measured_l == pytest.approx(8.0 * 1.0 / 3600)
    assert err.error_pct == pytest.approx(25.0)


def test_diagnostics_show_the_estimators_error_against_the_fuel_meter(probe):
    ns = "/inf_meter"
    got = probe.collect(CarbonEstimate, f"{ns}/carbon_estimate", qos.command(depth=200))
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    pub = probe.publisher(VehicleState, f"{ns}/vehicle_state", qos.command(depth=200))
    with NodeProcess("carbon_inference", namespace=ns,
                     params={"vehicle_profile": SEDAN, "diagnostics_period_s": 0.2, "max_state_age_s": 0.0}) as node:
        assert probe.wait_for_subscribers(pub, timeout_s=30), node.output
        assert probe.wait_for_publishers(f"{ns}/carbon_estimate", timeout_s=30), node.output
        for i in range(20):
            m = vstate(1.0 + i * 0.1, speed=10.0 + 0.2 * i)
            m.fuel_rate_lph = 6.0  # what the meter says
            pub.publish(m)
        assert probe.spin_until(lambda: len(got) >= 20, timeout_s=30), node.output
        model_l = sum(e.fuel_rate_lph * 0.1 / 3600 for e in got[1:])
        expected = (model_l - 6.0 * 0.1 * 19 / 3600) / (6.0 * 0.1 * 19 / 3600) * 100
        ours = f"{ns}/carbon_inference"
        assert probe.spin_until(lambda: diag_value(diags, ours, "fuel_measured_l") == f"{6.0 * 1.9 / 3600:.4f}",
                                timeout_s=20), [kv.key for a in diags for s in a.status for kv in s.values]
        assert float(diag_value(diags, ours, "fuel_model_vs_measured_pct")) == pytest.approx(expected, abs=0.11)
        assert node.stop() == 0


def test_with_a_fleet_key_only_models_signed_for_the_vehicle_run(probe, tmp_path):
    """model_public_key set: a model the fleet key signed for this profile serves; a swap to an unsigned one, to
    one whose bytes changed after signing, or to one signed for another class is refused while it keeps
    serving; a node started on an unsigned model serves physics and says why."""
    import shutil

    from test_model_signature import altered_model

    from carbon_ai_nodes.carbon import model_signature as ms

    ms.generate_key_pair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    key = ms.load_private_key(tmp_path / "fleet.key")
    paths = {name: tmp_path / f"{name}.onnx" for name in ("signed", "unsigned", "tampered", "for_vans")}
    for p in paths.values():
        shutil.copyfile(MODEL, p)
    ms.sign_model(paths["signed"], key, ["example sedan"])
    ms.sign_model(paths["tampered"], key, ["example sedan"])
    altered_model(MODEL, paths["tampered"])
    ms.sign_model(paths["for_vans"], key, ["delivery van"])
    ns = "/inf_signed"
    got = probe.collect(CarbonEstimate, f"{ns}/carbon_estimate", qos.command(depth=50))
    pub = probe.publisher(VehicleState, f"{ns}/vehicle_state", qos.command(depth=50))
    swap = probe.node.create_client(SwapModel, f"{ns}/swap_model")
    params = {"vehicle_profile": SEDAN, "model_public_key": str(tmp_path / "fleet.pub")}
    with NodeProcess("carbon_inference", namespace=ns, params={**params, "model_path": str(paths["signed"])}) as node:
        assert swap.wait_for_service(timeout_sec=30), node.output
        for name, words in (("unsigned", "unsigned"), ("tampered", "changed after it was signed"),
                            ("for_vans", "signed for ['delivery van'], not for ['example sedan']")):
            result = probe.call(swap, SwapModel.Request(model_path=str(paths[name])), timeout_s=20.0)
            assert not result.success and words in result.message, result.message
            assert result.model_id.startswith("signed-")  # the signed model keeps serving
        assert probe.wait_for_subscribers(pub, timeout_s=30), node.output
        pub.publish(vstate(1.0))
        assert probe.spin_until(lambda: len(got) == 1, timeout_s=20), node.output
        assert got[0].model_id.startswith("signed-") and got[0].backend == "onnxruntime-cpu"
        assert node.stop() == 0
    with NodeProcess("carbon_inference", namespace=ns, params={**params, "model_path": str(paths["unsigned"])}) as node:
        assert probe.wait_for_subscribers(pub, timeout_s=30), node.output
        pub.publish(vstate(2.0))
        assert probe.spin_until(lambda: len(got) == 2, timeout_s=20), node.output
        assert got[1].backend == "physics"
        assert "[skipped signature: " in node.output and "unsigned" in node.output
        assert node.stop() == 0
