"""Start a scenario's node graph as processes (as ``ros2 launch`` would), supervise and stop it safely.

One :class:`GraphRunner` per run: it expands the scenario (core/scenario.graph), skips nodes whose module is
not in this build (with a message saying so), starts every node as its own process (NodeProcess) in
dependency order, restarts a node that dies (up to ``restart_limit`` times), and stops the graph with the
actuator bridges first so they publish their safe state while their inputs are still there.

With ``managed=True`` the nodes start unconfigured (``autostart:=false``) and a ``lifecycle_manager`` process
supervises them, as a vehicle's launch with a lifecycle manager would: configure/activate in dependency order,
a /diagnostics heartbeat per node, and on a dead or hung node the graph goes down actuator bridges first and
comes back once the (restarted) node answers again (core/supervisor.py). Without it each node configures
itself, a dead process is noticed by its exit and restarted, and the bridges go safe on their own input
deadlines and publisher liveliness.

With ``compose=True`` all nodes run in one process (``python -m carbon_ai_nodes.runner compose``): one rclpy
context, each vehicle's fusion -> carbon_inference -> actuator_bridge chain on one executor thread and every
other node on its own, which removes the inter-process hops' scheduling cost.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from carbon_ai_nodes.core.errors import ConfigError
from carbon_ai_nodes.core.scenario import CONFIG_DIR, NodeLaunch, Scenario, graph, write_profiles
from carbon_ai_nodes.core.supervisor import base_name, shutdown_order
from carbon_ai_nodes.node_process import NodeProcess, node_ros_args
from carbon_ai_nodes.realtime import (
    CPU_LATENCY_ENV,
    RT_PRIORITY_ENV,
    apply_from_env,
    checked_cpu_latency_us,
    checked_rt_priority,
    freeze_startup_objects,
    set_thread_ordinary,
)

MANAGER = "lifecycle_manager"


def module_available(module: str) -> bool:
    """True if ``carbon_ai_nodes.nodes.<module>`` exists in this build."""
    return importlib.util.find_spec(f"carbon_ai_nodes.nodes.{module}") is not None


def defaults_file(module: str) -> Path | None:
    """config/<node>.yaml, the node's shipped defaults, if present."""
    path = CONFIG_DIR / f"{module}.yaml"
    return path if path.is_file() else None


