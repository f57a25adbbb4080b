"""The pure half of every domain must run where ROS is absent: import each domain module outside a ``ros``
package (and outside the shared ``carbon_ai_nodes.ros`` plumbing and the command line) with rclpy and every
*_msgs package unimportable."""

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
            raise ImportError(f"a pure module imported ROS module {name}")
sys.meta_path.insert(0, Block())
import carbon_ai_nodes
names = [m.name for m in pkgutil.walk_packages(carbon_ai_nodes.__path__, "carbon_ai_nodes.")]
pure = [n for n in names if "ros" not in n.split(".") and n.split(".")[1] not in ("commands", "cli")]
for n in pure:
    __import__(n)
print(" ".join(sorted({n.split(".")[1] for n in pure})), len(pure))
"""
DOMAINS = ("actuation", "carbon", "common", "fusion", "graph", "planning", "sim", "uplink")


def test_every_pure_module_imports_without_ros():
    result = subprocess.run([sys.executable, "-c", BLOCKER], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    *packages, count = result.stdout.split()
    assert set(DOMAINS) <= set(packages), packages  # every domain has a pure part
    assert int(count) >= 40
