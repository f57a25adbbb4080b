"""Start a scenario's node graph as processes (as ``ros2 launch`` would), supervise and stop it safely.

One :class:`GraphRunner` per run: it expands the scenario (graph/scenario.graph), skips nodes whose module is
not in this build (with a message saying so), starts every node as its own process (NodeProcess) in
dependency order, restarts a node that dies (up to ``restart_limit`` times), and stops the graph with the
actuator bridges first so they publish their safe state while their inputs are still there.

With ``managed=True`` the nodes start unconfigured (``autostart:=false``) and a ``lifecycle_manager`` process
supervises them, as a vehicle's launch with a lifecycle manager would: configure/activate in dependency order,
a /diagnostics heartbeat per node, and on a dead or hung node the graph goes down actuator bridges first and
comes back once the (restarted) node answers again (graph/supervisor.py). Without it each node configures
itself, a dead process is noticed by its exit and restarted, and the bridges go safe on their own input
deadlines and publisher liveliness.

With ``compose=True`` all nodes run in one process (``python -m carbon_ai_nodes.graph.runner compose``): one rclpy
context, each vehicle's fusion -> carbon_inference -> actuator_bridge chain on one executor thread and every
other node on its own, which removes the inter-process hops' scheduling cost.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.graph.node_process import NodeProcess, node_ros_args, popen_node
from carbon_ai_nodes.graph.run_watch import RunWatch
from carbon_ai_nodes.graph.scenario import CONFIG_DIR, NodeLaunch, Scenario, graph, write_profiles
from carbon_ai_nodes.graph.supervisor import base_name, shutdown_order
from carbon_ai_nodes.node_registry import BY_NAME, CHAIN_NODES, MANAGER, node_module
from carbon_ai_nodes.ros.realtime import (
    CPU_LATENCY_ENV,
    RT_PRIORITY_ENV,
    checked_cpu_latency_us,
    checked_rt_priority,
)

# How long a node may take to end after SIGTERM before it is killed (and the run reports it and exits 1). Its
# own shutdown publishes the safe state and leaves DDS: the whole 5-process sim + fusion graph stopped in 0.39 s
# at load average 16 on the 2-core machine, so a node still running after this is hung, not slow.
STOP_TIMEOUT_S = 10.0


def module_available(module: str) -> bool:
    """True if node ``module`` (a node_registry name) exists in this build."""
    kind = BY_NAME.get(module)
    return kind is not None and importlib.util.find_spec(kind.module) is not None


def defaults_file(module: str) -> Path | None:
    """config/<node>.yaml, the node's shipped defaults, if present."""
    path = CONFIG_DIR / f"{module}.yaml"
    return path if path.is_file() else None


# Parameters rclpy itself declares; a scenario may set them without the node's ParamSet knowing them.
ROS_OWN_PARAMS = ("use_sim_time", "start_type_description_service")


def checked_params(launch: NodeLaunch) -> tuple[NodeLaunch, list[str]]:
    """``launch`` with its parameters validated as its node will validate them, before any process starts, and
    the names of the given parameters the node does not declare (ROS ignores those: worth a warning).

    rcl silently drops a ``-p`` value whose type differs from the defaults file's (``stop_dwell_s: "eight"``,
    or ``stop_dwell_s: 8`` for a double): the node would run on its default. So each value is checked against
    the node's ParamSet (defaults file first, then the scenario's values) and passed on as the type the node
    declares. Raises ConfigError naming the node, the parameter, the value and the rule.
    """
    import yaml

    from carbon_ai_nodes.commands.params import all_param_sets

    sets = all_param_sets()
    own, base = sets.get(launch.module), sets["node"]
    if own is None:  # not a carbon_ai node with declared parameters: nothing to check against
        return launch, []
    defaults: dict[str, Any] = {}
    path = defaults_file(launch.module)
    if path is not None:
        for section in (yaml.safe_load(path.read_text()) or {}).values():
            defaults.update(section.get("ros__parameters", {}))
    declared = {s.name for s in (*own.specs(), *base.specs())}
    unknown = [k for k in launch.params if k not in declared and k not in ROS_OWN_PARAMS]
    merged = {**defaults, **{k: v for k, v in launch.params.items() if k in declared}}
    try:
        values = {}
        for param_set in (own, base):
            names = {s.name for s in param_set.specs()}
            values.update(param_set.from_mapping({k: v for k, v in merged.items() if k in names}).as_dict())
    except ConfigError as exc:
        raise ConfigError(f"{launch.label}: parameter {exc}") from None
    return dataclass_replace_params(launch, {k: values.get(k, v) for k, v in launch.params.items()}), unknown


