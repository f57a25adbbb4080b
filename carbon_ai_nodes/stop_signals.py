"""Stopping a command that runs a node graph: SIGTERM (``kill``, systemd, a container stop) and SIGHUP (the
terminal closed) act as Ctrl-C does, so the graph is taken down in order (actuator bridges first) instead of
the command dying at once and leaving its node processes running.

Python's default SIGTERM and SIGHUP actions end the process without running any ``finally``; its SIGINT
raises KeyboardInterrupt, which the commands already turn into an orderly stop. :class:`StopSignals` makes the
three alike, and once the stop has begun it ignores further signals, so a second Ctrl-C or a service manager's
repeated SIGTERM cannot cut the stop short. Commands create rclpy contexts without rclpy's own signal handlers
(:func:`init_rclpy`): those would shut the context down under the running code (NotInitializedException).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """Context manager (main thread only): the first SIGINT, SIGTERM or SIGHUP raises KeyboardInterrupt and
    sets :attr:`stopping`; later ones are ignored. Call :meth:`begin_stop` before an orderly stop that must not
    be interrupted. ``received`` is the first signal's number (None if none came)."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def begin_stop(self) -> None:
        """From now on signals are only recorded: the stop in progress runs to its end."""
        self.stopping.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if not self.stopping.is_set():
            self.stopping.set()
            raise KeyboardInterrupt(signal.Signals(signum).name)

    def __enter__(self) -> StopSignals:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def init_rclpy() -> None:
    """``rclpy.init()`` without rclpy's signal handlers (see the module docstring)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    try:
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    except TypeError:  # an rclpy without signal_handler_options
        rclpy.init()
