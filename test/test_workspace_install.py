"""The colcon build (./setup.sh ran `colcon build --base-paths . carbon_ai_msgs`) installed what
`ros2 run` / `ros2 launch` look for."""

from __future__ import annotations

import ast
import importlib.util
import os

from conftest import REPO

INSTALL = REPO / "install"


def _node_modules() -> dict[str, str]:
    """The NODES table of setup.py: executable name -> module under carbon_ai_nodes.nodes."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODES":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no NODES table")


def test_every_node_executable_is_installed_where_ros2_run_looks():
    lib = INSTALL / "carbon_ai_nodes" / "lib" / "carbon_ai_nodes"
    for exe, module in [*_node_modules().items(), ("carbon-ai", None)]:
        path = lib / exe
        assert path.is_file() and os.access(path, os.X_OK), f"{path} missing: rerun ./setup.sh"
        if module:
            assert importlib.util.find_spec(f"carbon_ai_nodes.nodes.{module}"), f"{exe}: no module {module}"


def test_package_is_in_the_ament_index():
    for pkg in ("carbon_ai_nodes", "carbon_ai_msgs"):
        assert (INSTALL / pkg / "share" / "ament_index" / "resource_index" / "packages" / pkg).exists()
    assert (INSTALL / "carbon_ai_msgs" / "share" / "carbon_ai_msgs" / "msg" / "VehicleState.msg").exists()