class GraphRunner:
    """Runs the node graph of a scenario until stopped. Use as a context manager."""

    def __init__(self, scenario: Scenario, run_dir: Path, *, use_sim: bool = True, baseline: bool = False,
                 only: Sequence[str] = (), overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 compose: bool = False, restart_limit: int = 2, env: Mapping[str, str] | None = None,
                 log: Callable[[str], None] = print, managed: bool = False,
                 heartbeat_timeout_s: float = 5.0, extra_nodes: Sequence[NodeLaunch] = (),
                 rt_priority: int = 0, cpu_latency_us: int | None = None) -> None:
        self.scenario = scenario
        self.run_dir = Path(run_dir)
        self.compose = compose
        self.managed = managed and not compose  # the composed container configures its nodes itself
        self.restart_limit = restart_limit
        self.env = dict(env or {})
        checked_rt_priority(rt_priority, "rt_priority")
        checked_cpu_latency_us(cpu_latency_us, "cpu_latency_us")
        self.chain_env = {**({RT_PRIORITY_ENV: str(rt_priority)} if rt_priority else {}),
                          **({CPU_LATENCY_ENV: str(cpu_latency_us)} if cpu_latency_us is not None else {})}
        self.log = log
        write_profiles(scenario, self.run_dir)
        launches = graph(scenario, self.run_dir, use_sim=use_sim, baseline=baseline, only=tuple(only))
        for name, extra in (overrides or {}).items():
            launches = [dataclass_replace_params(n, extra) if n.module == name else n for n in launches]
        launches = [*launches, *extra_nodes]
        self.skipped = sorted({n.module for n in launches if not module_available(n.module)})
        self.launches = [n for n in launches if n.module not in self.skipped]
        if self.managed and self.launches:
            self.launches = [dataclass_replace_params(n, {"autostart": False}) for n in self.launches]
            self.launches.append(NodeLaunch(
                module=MANAGER, namespace="", remaps={},
                params={"node_names": node_names(self.launches), "heartbeat_timeout_s": heartbeat_timeout_s}))
        self.procs: dict[str, NodeProcess] = {}
        self.restarts: dict[str, int] = {}
        self.events: list[str] = []

    def start(self) -> None:
        """Start every node, producers first."""
        for module in self.skipped:
            self.log(f"skipping {module}: carbon_ai_nodes.nodes.{module} is not in this build")
        if not self.launches:
            raise ConfigError(f"scenario {self.scenario.name}: none of its nodes exist in this build")
        if self.compose:
            spec = self.run_dir / "compose.json"
            spec.write_text(json.dumps([launch_dict(n) for n in self.launches]))
            self.procs["composed"] = _ComposedProcess(spec, {**self.env, **self.chain_env})
            self.log(f"started {len(self.launches)} nodes composed in one process")
            return
        for launch in self.launches:
            self.procs[launch.label] = self._spawn(launch)
        self.log(f"started {len(self.procs)} node processes")

    def _spawn(self, launch: NodeLaunch) -> NodeProcess:
        extra = ["--ros-args", "--log-level", launch.log_level] if launch.log_level != "info" else []
        env = self.env
        if launch.module in CHAIN_NODES:  # only the sensor -> actuator path runs real-time
            env = {**env, **self.chain_env}
        return NodeProcess(launch.module, params=launch.params, params_file=defaults_file(launch.module),
                           namespace=launch.namespace, remaps=launch.remaps, extra_args=extra, env=env)

    def poll(self) -> list[str]:
        """Check the processes; restart the ones that died (within the limit). Returns what happened."""
        happened = []
        for launch in self.launches if not self.compose else []:
            proc = self.procs.get(launch.label)
            if proc is None or proc.poll() is None:
                continue
            status = proc.poll()
            tail = proc.output.strip().splitlines()[-1:] or [""]
            count = self.restarts.get(launch.label, 0)
            if status == 1:  # the node refused its configuration: restarting cannot help
                del self.procs[launch.label]
                happened.append(f"{launch.label} refused its configuration: {tail[0]}")
            elif count < self.restart_limit:
                self.restarts[launch.label] = count + 1
                self.procs[launch.label] = self._spawn(launch)
                happened.append(f"{launch.label} exited with {status} ({tail[0]}); restarted ({count + 1}/"
                                f"{self.restart_limit})")
            else:
                del self.procs[launch.label]
                happened.append(f"{launch.label} exited with {status} ({tail[0]}); restart limit reached")
        self.events += happened
        for line in happened:
            self.log(line)
        return happened

    def kill(self, label: str, sig: int = signal.SIGKILL) -> None:
        """Fault injection: kill one node process (``/truck1/fusion``) as a crash would; poll() restarts it."""
        if label not in self.procs:
            raise ConfigError(f"kill {label}: not running; running: {', '.join(self.procs)}")
        self.procs[label].proc.send_signal(sig)
        self.procs[label].proc.wait(timeout=10)

    def alive(self) -> list[str]:
        """Labels of the running processes."""
        return [label for label, p in self.procs.items() if p.poll() is None]

    def stop(self) -> dict[str, int]:
        """Stop the graph: actuator bridges first (their safe state goes out while inputs still exist)."""
        statuses = {}
        by_label = {n.label: n for n in self.launches}
        labels = list(self.procs) if self.compose else [lab for lab in shutdown_order(by_label) if lab in self.procs]
        # the manager goes first: it would otherwise take the stopping nodes for failures and restart the graph
        labels.sort(key=lambda lab: lab != f"/{MANAGER}")
        for label in labels:
            statuses[label] = self.procs.pop(label).stop()
        return statuses

    def logs(self) -> dict[str, str]:
        """Output of each running node process so far."""
        return {label: p.output for label, p in self.procs.items()}

    def __enter__(self) -> GraphRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dataclass_replace_params(launch: NodeLaunch, extra: Mapping[str, Any]) -> NodeLaunch:
    """A copy of ``launch`` with ``extra`` parameters merged in."""
    import dataclasses

    return dataclasses.replace(launch, params={**launch.params, **extra})


