"""The main job in one command: run a scenario closed-loop (simulated vehicles, the real node graph as
separate processes) twice from the same starting state, with carbon optimisation on and then off (the
scenario's ``baseline_params``), and write a report. It leads with each vehicle's CO2, fuel and saving *by its
independent plant* (NREL FASTSim re-driving the speed recorded from the wheel odometer, grade from the route;
sim/plant.py) beside carbon_ai's own model (the carbon_estimate it published) and the model's error; then the
simulator's meter per vehicle and in total, the saving, latency
per stage, the inference backend, eco_speed's full-lap prediction, and PNG plots (CO2 rate over time and
cumulative CO2 over distance for both runs; the planned routes coloured by CO2 per metre with their speed plan).

Each vehicle is compared over the distance it covered in both runs (sim/report.py), so both runs are judged
on the same stretch of route. Nodes missing from this build are skipped and named in the report; the plant and
the simulator's fuel meter (the plant's engine map) measure CO2 and fuel, so the numbers stay meaningful
whatever runs.
``--record`` also writes each run's topics to an MCAP file (mcap_recorder.py)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Protocol

from carbon_ai_nodes.commands import arg_types

Series2 = tuple[list[float], list[float]]  # (stamp s, value) per vehicle
Series3 = tuple[list[float], list[float], list[float]]  # (stamp s, value, value) per vehicle


class PlantTraces(Protocol):
    """What :func:`plant_plot` reads of a run: demo runs (_Recording) or carbon-ai run's trace recorder."""

    @property
    def label(self) -> str: ...

    @property
    def speed(self) -> Mapping[str, Series2]: ...  # t s, wheel speed m/s

    @property
    def estimate(self) -> Mapping[str, Series3]: ...  # t s, CO2 g/s, fuel L/h of carbon_ai's model

HELP = "run a scenario with and without carbon optimisation and write a report with plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``carbon-ai demo``."""
    parser.add_argument("--scenario", default="haul_truck_fleet", help="scenario name or YAML path")
    parser.add_argument("--duration", type=arg_types.positive_seconds, default=None, metavar="S",
                        help="recorded seconds per run (default: the scenario's duration_s)")
    parser.add_argument("--out", default="carbon_ai_demo", help="output directory (default ./carbon_ai_demo)")
    parser.add_argument("--vehicles", type=arg_types.non_negative_int, default=0, metavar="N",
                        help="simulate only the first N vehicles")
    parser.add_argument("--record", action="store_true",
                        help="also record each run's topics to <out>/run_<label>.mcap (replay in Foxglove)")
    parser.add_argument("--startup-timeout", type=arg_types.positive_seconds, default=60.0, metavar="S",
                        help="how long to wait for every simulator to publish")
    parser.add_argument("--sim-uplink", action="store_true",
                        help="send the simulated summaries to the configured MQTT broker (by default they are "
                             "queued in the output directory and sent nowhere, never mixed with a vehicle's own)")


