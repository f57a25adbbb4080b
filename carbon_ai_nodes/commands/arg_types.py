"""argparse ``type=`` checks of the carbon-ai commands: a bad value is a one-line usage error naming the
value and the rule (``argument --duration: 0 s: must be > 0``), before anything starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

MAX_SOLVER_TIME_LIMIT_S = 3600.0  # a planner answer later than an hour is no longer a plan for this shift


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
    return value


def seconds(lo: float = 0.0, hi: float = math.inf, lo_inclusive: bool = False) -> Callable[[str], float]:
    """A type for a duration in seconds in (lo, hi] (or [lo, hi] with ``lo_inclusive``)."""
    rule = (f">= {lo:g}" if lo_inclusive else f"> {lo:g}") + (f" and <= {hi:g}" if math.isfinite(hi) else "")

    def parse(text: str) -> float:
        value = _number(text)
        if not ((value >= lo if lo_inclusive else value > lo) and value <= hi):
            raise argparse.ArgumentTypeError(f"{text} s: must be {rule}")
        return value

    return parse


positive_seconds = seconds()
non_negative_seconds = seconds(lo_inclusive=True)
solver_time_limit = seconds(hi=MAX_SOLVER_TIME_LIMIT_S)


def positive_number(text: str) -> float:
    """A finite number > 0 (a rate, a length)."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (a count where 0 means all or none)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 0")
    return value


def new_file(text: str) -> str:
    """A file to write: its directory must exist (nothing is created outside it) and it is not a directory."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} does not exist; create it first")
    return str(path)
