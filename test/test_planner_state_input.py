"""The planner takes fusion's output at standstill as it is: a noise-sized negative speed and a NaN payload
(VehicleState.msg: every float may be NaN) are normal, not rejections; a state it cannot use is rejected,
counted on /diagnostics and logged once per change, not once per message."""

from __future__ import annotations

import math

import pytest
from diagnostic_msgs.msg import DiagnosticArray

from carbon_ai_msgs.msg import VehicleState
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.vehicle_state_rules import check_vehicle_state
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos


def test_standstill_noise_and_a_missing_payload_are_accepted():
    # the planner node's whole check
    assert check_vehicle_state(VehicleState(speed_mps=-4.9e-05, payload_kg=math.nan)) == 0.0
    assert check_vehicle_state(VehicleState(speed_mps=12.5, payload_kg=220000.0)) == 12.5


@pytest.mark.parametrize("speed, payload, reason", [
    (math.nan, 0.0, "nan"), (-3.0, 0.0, "out_of_range"), (math.inf, 0.0, "nan"),
    (1.0, -1000.0, "out_of_range"), (1.0, math.inf, "out_of_range")])
def test_states_the_planner_cannot_use_are_rejected_with_the_field(speed, payload, reason):
    with pytest.raises(InputRejectedError) as exc:
        check_vehicle_state(VehicleState(speed_mps=speed, payload_kg=payload))
    assert exc.value.reason == reason
    assert ("speed_mps" if speed != 1.0 else "payload_kg") in exc.value.detail


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_planner_node_accepts_standstill_states_and_logs_a_rejection_once(probe):
    reports = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    pub = probe.publisher(VehicleState, "/st/vehicle_state", qos.command())

    def values() -> dict[str, str]:
        mine = [s for r in reports for s in r.status if s.hardware_id == "/st/planner"]
        return {kv.key: kv.value for kv in mine[-1].values} if mine else {}

    with NodeProcess("planner", namespace="/st") as node:
        assert probe.spin_until(lambda: values().get("lifecycle_state") == "active", 60), node.output
        assert probe.wait_for_subscribers(pub, 1, 30), node.output

        def send(speed: float, payload: float, n: int) -> None:
            for _ in range(n):
                pub.publish(VehicleState(speed_mps=speed, payload_kg=payload))
                probe.spin_for(0.02)  # keeps the messages in order of publication on the reliable topic

        # fusion at standstill, as logged in the haul-truck run: speed -4.9e-05 m/s, payload NaN, then moving
        for _ in range(5):
            send(-4.9e-05, math.nan, 4)
            send(3.0, 220000.0, 1)
        assert probe.spin_until(lambda: int(values().get("accepted.vehicle_state", 0)) == 25, 30), values()
        assert not any(k.startswith("rejected.vehicle_state") for k in values()), values()
        # a speed it cannot use: rejected every time, counted, logged once; recovery logged once
        send(-3.0, 0.0, 3)
        send(1.0, 0.0, 1)
        assert probe.spin_until(lambda: values().get("rejected.vehicle_state.out_of_range") == "3", 30), values()
        assert probe.spin_until(lambda: values().get("accepted.vehicle_state") == "26", 30), values()
        assert node.stop() == 0
    out = node.output
    assert out.count("rejecting vehicle_state") == 1, out
    assert "speed_mps=-3 outside" in out
    assert out.count("vehicle_state: receiving valid data again") == 1, out
    assert "Traceback" not in out
