"""builtin_interfaces Time/Duration <-> float seconds, and the one rule every node applies to header stamps."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Duration, Time

from carbon_ai_nodes.common.errors import InputRejectedError


def to_seconds(stamp: Time | Duration) -> float:
    """Seconds as a float from a Time or Duration message."""
    return stamp.sec + stamp.nanosec * 1e-9


def header_stamp_s(stamp: Time) -> float | None:
    """A header stamp in seconds; None when it was never set (all zero: a driver without a clock, ``ros2 topic
    pub``), which the caller judges by arrival time.

    A negative ``sec`` (before the epoch) or ``nanosec`` >= 1e9 is no clock reading at all: it raises
    InputRejectedError("bad_stamp") instead of passing for "unstamped" or for a very old stamp.
    """
    if stamp.sec < 0 or stamp.nanosec >= 1_000_000_000:
        raise InputRejectedError("bad_stamp", f"sec={stamp.sec}, nanosec={stamp.nanosec}")
    if stamp.sec == 0 and stamp.nanosec == 0:
        return None
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_or_now(stamp: Time, now_s: float) -> float:
    """Header stamp in seconds (see :func:`header_stamp_s`), or ``now_s`` (s) when it was never set."""
    stamp_s = header_stamp_s(stamp)
    return now_s if stamp_s is None else stamp_s


def to_time(seconds: float) -> Time:
    """A Time message from float seconds (>= 0; NaN/inf/negative give time zero)."""
    if not math.isfinite(seconds) or seconds < 0:
        return Time()
    sec = int(seconds)
    nanosec = min(int(round((seconds - sec) * 1e9)), 999_999_999)
    return Time(sec=sec, nanosec=nanosec)
