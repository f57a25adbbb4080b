"""Shared node plumbing, exercised through a real node process (grid_publisher) over DDS:
start-up validation, lifecycle transitions, runtime parameter checks, /diagnostics, clean shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from carbon_ai_msgs.msg import GridIntensity
from carbon_ai_nodes.graph.node_process import NodeProcess
from carbon_ai_nodes.ros import qos

FORECAST = str(REPO / "config" / "grid" / "forecast_example.csv")


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"period_s": -1.0}, "grid_publisher.period_s=-1.0: must be > 0.0"),
        ({"period_s": "fast"}, "grid_publisher.period_s='fast': expected a number"),
        ({"loop": 3}, "grid_publisher.loop=3: expected true or false"),
        ({"forecast_file": ""}, "grid_publisher.forecast_file=''"),
        ({"diagnostics_period_s": 0.0}, "node.diagnostics_period_s=0.0: must be > 0.0"),
    ],
)
def test_bad_parameter_exits_nonzero_with_one_line_naming_it(params, expected):
    with NodeProcess("grid_publisher", params={"forecast_file": FORECAST, **params}) as node:
        status = node.wait(timeout_s=30)
        lines = _error_lines(node.output)
    assert status == 1
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "Traceback" not in lines[0]


def test_missing_forecast_file_is_a_clear_error():
    with NodeProcess("grid_publisher", params={"forecast_file": "/nonexistent/forecast.csv"}) as node:
        assert node.wait(timeout_s=30) == 1
        lines = _error_lines(node.output)
    assert len(lines) == 1 and "/nonexistent/forecast.csv" in lines[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_plain_mode_publishes_and_shuts_down_cleanly(probe, sig):
    got = probe.collect(GridIntensity, "grid/grid_intensity", qos.latched())
    with NodeProcess("grid_publisher", namespace="/grid",
                     params={"forecast_file": FORECAST, "period_s": 0.1, "time_scale": 3600.0}) as node:
        assert probe.spin_until(lambda: len(got) >= 3, timeout_s=20), node.output
        status = node.stop(sig)
        assert status == 0, node.output
        assert "Traceback" not in node.output
    first = got[0]
    assert first.region == "example"
    # replayed 3600x: which hour arrives first depends on discovery, but it is a value of the file
    hourly = [float(line.split(",")[1]) for line in open(FORECAST).read().split()[1:]]
    assert first.gco2_per_kwh in hourly
    assert first.forecast_gco2_per_kwh[0] == first.gco2_per_kwh
    assert len(first.forecast_gco2_per_kwh) == 24
    assert first.forecast_step_s == pytest.approx(1.0)  # 3600 s steps replayed 3600x faster


def _state(probe, get_state) -> int:
    return probe.call(get_state, GetState.Request(), resend_s=2.0).current_state.id


def _transition(probe, change, get_state, transition: int, then: int) -> bool:
    """Request a lifecycle transition; whether the node is in state ``then`` afterwards. A transition is not
    idempotent, so a lost response is not answered by sending it again but by asking the node's state."""
    try:
        return probe.call(change, ChangeState.Request(transition=Transition(id=transition)), timeout_s=5.0).success
    except TimeoutError:
        return probe.spin_until(lambda: _state(probe, get_state) == then, timeout_s=10.0)


def test_managed_mode_waits_for_transitions_and_validates_runtime_changes(probe):
    got = probe.collect(GridIntensity, "managed/grid_intensity", qos.latched())
    diags = probe.collect(DiagnosticArray, "/diagnostics", qos.diagnostics())
    with NodeProcess("grid_publisher", namespace="/managed", params={
        "forecast_file": FORECAST, "period_s": 0.1, "autostart": False, "diagnostics_period_s": 0.2,
    }) as node:
        get_state = probe.node.create_client(GetState, "/managed/grid_publisher/get_state")
        change = probe.node.create_client(ChangeState, "/managed/grid_publisher/change_state")
        assert _state(probe, get_state) == State.PRIMARY_STATE_UNCONFIGURED

        for transition, then in ((Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE),
                                 (Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)):
            assert _transition(probe, change, get_state, transition, then)
        assert probe.spin_until(lambda: len(got) >= 2, timeout_s=20), node.output

        # A bad runtime change is refused with the same reason as at start-up, a good one is taken.
        set_params = probe.node.create_client(SetParameters, "/managed/grid_publisher/set_parameters")
        bad = Parameter(name="period_s", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=-2.0))
        result = probe.call(set_params, SetParameters.Request(parameters=[bad]), resend_s=2.0).results[0]
        assert not result.successful
        assert result.reason == "grid_publisher.period_s=-2.0: must be > 0.0"
        good = Parameter(name="region", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                             string_value="north"))
        assert probe.call(set_params, SetParameters.Request(parameters=[good]), resend_s=2.0).results[0].successful
        assert probe.spin_until(lambda: got[-1].region == "north", timeout_s=10)

        def reported(state: str) -> bool:
            return any(kv.key == "lifecycle_state" and kv.value == state for a in diags for s in a.status
                       if s.hardware_id == "/managed/grid_publisher" for kv in s.values)

        # Diagnostics report the state (waited for: on a loaded machine the active spell can be short).
        assert probe.spin_until(lambda: reported("active"), timeout_s=10), "no diagnostics saying active"
        # Deactivated: outputs stop; diagnostics keep reporting the state.
        diags.clear()
        assert _transition(probe, change, get_state, Transition.TRANSITION_DEACTIVATE, State.PRIMARY_STATE_INACTIVE)
        count = len(got)
        probe.spin_for(0.5)
        assert len(got) <= count + 1  # at most one already in flight
        assert probe.spin_until(lambda: reported("inactive"), timeout_s=10), "no diagnostics saying inactive"
        assert node.stop() == 0


def test_probe_call_names_the_missing_service(probe):
    client = probe.node.create_client(GetState, "/nobody/get_state")
    with pytest.raises(TimeoutError, match="service /nobody/get_state not available within 0.5 s"):
        probe.call(client, GetState.Request(), timeout_s=0.5)


def _wait_until_importing_numpy(proc: subprocess.Popen, timeout_s: float = 60.0) -> bool:
    """True once the process has numpy's extension mapped: it is inside the node module's imports (sensor_msgs
    imports numpy), before any node code runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "numpy" in Path(f"/proc/{proc.pid}/maps").read_text():
                return True
        except OSError:
            pass
        time.sleep(0.001)
    return False


@pytest.mark.parametrize("how", ["console script (ros2 run / ros2 launch)", "python -m (carbon-ai run)"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_node_is_still_importing_exits_quietly(how, sig):
    """ros2 launch shutting down just after a node was (re)started: its SIGINT lands in the imports, before the
    node has handlers. CI saw Python's KeyboardInterrupt traceback from inside numpy's import here."""
    if how.startswith("console"):
        argv = [str(REPO / "install" / "carbon_ai_nodes" / "lib" / "carbon_ai_nodes" / "fusion")]
    else:
        argv = [sys.executable, "-m", "carbon_ai_nodes.node_entry", "fusion"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_until_importing_numpy(proc), "the node never got to its imports"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "Traceback" not in out + err, out + err
    assert proc.returncode == 0, (proc.returncode, out + err)
