"""StopSignals in the command's process and in a child it forks (before exec the child still has the handler)."""

from __future__ import annotations

import os
import signal

import pytest

from carbon_ai_nodes.graph.stop_signals import StopSignals


def test_the_first_stop_signal_raises_and_later_ones_are_ignored():
    with StopSignals() as stop:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)  # the stop has begun: ignored, no second KeyboardInterrupt
    assert stop.received == signal.SIGTERM


def test_a_forked_child_does_not_raise_from_the_parents_handler():
    # A node started with a preexec_fn (or a forked FASTSim run) gets the group's SIGTERM between fork and exec;
    # raising there printed "Exception ignored in _after_fork" and a traceback into the command's output.
    with StopSignals():
        pid = os.fork()
        if pid == 0:  # the child: the signal must pass without an exception
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                os._exit(0)
            except BaseException:  # noqa: BLE001 - any exception is the failure being tested
                os._exit(3)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
