"""Input watchdog and rejection counters: the bookkeeping behind /diagnostics and log-once."""

from __future__ import annotations

import math

from carbon_ai_nodes.common.health import OK, WARN, HealthMonitor, InputWatchdog


def test_watchdog_marks_stale_once_and_recovers():
    w = InputWatchdog()
    w.watch("gnss", 0.5, now_s=0.0)
    assert w.poll(0.4) == []
    assert w.poll(0.6) == ["gnss"]
    assert w.poll(5.0) == []  # still stale: counted once per outage
    assert w.missed_deadlines["gnss"] == 1 and w.is_stale("gnss")
    assert w.age_s("gnss", 5.0) == 5.0
    assert w.feed("gnss", 5.1) is True and not w.is_stale("gnss")
    assert w.poll(5.7) == ["gnss"] and w.missed_deadlines["gnss"] == 2


def test_watchdog_zero_timeout_never_stale_and_unknown_age_is_inf():
    w = InputWatchdog()
    w.watch("engine", 0.0, now_s=0.0)
    assert w.poll(1e6) == []
    assert math.isinf(w.age_s("never", 1.0))
    w.watch("imu", 0.1, now_s=0.0)
    w.poll(1.0)
    w.rearm(2.0)
    assert not w.stale and w.poll(2.05) == []


def test_rejections_log_once_per_state_change_and_report_warn():
    h = HealthMonitor()
    assert h.rejected("gnss", "nan") is True
    assert h.rejected("gnss", "nan") is False
    assert h.rejected("gnss", "jump") is True  # a new reason is a new state
    assert h.accepted("gnss", 1.0) is True  # recovery is logged
    assert h.accepted("gnss", 1.1) is False
    snap = h.snapshot()
    assert snap.level == WARN and "3 input(s) rejected" in snap.message
    assert snap.values["rejected.gnss.nan"] == "2" and snap.values["rejected_total"] == "3"
    again = h.snapshot()
    assert again.level == OK and again.message == "ok"  # nothing new since the last report


def test_stale_inputs_and_node_status_escalate():
    h = HealthMonitor()
    h.watchdog.watch("odom", 0.1, 0.0)
    h.watchdog.poll(1.0)
    assert h.snapshot().level == WARN
    h.set_status(2, "ESTOP latched")
    snap = h.snapshot({"mode": "ESTOP"})
    assert snap.level == 2 and snap.message.startswith("ESTOP latched")
    assert snap.values["mode"] == "ESTOP" and snap.values["missed_deadlines.odom"] == "1"
    assert h.internal_error("cb") is True and h.internal_error("cb") is False
