"""Lifecycle supervision logic: dependency-ordered bring-up, heartbeat loss, safe take-down actuator first."""

from __future__ import annotations

import pytest

from carbon_ai_nodes.common.params import ParameterError
from carbon_ai_nodes.graph.supervisor import LifecycleManagerParams, Supervisor, shutdown_order, startup_order

NODES = ["/t1/actuator_bridge", "/t1/fusion", "/t1/carbon_inference", "/t1/sim", "/t1/planner"]


def drive(sup: Supervisor, now: float, states: dict[str, str], alive: set[str]) -> list:
    """One supervision round against simulated nodes that do what they are asked."""
    for n in alive:
        sup.heartbeat(n, now, states[n])
    done = []
    for r in sup.step(now):
        states[r.node] = {"configure": "inactive", "activate": "active", "deactivate": "inactive"}[r.transition]
        sup.transition_done(r.node, r.transition, True)
        done.append(r)
    return done


def test_orders_put_producers_first_and_the_actuator_first_down():
    assert startup_order(NODES) == ["/t1/sim", "/t1/fusion", "/t1/carbon_inference", "/t1/planner",
                                    "/t1/actuator_bridge"]
    assert shutdown_order(NODES)[0] == "/t1/actuator_bridge"
    assert shutdown_order(NODES)[1:] == ["/t1/planner", "/t1/carbon_inference", "/t1/fusion", "/t1/sim"]


def test_brings_up_in_dependency_order_then_goes_safe_actuator_first_and_recovers():
    sup = Supervisor(NODES, heartbeat_timeout_s=1.0)
    states = {n: "unconfigured" for n in NODES}
    alive = set(NODES)
    log = []
    t = 0.0
    for _ in range(20):
        t += 0.1
        log += drive(sup, t, states, alive)
    assert sup.graph_state == "active"
    activations = [r.node for r in log if r.transition == "activate"]
    assert activations == startup_order(NODES)
    # fusion dies: the actuator bridge is deactivated first, alone, then the rest
    alive.discard("/t1/fusion")
    down = []
    for _ in range(40):
        t += 0.1
        down += drive(sup, t, states, alive)
    assert sup.graph_state == "degraded"
    assert down[0].node == "/t1/actuator_bridge" and down[0].transition == "deactivate"
    assert all(states[n] == "inactive" for n in alive)
    # fusion restarts (unconfigured): the graph comes back, actuator last
    alive.add("/t1/fusion")
    states["/t1/fusion"] = "unconfigured"
    up = []
    for _ in range(40):
        t += 0.1
        up += drive(sup, t, states, alive)
    assert sup.graph_state == "active"
    assert [r.node for r in up if r.transition == "activate"][-1] == "/t1/actuator_bridge"
    assert any("degraded" in e for e in sup.events) and any("safe" in e for e in sup.events)


def test_waits_for_every_node_and_retries_failed_transitions():
    sup = Supervisor(NODES[:2], heartbeat_timeout_s=1.0, transition_timeout_s=0.5)
    sup.heartbeat("/t1/fusion", 0.0, "unconfigured")
    assert sup.step(0.0) == []  # the actuator bridge was never seen: nothing starts
    sup.heartbeat("/t1/actuator_bridge", 0.1, "unconfigured")
    first = sup.step(0.1)
    assert {r.transition for r in first} == {"configure"}
    sup.transition_done("/t1/fusion", "configure", False)
    assert sup.nodes["/t1/fusion"].failures == 1
    sup.heartbeat("/t1/fusion", 0.2, "unconfigured")
    assert any(r.node == "/t1/fusion" and r.transition == "configure" for r in sup.step(0.2))
    # an unanswered call times out and counts as a failure
    sup.heartbeat("/t1/fusion", 0.9, "unconfigured")
    sup.heartbeat("/t1/actuator_bridge", 0.9, "unconfigured")
    sup.step(0.9)
    assert sup.nodes["/t1/fusion"].failures >= 2


def test_params_name_the_key():
    with pytest.raises(ParameterError, match="lifecycle_manager.node_names"):
        LifecycleManagerParams()
    with pytest.raises(ParameterError, match="duplicate"):
        LifecycleManagerParams(node_names=("/a", "/a"))


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_node_brings_up_managed_nodes_and_goes_safe_when_one_dies(probe):
    import signal

    from conftest import REPO
    from diagnostic_msgs.msg import DiagnosticArray

    from carbon_ai_nodes.graph.node_process import NodeProcess
    from carbon_ai_nodes.ros import qos

    scenario = str(REPO / "config" / "scenarios" / "haul_truck_fleet.yaml")
    forecast = str(REPO / "config" / "grid" / "forecast_example.csv")
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())

    def state_of(node: str) -> str:
        for msg in reversed(diags):
            for s in msg.status:
                if s.hardware_id == node:
                    return next((kv.value for kv in s.values if kv.key == "lifecycle_state"), "")
        return ""

    managed = ["/lm/grid_publisher", "/lm/sim"]
    grid = NodeProcess("grid_publisher", namespace="/lm", params={"forecast_file": forecast, "autostart": False})
    sim = NodeProcess("sim", namespace="/lm", params={"scenario_file": scenario, "autostart": False})
    manager = NodeProcess("lifecycle_manager", namespace="/lm",
                          params={"node_names": managed, "heartbeat_timeout_s": 3.0})
    try:
        assert probe.spin_until(lambda: all(state_of(n) == "active" for n in managed), 90), manager.output
        sim.stop(signal.SIGKILL)  # the simulator dies: the grid publisher is taken down to inactive
        assert probe.spin_until(lambda: state_of("/lm/grid_publisher") == "inactive", 60), manager.output
        assert "graph degraded" in manager.output
        sim = NodeProcess("sim", namespace="/lm", params={"scenario_file": scenario, "autostart": False})
        assert probe.spin_until(lambda: all(state_of(n) == "active" for n in managed), 90), manager.output
        assert manager.poll() is None
    finally:
        for p in (manager, sim, grid):
            p.stop()
