"""The launch files' declared arguments: a ``<kind>_log_level`` for every node kind of this build (eco_speed had
none) and ``sim_uplink``, the launch equivalent of ``carbon-ai run --sim-uplink``, which keeps a simulated graph
off the vehicle's uplink queue and broker unless given. Built, not brought up: no graph starts here."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO

from carbon_ai_nodes.graph.scenario import list_scenarios, load_scenario
from carbon_ai_nodes.node_registry import NODES

LAUNCH_DIR = REPO / "launch"
sys.path.insert(0, str(LAUNCH_DIR))
NODE_NAMES = {n.name for n in NODES}


def uplinks(scenario: str, config: dict[str, str]) -> list[dict]:
    """The uplink_bridge parameter dicts (the node's own, last) of a scenario's launch entries."""
    from carbon_ai_scenario_launch import node_entries

    return [e["parameters"][-1] for e in node_entries(scenario, config) if e["executable"] == "uplink_bridge"]


@pytest.mark.parametrize("scenario", list_scenarios(), ids=lambda p: p.stem)
def test_a_simulated_launch_keeps_off_the_vehicle_uplink_unless_sim_uplink(scenario):
    n_vehicles = len(load_scenario(scenario).vehicles)
    isolated = uplinks(scenario.stem, {})
    assert len(isolated) == n_vehicles
    assert all(p["mqtt_host"] == "" and "/uplink/uplink_" in p["queue_path"] for p in isolated)
    asked = uplinks(scenario.stem, {"sim_uplink": "true"})
    assert all("mqtt_host" not in p and "/uplink/uplink_" in p["queue_path"] for p in asked)
    # a real vehicle (no simulator) uses its configured queue and broker whatever sim_uplink says
    assert all("mqtt_host" not in p and "queue_path" not in p for p in uplinks(scenario.stem, {"use_sim": "false"}))


def test_each_node_kind_log_level_reaches_its_nodes():
    from carbon_ai_scenario_launch import node_entries

    entries = node_entries("haul_truck_fleet", {"eco_speed_log_level": "debug", "log_level": "warn"})
    assert {e["log_level"] for e in entries if e["executable"] == "eco_speed"} == {"debug"}
    assert {e["log_level"] for e in entries if e["executable"] != "eco_speed"} == {"warn"}


@pytest.mark.skipif(importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None,
                    reason="launch / launch_ros missing: run ./setup.sh beside ../shared/ros2-tools, or source a "
                           "ROS 2 install")
@pytest.mark.parametrize("scenario", list_scenarios(), ids=lambda p: p.stem)
def test_the_launch_description_declares_every_argument(scenario):
    from carbon_ai_scenario_launch import generate  # what each <scenario>.launch.py returns
    from launch.actions import DeclareLaunchArgument

    from launch import LaunchContext

    declared = {a.name: a for a in generate(scenario.stem).entities if isinstance(a, DeclareLaunchArgument)}

    def default(name: str) -> str:
        return "".join(s.perform(LaunchContext()) for s in declared[name].default_value)

    assert {f"{m}_log_level" for m in NODE_NAMES} <= set(declared)
    assert {f"{spec.name}_log_level" for spec in load_scenario(scenario).nodes} <= set(declared)
    assert default("sim_uplink") == "false" and "broker" in declared["sim_uplink"].description
    assert default("use_sim") == "true" and default("eco_speed_log_level") == ""