def run(args: argparse.Namespace) -> int:
    """Run both passes, then write report.md, report.json and the PNGs; prints where they are."""
    import dataclasses
    import json
    import os
    from pathlib import Path

    from carbon_ai_nodes.common.errors import ConfigError
    from carbon_ai_nodes.graph.node_process import isolated_ros_env
    from carbon_ai_nodes.graph.scenario import load_scenario
    from carbon_ai_nodes.graph.stop_signals import init_rclpy
    from carbon_ai_nodes.sim import report

    scenario = load_scenario(args.scenario)
    if args.duration is None:
        args.duration = scenario.duration_s
    if not args.duration > 0:
        raise ConfigError(f"--duration={args.duration}: must be > 0")
    if args.vehicles > 0:
        scenario = dataclasses.replace(scenario, vehicles=scenario.vehicles[: args.vehicles])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # a domain of our own: the demo must not hear (or disturb) other graphs on this machine
    if "CARBON_AI_KEEP_DOMAIN" not in os.environ:
        os.environ.update(isolated_ros_env())
    import rclpy

    init_rclpy()  # without rclpy's signal handlers: SIGTERM stops the demo as Ctrl-C does (stop_signals.py)
    try:
        recordings: list[_Recording] = []
        for label, baseline in (("optimised", False), ("baseline", True)):
            print(f"== run {len(recordings) + 1}/2: carbon optimisation {'off' if baseline else 'on'} "
                  f"({scenario.name}, {len(scenario.vehicles)} vehicles, {args.duration:.0f} s)", flush=True)
            recordings.append(_record(scenario, out / f"run_{label}", baseline, args.duration,
                                      args.startup_timeout, label,
                                      out / f"run_{label}.mcap" if args.record else None, args.sim_uplink))
    finally:
        rclpy.try_shutdown()
    # each vehicle is compared over the distance it covered in both runs (same stretch of route)
    common = {v.id: report.common_distance_m(*(rec.speed[v.id] for rec in recordings)) for v in scenario.vehicles}
    runs = [rec.result(common) for rec in recordings]
    print("== scoring the recorded traces with each vehicle's plant (FASTSim)", flush=True)
    scores = [rec.plant_scores(scenario, common) for rec in recordings]
    traces = report.write_plant_traces(out, [rec.label for rec in recordings], scores)
    predicted = recordings[0].predicted
    latency = {}
    for stage in ("vehicle_state", "carbon_estimate", "actuator_command"):
        latency[stage] = report.percentiles_ms(recordings[0].ages_ms.get(stage, []))
    latency["inference (carbon_estimate.inference_latency_us)"] = report.percentiles_ms(recordings[0].inference_ms)
    backends = sorted(recordings[0].backends)
    tracks = recordings[0].calibration_tracks()
    window_s = min(60.0, max(5.0, args.duration / 4))  # a minute, as /diagnostics' error; shorter for short runs
    calibration = {v: t.summary(window_s) for v, t in tracks.items()}
    plots = (_plots(scenario, recordings, out) + plant_plot(scenario.name, recordings, scores, out)
             + calibration_plot(scenario.name, tracks, window_s, out))
    missing = recordings[0].skipped
    notes = ["Plant figures: NREL FASTSim re-drove each vehicle's recorded wheel-odometer speed (1 s means) with the "
             "route's grade, over the same distance as the other columns (plant files and why each: "
             "config/plants/README.md). Model figures: carbon_ai's own carbon_estimate, integrated. The simulator's "
             "fuel meter (sim/true_emission, the tables below the plant's) runs the plant file's engine map live "
             "on the simulated road load; vehicles without a plant use carbon_ai's emission model there. "
             "Distance from wheel odometry. "
             "Both runs start from the same state; each vehicle's totals are cut where it has driven the distance "
             "it covered in both runs, so both runs are compared over the same stretch of route (the time "
             "column shows how long each took). A short window covers only part of a duty cycle: the saving "
             "depends on which part, so read it with the full-loop prediction below."]
    if predicted:
        notes.append("Full-loop prediction of the eco_speed node (emission model, one lap of each route):")
        notes += [f"- {v}: {p['baseline_co2_kg']:.2f} kg -> {p['expected_co2_kg']:.2f} kg CO2 per lap "
                  f"({report.saving_pct(p['baseline_co2_kg'], p['expected_co2_kg']):.1f} % less), lap time "
                  f"{p['baseline_duration_s']:.0f} -> {p['expected_duration_s']:.0f} s"
                  for v, p in sorted(predicted.items())]
    if calibration:
        notes.append(f"Self-calibrating model at the end of the optimised run (calibrated_estimate; CO2 error "
                     f"against the simulator's fuel meter over the last {window_s:.0f} s; calibration.png):")
        notes += [f"- {v}: mass {c['mass_kg'] / 1000:.1f} t ± {c['mass_sigma_kg'] / 1000:.1f} t (simulator "
                  f"{c['true_mass_kg'] / 1000:.1f} t, {c['mass_error_pct']:+.1f} %); CO2 error calibrated "
                  f"{c['calibrated_error_pct']:.1f} %, generic {c['generic_error_pct']:.1f} %"
                  for v, c in sorted(calibration.items())]
    (out / "report.md").write_text(report.markdown(scenario.name, runs, latency, backends, missing, plots, notes,
                                                   scores))
    (out / "report.json").write_text(json.dumps(report.json_safe({
        "scenario": scenario.name, "duration_s": args.duration, "runs": [report.run_dict(r) for r in runs],
        "saving_pct_per_km": report.saving_pct(runs[1].co2_g_per_km, runs[0].co2_g_per_km),
        "compared_distance_m": common, "predicted_full_loop": predicted,
        "latency_ms": latency, "backends": backends, "missing_nodes": missing, "plots": plots,
        "calibration": calibration,
        "plant": {"runs": {rec.label: [s.as_dict() for s in run] for rec, run in zip(recordings, scores, strict=True)},
                  "traces": traces,
                  "saving_pct_by_plant": report.plant_saving_pct(scores[0], scores[1], "plant"),
                  "saving_pct_by_model": report.plant_saving_pct(scores[0], scores[1], "model")},
    }), indent=2, allow_nan=False))
    for o, b in zip(*scores, strict=True):
        print(report.plant_line(o, b))
    print(f"optimised {runs[0].co2_g_per_km:.1f} g/km, baseline {runs[1].co2_g_per_km:.1f} g/km, saving "
          f"{report.saving_pct(runs[1].co2_g_per_km, runs[0].co2_g_per_km):.1f} %")
    if missing:
        print(f"not in this build (skipped): {', '.join(missing)}")
    print(f"report: {out / 'report.md'}")
    return 0