def launch_dict(n: NodeLaunch) -> dict[str, Any]:
    """JSON-able description of a node for the composed container."""
    return {"module": n.module, "namespace": n.namespace, "params": dict(n.params), "remaps": dict(n.remaps),
            "params_file": str(defaults_file(n.module) or ""), "log_level": n.log_level}


class _ComposedProcess(NodeProcess):
    """NodeProcess running the composed container instead of one node module."""

    def __init__(self, spec: Path, env: Mapping[str, str]) -> None:
        import subprocess
        import tempfile

        self.argv = [sys.executable, "-m", "carbon_ai_nodes.runner", "compose", str(spec)]
        self._out = tempfile.NamedTemporaryFile(prefix="composed-", suffix=".log", delete=False)
        self.log_path = Path(self._out.name)
        full_env = dict(os.environ)
        full_env.update(env)
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True)


def ros_args(entry: Mapping[str, Any]) -> list[str]:
    """The ``--ros-args`` of one composed node (namespace, remaps, defaults file, parameters)."""
    return ["--ros-args", *node_ros_args(namespace=entry.get("namespace", ""), remaps=entry.get("remaps"),
                                         params_file=entry.get("params_file"), params=entry.get("params"))]


def node_class(module: str) -> type:
    """The CarbonNode subclass defined in ``carbon_ai_nodes.nodes.<module>``."""
    import importlib
    import inspect

    from carbon_ai_nodes.node_base import CarbonNode

    mod = importlib.import_module(f"carbon_ai_nodes.nodes.{module}")
    for _, obj in inspect.getmembers(mod, inspect.isclass):
        if issubclass(obj, CarbonNode) and obj is not CarbonNode and obj.__module__ == mod.__name__:
            return obj
    raise ConfigError(f"carbon_ai_nodes.nodes.{module}: no CarbonNode subclass found")


# Nodes on the sensor -> actuator path of one vehicle: composed, they share one executor thread, so a message
# crosses them without a thread hand-off (and GIL ping-pong); slower nodes (planner solves, uplink I/O) get a
# thread each so they never hold that path up.
CHAIN_NODES = ("fusion", "carbon_inference", "actuator_bridge", "latency_probe")


COMPOSE_THREADS_ENV = "CARBON_AI_COMPOSE_THREADS"  # "chain" (default) or "node": one executor thread per node
INTRA_PROCESS_ENV = "CARBON_AI_INTRA_PROCESS"  # "1" (default) or "0": composed nodes talk only through DDS


