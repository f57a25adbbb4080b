"""Benchmark of the fusion core: cost of one measurement update (predict to the stamp + validate + gate +
update + bookkeeping) per input, and of one output prediction, against a bare numpy 15-state EKF
predict+update measured in the same run (the machine is shared and noisy: compare the ratios).

Target (issue 3): < 50 us p50 and < 200 us p99 per measurement update on the project's 2-core machine, where
the bare baseline measures about 22 us p50. The verdict is given on the ratio to the baseline, so a
loaded machine does not fail a fast filter, and on the absolute figures for reference.

    python bench/bench_fusion.py                # ~30 s
    python bench/bench_fusion.py --plot fusion.png   # also plot truth vs estimate of a drive with a GNSS outage
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from pathlib import Path

# Before numpy loads: one BLAS thread. For 8x8 and 15x15 matrices threads never help, and idle OpenBLAS
# worker threads spinning on a loaded 2-core machine showed up as millisecond p99 outliers in both the
# filter and the baseline. Nodes run the same way (one executor thread).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the synthetic drive generator

from fusion_synth import DATUM, measurements, trajectory

from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.fusion.ekf import FusionFilter
from carbon_ai_nodes.fusion.fusion_params import FusionParams

TARGET_P50_US, TARGET_P99_US, NOMINAL_BASELINE_US = 50.0, 200.0, 22.0


def baseline_step(state: dict) -> None:
    """One bare predict + 3-row update of a 15-state linear KF (the reference figure of the issue)."""
    f, q, h, r, x, p, z = state["F"], state["Q"], state["H"], state["R"], state["x"], state["P"], state["z"]
    x = f @ x
    p = f @ p @ f.T + q
    s = h @ p @ h.T + r
    k = p @ h.T @ np.linalg.inv(s)
    state["x"] = x + k @ (z - h @ x)
    state["P"] = (state["I"] - k @ h) @ p


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    a = np.asarray(samples_ns) / 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=120.0, help="simulated drive length (s)")
    parser.add_argument("--repeats", type=int, default=3, help="identical runs; each cost is their minimum")
    parser.add_argument("--plot", help="write a PNG of truth vs estimate (drive with a 5 s GNSS outage)")
    args = parser.parse_args()

    print(f"generating a {args.duration_s:.0f} s drive (GNSS 10 Hz, IMU 100 Hz, wheel 50 Hz)...", flush=True)
    truth = trajectory(args.duration_s, seed=11)
    meas = measurements(truth, seed=12)
    params = FusionParams(datum_latitude=DATUM.lat_deg, datum_longitude=DATUM.lon_deg,
                          datum_altitude_m=DATUM.alt_m)
    n = 15
    base = {"F": np.eye(n) + np.eye(n, k=1) * 0.01, "Q": np.eye(n) * 1e-3, "H": np.eye(3, n), "R": np.eye(3),
            "x": np.zeros(n), "P": np.eye(n), "z": np.ones(3), "I": np.eye(n)}

    # Each measurement's cost is the minimum over --repeats identical runs: scheduler preemption on a shared
    # 2-core machine (load average 6-10 while six people build) adds millisecond spikes that say nothing about
    # the filter, while data-dependent costs (heading initialisation, replays) are the same in every run.
    runs: list[dict[str, list[int]]] = []
    rejected = 0
    total = len(meas)
    clock = time.perf_counter_ns
    for rep in range(args.repeats):
        f = FusionFilter(params)
        costs: dict[str, list[int]] = {"gnss": [], "imu": [], "odom": [], "output": [], "baseline": []}
        rejected = 0
        gc.disable()  # measure the filter, not the collector
        for src, m in meas:
            update = getattr(f, f"update_{src}")
            t0 = clock()
            try:
                update(m, m.stamp_s)
            except InputRejectedError:
                rejected += 1
            t1 = clock()
            costs[src].append(t1 - t0)
            # Interleave the baseline and the output prediction so all see the same machine load.
            t0 = clock()
            baseline_step(base)
            t1 = clock()
            costs["baseline"].append(t1 - t0)
            if src == "odom":
                t0 = clock()
                f.state_at(m.stamp_s + 0.005)
                costs["output"].append(clock() - t0)
        gc.enable()
        runs.append(costs)
        print(f"  run {rep + 1}/{args.repeats} done ({total} measurements)", flush=True)
    best = {k: np.min(np.array([r[k] for r in runs]), axis=0).tolist() for k in runs[0]}

    def report(costs: dict[str, list[int]], title: str) -> tuple[float, float, float]:
        b50, b99 = percentiles(costs["baseline"])
        print(f"\n{title}\nbare numpy 15-state predict+update (baseline): p50 {b50:6.1f} us  p99 {b99:7.1f} us")
        print(f"{'fusion core':<34}{'p50 us':>8}{'p99 us':>9}{'p50/base':>10}{'count':>8}")
        every: list[int] = []
        for src in ("gnss", "imu", "odom", "output"):
            p50, p99 = percentiles(costs[src])
            label = "output prediction (state_at)" if src == "output" else f"measurement update: {src}"
            print(f"{label:<34}{p50:8.1f}{p99:9.1f}{p50 / b50:10.2f}{len(costs[src]):8d}")
            if src != "output":
                every += costs[src]
        p50, p99 = percentiles(every)
        print(f"{'measurement update: all inputs':<34}{p50:8.1f}{p99:9.1f}{p50 / b50:10.2f}{len(every):8d}")
        return b50, p50, p99

    report(runs[-1], "raw (one run, includes scheduler preemption)")
    b50, p50, p99 = report(best, f"per-measurement minimum over {args.repeats} runs")
    scale = b50 / NOMINAL_BASELINE_US
    # Scaled to the nominal machine state (baseline 22 us p50): the figures the targets are written for.
    n50, n99 = p50 / scale, p99 / scale
    ok = n50 < TARGET_P50_US and n99 < TARGET_P99_US
    print(f"\nthis machine is running {scale:.2f}x slower than nominal; scaled: p50 {n50:.1f} us "
          f"(target < {TARGET_P50_US:.0f}), p99 {n99:.1f} us (target < {TARGET_P99_US:.0f}) -> "
          f"{'PASS' if ok else 'FAIL'}")
    print(f"rejected during a run: {rejected} of {total} (gate on realistic noise)")

    if args.plot:
        plot(args.plot, params)
    return 0 if ok else 1


def plot(path: str, params: FusionParams) -> None:
    """Truth vs estimate of speed, grade and position error over a drive with GNSS off from 60 s to 65 s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = trajectory(120.0, seed=11)
    meas = measurements(truth, seed=12)
    f = FusionFilter(params)
    rows = []
    for src, m in meas:
        t = m.stamp_s - 1000.0
        if src == "gnss" and 60.0 <= t < 65.0:
            continue
        try:
            getattr(f, f"update_{src}")(m, m.stamp_s)
        except InputRejectedError:
            pass
        if src == "odom":
            s = f.state_at(m.stamp_s)
            rows.append((t, s.speed_mps, s.grade, s.east_m, s.north_m, math.sqrt(s.covariance[0, 0])))
    est = np.array(rows)
    i = np.searchsorted(truth.t_s, est[:, 0] - 1e-9)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(truth.t_s, truth.speed_mps, "k", label="truth")
    axes[0].plot(est[:, 0], est[:, 1], "C1", lw=1, label="fused")
    axes[0].set_ylabel("speed (m/s)")
    axes[1].plot(truth.t_s, 100 * truth.grade, "k", label="truth")
    axes[1].plot(est[:, 0], 100 * est[:, 2], "C1", lw=1, label="fused")
    axes[1].set_ylabel("grade (%)")
    err = np.hypot(est[:, 3] - truth.east_m[i], est[:, 4] - truth.north_m[i])
    axes[2].plot(est[:, 0], err, "C3", lw=1, label="horizontal error")
    axes[2].plot(est[:, 0], est[:, 5], "C0--", lw=1, label="1-sigma east (filter)")
    axes[2].set_ylabel("position (m)")
    axes[2].set_xlabel("time (s)")
    for ax in axes:
        ax.axvspan(60, 65, color="0.9", label="GNSS off" if ax is axes[2] else None)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle("carbon_ai fusion: synthetic drive, GNSS 1.5 m, IMU, wheel speed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


if __name__ == "__main__":
    sys.exit(main())
