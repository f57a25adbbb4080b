"""Stopping a carbon-ai command: SIGTERM (``kill``, systemd, a container stop) and SIGHUP (the terminal closed)
act as Ctrl-C does, so a command running a node graph takes it down in order (actuator bridges first) instead
of dying at once and leaving its node processes running.

Python's default SIGTERM and SIGHUP actions end the process without running any ``finally``; its SIGINT
raises KeyboardInterrupt, which the commands already turn into an orderly stop. :class:`StopSignals` makes the
three alike, and once the stop has begun it ignores further signals, so a second Ctrl-C or a service manager's
repeated SIGTERM cannot cut the stop short. Commands create rclpy contexts without rclpy's own signal handlers
(:func:`init_rclpy`): those would shut the context down under the running code (NotInitializedException).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """Context manager: inside, the first SIGINT, SIGTERM or SIGHUP raises KeyboardInterrupt (its message is the
    signal's name) and later ones are ignored. Outside the main thread (where Python cannot handle signals) it
    does nothing."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal's number
        self._previous: dict[int, Any] = {}
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

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def init_rclpy() -> None:
    """``rclpy.init()`` without rclpy's signal handlers (see the module docstring)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    try:
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    except TypeError:  # an rclpy without signal_handler_options
        rclpy.init()
