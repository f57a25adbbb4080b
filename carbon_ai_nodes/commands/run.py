"""Start a scenario's node graph (config/scenarios/<name>.yaml) as separate processes, the same graph
``ros2 launch carbon_ai_nodes <name>.launch.py`` starts on a vehicle; nodes missing from this build are skipped
with a message. A lifecycle_manager configures and activates them in dependency order and supervises them.
Shows each node's errors and the graph's state changes as they happen, and exits with status 1 if the graph
does not come up within --startup-timeout. Stops --duration seconds after the graph is up, or on Ctrl-C, SIGTERM
or SIGHUP, with the actuator bridges first, then prints a summary (graph states, faults per node, messages per
topic). A simulated run queues its uplink summaries in the run directory and sends them nowhere unless
--sim-uplink.
``--plant-report DIR`` records each vehicle's wheel speed, carbon_estimate and fuel meter meanwhile and, once
stopped, scores the driven traces with each vehicle's independent plant (NREL FASTSim, sim/plant.py) beside
carbon_ai's model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from carbon_ai_nodes.commands import arg_types

if TYPE_CHECKING:
    from carbon_ai_nodes.commands.demo import Series2, Series3

HELP = "run a scenario's node graph (simulated vehicles by default) as processes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``carbon-ai run``."""
    parser.add_argument("scenario", help="scenario name in config/scenarios (e.g. haul_truck_fleet) or a YAML path")
    parser.add_argument("--duration", type=arg_types.positive_seconds, default=None, metavar="S",
                        help="stop S seconds after the graph is up (default: run until Ctrl-C, SIGTERM or SIGHUP)")
    parser.add_argument("--compose", action="store_true", help="run every node in one process")
    parser.add_argument("--rt-priority", type=int, default=0, metavar="N",
                        help="run the sensor -> actuator nodes (fusion, carbon_inference, actuator_bridge) under "
                             "SCHED_FIFO priority N (1-99; needs CAP_SYS_NICE or an rtprio limit); default 0: off")
    parser.add_argument("--cpu-latency-us", type=int, default=None, metavar="US",
                        help="while those nodes run, keep CPU wake-up latency under US microseconds "
                             "(/dev/cpu_dma_latency; 0: cores never sleep; needs root)")
    parser.add_argument("--no-manager", action="store_true",
                        help="nodes activate themselves; by default a lifecycle_manager brings the graph up in "
                             "dependency order and supervises it (not with --compose)")
    parser.add_argument("--no-sim", action="store_true", help="leave out the simulator (real sensors)")
    parser.add_argument("--baseline", action="store_true",
                        help="apply the scenario's baseline_params (carbon optimisation off)")
    parser.add_argument("--only", nargs="+", default=(), metavar="NODE", help="start only these nodes")
    parser.add_argument("--fault", nargs="+", default=(), choices=("nan_burst", "gnss_jump", "silence"),
                        help="inject these faults in the simulator")
    parser.add_argument("--fault-start", type=arg_types.non_negative_seconds, default=10.0, metavar="S",
                        help="first fault window start")
    parser.add_argument("--fault-length", type=arg_types.positive_seconds, default=3.0, metavar="S",
                        help="length of a fault window")
    parser.add_argument("--startup-timeout", type=arg_types.positive_seconds, default=60.0, metavar="S",
                        help="exit with status 1 if the graph is not up within S seconds (default 60)")
    parser.add_argument("--sim-uplink", action="store_true",
                        help="with the simulator: send its summaries to the configured MQTT broker (by default a "
                             "simulated run has no broker and queues in its run directory, never the vehicle's)")
    parser.add_argument("--run-dir", default="", help="where generated files go (default: a temporary directory)")
    parser.add_argument("--record", type=arg_types.new_file, default=None, metavar="FILE.mcap",
                        help="record every topic of the run to this MCAP file (replay it in Foxglove)")
    parser.add_argument("--plant-report", default="", metavar="DIR",
                        help="record each vehicle's wheel speed, carbon_estimate and fuel meter; when the run stops, "
                             "score the driven traces with each vehicle's plant (FASTSim, config/plants) beside "
                             "carbon_ai's model: DIR/report.md, report.json, plant_vs_model.png")
    parser.add_argument("--record-topics", nargs="+", default=(), metavar="TOPIC",
                        help="with --record: only these topics (default: all but /parameter_events)")


