"""Summary window core: exact integration, window alignment and closing, input rejection."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.uplink.summary_window import EstimateSample, StateSample, SummaryWindow


def est(t, co2=2.0, physics=2.5, fuel=10.0, latency=1000):
    return EstimateSample(t, co2, physics, fuel, latency)


def run(window, t0, n, dt, speed=10.0, idle=False, **kw):
    out = []
    for i in range(n):
        t = t0 + i * dt
        out += window.add_estimate(est(t, **kw))
        out += window.add_state(StateSample(t, speed, idle))
    return out


def test_steady_rates_integrate_exactly_per_aligned_window():
    w = SummaryWindow(window_s=10.0)
    out = run(w, 1000.0, 400, 0.1, latency=1500) + w.flush(2000.0)
    assert [(o.start_s, o.end_s) for o in out] == [(1000.0 + 10 * k, 1010.0 + 10 * k) for k in range(4)]
    for o in out:
        assert o.co2_kg == pytest.approx(0.020)  # 2 g/s * 10 s
        assert o.avoided_co2_kg == pytest.approx(0.005)  # (2.5 - 2) g/s * 10 s
        assert o.fuel_l == pytest.approx(10.0 / 360.0)
        assert o.distance_km == pytest.approx(0.1)
        assert o.estimate_count == 100 and o.worst_latency_us == 1500
        assert o.idle_s == 0.0


def test_window_closes_only_when_every_stream_has_passed_its_end():
    w = SummaryWindow(window_s=1.0)
    assert w.add_estimate(est(0.5)) == []
    assert w.add_state(StateSample(0.5, 1.0, True)) == []
    assert w.add_estimate(est(1.2)) == []  # states still inside window 0
    (done,) = w.add_state(StateSample(1.1, 1.0, True))
    assert (done.start_s, done.end_s) == (0.0, 1.0)
    assert done.idle_s == pytest.approx(0.5)


def test_gap_is_not_filled_beyond_max_hold_and_silent_streams_close_on_flush():
    w = SummaryWindow(window_s=10.0, max_hold_s=1.0, grace_s=0.5)
    w.add_estimate(est(0.0, co2=1.0))
    w.add_estimate(est(5.0, co2=1.0))  # 5 s gap: only 1 s of it counts
    assert w.flush(5.5) == []  # grace not over yet
    (done,) = w.flush(7.0)
    assert done.co2_kg == pytest.approx(0.001 * (1.0 + 1.0))  # 1 s held + the last sample covers the 1 s spacing


@pytest.mark.parametrize(("sample", "reason"), [
    (est(1.0, co2=math.nan), "nan"),
    (est(math.inf), "nan"),
    (est(1.0, co2=-1e9), "out_of_range"),  # -1.0 is an electric drive regenerating: accepted
    (est(1.0, co2=1e9), "out_of_range"),
    (est(1.0, fuel=-3.0), "out_of_range"),
    (est(1.0, fuel=math.inf), "out_of_range"),
])
def test_bad_estimates_are_rejected_with_reason(sample, reason):
    w = SummaryWindow()
    with pytest.raises(InputRejectedError) as info:
        w.add_estimate(sample)
    assert info.value.reason == reason


def test_nan_fuel_means_no_fuel_measurement_not_a_reject():
    w = SummaryWindow(window_s=1.0)
    w.add_estimate(est(0.0, fuel=math.nan))
    w.add_estimate(est(0.5, fuel=math.nan))
    (done,) = w.add_estimate(est(1.5, fuel=math.nan))
    assert done.fuel_l == 0.0 and done.co2_kg > 0


def test_out_of_order_and_already_summarised_stamps_are_rejected():
    w = SummaryWindow(window_s=1.0)
    w.add_estimate(est(2.0))
    with pytest.raises(InputRejectedError, match="out_of_order"):
        w.add_estimate(est(1.9))
    restarted = SummaryWindow(window_s=1.0, not_before_s=3.0)
    with pytest.raises(InputRejectedError) as info:
        restarted.add_state(StateSample(2.5, 1.0, False))
    assert info.value.reason == "stale"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 0.9), min_size=2, max_size=200), st.floats(0.0, 50.0))
def test_total_co2_equals_the_held_integral_whatever_the_spacing(gaps, rate):
    w = SummaryWindow(window_s=1.0, max_hold_s=1.0)
    t, out = 100.0, []
    for g in gaps:
        out += w.add_estimate(est(t, co2=rate, physics=rate))
        t += g
    out += w.add_estimate(est(t, co2=rate, physics=rate))
    out += w.flush(t + 10.0)
    expected = rate * (t - 100.0 + gaps[-1]) / 1000.0  # the last sample covers the spacing before it
    assert sum(o.co2_kg for o in out) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    starts = [o.start_s for o in out]
    assert starts == sorted(set(starts))  # every window once, in order


def test_a_snapshot_restored_after_a_restart_gives_the_same_windows_as_no_restart():
    whole, first = SummaryWindow(window_s=10.0), SummaryWindow(window_s=10.0)
    expected = run(whole, 1000.0, 150, 0.1) + whole.flush(2000.0)
    produced = run(first, 1000.0, 75, 0.1)  # 7.5 s in: window [1000, 1010) in progress
    snap = first.snapshot()
    second = SummaryWindow(window_s=10.0, not_before_s=produced[-1].end_s if produced else -math.inf)
    assert second.restore(snap) and second.covered_to_s == pytest.approx(1007.4)
    produced += run(second, 1007.5, 75, 0.1) + second.flush(2000.0)
    assert [(w.start_s, round(w.co2_kg, 9), w.estimate_count) for w in produced] == \
        [(w.start_s, round(w.co2_kg, 9), w.estimate_count) for w in expected]
    assert not SummaryWindow(window_s=5.0).restore(snap)  # another window length: not restored
    assert not SummaryWindow(window_s=10.0).restore("{broken")
    done = SummaryWindow(window_s=10.0, not_before_s=1010.0)  # the window was produced after the snapshot
    assert done.restore(snap) and done.flush(2000.0) == []
