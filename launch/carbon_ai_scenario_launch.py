"""Shared builder of the scenario launch files: ``ros2 launch carbon_ai_nodes <scenario>.launch.py``.

The node graph comes from config/scenarios/<scenario>.yaml through carbon_ai_nodes.graph.scenario.graph, the
same expansion ``carbon-ai run`` uses, so the launch files and the runner cannot drift apart.

Arguments: ``use_sim`` (true: start the simulator; false on a vehicle with real sensors), ``baseline`` (apply the
scenario's baseline_params: carbon optimisation off), ``log_level`` (all nodes), ``<node>_log_level`` (one
node kind, overriding the scenario's), ``namespace_prefix`` (prepended to every namespace), ``remap`` (extra
``from:=to`` remappings for every node, comma separated), ``respawn`` (restart nodes that die), ``rt_priority``
(SCHED_FIFO priority of the sensor -> actuator nodes, 1-99; 0: ordinary scheduling), ``cpu_latency_us`` (CPU
wake-up latency those nodes ask the kernel for, µs; empty: none), ``lifecycle_manager`` (true: the nodes wait
unconfigured and a lifecycle_manager brings them up in dependency order and supervises them, as
``carbon-ai run`` does; false: each node activates itself), ``play`` (an MCAP file, e.g. from
``carbon-ai run --record``, whose sensor topics are played in as the vehicles' sensors; with ``use_sim:=false``),
``sim_uplink`` (with the simulator: its summaries go to the configured MQTT broker; by default, as with
``carbon-ai run``, a simulated graph queues them in its own run directory and has no broker, so the vehicle's
real queue and broker never see simulated data).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from carbon_ai_nodes.node_registry import CHAIN_NODES, MANAGER, NODES

ARGUMENTS = {
    "use_sim": ("true", "start the telemetry simulator (false on a vehicle with real sensors)"),
    "baseline": ("false", "apply the scenario's baseline_params (carbon optimisation off)"),
    "log_level": ("", "log level of every node (empty = the scenario's per-node levels)"),
    "namespace_prefix": ("", "prepended to every node namespace, e.g. /site3"),
    "remap": ("", "extra remappings for every node, comma separated from:=to pairs"),
    "respawn": ("true", "restart a node process that dies"),
    "rt_priority": ("0", "SCHED_FIFO priority (1-99) of fusion, carbon_inference, actuator_bridge; 0: off"),
    "cpu_latency_us": ("", "while those nodes run, CPU wake-up latency under this many us (0: no sleep); empty: off"),
    "lifecycle_manager": ("true", "a lifecycle_manager configures, activates and supervises the nodes"),
    "play": ("", "MCAP file whose gnss/imu/odom/engine topics are played as the sensors (with use_sim:=false)"),
    "sim_uplink": ("false", "with use_sim: send the simulated summaries to the configured MQTT broker (by default a "
                            "simulated graph queues them in its own directory and has no broker, never the vehicle's)"),
}


def node_kinds() -> list[str]:
    """Every node of this build (node_registry), each with a ``<kind>_log_level`` argument."""
    return sorted(n.name for n in NODES)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def node_entries(scenario_name: str, config: dict[str, str]) -> list[dict[str, Any]]:
    """The launch entries of a scenario for resolved launch argument values (no ``launch`` import needed)."""
    from carbon_ai_nodes.graph.runner import checked_params
    from carbon_ai_nodes.graph.scenario import CONFIG_DIR, graph, load_scenario, write_profiles
    from carbon_ai_nodes.ros.realtime import CPU_LATENCY_ENV, RT_PRIORITY_ENV

    scenario = load_scenario(scenario_name)
    run_dir = Path(tempfile.mkdtemp(prefix=f"carbon_ai_{scenario.name}_launch_"))
    write_profiles(scenario, run_dir)
    extra_remaps = {}
    for pair in filter(None, (p.strip() for p in config.get("remap", "").split(","))):
        src, _, dst = pair.partition(":=")
        extra_remaps[src] = dst
    rt_priority = config.get("rt_priority", "0").strip() or "0"
    cpu_latency = config.get("cpu_latency_us", "").strip()
    chain_env = {**({RT_PRIORITY_ENV: rt_priority} if rt_priority != "0" else {}),
                 **({CPU_LATENCY_ENV: cpu_latency} if cpu_latency else {})}
    entries = []
    for n in graph(scenario, run_dir, use_sim=_truthy(config.get("use_sim", "true")),
                   baseline=_truthy(config.get("baseline", "false")),
                   sim_uplink=_truthy(config.get("sim_uplink", "false"))):
        n, _ = checked_params(n)  # refused here, not dropped by rcl (a value of another type than the default's)
        defaults = CONFIG_DIR / f"{n.module}.yaml"
        level = config.get(f"{n.module}_log_level") or config.get("log_level") or n.log_level
        entries.append({
            "executable": n.module,
            "namespace": config.get("namespace_prefix", "").rstrip("/") + n.namespace,
            "parameters": ([str(defaults)] if defaults.is_file() else []) + [dict(n.params)],
            "remappings": list({**n.remaps, **extra_remaps}.items()),
            "log_level": level,
            "respawn": _truthy(config.get("respawn", "true")),
            # read (and validated, with a one-line error) by the node at start
            "env": chain_env if n.module in CHAIN_NODES else {},
        })
    if _truthy(config.get("lifecycle_manager", "true")) and entries:
        names = [f"{e['namespace']}/{e['executable']}" for e in entries]
        for e in entries:
            e["parameters"][-1]["autostart"] = False  # the node's own dict (built above): the manager starts it
        entries.append({"executable": MANAGER, "namespace": config.get("namespace_prefix", "").rstrip("/"),
                        "parameters": [{"node_names": names, "heartbeat_timeout_s": 5.0}], "remappings": [],
                        "log_level": config.get(f"{MANAGER}_log_level") or config.get("log_level") or "info",
                        "respawn": _truthy(config.get("respawn", "true")), "env": {}})
    return entries


def player_command(config: dict[str, str]) -> list[str]:
    """The command playing ``play``'s sensor topics (carbon_ai_nodes.graph.ros.mcap_player); empty without ``play``."""
    import sys

    if not config.get("play", "").strip():
        return []
    return [sys.executable, "-m", "carbon_ai_nodes.graph.ros.mcap_player", config["play"].strip(),
            "--namespace-prefix", config.get("namespace_prefix", "")]


def generate(scenario_name: str):
    """The LaunchDescription of one scenario."""
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def build(context, *_: Any) -> list[Any]:
        names = list(ARGUMENTS) + [f"{k}_log_level" for k in node_kinds()]
        config = {k: LaunchConfiguration(k).perform(context) for k in names}
        nodes = [Node(package="carbon_ai_nodes", executable=e["executable"], namespace=e["namespace"] or None,
                      parameters=e["parameters"], remappings=e["remappings"], output="screen",
                      respawn=e["respawn"], respawn_delay=2.0, additional_env=e["env"],
                      arguments=["--ros-args", "--log-level", e["log_level"]])
                 for e in node_entries(scenario_name, config)]
        player = player_command(config)
        return nodes + ([ExecuteProcess(cmd=player, name="mcap_player", output="screen")] if player else [])

    args = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGUMENTS.items()]
    args += [DeclareLaunchArgument(f"{k}_log_level", default_value="", description=f"log level of {k} nodes")
             for k in node_kinds()]
    return LaunchDescription([*args, OpaqueFunction(function=build)])
