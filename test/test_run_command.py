"""``carbon-ai run`` tells the truth: a bad parameter is refused before any process starts (rcl would silently
drop a value whose type differs from the node's defaults file), a graph that never comes up ends the command
with status 1 and the node's own message, and a simulated run never touches the vehicle's uplink queue or broker
unless asked."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import uuid

import pytest
from conftest import REPO
from mqtt_broker import MosquittoBroker
from test_runner_signals import MARKER_ENV, marked_processes

from carbon_ai_msgs.msg import CarbonSummary
from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.graph.node_process import isolated_ros_env
from carbon_ai_nodes.graph.runner import GraphRunner, checked_params, module_available
from carbon_ai_nodes.graph.scenario import graph, load_scenario
from carbon_ai_nodes.ros import qos

HAUL = load_scenario("haul_truck_fleet")


def with_sim_params(tmp_path, **params) -> str:
    """The haul-truck scenario file with these simulator parameters (as a user would edit it)."""
    text = HAUL.path.read_text().replace("stop_dwell_s: 8.0", "\n      ".join(f"{k}: {v}" for k, v in params.items()))
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("value, reason", [('"eight"', "'eight': expected a number"), ("-5.0", "-5.0: must be >= 0.0"),
                                           ("true", "True: expected a number")])
def test_a_bad_parameter_is_refused_before_any_process_starts(value, reason, tmp_path):
    scenario = load_scenario(with_sim_params(tmp_path, stop_dwell_s=value))
    with pytest.raises(ConfigError, match=f"^/truck1/sim: parameter sim.stop_dwell_s={reason}$"):
        GraphRunner(scenario, tmp_path / "run")


def test_the_launch_files_refuse_a_bad_parameter_as_the_runner_does(tmp_path):
    sys.path.insert(0, str(REPO / "launch"))
    from carbon_ai_scenario_launch import node_entries

    with pytest.raises(ConfigError, match="^/truck1/sim: parameter sim.stop_dwell_s='eight': expected a number$"):
        node_entries(with_sim_params(tmp_path, stop_dwell_s='"eight"'), {})
    sims = [e for e in node_entries(with_sim_params(tmp_path, stop_dwell_s=8), {}) if e["executable"] == "sim"]
    assert sims[0]["parameters"][-1]["stop_dwell_s"] == 8.0 and type(sims[0]["parameters"][-1]["stop_dwell_s"]) is float


def test_values_reach_the_node_as_the_type_it_declares(tmp_path):
    # rcl drops `-p stop_dwell_s:=8` (an integer) when the defaults file holds a double: pass 8.0
    scenario = load_scenario(with_sim_params(tmp_path, stop_dwell_s=8, seed=3))
    sim = next(n for n in graph(scenario, tmp_path) if n.module == "sim")
    checked, unknown = checked_params(dataclasses.replace(sim, params={**sim.params, "use_sim_time": False,
                                                                       "stop_dwel_s": 1.0}))
    assert type(checked.params["stop_dwell_s"]) is float and checked.params["stop_dwell_s"] == 8.0
    assert type(checked.params["seed"]) is int
    assert unknown == ["stop_dwel_s"]  # ROS would ignore it: the runner names it
    misspelt = load_scenario(with_sim_params(tmp_path, stop_dwel_s=8.0))
    runner = GraphRunner(misspelt, tmp_path / "run", log=lambda _: None, only=("sim",))
    assert runner.ignored_params == {"sim.stop_dwel_s"}


def test_a_simulated_run_has_its_own_uplink_queue_and_no_broker_unless_asked(tmp_path):
    def uplinks(**kw):
        return {n.namespace: n.params for n in graph(HAUL, tmp_path, **kw) if n.module == "uplink_bridge"}

    for ns, params in uplinks().items():
        assert params["queue_path"] == str(tmp_path.resolve() / "uplink" / f"uplink{ns.replace('/', '_')}.sqlite3")
        assert params["mqtt_host"] == ""
    asked = uplinks(sim_uplink=True)["/truck1"]
    assert asked["queue_path"].startswith(str(tmp_path.resolve())) and "mqtt_host" not in asked
    assert all("queue_path" not in p and "mqtt_host" not in p for p in uplinks(use_sim=False).values())


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_run_exits_1_with_the_nodes_message_when_the_graph_never_comes_up(tmp_path):
    scenario = with_sim_params(tmp_path, drive_cycle_file="/nonexistent/cycle.csv")
    marker = uuid.uuid4().hex
    env = {**os.environ, **isolated_ros_env(), MARKER_ENV: marker, "CARBON_AI_LOG_DIR": str(tmp_path)}
    argv = [sys.executable, "-m", "carbon_ai_nodes.cli", "run", scenario, "--only", "sim", "fusion",
            "--startup-timeout", "20", "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=150)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "/truck1/sim: error: drive cycle /nonexistent/cycle.csv: cannot read (No such file or directory)" in out
    assert out.count("/truck1/sim: error:") == 1, out  # shown once, although configure is retried every second
    verdict = next(ln for ln in out.splitlines() if ln.startswith("the graph did not come up within 20 s ("))
    assert "/truck1/sim: drive cycle /nonexistent/cycle.csv: cannot read (No such file or directory)" in verdict
    assert "  graph: never came up" in out
    assert "Traceback" not in out
    assert marked_processes(marker) == []


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_simulated_summaries_stay_in_the_run_and_reach_the_broker_only_when_asked(probe, tmp_path):
    nodes = ("sim", "fusion", "carbon_inference", "uplink_bridge")
    if not all(module_available(m) for m in nodes):
        pytest.skip("needs sim, fusion, carbon_inference and uplink_bridge")
    scenario = dataclasses.replace(HAUL, vehicles=HAUL.vehicles[:1])
    home = tmp_path / "ros_home"  # the vehicle's $ROS_HOME: its real queue would be ros_home/carbon_ai/
    summaries = probe.collect(CarbonSummary, "/truck1/carbon_summary", qos.latched(depth=10))
    with MosquittoBroker(tmp_path / "broker") as broker:
        # the vehicle's configuration names its broker (here one the test starts, so a connection would show)
        vehicle_uplink = {"uplink_bridge": {"mqtt_port": broker.port, "window_s": 2.0, "batch_linger_s": 0.0}}
        for sim_uplink in (False, True):
            run_dir = tmp_path / f"run_{sim_uplink}"
            summaries.clear()
            with GraphRunner(scenario, run_dir, only=nodes, overrides=vehicle_uplink, env={"ROS_HOME": str(home)},
                             sim_uplink=sim_uplink, log=lambda _: None) as runner:
                assert probe.spin_until(lambda: len(summaries) >= 2, 120), runner.logs()
                if sim_uplink:
                    assert probe.spin_until(lambda: "carbon_ai-truck1" in broker.log(), 30), broker.log()
                log = runner.logs()["/truck1/uplink_bridge"]
            queue = run_dir.resolve() / "uplink" / "uplink_truck1.sqlite3"
            assert f"queue {queue}" in log, log
            with sqlite3.connect(queue) as db:
                assert db.execute("select count(*) from sqlite_master").fetchone()[0] > 0
            assert not (home / "carbon_ai").exists()
            if not sim_uplink:
                assert "uplink disabled (mqtt_host empty)" in log, log
                assert "carbon_ai-truck1" not in broker.log(), broker.log()
