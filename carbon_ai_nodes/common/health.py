"""Input health bookkeeping shared by every node: rejection counters, an input watchdog, log-once state changes.

Pure Python; the node's diagnostics publisher turns a :class:`HealthSnapshot` into diagnostic_msgs.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

OK, WARN, ERROR = 0, 1, 2  # same values as diagnostic_msgs/DiagnosticStatus levels


@dataclasses.dataclass(frozen=True)
class HealthSnapshot:
    """What one diagnostics report says: a level (OK/WARN/ERROR), a one-line message and key/values."""

    level: int
    message: str
    values: dict[str, str]


class InputWatchdog:
    """Declares inputs stale when nothing arrived within their timeout (seconds, on the caller's clock).

    The node's timer calls :meth:`poll`; each transition fresh -> stale counts one missed deadline.
    Inputs that never arrived are stale from the first poll after their timeout since :meth:`watch`.
    """

    def __init__(self) -> None:
        self._timeout_s: dict[str, float] = {}
        self._last_s: dict[str, float] = {}
        self._stale: set[str] = set()
        self.missed_deadlines: Counter[str] = Counter()

    def watch(self, name: str, timeout_s: float, now_s: float) -> None:
        """Start (or re-arm) watching ``name``; a non-positive timeout means never stale."""
        self._timeout_s[name] = timeout_s
        self._last_s.setdefault(name, now_s)

    def unwatch(self, name: str) -> None:
        """Stop watching ``name`` (e.g. the input was switched off)."""
        self._timeout_s.pop(name, None)
        self._last_s.pop(name, None)
        self._stale.discard(name)

    def rearm(self, now_s: float) -> None:
        """Give every watched input a full timeout from ``now_s`` (e.g. on activation)."""
        for name in self._timeout_s:
            self._last_s[name] = now_s
        self._stale.clear()

    def clear(self) -> None:
        """Stop watching everything."""
        self._timeout_s.clear()
        self._last_s.clear()
        self._stale.clear()

    def feed(self, name: str, now_s: float) -> bool:
        """Record an accepted message; returns True if the input was stale and is fresh again."""
        self._last_s[name] = now_s
        if name in self._stale:
            self._stale.discard(name)
            return True
        return False

    def poll(self, now_s: float) -> list[str]:
        """Return the inputs that became stale since the last poll."""
        newly = []
        for name, timeout_s in self._timeout_s.items():
            if timeout_s <= 0 or name in self._stale:
                continue
            if now_s - self._last_s.get(name, now_s) > timeout_s:
                self._stale.add(name)
                self.missed_deadlines[name] += 1
                newly.append(name)
        return newly

    def age_s(self, name: str, now_s: float) -> float:
        """Seconds since the last accepted message of ``name`` (or since watching began); inf if unknown."""
        last = self._last_s.get(name)
        return math.inf if last is None else max(0.0, now_s - last)

    def is_stale(self, name: str) -> bool:
        """True while ``name`` is past its timeout."""
        return name in self._stale

    @property
    def stale(self) -> frozenset[str]:
        """Names of the inputs currently stale."""
        return frozenset(self._stale)


class HealthMonitor:
    """Counters of accepted/rejected inputs and internal errors, with log-once state tracking.

    :meth:`rejected` and :meth:`accepted` return True exactly when an input changes between
    "accepting" and "rejecting for reason X": log then, and only then.
    """

    def __init__(self) -> None:
        self.accepted_count: Counter[str] = Counter()
        self.rejected_count: Counter[tuple[str, str]] = Counter()
        self.internal_errors: Counter[str] = Counter()
        self.watchdog = InputWatchdog()
        self._rejecting: dict[str, str] = {}
        self._reported_rejections = 0
        self._reported_errors = 0
        self.status_level = OK
        self.status_message = ""

    def accepted(self, name: str, now_s: float) -> bool:
        """Count an accepted message; True if the input recovers from rejecting or from staleness."""
        self.accepted_count[name] += 1
        was_rejecting = self._rejecting.pop(name, None) is not None
        was_stale = self.watchdog.feed(name, now_s)
        return was_rejecting or was_stale

    def rejected(self, name: str, reason: str) -> bool:
        """Count a rejected message; True if this starts a new rejection state (log it)."""
        self.rejected_count[(name, reason)] += 1
        if self._rejecting.get(name) == reason:
            return False
        self._rejecting[name] = reason
        return True

    def internal_error(self, where: str) -> bool:
        """Count an unexpected exception caught at a callback boundary; True the first time per place."""
        self.internal_errors[where] += 1
        return self.internal_errors[where] == 1

    def set_status(self, level: int, message: str) -> None:
        """Node-level status (e.g. ``ERROR, "ESTOP latched"``) that the report escalates to."""
        self.status_level = level
        self.status_message = message

    @property
    def total_rejected(self) -> int:
        """Rejected messages over all inputs and reasons."""
        return sum(self.rejected_count.values())

    def snapshot(self, extra: dict[str, str] | None = None) -> HealthSnapshot:
        """The current report. WARN while inputs are stale or new rejections/errors happened since the last one."""
        total_rejected = self.total_rejected
        total_errors = sum(self.internal_errors.values())
        new_rejections = total_rejected - self._reported_rejections
        new_errors = total_errors - self._reported_errors
        self._reported_rejections = total_rejected
        self._reported_errors = total_errors

        level = self.status_level
        problems = [self.status_message] if self.status_message else []
        stale = sorted(self.watchdog.stale)
        if stale:
            level = max(level, WARN)
            problems.append("stale: " + ", ".join(stale))
        if new_rejections:
            level = max(level, WARN)
            problems.append(f"{new_rejections} input(s) rejected")
        if new_errors:
            level = max(level, WARN)
            problems.append(f"{new_errors} internal error(s)")

        values: dict[str, str] = {}
        for name, count in sorted(self.accepted_count.items()):
            values[f"accepted.{name}"] = str(count)
        for (name, reason), count in sorted(self.rejected_count.items()):
            values[f"rejected.{name}.{reason}"] = str(count)
        for name, count in sorted(self.watchdog.missed_deadlines.items()):
            values[f"missed_deadlines.{name}"] = str(count)
        for where, count in sorted(self.internal_errors.items()):
            values[f"internal_errors.{where}"] = str(count)
        values["rejected_total"] = str(total_rejected)
        values["missed_deadlines_total"] = str(sum(self.watchdog.missed_deadlines.values()))
        if extra:
            values.update(extra)
        return HealthSnapshot(level=level, message="; ".join(problems) or "ok", values=values)
