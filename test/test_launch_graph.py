"""Each scenario's launch file run for real with launch_testing (``launch_test test/launch_scenario_graph.py``):
bring-up through the lifecycle manager, actuator commands, ``ros2 lifecycle`` / ``ros2 param``, a killed node's
restart, a clean shutdown. Needs launch, launch_ros, launch_testing and the ros2 command (./setup.sh installs
them from ../shared/ros2-tools, or a sourced ROS 2 has them); skipped with the reason elsewhere.

launch_testing's own pytest plugins do not load under pytest 9 (see pyproject.toml), so each scenario runs in
``launch_test``, the runner ROS packages' CMake uses, and this test checks its verdict."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import pytest
from conftest import REPO

from carbon_ai_nodes.graph.scenario import list_scenarios

MISSING = [m for m in ("launch_ros", "launch_testing", "psutil") if importlib.util.find_spec(m) is None]
LAUNCH_TEST = shutil.which("launch_test")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING) or LAUNCH_TEST is None or shutil.which("ros2") is None,
                       reason=f"launch_testing / the ros2 command missing ({', '.join(MISSING) or 'launch_test'}): "
                              "run ./setup.sh beside ../shared/ros2-tools, or source a ROS 2 install"),
]


def run_launch_test(scenario: str, tmp_path, launch_args: str = "", **env_extra: str) -> str:
    """Run the launch_testing file for ``scenario``; fails with its output unless every check passed."""
    env = {**os.environ, "CARBON_AI_LAUNCH_SCENARIO": scenario, "CARBON_AI_LAUNCH_ARGS": launch_args, **env_extra,
           # node logs and uplink queues of this run stay in the test's directory, not the user's ~/.ros
           "ROS_HOME": str(tmp_path / "ros_home")}
    result = subprocess.run([LAUNCH_TEST, str(REPO / "test" / "launch_scenario_graph.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=800)
    output = result.stdout + result.stderr
    (tmp_path / f"launch_test{'_' + launch_args.split()[0].replace(':=', '_') if launch_args else ''}.log").write_text(
        output)  # the whole output, kept with the test's files (the assertion shows only its end)
    assert result.returncode == 0, output[-6000:]
    return output


REPLAYED = "factory_site"  # the smallest graph: its recorded sensors are played back in a second launch


@pytest.mark.timeout(1800)  # whole graphs brought up on a loaded 2-core machine; launch_test has its own bounds
@pytest.mark.parametrize("scenario", [p.stem for p in list_scenarios()])
def test_scenario_launch_file(scenario, tmp_path):
    record = tmp_path / "sensors.mcap"
    output = run_launch_test(scenario, tmp_path, CARBON_AI_LAUNCH_RECORD=str(record) if scenario == REPLAYED else "")
    # unittest's summaries: the four checks on the running graph and the two after shutdown all ran
    assert "Ran 4 tests" in output and "Ran 2 tests" in output and "OK (skipped" not in output, output[-3000:]
    if scenario != REPLAYED:
        return
    # a vehicle computer: no simulator, the recorded sensors played in; the graph still drives every vehicle
    assert record.stat().st_size > 0
    output = run_launch_test(scenario, tmp_path, f"use_sim:=false play:={record}", CARBON_AI_LAUNCH_CHECKS="flow")
    assert "OK (skipped=2)" in output and "Ran 2 tests" in output, output[-3000:]
