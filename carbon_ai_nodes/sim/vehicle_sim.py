"""Telemetry simulator core: a longitudinal vehicle model driving a route (or a drive-cycle trace) and the
noisy, faulty sensor readings a real machine would give.

The vehicle follows a polyline of waypoints in a local ENU frame (metres, z = altitude), looping at the
end. Speed tracks ``min(cruise speed, commanded speed limit, braking curve to the next stop)`` through a
proportional controller limited by ``max_accel_mps2``/``max_decel_mps2`` and by the engine power the
command allows. Waypoints may carry a payload change (load / dump points): the vehicle stops there for
``stop_dwell_s`` and its payload switches. A drive-cycle trace instead replays a speed profile along a
straight line heading east, with the cycle's grade.

Fuel and CO2 (what the engine telemetry's fuel meter and ``sim/true_emission`` report) come from the vehicle's
independent plant when the scenario names one: the FASTSim file's engine map (``sim/plant_engine.py``) driven
by the wheel power of the profile's road load, so carbon_ai's estimator is measured against an engine it did
not write. Without a plant (model-only machines, electric vehicles) they come from the shared emission model
(``carbon/emission_model.physics_rates``).

Faults (for testing the rest of the graph): ``nan_burst`` (IMU, odometry and engine values become NaN),
``gnss_jump`` (fixes jump by ``gnss_jump_m``), ``silence`` (every sensor stops publishing), each active from
``fault_start_s`` for ``fault_length_s``, repeating every ``fault_period_s`` when that is > 0.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from carbon_ai_nodes.carbon.emission_model import accessory_kw, physics_rates
from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.common.frames import G_MPS2, wrap_angle
from carbon_ai_nodes.common.geodesy import LocalFrame
from carbon_ai_nodes.common.params import ParamSet, param
from carbon_ai_nodes.common.user_files import read_csv

if TYPE_CHECKING:
    from carbon_ai_nodes.sim.plant_engine import PlantEngine

FAULTS = ("nan_burst", "gnss_jump", "silence")
SENSORS = ("gnss", "imu", "odom", "engine")


@dataclasses.dataclass(frozen=True)
class SimParams(ParamSet):
    """Parameters of the ``sim`` node (telemetry simulator)."""

    SECTION: ClassVar[str] = "sim"
    scenario_file: str = param("", "Scenario YAML holding this vehicle's profile and route (see config/scenarios)")
    vehicle_id: str = param("", "Vehicle of the scenario to simulate (empty = the first one)")
    profile_file: str = param("", "Vehicle profile YAML, used when no scenario_file is given")
    drive_cycle_file: str = param("", "Drive-cycle CSV (time_s,speed_mps,grade) to replay instead of a route")
    asset_id: str = param("", "Asset id in frame names and messages (empty = vehicle_id or the profile name)")
    rate_hz: float = param(50.0, "Physics step and IMU/odometry publish rate", unit="Hz", gt=0.0, max=1000.0)
    gnss_rate_hz: float = param(10.0, "NavSatFix publish rate", unit="Hz", gt=0.0, max=100.0)
    engine_rate_hz: float = param(10.0, "EngineTelemetry publish rate", unit="Hz", gt=0.0, max=100.0)
    cruise_speed_mps: float = param(0.0, "Cruise speed when the route sets none (0 = route value or 10 m/s)",
                                    unit="m/s", min=0.0, max=60.0)
    max_accel_mps2: float = param(1.0, "Largest acceleration the driver asks for", unit="m/s^2", gt=0.0, max=10.0)
    max_decel_mps2: float = param(1.5, "Largest service deceleration", unit="m/s^2", gt=0.0, max=10.0)
    speed_gain_per_s: float = param(0.8, "Proportional gain of the speed controller", unit="1/s", gt=0.0, max=20.0)
    stop_dwell_s: float = param(20.0, "Time stopped at a load/dump waypoint", unit="s", min=0.0, max=3600.0)
    command_timeout_s: float = param(1.0, "An ActuatorCommand older than this no longer limits the speed",
                                     unit="s", gt=0.0, max=60.0)
    origin_lat_deg: float = param(0.0, "Latitude of the local ENU origin (scenario value wins)", unit="deg",
                                  min=-90.0, max=90.0)
    origin_lon_deg: float = param(0.0, "Longitude of the local ENU origin (scenario value wins)", unit="deg",
                                  min=-180.0, max=180.0)
    ambient_temp_c: float = param(25.0, "Ambient temperature", unit="C", min=-50.0, max=60.0)
    gnss_sigma_m: float = param(1.5, "GNSS horizontal noise, one sigma", unit="m", min=0.0, max=100.0)
    accel_sigma_mps2: float = param(0.05, "Accelerometer noise, one sigma", unit="m/s^2", min=0.0, max=10.0)
    gyro_sigma_rps: float = param(0.005, "Gyro noise, one sigma", unit="rad/s", min=0.0, max=1.0)
    wheel_speed_sigma_mps: float = param(0.05, "Wheel-speed noise, one sigma", unit="m/s", min=0.0, max=5.0)
    fuel_sigma_frac: float = param(0.03, "Fuel-rate sensor noise as a fraction of the value", min=0.0, max=1.0)
    dropout_prob: float = param(0.0, "Probability that any one sensor message is dropped", min=0.0, max=1.0)
    faults: tuple[str, ...] = param((), "Faults to inject: any of nan_burst, gnss_jump, silence")
    fault_start_s: float = param(10.0, "First fault window starts this long after activation", unit="s", min=0.0)
    fault_length_s: float = param(3.0, "Length of a fault window", unit="s", gt=0.0)
    fault_period_s: float = param(0.0, "Repeat period of fault windows (0 = once)", unit="s", min=0.0)
    gnss_jump_m: float = param(50.0, "Position offset during a gnss_jump fault", unit="m", min=0.0, max=1e5)
    seed: int = param(1, "Random seed of noise and dropouts (runs are reproducible)")

    def check(self) -> None:
        """A vehicle must come from a scenario or a profile file; fault names must be known."""
        if not self.scenario_file and not self.profile_file:
            self.fail("scenario_file", "set scenario_file (with vehicle_id) or profile_file")
        for name in self.faults:
            if name not in FAULTS:
                self.fail("faults", f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        if self.fault_period_s and self.fault_period_s <= self.fault_length_s:
            self.fail("fault_period_s", f"must be 0 or > fault_length_s ({self.fault_length_s})")


@dataclasses.dataclass(frozen=True)
class Waypoint:
    """A route point in the local ENU frame (m); ``payload_kg`` set = a load/dump stop that sets the payload."""

    east_m: float
    north_m: float
    up_m: float = 0.0
    payload_kg: float | None = None
    speed_mps: float | None = None  # cruise speed on the segment that starts here


@dataclasses.dataclass(frozen=True)
class Route:
    """A closed loop of waypoints (the last one connects back to the first)."""

    waypoints: tuple[Waypoint, ...]
    cruise_speed_mps: float = 10.0

    def __post_init__(self) -> None:
        if len(self.waypoints) < 2:
            raise ConfigError("route: needs at least two waypoints")
        for i, w in enumerate(self.waypoints):
            for key in ("east_m", "north_m", "up_m"):
                if not math.isfinite(getattr(w, key)):
                    raise ConfigError(f"route[{i}].{key}: must be finite")
            if w.payload_kg is not None and not (math.isfinite(w.payload_kg) and w.payload_kg >= 0):
                raise ConfigError(f"route[{i}].payload_kg={w.payload_kg}: must be >= 0")
            if w.speed_mps is not None and not 0 < w.speed_mps <= 60:
                raise ConfigError(f"route[{i}].speed_mps={w.speed_mps}: must be in (0, 60]")
        if not 0 < self.cruise_speed_mps <= 60:
            raise ConfigError(f"route.cruise_speed_mps={self.cruise_speed_mps}: must be in (0, 60]")
        lengths = [self.segment(i)[3] for i in range(len(self.waypoints))]
        if any(length < 0.5 for length in lengths):
            raise ConfigError("route: consecutive waypoints must be at least 0.5 m apart")

    @classmethod
    def from_list(cls, points: Sequence[Any], cruise_speed_mps: float = 10.0) -> Route:
        """From scenario YAML: ``[[east_m, north_m, up_m], ...]`` or mappings with east_m/north_m/up_m/
        payload_kg/speed_mps keys."""
        wps = []
        for i, p in enumerate(points):
            if isinstance(p, dict):
                unknown = set(p) - {"east_m", "north_m", "up_m", "payload_kg", "speed_mps", "name"}
                if unknown:
                    raise ConfigError(f"route[{i}].{sorted(unknown)[0]}: unknown key")
                try:
                    wps.append(Waypoint(float(p["east_m"]), float(p["north_m"]), float(p.get("up_m", 0.0)),
                                        None if p.get("payload_kg") is None else float(p["payload_kg"]),
                                        None if p.get("speed_mps") is None else float(p["speed_mps"])))
                except KeyError as exc:
                    raise ConfigError(f"route[{i}].{exc.args[0]}: required key missing") from None
            elif isinstance(p, (list, tuple)) and len(p) in (2, 3):
                wps.append(Waypoint(*(float(v) for v in p)))
            else:
                raise ConfigError(f"route[{i}]: expected [east_m, north_m, up_m] or a mapping")
        return cls(tuple(wps), cruise_speed_mps)

    def segment(self, i: int) -> tuple[Waypoint, Waypoint, float, float]:
        """Segment ``i``: start, end, grade (rise/run) and length (m, 3D)."""
        a = self.waypoints[i]
        b = self.waypoints[(i + 1) % len(self.waypoints)]
        run = math.hypot(b.east_m - a.east_m, b.north_m - a.north_m)
        rise = b.up_m - a.up_m
        grade = rise / run if run > 1e-6 else 0.0
        return a, b, grade, math.hypot(run, rise)


@dataclasses.dataclass(frozen=True)
class DriveTrace:
    """A drive-cycle speed trace: time_s (increasing), speed_mps, grade; replayed in a loop."""

    time_s: tuple[float, ...]
    speed_mps: tuple[float, ...]
    grade: tuple[float, ...]

    @classmethod
    def from_csv(cls, path: str) -> DriveTrace:
        """Read ``time_s,speed_mps,grade`` (grade optional); errors name file and line."""
        rows = read_csv(path, "drive cycle", ("time_s", "speed_mps"))
        t, v, g = [], [], []
        for line, row in enumerate(rows, start=2):
            try:
                t.append(float(row["time_s"]))
                v.append(float(row["speed_mps"]))
                g.append(float(row.get("grade") or 0.0))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"drive cycle {path}:{line}: expected numeric time_s,speed_mps[,grade]") from None
        if len(t) < 2 or any(b <= a for a, b in zip(t[:-1], t[1:], strict=True)):
            raise ConfigError(f"drive cycle {path}: needs >= 2 rows with increasing time_s")
        return cls(tuple(t), tuple(v), tuple(g))

    def at(self, t_s: float) -> tuple[float, float]:
        """Target speed (m/s) and grade at ``t_s`` (looping), linearly interpolated."""
        t_s = math.fmod(t_s, self.time_s[-1]) if self.time_s[-1] > 0 else 0.0
        import bisect

        i = max(0, min(bisect.bisect_right(self.time_s, t_s) - 1, len(self.time_s) - 2))
        t0, t1 = self.time_s[i], self.time_s[i + 1]
        f = (t_s - t0) / (t1 - t0)
        return (self.speed_mps[i] + f * (self.speed_mps[i + 1] - self.speed_mps[i]), self.grade[i])


@dataclasses.dataclass
class TruthState:
    """The true vehicle state after a step (what the sensors measure, before noise)."""

    t_s: float = 0.0
    east_m: float = 0.0
    north_m: float = 0.0
    up_m: float = 0.0
    speed_mps: float = 0.0
    accel_mps2: float = 0.0
    heading_rad: float = 0.0
    yaw_rate_rps: float = 0.0
    grade: float = 0.0
    payload_kg: float = 0.0
    engine_speed_rpm: float = 0.0
    engine_load_pct: float = 0.0
    fuel_lph: float = 0.0
    co2_g_s: float = 0.0
    power_kw: float = 0.0
    coolant_temp_c: float = 90.0
    distance_m: float = 0.0
    fuel_l: float = 0.0
    co2_g: float = 0.0
    speed_limit_mps: float = math.inf
    stopped_for_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Readings:
    """Sensor values of one step; ``None`` = not published this step (rate, dropout or silence)."""

    gnss: tuple[float, float, float] | None  # latitude deg, longitude deg, altitude m
    imu: tuple[float, float, float, float] | None  # accel x, accel z (m/s^2, specific force), yaw rate rad/s, pitch rad
    odom: tuple[float, float, float, float] | None  # dead-reckoned east m, north m, heading rad, speed m/s
    # rpm, load %, fuel L/h, coolant C, payload kg, ambient C
    engine: tuple[float, float, float, float, float, float] | None


def road_and_grade_n(profile: Any, speed_mps: float, grade: float, payload_kg: float) -> float:
    """Road load plus grade force (N) at ``speed_mps`` (m/s; road load 0 at rest) with ``payload_kg`` on board.
    The coast-down constant ``a_n`` is mostly tyre rolling resistance at the profile's mass, so it grows with the
    weight carried (as the emission model's road_load_n and FASTSim's rolling-resistance coefficient do)."""
    m = profile.mass_kg + payload_kg
    f = profile.a_n * m / profile.mass_kg + profile.b_n_per_mps * speed_mps + profile.c_n_per_mps2 * speed_mps ** 2 \
        if speed_mps > 0 else 0.0
    return f + m * G_MPS2 * grade / math.sqrt(1 + grade * grade)


def wheel_power_w(profile: Any, speed_mps: float, accel_mps2: float, grade: float, payload_kg: float) -> float:
    """Power at the wheels (W; negative = braking or coasting): road load, inertia and grade of the profile."""
    m = profile.mass_kg + payload_kg
    return (road_and_grade_n(profile, speed_mps, grade, payload_kg) + m * accel_mps2) * speed_mps


def emission_rates(profile: Any, speed_mps: float, accel_mps2: float, grade: float,
                   payload_kg: float, engine: PlantEngine | None = None) -> tuple[float, float, float]:
    """CO2 (g/s), fuel (L/h), power (kW): the plant ``engine`` (sim/plant_engine.PlantEngine) if given, else the
    shared physics model."""
    if engine is not None:
        power_w = wheel_power_w(profile, speed_mps, accel_mps2, grade, payload_kg)
        co2, fuel = engine.rates(power_w, speed_mps, accel_mps2)
        return co2, fuel, power_w / 1000.0
    r = physics_rates(profile, speed_mps, accel_mps2, grade, payload_kg)
    return r.co2_g_s, r.fuel_lph, r.power_kw


class VehicleSim:
    """Steps the vehicle and produces sensor readings. Deterministic for a given seed.

    ``profile`` follows the VehicleProfile contract (mass_kg, a_n, b_n_per_mps, c_n_per_mps2, rated_power_kw,
    idle_fuel_lph, ...). Give either ``route`` or ``trace``. ``engine`` (a plant_engine.PlantEngine) makes the
    fuel; None = the emission model's.
    """

    def __init__(self, params: SimParams, profile: Any, *, route: Route | None = None,
                 trace: DriveTrace | None = None, origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 initial_payload_kg: float = 0.0, engine: PlantEngine | None = None) -> None:
        if (route is None) == (trace is None):
            raise ConfigError("sim: give exactly one of a route or a drive-cycle trace")
        self.p = params
        self.profile = profile
        self.route = route
        self.trace = trace
        self.engine = engine
        self.origin = origin
        # The same WGS84 frame fusion decodes GNSS with, so simulated fixes carry no frame error of their own.
        self.frame = LocalFrame(*origin)
        self.rng = random.Random(params.seed)
        self.truth = TruthState(payload_kg=initial_payload_kg)
        self._segment = 0
        self._s_on_segment_m = 0.0
        self._dwelling = False
        self._odom = [0.0, 0.0, 0.0]  # dead-reckoned east, north, heading
        self._next_gnss_s = 0.0
        self._next_engine_s = 0.0
        self.command_speed_limit_mps = math.inf
        self.command_load_limit_pct = 100.0
        self.command_estop = False
        self._command_time_s = -math.inf
        if route is not None:
            a, b, grade, _ = route.segment(0)
            self.truth.east_m, self.truth.north_m, self.truth.up_m = a.east_m, a.north_m, a.up_m
            self.truth.heading_rad = math.atan2(b.north_m - a.north_m, b.east_m - a.east_m)
            self.truth.grade = grade
            self._odom[2] = self.truth.heading_rad
            if a.payload_kg is not None:  # starting at a load/dump point: do its work first
                self.truth.payload_kg = a.payload_kg
                self._dwelling = params.stop_dwell_s > 0

    # --------------------------------------------------------------------------------- commands
    def command(self, t_s: float, speed_limit_mps: float, engine_load_limit_pct: float, estop: bool) -> bool:
        """Apply an actuator command received at ``t_s``; refuses (returns False) non-finite or negative values."""
        if not (math.isfinite(speed_limit_mps) and speed_limit_mps >= 0 and math.isfinite(engine_load_limit_pct)):
            return False
        self.command_speed_limit_mps = speed_limit_mps
        self.command_load_limit_pct = min(max(engine_load_limit_pct, 0.0), 100.0)
        self.command_estop = estop
        self._command_time_s = t_s
        return True

    def command_active(self, t_s: float) -> bool:
        """True while the last command is fresh enough to bind."""
        return t_s - self._command_time_s <= self.p.command_timeout_s

    # --------------------------------------------------------------------------------- dynamics
    def _route_targets(self) -> tuple[float, float, float]:
        """Cruise speed on this segment, distance to the next stop (m) and grade."""
        route = self.route
        assert route is not None  # __init__ takes a route or a trace, and this is the route's path
        a, _, grade, length = route.segment(self._segment)
        cruise = a.speed_mps or self.p.cruise_speed_mps or route.cruise_speed_mps
        dist = length - self._s_on_segment_m
        n = len(route.waypoints)
        for k in range(1, n + 1):
            if route.waypoints[(self._segment + k) % n].payload_kg is not None:
                break
            dist += route.segment((self._segment + k) % n)[3]
        return cruise, dist, grade

    def step(self, dt_s: float) -> TruthState:
        """Advance the true state by ``dt_s`` seconds."""
        s = self.truth
        p = self.p
        s.t_s += dt_s
        if self.trace is not None:
            target, grade = self.trace.at(s.t_s)
            dist_to_stop = math.inf
        else:
            target, dist_to_stop, grade = self._route_targets()
        fresh = self.command_active(s.t_s)
        limit = self.command_speed_limit_mps if fresh else math.inf
        s.speed_limit_mps = limit
        estop = fresh and self.command_estop
        if self._dwelling:
            s.stopped_for_s += dt_s
            target = 0.0
            if s.stopped_for_s >= p.stop_dwell_s:
                self._dwelling = False
                s.stopped_for_s = 0.0
        else:
            # brake to arrive at the next stop at standstill
            target = min(target, math.sqrt(2.0 * 0.8 * p.max_decel_mps2 * max(dist_to_stop - 0.5, 0.0)))
        target = min(target, limit)
        accel = p.speed_gain_per_s * (target - s.speed_mps)
        accel = max(-p.max_decel_mps2, min(accel, p.max_accel_mps2))
        if estop:
            accel = -2.0 * p.max_decel_mps2
        # engine power cap: the command's load limit of the rated power, at the wheels
        mass = self.profile.mass_kg + s.payload_kg
        v = max(s.speed_mps, 0.5)
        road_n = road_and_grade_n(self.profile, v, grade, s.payload_kg)
        cap_kw = self.profile.rated_power_kw * (self.command_load_limit_pct if fresh else 100.0) / 100.0 * 0.9
        accel = min(accel, (cap_kw * 1000.0 / v - road_n) / mass) if accel > 0 else accel
        new_v = max(0.0, s.speed_mps + accel * dt_s)
        accel = (new_v - s.speed_mps) / dt_s
        ds = 0.5 * (s.speed_mps + new_v) * dt_s
        s.speed_mps, s.accel_mps2, s.grade = new_v, accel, grade
        s.distance_m += ds
        old_heading = s.heading_rad
        if self.route is not None:
            self._advance_route(ds)
        else:
            s.east_m += ds / math.sqrt(1 + grade * grade)
            s.up_m += ds * grade / math.sqrt(1 + grade * grade)
        s.yaw_rate_rps = wrap_angle(s.heading_rad - old_heading) / dt_s
        co2, fuel, power = emission_rates(self.profile, s.speed_mps, s.accel_mps2, s.grade, s.payload_kg,
                                          self.engine)
        s.co2_g_s, s.fuel_lph, s.power_kw = co2, fuel, power
        s.fuel_l += fuel * dt_s / 3600.0
        s.co2_g += co2 * dt_s
        s.engine_speed_rpm = min(750.0 + 40.0 * s.speed_mps, 2100.0)
        s.engine_load_pct = self._engine_load_pct(power)
        return s

    def _engine_load_pct(self, wheel_kw: float) -> float:
        # J1939's engine load (SPN 92) is the engine's output share: the wheel power through the driveline plus
        # the accessories. Reported as wheel / rated, the calibrated mass in a demo read low by the driveline
        # efficiency (vehicle_calibration takes brake power = accessories + wheel / eta_dt).
        p = self.profile
        if self.engine is not None:
            brake_kw = self.engine.output_power_w(wheel_kw * 1000.0) / 1000.0
        elif getattr(p, "kind", "road") == "road" and p.fuel != "electric":
            brake_kw = max(wheel_kw, 0.0) / p.drivetrain_efficiency + accessory_kw(p)
        else:  # an electric drive or a machine: the shaft power itself
            brake_kw = max(wheel_kw, 0.0)
        return min(brake_kw / p.rated_power_kw * 100.0, 100.0)

    def _advance_route(self, ds: float) -> None:
        s = self.truth
        route = self.route
        assert route is not None  # __init__ takes a route or a trace, and this is the route's path
        n = len(route.waypoints)
        while True:
            a, b, grade, length = route.segment(self._segment)
            if self._s_on_segment_m + ds < length:
                self._s_on_segment_m += ds
                break
            ds -= length - self._s_on_segment_m
            self._segment = (self._segment + 1) % n
            self._s_on_segment_m = 0.0
            if b.payload_kg is not None:
                s.payload_kg = b.payload_kg
                s.speed_mps = 0.0
                self._dwelling = self.p.stop_dwell_s > 0
                ds = 0.0
        a, b, grade, length = route.segment(self._segment)
        f = self._s_on_segment_m / length
        s.east_m = a.east_m + f * (b.east_m - a.east_m)
        s.north_m = a.north_m + f * (b.north_m - a.north_m)
        s.up_m = a.up_m + f * (b.up_m - a.up_m)
        s.heading_rad = math.atan2(b.north_m - a.north_m, b.east_m - a.east_m)
        s.grade = grade

    # --------------------------------------------------------------------------------- sensors
    def fault_active(self, name: str, t_s: float | None = None) -> bool:
        """True while fault ``name`` is configured and inside one of its windows."""
        if name not in self.p.faults:
            return False
        t = self.truth.t_s if t_s is None else t_s
        into = t - self.p.fault_start_s
        if into < 0:
            return False
        if self.p.fault_period_s > 0:
            into = math.fmod(into, self.p.fault_period_s)
        return into < self.p.fault_length_s

    def _drop(self) -> bool:
        return self.p.dropout_prob > 0 and self.rng.random() < self.p.dropout_prob

    def readings(self, dt_s: float) -> Readings:
        """Sensor readings due after the last step (noise, dropouts and active faults applied)."""
        s, p, g = self.truth, self.p, self.rng.gauss
        nan = math.nan
        silent = self.fault_active("silence")
        nan_burst = self.fault_active("nan_burst")
        gnss = imu = odom = engine = None
        # odometry dead-reckons from the true motion so its drift is realistic for the wheel speed noise
        wheel_v = s.speed_mps + g(0.0, p.wheel_speed_sigma_mps) if s.speed_mps > 0 else 0.0
        self._odom[2] = s.heading_rad
        self._odom[0] += wheel_v * math.cos(self._odom[2]) * dt_s
        self._odom[1] += wheel_v * math.sin(self._odom[2]) * dt_s
        if not silent:
            pitch = math.atan(s.grade)
            if not self._drop():
                imu = (nan, nan, nan, nan) if nan_burst else (
                    s.accel_mps2 + G_MPS2 * math.sin(pitch) + g(0.0, p.accel_sigma_mps2),
                    G_MPS2 * math.cos(pitch) + g(0.0, p.accel_sigma_mps2),
                    s.yaw_rate_rps + g(0.0, p.gyro_sigma_rps),
                    pitch,
                )
            if not self._drop():
                odom = (nan, nan, nan, nan) if nan_burst else (self._odom[0], self._odom[1], self._odom[2], wheel_v)
        if s.t_s + 1e-9 >= self._next_gnss_s:
            self._next_gnss_s = s.t_s + 1.0 / p.gnss_rate_hz
            if not silent and not self._drop():
                jump = p.gnss_jump_m if self.fault_active("gnss_jump") else 0.0
                e = s.east_m + g(0.0, p.gnss_sigma_m) + jump
                n = s.north_m + g(0.0, p.gnss_sigma_m) + jump
                gnss = self.frame.to_geodetic(e, n, s.up_m + g(0.0, 2.0 * p.gnss_sigma_m))
        if s.t_s + 1e-9 >= self._next_engine_s:
            self._next_engine_s = s.t_s + 1.0 / p.engine_rate_hz
            if not silent and not self._drop():
                engine = (nan, nan, nan, nan, nan, nan) if nan_burst else (
                    s.engine_speed_rpm, s.engine_load_pct,
                    max(0.0, s.fuel_lph * (1.0 + g(0.0, p.fuel_sigma_frac))),
                    s.coolant_temp_c, s.payload_kg, p.ambient_temp_c,
                )
        return Readings(gnss, imu, odom, engine)
