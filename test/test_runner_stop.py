"""A node that does not end after SIGTERM when the graph stops (hung: here stopped with SIGSTOP) is killed after
the runner's stop timeout and named as such, so ``carbon-ai run`` exits 1 with the reason instead of a bare
status; the other nodes still stop cleanly."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from carbon_ai_nodes.graph.runner import STOP_TIMEOUT_S, GraphRunner, run_graph
from carbon_ai_nodes.graph.scenario import load_scenario


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_node_hung_at_stop_is_killed_and_named(tmp_path):
    haul = load_scenario("haul_truck_fleet")
    scenario = dataclasses.replace(haul, vehicles=haul.vehicles[:1])
    lines: list[str] = []
    runner = GraphRunner(scenario, tmp_path, only=("sim", "fusion"), log=lines.append)
    assert runner.stop_timeout_s == STOP_TIMEOUT_S
    runner.stop_timeout_s = 1.0
    with runner:
        # both up (their SIGTERM handlers set: a stopped process without one dies of SIGTERM at once)
        assert run_graph(runner, 90, until=lambda: runner.graph_up), lines
        os.kill(runner.procs["/truck1/fusion"].proc.pid, signal.SIGSTOP)  # hung: SIGTERM stays pending
        statuses = runner.stop()
    assert statuses == {"/truck1/fusion": -signal.SIGKILL, "/truck1/sim": statuses["/truck1/sim"]}
    assert statuses["/truck1/sim"] == 0
    assert runner.killed == ["/truck1/fusion"]
    # isolated_ros_env names the profile as this Fast DDS reads it: no deprecation warning counted as a fault
    assert not [m for f in runner.watch.faults.values() for m in f.warnings if "deprecated" in m]
    log = runner.stop_faults(statuses)["/truck1/fusion"].split("(its threads' stacks: ")[1].rstrip(")")
    assert runner.stop_faults(statuses) == {
        "/truck1/fusion": f"did not stop within 1 s of SIGTERM: killed (its threads' stacks: {log})"}
    # the log ends with what the kernel says of its signals (a stopped process cannot print its stacks)
    assert "[carbon-ai] did not stop: SigQ:" in Path(log).read_text()
