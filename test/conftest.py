"""Test session set-up: every session gets its own ROS domain on localhost, and one rclpy context."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from carbon_ai_nodes.graph.node_process import isolated_ros_env
from carbon_ai_nodes.ros.probe import Probe

# Before any rclpy.init() in this process or a child: a domain of our own, discovery on this host only.
os.environ.update(isolated_ros_env())

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).parent))  # test helpers import as plain modules


@pytest.fixture(scope="session", autouse=True)
def node_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Node process logs of this session, kept under pytest's temporary directory (the last runs are kept)."""
    path = tmp_path_factory.mktemp("node-logs")
    os.environ["CARBON_AI_LOG_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def ros():
    """rclpy initialised once for the session."""
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def probe(ros):
    """A fresh test-side node with its own executor."""
    p = Probe()
    yield p
    p.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (drive cycles, EPA certification data); skips if the checkout has no shared/ beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found: these tests need the shared data beside the repo")
    return SHARED_DATA
