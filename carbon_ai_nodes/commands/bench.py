"""End-to-end latency benchmark. ``carbon-ai bench latency`` publishes sensor messages at --rate Hz into the real
node graph (fusion -> carbon_inference -> actuator_bridge, separate processes) and measures sensor -> ActuatorCommand;
in the same run it measures a bare rclpy relay chain of the same hop count at the same rate, so the ratio is
meaningful on a noisy machine.

Latency of one output message = its receipt time minus the send time of the newest sensor message sent before the
output's header stamp (its publish time). The same definition is applied to the bare chain. The fusion node
publishes on its own timer (``rate_hz``, set to the sensor rate here), so the pipeline figure includes up to one
timer period of sampling delay that an event-driven relay does not have.
"""

from __future__ import annotations

import argparse
import sys

HELP = "measure sensor -> ActuatorCommand latency against a bare rclpy relay chain"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``carbon-ai bench``."""
    parser.add_argument("what", choices=("latency",), help="what to benchmark")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--rate", type=float, default=100.0, help="sensor message rate, Hz (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, metavar="S", help="measured seconds per chain")
    parser.add_argument("--warmup", type=float, default=3.0, metavar="S", help="unmeasured seconds per chain")
    parser.add_argument("--compose", action="store_true", help="also measure the pipeline composed in one process")


def run(args: argparse.Namespace) -> int:
    """Run both chains and report p50/p99 (ms) and the ratio."""
    import json
    import os
    import platform
    import tempfile
    from pathlib import Path

    from carbon_ai_nodes.core.errors import ConfigError
    from carbon_ai_nodes.core.report import percentiles_ms
    from carbon_ai_nodes.testing import isolated_ros_env

    if not 1.0 <= args.rate <= 2000.0:
        raise ConfigError(f"--rate={args.rate}: must be in [1, 2000]")
    os.environ.update(isolated_ros_env())
    import rclpy

    rclpy.init()
    results = {}
    try:
        log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else print
        run_dir = Path(tempfile.mkdtemp(prefix="carbon_ai_bench_"))
        log(f"bare relay chain (3 hops, {args.rate:g} Hz, {args.duration:g} s)...")
        results["bare"] = _measure_bare(args, log)
        log("pipeline fusion -> carbon_inference -> actuator_bridge (3 processes)...")
        results["pipeline"] = _measure_pipeline(args, run_dir, False, log)
        if args.compose:
            log("pipeline composed in one process...")
            results["composed"] = _measure_pipeline(args, run_dir, True, log)
    finally:
        rclpy.try_shutdown()
    stats = {k: percentiles_ms(v) for k, v in results.items()}
    out = {
        "hops": 3, "rate_hz": args.rate, "duration_s": args.duration,
        "pipeline_p50_ms": stats["pipeline"]["p50"], "pipeline_p99_ms": stats["pipeline"]["p99"],
        "bare_p50_ms": stats["bare"]["p50"], "bare_p99_ms": stats["bare"]["p99"],
        "pipeline_count": stats["pipeline"]["count"], "bare_count": stats["bare"]["count"],
        "p99_ratio": stats["pipeline"]["p99"] / stats["bare"]["p99"] if stats["bare"]["count"] else float("nan"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()} {os.cpu_count()} cpus",
    }
    if "composed" in stats:
        out.update(composed_p50_ms=stats["composed"]["p50"], composed_p99_ms=stats["composed"]["p99"],
                   composed_count=stats["composed"]["count"])
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{'chain':<10} {'count':>6} {'p50 ms':>8} {'p99 ms':>8}")
        for k, s in stats.items():
            print(f"{k:<10} {s['count']:>6} {s['p50']:>8.2f} {s['p99']:>8.2f}")
        print(f"pipeline/bare p99 ratio: {out['p99_ratio']:.2f}  ({out['machine']})")
    return 0


class _Feeder:
    """Publishes the sensor streams at the benchmark rate and remembers when each message was sent."""

    def __init__(self, node, prefix: str, rate_hz: float, bare: bool) -> None:
        from carbon_ai_nodes import qos

        self.node = node
        self.sent_s: list[float] = []
        self.bare = bare
        self.k = 0
        sensor = qos.sensor()
        if bare:
            from sensor_msgs.msg import Imu

            self.pubs = [node.create_publisher(Imu, f"{prefix}/in", sensor)]
        else:
            from nav_msgs.msg import Odometry
            from sensor_msgs.msg import Imu, NavSatFix

            from carbon_ai_msgs.msg import EngineTelemetry

            self.pubs = [node.create_publisher(t, f"{prefix}/{n}", sensor) for t, n in
                         ((Imu, "imu/data"), (Odometry, "odom/wheel"), (NavSatFix, "gnss/fix"),
                          (EngineTelemetry, "engine/telemetry"))]
        self.timer = node.create_timer(1.0 / rate_hz, self.tick)
        self.active = False

    def tick(self) -> None:
        import math

        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import Imu, NavSatFix, NavSatStatus

        from carbon_ai_msgs.msg import EngineTelemetry

        now = self.node.get_clock().now()
        stamp = now.to_msg()
        self.k += 1
        t = self.k * 0.01
        imu = Imu()
        imu.header.stamp = stamp
        imu.header.frame_id = "imu"
        imu.orientation.w = 1.0
        imu.linear_acceleration.x = 0.2 * math.sin(t)
        imu.linear_acceleration.z = 9.80665
        self.pubs[0].publish(imu)
        if not self.bare:
            odom = Odometry()
            odom.header.stamp = stamp
            odom.pose.pose.orientation.w = 1.0
            odom.twist.twist.linear.x = 10.0 + math.sin(t)
            self.pubs[1].publish(odom)
            if self.k % 10 == 0:  # GNSS and engine at a tenth of the rate, as on a vehicle
                fix = NavSatFix(latitude=-22.7 + 1e-7 * self.k, longitude=117.8, altitude=600.0)
                fix.header.stamp = stamp
                fix.status.status = NavSatStatus.STATUS_FIX
                fix.position_covariance = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 4.0]
                fix.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
                self.pubs[2].publish(fix)
                eng = EngineTelemetry(engine_speed_rpm=1400.0, engine_load_pct=50.0, fuel_rate_lph=20.0,
                                      coolant_temp_c=88.0, payload_kg=500.0, ambient_temp_c=20.0)
                eng.header.stamp = stamp
                self.pubs[3].publish(eng)
        if self.active:
            self.sent_s.append(now.nanoseconds * 1e-9)


def _latency_collector(node, msg_type, topic: str, feeder: _Feeder, samples: list[float],
                       accept=lambda m: True) -> None:
    import bisect

    from carbon_ai_nodes import qos
    from carbon_ai_nodes.conversions.time import to_seconds

    def on_msg(msg) -> None:
        if not feeder.active or not accept(msg):
            return
        t_recv = node.get_clock().now().nanoseconds * 1e-9
        published = to_seconds(msg.header.stamp)
        i = bisect.bisect_right(feeder.sent_s, published) - 1
        if i >= 0:
            samples.append((t_recv - feeder.sent_s[i]) * 1000.0)

    node.create_subscription(msg_type, topic, on_msg, qos.command())


def _spin_measure(probe, feeder: _Feeder, args: argparse.Namespace, ready, log) -> None:
    import time

    from carbon_ai_nodes.core.errors import CarbonAIError

    if not probe.spin_until(ready, 60.0):
        raise CarbonAIError("the chain produced no output within 60 s")
    probe.spin_for(args.warmup)
    feeder.active = True
    start = time.monotonic()
    while time.monotonic() - start < args.duration:
        probe.spin_for(min(1.0, args.duration - (time.monotonic() - start)))
    feeder.active = False
    log(f"  {len(feeder.sent_s)} sensor messages sent")


def _measure_bare(args: argparse.Namespace, log) -> list[float]:
    import subprocess

    from sensor_msgs.msg import Imu

    from carbon_ai_nodes.testing import Probe

    probe = Probe("bench_bare")
    feeder = _Feeder(probe.node, "/bare", args.rate, bare=True)
    samples: list[float] = []
    got = []
    _latency_collector(probe.node, Imu, "/bare/out", feeder, samples)
    probe.node.create_subscription(Imu, "/bare/out", got.append, 10)
    hops = [("/bare/in", "/bare/h1"), ("/bare/h1", "/bare/h2"), ("/bare/h2", "/bare/out")]
    procs = [subprocess.Popen([sys.executable, "-m", "carbon_ai_nodes.commands.bench", "relay", a, b])
             for a, b in hops]
    try:
        _spin_measure(probe, feeder, args, lambda: bool(got), log)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        probe.close()
    return samples


def _measure_pipeline(args: argparse.Namespace, run_dir, compose: bool, log) -> list[float]:
    from carbon_ai_msgs.msg import ActuatorCommand
    from carbon_ai_nodes.core.scenario import load_scenario
    from carbon_ai_nodes.runner import GraphRunner
    from carbon_ai_nodes.testing import Probe

    scenario = load_scenario("delivery_van_fleet")
    import dataclasses

    scenario = dataclasses.replace(scenario, vehicles=scenario.vehicles[:1])
    ns = f"/{scenario.vehicles[0].id}"
    probe = Probe("bench_pipeline")
    feeder = _Feeder(probe.node, ns, args.rate, bare=False)
    samples: list[float] = []
    got = []
    auto = ActuatorCommand.MODE_AUTO
    _latency_collector(probe.node, ActuatorCommand, f"{ns}/actuator_command", feeder, samples,
                       accept=lambda m: m.mode == auto)
    probe.node.create_subscription(ActuatorCommand, f"{ns}/actuator_command",
                                   lambda m: got.append(m) if m.mode == auto else None, 10)
    overrides = {"fusion": {"rate_hz": args.rate}, "actuator_bridge": {"control_rate_hz": 1.0}}
    runner = GraphRunner(scenario, run_dir, only=("fusion", "carbon_inference", "actuator_bridge"),
                         overrides=overrides, compose=compose, log=log)
    if runner.skipped:
        from carbon_ai_nodes.core.errors import CarbonAIError

        raise CarbonAIError(f"pipeline nodes not in this build: {', '.join(runner.skipped)}")
    try:
        runner.start()
        _spin_measure(probe, feeder, args, lambda: bool(got), log)
    finally:
        runner.stop()
        probe.close()
    return samples


def relay_main(topic_in: str, topic_out: str) -> int:
    """A bare rclpy relay hop: republish each Imu on receipt with a fresh stamp (the benchmark's baseline)."""
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from sensor_msgs.msg import Imu

    from carbon_ai_nodes import qos

    rclpy.init()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    node = rclpy.create_node("relay_" + topic_out.strip("/").replace("/", "_"))
    pub = node.create_publisher(Imu, topic_out, qos.command() if topic_out.endswith("out") else qos.sensor())

    def on_msg(msg: Imu) -> None:
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)

    node.create_subscription(Imu, topic_in, on_msg, qos.sensor())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "relay":
        sys.exit(relay_main(sys.argv[2], sys.argv[3]))
    sys.exit("usage: python -m carbon_ai_nodes.commands.bench relay IN OUT")
