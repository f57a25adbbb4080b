"""Command-line input that must be refused: a one-line error and a non-zero exit, before anything runs."""

from __future__ import annotations

import pytest
from conftest import REPO

from carbon_ai_nodes.cli import build_parser, main

VRP = REPO / "test" / "data" / "vrplib" / "A-n32-k5.vrp"


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "haul_truck_fleet", "--duration", "0"], "argument --duration: 0 s: must be > 0"),
    (["run", "haul_truck_fleet", "--duration", "-1"], "argument --duration: -1 s: must be > 0"),
    (["run", "haul_truck_fleet", "--duration", "nan"], "argument --duration: nan: must be a finite number"),
    (["bench", "latency", "--duration", "0"], "argument --duration: 0 s: must be > 0"),
    (["bench", "latency", "--duration", "-1"], "argument --duration: -1 s: must be > 0"),
    (["bench", "latency", "--rate", "0"], "argument --rate: 0: must be > 0"),
    (["demo", "--duration", "0"], "argument --duration: 0 s: must be > 0"),  # ran the default 60 s
    (["demo", "--vehicles", "-2"], "argument --vehicles: -2: must be >= 0"),
    (["run", "haul_truck_fleet", "--fault", "silence", "--fault-length", "-3"],
     "argument --fault-length: -3 s: must be > 0"),
    (["run", "haul_truck_fleet", "--fault-start", "-1"], "argument --fault-start: -1 s: must be >= 0"),
    (["plan", "--vrplib", str(VRP), "--time-limit", "1e9"],
     "argument --time-limit: 1e9 s: must be > 0 and <= 3600"),  # ran past 120 s
    (["plan", "--vrplib", str(VRP), "--time-limit", "0"], "argument --time-limit: 0 s: must be > 0 and <= 3600"),
    (["schedule", "--jobs", "j.yaml", "--forecast", "f.csv", "--time-limit", "1e9"],
     "argument --time-limit: 1e9 s: must be > 0 and <= 3600"),
    (["run", "haul_truck_fleet", "--duration", "sixty"], "argument --duration: 'sixty': not a number"),
])
def test_bad_arguments_are_one_line_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_record_into_a_missing_directory_is_refused_and_creates_nothing(capsys, tmp_path):
    target = tmp_path / "nonexistent" / "x.mcap"
    with pytest.raises(SystemExit) as info:
        main(["run", "haul_truck_fleet", "--duration", "5", "--record", str(target)])
    assert info.value.code == 2
    assert f"directory {target.parent} does not exist; create it first" in capsys.readouterr().err
    assert not target.parent.exists()  # was created (mkdir -p) by the recorder


def test_record_into_a_directory_is_refused(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["run", "haul_truck_fleet", "--record", str(tmp_path)])
    assert "is a directory; give a file name" in capsys.readouterr().err


def test_good_values_pass_unchanged(tmp_path):
    args = build_parser().parse_args(["run", "haul_truck_fleet", "--duration", "2.5", "--fault-length", "3",
                                      "--fault-start", "0", "--record", str(tmp_path / "x.mcap")])
    assert (args.duration, args.fault_length, args.fault_start, args.record) == (2.5, 3.0, 0.0,
                                                                                   str(tmp_path / "x.mcap"))
    assert build_parser().parse_args(["run", "haul_truck_fleet"]).record is None
    assert build_parser().parse_args(["demo"]).duration is None  # the scenario's duration_s
    assert build_parser().parse_args(["plan", "--vrplib", "x", "--time-limit", "3600"]).time_limit == 3600.0


@pytest.mark.parametrize("keep_lines", [20, 45], ids=["coordinates_cut", "demands_cut"])
def test_a_truncated_vrplib_file_is_refused(capsys, tmp_path, keep_lines):
    cut = tmp_path / "cut.vrp"
    cut.write_text("".join(VRP.read_text().splitlines(keepends=True)[:keep_lines]))
    assert main(["plan", "--vrplib", str(cut), "--time-limit", "0.2"]) == 1  # solved it: "gap -70 %"
    err = capsys.readouterr().err
    assert str(cut) in err and "Traceback" not in err
    assert ("DIMENSION is 32 but 13 nodes were read (is the file cut short?)" in err if keep_lines == 20
            else "sizes disagree" in err)