class GraphRunner:
    """Runs the node graph of a scenario until stopped. Use as a context manager."""

    def __init__(self, scenario: Scenario, run_dir: Path, *, use_sim: bool = True, baseline: bool = False,
                 only: Sequence[str] = (), overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 compose: bool = False, restart_limit: int = 2, env: Mapping[str, str] | None = None,
                 log: Callable[[str], None] = print, managed: bool = False,
                 heartbeat_timeout_s: float = 5.0, transition_timeout_s: float = 30.0,
                 extra_nodes: Sequence[NodeLaunch] = (),
                 rt_priority: int = 0, cpu_latency_us: int | None = None, sim_uplink: bool = False) -> None:
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
        launches = graph(scenario, self.run_dir, use_sim=use_sim, baseline=baseline, only=tuple(only),
                         sim_uplink=sim_uplink)
        for name, extra in (overrides or {}).items():
            launches = [dataclass_replace_params(n, extra) if n.module == name else n for n in launches]
        launches = [*launches, *extra_nodes]
        self.skipped = sorted({n.module for n in launches if not module_available(n.module)})
        self.launches: list[NodeLaunch] = []
        self.ignored_params: set[str] = set()
        for n in launches:
            if n.module not in self.skipped:
                checked, unknown = checked_params(n)
                self.launches.append(checked)
                self.ignored_params.update(f"{n.module}.{k}" for k in unknown)
        if self.managed and self.launches:
            self.launches = [dataclass_replace_params(n, {"autostart": False}) for n in self.launches]
            self.launches.append(NodeLaunch(
                module=MANAGER, namespace="", remaps={},
                # a configure loading a model took 10.7 s on this 2-core machine at load average 54
                params={"node_names": node_names(self.launches), "heartbeat_timeout_s": heartbeat_timeout_s,
                        "transition_timeout_s": transition_timeout_s}))
        self.procs: dict[str, NodeProcess] = {}
        self.restarts: dict[str, int] = {}
        self.events: list[str] = []
        self.failed: dict[str, str] = {}  # label -> why it is no longer running (refused, restart limit)
        self.killed: list[str] = []  # labels that did not end within stop_timeout_s of SIGTERM at stop
        self._killed_logs: dict[str, Path] = {}  # their logs, which end with their threads' stacks
        self.stop_timeout_s = STOP_TIMEOUT_S
        self.watch = RunWatch(() if self.managed or compose else [n.label for n in self.launches])

    def start(self) -> None:
        """Start every node, producers first."""
        for module in self.skipped:
            self.log(f"skipping {module}: no such node in this build")
        for name in sorted(self.ignored_params):
            self.log(f"ignoring parameter {name}: the node does not declare it (see carbon-ai params)")
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
        """Check the processes; restart the ones that died (within the limit). Returns what happened.

        Also shows what the nodes printed that the console must see (errors, graph state changes: RunWatch).
        """
        for label, running in self.procs.items():
            for line in self.watch.feed(label, running.new_lines()):
                self.log(line)
        happened = []
        for label, launch in [("composed", None)] if self.compose else [(n.label, n) for n in self.launches]:
            proc = self.procs.get(label)
            if proc is None or proc.poll() is None:
                continue
            status = proc.poll()
            tail = proc.output.strip().splitlines()[-1:] or [""]
            count = self.restarts.get(label, 0)
            if launch is not None and status != 1 and count < self.restart_limit:
                self.restarts[label] = count + 1
                self.procs[label] = self._spawn(launch)
                happened.append(f"{label} exited with {status} ({tail[0]}); restarted ({count + 1}/"
                                f"{self.restart_limit})")
                continue
            del self.procs[label]
            if status == 1:  # the node refused its configuration: restarting cannot help
                self.failed[label] = f"refused its configuration: {tail[0]}"
            else:
                self.failed[label] = f"exited with {status} ({tail[0]})" + ("; restart limit reached" if launch else "")
            happened.append(f"{label} {self.failed[label]}")
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

    @property
    def graph_up(self) -> bool:
        """The graph came up: the lifecycle manager said so (managed), the composed container did, or every
        self-starting node said it is active."""
        return self.watch.graph_up

    def alive(self) -> list[str]:
        """Labels of the running processes."""
        return [label for label, p in self.procs.items() if p.poll() is None]

    def stop(self) -> dict[str, int]:
        """Stop the graph: actuator bridges first (their safe state goes out while inputs still exist)."""
        try:
            return self._stop_in_order()
        finally:  # interrupted (a signal while stopping): whatever still runs is stopped all the same
            for label in list(self.procs):
                self._stop_one(label)

    def _stop_in_order(self) -> dict[str, int]:
        statuses = {}
        by_label = {n.label: n for n in self.launches}
        labels = list(self.procs) if self.compose else [lab for lab in shutdown_order(by_label) if lab in self.procs]
        # the manager goes first: it would otherwise take the stopping nodes for failures and restart the graph
        labels.sort(key=lambda lab: lab != f"/{MANAGER}")
        # one stage per node kind (all actuator bridges, then all planners...), stopped together
        stages: dict[str, list[str]] = {}
        for label in labels:
            stages.setdefault(base_name(label), []).append(label)
        for stage in stages.values():
            for label in stage:
                self.procs[label].proc.send_signal(signal.SIGTERM)
            for label in stage:
                statuses[label] = self._stop_one(label)
        return statuses

    def _stop_one(self, label: str) -> int:
        """Stop one process (SIGTERM, SIGKILL after stop_timeout_s); show what it said while stopping."""
        proc = self.procs.pop(label)
        status = proc.stop(timeout_s=self.stop_timeout_s)
        if proc.killed:
            self.killed.append(label)
            self._killed_logs[label] = proc.log_path
        for line in self.watch.feed(label, proc.new_lines()):
            self.log(line)
        return status

    def stop_faults(self, statuses: Mapping[str, int]) -> dict[str, str]:
        """Why each process that did not end cleanly at stop (``statuses`` from :meth:`stop`) did not: killed
        after ``stop_timeout_s``, or its exit status. Clean: 0, or -15 (SIGTERM before its handler was set)."""
        return {label: (f"did not stop within {self.stop_timeout_s:.0f} s of SIGTERM: killed "
                        f"(its threads' stacks: {self._killed_logs[label]})"
                        if label in self.killed else f"exited with status {status}")
                for label, status in statuses.items() if status not in (0, -15)}

    def logs(self) -> dict[str, str]:
        """Output of each running node process so far."""
        return {label: p.output for label, p in self.procs.items()}

    def __enter__(self) -> GraphRunner:
        try:
            self.start()
        except BaseException:  # e.g. Ctrl-C or SIGTERM while starting: no process may outlive the runner
            self.stop()
            raise
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
        import tempfile

        self.argv = [sys.executable, "-m", "carbon_ai_nodes.graph.runner", "compose", str(spec)]
        self._out = tempfile.NamedTemporaryFile(prefix="composed-", suffix=".log", delete=False)
        self.log_path = Path(self._out.name)
        self._read_offset = 0
        self.proc = popen_node(self.argv, self._out, env)
        self.killed = False


