"""tools/lomo_physics.py: candidate physics constants are named and bounded, bad ones refused in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))

from lomo_physics import candidate


def test_candidate_gives_the_fit_row_and_its_start():
    row, start = candidate("cold_extra:0:0.5:0.05:0.2")
    assert row == ("cold_extra", 0.0, 0.5, 0.05) and start == 0.2


@pytest.mark.parametrize("spec", ["no_such_constant:0:1:0.1:0.5", "cold_extra:0:1:0.1", "cold_extra:0:1:0.1:2",
                                  "cold_extra:0:1:0:0.5", "cold_extra:a:1:0.1:0.5"])
def test_bad_candidates_are_refused(spec):
    with pytest.raises(ValueError):
        candidate(spec)


def test_cli_refuses_a_bad_candidate_with_one_line_naming_it(shared_data):
    r = subprocess.run([sys.executable, str(REPO / "tools" / "lomo_physics.py"), "--epa",
                        str(shared_data / "epa_2022_test_cars_a_to_l.csv"), "--cycles", str(shared_data / "cycles"),
                        "--fit", "cold_extra:0:1:0.1:2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--fit 'cold_extra:0:1:0.1:2'" in r.stderr.strip().splitlines()[-1]
