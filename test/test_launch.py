"""Launch files: byte-compiled everywhere; their node set checked against the scenario (pure part) everywhere;
the LaunchDescription built where ``launch_ros`` is importable (./setup.sh installs it from ../shared/ros2-tools).
Running them for real: test_launch_graph.py."""

from __future__ import annotations

import importlib.util
import py_compile
import sys

import pytest
from conftest import REPO

from carbon_ai_nodes.graph.scenario import list_scenarios, load_scenario

LAUNCH_DIR = REPO / "launch"
sys.path.insert(0, str(LAUNCH_DIR))


@pytest.mark.parametrize("path", sorted(LAUNCH_DIR.glob("*.py")), ids=lambda p: p.name)
def test_launch_files_byte_compile(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


@pytest.mark.parametrize("scenario", list_scenarios(), ids=lambda p: p.stem)
def test_every_scenario_has_a_launch_file_with_its_node_set(scenario):
    assert (LAUNCH_DIR / f"{scenario.stem}.launch.py").is_file()
    from carbon_ai_scenario_launch import node_entries

    s = load_scenario(scenario)
    *on_vehicle, manager = node_entries(scenario.stem, {"use_sim": "false", "namespace_prefix": "/site",
                                                        "remap": "gnss/fix:=/ublox/fix", "fusion_log_level": "debug"})
    assert manager["executable"] == "lifecycle_manager" and manager["namespace"] == "/site"
    assert manager["parameters"][0]["node_names"] == [f"{e['namespace']}/{e['executable']}" for e in on_vehicle]
    assert not any(e["executable"] == "sim" for e in on_vehicle)
    assert all(e["namespace"].startswith("/site") for e in on_vehicle)
    assert all(("gnss/fix", "/ublox/fix") in e["remappings"] for e in on_vehicle)
    assert {e["log_level"] for e in on_vehicle if e["executable"] == "fusion"} == {"debug"}
    simulated = node_entries(scenario.stem, {"use_sim": "true"})
    assert sum(e["executable"] == "sim" for e in simulated) == len(s.vehicles)
    assert not any(e["env"] for e in simulated)
    realtime = node_entries(scenario.stem, {"rt_priority": "50", "cpu_latency_us": "0"})
    assert {e["executable"] for e in realtime if e["env"]} == {"fusion", "carbon_inference", "actuator_bridge"} & {
        e["executable"] for e in realtime}
    assert all(e["env"] == {"CARBON_AI_RT_PRIORITY": "50", "CARBON_AI_CPU_LATENCY_US": "0"}
               for e in realtime if e["env"])


@pytest.mark.skipif(importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None,
                    reason="launch / launch_ros missing: run ./setup.sh beside ../shared/ros2-tools, or source a "
                           "ROS 2 install")
@pytest.mark.parametrize("scenario", list_scenarios(), ids=lambda p: p.stem)
def test_launch_description_builds(scenario):
    from carbon_ai_scenario_launch import node_entries, player_command
    from launch.actions import OpaqueFunction

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("lf", LAUNCH_DIR / f"{scenario.stem}.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    context = LaunchContext()
    for entity in ld.entities:
        if not isinstance(entity, OpaqueFunction):
            entity.visit(context)
    opaque = [e for e in ld.entities if isinstance(e, OpaqueFunction)]
    nodes = opaque[0].execute(context)
    entries = node_entries(scenario.stem, {})
    assert [n.node_executable for n in nodes] == [e["executable"] for e in entries]
    assert entries[-1]["executable"] == "lifecycle_manager"
    managed = entries[-1]["parameters"][0]["node_names"]
    assert len(managed) == len(nodes) - 1 == len(set(managed))
    assert all(e["parameters"][-1]["autostart"] is False for e in entries[:-1])
    assert not any(e["executable"] == "lifecycle_manager"
                   for e in node_entries(scenario.stem, {"lifecycle_manager": "false"}))
    context.launch_configurations["play"] = "/recorded/sensors.mcap"
    played = opaque[0].execute(context)
    assert len(played) == len(nodes) + 1 and type(played[-1]).__name__ == "ExecuteProcess"
    assert player_command({"play": "/recorded/sensors.mcap", "namespace_prefix": "/site"})[2:] == [
        "carbon_ai_nodes.graph.ros.mcap_player", "/recorded/sensors.mcap", "--namespace-prefix", "/site"]
    assert player_command({"play": ""}) == []
