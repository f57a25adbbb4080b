"""The cores must run where ROS is absent: import every core module with rclpy and *_msgs unimportable."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

BLOCKER = r"""
import importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        root = name.split(".")[0]
        if root in ("rclpy", "rcl_interfaces", "builtin_interfaces", "rosidl_runtime_py") or root.endswith("_msgs"):
            raise ImportError(f"core imported ROS module {name}")
sys.meta_path.insert(0, Block())
import carbon_ai_nodes.core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, "carbon_ai_nodes.core.")]
for n in names:
    __import__(n)
print(len(names))
"""


def test_every_core_module_imports_without_ros():
    result = subprocess.run([sys.executable, "-c", BLOCKER], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 4  # errors, params, health, grid_forecast at least
