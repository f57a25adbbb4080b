#!/usr/bin/env python3
"""Leave-one-maker-out cross-validation of the physics model alone, each fold's constants refitted to
convergence: the quick way to compare a candidate physics term on the fitting makers only.

Every fold refits the shared engine constants (tools/train_residual.py's PHYSICS_FIT, plus any --fit
NAME:LOW:HIGH:STEP:START candidate) without one fitting maker, starting from the shipped constants, and
predicts that maker. The held-out makers (training/epa.TEST_MANUFACTURERS) are never loaded into a fit or
scored here. A few steps per fold are not enough to compare terms: on 2026-12-06 four steps per fold put a
candidate 0.2 points ahead on both tests; refitted to convergence it was 0.18 points behind on HWFE and level on
FTP-75 (docs/carbon_model.md).

  python tools/lomo_physics.py --epa ../shared/data/epa_2022_test_cars_a_to_l.csv --cycles ../shared/data/cycles
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_residual

from carbon_ai_nodes.carbon.emission_model import DEFAULT_CONSTANTS
from carbon_ai_nodes.carbon.training import epa


def candidate(spec: str) -> tuple[tuple[str, float, float, float], float]:
    """``NAME:LOW:HIGH:STEP:START`` -> (PHYSICS_FIT row, start value); raises ValueError naming the problem."""
    parts = spec.split(":")
    try:
        if len(parts) != 5 or not hasattr(DEFAULT_CONSTANTS, parts[0]):
            raise ValueError
        low, high, step, start = (float(p) for p in parts[1:])
    except ValueError:
        raise ValueError(f"--fit {spec!r}: expected NAME:LOW:HIGH:STEP:START, NAME an EmissionConstants field, "
                         "the others numbers") from None
    if not low <= start <= high or step <= 0:
        raise ValueError(f"--fit {spec!r}: need LOW <= START <= HIGH and STEP > 0")
    return (parts[0], low, high, step), start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epa", type=Path, required=True)
    ap.add_argument("--cycles", type=Path, required=True)
    ap.add_argument("--fit", action="append", default=[], help="candidate constant NAME:LOW:HIGH:STEP:START")
    ap.add_argument("--max-nfev", type=int, default=40, help="least-squares steps per fold (ftol stops earlier)")
    args = ap.parse_args(argv)
    try:
        extra = [candidate(s) for s in args.fit]
    except ValueError as exc:
        ap.error(str(exc))
    train_residual.PHYSICS_FIT = tuple(train_residual.PHYSICS_FIT) + tuple(row for row, _ in extra)
    start = dataclasses.replace(DEFAULT_CONSTANTS, **{row[0]: x0 for row, x0 in extra})
    train = [t for t in epa.load_tests(args.epa) if not epa.is_test_manufacturer(t)]
    meas = np.array([t.measured_g_per_mi for t in train])
    pred = np.empty(len(train))
    t0 = time.monotonic()
    makers = sorted({t.manufacturer for t in train})
    for i, maker in enumerate(makers):
        out = [j for j, t in enumerate(train) if t.manufacturer == maker]
        k = train_residual.fit_physics([t for t in train if t.manufacturer != maker], args.cycles, start,
                                       args.max_nfev, quiet=True)
        plans = epa.cycle_plans(args.cycles, k)
        pred[out] = [epa.physics_g_per_mi(train[j], plans[train[j].test], k)[0] for j in out]
        fitted = ", ".join(f"{row[0]}={getattr(k, row[0]):.4g}" for row, _ in extra)
        print(f"fold {i + 1}/{len(makers)} {maker} ({len(out)} tests): {epa.mape(pred[out], meas[out]):.2f} % "
              f"{fitted} [{time.monotonic() - t0:.0f} s]", flush=True)
    for test in ("HWFE", "FTP"):
        sel = np.array([t.test == test for t in train])
        picked = [t for t, s in zip(train, sel, strict=True) if s]
        print(f"leave-one-maker-out physics MAPE {test}: {epa.mape(pred[sel], meas[sel]):.2f} % per test "
              f"({sel.sum()}), {epa.mape_per_vehicle(picked, pred[sel]):.2f} % per vehicle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
