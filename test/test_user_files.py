"""Every file a user gives is read with a one-line error for bad encoding or types (common/user_files.py)."""

from __future__ import annotations

import pytest
from conftest import REPO

from carbon_ai_nodes.carbon.emission_model import load_cycle
from carbon_ai_nodes.common.errors import CarbonAIError, ConfigError
from carbon_ai_nodes.common.user_files import load_yaml
from carbon_ai_nodes.common.vehicle_profile import load_profile
from carbon_ai_nodes.graph.scenario import load_scenario
from carbon_ai_nodes.planning.grid_forecast import GridForecast
from carbon_ai_nodes.planning.load_schedule import load_jobs_file
from carbon_ai_nodes.planning.vrplib_io import read_instance
from carbon_ai_nodes.sim.vehicle_sim import DriveTrace

# What `head -c 64 /dev/urandom` gives: not UTF-8 at byte 0, a NUL further on.
GARBAGE = bytes([0x8F, 0xFF, 0x00, 0x13]) + bytes(range(200, 256))
NUL_TEXT = b"time_s,speed_mps\n0,\x001\n"

LOADERS = {
    "scenario": load_scenario,
    "vehicle profile": load_profile,
    "drive cycle": load_cycle,
    "drive trace": DriveTrace.from_csv,
    "grid forecast": GridForecast.from_csv,
    "jobs file": load_jobs_file,
    "VRPLIB instance": read_instance,
}


@pytest.mark.parametrize("content", [GARBAGE, NUL_TEXT], ids=["not_utf8", "nul_byte"])
@pytest.mark.parametrize("kind", list(LOADERS))
def test_binary_garbage_is_a_one_line_error_naming_the_file(tmp_path, kind, content):
    path = tmp_path / ("f.txt" if kind == "VRPLIB instance" else "f.yaml")
    path.write_bytes(content)
    with pytest.raises(CarbonAIError) as info:  # was a UnicodeDecodeError traceback
        LOADERS[kind](str(path))
    message = str(info.value)
    assert str(path) in message and "not a text file" in message and "\n" not in message


def test_a_word_for_a_number_in_a_scenario_is_named(tmp_path):
    text = (REPO / "config" / "scenarios" / "haul_truck_fleet.yaml").read_text() + "\nduration_s: sixty\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"duration_s='sixty': must be a number$"):  # was a ValueError
        load_scenario(str(path))


def test_exponent_numbers_are_numbers(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: 1e12\nb: 1.5E-3\nc: -2e+2\nd: .5e1\ne: 1_000e3\nf: e12\ng: 1e\nh: 12\ni: 1.0\n")
    assert load_yaml(path, "test") == {"a": 1e12, "b": 1.5e-3, "c": -200.0, "d": 5.0, "e": 1e6, "f": "e12",
                                       "g": "1e", "h": 12, "i": 1.0}
    import yaml

    assert yaml.safe_load("a: 1e12") == {"a": "1e12"}  # PyYAML itself left as it was


def test_a_profile_mass_in_exponent_form_meets_the_range_check_not_the_type_check(tmp_path):
    text = (REPO / "config" / "vehicles" / "class8_truck.yaml").read_text()
    path = tmp_path / "v.yaml"
    path.write_text("\n".join("mass_kg: 1e4" if line.startswith("mass_kg:") else line
                              for line in text.splitlines()) + "\n")
    assert load_profile(path).mass_kg == 1e4  # was refused: "mass_kg='1e4': must be a number > 0"


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "j.yaml"
    path.write_text("assets: [unclosed\n  - x: {\n")
    with pytest.raises(ConfigError) as info:
        load_jobs_file(str(path))
    assert "not valid YAML" in str(info.value) and "\n" not in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"drive cycle .*nope.csv: cannot read \(No such file"):
        DriveTrace.from_csv(str(tmp_path / "nope.csv"))