def intra_process_enabled() -> bool:
    """Whether composed nodes on one executor thread deliver to each other directly (``CARBON_AI_INTRA_PROCESS``,
    default on; ``0`` leaves every message to DDS, e.g. to compare)."""
    return os.environ.get(INTRA_PROCESS_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def executor_groups(labels: Sequence[str], per_node: bool | None = None) -> list[list[str]]:
    """Executor threads of a composed graph: one per vehicle namespace for its chain nodes, one per other node
    (``per_node``, default from ``CARBON_AI_COMPOSE_THREADS=node``: one thread per node)."""
    if per_node is None:
        per_node = os.environ.get(COMPOSE_THREADS_ENV, "chain").strip().lower() == "node"
    groups: dict[str, list[str]] = {}
    for label in labels:
        namespace, _, module = label.rpartition("/")
        key = f"chain:{namespace}" if module in CHAIN_NODES and not per_node else label
        groups.setdefault(key, []).append(label)
    return list(groups.values())


def compose_main(spec_path: str) -> int:
    """Run every node of a compose spec in this process: one rclpy context, executor threads per
    :func:`executor_groups`; each node gets its namespace, remaps and parameters as node-local arguments."""
    import rclpy
    from rclpy.lifecycle import LifecycleState
    from rclpy.signals import SignalHandlerOptions

    from carbon_ai_nodes.intra_process import IntraProcessBus
    from carbon_ai_nodes.node_base import executor_kind, make_executor, node_arguments

    entries = json.loads(Path(spec_path).read_text())
    rt_priority, refusals = apply_from_env()  # before rclpy.init: the middleware's threads inherit the priority
    for refused in refusals:
        print(refused, file=sys.stderr, flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        rclpy.init(args=[sys.argv[0]], signal_handler_options=SignalHandlerOptions.NO)
    except TypeError:  # an rclpy without signal_handler_options: our handlers above replace its own
        rclpy.init(args=[sys.argv[0]])
    nodes: dict[str, Any] = {}
    executors: list[Any] = []
    groups = executor_groups([f"{e['namespace']}/{e['module']}" for e in entries])
    # One intra-process bus per executor thread: its nodes hand stamped messages to each other directly.
    buses = {g[0]: IntraProcessBus() for g in groups if len(g) > 1} if intra_process_enabled() else {}
    bus_of = {label: buses.get(g[0]) for g in groups for label in g}
    try:
        for entry in entries:
            label = f"{entry['namespace']}/{entry['module']}"
            with node_arguments(ros_args(entry), bus_of[label]):
                node = node_class(entry["module"])()
            nodes[label] = node
            if node.base_params.autostart:
                node.trigger_configure()
                if node.params is None:
                    print(f"{label}: could not configure", file=sys.stderr)
                    return 1
                node.trigger_activate()
        for group in groups:
            executor = make_executor()
            for label in group:
                executor.add_node(nodes[label])
            executors.append(executor)

        freeze_startup_objects()

        def spin(executor: Any, realtime: bool) -> None:
            if rt_priority and not realtime:
                set_thread_ordinary()
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.1)

        # Only the chain threads (sensor -> actuator) run real-time; a planner solve must never hold them up.
        chain = [any(base_name(label) in CHAIN_NODES for label in g) for g in groups]
        threads = [threading.Thread(target=spin, args=(e, c), daemon=True) for e, c in zip(executors, chain,
                                                                                            strict=True)]
        for t in threads:
            t.start()
        kind = executor_kind(executors[0]) if executors else "none"
        print(f"composed {len(nodes)} nodes on {len(executors)} {kind} executor threads, intra-process delivery "
              f"{'on' if buses else 'off'}", flush=True)
        stop.wait()
        for t in threads:
            t.join(timeout=2.0)
    finally:
        stop.set()
        for executor in executors:
            executor.shutdown(timeout_sec=1.0)
        for label in shutdown_order(nodes):
            nodes[label].on_shutdown(LifecycleState(label="shutdown", state_id=0))
            nodes[label].destroy_node()
        rclpy.try_shutdown()
    return 0


def run_graph(runner: GraphRunner, duration_s: float | None, progress_period_s: float = 5.0,
              until: Callable[[], bool] | None = None) -> None:
    """Supervise a started graph for ``duration_s`` (None = until Ctrl-C), printing progress."""
    start = time.monotonic()
    next_progress = start + progress_period_s
    try:
        while duration_s is None or time.monotonic() - start < duration_s:
            runner.poll()
            if until is not None and until():
                break
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + progress_period_s
                alive = runner.alive()
                total = f"/{duration_s:.0f}" if duration_s else ""
                runner.log(f"[{now - start:5.0f}{total} s] {len(alive)} processes running")
            time.sleep(0.2)
    except KeyboardInterrupt:
        runner.log("interrupted: stopping the graph (actuator bridges first)")


def node_names(launches: Sequence[NodeLaunch]) -> list[str]:
    """Fully qualified node names of a graph (for the lifecycle manager's ``node_names``)."""
    return [f"{n.namespace}/{base_name(n.module)}" for n in launches]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "compose":
        try:
            sys.exit(compose_main(sys.argv[2]))
        except ConfigError as exc:
            print(f"could not start: {exc}", file=sys.stderr)
            sys.exit(2)
    print("usage: python -m carbon_ai_nodes.runner compose SPEC.json", file=sys.stderr)
    sys.exit(2)