def run(args: argparse.Namespace) -> int:
    """Run the graph; exit status 0 after a clean stop, 1 if it never came up or a node failed for good."""
    import tempfile

    from carbon_ai_nodes.common.errors import ConfigError
    from carbon_ai_nodes.graph.runner import GraphRunner, run_graph
    from carbon_ai_nodes.graph.scenario import load_scenario

    if not args.startup_timeout > 0:
        raise ConfigError(f"--startup-timeout={args.startup_timeout}: must be > 0")
    scenario = load_scenario(args.scenario)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix=f"carbon_ai_{scenario.name}_"))
    overrides = {}
    if args.fault:
        overrides["sim"] = {"faults": list(args.fault), "fault_start_s": args.fault_start,
                            "fault_length_s": args.fault_length}
    runner = GraphRunner(scenario, run_dir, use_sim=not args.no_sim, baseline=args.baseline, only=args.only,
                         overrides=overrides, compose=args.compose,
                         managed=not args.no_manager, rt_priority=args.rt_priority,
                         cpu_latency_us=args.cpu_latency_us, sim_uplink=args.sim_uplink)
    print(f"scenario {scenario.name}: {len(scenario.vehicles)} vehicles, run directory {run_dir}", flush=True)
    # counts every topic's messages for the summary; with --record it also writes them to the file
    recorder = _start_recorder(args.record or None, args.record_topics)
    traces = _TraceRecorder(scenario) if args.plant_report else None
    try:
        with runner:  # Ctrl-C, SIGTERM, SIGHUP: run_graph returns and the graph stops in order (cli.py)
            came_up = run_graph(runner, args.duration, startup_timeout_s=args.startup_timeout)
            statuses = runner.stop()  # the bridges' safe-state commands still go into the recording
    finally:
        if traces is not None:
            traces.close()
        _stop_recorder(recorder)
    if traces is not None:
        _write_plant_report(scenario, traces, Path(args.plant_report), "baseline" if args.baseline else "optimised")
    bad = runner.stop_faults(statuses)
    bad.update(runner.failed)
    ended = {label: bad.get(label, "stopped") for label in [*statuses, *runner.failed]}
    ended.update({label: f"stopped, restarted {n}x" for label, n in runner.restarts.items() if label not in bad})
    for line in runner.watch.summary(ended, recorder.counts):
        print(line)
    return 0 if came_up and not bad else 1


class _TraceRecorder:
    """Each vehicle's wheel speed, carbon_estimate and fuel meter (sim/true_emission), recorded by a node spinning
    in a background thread of this process, as (stamp s, values...) series per vehicle id."""

    def __init__(self, scenario) -> None:
        import threading

        import rclpy
        from nav_msgs.msg import Odometry

        from carbon_ai_msgs.msg import CarbonEstimate
        from carbon_ai_nodes.graph.ros.mcap_recorder import spin_in_thread
        from carbon_ai_nodes.ros import qos
        from carbon_ai_nodes.ros.stamps import to_seconds

        self.label = "run"
        ids = [v.id for v in scenario.vehicles]
        self.speed: dict[str, Series2] = {v: ([], []) for v in ids}
        self.estimate: dict[str, Series3] = {v: ([], [], []) for v in ids}
        self.meter: dict[str, Series3] = {v: ([], [], []) for v in ids}
        self.node = rclpy.create_node("carbon_ai_plant_traces")

        def rates(series):
            def on_msg(msg) -> None:
                series[0].append(to_seconds(msg.header.stamp))
                series[1].append(msg.co2_rate_g_s)
                series[2].append(msg.fuel_rate_lph)
            return on_msg

        for v in ids:
            def on_odom(msg, series=self.speed[v]) -> None:
                series[0].append(to_seconds(msg.header.stamp))
                series[1].append(msg.twist.twist.linear.x)

            self.node.create_subscription(Odometry, f"/{v}/odom/wheel", on_odom, qos.sensor())
            self.node.create_subscription(CarbonEstimate, f"/{v}/carbon_estimate", rates(self.estimate[v]),
                                          qos.command())
            self.node.create_subscription(CarbonEstimate, f"/{v}/sim/true_emission", rates(self.meter[v]),
                                          qos.command())
        self._stop = threading.Event()
        self._thread = spin_in_thread(self.node, self._stop, "plant_traces")

    def close(self) -> None:
        """Stop recording (the series stay)."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


def _write_plant_report(scenario, traces: _TraceRecorder, out: Path, label: str) -> None:
    """Score the recorded traces with each vehicle's plant and write report.md, report.json and the PNG."""
    import json

    from carbon_ai_nodes.commands.demo import plant_plot
    from carbon_ai_nodes.sim import report

    out.mkdir(parents=True, exist_ok=True)
    print("scoring the recorded traces with each vehicle's plant (FASTSim)", flush=True)
    meter = traces.meter if any(t for t, _, _ in traces.meter.values()) else None
    scores = report.score_fleet(scenario, traces.speed, traces.estimate, meter)
    traces.label = label
    plots = plant_plot(scenario.name, [traces], [scores], out)
    report.write_plant_traces(out, [label], [scores])
    lines = [f"# carbon_ai run: {scenario.name} ({label})", ""] + report.plant_markdown([label], [scores])
    lines += [f"![{p}]({p})" for p in plots] + [""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({"scenario": scenario.name, "run": label,
                                                 "plant": [s.as_dict() for s in scores]}, indent=2, allow_nan=False))
    for s in scores:
        print(report.plant_line(s))
    print(f"plant report: {out / 'report.md'}")


def _start_recorder(path: str | None, topics: tuple[str, ...]):
    """An McapRecorder (counting only without ``path``) spinning in a background thread of this process."""
    from carbon_ai_nodes.graph.ros.mcap_recorder import McapRecorder
    from carbon_ai_nodes.graph.stop_signals import init_rclpy

    init_rclpy()
    recorder = McapRecorder(path, topics, node_name="carbon_ai_run")
    recorder.start_thread()
    if path:
        print(f"recording to {path}")
    return recorder


def _stop_recorder(recorder) -> None:
    import rclpy

    recorder.close()
    rclpy.try_shutdown()
    if recorder.path is not None:
        print(f"recorded {recorder.message_count} messages on {len(recorder.counts)} topics to {recorder.path}")
