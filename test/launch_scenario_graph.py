"""launch_testing test of one scenario's launch file, run by ``launch_test`` (test/test_launch_graph.py does so).

The launch file is the installed one (``ros2 launch carbon_ai_nodes <scenario>.launch.py``), the scenario comes
from ``CARBON_AI_LAUNCH_SCENARIO`` and extra launch arguments from ``CARBON_AI_LAUNCH_ARGS`` (``k:=v`` pairs).
``CARBON_AI_LAUNCH_RECORD=FILE.mcap`` records the vehicles' sensor topics meanwhile (for a later
``use_sim:=false play:=FILE.mcap`` run); ``CARBON_AI_LAUNCH_CHECKS=flow`` runs only the bring-up and flow checks.
One launched graph serves every check; they run in order (unittest sorts them by name):
the graph comes up through the lifecycle manager, every vehicle's actuator_command flows, ``ros2 lifecycle get``
and ``ros2 param set`` behave, a killed node is restarted while its bridge holds SAFE_FALLBACK; after shutdown
no process is left.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

import launch_testing
import launch_testing.actions
import psutil
import rclpy
from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from lifecycle_msgs.srv import GetState
from rcl_interfaces.msg import ParameterValue
from rcl_interfaces.srv import GetParameters

from carbon_ai_msgs.msg import ActuatorCommand
from carbon_ai_nodes.graph.ros.mcap_player import SENSOR_TOPICS
from carbon_ai_nodes.graph.ros.mcap_recorder import McapRecorder
from carbon_ai_nodes.graph.scenario import load_scenario
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.probe import Probe
from launch import LaunchDescription

SCENARIO = os.environ.get("CARBON_AI_LAUNCH_SCENARIO", "factory_site")
LAUNCH_ARGS = dict(a.split(":=", 1) for a in os.environ.get("CARBON_AI_LAUNCH_ARGS", "").split())
RECORD = os.environ.get("CARBON_AI_LAUNCH_RECORD", "")
ALL_CHECKS = os.environ.get("CARBON_AI_LAUNCH_CHECKS", "all") == "all"
VEHICLES = [v.id for v in load_scenario(SCENARIO).vehicles]
LAUNCH_DIR = Path(get_package_share_directory("carbon_ai_nodes")) / "launch"
sys.path.insert(0, str(LAUNCH_DIR))
from carbon_ai_scenario_launch import node_entries, player_command  # noqa: E402  (installed beside the launch files)

# /ns/executable of every process the launch file starts
EXPECTED = {f"{e['namespace']}/{e['executable']}" for e in node_entries(SCENARIO, LAUNCH_ARGS)}
EXPECTED |= {"/mcap_player"} if player_command(LAUNCH_ARGS) else set()
BRING_UP_S = float(os.environ.get("CARBON_AI_LAUNCH_BRING_UP_S", "180"))
SEEN_PIDS: set[int] = set()  # every node process seen while the graph ran (checked after shutdown)


def generate_test_description():
    """The scenario's installed launch file, as ``ros2 launch`` would run it."""
    path = LAUNCH_DIR / f"{SCENARIO}.launch.py"
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(path)), launch_arguments=LAUNCH_ARGS.items()),
        launch_testing.actions.ReadyToTest(),
    ])


