"""The colcon build (./setup.sh ran `colcon build --base-paths . carbon_ai_msgs`) installed what
`ros2 run` / `ros2 launch` look for; the README's vehicle-computer commands (rosdep, a plain colcon build) work."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess

import pytest
from conftest import REPO

from carbon_ai_nodes.node_registry import NODES

INSTALL = REPO / "install"


def test_every_node_executable_is_installed_where_ros2_run_looks():
    lib = INSTALL / "carbon_ai_nodes" / "lib" / "carbon_ai_nodes"
    for exe, module in [*((n.name, n.module) for n in NODES), ("carbon-ai", None)]:
        path = lib / exe
        assert path.is_file() and os.access(path, os.X_OK), f"{path} missing: rerun ./setup.sh"
        if module:
            assert importlib.util.find_spec(module), f"{exe}: no module {module}"


def test_package_is_in_the_ament_index():
    for pkg in ("carbon_ai_nodes", "carbon_ai_msgs"):
        assert (INSTALL / pkg / "share" / "ament_index" / "resource_index" / "packages" / pkg).exists()
    assert (INSTALL / "carbon_ai_msgs" / "share" / "carbon_ai_msgs" / "msg" / "VehicleState.msg").exists()


def _readme_command(prefix: str) -> list[str]:
    """The README's vehicle-computer command starting with ``prefix``, split into words."""
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith(prefix):
            return line.split("#")[0].split()
    raise AssertionError(f"README has no line starting with {prefix!r}")


def _paths_after(words: list[str], option: str) -> list[str]:
    """The values of ``option`` up to the next option."""
    start = words.index(option) + 1
    end = next((i for i in range(start, len(words)) if words[i].startswith("-")), len(words))
    return words[start:end]


def test_readme_rosdep_line_names_both_packages():
    from catkin_pkg.packages import find_packages

    # rosdep --from-paths stops descending at a package.xml: the repo root alone hides carbon_ai_msgs, which
    # rosdep then looks up as a system dependency and fails on
    assert {p.name for p in find_packages(str(REPO)).values()} == {"carbon_ai_nodes"}
    paths = _paths_after(_readme_command("rosdep install"), "--from-paths")
    found = set()
    for path in paths:  # the README clones the repository into src/carbon_ai
        assert path.startswith("src/carbon_ai"), path
        found |= {p.name for p in find_packages(str(REPO / path.removeprefix("src/carbon_ai").lstrip("/"))).values()}
    assert found == {"carbon_ai_nodes", "carbon_ai_msgs"}
    assert _paths_after(_readme_command("colcon build"), "--base-paths") == paths


PLAIN_BUILD_MISSING = [m for m in ("launch_ros", "psutil") if importlib.util.find_spec(m) is None]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(bool(PLAIN_BUILD_MISSING) or shutil.which("colcon") is None or shutil.which("ros2") is None,
                    reason="needs colcon and ros2 launch (./setup.sh beside ../shared/ros2-tools, or a ROS 2 install)")
def test_plain_colcon_install_finds_its_config_and_launches(tmp_path, probe):
    """The README's vehicle-computer build (no --symlink-install): modules copied to site-packages, config to
    share/carbon_ai_nodes. carbon_ai_msgs comes from this checkout's install/ (an underlay, as on a vehicle)."""
    import psutil

    from carbon_ai_msgs.msg import ActuatorCommand
    from carbon_ai_nodes.ros import qos

    src = tmp_path / "src" / "carbon_ai"
    src.mkdir(parents=True)
    for name in ("package.xml", "setup.py", "setup.cfg"):
        shutil.copy2(REPO / name, src / name)
    for name in ("resource", "carbon_ai_nodes", "launch", "config"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        ["colcon", "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(src),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
         "--event-handlers", "console_direct-", "status-"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    share = tmp_path / "install" / "carbon_ai_nodes" / "share" / "carbon_ai_nodes"
    assert not (share / "config").is_symlink() and (share / "config" / "scenarios" / "factory_site.yaml").is_file()

    # the environment of a shell that sourced only the plain install over the message package
    dev = str(INSTALL / "carbon_ai_nodes")
    env = {k: os.pathsep.join(p for p in v.split(os.pathsep) if not p.startswith(dev))
           for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH")}
    env = {**os.environ, **env, "ROS_HOME": str(tmp_path / "ros_home")}

    def in_install(command: str, **kwargs: object) -> subprocess.Popen:
        script = f". {tmp_path / 'install' / 'local_setup.bash'} && exec {command}"
        return subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, text=True, **kwargs)

    check = in_install("python -c 'import carbon_ai_nodes.graph.scenario as s; "
                       "print(s.__file__); print(s.CONFIG_DIR); print(*(p.stem for p in s.list_scenarios()))'",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = check.communicate(timeout=120)
    assert check.returncode == 0, err
    module, config, scenarios = out.strip().splitlines()
    assert module.startswith(str(tmp_path / "install")) and config == str(share / "config")
    assert scenarios.split() == ["delivery_van_fleet", "factory_site", "haul_truck_fleet"]

    commands = {v: probe.collect(ActuatorCommand, f"/{v}/actuator_command", qos.command())
                for v in ("tractor1", "tractor2")}
    launch = in_install("ros2 launch carbon_ai_nodes factory_site.launch.py", stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT)
    seen: dict[int, list[str]] = {}

    def every_vehicle_commanded() -> bool:
        for child in psutil.Process(launch.pid).children(recursive=True):
            try:
                seen.setdefault(child.pid, child.cmdline())
            except psutil.Error:
                pass
        return all(len(c) >= 3 for c in commands.values()) or launch.poll() is not None

    try:
        assert probe.spin_until(every_vehicle_commanded, 240.0) and launch.poll() is None, \
            {v: len(c) for v, c in commands.items()}
        nodes = [cmd for cmd in seen.values() if any("/lib/carbon_ai_nodes/" in c for c in cmd)]
        assert len(nodes) == 14  # 1 grid publisher + 2 vehicles x 6 nodes + the lifecycle manager
        assert all(any(c.startswith(str(tmp_path / "install")) for c in cmd) for cmd in nodes)
    finally:
        launch.send_signal(signal.SIGINT)
        # 14 nodes deactivate and leave DDS one by one; with both cores busy (a CI run beside `stress --cpu 2`)
        # this once took over 120 s, so a wider bound: it still fails a launch that never ends
        output, _ = launch.communicate(timeout=300)
    left = [pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert left == [], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
