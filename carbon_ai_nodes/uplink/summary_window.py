"""Windowed totals of a vehicle's emission estimates and motion: the content of a CarbonSummary.

Two input streams, each time-stamped (s, the messages' header stamps):

- estimates: CO2 rate (g/s), fuel rate (L/h), physics-baseline CO2 rate (g/s), inference latency (us),
  1-sigma uncertainty (g/s), backend and model id
- states: speed (m/s), idle flag, the fuel meter's rate (L/h, NaN = no meter)

Measured vs modelled: an estimate counts as measured when the newest state at its arrival (stamped at most
``max_hold_s`` before it; the estimate is computed from that state) has a finite fuel meter reading. Its held
interval then adds the meter's litres times the emission factor to ``measured_co2_kg`` and its seconds to
``measured_s``; otherwise the estimate's CO2 goes to ``modelled_co2_kg`` and its uncertainty to
``co2_sigma_kg``. The emission factor is the one the estimator applied: its CO2 rate over its fuel rate
(g/L, exact for every combustion estimate, which scales both by one factor), named after the fuel of
``emission_model.FUEL_CO2_G_PER_L`` it matches. ``co2_kg`` stays the estimator's figure for the whole window.
The uncertainty is summed linearly (the model's error in one window is strongly correlated from sample to
sample, so this is the band for fully correlated errors, not a root-sum-square); the meter's own error is
not known here and is not included.

Each sample's rates hold from its stamp until the next sample of the same stream (zero-order hold), but for
at most ``max_hold_s``: a gap in the data is not filled with a guess. Held intervals are split exactly at
window boundaries. Windows are aligned to multiples of ``window_s`` since the Unix epoch, so summaries of a
fleet line up. A window closes when every stream has moved past its end, or, when a stream stops, once the
clock is ``max_hold_s + grace_s`` past that stream's last sample; that last sample then counts for as long as
the spacing before it (not the full hold). Windows without any sample produce nothing.

:meth:`SummaryWindow.snapshot` / :meth:`SummaryWindow.restore` carry the windows in progress (totals so far and
each stream's held sample) across a restart, so a crash loses only what arrived since the last snapshot.
"""

from __future__ import annotations

import dataclasses
import json
import math

from carbon_ai_nodes.carbon.emission_model import FUEL_CO2_G_PER_L
from carbon_ai_nodes.common.carbon_estimate_rules import MAX_CO2_RATE_G_S, check_co2_rates
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.vehicle_state_rules import check_vehicle_state


@dataclasses.dataclass(frozen=True)
class EstimateSample:
    """One CarbonEstimate: stamp (s), CO2 and physics CO2 rates (g/s), fuel rate (L/h, NaN = none), latency (us),
    1-sigma of the CO2 rate (g/s), ``<backend>:<model_id>``; ``metered_fuel_rate_lph`` is set by the window from
    the state it came from (NaN = no meter reading)."""

    stamp_s: float
    co2_rate_g_s: float
    physics_co2_rate_g_s: float
    fuel_rate_lph: float
    latency_us: int
    uncertainty_g_s: float = 0.0
    model: str = ""
    metered_fuel_rate_lph: float = math.nan


@dataclasses.dataclass(frozen=True)
class StateSample:
    """One VehicleState: stamp (s), speed (m/s), idle flag, fuel meter rate (L/h, NaN = no meter)."""

    stamp_s: float
    speed_mps: float
    is_idle: bool
    fuel_rate_lph: float = math.nan


@dataclasses.dataclass
class WindowTotals:
    """Totals of one closed window [start_s, end_s): the summary before it gets its asset and sequence."""

    start_s: float
    end_s: float
    co2_kg: float = 0.0
    fuel_l: float = 0.0
    distance_km: float = 0.0
    idle_s: float = 0.0
    avoided_co2_kg: float = 0.0
    estimate_count: int = 0
    worst_latency_us: int = 0
    measured_s: float = 0.0
    measured_co2_kg: float = 0.0
    modelled_co2_kg: float = 0.0
    co2_sigma_kg: float = 0.0
    model_ids: str = ""  # "+"-joined, sorted
    emission_factor: str = ""  # "+"-joined, sorted; "" = none known


def _joined(names: str, name: str) -> str:
    """``names`` ("+"-joined, sorted) with ``name`` added."""
    return "+".join(sorted(set(filter(None, names.split("+"))) | {name})) if name else names


def factor_label(g_per_l: float) -> str:
    """``"diesel 2689 g/L"``: an emission factor named after the fuel it matches (``"fuel"`` when none does)."""
    fuel = next((name for name, value in FUEL_CO2_G_PER_L.items() if abs(value - g_per_l) < 1.0), "fuel")
    return f"{fuel} {g_per_l:.0f} g/L"


# A fuel rate above this is a sensor fault, not a vehicle: a 4 MW mining truck burns ~1000 L/h.
MAX_FUEL_RATE_LPH = 5000.0
_EPS_S = 1e-6


