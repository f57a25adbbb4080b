"""End-to-end latency benchmark. ``carbon-ai bench latency`` publishes sensor messages at --rate Hz into the real
node graph (fusion -> carbon_inference -> actuator_bridge, separate processes) and measures sensor -> ActuatorCommand;
in the same run it measures a bare rclpy relay chain of the same hop count, rate and QoS per hop (best effort
from the sensors, reliable after), so the ratio is meaningful on a noisy machine.

Latency of one sensor message = the receipt time of its first answer minus its send time, where an output answers
the newest sensor message sent before the output's header stamp (its publish time; graph/latency_probe.py). The same
definition is applied to the bare chain. The fusion node publishes on input (``publish_mode: input``), so every
hop is event driven, as in the relay chain.

All chains are started first and then measured in short interleaved windows (``--window`` s each, the order
rotating every round, only one chain fed at a time), so a load spike from other work on the machine hits every
chain alike instead of whichever happened to run then. A window's own warm-up and tail are fed but not measured.

The bare chain is what a plain rclpy program does: ``SingleThreadedExecutor`` (``bare_*``). The carbon_ai nodes
spin on rclpy's EventsExecutor where this rclpy has it (see node_base.make_executor), so the bare chain is also
measured on that executor (``bare_events_*``) to keep the comparison honest; ``p99_ratio`` compares with the
former, ``p99_ratio_same_executor`` with the latter.

``--compose`` adds the graph composed in one process (a second vehicle's namespace, so both graphs can stay up)
as a vehicle computer would run it with in-process sensor drivers: a ``latency_probe`` node on the chain's
executor thread publishes the same sensor streams and times the ActuatorCommand answers itself, and the
messages between the composed nodes take the intra-process bus (``CARBON_AI_INTRA_PROCESS=0``: DDS instead).
"""

from __future__ import annotations

import argparse
import sys
from typing import Protocol

from carbon_ai_nodes.commands import arg_types

