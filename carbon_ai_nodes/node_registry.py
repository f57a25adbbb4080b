"""The one list of carbon_ai's nodes: setup.py's executables, the scenarios' start-up order, the launch files'
arguments and the runner's composition all read it. Pure and import-free, so setup.py can read it before the
package's dependencies exist.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class NodeKind:
    """One node: its executable / default node name, the module whose ``main()`` runs it, and whether it is on
    the sensor -> actuator path (``chain``: real-time executor when asked; composed, one executor thread)."""

    name: str
    module: str
    chain: bool = False


# Start-up (dependency) order: producers before consumers; the actuator bridge last to come up and (see
# graph.supervisor.shutdown_order) first to go down. The lifecycle manager and latency probe are not scenario
# nodes: the runner adds the one, the latency benchmark the other.
NODES: tuple[NodeKind, ...] = (
    NodeKind("grid_publisher", "carbon_ai_nodes.planning.ros.grid_publisher_node"),
    NodeKind("sim", "carbon_ai_nodes.sim.ros.sim_node"),
    NodeKind("fusion", "carbon_ai_nodes.fusion.ros.fusion_node", chain=True),
    NodeKind("carbon_inference", "carbon_ai_nodes.carbon.ros.carbon_inference_node", chain=True),
    NodeKind("planner", "carbon_ai_nodes.planning.ros.planner_node"),
    NodeKind("eco_speed", "carbon_ai_nodes.planning.ros.eco_speed_node"),
    NodeKind("uplink_bridge", "carbon_ai_nodes.uplink.ros.uplink_bridge_node"),
    NodeKind("actuator_bridge", "carbon_ai_nodes.actuation.ros.actuator_bridge_node", chain=True),
    NodeKind("lifecycle_manager", "carbon_ai_nodes.graph.ros.lifecycle_manager_node"),
    NodeKind("latency_probe", "carbon_ai_nodes.graph.ros.latency_probe_node", chain=True),
)
BY_NAME = {n.name: n for n in NODES}
MANAGER = "lifecycle_manager"
# The nodes a scenario can list, in start-up order.
NODE_ORDER = tuple(n.name for n in NODES if n.name not in (MANAGER, "latency_probe"))
CHAIN_NODES = tuple(n.name for n in NODES if n.chain)


def node_module(name: str) -> str:
    """The module of node ``name`` (``fusion`` -> ``carbon_ai_nodes.fusion.ros.fusion_node``); KeyError with the
    known names if there is no such node."""
    kind = BY_NAME.get(name)
    if kind is None:
        raise KeyError(f"no carbon_ai node named {name!r} (known: {', '.join(BY_NAME)})")
    return kind.module