class _Recording:
    """What one run recorded, per vehicle."""

    def __init__(self, label: str, vehicles: list[str]) -> None:
        self.label = label
        self.truth: dict[str, Series3] = {v: ([], [], []) for v in vehicles}  # t, co2_g_s, fuel_lph
        # t, co2_g_s, fuel_lph of carbon_ai's own model
        self.estimate: dict[str, Series3] = {v: ([], [], []) for v in vehicles}
        self.speed: dict[str, Series2] = {v: ([], []) for v in vehicles}  # t, speed
        self.track: dict[str, Series3] = {v: ([], [], []) for v in vehicles}  # lat, lon, co2 at the time
        self.ages_ms: dict[str, list[float]] = {}
        self.inference_ms: list[float] = []
        self.backends: set[str] = set()
        self.modes: dict[str, list[int]] = {v: [] for v in vehicles}
        self.skipped: list[str] = []
        self.predicted: dict[str, dict[str, float]] = {}  # eco_speed's full-loop prediction per vehicle
        # calibrated_estimate per vehicle: t, mass, mass sigma, true mass, calibrated / generic / meter CO2 g/s
        self.calibration: dict[str, list[tuple[float, ...]]] = {v: [] for v in vehicles}
        self.t0 = 0.0

    def calibration_tracks(self):
        """Each vehicle's calibrated_estimate stream as a report.CalibrationTrack (vehicles without one left out)."""
        import numpy as np

        from carbon_ai_nodes.sim import report

        return {v: report.CalibrationTrack(*np.asarray(rows, float).T) for v, rows in self.calibration.items()
                if rows}

    def result(self, until_distance_m: dict[str, float]):
        from carbon_ai_nodes.sim import report

        return report.RunResult(self.label, tuple(
            report.vehicle_result(v, t, co2, fuel, *self.speed[v], until_distance_m=until_distance_m[v])
            for v, (t, co2, fuel) in self.truth.items()))

    def plant_scores(self, scenario, until_distance_m: dict[str, float]):
        """Each vehicle's recorded speed scored by its plant, beside carbon_ai's estimate over the same distance."""
        from carbon_ai_nodes.sim import report

        return report.score_fleet(scenario, self.speed, self.estimate, self.truth, until_distance_m)


