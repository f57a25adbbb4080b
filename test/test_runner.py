"""The runner: scenario graph expansion, skipping missing nodes, composed executor grouping, and a closed loop
with sensor fault injection where the actuator bridge goes to SAFE_FALLBACK and back while nothing crashes."""

from __future__ import annotations

import dataclasses
import math

import pytest

from carbon_ai_msgs.msg import ActuatorCommand
from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.graph.runner import GraphRunner, executor_groups, module_available
from carbon_ai_nodes.graph.scenario import NODE_ORDER, graph, list_scenarios, load_scenario
from carbon_ai_nodes.ros import qos

LOOP_NODES = ("sim", "fusion", "carbon_inference", "actuator_bridge")


@pytest.mark.parametrize("path", list_scenarios(), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads_and_expands(path, tmp_path):
    scenario = load_scenario(path)
    launches = graph(scenario, tmp_path)
    assert len(scenario.vehicles) >= 2
    per_vehicle = [n for n in launches if n.vehicle_id]
    assert {n.namespace for n in per_vehicle} == {f"/{v.id}" for v in scenario.vehicles}
    assert [NODE_ORDER.index(n.module) for n in launches] == sorted(NODE_ORDER.index(n.module) for n in launches)
    sims = [n for n in launches if n.module == "sim"]
    assert all(n.params["scenario_file"] == str(path.resolve()) for n in sims)
    assert not any(n.module == "sim" for n in graph(scenario, tmp_path, use_sim=False))
    assert all("$(" not in str(v) for n in launches for v in n.params.values())


def test_baseline_overrides_and_bad_scenarios_name_the_key(tmp_path):
    s = load_scenario("haul_truck_fleet")
    bridge = next(n for n in graph(s, tmp_path, baseline=True) if n.module == "actuator_bridge")
    assert bridge.params["cruise_speed_limit_mps"] == 30.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes: {sim: {scope: galaxy}}\nvehicles: [{id: a, route: [[0,0],[9,0]], profile: {}}]\n")
    with pytest.raises(ConfigError, match="nodes.sim.scope='galaxy'"):
        load_scenario(bad)
    bad.write_text("name: x\nnodes: {sim: {}}\nvehicles: [{id: 1a}]\n")
    with pytest.raises(ConfigError, match=r"vehicles\[0\].id='1a'"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match="known: .*haul_truck_fleet"):
        load_scenario("no_such_scenario")


def test_missing_node_modules_are_skipped_with_a_message(tmp_path):
    lines = []
    s = load_scenario("haul_truck_fleet")
    s = dataclasses.replace(s, nodes=s.nodes + (dataclasses.replace(s.nodes[0], name="teleporter"),))
    runner = GraphRunner(s, tmp_path, only=("teleporter",), log=lines.append)
    assert runner.skipped == ["teleporter"] and runner.launches == []
    with pytest.raises(ConfigError, match="none of its nodes"):
        runner.start()
    assert lines == ["skipping teleporter: no such node in this build"]


def test_composed_chain_nodes_of_a_vehicle_share_one_executor_thread():
    labels = ["/grid_publisher", "/t1/sim", "/t1/fusion", "/t1/carbon_inference", "/t1/planner", "/t1/actuator_bridge",
              "/t2/fusion", "/t2/actuator_bridge"]
    assert executor_groups(labels, per_node=False) == [["/grid_publisher"], ["/t1/sim"],
                                       ["/t1/fusion", "/t1/carbon_inference", "/t1/actuator_bridge"], ["/t1/planner"],
                                       ["/t2/fusion", "/t2/actuator_bridge"]]
    assert executor_groups(labels, per_node=True) == [[label] for label in labels]


def _one_truck_loop():
    """The haul-truck scenario with its first truck only; skips where a loop node is not in this build."""
    missing = [m for m in LOOP_NODES if not module_available(m)]
    if missing:
        pytest.skip(f"closed loop needs {', '.join(missing)}, not in this build yet")
    s = load_scenario("haul_truck_fleet")
    return dataclasses.replace(s, vehicles=s.vehicles[:1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fault_injection_sends_the_actuator_to_safe_fallback_and_back(probe, tmp_path):
    s = _one_truck_loop()
    commands = probe.collect(ActuatorCommand, "/truck1/actuator_command", qos.command())
    # The simulator's sensors fall silent for 3 s every 20 s: fusion goes quiet with them (publish on input),
    # the bridge's vehicle_state deadline expires and it must go safe, then return to AUTO once they are back.
    # Later carbon_inference crashes: the runner must restart it and the loop recover again.
    faults = {"sim": {"faults": ["silence"], "fault_start_s": 12.0, "fault_length_s": 3.0, "fault_period_s": 20.0}}
    auto, safe = ActuatorCommand.MODE_AUTO, ActuatorCommand.MODE_SAFE_FALLBACK
    with GraphRunner(s, tmp_path, only=LOOP_NODES, overrides=faults, log=lambda _: None) as runner:
        def dump() -> str:
            return f"modes: {[c.mode for c in commands][-50:]}\n" + "\n".join(
                f"--- {k}\n{v[-1500:]}" for k, v in runner.logs().items())

        def safe_then_auto(since: int) -> bool:
            runner.poll()
            modes = [c.mode for c in commands[since:]]
            return safe in modes and auto in modes[modes.index(safe):]

        assert probe.spin_until(lambda: any(c.mode == auto for c in commands), 90), dump()
        first_auto = next(i for i, c in enumerate(commands) if c.mode == auto)
        auto_limit = commands[-1].speed_limit_mps
        assert probe.spin_until(lambda: safe_then_auto(first_auto), 90), dump()
        assert runner.events == [], runner.events  # the sensors failed, no process did
        fault_cmds = commands[first_auto:]
        safe_cmds = [c for c in fault_cmds if c.mode == safe]
        assert "vehicle_state stale" in safe_cmds[0].reason, safe_cmds[0].reason
        # the safe speed (4 m/s in the scenario) is approached at the bridge's slew rate
        assert min(c.speed_limit_mps for c in safe_cmds) < auto_limit
        assert safe_cmds[-1].speed_limit_mps <= safe_cmds[0].speed_limit_mps
        assert "fault injection: silence active" in runner.logs()["/truck1/sim"]

        killed_at = len(commands)
        runner.kill("/truck1/carbon_inference")
        assert probe.spin_until(lambda: safe_then_auto(killed_at), 120), dump()
        assert len(runner.events) == 1 and "restarted" in runner.events[0], runner.events
        assert sorted(runner.alive()) == sorted(f"/truck1/{m}" for m in LOOP_NODES)
        logs = runner.logs()
        statuses = runner.stop()
    assert all(code == 0 for code in statuses.values()), statuses
    assert not any("Traceback" in text for text in logs.values())
    for c in commands:
        assert all(math.isfinite(x) for x in (c.speed_limit_mps, c.engine_load_limit_pct, c.power_setpoint_kw))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_managed_graph_comes_up_in_order_and_goes_safe_bridge_first_when_a_node_dies(probe, tmp_path):
    s = _one_truck_loop()
    commands = probe.collect(ActuatorCommand, "/truck1/actuator_command", qos.command(depth=100))
    auto, safe = ActuatorCommand.MODE_AUTO, ActuatorCommand.MODE_SAFE_FALLBACK
    with GraphRunner(s, tmp_path, only=LOOP_NODES, managed=True, log=lambda _: None) as runner:
        manager = "/lifecycle_manager"

        def dump() -> str:
            return f"modes: {[(c.mode, c.reason) for c in commands][-10:]}\n" + "\n".join(
                f"--- {k}\n{v[-1500:]}" for k, v in runner.logs().items())

        assert sorted(runner.alive()) == sorted([manager] + [f"/truck1/{m}" for m in LOOP_NODES])
        # the nodes wait unconfigured; the manager brings them up producers first
        assert probe.spin_until(lambda: any(c.mode == auto for c in commands), 120), dump()
        assert "graph active" in runner.logs()[manager], dump()
        killed_at = len(commands)
        killed_s = probe.node.get_clock().now().nanoseconds * 1e-9
        runner.kill("/truck1/carbon_inference")

        def deactivated_then_back() -> bool:
            runner.poll()
            after = commands[killed_at:]
            down = next((i for i, c in enumerate(after) if c.reason == "bridge deactivating"), None)
            return down is not None and any(c.mode == auto for c in after[down:])

        assert probe.spin_until(deactivated_then_back, 150), dump()
        after = commands[killed_at:]
        # the bridge went safe on its own within its input deadline (1 s; publisher liveliness is faster), stayed
        # safe, and the manager deactivated it (its last word: the safe setpoint) before the graph came back
        first_safe = next(i for i, c in enumerate(after) if c.mode == safe)
        stamp_s = after[first_safe].header.stamp.sec + after[first_safe].header.stamp.nanosec * 1e-9
        assert stamp_s - killed_s < 3.0, dump()
        down = next(i for i, c in enumerate(after) if c.reason == "bridge deactivating")
        assert first_safe < down and all(c.mode != auto for c in after[first_safe:down]), dump()
        assert after[down].mode == safe
        log = runner.logs()[manager]
        assert "graph degraded" in log, log
        assert "graph safe; bringing it back up" in log, log
        assert len(runner.events) == 1 and "restarted" in runner.events[0], runner.events
        logs = runner.logs()
        statuses = runner.stop()
    assert all(code == 0 for code in statuses.values()), statuses
    assert not any("Traceback" in text for text in logs.values())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_composed_graph_runs_the_loop_in_one_process_and_stops_cleanly(probe, tmp_path):
    s = _one_truck_loop()
    commands = probe.collect(ActuatorCommand, "/truck1/actuator_command", qos.command())
    with GraphRunner(s, tmp_path, only=LOOP_NODES, compose=True, log=lambda _: None) as runner:
        assert runner.alive() == ["composed"]
        assert probe.spin_until(lambda: any(c.mode == ActuatorCommand.MODE_AUTO for c in commands), 90), (
            runner.logs())
        # each node got its own namespace and parameters through node-local arguments
        assert commands[-1].asset_id == "truck1"
        log = runner.logs()["composed"]
        statuses = runner.stop()
    assert statuses == {"composed": 0}, log
    assert "composed 4 nodes on 2 " in log and "Traceback" not in log, log
    # stopping goes through the bridge's deactivation: its last word is the safe setpoint
    assert probe.spin_until(lambda: commands[-1].reason == "bridge deactivating", 10), commands[-1]
    assert commands[-1].mode == ActuatorCommand.MODE_SAFE_FALLBACK


class _StubRunner:
    """What run_graph reads of a GraphRunner: the graph comes up ``up_after_s`` after the first poll."""

    def __init__(self, up_after_s: float) -> None:
        import time

        self.failed: list[str] = []
        self.lines: list[str] = []
        self._up_at = time.monotonic() + up_after_s
        self.watch = None

    @property
    def graph_up(self) -> bool:
        import time

        return time.monotonic() >= self._up_at

    def poll(self) -> None:
        pass

    def alive(self) -> list[str]:
        return ["x"]

    def log(self, line: str) -> None:
        self.lines.append(line)


def test_run_duration_counts_from_the_moment_the_graph_is_up():
    # A loaded machine may take long to bring a graph up: --duration is the time it then runs, not a budget
    # the bring-up eats into (--startup-timeout bounds that).
    import time

    from carbon_ai_nodes.graph.runner import run_graph

    runner = _StubRunner(up_after_s=1.0)
    t0 = time.monotonic()
    assert run_graph(runner, 0.6, startup_timeout_s=30.0)  # type: ignore[arg-type]
    assert time.monotonic() - t0 >= 1.6, runner.lines
    # without a startup timeout the duration still bounds the whole run (the old contract of the library call)
    runner = _StubRunner(up_after_s=60.0)
    t0 = time.monotonic()
    assert not run_graph(runner, 0.6)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 30.0 and "did not come up" in runner.lines[-1]