HELP = "measure sensor -> ActuatorCommand latency against a bare rclpy relay chain"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``carbon-ai bench``."""
    parser.add_argument("what", choices=("latency",), help="what to benchmark")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--rate", type=arg_types.positive_number, default=100.0,
                        help="sensor message rate, Hz (default 100)")
    parser.add_argument("--duration", type=arg_types.positive_seconds, default=10.0, metavar="S",
                        help="measured seconds per chain")
    parser.add_argument("--window", type=arg_types.positive_seconds, default=2.0, metavar="S",
                        help="measured seconds per interleaved window (default 2)")
    parser.add_argument("--warmup", type=arg_types.non_negative_seconds, default=0.5, metavar="S",
                        help="unmeasured seconds fed before each window (default 0.5)")
    parser.add_argument("--compose", action="store_true", help="also measure the pipeline composed in one process")
    parser.add_argument("--rt-priority", type=int, default=0, metavar="N",
                        help="every chain (bare relays included) and the measuring process under SCHED_FIFO "
                             "priority N (1-99); default 0: ordinary scheduling")
    parser.add_argument("--cpu-latency-us", type=int, default=None, metavar="US",
                        help="during the run, keep CPU wake-up latency under US microseconds (/dev/cpu_dma_latency, "
                             "machine-wide, so every chain alike; 0: cores never sleep; needs root)")


def run(args: argparse.Namespace) -> int:
    """Run both chains and report p50/p99 (ms) and the ratio."""
    import json
    import os
    import platform
    import tempfile
    from pathlib import Path

    from carbon_ai_nodes.common.errors import ConfigError
    from carbon_ai_nodes.graph.node_process import isolated_ros_env
    from carbon_ai_nodes.ros.node_base import default_executor_kind
    from carbon_ai_nodes.ros.realtime import (
        RT_PRIORITY_ENV,
        checked_cpu_latency_us,
        checked_rt_priority,
        hold_cpu_wakeup_latency,
        set_thread_realtime,
    )
    from carbon_ai_nodes.sim.report import percentiles_ms

    if not 1.0 <= args.rate <= 2000.0:
        raise ConfigError(f"--rate={args.rate}: must be in [1, 2000]")
    checked_rt_priority(args.rt_priority, "--rt-priority")
    checked_cpu_latency_us(args.cpu_latency_us, "--cpu-latency-us")
    os.environ.update(isolated_ros_env())
    if args.rt_priority:  # the relays read it
        os.environ[RT_PRIORITY_ENV] = str(args.rt_priority)
    # the measuring thread (feeders, collectors) runs real-time too; the CPU request is machine-wide
    for refused in (set_thread_realtime(args.rt_priority), hold_cpu_wakeup_latency(args.cpu_latency_us)):
        if refused:
            raise ConfigError(refused)
    import rclpy

    rclpy.init()
    load_before = os.getloadavg()
    try:
        pipeline_executor = default_executor_kind()
        log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else print
        run_dir = Path(tempfile.mkdtemp(prefix="carbon_ai_bench_"))
        results = _measure_all(args, run_dir, pipeline_executor, log)
    finally:
        rclpy.try_shutdown()
    stats = {k: percentiles_ms(v) for k, v in results.items()}
    out = {
        "hops": 3, "rate_hz": args.rate, "duration_s": args.duration,
        "pipeline_p50_ms": stats["pipeline"]["p50"], "pipeline_p99_ms": stats["pipeline"]["p99"],
        "bare_p50_ms": stats["bare"]["p50"], "bare_p99_ms": stats["bare"]["p99"],
        "pipeline_count": stats["pipeline"]["count"], "bare_count": stats["bare"]["count"],
        "p99_ratio": _ratio(stats["pipeline"], stats["bare"]),
        "bare_executor": "single", "pipeline_executor": pipeline_executor,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()} {os.cpu_count()} cpus",
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    if "bare_events" in stats:
        out.update(bare_events_p50_ms=stats["bare_events"]["p50"], bare_events_p99_ms=stats["bare_events"]["p99"],
                   bare_events_count=stats["bare_events"]["count"],
                   p99_ratio_same_executor=_ratio(stats["pipeline"], stats["bare_events"]))
    if "composed" in stats:
        out.update(composed_p50_ms=stats["composed"]["p50"], composed_p99_ms=stats["composed"]["p99"],
                   composed_count=stats["composed"]["count"])
    out["window_s"] = args.window
    out["rt_priority"] = args.rt_priority
    out["cpu_latency_us"] = args.cpu_latency_us
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{'chain':<12} {'count':>6} {'p50 ms':>8} {'p99 ms':>8}")
        for k, s in stats.items():
            print(f"{k:<12} {s['count']:>6} {s['p50']:>8.2f} {s['p99']:>8.2f}")
        print(f"pipeline/bare p99 ratio: {out['p99_ratio']:.2f} (bare on SingleThreadedExecutor, pipeline on "
              f"{pipeline_executor})", end="")
        if "p99_ratio_same_executor" in out:
            print(f"; same executor: {out['p99_ratio_same_executor']:.2f}", end="")
        rt = f", SCHED_FIFO {args.rt_priority}" if args.rt_priority else ""
        if args.cpu_latency_us is not None:
            rt += f", CPU wake-up latency <= {args.cpu_latency_us} us"
        print(f"  ({out['machine']}, load {out['loadavg_before'][0]:.2f} -> {out['loadavg_after'][0]:.2f}{rt})")
    return 0


def _ratio(a: dict, b: dict) -> float:
    return a["p99"] / b["p99"] if a["count"] and b["count"] else float("nan")


class _ChainFeeder(Protocol):
    """What a latency run switches and counts: _Feeder (sensors from the bench's own node) or _ProbeInGraph."""

    publishing: bool  # sending sensor messages
    active: bool  # inside a measured window

    def measured_sent(self) -> int: ...


class _Feeder:
    """Publishes the sensor streams at the benchmark rate while ``publishing``; remembers when each message was
    sent and whether it was inside a measured window (``active``)."""

    def __init__(self, node, prefix: str, rate_hz: float, bare: bool) -> None:
        from carbon_ai_nodes.graph.latency_probe import LatencyMatcher
        from carbon_ai_nodes.graph.ros.synthetic_sensors import SENSOR_TOPICS
        from carbon_ai_nodes.ros import qos

        self.node = node
        self.matcher = LatencyMatcher()
        self.publishing = False
        self.active = False
        self.rate_hz = rate_hz
        self.k = 0
        topics = SENSOR_TOPICS[:1] if bare else SENSOR_TOPICS  # the bare chain relays the IMU only
        self.pubs = [node.create_publisher(t, f"{prefix}/{'in' if bare else topic}", qos.sensor())
                     for topic, t in topics]
        self.timer = node.create_timer(1.0 / rate_hz, self.tick)

    def tick(self) -> None:
        from carbon_ai_nodes.graph.ros.synthetic_sensors import synthetic_sensors

        if not self.publishing:
            return
        now = self.node.get_clock().now()
        self.k += 1
        for pub, msg in zip(self.pubs, synthetic_sensors(self.k, now.to_msg(), self.rate_hz), strict=False):
            if msg is not None:
                pub.publish(msg)
        self.matcher.sent(now.nanoseconds * 1e-9, self.active)

    def measured_sent(self) -> int:
        """Sensor messages sent inside measured windows."""
        return self.matcher.measured_sent


class _ProbeInGraph:
    """The composed graph's own latency_probe node as the chain's feeder: switched through its ``~/mode``
    topic; its latencies come from its results file once the graph has stopped."""

    def __init__(self, node, namespace: str, results_file) -> None:
        from std_msgs.msg import String

        from carbon_ai_nodes.ros import qos

        self._string = String
        self._pub = node.create_publisher(String, f"{namespace}/latency_probe/mode", qos.latched())
        self.results_file = results_file
        self._publishing = self._active = False
        self._measured_sent = 0

    def _send(self) -> None:
        mode = "measure" if self._active else "feed" if self._publishing else "idle"
        self._pub.publish(self._string(data=mode))

    @property
    def publishing(self) -> bool:
        return self._publishing

    @publishing.setter
    def publishing(self, value: bool) -> None:
        self._publishing = value
        self._send()

    @property
    def active(self) -> bool:
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        self._active = value
        self._send()

    def collect(self, samples: list[float]) -> None:
        """Read the probe's results (after the graph stopped) into ``samples``."""
        import json

        if not self.results_file.is_file():  # the graph never ran: the error raised earlier says why
            return
        data = json.loads(self.results_file.read_text())
        samples.extend(data["samples_ms"])
        self._measured_sent = data["measured_sent"]

    def measured_sent(self) -> int:
        """Sensor messages the probe sent inside measured windows (known once collected)."""
        return self._measured_sent


def _latency_collector(node, msg_type, topic: str, feeder: _Feeder, samples: list[float],
                       accept=lambda m: True) -> None:
    from carbon_ai_nodes.ros import qos
    from carbon_ai_nodes.ros.stamps import to_seconds

    def on_msg(msg) -> None:
        if not accept(msg):
            return
        latency_ms = feeder.matcher.output(to_seconds(msg.header.stamp), node.get_clock().now().nanoseconds * 1e-9)
        if latency_ms is not None:
            samples.append(latency_ms)

    node.create_subscription(msg_type, topic, on_msg, qos.command())


class _Chain:
    """One measured chain: its feeder, latency samples, a readiness check and how to tear it down."""

    def __init__(self, feeder: _ChainFeeder, samples: list[float], ready, stop) -> None:
        self.feeder, self.samples, self.ready, self.stop = feeder, samples, ready, stop


def _measure_all(args: argparse.Namespace, run_dir, pipeline_executor: str, log) -> dict[str, list[float]]:
    import math

    from carbon_ai_nodes.common.errors import CarbonAIError
    from carbon_ai_nodes.ros.probe import Probe

    probe = Probe("bench")
    chains: dict[str, _Chain] = {}
    try:
        log(f"starting the chains (3 hops each, {args.rate:g} Hz): bare relay on SingleThreadedExecutor...")
        chains["bare"] = _bare_chain(probe, args, "/bare_single", "single")
        if pipeline_executor == "events":
            log("bare relay on EventsExecutor...")
            chains["bare_events"] = _bare_chain(probe, args, "/bare_events", "events")
        log("pipeline fusion -> carbon_inference -> actuator_bridge (3 processes)...")
        chains["pipeline"] = _pipeline_chain(probe, args, run_dir, False, log)
        if args.compose:
            log("pipeline composed in one process...")
            chains["composed"] = _pipeline_chain(probe, args, run_dir, True, log)
        for name, chain in chains.items():
            chain.feeder.publishing = True
            if not probe.spin_until(chain.ready, 60.0):
                raise CarbonAIError(f"{name}: the chain produced no output within 60 s")
            chain.feeder.publishing = False
        names = list(chains)
        rounds = max(1, math.ceil(args.duration / args.window))
        log(f"measuring {rounds} interleaved windows of {args.window:g} s per chain...")
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                feeder = chains[name].feeder
                feeder.publishing = True
                probe.spin_for(args.warmup)
                feeder.active = True
                probe.spin_for(args.window)
                feeder.active = False
                probe.spin_for(0.2)  # fed, unmeasured tail: outputs of the window's last messages still count
                feeder.publishing = False
    finally:
        for chain in chains.values():
            chain.stop()
        probe.close()
    for name, chain in chains.items():
        log(f"  {name}: {chain.feeder.measured_sent()} sensor messages measured, {len(chain.samples)} outputs")
    return {name: chain.samples for name, chain in chains.items()}


def _bare_chain(probe, args: argparse.Namespace, prefix: str, executor: str) -> _Chain:
    import subprocess

    from sensor_msgs.msg import Imu

    feeder = _Feeder(probe.node, prefix, args.rate, bare=True)
    samples: list[float] = []
    got: list[Imu] = []
    _latency_collector(probe.node, Imu, f"{prefix}/out", feeder, samples)
    probe.node.create_subscription(Imu, f"{prefix}/out", got.append, 10)
    hops = [(f"{prefix}/in", f"{prefix}/h1"), (f"{prefix}/h1", f"{prefix}/h2"), (f"{prefix}/h2", f"{prefix}/out")]
    procs = [subprocess.Popen([sys.executable, "-m", "carbon_ai_nodes.commands.bench", "relay", a, b, executor])
             for a, b in hops]

    def stop() -> None:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    return _Chain(feeder, samples, lambda: bool(got), stop)


def _pipeline_chain(probe, args: argparse.Namespace, run_dir, compose: bool, log) -> _Chain:
    import dataclasses

    from carbon_ai_msgs.msg import ActuatorCommand
    from carbon_ai_nodes.common.errors import CarbonAIError
    from carbon_ai_nodes.graph.runner import GraphRunner
    from carbon_ai_nodes.graph.scenario import NodeLaunch, load_scenario

    scenario = load_scenario("delivery_van_fleet")
    # a vehicle of its own per pipeline, so the separate-process and composed graphs can both stay up
    vehicle = scenario.vehicles[1 if compose else 0]
    scenario = dataclasses.replace(scenario, vehicles=(vehicle,))
    ns = f"/{vehicle.id}"
    graph_dir = run_dir / ("composed" if compose else "processes")
    graph_dir.mkdir(parents=True, exist_ok=True)
    samples: list[float] = []
    got: list[ActuatorCommand] = []
    auto = ActuatorCommand.MODE_AUTO
    probe.node.create_subscription(ActuatorCommand, f"{ns}/actuator_command",
                                   lambda m: got.append(m) if m.mode == auto else None, 10)
    extra: tuple[NodeLaunch, ...] = ()
    feeder: _ChainFeeder
    in_graph: _ProbeInGraph | None = None
    if compose:
        # The sensors come from a latency_probe on the chain's own executor thread, as in-process drivers
        # would: its messages and the chain's take the intra-process bus, and it times the commands itself.
        feeder = in_graph = _ProbeInGraph(probe.node, ns, graph_dir / "latency_probe.json")
        extra = (NodeLaunch(module="latency_probe", namespace=ns, remaps={}, params={
            "rate_hz": args.rate, "start_mode": "idle", "results_file": str(in_graph.results_file)}),)
    else:
        own = _Feeder(probe.node, ns, args.rate, bare=False)
        feeder = own
        _latency_collector(probe.node, ActuatorCommand, f"{ns}/actuator_command", own, samples,
                           accept=lambda m: m.mode == auto)
    # Between its windows a chain is not fed: long input deadlines keep the bridge in AUTO meanwhile (this
    # measures latency, not the watchdog), and the 1 Hz control timer keeps its own commands rare.
    overrides = {"fusion": {"rate_hz": args.rate},
                 "actuator_bridge": {"control_rate_hz": 1.0, "vehicle_state_timeout_s": 600.0,
                                     "carbon_estimate_timeout_s": 600.0, "healthy_window_s": 0.5}}
    runner = GraphRunner(scenario, graph_dir, only=("fusion", "carbon_inference", "actuator_bridge"),
                         overrides=overrides, compose=compose, log=log, extra_nodes=extra,
                         rt_priority=args.rt_priority)
    if runner.skipped:
        raise CarbonAIError(f"pipeline nodes not in this build: {', '.join(runner.skipped)}")
    runner.start()

    def stop() -> None:
        runner.stop()
        if in_graph is not None:  # composed: the probe's results file holds the latencies
            in_graph.collect(samples)

    return _Chain(feeder, samples, lambda: bool(got), stop)


def relay_main(topic_in: str, topic_out: str, executor_kind: str = "single") -> int:
    """A bare rclpy relay hop: republish each Imu on receipt with a fresh stamp (the benchmark's baseline), spun
    by a SingleThreadedExecutor (``single``, a plain rclpy program) or the EventsExecutor (``events``). Its QoS is
    the pipeline's: best effort from the sensor feed (``.../in``), reliable after."""
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from sensor_msgs.msg import Imu

    from carbon_ai_nodes.ros import qos
    from carbon_ai_nodes.ros.realtime import rt_priority_from_env, set_thread_realtime

    refused = set_thread_realtime(rt_priority_from_env())  # before rclpy.init, as the nodes do
    rclpy.init()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    node = rclpy.create_node("relay_" + topic_out.strip("/").replace("/", "_"))
    if refused:
        node.get_logger().warning(refused)
    # The pipeline's QoS hop for hop: sensor data in best effort, then reliable (vehicle_state, carbon_estimate,
    # actuator_command), whose writers also handle acknowledgements.
    pub = node.create_publisher(Imu, topic_out, qos.command())

    def on_msg(msg: Imu) -> None:
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)

    node.create_subscription(Imu, topic_in, on_msg, qos.sensor() if topic_in.endswith("/in") else qos.command())
    if executor_kind == "events":
        from rclpy.experimental import EventsExecutor

        executor = EventsExecutor()
    else:
        executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "relay":
        sys.exit(relay_main(*sys.argv[2:]))
    sys.exit("usage: python -m carbon_ai_nodes.commands.bench relay IN OUT [single|events]")
