"""StopSignals in the command's process and in a child it forks (before exec the child still has the handler);
a stop swallowed where Python cannot raise; SIGUSR1's stack dump."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from carbon_ai_nodes.graph.stop_signals import StopSignals, sets_event


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


class _SignalsInDel:
    """Sends ``sig`` to this process from ``__del__``: the handler's KeyboardInterrupt is raised where Python can
    only print "Exception ignored in ..." (as in logging's after-fork hook, where a CI run's demo lost its stop)."""

    def __init__(self, sig: int) -> None:
        self.sig = sig

    def __del__(self) -> None:
        os.kill(os.getpid(), self.sig)
        for _ in range(1000):  # bytecodes after the kill: the handler runs here, inside __del__
            pass


def test_a_stop_swallowed_where_exceptions_cannot_propagate_is_delivered_again(capsys):
    with StopSignals() as stop:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            _SignalsInDel(signal.SIGTERM)  # made and dropped at once: __del__ runs, the exception is swallowed
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:  # the command's own loop: the stop must still reach it
                time.sleep(0.01)
    assert stop.received == signal.SIGTERM
    assert "Exception ignored" not in capsys.readouterr().err  # ours is redelivered quietly


def test_sigusr1_prints_every_threads_stack_of_a_process_that_hangs(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text("import time\n"
                      "from carbon_ai_nodes.graph.stop_signals import dump_stacks_on_sigusr1\n"
                      "dump_stacks_on_sigusr1()\n"
                      "def stuck_here():\n"
                      "    print('ready', flush=True)\n"
                      "    time.sleep(60)\n"
                      "stuck_here()\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGUSR1)
        err = [proc.stderr.readline() for _ in range(3)]  # "Current thread ...", then its 2 frames, innermost first
        assert proc.poll() is None  # it dumps and runs on
    finally:
        proc.kill()
        proc.communicate()
    assert err[0].startswith("Current thread") and any("stuck_here" in line for line in err), err


def test_a_handler_setting_an_event_the_main_thread_waits_on_never_blocks_it():
    stop = threading.Event()
    previous = signal.signal(signal.SIGUSR2, sets_event(stop))
    try:
        # The signal arrives while this thread may hold the Event's lock inside wait(); a plain stop.set() in the
        # handler could then block on that lock for good.
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR2)).start()
        deadline = time.monotonic() + 10.0
        while not stop.wait(0.001) and time.monotonic() < deadline:
            pass
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stop.is_set()