def _record(scenario, run_dir, baseline: bool, duration_s: float, startup_timeout_s: float,
            label: str, mcap_path=None, sim_uplink: bool = False) -> _Recording:
    import math
    import time

    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import NavSatFix

    from carbon_ai_msgs.msg import ActuatorCommand, CalibratedEstimate, CarbonEstimate, RoutePlan, VehicleState
    from carbon_ai_nodes.common.errors import CarbonAIError
    from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
    from carbon_ai_nodes.graph.runner import GraphRunner
    from carbon_ai_nodes.ros import qos
    from carbon_ai_nodes.ros.probe import Probe
    from carbon_ai_nodes.ros.stamps import to_seconds

    vehicles = [v.id for v in scenario.vehicles]
    rec = _Recording(label, vehicles)
    # the simulator's mass is the profile's plus its payload (vehicle_sim.py)
    profile_mass_kg = {v.id: VehicleProfile.from_mapping(v.profile).mass_kg for v in scenario.vehicles}
    payload = {v: math.nan for v in vehicles}
    probe = Probe("demo")
    clock = probe.node.get_clock()

    def now_s() -> float:
        return clock.now().nanoseconds * 1e-9

    recording = [False]

    def age(stage: str, msg) -> None:
        if recording[0]:
            rec.ages_ms.setdefault(stage, []).append((now_s() - to_seconds(msg.header.stamp)) * 1000.0)

    for v in vehicles:
        def on_truth(msg, v=v) -> None:
            if recording[0]:
                t = to_seconds(msg.header.stamp) - rec.t0
                rec.truth[v][0].append(t)
                rec.truth[v][1].append(msg.co2_rate_g_s)
                rec.truth[v][2].append(msg.fuel_rate_lph)

        def on_odom(msg, v=v) -> None:
            if recording[0] and math.isfinite(msg.twist.twist.linear.x):
                rec.speed[v][0].append(to_seconds(msg.header.stamp) - rec.t0)
                rec.speed[v][1].append(msg.twist.twist.linear.x)

        def on_fix(msg, v=v) -> None:
            if recording[0] and math.isfinite(msg.latitude):
                co2 = rec.truth[v][1][-1] if rec.truth[v][1] else math.nan
                rec.track[v][0].append(msg.latitude)
                rec.track[v][1].append(msg.longitude)
                rec.track[v][2].append(co2)

        def on_estimate(msg, v=v) -> None:
            age("carbon_estimate", msg)
            if recording[0]:
                rec.backends.add(msg.backend)
                rec.inference_ms.append(msg.inference_latency_us / 1000.0)
                rec.estimate[v][0].append(to_seconds(msg.header.stamp) - rec.t0)
                rec.estimate[v][1].append(msg.co2_rate_g_s)
                rec.estimate[v][2].append(msg.fuel_rate_lph)

        def on_calibrated(msg, v=v, empty_kg=profile_mass_kg[v]) -> None:
            if recording[0]:
                payload_kg = payload[v] if math.isfinite(payload[v]) else 0.0
                rec.calibration[v].append((to_seconds(msg.header.stamp) - rec.t0, msg.mass_kg, msg.mass_sigma_kg,
                                           empty_kg + payload_kg, msg.co2_rate_g_s, msg.generic_co2_rate_g_s,
                                           msg.measured_co2_rate_g_s))

        def on_state(msg, v=v) -> None:
            age("vehicle_state", msg)
            payload[v] = msg.payload_kg  # the simulator's payload channel is its true payload

        def on_command(msg, v=v) -> None:
            age("actuator_command", msg)
            if recording[0]:
                rec.modes[v].append(msg.mode)

        def on_plan(msg, v=v) -> None:
            if msg.objective == RoutePlan.OBJECTIVE_CO2 and msg.routes:
                rec.predicted[v] = {"expected_co2_kg": msg.expected_co2_kg, "baseline_co2_kg": msg.baseline_co2_kg,
                                    "expected_duration_s": msg.expected_duration_s,
                                    "baseline_duration_s": _baseline_duration(msg),
                                    "lap_distance_m": msg.expected_distance_m}

        n = probe.node
        n.create_subscription(RoutePlan, f"/{v}/route_plan", on_plan, qos.latched())
        n.create_subscription(CarbonEstimate, f"/{v}/sim/true_emission", on_truth, qos.command())
        n.create_subscription(Odometry, f"/{v}/odom/wheel", on_odom, qos.sensor())
        n.create_subscription(NavSatFix, f"/{v}/gnss/fix", on_fix, qos.sensor())
        n.create_subscription(VehicleState, f"/{v}/vehicle_state", on_state, qos.command())
        n.create_subscription(CalibratedEstimate, f"/{v}/calibrated_estimate", on_calibrated, qos.command())
        n.create_subscription(CarbonEstimate, f"/{v}/carbon_estimate", on_estimate, qos.command())
        n.create_subscription(ActuatorCommand, f"/{v}/actuator_command", on_command, qos.command())

    # the simulators wait unconfigured and are started together once the graph is up, so both runs drive the
    # same part of the routes in the recorded window
    runner = GraphRunner(scenario, run_dir, baseline=baseline, overrides={"sim": {"autostart": False}},
                         log=lambda s: print(f"   {s}", flush=True), sim_uplink=sim_uplink)
    rec.skipped = runner.skipped
    recorder = None
    if mcap_path is not None:
        from carbon_ai_nodes.graph.ros.mcap_recorder import McapRecorder

        recorder = McapRecorder(mcap_path)
        probe.executor.add_node(recorder.node)  # spun with the probe: one thread, no locking surprises
    try:
        runner.start()
        sims = [f"/{v}/sim" for v in vehicles]
        topics = [f"/{v}/sim/true_emission" for v in vehicles]
        for transition in ("configure", "activate"):
            _change_state_all(probe, sims, transition, startup_timeout_s)
            if transition == "configure":
                if not probe.spin_until(lambda: all(probe.node.count_subscribers(t) + probe.node.count_publishers(t)
                                                    >= 2 for t in topics), startup_timeout_s):
                    raise CarbonAIError(f"simulator outputs not discovered within {startup_timeout_s:.0f} s")
                # the rest of the graph gets a moment to come up (first inputs) before the vehicles move
                probe.spin_until(lambda: False, min(3.0, duration_s / 4))
            else:
                rec.t0 = now_s()
                recording[0] = True
        start = time.monotonic()
        next_progress = start
        while (elapsed := time.monotonic() - start) < duration_s:
            probe.spin_until(lambda: False, min(0.5, duration_s - elapsed))
            runner.poll()
            if time.monotonic() >= next_progress:
                next_progress += 5.0
                co2 = sum(report_sum(rec.truth[v]) for v in vehicles)
                print(f"   [{elapsed:4.0f}/{duration_s:.0f} s] {len(runner.alive())} processes, "
                      f"CO2 so far {co2 / 1000:.2f} kg", flush=True)
        recording[0] = False
    finally:
        runner.stop()
        if recorder is not None:
            probe.spin_until(lambda: False, 0.5)  # the bridges' safe-state commands reach the file
            probe.executor.remove_node(recorder.node)
            recorder.close()
            print(f"   recorded {recorder.message_count} messages on {len(recorder.counts)} topics to "
                  f"{recorder.path}", flush=True)
        probe.close()
    return rec


