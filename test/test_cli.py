"""The carbon-ai command: every subcommand has --help; usage errors are one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from carbon_ai_nodes.cli import build_parser


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "carbon_ai_nodes.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_foundation_subcommands_present():
    assert {"params", "doctor"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_each_subcommand_has_help(command):
    result = _cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"carbon-ai {command}" in result.stdout


@pytest.mark.parametrize("args", [["--no-such-flag"], ["no-such-command"], ["params", "--nope"], []])
def test_usage_errors_are_one_line_and_exit_2(args):
    result = _cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carbon-ai") and "error:" in lines[0]


def test_params_prints_tables_generated_from_declarations():
    result = _cli("params", "--section", "grid_publisher")
    assert result.returncode == 0
    assert "| `period_s` | double | `1.0` | > 0.0, <= 3600.0 | Publish period (s). |" in result.stdout
    missing = _cli("params", "--section", "nope")
    assert missing.returncode == 1 and "no parameter section 'nope'" in missing.stderr


def test_doctor_reports_the_environment():
    result = _cli("doctor")
    assert result.returncode == 0, result.stdout
    assert "carbon_ai_msgs" in result.stdout and "onnxruntime" in result.stdout


def test_documented_parameter_tables_match_the_declarations():
    from conftest import REPO

    from carbon_ai_nodes.commands.params import all_param_sets, markdown_table

    doc = (REPO / "docs" / "parameters.md").read_text()
    stale = [section for section, cls in all_param_sets().items() if markdown_table(cls) not in doc]
    assert not stale, (f"docs/parameters.md tables out of date for {stale}: paste `carbon-ai params --section NAME`")