def ros_args(entry: Mapping[str, Any]) -> list[str]:
    """The ``--ros-args`` of one composed node (namespace, remaps, defaults file, parameters)."""
    return ["--ros-args", *node_ros_args(namespace=entry.get("namespace", ""), remaps=entry.get("remaps"),
                                         params_file=entry.get("params_file"), params=entry.get("params"))]


def node_class(module: str) -> type:
    """The CarbonNode subclass defined in node ``module``'s module (node_registry)."""
    import importlib
    import inspect

    from carbon_ai_nodes.ros.node_base import CarbonNode

    mod = importlib.import_module(node_module(module))
    for _, obj in inspect.getmembers(mod, inspect.isclass):
        if issubclass(obj, CarbonNode) and obj is not CarbonNode and obj.__module__ == mod.__name__:
            return obj
    raise ConfigError(f"{mod.__name__}: no CarbonNode subclass found")




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
    """Run every node of a compose spec in this process (``node_base.host_nodes``, as a single node runs):
    executor threads per :func:`executor_groups`, only the chain threads real-time; each node gets its
    namespace, remaps and parameters as node-local arguments."""
    from carbon_ai_nodes.ros.intra_process import IntraProcessBus
    from carbon_ai_nodes.ros.node_base import CarbonNode, executor_kind, host_nodes, node_arguments

    entries = json.loads(Path(spec_path).read_text())
    labels = [f"{e['namespace']}/{e['module']}" for e in entries]
    groups = executor_groups(labels)
    # One intra-process bus per executor thread: its nodes hand stamped messages to each other directly.
    buses = {g[0]: IntraProcessBus() for g in groups if len(g) > 1} if intra_process_enabled() else {}
    bus_of = {label: buses.get(g[0]) for g in groups for label in g}

    def build() -> dict[str, CarbonNode]:
        nodes: dict[str, CarbonNode] = {}
        for label, entry in zip(labels, entries, strict=True):
            with node_arguments(ros_args(entry), bus_of[label]):
                nodes[label] = node_class(entry["module"])()
        return nodes

    def announce(executors: list[Any]) -> None:
        kind = executor_kind(executors[0]) if executors else "none"
        print(f"composed {len(labels)} nodes on {len(executors)} {kind} executor threads, intra-process delivery "
              f"{'on' if buses else 'off'}", flush=True)

    return host_nodes(build, lambda _: [(g, any(base_name(lab) in CHAIN_NODES for lab in g)) for g in groups],
                      rclpy_args=[sys.argv[0]], shutdown_order=shutdown_order, on_spinning=announce)


