"""Stopping a carbon-ai command: SIGTERM (``kill``, systemd, a container stop) and SIGHUP (the terminal closed)
act as Ctrl-C does, so a command running a node graph takes it down in order (actuator bridges first) instead
of dying at once and leaving its node processes running.

Python's default SIGTERM and SIGHUP actions end the process without running any ``finally``; its SIGINT
raises KeyboardInterrupt, which the commands already turn into an orderly stop. :class:`StopSignals` makes the
three alike, and once the stop has begun it ignores further signals, so a second Ctrl-C or a service manager's
repeated SIGTERM cannot cut the stop short. Commands create rclpy contexts without rclpy's own signal handlers
(:func:`init_rclpy`): those would shut the context down under the running code (NotInitializedException).

A KeyboardInterrupt raised by the handler can land where Python cannot propagate exceptions and only reports
them as "Exception ignored in ..." (an ``os.fork`` hook: subprocess starting a node; a ``__del__``): the stop
would be lost and, the signal counting as received, every later one ignored (a CI run's ``carbon-ai demo`` ran
on for its full 600 s after SIGTERM). :class:`StopSignals` sees such a swallowed stop through
``sys.unraisablehook`` and delivers it again from a helper thread, so it lands in ordinary code.

``kill -USR1 <pid>`` makes a carbon-ai command or node print every thread's stack to its stderr
(:func:`dump_stacks_on_sigusr1`): what to look at when one does not stop.
"""

from __future__ import annotations

import faulthandler
import io
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DUMP_STACKS_SIGNAL = signal.SIGUSR1
REDELIVER_AFTER_S = 0.05  # long enough for the interrupted hook to return before the signal is raised again


class StopSignals:
    """Context manager: inside, the first SIGINT, SIGTERM or SIGHUP raises KeyboardInterrupt (its message is the
    signal's name) and later ones are ignored. Outside the main thread (where Python cannot handle signals) it
    does nothing."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal's number
        self._previous: dict[int, Any] = {}
        self._previous_unraisable_hook: Any = None
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            # A child between fork and exec (a node being started with a preexec_fn, a forked FASTSim run) still
            # has this handler and, before it leaves our process group, gets the group's signal: raising here
            # printed "Exception ignored in _after_fork" with a traceback. The child is stopped by its parent.
            return
        if self.received is None:
            self.received = signum
            raise KeyboardInterrupt(signal.Signals(signum).name)

    def _unraisable(self, unraisable: Any) -> None:
        """``sys.unraisablehook``: our KeyboardInterrupt swallowed (module docstring) is raised again, quietly."""
        signum = self.received
        if (unraisable.exc_type is KeyboardInterrupt and signum is not None
                and str(unraisable.exc_value) == signal.Signals(signum).name):
            self.received = None  # the stop has not begun: the next delivery raises
            # not from here: raised inside the hook it would be swallowed once more
            threading.Timer(REDELIVER_AFTER_S, self._redeliver, (signum,)).start()
            return
        self._previous_unraisable_hook(unraisable)

    def _redeliver(self, signum: int) -> None:
        if self._previous:  # still inside: outside, the default action would kill the command
            signal.raise_signal(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
            self._previous_unraisable_hook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._previous_unraisable_hook is not None:
            sys.unraisablehook = self._previous_unraisable_hook
            self._previous_unraisable_hook = None


def sets_event(event: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A signal handler that sets ``event``, from a thread of its own: a handler runs on the main thread between
    two bytecodes, and one calling ``event.set()`` while that thread is inside ``event.wait()`` holding the
    Event's lock would block on it for good."""

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=event.set, name="stop-signal", daemon=True).start()

    return handler


def dump_stacks_on_sigusr1() -> None:
    """SIGUSR1 prints every thread's Python stack to stderr, even with the main thread stuck in C code (a node
    that does not stop: the runner asks for it before SIGKILL, so the stacks end up in the node's log)."""
    try:
        faulthandler.register(DUMP_STACKS_SIGNAL, all_threads=True)
    except (AttributeError, ValueError, io.UnsupportedOperation):  # stderr is no file (captured, closed): nowhere
        pass


def init_rclpy() -> None:
    """``rclpy.init()`` without rclpy's signal handlers (see the module docstring)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    try:
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    except TypeError:  # an rclpy without signal_handler_options
        rclpy.init()
