"""Eco-driving speed profile for a fixed route (pure; no ROS imports).

Haul roads, yard loops and fixed delivery rounds need no routing, but how the vehicle drives them still sets
its CO2. With the emission model's Willans engine (``carbon/emission_model.py``) steady cruising gets *cheaper*
per metre with speed (engine friction is paid per second), so lowering the cruise speed alone does not save
anything. What does save is not throwing kinetic energy away in the brakes: lift off early and glide into a
stop, and crest a downhill slowly and let gravity bring the speed back, with the engine motored at fuel cut: the
cap beyond a crest rises no faster than the vehicle gains speed rolling down it (a forward coasting envelope), so
a speed controller tracking the caps never powers down a hill.

:func:`eco_profile` resamples a closed route every ``spacing_m`` and computes a speed cap per point:
the route's cruise speed, lowered by a backward *coasting envelope* from each stop (load/dump point) and from
each stretch the vehicle would otherwise brake on (a downhill held at the cruise speed). The envelope uses the
vehicle's own coast-down deceleration (road load + grade, with the payload on board) plus ``extra_decel_mps2``
so that, tracked by a speed controller, the engine stays in overrun. Crawling is expensive too (friction per
metre grows as speed falls), so the crest envelope never goes below a floor speed; the floor and the glide
deceleration are chosen by simulating the loop with the emission model for a few candidates
(:func:`simulate_loop`) and keeping the lowest CO2 whose loop time stays within ``max_time_increase_pct`` of
driving at the cruise speed: on a haul road cycle time is production, so the saving may not cost much of it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from carbon_ai_nodes.carbon.emission_model import road_load_n
from carbon_ai_nodes.common.frames import G_MPS2
from carbon_ai_nodes.common.params import param
from carbon_ai_nodes.planning.calibrated_model import CalibratedModelParams, RatesFn


@dataclasses.dataclass(frozen=True)
class EcoSpeedParams(CalibratedModelParams):
    """Parameters of the ``eco_speed`` node (eco-driving speed advice on a fixed route)."""

    SECTION: ClassVar[str] = "eco_speed"
    scenario_file: str = param("", "Scenario YAML holding the vehicle's profile and fixed route")
    vehicle_id: str = param("", "Vehicle of the scenario (empty = the first one)")
    enabled: bool = param(True, "Publish eco speed caps; false = the route with no speed advice (baseline)")
    spacing_m: float = param(5.0, "Distance between the route points the caps are given at", unit="m",
                             gt=0.0, max=500.0)
    extra_decel_mps2: float = param(0.1, "Added to the coast-down deceleration so the engine stays in overrun "
                                    "while a speed controller tracks the envelope", unit="m/s^2", min=0.0, max=2.0)
    max_time_increase_pct: float = param(15.0, "Largest loop-time increase the eco profile may cost", unit="%",
                                         min=0.0, max=200.0)
    max_accel_mps2: float = param(1.0, "Acceleration the loop prediction assumes", unit="m/s^2", gt=0.0, max=10.0)
    max_decel_mps2: float = param(1.5, "Braking the loop prediction assumes", unit="m/s^2", gt=0.0, max=10.0)
    dwell_s: float = param(8.0, "Time stopped at each load/dump point in the loop prediction", unit="s", min=0.0)
    frame_id: str = param("map", "Frame of the published positions (the scenario's local ENU)")
    republish_period_s: float = param(2.0, "Send the (unchanged) plan again this often, for consumers that were "
                                      "not active when it was first sent (0 = only on changes)", unit="s",
                                      min=0.0, max=3600.0)

    def check(self) -> None:
        """The route comes from a scenario."""
        if not self.scenario_file:
            self.fail("scenario_file", "set scenario_file (with vehicle_id): the fixed route comes from it")


@dataclasses.dataclass(frozen=True)
class RoutePoints:
    """A closed route resampled along its length; arrays of one entry per point (the last = the first).

    east_m/north_m/up_m: position (local ENU, m); s_m: distance along the loop (m); grade: of the stretch that
    starts at the point (rise/run); payload_kg: on board on that stretch; cruise_mps: cruise speed there;
    is_stop: the vehicle stops at this point (load/dump) for ``dwell_s``.
    """

    east_m: np.ndarray
    north_m: np.ndarray
    up_m: np.ndarray
    s_m: np.ndarray
    grade: np.ndarray
    payload_kg: np.ndarray
    cruise_mps: np.ndarray
    is_stop: np.ndarray


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """Loop totals predicted with the emission model: CO2 (g), fuel (L), time (s), distance (m)."""

    co2_g: float
    fuel_l: float
    time_s: float
    distance_m: float

    @property
    def co2_g_per_km(self) -> float:
        """CO2 intensity of the loop (g/km)."""
        return self.co2_g / self.distance_m * 1000.0 if self.distance_m > 0 else math.nan


@dataclasses.dataclass(frozen=True)
class EcoProfile:
    """Speed caps per route point (m/s; ``speed_cap_mps[i]`` applies on the stretch arriving at point i),
    the chosen floor speed (m/s) and the predicted loop with (``eco``) and without (``baseline``) the caps."""

    points: RoutePoints
    speed_cap_mps: np.ndarray
    floor_mps: float
    eco: LoopResult
    baseline: LoopResult
    co2_g_per_m: np.ndarray  # predicted CO2 per metre on the stretch arriving at each point (for colouring)
    model: str = "generic"  # which emission model planned it: "generic" (the profile) or "calibrated"

    @property
    def predicted_saving_pct(self) -> float:
        """Predicted CO2 saving per loop (%; positive = eco emits less)."""
        b = self.baseline.co2_g_per_km
        return (b - self.eco.co2_g_per_km) / b * 100.0 if b > 0 else math.nan


def resample_route(route: Any, initial_payload_kg: float, spacing_m: float) -> RoutePoints:
    """Points every ~``spacing_m`` (m) along a closed :class:`~carbon_ai_nodes.sim.vehicle_sim.Route`.

    Payload follows the simulator's rule: it switches on arriving at a waypoint with ``payload_kg`` (a stop).
    """
    if not spacing_m > 0:
        raise ValueError(f"spacing_m={spacing_m}: must be > 0")
    n = len(route.waypoints)
    # payload on board when leaving waypoint 0: what the loop's last stop set, else the initial value
    payload = initial_payload_kg
    if route.waypoints[0].payload_kg is not None:
        payload = route.waypoints[0].payload_kg
    east, north, up, s, grade, load, cruise, stop = [], [], [], [], [], [], [], []
    dist = 0.0
    for i in range(n):
        a, b, g, length = route.segment(i)
        if a.payload_kg is not None:
            payload = a.payload_kg
        v = a.speed_mps or route.cruise_speed_mps
        k = max(1, math.ceil(length / spacing_m))
        for j in range(k):
            f = j / k
            east.append(a.east_m + f * (b.east_m - a.east_m))
            north.append(a.north_m + f * (b.north_m - a.north_m))
            up.append(a.up_m + f * (b.up_m - a.up_m))
            s.append(dist + f * length)
            grade.append(g)
            load.append(payload)
            cruise.append(v)
            stop.append(j == 0 and a.payload_kg is not None)
        dist += length
    w0 = route.waypoints[0]
    east.append(w0.east_m)
    north.append(w0.north_m)
    up.append(w0.up_m)
    s.append(dist)
    grade.append(grade[0])
    load.append(load[0])
    cruise.append(cruise[0])
    stop.append(stop[0])
    east_m, north_m, up_m, s_m, grades, loads, cruises = (np.asarray(x, float)
                                                          for x in (east, north, up, s, grade, load, cruise))
    return RoutePoints(east_m, north_m, up_m, s_m, grades, loads, cruises, np.asarray(stop, bool))


def _road_load_n(profile: Any, v: float, payload_kg: float) -> float:
    """Road load (N) at ``v`` (m/s) with ``payload_kg``: the emission model's own, so the envelope matches
    the physics it is judged by (rolling resistance grows with the payload's weight)."""
    return road_load_n(profile, v, payload_kg)


def _coast_decel(profile: Any, v: float, grade: float, payload_kg: float) -> float:
    """Deceleration (m/s^2, positive = slowing) of the vehicle rolling with the engine motored."""
    m = profile.mass_kg + payload_kg
    return (_road_load_n(profile, max(v, 0.1), payload_kg) + m * G_MPS2 * grade / math.sqrt(1.0 + grade * grade)) / m


def _backward(profile: Any, pts: RoutePoints, target: np.ndarray, extra_decel_mps2: float,
              gravity_assists: bool) -> np.ndarray:
    """Backward coasting envelope (m/s) below ``target``: the highest speed at each point from which the vehicle
    rolls (engine at fuel cut, decelerating ``extra_decel_mps2`` more than it would by itself) to every later
    point no faster than its target. Without ``gravity_assists`` a downhill counts as flat."""
    n = len(pts.s_m)
    env = target.copy()
    # two passes: the loop wraps, so an envelope near the start reaches back into the end of the loop
    for _ in range(2):
        for i in range(n - 2, -1, -1):
            d = pts.s_m[i + 1] - pts.s_m[i]
            v_next = env[i + 1]
            a = _coast_decel(profile, min(v_next, 60.0), pts.grade[i], pts.payload_kg[i])
            # where gravity pulls harder than the road load (a < 0) the vehicle speeds up while coasting: to
            # arrive no faster than the target it must enter slower, which is what saves the braking
            a = a + extra_decel_mps2 if a > 0 else (a if gravity_assists else extra_decel_mps2)
            v2 = v_next * v_next + 2.0 * d * a
            env[i] = min(target[i], math.sqrt(v2) if v2 > 0 else 0.0)
        env[-1] = min(env[-1], env[0])
    return env


def coasting_envelope(profile: Any, pts: RoutePoints, floor_mps: float, extra_decel_mps2: float) -> np.ndarray:
    """Speed caps (m/s): cruise, lowered so the vehicle glides (no throttle) into every stop, and into every
    stretch it would otherwise have to brake on (a downhill held at cruise speed). The second envelope never
    goes below ``floor_mps`` (crawling over a crest costs more engine friction than it saves); the glide into
    a stop ends at standstill anyway, so it has no floor."""
    cruise = pts.cruise_mps.astype(float)
    to_stops = np.where(pts.is_stop, 0.0, np.inf)
    glide = _backward(profile, pts, to_stops, extra_decel_mps2, gravity_assists=False)
    crest = np.maximum(_backward(profile, pts, cruise, extra_decel_mps2, gravity_assists=True), floor_mps)
    # beyond the crest gravity brings the speed back: the cap rises along the *forward* coasting envelope
    # (gravity less road load, less extra_decel_mps2 so a speed controller tracking it stays in overrun), never
    # faster. A cap that jumped back to cruise would have the driver power down the hill from the crawl speed,
    # paying engine fuel that the truck held at cruise on its brakes does not (FASTSim scored that -54 %).
    downhill = np.array([_coast_decel(profile, float(c), g, m) < 0
                         for c, g, m in zip(cruise, pts.grade, pts.payload_kg, strict=True)])
    crest[downhill] = _forward_coast(profile, pts, crest, cruise, downhill, floor_mps, extra_decel_mps2)[downhill]
    env = np.minimum(np.minimum(cruise, glide), crest)
    env[pts.is_stop] = 0.0
    return env


def _forward_coast(profile: Any, pts: RoutePoints, approach: np.ndarray, cruise: np.ndarray, downhill: np.ndarray,
                   floor_mps: float, extra_decel_mps2: float) -> np.ndarray:
    """Caps (m/s) on the downhill points: from the speed it enters with (``approach``'s cap before, at least
    ``floor_mps``), the speed the vehicle reaches rolling with the engine motored, gaining gravity less road
    load less ``extra_decel_mps2``, up to ``cruise``. Other points keep ``approach``."""
    env = approach.copy()
    for _ in range(2):  # the loop wraps: a downhill at the start continues the one at the end
        for i in range(1, len(env)):
            if not downhill[i]:
                continue
            d = pts.s_m[i] - pts.s_m[i - 1]
            u = max(env[i - 1], floor_mps)
            gain = -_coast_decel(profile, u, pts.grade[i - 1], pts.payload_kg[i - 1]) - extra_decel_mps2
            env[i] = min(cruise[i], math.sqrt(u * u + 2.0 * d * max(gain, 0.0)))
        if downhill[0]:
            env[0] = env[-1]
    return env


def generic_rates(profile: Any) -> RatesFn:
    """The generic physics model of ``profile`` as a :data:`RatesFn`."""
    from carbon_ai_nodes.carbon.emission_model import physics_rates

    def rates(v: float, a: float, grade: float, payload_kg: float) -> tuple[float, float]:
        r = physics_rates(profile, v, a, grade, payload_kg)
        return r.co2_g_s, r.fuel_lph

    return rates


def simulate_loop(profile: Any, pts: RoutePoints, cap_mps: np.ndarray, *, max_accel_mps2: float,
                  max_decel_mps2: float, dwell_s: float, rates: RatesFn | None = None) -> tuple[LoopResult, np.ndarray]:
    """Drive the loop under ``cap_mps`` (m/s) with the emission model (``rates``; default the generic model of
    ``profile``): accelerate at up to ``max_accel_mps2`` within the engine's rated power, brake at
    ``max_decel_mps2`` to respect the next caps, idle ``dwell_s`` at each stop. Returns the loop totals and the
    CO2 per metre (g/m) of the stretch arriving at each point."""
    rates = rates or generic_rates(profile)
    n = len(pts.s_m)
    # forward pass limited by acceleration and power, backward pass limited by braking
    v = np.zeros(n)
    for i in range(1, n):
        d = pts.s_m[i] - pts.s_m[i - 1]
        u = v[i - 1]
        m = profile.mass_kg + pts.payload_kg[i - 1]
        road = _road_load_n(profile, max(u, 0.1), pts.payload_kg[i - 1])
        grav = m * G_MPS2 * pts.grade[i - 1] / math.sqrt(1.0 + pts.grade[i - 1] ** 2)
        a_pow = (0.9 * profile.rated_power_kw * 1000.0 / max(u, 0.5) - road - grav) / m
        a_up = min(max_accel_mps2, a_pow)
        # on a climb the power limit may force a slowdown; coasting otherwise follows the road load
        v2 = u * u + 2.0 * d * a_up
        v[i] = min(cap_mps[i], math.sqrt(v2) if v2 > 0 else 0.0)
        if pts.is_stop[i]:
            v[i] = 0.0
    for i in range(n - 2, -1, -1):
        d = pts.s_m[i + 1] - pts.s_m[i]
        v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2.0 * d * max_decel_mps2))
    co2_g = fuel_l = time_s = 0.0
    per_m = np.full(n, math.nan)
    for i in range(1, n):
        d = pts.s_m[i] - pts.s_m[i - 1]
        u, w = v[i - 1], v[i]
        vm = 0.5 * (u + w)
        if vm < 1e-3:
            continue
        dt = d / vm
        co2_g_s, fuel_lph = rates(vm, (w - u) / dt, pts.grade[i - 1], pts.payload_kg[i - 1])
        co2_g += co2_g_s * dt
        fuel_l += fuel_lph * dt / 3600.0
        time_s += dt
        per_m[i] = co2_g_s * dt / d
    stops = int(np.count_nonzero(pts.is_stop[:-1]))
    idle_co2_g_s, idle_fuel_lph = rates(0.0, 0.0, 0.0, float(pts.payload_kg[0]))
    co2_g += idle_co2_g_s * dwell_s * stops
    fuel_l += idle_fuel_lph * dwell_s * stops / 3600.0
    time_s += dwell_s * stops
    return LoopResult(co2_g, fuel_l, time_s, float(pts.s_m[-1])), per_m


