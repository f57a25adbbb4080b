"""Report what this machine offers carbon_ai: ROS 2 source, middleware, inference backends, solver, broker."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys

HELP = "check the environment: ROS 2, middleware, inference backends, OR-Tools, mosquitto"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the answer
        return f"missing ({type(exc).__name__}: {exc})"
    return str(getattr(mod, "__version__", "present"))


def run(args: argparse.Namespace) -> int:
    """Print one line per component; exit 1 if something required is missing."""
    rows: list[tuple[str, str, bool]] = []
    rows.append(("python", sys.version.split()[0], sys.version_info >= (3, 10)))
    distro = os.environ.get("ROS_DISTRO")
    rows.append(("ROS 2", f"system {distro}" if distro else "PyPI wheels in the venv", True))
    rows.append(("RMW_IMPLEMENTATION", os.environ.get("RMW_IMPLEMENTATION", "(default)"), True))
    rclpy_v = _version("rclpy")
    rows.append(("rclpy", rclpy_v, not rclpy_v.startswith("missing")))
    msgs_v = _version("carbon_ai_msgs.msg")
    rows.append(("carbon_ai_msgs", msgs_v, not msgs_v.startswith("missing")))
    ort = _version("onnxruntime")
    if not ort.startswith("missing"):
        import onnxruntime

        ort += " providers: " + ", ".join(onnxruntime.get_available_providers())
    rows.append(("onnxruntime", ort, not ort.startswith("missing")))
    rows.append(("tensorrt", _version("tensorrt"), True))
    ortools_v = _version("ortools")
    rows.append(("ortools", ortools_v, not ortools_v.startswith("missing")))
    rows.append(("paho-mqtt", _version("paho.mqtt"), True))
    rows.append(("mosquitto", shutil.which("mosquitto") or "not found (MQTT tests need it)", True))
    rows.append(("GPU", "nvidia-smi found" if shutil.which("nvidia-smi") else "none found", True))
    width = max(len(r[0]) for r in rows)
    for name, value, ok in rows:
        print(f"{'ok ' if ok else 'BAD'} {name:<{width}}  {value}")
    return 0 if all(ok for _, _, ok in rows) else 1
