"""When the process running a graph dies without a chance to stop it (SIGKILL, the OOM killer), its node processes
do not run on as orphans: on Linux each asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest
from test_runner_signals import marked_processes, start_command, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")

PARENT = """
import os, sys, time
from carbon_ai_nodes.graph.node_process import popen_node
child = popen_node(["sleep", "600"], open(os.devnull, "wb"), {})
print(child.pid, flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for its new parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.timeout(60)
def test_a_started_process_gets_sigterm_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert not gone(child)
        parent.kill()
        parent.wait(timeout=10)
        assert wait_until(lambda: gone(child), 30), f"sleep {child} outlived its killed parent"
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)
        parent.stdout.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_killing_the_runner_leaves_no_node_process_running(tmp_path):
    marker = uuid.uuid4().hex
    proc, out = start_command(["run", "haul_truck_fleet", "--only", "sim", "fusion", "--duration", "600"],
                              tmp_path, marker)
    console = tmp_path / "console.txt"
    try:
        # the runner, the lifecycle manager, two simulators and two fusion nodes
        started = wait_until(lambda: "started 5 node processes" in console.read_text()
                             and len(marked_processes(marker)) >= 6 or proc.poll() is not None, 120)
        assert started and proc.poll() is None, console.read_text()
        proc.kill()  # the runner alone (not its group), as the OOM killer would: no handler, no finally
        proc.wait(timeout=10)
        assert wait_until(lambda: marked_processes(marker) == [], 60), console.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
        for pid in marked_processes(marker):  # never leave a leak of this test behind for the next one
            os.kill(pid, signal.SIGKILL)