def plant_plot(name: str, recordings: Sequence[PlantTraces], scores, out) -> list[str]:
    """plant_vs_model.png: cumulative CO2 over distance by the plant (solid) and by the model (dashed) per
    vehicle and run, and (two runs) the saving per vehicle by each. ``recordings`` need ``label``, ``speed`` and
    ``estimate`` per vehicle (demo runs, or carbon-ai run's trace recorder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from carbon_ai_nodes.sim import report

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for rec, run, alpha in zip(recordings, scores, (1.0, 0.55), strict=False):
        for k, s in enumerate(run):
            colour = f"C{k}"
            if s.plant is not None and not s.not_scored:
                _, dist_m, co2_g = s.plant.series
                ax.plot(dist_m / 1000.0, co2_g / 1000.0, "-", color=colour, alpha=alpha, lw=1.6,
                        label=f"{s.vehicle_id} {rec.label}: plant")
            t, co2, _ = rec.estimate[s.vehicle_id]
            st, dist = report.distance_profile(*rec.speed[s.vehicle_id])
            if len(t) >= 2 and len(st) >= 2:
                tt = np.asarray(t, float)
                driven = np.interp(tt, st, dist)
                keep = driven <= s.model.distance_km * 1000.0 + 1e-6
                ax.plot(driven[keep] / 1000.0, report.cumulative(tt, co2)[keep] / 1000.0, "--", color=colour,
                        alpha=alpha, lw=1.2, label=f"{s.vehicle_id} {rec.label}: model")
    ax.set_xlabel("distance driven (km)")
    ax.set_ylabel("cumulative CO2 (kg)")
    ax.set_title("plant (solid) vs carbon_ai's model (dashed); baseline run paler")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if len(scores) == 2:
        ids = [s.vehicle_id for s in scores[0]]
        by_plant = [report.plant_saving_pct([o], [b], "plant") for o, b in zip(*scores, strict=True)]
        by_model = [report.saving_pct(b.model.co2_g_per_km, o.model.co2_g_per_km)
                    for o, b in zip(*scores, strict=True)]
        x = np.arange(len(ids))
        ax2.bar(x - 0.2, np.nan_to_num(by_plant), 0.4, label="by the plant (FASTSim)")
        ax2.bar(x + 0.2, np.nan_to_num(by_model), 0.4, label="by carbon_ai's model")
        for i, (p, o, b) in enumerate(zip(by_plant, *scores, strict=True)):
            if not np.isfinite(p):
                why = ("not scored" if o.not_scored or b.not_scored
                       else "plant error" if any(s.status.startswith("error") for s in (o, b)) else "no plant")
                ax2.annotate(why, (x[i] - 0.2, 0.0), ha="center", va="bottom", fontsize=7)
        ax2.axhline(0.0, color="k", lw=0.8)
        ax2.set_xticks(x, ids)
        ax2.set_ylabel("CO2 saving per km, optimised vs baseline (%)")
        ax2.set_title("saving over the same distance")
        ax2.grid(alpha=0.3, axis="y")
        ax2.legend(fontsize=8)
    fig.suptitle(f"{name}: CO2 by the independent plant and by carbon_ai's model")
    return [_save_png(fig, out / "plant_vs_model.png")]


def calibration_plot(name: str, tracks, window_s: float, out) -> list[str]:
    """calibration.png: per vehicle, the calibrated mass (±1 sigma) against the simulator's, and the CO2 error of
    the calibrated and the generic model against the fuel meter over the last ``window_s``; [] without tracks."""
    if not tracks:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(tracks), figsize=(5.5 * len(tracks), 7), squeeze=False)
    for col, (v, tr) in enumerate(sorted(tracks.items())):
        ax, ax2 = axes[0][col], axes[1][col]
        ax.plot(tr.t_s, tr.mass_kg / 1000.0, color="tab:blue", label="calibrated mass")
        ax.fill_between(tr.t_s, (tr.mass_kg - tr.mass_sigma_kg) / 1000.0, (tr.mass_kg + tr.mass_sigma_kg) / 1000.0,
                        color="tab:blue", alpha=0.2, label="±1 σ")
        ax.plot(tr.t_s, tr.true_mass_kg / 1000.0, "k--", label="simulator's mass")
        ax.set_title(v)
        ax.set_ylabel("mass (t)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        for which, colour in (("calibrated", "tab:blue"), ("generic", "tab:red")):
            ax2.plot(tr.t_s, tr.window_error_pct(which, window_s), color=colour, label=f"{which} model")
        ax2.set_xlabel("time since the vehicles started (s)")
        ax2.set_ylabel(f"CO2 error vs fuel meter, last {window_s:.0f} s (%)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.suptitle(f"{name}: the self-calibrating model converging (optimised run)")
    return [_save_png(fig, out / "calibration.png")]


def _save_png(fig, path) -> str:
    """Lay out ``fig``, write it to ``path`` (PNG, 110 dpi) and release it; returns the file name for the report."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _baseline_duration(msg) -> float:
    """Lap time (s) without speed advice: eco_speed states it in its status message (RoutePlan has no field)."""
    import re

    m = re.search(r"baseline lap ([0-9.]+) s", msg.status_message)
    return float(m.group(1)) if m else float("nan")


