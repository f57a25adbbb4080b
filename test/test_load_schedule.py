"""Load scheduling core: every constraint holds, the schedule beats as-early-as-possible on a forecast with
a clear low-carbon window, and malformed jobs are refused naming the field."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import REPO

from carbon_ai_nodes.common.errors import ConfigError, SolverError
from carbon_ai_nodes.planning.grid_forecast import GridForecast
from carbon_ai_nodes.planning.load_schedule import (
    Asset,
    Job,
    ScheduleProblem,
    load_jobs_file,
    schedule_violations,
    solve_schedule,
)

# 24 hourly slots: dirty evening/morning, a clean midday window (solar) from 10:00 to 15:00.
CLEAN_WINDOW = [450.0] * 10 + [90.0] * 5 + [450.0] * 9


def factory_problem(**changes) -> ScheduleProblem:
    values = dict(
        assets=(Asset("charger", 100.0, ramp_kw_per_slot=60.0), Asset("compressor", 40.0)),
        jobs=(
            Job("ev", "charger", 240.0, 0.0, 24 * 3600.0),
            Job("ev2", "charger", 60.0, 2 * 3600.0, 20 * 3600.0, max_power_kw=30.0),
            Job("tank", "compressor", 80.0, 3600.0, 22 * 3600.0, max_power_kw=40.0, interruptible=False),
        ),
        intensity_g_per_kwh=CLEAN_WINDOW, slot_s=3600.0, site_power_cap_kw=120.0,
    )
    values.update(changes)
    return ScheduleProblem(**values)


def test_schedule_respects_every_constraint_and_beats_asap():
    p = factory_problem()
    r = solve_schedule(p)
    assert r.status == "optimal"
    assert schedule_violations(p, r) == []
    assert r.co2_kg < 0.6 * r.baseline_co2_kg, (r.co2_kg, r.baseline_co2_kg)
    # The non-interruptible job runs contiguously inside the clean window.
    tank = r.job_power_kw["tank"]
    on = np.nonzero(tank > 1e-6)[0]
    assert list(on) == list(range(on[0], on[0] + 2)) and all(10 <= t < 15 for t in on)
    # Ramp limit: the charger never steps more than 60 kW between slots (from 0 before slot 0).
    steps = np.abs(np.diff(np.concatenate([[0.0], r.asset_power_kw["charger"]])))
    assert steps.max() <= 60.0 + 1e-6


def test_site_cap_binds():
    p = factory_problem(site_power_cap_kw=50.0)
    r = solve_schedule(p)
    site = sum(r.asset_power_kw.values())
    assert site.max() <= 50.0 + 1e-6
    assert schedule_violations(p, r) == []


def test_violation_checker_catches_a_bad_schedule():
    p = factory_problem()
    r = solve_schedule(p)
    r.job_power_kw["ev"][0] += 5.0  # energy and window now off
    assert any("ev:" in v for v in schedule_violations(p, r))


def test_infeasible_caps_are_reported():
    # Both jobs need the only 10 kW asset for all of its single-slot window.
    p = ScheduleProblem((Asset("a", 10.0),), (Job("j1", "a", 10.0, 0, 3600), Job("j2", "a", 10.0, 0, 3600)),
                        [100.0, 100.0], 3600.0)
    r = solve_schedule(p)
    assert r.status == "infeasible" and r.message


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (Job("j", "a", -1.0, 0, 3600), "jobs[0].energy_kwh=-1.0"),
        (Job("j", "a", math.nan, 0, 3600), "jobs[0].energy_kwh=nan"),
        (Job("j", "nope", 1.0, 0, 3600), "jobs[0].asset_id='nope'"),
        (Job("j", "a", 1.0, 3600, 100), "jobs[0].deadline_s=100"),
        (Job("j", "a", 1.0, 0, 10 * 3600), "beyond the forecast horizon"),
        (Job("j", "a", 100.0, 0, 3600), "cannot be delivered"),
        (Job("j", "a", 5.0, 0, 7200, interruptible=False), "above its asset's ramp limit"),
    ],
)
def test_malformed_jobs_are_refused(job, message):
    with pytest.raises(SolverError) as info:
        ScheduleProblem((Asset("a", 10.0, ramp_kw_per_slot=5.0),), (job,), [100.0] * 3, 3600.0)
    assert message in str(info.value)


def test_example_jobs_file_against_the_example_forecast():
    assets, jobs = load_jobs_file(str(REPO / "config" / "planner_loads_example.yaml"))
    forecast = GridForecast.from_csv(REPO / "config" / "grid" / "forecast_example.csv")
    p = ScheduleProblem(tuple(assets), tuple(jobs), forecast.window(0, 3600, 24), 3600.0, 250.0)
    r = solve_schedule(p)
    assert schedule_violations(p, r) == []
    assert r.co2_kg < r.baseline_co2_kg


def test_bad_jobs_file_is_a_config_error(tmp_path):
    bad = tmp_path / "jobs.yaml"
    bad.write_text("assets: [{asset_id: a, max_power_kw: 10}]\njobs: [{job_id: j, asset_id: a}]\n")
    with pytest.raises(ConfigError, match="misses the key 'energy_kwh'"):
        load_jobs_file(str(bad))
    with pytest.raises(ConfigError, match="No such file"):
        load_jobs_file(str(tmp_path / "missing.yaml"))


def test_schedule_command_json_and_errors(tmp_path):
    import json
    import subprocess
    import sys

    def carbon_ai(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", *args], capture_output=True,
                              text=True, timeout=120)

    forecast = str(REPO / "config" / "grid" / "forecast_example.csv")
    png = tmp_path / "schedule.png"
    ok = carbon_ai("schedule", "--jobs", str(REPO / "config" / "planner_loads_example.yaml"), "--forecast",
                   forecast, "--site-cap-kw", "250", "--json", "--plot", str(png))
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["co2_kg"] < out["baseline_co2_kg"] and png.stat().st_size > 0
    bad = tmp_path / "jobs.yaml"
    bad.write_text("assets: [{asset_id: a, max_power_kw: 1}]\njobs: [{job_id: j, asset_id: a, energy_kwh: 500,"
                   " deadline_s: 3600}]\n")
    failed = carbon_ai("schedule", "--jobs", str(bad), "--forecast", forecast)
    assert failed.returncode == 1 and "cannot be delivered" in failed.stderr and "Traceback" not in failed.stderr
