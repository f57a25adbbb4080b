#!/usr/bin/env python3
"""Latency of one CO2 estimate through each available backend, next to a bare ONNX Runtime session.run of
the same model measured in the same run (the machine is shared and noisy: read the ratios).

Rows:
  bare onnxruntime session.run  the floor: one [1, N_FEATURES] float32 input, nothing else; a plain
                                InferenceSession.run of the same file, default session options except
                                intra_op_num_threads=1 and inter_op_num_threads=1 (the backend's too)
  backend.run (<name>)          the adapter alone (batch API, one row)
  backend.run_one (<name>)      the adapter's single-row path the estimator uses, where it has one
                                (onnxruntime-cpu: preallocated input/output bound with IOBinding)
  estimate (<name>)             CarbonEstimator.estimate: validation, physics, features, OOD check, backend
  node path (<name>)            what the node does per VehicleState: message -> StateInput -> estimate ->
                                CarbonEstimate message (everything but DDS transport)
Usage: python bench/bench_inference.py [--n 5000] [--model PATH]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from carbon_ai_nodes.carbon.carbon_estimator import CarbonEstimator, StateInput
from carbon_ai_nodes.carbon.residual_backend import BACKENDS, load_backend
from carbon_ai_nodes.carbon.residual_features import INPUT_NAME, OUTPUT_NAME, feature_row
from carbon_ai_nodes.common.errors import ModelError
from carbon_ai_nodes.common.vehicle_profile import load_profile

REPO = Path(__file__).resolve().parents[1]


def measure(paths: list[tuple[str, object]], n: int) -> list[tuple[str, np.ndarray]]:
    """Time every path n times, round-robin, so load changes on the shared machine hit all paths alike."""
    for _, fn in paths:
        for _ in range(200):  # warm-up
            fn()
    out = np.empty((len(paths), n))
    clock = time.perf_counter_ns
    for i in range(n):
        if i and i % max(1, n // 10) == 0:
            print(f"  {100 * i // n} %", end="\r", file=sys.stderr, flush=True)
        for j, (_, fn) in enumerate(paths):
            t0 = clock()
            fn()
            out[j, i] = clock() - t0
    return [(label, out[j] / 1000.0) for j, (label, _) in enumerate(paths)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--model", default=str(REPO / "carbon_ai_nodes" / "carbon" / "models" / "co2_residual_v1.onnx"))
    args = ap.parse_args()

    import onnxruntime as ort

    profile = load_profile(REPO / "config" / "vehicles" / "example_sedan.yaml")
    state = StateInput("car1", 1.0, 14.0, 0.4, 0.02, math.nan)
    row = feature_row(profile, 14.0, 0.4, 0.02, math.nan)
    x = np.asarray([row], np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, sess_options=so, providers=["CPUExecutionProvider"])
    paths = [("bare onnxruntime session.run", lambda: sess.run([OUTPUT_NAME], {INPUT_NAME: x}))]

    node_path = None
    try:
        from carbon_ai_msgs.msg import VehicleState
        from carbon_ai_nodes.carbon.ros.conversions import carbon_estimate, new_carbon_estimate, state_input

        msg = VehicleState(asset_id="car1", speed_mps=14.0, accel_mps2=0.4, grade=0.02, payload_kg=math.nan,
                           engine_speed_rpm=math.nan, engine_load_pct=math.nan, coolant_temp_c=math.nan)
        msg.header.stamp.sec = 1
        out = new_carbon_estimate()

        def node_path(est):
            def run():
                t0 = time.perf_counter_ns()
                e = est.estimate(state_input(msg, 1.0))
                carbon_estimate(e, msg.header, (time.perf_counter_ns() - t0) // 1000, into=out)
            return run
    except ImportError:
        print("(carbon_ai_msgs not importable: node-path rows skipped; source env.sh)", file=sys.stderr)

    for name in BACKENDS:
        try:
            backend = load_backend(name, args.model)
        except ModelError as exc:
            print(f"{name:>22}: not available ({exc})")
            continue
        est = CarbonEstimator(profile, backend)
        if backend.name != "physics" and est.estimate(state).is_out_of_distribution:
            print(f"warning: the benchmark state is out of distribution for {name}: the model would not run")
        paths.append((f"backend.run ({name})", lambda b=backend: b.run(x)))
        if hasattr(backend, "run_one"):
            paths.append((f"backend.run_one ({name})", lambda b=backend: b.run_one(row)))
        paths.append((f"estimate ({name})", lambda e=est: e.estimate(state)))
        if node_path is not None:
            paths.append((f"node path ({name})", node_path(est)))

    rows = measure(paths, args.n)
    base50, base99 = np.percentile(rows[0][1], [50, 99])
    print(f"\n{'path':<40} {'p50 us':>9} {'p99 us':>9} {'p50 / bare':>11} {'p99 / bare':>11}   (n={args.n} each)")
    for label, t in rows:
        p50, p99 = np.percentile(t, [50, 99])
        print(f"{label:<40} {p50:9.1f} {p99:9.1f} {p50 / base50:11.2f} {p99 / base99:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