def _change_state_all(probe, nodes: list[str], transition: str, timeout_s: float) -> None:
    """Request ``transition`` of every node in ``nodes`` through its lifecycle service, concurrently."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    from carbon_ai_nodes.common.errors import CarbonAIError

    ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE}
    futures = []
    for node in nodes:
        client = probe.node.create_client(ChangeState, f"{node}/change_state")
        if not probe.spin_until(client.service_is_ready, timeout_s):
            raise CarbonAIError(f"{node}: lifecycle service not available within {timeout_s:.0f} s")
        futures.append((node, client.call_async(ChangeState.Request(transition=Transition(id=ids[transition])))))
    if not probe.spin_until(lambda: all(f.done() for _, f in futures), timeout_s):
        raise CarbonAIError(f"{transition} of the simulators not answered within {timeout_s:.0f} s")
    for node, f in futures:
        if not f.result().success:
            raise CarbonAIError(f"{node}: {transition} failed (see its log)")


def report_sum(series: tuple[list[float], list[float], list[float]]) -> float:
    """CO2 (g) of a truth series so far."""
    from carbon_ai_nodes.sim.report import integrate

    return integrate(series[0], series[1])


def _plots(scenario, recordings: list[_Recording], out) -> list[str]:
    """co2_rate.png (fleet CO2 rate over time, both runs) and routes.png (routes coloured by CO2 per metre)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
    from carbon_ai_nodes.sim import report
    from carbon_ai_nodes.sim.report import distance_profile
    from carbon_ai_nodes.sim.vehicle_sim import Route

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for rec, style in zip(recordings, ("-", "--"), strict=True):
        for k, (v, (t, co2, _)) in enumerate(rec.truth.items()):
            colour = colours[k % len(colours)]
            ax.plot(t, co2, style, color=colour, lw=1.2, label=f"{v} ({rec.label})")
            # cumulative CO2 against the distance driven: the like-for-like view of the two runs
            st, dist = distance_profile(*rec.speed[v])
            if len(t) >= 2 and len(st) >= 2:
                tt = np.asarray(t, float)
                ax2.plot(np.interp(tt, st, dist) / 1000.0, report.cumulative(tt, co2) / 1000.0, style, color=colour,
                         lw=1.2, label=f"{v} ({rec.label})")
    ax.set_xlabel("time since the vehicles started (s)")
    ax.set_ylabel("CO2 rate (g/s)")
    ax.set_title("CO2 rate: optimised (solid) vs baseline (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax2.set_xlabel("distance driven (km)")
    ax2.set_ylabel("cumulative CO2 (kg)")
    ax2.set_title("CO2 over the same stretch of route")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, ncol=2)
    fig.suptitle(f"{scenario.name}: carbon optimisation on vs off")
    _save_png(fig, out / "co2_rate.png")

    from matplotlib.collections import LineCollection

    from carbon_ai_nodes.planning.eco_speed import eco_profile

    # the plan as the eco_speed node makes it (same core, same inputs): CO2 per metre along each route with the
    # payload carried, and the speed caps it sets; vehicles on a drive cycle have no route to draw
    routed = [v for v in scenario.vehicles if v.route]
    eco_node = next((n for n in scenario.nodes if n.name == "eco_speed"), None)
    plans = {}
    for v in routed:
        params = dict(eco_node.params) if eco_node else {}
        plans[v.id] = eco_profile(VehicleProfile.from_mapping(v.profile), Route.from_list(v.route, v.cruise_speed_mps),
                                  initial_payload_kg=v.initial_payload_kg,
                                  dwell_s=float(params.get("dwell_s", 8.0)))
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 8.5), gridspec_kw={"height_ratios": [3, 2]})
    costs = [c for ep in plans.values() for c in ep.co2_g_per_m if math.isfinite(c)]
    norm = plt.Normalize(min(costs), max(costs)) if costs else None
    for k, (vid, ep) in enumerate(plans.items()):
        pts = ep.points
        # lanes of one road lie a few metres apart: offset each vehicle a little so both stay visible
        dy = 4.0 * k
        segs = [((pts.east_m[i - 1], pts.north_m[i - 1] + dy), (pts.east_m[i], pts.north_m[i] + dy))
                for i in range(1, len(pts.s_m))]
        lc = LineCollection(segs, array=np.nan_to_num(ep.co2_g_per_m[1:]), cmap="plasma", norm=norm, linewidths=4)
        ax.add_collection(lc)
        stops = pts.is_stop[:-1]
        ax.plot(pts.east_m[:-1][stops], pts.north_m[:-1][stops] + dy, "o", ms=7, mfc="none", color="k")
        cruise = np.where(pts.is_stop, 0.0, pts.cruise_mps)
        ax2.plot(pts.s_m, cruise, "--", color=f"C{k}", lw=1.2, label=f"{vid}: cruise (optimisation off)")
        ax2.plot(pts.s_m, ep.speed_cap_mps, "-", color=f"C{k}", lw=1.6,
                 label=f"{vid}: eco caps ({ep.predicted_saving_pct:.1f} % less CO2 per lap predicted)")
    if costs:
        fig.colorbar(lc, ax=ax, label="planned CO2 (g/m) with the payload carried")
    lat0, lon0, _ = scenario.origin
    for v, (lat, lon, _) in recordings[0].track.items():
        if lat:
            east = (np.asarray(lon) - lon0) * math.radians(1) * 6_378_137.0 * math.cos(math.radians(lat0))
            north = (np.asarray(lat) - lat0) * math.radians(1) * 6_378_137.0
            ax.plot(east, north, ".", ms=2, alpha=0.5, label=f"{v} GNSS fixes (optimised run)")
    ax.autoscale()
    ax.margins(0.05, 0.15)
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m, not to the east scale)")
    ax.set_title(f"{scenario.name}: planned routes coloured by CO2 per metre (circles: load/dump stops)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    ax2.set_xlabel("distance along the route from its first waypoint (m)")
    ax2.set_ylabel("speed cap (m/s)")
    ax2.set_title("speed plan along the route")
    ax2.grid(alpha=0.3)
    if plans:
        ax2.legend(fontsize=8, loc="center")
    return ["co2_rate.png", _save_png(fig, out / "routes.png")]
