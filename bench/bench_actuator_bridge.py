#!/usr/bin/env python3
"""Added latency of the actuator bridge: CarbonEstimate arrival -> ActuatorCommand publish, over real DDS.

Both the bridge and a bare baseline relay (subscribe CarbonEstimate, publish ActuatorCommand, nothing else)
run as their own processes; this process publishes estimates and times the command each one causes. The
bridge is run in AUTO with the CO2 tightening on, so every estimate maps to a distinct engine load limit and
the command it causes can be told apart from the fixed-rate stream. Prints p50/p99 of both and their ratio
(the machine is noisy: compare ratios), and writes a CDF plot.

    python bench/bench_actuator_bridge.py [--samples 500] [--rate-hz 50] [--plot log/bench/actuator_bridge.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CO2_LIMIT_G_S = 10.0  # load limit % = 100 * CO2_LIMIT / co2 while co2 > limit: encodes a sample id


def _relay_main() -> int:
    """The baseline: a plain rclpy node that turns each estimate into a command, with no checks at all."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from carbon_ai_msgs.msg import ActuatorCommand, CarbonEstimate
    from carbon_ai_nodes.ros import qos

    rclpy.init()
    node = rclpy.create_node("bare_relay")
    pub = node.create_publisher(ActuatorCommand, "actuator_command", qos.command())

    def relay(msg: CarbonEstimate) -> None:
        pub.publish(ActuatorCommand(engine_load_limit_pct=100.0 * CO2_LIMIT_G_S / msg.co2_rate_g_s))

    node.create_subscription(CarbonEstimate, "carbon_estimate", relay, qos.command())
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
    return 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def _measure(probe, ns: str, samples: int, rate_hz: float, label: str) -> list[float]:
    """Publish ``samples`` estimates at ``rate_hz``; return the latency of each resulting command (s)."""
    from carbon_ai_msgs.msg import ActuatorCommand, CarbonEstimate
    from carbon_ai_nodes.ros import qos

    received: list[tuple[float, float]] = []
    probe.node.create_subscription(ActuatorCommand, f"{ns}/actuator_command",
                                   lambda m: received.append((time.perf_counter(), m.engine_load_limit_pct)),
                                   qos.command(depth=100))
    pub = probe.publisher(CarbonEstimate, f"{ns}/carbon_estimate", qos.command())
    if not probe.wait_for_subscribers(pub, timeout_s=30):
        raise SystemExit(f"{label}: no subscriber on {ns}/carbon_estimate after 30 s")

    def send(load_pct: float) -> float:
        msg = CarbonEstimate(asset_id="bench", co2_rate_g_s=100.0 * CO2_LIMIT_G_S / load_pct)
        msg.header.stamp = probe.node.get_clock().now().to_msg()
        t0 = time.perf_counter()
        pub.publish(msg)
        return t0

    def got(load_pct: float, since: int) -> bool:
        return any(abs(v - load_pct) < 1e-6 for _, v in received[since:])

    # Warm-up: until the receiver answers (the bridge needs its healthy window first).
    warm_until = time.monotonic() + 30
    while True:
        mark = len(received)
        send(99.0)
        if probe.spin_until(lambda mark=mark: got(99.0, mark), 0.2):
            break
        if time.monotonic() > warm_until:
            raise SystemExit(f"{label}: no command answered an estimate within 30 s")

    latencies: list[float] = []
    period_s = 1.0 / rate_hz
    for i in range(samples):
        load_pct = 20.0 + (i % 70) + 0.25 * ((i // 70) % 4)  # consecutive samples always differ
        mark = len(received)
        t0 = send(load_pct)
        if probe.spin_until(lambda load_pct=load_pct, mark=mark: got(load_pct, mark), 5.0):
            rx = next(t for t, v in received[mark:] if abs(v - load_pct) < 1e-6)
            latencies.append(rx - t0)
        if (i + 1) % max(1, samples // 5) == 0:
            print(f"  {label}: {i + 1}/{samples}", flush=True)
        probe.spin_for(max(0.0, t0 + period_s - time.perf_counter()))  # pacing only
    lost = samples - len(latencies)
    if lost:
        print(f"  {label}: {lost} sample(s) got no command within 5 s", flush=True)
    return latencies


def _core_step_cost(steps: int = 20000) -> None:
    """In-process cost of the bridge's per-input work (validate, target, envelope step, message) vs building
    the bare message alone, in microseconds: the part of the added latency that is the bridge's own code."""
    from carbon_ai_msgs.msg import ActuatorCommand, CarbonEstimate
    from carbon_ai_nodes.actuation.actuation_targets import co2_tightened_load_pct
    from carbon_ai_nodes.actuation.ros import conversions as actuation
    from carbon_ai_nodes.actuation.safety_envelope import ActuatorBridgeParams, SafetyEnvelope, Setpoint

    params = ActuatorBridgeParams(required_inputs=("carbon_estimate",), healthy_window_s=0.0,
                                  co2_limit_g_s=CO2_LIMIT_G_S)
    env = SafetyEnvelope(params, 0.0)
    msg = CarbonEstimate(asset_id="bench", co2_rate_g_s=20.0)
    bridge_us, bare_us = [], []
    for i in range(steps):
        now_s = i * 0.01
        msg.co2_rate_g_s = 10.0 + (i % 50)
        t0 = time.perf_counter()
        _, co2 = actuation.co2_rate(msg, "bench")
        env.input_ok("carbon_estimate", now_s)
        load = co2_tightened_load_pct(100.0, co2, params.co2_limit_g_s, params.co2_min_load_pct)
        env.set_target(Setpoint(params.cruise_speed_limit_mps, load, 0.0))
        actuation.actuator_command(env.step(now_s), msg.header.stamp, "bench")
        t1 = time.perf_counter()
        ActuatorCommand(engine_load_limit_pct=100.0 * CO2_LIMIT_G_S / msg.co2_rate_g_s)
        t2 = time.perf_counter()
        bridge_us.append((t1 - t0) * 1e6)
        bare_us.append((t2 - t1) * 1e6)
    b50, b99 = _percentile(bridge_us, 50), _percentile(bridge_us, 99)
    r50, r99 = _percentile(bare_us, 50), _percentile(bare_us, 99)
    print(f"in-process per-input work ({steps} steps): bridge p50 {b50:.1f} us / p99 {b99:.1f} us; "
          f"bare message p50 {r50:.1f} us / p99 {r99:.1f} us; ratio p50 {b50 / r50:.1f}x", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--rate-hz", type=float, default=50.0)
    parser.add_argument("--plot", default="log/bench/actuator_bridge_latency.png")
    parser.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.relay:
        return _relay_main()

    from carbon_ai_nodes.graph.node_process import NodeProcess, isolated_ros_env

    os.environ.update(isolated_ros_env())
    import rclpy

    from carbon_ai_nodes.ros.probe import Probe

    bridge_params = {
        "asset_id": "bench", "required_inputs": ["carbon_estimate"], "co2_limit_g_s": CO2_LIMIT_G_S,
        "co2_min_load_pct": 1.0, "load_deadband_pct": 0.0, "load_slew_pct_per_s": 1e6,
        "healthy_window_s": 0.0, "publish_on_input": True, "control_rate_hz": 20.0,
        "carbon_estimate_timeout_s": 1.0,
    }
    print(f"actuator_bridge latency bench: {args.samples} estimates at {args.rate_hz:g} Hz "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {os.environ.get('RMW_IMPLEMENTATION')})",
          flush=True)
    _core_step_cost()
    rclpy.init()
    probe = Probe("bench")
    results: dict[str, list[float]] = {}
    relay = subprocess.Popen([sys.executable, __file__, "--relay", "--ros-args", "-r", "__ns:=/relay"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with NodeProcess("actuator_bridge", namespace="/bridge", params=bridge_params) as bridge:
            try:
                # Interleave so both see the same machine load.
                half = args.samples // 2
                for label, ns in (("baseline", "/relay"), ("bridge", "/bridge")) * 2:
                    results.setdefault(label, []).extend(_measure(probe, ns, half, args.rate_hz, label))
            except SystemExit:
                print(bridge.output, file=sys.stderr)
                raise
    finally:
        relay.terminate()
        relay.wait(timeout=10)
        probe.close()
        rclpy.try_shutdown()

    print(f"{'path':<10} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for label, values in results.items():
        print(f"{label:<10} {len(values):>5} {_percentile(values, 50) * 1e3:8.2f} {_percentile(values, 99) * 1e3:8.2f}")
    base, bridge_lat = results["baseline"], results["bridge"]
    print(f"ratio bridge/baseline: p50 {_percentile(bridge_lat, 50) / _percentile(base, 50):.2f}x, "
          f"p99 {_percentile(bridge_lat, 99) / _percentile(base, 99):.2f}x")
    print(f"added latency of the bridge: p50 {(_percentile(bridge_lat, 50) - _percentile(base, 50)) * 1e3:+.2f} ms, "
          f"p99 {(_percentile(bridge_lat, 99) - _percentile(base, 99)) * 1e3:+.2f} ms")
    if args.plot:
        _plot(results, Path(args.plot))
    return 0


def _plot(results: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in results.items():
        ordered = sorted(v * 1e3 for v in values)
        ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("estimate published -> command received (ms)")
    ax.set_ylabel("fraction of samples")
    ax.set_title("actuator_bridge latency vs a bare rclpy relay")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
