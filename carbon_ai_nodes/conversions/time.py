"""builtin_interfaces Time/Duration <-> float seconds."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Duration, Time


def to_seconds(stamp: Time | Duration) -> float:
    """Seconds as a float from a Time or Duration message."""
    return stamp.sec + stamp.nanosec * 1e-9


def to_time(seconds: float) -> Time:
    """A Time message from float seconds (>= 0; NaN/inf/negative give time zero)."""
    if not math.isfinite(seconds) or seconds < 0:
        return Time()
    sec = int(seconds)
    nanosec = min(int(round((seconds - sec) * 1e9)), 999_999_999)
    return Time(sec=sec, nanosec=nanosec)


def to_duration(seconds: float) -> Duration:
    """A Duration message from float seconds (>= 0; NaN/inf/negative give zero)."""
    t = to_time(seconds)
    return Duration(sec=t.sec, nanosec=t.nanosec)
