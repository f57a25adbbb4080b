"""How plans and estimates become the actuator bridge's AUTO target (pure; no ROS imports).

- speed: the recommended ``arc_speed_mps`` of the route arc the vehicle is on. The arc is the segment
  (stop k-1 -> stop k) nearest to the vehicle's local ENU position, searched from the last arc onwards so
  progress along a route that doubles back never jumps backwards. Off the route (farther than a limit), or
  where the arc has no recommendation, the configured cruise limit applies.
- engine load: a configured limit, scaled down by ``co2_limit / co2_rate`` while the estimated CO2 rate
  exceeds the limit, never below a floor.
- power: the current slot of this asset's LoadSchedule; outside the schedule, a configured default.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class RouteTrack:
    """One vehicle's route: stop positions (local ENU, m) and the recommended speed arriving at each (m/s).

    ``arc_speed_mps[k]`` belongs to the arc from stop k-1 to stop k; NaN = no recommendation.
    """

    plan_id: str
    east_m: np.ndarray
    north_m: np.ndarray
    arc_speed_mps: np.ndarray

    def same_route(self, other: RouteTrack) -> bool:
        """True when ``other`` is this plan again (a periodic re-send), so progress along it can be kept."""
        return (self.plan_id == other.plan_id and np.array_equal(self.east_m, other.east_m)
                and np.array_equal(self.north_m, other.north_m)
                and np.array_equal(self.arc_speed_mps, other.arc_speed_mps, equal_nan=True))

    def __post_init__(self) -> None:
        n = len(self.east_m)
        if n == 0 or len(self.north_m) != n or len(self.arc_speed_mps) != n:
            raise ValueError("route track: needs at least one stop, with one position and speed per stop")


class RouteFollower:
    """Tracks which arc of a :class:`RouteTrack` the vehicle is on; progress only moves forwards.

    A closed track (last stop within ``CLOSED_TOLERANCE_M`` of the first, as a fixed haul loop is published)
    wraps around: the search looks ``LOOKAHEAD_ARCS`` arcs ahead of the current one, through the end of the
    loop into its start, so a vehicle on its second lap is not stuck on the last arc, and a return leg that
    runs beside the outbound one (a haul road's two lanes) is not mistaken for it. Only when nothing in that
    window is near (GNSS outage, a detour) does it search the whole loop again.
    """

    CLOSED_TOLERANCE_M = 1.0
    LOOKAHEAD_ARCS = 40

    def __init__(self, track: RouteTrack) -> None:
        self.track = track
        self.arc_index = 1  # arc k arrives at stop k; arc 0 does not exist
        n = len(track.east_m)
        self.closed = n > 2 and math.hypot(track.east_m[-1] - track.east_m[0],
                                           track.north_m[-1] - track.north_m[0]) <= self.CLOSED_TOLERANCE_M

    def _nearest(self, arcs: np.ndarray, east_m: float, north_m: float) -> tuple[int, float]:
        """(arc index, distance m) of the arc in ``arcs`` nearest to the position."""
        t = self.track
        ax, ay, bx, by = t.east_m[arcs - 1], t.north_m[arcs - 1], t.east_m[arcs], t.north_m[arcs]
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.where(length2 > 0, ((east_m - ax) * dx + (north_m - ay) * dy) / length2, 0.0)
        u = np.clip(u, 0.0, 1.0)
        distance_m = np.hypot(ax + u * dx - east_m, ay + u * dy - north_m)
        best = int(np.argmin(distance_m))
        return int(arcs[best]), float(distance_m[best])

    def speed_limit_mps(self, east_m: float, north_m: float, cruise_mps: float, max_offset_m: float) -> float:
        """Recommended speed cap at this position (m/s); ``cruise_mps`` off the route or without advice."""
        t = self.track
        n = len(t.east_m)
        if n < 2 or not (math.isfinite(east_m) and math.isfinite(north_m)):
            return cruise_mps
        start = min(self.arc_index, n - 1)
        if self.closed:
            # arcs 1..n-1 form the loop; look ahead from the current arc, wrapping past the end
            window = (start - 1 + np.arange(min(self.LOOKAHEAD_ARCS, n - 1))) % (n - 1) + 1
            arc, distance_m = self._nearest(window, east_m, north_m)
            if distance_m > max_offset_m:
                arc, distance_m = self._nearest(np.arange(1, n), east_m, north_m)
        else:
            arc, distance_m = self._nearest(np.arange(start, n), east_m, north_m)
        if distance_m > max_offset_m:
            return cruise_mps
        self.arc_index = arc
        speed = float(t.arc_speed_mps[self.arc_index])
        if not math.isfinite(speed) or speed <= 0.0:
            return cruise_mps
        return min(speed, cruise_mps)


@dataclasses.dataclass(frozen=True)
class PowerSchedule:
    """One asset's power setpoints (kW) per slot of ``slot_s`` seconds from ``start_s`` (caller's clock)."""

    plan_id: str
    start_s: float
    slot_s: float
    power_kw: tuple[float, ...]

    def power_at(self, now_s: float, default_kw: float) -> float:
        """Setpoint of the slot containing ``now_s``; ``default_kw`` before the start or after the end.

        Never raises, whatever the fields hold: a denormal slot makes the slot index overflow to inf (once
        ``math.floor(inf)`` raised OverflowError on every control tick), which is simply past the end here.
        """
        offset_s = now_s - self.start_s
        if not (offset_s >= 0.0 and self.slot_s > 0.0):  # also False for NaN
            return default_kw
        index = offset_s / self.slot_s
        if index < len(self.power_kw):  # False for inf and NaN
            return self.power_kw[int(index)]
        return default_kw


def co2_tightened_load_pct(base_pct: float, co2_rate_g_s: float, co2_limit_g_s: float, floor_pct: float) -> float:
    """Engine load cap (%) scaled by ``limit / rate`` while the CO2 rate (g/s) exceeds the limit (0 = off)."""
    if co2_limit_g_s <= 0 or not math.isfinite(co2_rate_g_s) or co2_rate_g_s <= co2_limit_g_s:
        return base_pct
    return max(min(floor_pct, base_pct), base_pct * co2_limit_g_s / co2_rate_g_s)