def check_estimate(s: EstimateSample) -> None:
    """Raise InputRejectedError (reason ``nan`` or ``out_of_range``) for an implausible estimate."""
    if not math.isfinite(s.stamp_s):
        raise InputRejectedError("nan", f"stamp_s={s.stamp_s}")
    check_co2_rates(s.co2_rate_g_s, s.physics_co2_rate_g_s)
    if math.isinf(s.fuel_rate_lph) or not (math.isnan(s.fuel_rate_lph) or 0.0 <= s.fuel_rate_lph <= MAX_FUEL_RATE_LPH):
        raise InputRejectedError("out_of_range", f"fuel rate {s.fuel_rate_lph} L/h")
    if not 0.0 <= s.uncertainty_g_s <= MAX_CO2_RATE_G_S:  # NaN fails too
        raise InputRejectedError("out_of_range", f"uncertainty {s.uncertainty_g_s} g/s")


def check_state(s: StateSample) -> None:
    """Raise InputRejectedError (reason ``nan`` or ``out_of_range``) for an implausible state (the VehicleState
    rule, core.vehicle_state_rules, with stamp and speed required)."""
    check_vehicle_state(s, ("stamp_s", "speed_mps"))


class _Stream:
    """Last accepted sample of one stream and whether its held interval is still open."""

    def __init__(self) -> None:
        self.last: EstimateSample | StateSample | None = None
        self.open = False
        self.period_s = 0.0  # spacing of the last two samples: how long the final sample is taken to cover

    @property
    def last_s(self) -> float:
        return self.last.stamp_s if self.last is not None else -math.inf