def node_processes() -> dict[str, psutil.Process]:
    """``/ns/executable`` -> process, for the launched node processes (children of this launch_test)."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        exe = next((Path(c).name for c in cmd if "/lib/carbon_ai_nodes/" in c), "")
        exe = exe or ("mcap_player" if "carbon_ai_nodes.graph.ros.mcap_player" in cmd else "")
        if not exe:
            continue
        ns = next((c.split(":=", 1)[1] for c in cmd if c.startswith("__ns:=")), "")
        found[f"{ns}/{exe}"] = child
        SEEN_PIDS.add(child.pid)
    return found


def ros2(*args: str, expect: str = "", attempts: int = 5) -> str:
    """Run the ``ros2`` command (no daemon: it would outlive the test) until its output holds ``expect``, at most
    ``attempts`` times (its discovery can miss a node on a loaded machine); its stdout and stderr together."""
    verb, *rest = args
    for _ in range(attempts):
        result = subprocess.run(["ros2", verb, *rest[:1], "--no-daemon", "--spin-time", "5", *rest[1:]],
                                capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        if expect in output:
            break
    return output


class TestGraph(unittest.TestCase):
    """Checks against the running graph, in name order."""

    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.probe = Probe("launch_test")
        cls.commands = {v: cls.probe.collect(ActuatorCommand, f"/{v}/actuator_command", qos.command())
                        for v in VEHICLES}
        cls.recorder = None
        if RECORD:
            cls.recorder = McapRecorder(RECORD, [f"/{v}/{t}" for v in VEHICLES for t in SENSOR_TOPICS])
            cls.recorder.start_thread()

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.recorder is not None:
            cls.recorder.close()
        cls.probe.close()
        rclpy.try_shutdown()

    def state_of(self, node: str) -> str:
        """The lifecycle state label of ``node`` ('' if it does not answer)."""
        client = self.probe.node.create_client(GetState, f"{node}/get_state")
        try:
            return self.probe.call(client, GetState.Request(), timeout_s=10.0, resend_s=2.0).current_state.label
        except TimeoutError:
            return ""
        finally:
            self.probe.node.destroy_client(client)

    def parameter(self, node: str, name: str) -> ParameterValue:
        """A parameter's value as the node reports it."""
        client = self.probe.node.create_client(GetParameters, f"{node}/get_parameters")
        try:
            return self.probe.call(client, GetParameters.Request(names=[name]), resend_s=2.0).values[0]
        finally:
            self.probe.node.destroy_client(client)

    def all_active(self, nodes: list[str]) -> bool:
        return all(self.state_of(n) == "active" for n in nodes)

    def test_1_graph_comes_up_through_the_lifecycle_manager(self) -> None:
        end = time.monotonic() + BRING_UP_S
        self.assertTrue(self.probe.spin_until(lambda: set(node_processes()) >= EXPECTED, BRING_UP_S),
                        EXPECTED - set(node_processes()))
        procs = node_processes()
        self.assertEqual(set(procs), EXPECTED)  # with use_sim:=false, no simulator
        managed = sorted(n for n in procs if not n.endswith(("/lifecycle_manager", "/mcap_player")))
        self.assertTrue(self.probe.spin_until(lambda: self.all_active(managed), end - time.monotonic()),
                        {n: self.state_of(n) for n in managed})
        # they were started with autostart:=false, so the manager (nothing else) configured and activated them
        self.assertFalse(self.parameter(managed[0], "autostart").bool_value)
        node = f"/{VEHICLES[0]}/actuator_bridge"
        self.assertIn("active [3]", ros2("lifecycle", "get", node, expect="active"))

    def test_2_every_vehicle_actuator_command_flows(self) -> None:
        def auto_for_every_vehicle() -> bool:  # AUTO: the bridge has fresh, valid state from the sensors
            return all(any(m.mode == ActuatorCommand.MODE_AUTO for m in c) for c in self.commands.values())

        self.assertTrue(self.probe.spin_until(auto_for_every_vehicle, 90.0),
                        {v: sorted({m.mode for m in c}) for v, c in self.commands.items()})
        for vehicle, received in self.commands.items():
            last = received[-1]
            self.assertEqual(last.asset_id, vehicle)
            self.assertTrue(math.isfinite(last.speed_limit_mps) and math.isfinite(last.engine_load_limit_pct))

    @unittest.skipUnless(ALL_CHECKS, "CARBON_AI_LAUNCH_CHECKS=flow")
    def test_3_ros2_param_set_refuses_a_bad_value_with_the_node_message(self) -> None:
        node = f"/{VEHICLES[0]}/actuator_bridge"
        refused = ros2("param", "set", node, "safe_speed_limit_mps", "-1.0", expect="Setting parameter")
        self.assertIn("Setting parameter failed", refused)
        self.assertIn("safe_speed_limit_mps=-1.0: must be", refused)
        accepted = ros2("param", "set", node, "safe_speed_limit_mps", "3.5", expect="Set parameter")
        self.assertIn("Set parameter successful", accepted)
        self.assertEqual(self.parameter(node, "safe_speed_limit_mps").double_value, 3.5)

    @unittest.skipUnless(ALL_CHECKS, "CARBON_AI_LAUNCH_CHECKS=flow")
    def test_4_killed_node_is_restarted_and_the_bridge_goes_safe_meanwhile(self) -> None:
        vehicle = VEHICLES[0]
        victim = f"/{vehicle}/fusion"
        old = node_processes()[victim]
        received = self.commands[vehicle]
        mark = len(received)
        old.send_signal(signal.SIGKILL)
        safe = ActuatorCommand.MODE_SAFE_FALLBACK
        self.assertTrue(self.probe.spin_until(lambda: any(m.mode == safe for m in received[mark:]), 60.0),
                        "the bridge never went to SAFE_FALLBACK while fusion was down")
        safe_at = next(i for i in range(mark, len(received)) if received[i].mode == safe)
        self.assertTrue(self.probe.spin_until(
            lambda: (p := node_processes().get(victim)) is not None and p.pid != old.pid, 60.0),
            "fusion was not restarted")
        # until a new fusion process existed, nothing may have driven the bridge back to AUTO
        self.assertEqual({m.mode for m in received[safe_at:]} - {safe, ActuatorCommand.MODE_ESTOP}, set())
        self.assertTrue(self.probe.spin_until(lambda: self.state_of(victim) == "active", 90.0))
        self.assertTrue(self.probe.spin_until(
            lambda: any(m.mode == ActuatorCommand.MODE_AUTO for m in received[safe_at:]), 90.0),
            "the bridge did not return to AUTO after the restart")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    """After the launch service stopped the graph."""

    def test_no_node_process_left_behind(self) -> None:
        self.assertTrue(SEEN_PIDS)
        alive = [p for p in SEEN_PIDS if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        self.assertEqual(alive, [])

    def test_no_traceback_on_shutdown(self, proc_output) -> None:
        text = "".join(o.text.decode(errors="replace") for o in proc_output)
        self.assertNotIn("Traceback", text)
