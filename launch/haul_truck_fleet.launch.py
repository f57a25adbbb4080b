"""ros2 launch carbon_ai_nodes haul_truck_fleet.launch.py [use_sim:=false] [baseline:=true]
[log_level:=debug] [fusion_log_level:=debug] [namespace_prefix:=/site] [remap:=gnss/fix:=/ublox/fix] [respawn:=false]
[rt_priority:=50] [cpu_latency_us:=0] [sim_uplink:=true]

The node graph, parameters and vehicles come from config/scenarios/haul_truck_fleet.yaml
(built by carbon_ai_scenario_launch.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from carbon_ai_scenario_launch import generate


def generate_launch_description():
    """Launch description of the haul_truck_fleet scenario."""
    return generate("haul_truck_fleet")