class SummaryWindow:
    """Accumulates estimates and states into aligned windows; returns each window once it is complete."""

    def __init__(self, window_s: float = 10.0, max_hold_s: float = 1.0, grace_s: float = 0.5,
                 not_before_s: float = -math.inf) -> None:
        if not window_s > 0 or not max_hold_s > 0 or not grace_s >= 0:
            raise ValueError("window_s and max_hold_s must be > 0, grace_s >= 0")
        self.window_s = window_s
        self.max_hold_s = max_hold_s
        self.grace_s = grace_s
        self.not_before_s = not_before_s  # end of the last window already produced (e.g. before a restart)
        self._estimates = _Stream()
        self._states = _Stream()
        self._open: dict[int, WindowTotals] = {}
        self._g_per_l = math.nan  # the estimator's emission factor, from its last estimate with fuel

    # ----------------------------------------------------------------- inputs
    def add_estimate(self, sample: EstimateSample) -> list[WindowTotals]:
        """Take one estimate (checked first); returns the windows it completed, oldest first."""
        check_estimate(sample)
        self._admit(self._estimates, sample.stamp_s)
        self._close_interval(self._estimates, sample.stamp_s)
        state = self._states.last
        if isinstance(state, StateSample) and 0.0 <= sample.stamp_s - state.stamp_s <= self.max_hold_s \
                and 0.0 <= state.fuel_rate_lph <= MAX_FUEL_RATE_LPH:
            sample = dataclasses.replace(sample, metered_fuel_rate_lph=state.fuel_rate_lph)
        w = self._window(sample.stamp_s)
        w.estimate_count += 1
        w.model_ids = _joined(w.model_ids, sample.model)
        w.worst_latency_us = max(w.worst_latency_us, int(min(max(sample.latency_us, 0), 2**32 - 1)))
        self._estimates.last, self._estimates.open = sample, True
        return self._completed()

    def add_state(self, sample: StateSample) -> list[WindowTotals]:
        """Take one state (checked first); returns the windows it completed, oldest first."""
        check_state(sample)
        self._admit(self._states, sample.stamp_s)
        self._close_interval(self._states, sample.stamp_s)
        self._window(sample.stamp_s)
        self._states.last, self._states.open = sample, True
        return self._completed()

    @property
    def covered_to_s(self) -> float:
        """Stamp of the newest sample taken in (-inf before the first)."""
        return max(self._estimates.last_s, self._states.last_s)

    def snapshot(self) -> str:
        """The windows in progress and the held samples, as JSON (a few hundred bytes per open window)."""
        def stream(st: _Stream) -> dict:
            return {"last": dataclasses.asdict(st.last) if st.last else None, "open": st.open,
                    "period_s": st.period_s}

        return json.dumps({
            "window_s": self.window_s, "not_before_s": self.not_before_s,
            "estimates": stream(self._estimates), "states": stream(self._states),
            "open": [dataclasses.asdict(w) for w in self._open.values()],
        }, separators=(",", ":"))

    def restore(self, snapshot: str) -> bool:
        """Continue from :meth:`snapshot`; windows ending by ``not_before_s`` (already produced) are left out.

        Returns False, changing nothing, for a snapshot of another window length or one that does not parse.
        """
        try:
            data = json.loads(snapshot)
            if data["window_s"] != self.window_s:
                return False
            streams = []
            for key, cls in (("estimates", EstimateSample), ("states", StateSample)):
                st = _Stream()
                st.last = cls(**data[key]["last"]) if data[key]["last"] else None
                st.open, st.period_s = bool(data[key]["open"]) and st.last is not None, float(data[key]["period_s"])
                streams.append(st)
            not_before_s = max(self.not_before_s, float(data["not_before_s"]))
            for st in streams:  # a sample of a window already produced must not reopen it
                st.open = st.open and st.last_s >= not_before_s
            windows = [WindowTotals(**w) for w in data["open"]]
        except (ValueError, KeyError, TypeError):
            return False
        self._estimates, self._states = streams
        self.not_before_s = not_before_s
        self._open = {self._index(w.start_s + self.window_s / 2): w for w in windows if w.end_s > not_before_s}
        return True

    def flush(self, now_s: float) -> list[WindowTotals]:
        """Close the held interval of streams silent for ``max_hold_s + grace_s``; returns completed windows."""
        for stream in (self._estimates, self._states):
            if stream.open and now_s - stream.last_s >= self.max_hold_s + self.grace_s:
                self._close_interval(stream, stream.last_s + stream.period_s)
                stream.open = False
        return self._completed()

    # ----------------------------------------------------------------- internals
    def _admit(self, stream: _Stream, stamp_s: float) -> None:
        if stamp_s < self.not_before_s:
            raise InputRejectedError("stale", f"stamp {stamp_s:.3f} precedes the last produced window")
        if stamp_s < stream.last_s:
            raise InputRejectedError("out_of_order", f"stamp {stamp_s:.3f} < previous {stream.last_s:.3f}")
        stream.period_s = stamp_s - stream.last_s if stream.open else 0.0

    def _index(self, t_s: float) -> int:
        k = int(math.floor(t_s / self.window_s))
        # floor of a quotient can land one off at a boundary; the window is the one with start <= t < end
        if (k + 1) * self.window_s <= t_s:
            k += 1
        elif k * self.window_s > t_s:
            k -= 1
        return k

    def _window(self, t_s: float) -> WindowTotals:
        k = self._index(t_s)
        w = self._open.get(k)
        if w is None:
            w = self._open[k] = WindowTotals(start_s=k * self.window_s, end_s=(k + 1) * self.window_s)
        return w

    def _close_interval(self, stream: _Stream, until_s: float) -> None:
        """Integrate the stream's last sample over [last, min(until, last + max_hold)], split at boundaries."""
        s = stream.last
        if s is None or not stream.open:
            return
        t0, t1 = s.stamp_s, min(until_s, s.stamp_s + self.max_hold_s)
        while t1 - t0 > _EPS_S:  # a float sliver past a boundary must not open a window of its own
            w = self._window(t0)
            seg_end = min(t1, w.end_s)
            dt = seg_end - t0
            if isinstance(s, EstimateSample):
                self._add_estimate_interval(w, s, dt)
            else:
                w.distance_km += max(s.speed_mps, 0.0) * dt / 1000.0
                if s.is_idle:
                    w.idle_s += dt
            t0 = seg_end
        stream.open = False

    def _add_estimate_interval(self, w: WindowTotals, s: EstimateSample, dt: float) -> None:
        w.co2_kg += s.co2_rate_g_s * dt / 1000.0
        w.avoided_co2_kg += (s.physics_co2_rate_g_s - s.co2_rate_g_s) * dt / 1000.0
        if not math.isnan(s.fuel_rate_lph):
            w.fuel_l += s.fuel_rate_lph * dt / 3600.0
            if s.fuel_rate_lph > 0.0 and s.co2_rate_g_s > 0.0:
                self._g_per_l = s.co2_rate_g_s * 3600.0 / s.fuel_rate_lph
                w.emission_factor = _joined(w.emission_factor, factor_label(self._g_per_l))
        if math.isfinite(s.metered_fuel_rate_lph) and math.isfinite(self._g_per_l):
            w.measured_s += dt
            w.measured_co2_kg += s.metered_fuel_rate_lph * dt / 3600.0 * self._g_per_l / 1000.0
            w.emission_factor = _joined(w.emission_factor, factor_label(self._g_per_l))  # (an earlier window's)
        else:  # no meter, or no factor to turn its litres into CO2 (an electric drive)
            w.modelled_co2_kg += s.co2_rate_g_s * dt / 1000.0
            w.co2_sigma_kg += s.uncertainty_g_s * dt / 1000.0

    def _completed(self) -> list[WindowTotals]:
        done = []
        for k in sorted(self._open):
            end_s = (k + 1) * self.window_s
            if any(stream.open and stream.last_s < end_s for stream in (self._estimates, self._states)):
                break  # a held interval may still reach into window k
            done.append(self._open.pop(k))
            # a late sample must not reopen a window already handed out
            self.not_before_s = max(self.not_before_s, end_s)
        return done