def eco_profile(profile: Any, route: Any, *, initial_payload_kg: float = 0.0, spacing_m: float = 5.0,
                extra_decel_mps2: float = 0.1, floor_candidates_mps: Sequence[float] = (4.0, 6.0, 8.0, 10.0, 11.0),
                max_time_increase_pct: float = 15.0, max_accel_mps2: float = 1.0, max_decel_mps2: float = 1.5,
                dwell_s: float = 0.0, rates: RatesFn | None = None) -> EcoProfile:
    """The eco speed caps of ``route`` for a vehicle ``profile`` (VehicleProfile), with the floor speed and glide
    deceleration (``extra_decel_mps2`` and two steeper ones: a steeper glide is shorter, so it costs less time)
    that minimise the predicted loop CO2 while the loop time grows by at most ``max_time_increase_pct`` (%).

    Falls back to the plain cruise caps (no saving claimed) when no candidate meets the time bound. ``rates``
    (e.g. the calibrated model of :func:`calibrated_model`) costs the loops instead of the generic model.
    """
    pts = resample_route(route, initial_payload_kg, spacing_m)
    base_cap = pts.cruise_mps.copy()
    base_cap[pts.is_stop] = 0.0

    def loop(cap: np.ndarray) -> tuple[LoopResult, np.ndarray]:
        return simulate_loop(profile, pts, cap, max_accel_mps2=max_accel_mps2, max_decel_mps2=max_decel_mps2,
                             dwell_s=dwell_s, rates=rates)

    baseline, base_per_m = loop(base_cap)
    best = (baseline, base_cap, math.inf, base_per_m)
    for floor, extra in itertools.product(floor_candidates_mps, (extra_decel_mps2, 2 * extra_decel_mps2,
                                                                 3 * extra_decel_mps2)):
        cap = coasting_envelope(profile, pts, floor, extra)
        result, per_m = loop(cap)
        if result.time_s <= baseline.time_s * (1.0 + max_time_increase_pct / 100.0) \
                and result.co2_g_per_km < best[0].co2_g_per_km:
            best = (result, cap, floor, per_m)
    return EcoProfile(pts, best[1], best[2], best[0], baseline, best[3], "generic" if rates is None else "calibrated")
