"""`carbon-ai plan` on public VRPLIB instances (vrplib parser, TSPLIB rounding), and clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

from carbon_ai_nodes.adapters.vrplib_io import read_instance

DATA = REPO / "test" / "data" / "vrplib"


def carbon_ai(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_instance_reading_rounds_euc_2d_and_finds_the_best_known_cost():
    inst = read_instance(DATA / "A-n32-k5.vrp")
    assert inst.best_known_cost == 784.0  # from the COMMENT line
    d = inst.problem.distance_m
    assert (d == d.round()).all()
    x = read_instance(DATA / "X-n106-k14.vrp")
    assert x.best_known_cost == 26362.0  # from the sibling .sol


def test_plan_json_is_feasible_and_close_to_optimal_on_a_n32_k5():
    result = carbon_ai("plan", "--vrplib", str(DATA / "A-n32-k5.vrp"), "--time-limit", "2", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"cost", "routes", "solve_time_s"} <= out.keys()
    customers = sorted(c for r in out["routes"] for c in r)
    assert customers == list(range(2, 33))  # ids as numbered in the file; depot 1 not listed
    demand = {i + 1: d for i, d in enumerate(
        [0, 19, 21, 6, 19, 7, 12, 16, 6, 16, 8, 14, 21, 16, 3, 22, 18, 19, 1, 24, 8, 12, 4, 8, 24, 24, 2, 20, 15, 2,
         14, 9])}
    assert all(sum(demand[c] for c in r) <= 100 for r in out["routes"])
    assert out["cost"] <= 784 * 1.03


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("NAME : bad\nTYPE : CVRP\nDIMENSION : 3\nEDGE_WEIGHT_TYPE : EUC_2D\nCAPACITY : 10\n"
         "NODE_COORD_SECTION\n1 0 0\n2 1 x\nEOF\n", "not a valid VRPLIB instance"),
        ("NAME : inf\nTYPE : CVRP\nDIMENSION : 3\nEDGE_WEIGHT_TYPE : EUC_2D\nCAPACITY : 10\nNODE_COORD_SECTION\n"
         "1 0 0\n2 1 1\n3 2 2\nDEMAND_SECTION\n1 0\n2 5\n3 50\nDEPOT_SECTION\n1\n-1\nEOF\n",
         "exceeds the largest vehicle capacity"),
    ],
    ids=["malformed", "infeasible"],
)
def test_bad_instances_fail_cleanly(tmp_path, content, message):
    path = tmp_path / "x.vrp"
    path.write_text(content)
    result = carbon_ai("plan", "--vrplib", str(path), "--time-limit", "0.5")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert message in result.stderr


def test_missing_file_and_bad_time_limit():
    assert "no such file" in carbon_ai("plan", "--vrplib", "/nonexistent.vrp").stderr
    result = carbon_ai("plan", "--vrplib", str(DATA / "A-n32-k5.vrp"), "--time-limit", "-1")
    assert result.returncode == 1 and "--time-limit=-1.0" in result.stderr