def run_graph(runner: GraphRunner, duration_s: float | None, progress_period_s: float = 5.0,
              until: Callable[[], bool] | None = None, startup_timeout_s: float | None = None) -> bool:
    """Supervise a started graph for ``duration_s`` (None = until Ctrl-C, SIGTERM or SIGHUP), printing progress.

    With ``startup_timeout_s`` the duration counts from the moment the graph is up, so a run drives for as long as
    asked however long a loaded machine takes to bring it up (within that timeout); without it, from the start.
    Returns False, after saying why, when the graph did not come up: a node failed while starting, (with
    ``startup_timeout_s``) it was not up within that many seconds, or the run ended before it was up.
    """
    start = time.monotonic()
    up_at: float | None = None
    next_progress = start + progress_period_s
    try:
        while True:
            runner.poll()
            now = time.monotonic()
            if runner.graph_up and up_at is None:
                up_at = now
            counted_from = up_at if up_at is not None and startup_timeout_s is not None else start
            waiting_to_count = up_at is None and startup_timeout_s is not None  # the clock starts at "up"
            if duration_s is not None and not waiting_to_count and now - counted_from >= duration_s:
                break
            if not runner.graph_up:
                if runner.failed:
                    runner.log(f"the graph did not come up: {', '.join(runner.failed)} failed (see above)")
                    return False
                if startup_timeout_s is not None and time.monotonic() - start > startup_timeout_s:
                    errors = runner.watch.errors()
                    why = "; ".join(f"{n}: {m[-1]}" for n, m in errors.items()) or "no node logged an error"
                    runner.log(f"the graph did not come up within {startup_timeout_s:.0f} s ({why})")
                    return False
            if until is not None and until():
                break
            if now >= next_progress:
                next_progress = now + progress_period_s
                alive = runner.alive()
                total = f"/{duration_s:.0f}" if duration_s else ""
                state = "up" if runner.graph_up else "coming up"
                runner.log(f"[{now - counted_from:5.0f}{total} s] graph {state}, {len(alive)} processes running")
            time.sleep(0.2)
    except KeyboardInterrupt as exc:
        runner.log(f"{exc or 'interrupted'}: stopping the graph (actuator bridges first)")
    if not runner.graph_up:
        runner.log(f"the graph did not come up in the {time.monotonic() - start:.0f} s it ran")
    return runner.graph_up


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
    print("usage: python -m carbon_ai_nodes.graph.runner compose SPEC.json", file=sys.stderr)
    sys.exit(2)
