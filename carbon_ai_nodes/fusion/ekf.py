"""Vehicle-state fusion: an extended Kalman filter over GNSS, IMU and wheel speed, plus engine carry-through.

State (8, SI units): ``[east_m, north_m, up_m, speed_mps, accel_mps2, heading_rad, yaw_rate_rps, grade]``
in a local ENU frame whose origin is the datum (configured, or the first valid fix).

Motion model: the vehicle moves along its heading at ``speed`` on a slope ``grade`` (rise/run), so
``d(east, north)/dt = speed * cos(atan(grade)) * (cos, sin)(heading)`` and ``d(up)/dt = speed * sin(atan(grade))``.
Acceleration and yaw rate are first-order Gauss-Markov processes (they decay to zero with time constants
``accel_tau_s`` / ``yaw_rate_tau_s``), so prediction-only operation stays bounded and the covariance grows
the way it should. Grade is a random walk per metre travelled (roads change slope with distance, not time).

Measurements:

- GNSS fix -> east, north, up (NavSatFix covariance is already ENU).
- IMU -> pitch (``-atan(grade)``: REP-103 pitch is positive nose-down), yaw rate, and longitudinal specific
  force ``accel + g * sin(atan(grade))``: an accelerometer on a slope also feels gravity, which is what lets
  altitude change, pitch and accelerometer agree on one grade. Optionally yaw (off by default: magnetometer
  yaw is rarely trustworthy on a vehicle).
- Wheel odometry -> speed (and optionally yaw rate).

Robustness: every measurement is validated (finite, plausible, covariance positive semi-definite; stamp not in
the future, not older than ``max_stamp_age_s`` and later than the same source's last one, so a frozen or
crawling sensor clock is refused while its messages still arrive), gated by its Mahalanobis distance, and
checked for physically impossible GNSS jumps. A measurement up to ``max_lateness_s`` older than the filter is
folded in by stamp: the filter rewinds to the snapshot before it and replays the newer ones; older ones are
dropped. A rejected measurement leaves the state exactly as it was. Rejections raise
:class:`InputRejectedError` with a stable ``reason`` key.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import Any, ClassVar, NamedTuple

import numpy as np

from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.frames import G_MPS2, wrap_angle
from carbon_ai_nodes.common.geodesy import LocalFrame
from carbon_ai_nodes.common.params import ParamSet, param
from carbon_ai_nodes.common.vehicle_state_rules import ENGINE_RANGES

E, N, U, V, A, PSI, R, G = range(8)
STATE_SIZE = 8
MOTION_SOURCES = ("gnss", "imu", "odom")
SOURCES = ("gnss", "imu", "odom", "engine")
# VehicleState.covariance rows/cols: [east, north, speed, accel, heading, grade]
OUTPUT_INDEX = np.array([E, N, V, A, PSI, G])
ENGINE_CHANNELS = ("engine_speed_rpm", "engine_load_pct", "fuel_rate_lph", "coolant_temp_c", "payload_kg",
                   "ambient_temp_c")
_OUTPUT_IX = np.ix_(OUTPUT_INDEX, OUTPUT_INDEX)
_IDENTITY = np.eye(STATE_SIZE)


@dataclasses.dataclass(frozen=True)
class FusionParams(ParamSet):
    """Parameters of the fusion node: rates, gates, noise terms, per-input enables, datum."""

    SECTION: ClassVar[str] = "fusion"
    asset_id: str = param("vehicle", "Vehicle/machine identifier copied into every VehicleState")
    rate_hz: float = param(50.0, "VehicleState / odometry publish rate (the most it publishes in input mode)",
                           unit="Hz", gt=0.0, max=1000.0)
    publish_mode: str = param("input", "input: publish right after an accepted motion measurement (gnss, imu, "
                                       "odom), at most about rate_hz, and go quiet when they stop; timer: publish "
                                       "the prediction at rate_hz whatever the inputs do", choices=("input", "timer"))
    world_frame: str = param("map", "frame_id of the local ENU frame (VehicleState, odometry/filtered)")
    base_frame: str = param("base_link", "child_frame_id of odometry/filtered")
    gnss_enabled: bool = param(True, "Use gnss/fix (switchable at run time)")
    imu_enabled: bool = param(True, "Use imu/data (switchable at run time)")
    odom_enabled: bool = param(True, "Use odom/wheel (switchable at run time)")
    engine_enabled: bool = param(True, "Use engine/telemetry (switchable at run time)")
    gnss_timeout_s: float = param(1.0, "GNSS is stale after this long without a valid fix", unit="s", gt=0.0)
    imu_timeout_s: float = param(0.25, "IMU is stale after this long without a valid sample", unit="s", gt=0.0)
    odom_timeout_s: float = param(0.5, "Wheel odometry is stale after this long", unit="s", gt=0.0)
    engine_timeout_s: float = param(2.0, "Engine telemetry is stale after this long; its values turn NaN",
                                    unit="s", gt=0.0)
    gnss_gate: float = param(5.0, "Mahalanobis gate for GNSS fixes (reject above)", unit="sigma", gt=0.0)
    imu_gate: float = param(6.0, "Mahalanobis gate for IMU samples (reject above)", unit="sigma", gt=0.0)
    odom_gate: float = param(6.0, "Mahalanobis gate for wheel speed (reject above)", unit="sigma", gt=0.0)
    gnss_reset_after: int = param(10, "Consecutive gated GNSS fixes after which position re-initialises "
                                      "from the fix (0 = never)", min=0, max=10000)
    gnss_sigma_m: float = param(2.5, "Horizontal GNSS std when the fix has no covariance", unit="m", gt=0.0)
    gnss_sigma_up_m: float = param(5.0, "Vertical GNSS std when the fix has no covariance", unit="m", gt=0.0)
    gnss_min_sigma_m: float = param(0.02, "Floor on any GNSS std (guards overconfident receivers)", unit="m",
                                    gt=0.0)
    imu_pitch_sigma_rad: float = param(0.01, "IMU pitch std when the message has no covariance", unit="rad",
                                       gt=0.0)
    imu_yaw_rate_sigma_rps: float = param(0.02, "IMU yaw-rate std when the message has no covariance",
                                          unit="rad/s", gt=0.0)
    imu_accel_sigma_mps2: float = param(0.3, "IMU accelerometer std when the message has no covariance",
                                        unit="m/s^2", gt=0.0)
    imu_yaw_sigma_rad: float = param(0.1, "IMU yaw std when the message has no covariance", unit="rad", gt=0.0)
    imu_use_pitch: bool = param(True, "Fuse IMU orientation pitch into grade")
    imu_use_yaw: bool = param(False, "Fuse IMU orientation yaw into heading (only with a trustworthy AHRS)")
    imu_use_accel: bool = param(True, "Fuse the longitudinal accelerometer (acceleration + gravity on grade)")
    imu_use_yaw_rate: bool = param(True, "Fuse the gyro z rate into yaw rate")
    odom_speed_sigma_mps: float = param(0.1, "Wheel speed std when the message has no covariance", unit="m/s",
                                        gt=0.0)
    odom_use_yaw_rate: bool = param(False, "Fuse odometry angular.z into yaw rate")
    accel_sigma_mps2: float = param(1.5, "Steady-state std of longitudinal acceleration (process)",
                                    unit="m/s^2", gt=0.0)
    accel_tau_s: float = param(2.0, "Correlation time of acceleration (process)", unit="s", gt=0.0)
    yaw_rate_sigma_rps: float = param(0.3, "Steady-state std of yaw rate (process)", unit="rad/s", gt=0.0)
    yaw_rate_tau_s: float = param(2.0, "Correlation time of yaw rate (process)", unit="s", gt=0.0)
    speed_noise_mps2: float = param(0.05, "Speed random walk beyond modelled acceleration", unit="m/s/sqrt(s)",
                                    gt=0.0)
    # GNSS errors are correlated over tens of seconds (multipath, atmosphere); modelled as white they would be
    # averaged away and the covariance turns overconfident. This random walk keeps it honest: on the synthetic
    # drive of test/fusion_synth.py, 0.2 -> 1.0 brought mean(err^2)/mean(var) from 9.3 to 2.3 at +4 % RMSE.
    position_noise_mps: float = param(1.0, "Position random walk (slip, model error, correlated GNSS error)",
                                      unit="m/sqrt(s)", gt=0.0)
    grade_noise_per_sqrt_m: float = param(0.003, "Grade random walk per sqrt(metre) travelled",
                                          unit="1/sqrt(m)", gt=0.0)
    max_speed_mps: float = param(70.0, "Fastest plausible speed: bounds wheel speed and GNSS jumps", unit="m/s",
                                 gt=0.0)
    max_grade: float = param(0.6, "Steepest plausible grade (rise/run); the estimate is clamped to it", gt=0.0,
                             max=5.0)
    max_lateness_s: float = param(0.3, "Messages up to this much older than the filter are folded in by stamp; "
                                       "older ones are dropped", unit="s", min=0.0, max=5.0)
    future_tolerance_s: float = param(0.5, "Stamps further than this ahead of the clock are rejected",
                                      unit="s", gt=0.0)
    max_stamp_age_s: float = param(1.0, "Stamps older than this versus the clock are rejected (stale); with the "
                                        "per-source rule that each stamp is later than the last, a sensor clock "
                                        "that freezes or crawls makes its source unhealthy (0 = off)",
                                   unit="s", min=0.0)
    heading_init_distance_m: float = param(5.0, "GNSS travel needed to initialise heading from the track",
                                           unit="m", gt=0.0)
    engine_filter_tau_s: float = param(0.5, "Low-pass time constant of carried engine quantities", unit="s",
                                       min=0.0)
    idle_rpm_min: float = param(300.0, "Engine speed above which the engine counts as running", unit="rpm",
                                min=0.0)
    idle_speed_mps: float = param(0.3, "Speed below which a running vehicle counts as idling", unit="m/s",
                                  gt=0.0)
    datum_latitude: float = param(math.nan, "Datum latitude; NaN = first valid fix", unit="deg", min=-90.0,
                                  max=90.0, allow_nan=True)
    datum_longitude: float = param(math.nan, "Datum longitude; NaN = first valid fix", unit="deg", min=-180.0,
                                   max=180.0, allow_nan=True)
    datum_altitude_m: float = param(0.0, "Datum ellipsoidal altitude (used with a configured datum)", unit="m")

    def check(self) -> None:
        """At least one motion source; the datum is both-or-neither."""
        if not (self.gnss_enabled or self.imu_enabled or self.odom_enabled):
            self.fail("gnss_enabled", "at least one motion source (gnss, imu, odom) must stay enabled")
        if math.isnan(self.datum_latitude) != math.isnan(self.datum_longitude):
            self.fail("datum_longitude", "set both datum_latitude and datum_longitude, or neither")

    def enabled(self, source: str) -> bool:
        """Whether input ``source`` (gnss, imu, odom, engine) is switched on."""
        return bool(getattr(self, f"{source}_enabled"))

    def timeout_s(self, source: str) -> float:
        """Staleness timeout of input ``source`` (s)."""
        return float(getattr(self, f"{source}_timeout_s"))

    @property
    def datum(self) -> LocalFrame | None:
        """The configured datum, or None (first valid fix)."""
        if math.isnan(self.datum_latitude):
            return None
        return LocalFrame(self.datum_latitude, self.datum_longitude, self.datum_altitude_m)


# ----------------------------------------------------------------------------- measurements (core inputs)
@dataclasses.dataclass(frozen=True)
class GnssFix:
    """One GNSS fix. ``cov_enu_m2`` is the 3x3 ENU covariance (m^2) or None when the receiver gives none."""

    stamp_s: float
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    status: int = 0  # NavSatStatus: -1 no fix, 0 fix, 1 SBAS, 2 GBAS
    cov_enu_m2: Any = None  # 9 row-major values or 3x3


@dataclasses.dataclass(frozen=True)
class ImuSample:
    """One IMU sample in the vehicle frame (x forward, y left, z up). Absent parts are None."""

    stamp_s: float
    quaternion_xyzw: tuple[float, float, float, float] | None = None
    orientation_cov: Any = None  # 3x3 (or 9 values) roll/pitch/yaw, rad^2; None = use parameters
    yaw_rate_rps: float | None = None
    yaw_rate_var: float = 0.0  # rad^2/s^2; 0 = use parameter
    accel_x_mps2: float | None = None
    accel_x_var: float = 0.0  # (m/s^2)^2; 0 = use parameter


@dataclasses.dataclass(frozen=True)
class WheelSpeed:
    """Wheel-odometry longitudinal speed (and yaw rate, used if ``odom_use_yaw_rate``)."""

    stamp_s: float
    speed_mps: float
    speed_var: float = 0.0  # (m/s)^2; 0 = use parameter
    yaw_rate_rps: float = math.nan
    yaw_rate_var: float = 0.0


@dataclasses.dataclass(frozen=True)
class EngineSample:
    """EngineTelemetry quantities; NaN = not available on this machine."""

    stamp_s: float
    engine_speed_rpm: float = math.nan
    engine_load_pct: float = math.nan
    fuel_rate_lph: float = math.nan
    coolant_temp_c: float = math.nan
    payload_kg: float = math.nan
    ambient_temp_c: float = math.nan


@dataclasses.dataclass(frozen=True)
class FusedState:
    """The estimate at one time: motion (SI units), geodetic position (NaN before a datum), engine carry."""

    stamp_s: float
    east_m: float
    north_m: float
    up_m: float
    speed_mps: float
    accel_mps2: float
    heading_rad: float
    yaw_rate_rps: float
    grade: float
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    covariance: np.ndarray  # 6x6 of [east, north, speed, accel, heading, grade]
    state_covariance: np.ndarray  # 8x8 of the full state (see the module docstring for the order)
    engine: dict[str, float]
    is_idle: bool
    heading_valid: bool
    position_valid: bool


class _Snapshot(NamedTuple):
    x: np.ndarray
    p: np.ndarray
    t: float | None  # None before the first measurement
    heading_ok: bool
    position_ok: bool
    anchor: tuple[float, float] | None
    last_fix: tuple[float, float, float] | None
    gnss_streak: int


class _Entry(NamedTuple):
    t: float
    kind: str
    meas: Any
    before: _Snapshot


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


MAX_COVARIANCE = 1e100  # largest covariance entry taken: its cube (the 3x3 determinant) stays finite


def covariance3(values: Any) -> list[list[float]]:
    """A 3x3 covariance (9 row-major values or a 3x3 array) checked to be finite, symmetric and positive
    semi-definite; else InputRejectedError('bad_covariance'). Plain Python: for 3x3 it beats numpy's call
    overhead several times over, and this runs on every GNSS fix."""
    flat = np.asarray(values, dtype=float).ravel().tolist()
    if len(flat) != 9:
        raise InputRejectedError("bad_covariance", f"{len(flat)} values, expected 9")
    if not all(map(math.isfinite, flat)):
        raise InputRejectedError("bad_covariance", "not finite")
    c = [flat[0:3], flat[3:6], flat[6:9]]
    scale = max(1.0, max(abs(v) for v in flat))
    if scale > MAX_COVARIANCE:  # the minors below would overflow (float ** raises OverflowError); no sensor means it
        raise InputRejectedError("bad_covariance", f"|value| up to {scale:.3g} > {MAX_COVARIANCE:g}")
    tol = 1e-9 * scale
    if any(abs(c[i][j] - c[j][i]) > 1e-6 * scale for i, j in ((0, 1), (0, 2), (1, 2))):
        raise InputRejectedError("bad_covariance", "not symmetric")
    # PSD <=> every principal minor >= 0 (with a tolerance for rounding)
    minors = [c[0][0], c[1][1], c[2][2],
              c[0][0] * c[1][1] - c[0][1] ** 2, c[0][0] * c[2][2] - c[0][2] ** 2, c[1][1] * c[2][2] - c[1][2] ** 2,
              c[0][0] * (c[1][1] * c[2][2] - c[1][2] * c[2][1]) - c[0][1] * (c[1][0] * c[2][2] - c[1][2] * c[2][0])
              + c[0][2] * (c[1][0] * c[2][1] - c[1][1] * c[2][0])]
    if min(minors[:3]) < -tol or min(minors[3:6]) < -tol * scale or minors[6] < -tol * scale * scale:
        raise InputRejectedError("bad_covariance", "not positive semi-definite")
    return c


def _position_rows(y: list[float], c: list[list[float]]) -> list[tuple[int, np.ndarray | None, float, float]]:
    """Scalar update rows for an (east, north, up) innovation with covariance ``cov``.

    A diagonal covariance gives three direct rows; a correlated one is whitened by its Cholesky factor
    (computed here in plain Python: cheaper than a numpy call for 3x3), giving unit-variance rows.
    """
    if c[0][1] == 0.0 and c[0][2] == 0.0 and c[1][2] == 0.0:
        if min(c[0][0], c[1][1], c[2][2]) <= 0.0:
            raise InputRejectedError("bad_covariance", "zero variance")
        return [(E, None, y[0], c[0][0]), (N, None, y[1], c[1][1]), (U, None, y[2], c[2][2])]
    chol = [[0.0] * 3 for _ in range(3)]
    for i in range(3):
        for j in range(i + 1):
            acc = c[i][j] - sum(chol[i][m] * chol[j][m] for m in range(j))
            if i == j:
                if acc <= 0.0:
                    raise InputRejectedError("bad_covariance", "not positive definite")
                chol[i][i] = math.sqrt(acc)
            else:
                chol[i][j] = acc / chol[j][j]
    # Forward substitution: rows of L^-1 applied to the innovation and to the one-hot observation rows.
    inv = [[0.0] * 3 for _ in range(3)]
    for i in range(3):
        for col in range(3):
            acc = (1.0 if i == col else 0.0) - sum(chol[i][m] * inv[m][col] for m in range(i))
            inv[i][col] = acc / chol[i][i]
    rows: list[tuple[int, np.ndarray | None, float, float]] = []
    for i in range(3):
        hv = np.zeros(STATE_SIZE)
        hv[E], hv[N], hv[U] = inv[i]
        rows.append((E, hv, inv[i][0] * y[0] + inv[i][1] * y[1] + inv[i][2] * y[2], 1.0))
    return rows


class FusionFilter:
    """The EKF and its bookkeeping. Feed it with ``update_*``; read it with :meth:`state_at`.

    ``now_s`` arguments are the caller's clock (used only to refuse stamps from the future). All methods
    either succeed or raise :class:`InputRejectedError` leaving the state untouched.
    """

    def __init__(self, params: FusionParams) -> None:
        self.params = params
        self.frame: LocalFrame | None = params.datum
        self.replays = 0
        self.gnss_resets = 0
        self._engine: dict[str, float] = {c: math.nan for c in ENGINE_CHANNELS}
        self._engine_t: dict[str, float] = {c: -math.inf for c in ENGINE_CHANNELS}
        self._last_stamp: dict[str, float] = {}  # per source: the sensor's clock only moves forwards
        self.reset()

    # --------------------------------------------------------------------------------------------- setup
    def reset(self) -> None:
        """Forget the motion estimate (keeps the datum, the engine carry and the parameters)."""
        self.x = np.zeros(STATE_SIZE)
        # Broad prior: position is set directly by the first fix; the rest is learnt within a few samples.
        self.P = np.diag([1e4, 1e4, 1e4, 100.0, 4.0, math.pi**2, 0.25, 0.01])
        self.t: float | None = None
        self.heading_ok = False
        self.position_ok = False
        self._anchor: tuple[float, float] | None = None
        self._last_fix: tuple[float, float, float] | None = None  # t, east, north of the last accepted fix
        self._gnss_streak = 0
        self._history: deque[_Entry] = deque()

    def set_params(self, params: FusionParams) -> None:
        """Take new (validated) parameters; a changed datum re-bases the position estimate."""
        old = self.params
        self.params = params
        if (params.datum_latitude, params.datum_longitude, params.datum_altitude_m) != (
            old.datum_latitude, old.datum_longitude, old.datum_altitude_m
        ) and params.datum is not None:
            self.frame = params.datum
            self.reset()

    @property
    def initialized(self) -> bool:
        """True once any motion measurement has been accepted."""
        return self.t is not None

    # --------------------------------------------------------------------------------------------- public updates
    def update_gnss(self, fix: GnssFix, now_s: float) -> None:
        """Fuse a GNSS fix (sets the datum on the first valid fix when none is configured)."""
        if fix.status < 0:
            raise InputRejectedError("no_fix", f"status {fix.status}")
        if not _finite(fix.latitude_deg, fix.longitude_deg, fix.altitude_m):
            raise InputRejectedError("nan", "latitude/longitude/altitude not finite")
        if not (-90.0 <= fix.latitude_deg <= 90.0 and -180.0 <= fix.longitude_deg <= 180.0):
            raise InputRejectedError("out_of_range", f"lat {fix.latitude_deg}, lon {fix.longitude_deg}")
        if not -1000.0 <= fix.altitude_m <= 20000.0:
            raise InputRejectedError("out_of_range", f"altitude {fix.altitude_m} m")
        p = self.params
        if fix.cov_enu_m2 is None:
            h2, v2 = p.gnss_sigma_m**2, p.gnss_sigma_up_m**2
            cov = [[h2, 0.0, 0.0], [0.0, h2, 0.0], [0.0, 0.0, v2]]
        else:
            cov = covariance3(fix.cov_enu_m2)
            floor = p.gnss_min_sigma_m**2
            for i in range(3):
                cov[i][i] += floor
        self._check_stamp("gnss", fix.stamp_s, now_s)
        if self.frame is None:
            self.frame = LocalFrame(fix.latitude_deg, fix.longitude_deg, fix.altitude_m)
        z = np.array(self.frame.to_enu(fix.latitude_deg, fix.longitude_deg, fix.altitude_m))
        self._ingest(fix.stamp_s, "gnss", (z, cov))
        self._accepted("gnss", fix.stamp_s)

    def update_imu(self, imu: ImuSample, now_s: float) -> None:
        """Fuse an IMU sample (pitch -> grade, gyro z -> yaw rate, accel x -> accel + gravity on grade)."""
        p = self.params
        rows: list[tuple[str, float, float]] = []  # (component, measured value, variance)
        if imu.quaternion_xyzw is not None:
            qx, qy, qz, qw = imu.quaternion_xyzw
            if not _finite(qx, qy, qz, qw):
                raise InputRejectedError("nan", "orientation not finite")
            norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
            if abs(norm - 1.0) > 0.05:
                raise InputRejectedError("bad_quaternion", f"norm {norm:.3f}")
            qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
            cov = None if imu.orientation_cov is None else covariance3(imu.orientation_cov)
            if p.imu_use_pitch:
                pitch = math.asin(max(-1.0, min(1.0, 2.0 * (qw * qy - qz * qx))))
                var = cov[1][1] if cov is not None and cov[1][1] > 0 else p.imu_pitch_sigma_rad**2
                rows.append(("pitch", pitch, var))
            if p.imu_use_yaw:
                yaw = math.atan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))
                var = cov[2][2] if cov is not None and cov[2][2] > 0 else p.imu_yaw_sigma_rad**2
                rows.append(("yaw", yaw, var))
        if imu.yaw_rate_rps is not None and p.imu_use_yaw_rate:
            if not math.isfinite(imu.yaw_rate_rps) or not math.isfinite(imu.yaw_rate_var):
                raise InputRejectedError("nan", "angular velocity not finite")
            if abs(imu.yaw_rate_rps) > 10.0:
                raise InputRejectedError("out_of_range", f"yaw rate {imu.yaw_rate_rps} rad/s")
            rows.append(("yaw_rate", imu.yaw_rate_rps,
                         imu.yaw_rate_var if imu.yaw_rate_var > 0 else p.imu_yaw_rate_sigma_rps**2))
        if imu.accel_x_mps2 is not None and p.imu_use_accel:
            if not math.isfinite(imu.accel_x_mps2) or not math.isfinite(imu.accel_x_var):
                raise InputRejectedError("nan", "linear acceleration not finite")
            if abs(imu.accel_x_mps2) > 4.0 * G_MPS2:
                raise InputRejectedError("out_of_range", f"accel x {imu.accel_x_mps2} m/s^2")
            rows.append(("accel", imu.accel_x_mps2,
                         imu.accel_x_var if imu.accel_x_var > 0 else p.imu_accel_sigma_mps2**2))
        if imu.yaw_rate_var < 0 or imu.accel_x_var < 0:
            raise InputRejectedError("bad_covariance", "negative variance")
        if not rows:
            raise InputRejectedError("no_usable_data", "no orientation, gyro or accelerometer in use")
        self._check_stamp("imu", imu.stamp_s, now_s)
        self._ingest(imu.stamp_s, "imu", tuple(rows))
        self._accepted("imu", imu.stamp_s)

    def update_odom(self, odom: WheelSpeed, now_s: float) -> None:
        """Fuse wheel-odometry speed (and yaw rate when ``odom_use_yaw_rate``)."""
        p = self.params
        if not _finite(odom.speed_mps, odom.speed_var):
            raise InputRejectedError("nan", "speed not finite")
        if abs(odom.speed_mps) > p.max_speed_mps:
            raise InputRejectedError("out_of_range", f"speed {odom.speed_mps} m/s > max_speed_mps")
        if odom.speed_var < 0 or odom.yaw_rate_var < 0:
            raise InputRejectedError("bad_covariance", "negative variance")
        rows = [("speed", odom.speed_mps, odom.speed_var if odom.speed_var > 0 else p.odom_speed_sigma_mps**2)]
        if p.odom_use_yaw_rate and math.isfinite(odom.yaw_rate_rps):
            rows.append(("yaw_rate", odom.yaw_rate_rps,
                         odom.yaw_rate_var if odom.yaw_rate_var > 0 else p.imu_yaw_rate_sigma_rps**2))
        self._check_stamp("odom", odom.stamp_s, now_s)
        self._ingest(odom.stamp_s, "odom", tuple(rows))
        self._accepted("odom", odom.stamp_s)

    def update_engine(self, sample: EngineSample, now_s: float) -> list[str]:
        """Low-pass the engine quantities. Returns channels refused as out of range (the others are taken).

        Raises when the stamp is bad, repeated or out of order, or when no channel carries a usable value.
        """
        bad: list[str] = []
        good: dict[str, float] = {}
        for channel in ENGINE_CHANNELS:
            value = getattr(sample, channel)
            if math.isnan(value):
                continue
            lo, hi = ENGINE_RANGES[channel]
            if not (math.isfinite(value) and lo <= value <= hi):
                bad.append(channel)
            else:
                good[channel] = value
        if not good:
            raise InputRejectedError("out_of_range" if bad else "nan", ", ".join(bad) or "every channel NaN")
        self._check_stamp("engine", sample.stamp_s, now_s)
        tau = self.params.engine_filter_tau_s
        for channel, value in good.items():
            prev, prev_t = self._engine[channel], self._engine_t[channel]
            dt = sample.stamp_s - prev_t
            if math.isnan(prev) or tau <= 0.0 or dt > self.params.engine_timeout_s:
                self._engine[channel] = value
            else:
                alpha = 1.0 - math.exp(-max(dt, 0.0) / tau)
                self._engine[channel] = prev + alpha * (value - prev)
            self._engine_t[channel] = sample.stamp_s
        self._accepted("engine", sample.stamp_s)
        return bad

    # --------------------------------------------------------------------------------------------- output
    def engine_at(self, t_s: float) -> dict[str, float]:
        """Filtered engine quantities at ``t_s``; NaN for channels never seen or older than the timeout."""
        limit = self.params.engine_timeout_s
        return {c: (v if t_s - self._engine_t[c] <= limit else math.nan) for c, v in self._engine.items()}

    def state_at(self, t_s: float) -> FusedState:
        """The estimate predicted to ``t_s`` (never earlier than the filter time); the filter is not changed."""
        if self.t is None:
            x, p_mat, t = self.x, self.P, t_s
        else:
            t = max(t_s, self.t)
            x, p_mat = self._predict(self.x, self.P, t - self.t)
        lat = lon = alt = math.nan
        if self.frame is not None and self.position_ok:
            lat, lon, alt = self.frame.to_geodetic(float(x[E]), float(x[N]), float(x[U]))
        engine = self.engine_at(t_s)
        rpm = engine["engine_speed_rpm"]
        is_idle = bool(math.isfinite(rpm) and rpm > self.params.idle_rpm_min
                       and abs(x[V]) < self.params.idle_speed_mps)
        return FusedState(
            stamp_s=t, east_m=float(x[E]), north_m=float(x[N]), up_m=float(x[U]), speed_mps=float(x[V]),
            accel_mps2=float(x[A]), heading_rad=wrap_angle(float(x[PSI])), yaw_rate_rps=float(x[R]),
            grade=float(x[G]), latitude_deg=lat, longitude_deg=lon, altitude_m=alt,
            covariance=p_mat[_OUTPUT_IX], state_covariance=p_mat, engine=engine, is_idle=is_idle,
            heading_valid=self.heading_ok, position_valid=self.position_ok,
        )

    # --------------------------------------------------------------------------------------------- internals
    def _check_stamp(self, source: str, stamp_s: float, now_s: float) -> None:
        """The stamp rules (see the module docstring), checked after the content so a bad message is counted
        under what is wrong with it; the source's last stamp is that of its last accepted message."""
        p = self.params
        if not math.isfinite(stamp_s):
            raise InputRejectedError("nan", "stamp not finite")
        if stamp_s > now_s + p.future_tolerance_s:
            raise InputRejectedError("future_stamp", f"{stamp_s - now_s:.3f} s ahead of the clock")
        if p.max_stamp_age_s > 0 and now_s - stamp_s > p.max_stamp_age_s:
            raise InputRejectedError("stale", f"stamp {now_s - stamp_s:.3f} s old > max_stamp_age_s")
        last = self._last_stamp.get(source)
        if last is not None and stamp_s <= last:
            if stamp_s == last:
                raise InputRejectedError("repeated_stamp", f"{source} stamp {stamp_s:.9f} s again: frozen clock?")
            raise InputRejectedError("out_of_order", f"{source} stamp {last - stamp_s:.3f} s before its last one")

    def _accepted(self, source: str, stamp_s: float) -> None:
        self._last_stamp[source] = stamp_s

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(self.x, self.P, self.t, self.heading_ok, self.position_ok, self._anchor,
                         self._last_fix, self._gnss_streak)

    def _restore(self, s: _Snapshot) -> None:
        (self.x, self.P, self.t, self.heading_ok, self.position_ok, self._anchor, self._last_fix,
         self._gnss_streak) = s

    def _ingest(self, t: float, kind: str, meas: Any) -> None:
        """Apply in stamp order: in-order directly, slightly late by rewind-and-replay, too late never."""
        if self.t is None or t >= self.t:
            before = self._snapshot()
            self._apply(t, kind, meas)  # raises with the state untouched
            self._history.append(_Entry(t, kind, meas, before))
            self._prune()
            return
        if t < self.t - self.params.max_lateness_s:
            raise InputRejectedError("out_of_order", f"{self.t - t:.3f} s older than the filter")
        entries = list(self._history)
        first = next((i for i, e in enumerate(entries) if e.t > t), None)
        oldest_t = None if first is None else entries[first].before.t
        if first is None or oldest_t is not None and oldest_t > t:
            raise InputRejectedError("out_of_order", "older than the replay history")
        self.replays += 1
        self._restore(entries[first].before)
        replay = [(t, kind, meas)] + [(e.t, e.kind, e.meas) for e in entries[first:]]
        self._history = deque(entries[:first])
        error: InputRejectedError | None = None
        for i, (e_t, e_kind, e_meas) in enumerate(replay):
            before = self._snapshot()
            try:
                self._apply(e_t, e_kind, e_meas)
            except InputRejectedError as exc:
                if i == 0:
                    error = exc  # only the new message's verdict is reported; replayed ones were counted
                continue
            self._history.append(_Entry(e_t, e_kind, e_meas, before))
        self._prune()
        if error is not None:
            raise error

    def _prune(self) -> None:
        horizon = self.t - self.params.max_lateness_s if self.t is not None else -math.inf
        while len(self._history) > 1 and self._history[1].t < horizon:
            self._history.popleft()
        while len(self._history) > 4096:  # hard bound whatever the rates
            self._history.popleft()

    def _apply(self, t: float, kind: str, meas: Any) -> None:
        if kind == "gnss":
            self._apply_gnss(t, *meas)
        else:
            self._apply_rows(t, kind, meas)

    def _predicted(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        if self.t is None:
            return self.x, self.P
        return self._predict(self.x, self.P, t - self.t)

    def _predict(self, x: np.ndarray, p_mat: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Motion model over ``dt`` seconds: new (x, P); the inputs are not modified."""
        if dt <= 0.0:
            return x, p_mat
        prm = self.params
        v, a, psi, r, g = float(x[V]), float(x[A]), float(x[PSI]), float(x[R]), float(x[G])
        c, s = math.cos(psi), math.sin(psi)
        k = 1.0 / math.sqrt(1.0 + g * g)
        ea = math.exp(-dt / prm.accel_tau_s)
        er = math.exp(-dt / prm.yaw_rate_tau_s)
        xn = x.copy()
        f = _IDENTITY.copy()
        q = np.zeros(STATE_SIZE)
        distance = abs(v) * dt
        pos_var = prm.position_noise_mps**2 * dt
        if self.heading_ok:
            vh = v * k
            xn[E] += vh * c * dt
            xn[N] += vh * s * dt
            f[E, V], f[E, PSI], f[E, G] = k * c * dt, -vh * s * dt, -v * c * dt * g * k**3
            f[N, V], f[N, PSI], f[N, G] = k * s * dt, vh * c * dt, -v * s * dt * g * k**3
            q[E] = q[N] = pos_var
        else:
            # Heading unknown: the vehicle may have gone anywhere within |v| dt, so spread position instead
            # of linearising around a meaningless heading.
            q[E] = q[N] = pos_var + distance**2
        xn[U] += v * g * k * dt
        f[U, V], f[U, G] = g * k * dt, v * k**3 * dt
        xn[V] += a * dt
        f[V, A] = dt
        xn[A] = a * ea
        f[A, A] = ea
        xn[PSI] = wrap_angle(psi + r * dt)
        f[PSI, R] = dt
        xn[R] = r * er
        f[R, R] = er
        q[U] = pos_var
        q[V] = prm.speed_noise_mps2**2 * dt
        q[A] = prm.accel_sigma_mps2**2 * (1.0 - ea * ea)
        q[PSI] = 1e-6 * dt
        q[R] = prm.yaw_rate_sigma_rps**2 * (1.0 - er * er)
        q[G] = prm.grade_noise_per_sqrt_m**2 * (distance + 0.01 * dt)
        pn = np.dot(np.dot(f, p_mat), f.T)
        pn += pn.T  # F P F^T is symmetric in exact arithmetic; keep it so in floating point
        pn *= 0.5
        pn.flat[:: STATE_SIZE + 1] += q
        return xn, pn

    @staticmethod
    def _update(x: np.ndarray, p_mat: np.ndarray, rows: list[tuple[int, np.ndarray | None, float, float]],
                gate: float) -> tuple[np.ndarray, np.ndarray]:
        """EKF update from independent scalar rows ``(state index, h or None, innovation, variance)``.

        A row with ``h`` None observes the state at ``index`` directly. Rows are applied one after another
        (Joseph-free scalar form, no matrix inverse): for independent noise this equals the joint update, and
        the sum of the rows' normalised squared innovations equals the joint Mahalanobis distance squared, so
        the gate is exact. Raises ``gated`` when that distance exceeds ``gate``; inputs are never modified.
        """
        x0 = x
        d2 = 0.0
        for j, hv, y, var in rows:
            # Innovations were taken at the prior: account for what the earlier rows moved.
            if hv is None:
                ph = p_mat[:, j]
                if x is not x0:
                    y -= float(x[j] - x0[j])
                s = float(ph[j]) + var
            else:
                ph = p_mat.dot(hv)
                if x is not x0:
                    y -= float(hv.dot(x - x0))
                s = float(hv.dot(ph)) + var
            if not s > 0.0:
                raise InputRejectedError("singular", "innovation variance not positive")
            d2 += y * y / s
            x = x + ph * (y / s)
            c = ph * (1.0 / math.sqrt(s))
            p_mat = p_mat - np.multiply.outer(c, c)  # c c^T is exactly symmetric, so P stays symmetric
        if not d2 <= gate * gate:  # also catches NaN
            raise InputRejectedError("gated", f"Mahalanobis distance {math.sqrt(d2) if d2 >= 0 else d2:.1f}")
        if not (all(map(math.isfinite, x.tolist())) and min(p_mat.diagonal().tolist()) > 0.0):
            raise InputRejectedError("numerical", "update produced a non-finite or negative covariance")
        return x, p_mat

    def _commit(self, t: float, x: np.ndarray, p_mat: np.ndarray) -> None:
        x[PSI] = wrap_angle(float(x[PSI]))
        limit = self.params.max_grade
        x[G] = min(limit, max(-limit, float(x[G])))
        self.x, self.P, self.t = x, p_mat, t

    def _apply_rows(self, t: float, kind: str, meas: tuple[tuple[str, float, float], ...]) -> None:
        x, p_mat = self._predicted(t)
        g = float(x[G])
        k = 1.0 / math.sqrt(1.0 + g * g)
        yaw_init: float | None = None
        rows: list[tuple[int, np.ndarray | None, float, float]] = []
        for what, z, var in meas:
            if what == "speed":
                rows.append((V, None, z - float(x[V]), var))
            elif what == "yaw_rate":
                rows.append((R, None, z - float(x[R]), var))
            elif what == "pitch":  # REP-103: nose up (uphill) is negative pitch
                hv = np.zeros(STATE_SIZE)
                hv[G] = -k * k
                rows.append((G, hv, z + math.atan(g), var))
            elif what == "accel":
                hv = np.zeros(STATE_SIZE)
                hv[A] = 1.0
                hv[G] = G_MPS2 * k**3
                rows.append((A, hv, z - (float(x[A]) + G_MPS2 * g * k), var))
            elif what == "yaw":
                if not self.heading_ok:
                    yaw_init = z
                    x, p_mat = self._init_heading(x, p_mat, z, self.params.imu_yaw_sigma_rad**2)
                rows.append((PSI, None, wrap_angle(z - float(x[PSI])), var))
        gate = self.params.imu_gate if kind == "imu" else self.params.odom_gate
        xn, pn = self._update(x, p_mat, rows, gate)
        if yaw_init is not None:
            self.heading_ok = True
        self._commit(t, xn, pn)

    @staticmethod
    def _init_heading(x: np.ndarray, p_mat: np.ndarray, heading: float, var: float) -> tuple[np.ndarray, np.ndarray]:
        x = x.copy()
        p_mat = p_mat.copy()
        x[PSI] = heading
        p_mat[PSI, :] = 0.0
        p_mat[:, PSI] = 0.0
        p_mat[PSI, PSI] = var
        return x, p_mat

    def _apply_gnss(self, t: float, z: np.ndarray, cov: list[list[float]]) -> None:
        prm = self.params
        if not self.position_ok:
            x, p_mat = self._predicted(t)
            x = x.copy()
            p_mat = p_mat.copy()
            x[[E, N, U]] = z
            p_mat[[E, N, U], :] = 0.0
            p_mat[:, [E, N, U]] = 0.0
            p_mat[E:U + 1, E:U + 1] = cov
            self.position_ok = True
            self._anchor = (float(z[0]), float(z[1]))
            self._last_fix = (t, float(z[0]), float(z[1]))
            self._gnss_streak = 0
            self._commit(t, x, p_mat)
            return
        if self._last_fix is not None:
            # A jump no vehicle can make (e.g. 200 m in 10 ms) is refused whatever the covariance says.
            lt, le, ln = self._last_fix
            jump_m = math.hypot(z[0] - le, z[1] - ln)
            allowed_m = prm.max_speed_mps * max(t - lt, 0.0) + 6.0 * math.sqrt(cov[0][0] + cov[1][1]) + 5.0
            if jump_m > allowed_m:
                if self._gnss_refused(t, z, cov):
                    return
                raise InputRejectedError("impossible_jump", f"{jump_m:.0f} m in {t - lt:.3f} s")
        x, p_mat = self._predicted(t)
        y = [float(z[0] - x[E]), float(z[1] - x[N]), float(z[2] - x[U])]
        try:
            xn, pn = self._update(x, p_mat, _position_rows(y, cov), prm.gnss_gate)
        except InputRejectedError:
            if self._gnss_refused(t, z, cov):
                return
            raise
        if not self.heading_ok and self._anchor is not None:
            de, dn = float(z[0]) - self._anchor[0], float(z[1]) - self._anchor[1]
            dist = math.hypot(de, dn)
            if dist >= prm.heading_init_distance_m and abs(xn[V]) > 0.5:
                heading = math.atan2(dn, de) if xn[V] > 0 else math.atan2(-dn, -de)
                sigma = 2.0 * math.sqrt(cov[0][0] + cov[1][1]) / dist
                xn, pn = self._init_heading(xn, pn, heading, max(sigma, 0.05) ** 2)
                self.heading_ok = True
            elif abs(xn[V]) <= 0.5:
                self._anchor = (float(z[0]), float(z[1]))  # standing still: track from here
        self._last_fix = (t, float(z[0]), float(z[1]))
        self._gnss_streak = 0
        self._commit(t, xn, pn)

    def _gnss_refused(self, t: float, z: np.ndarray, cov: list[list[float]]) -> bool:
        """Count a refused fix. After ``gnss_reset_after`` in a row the filter, not GNSS, is the likelier
        culprit: re-initialise position from this fix (counted in ``gnss_resets``) and return True."""
        self._gnss_streak += 1
        limit = self.params.gnss_reset_after
        if limit and self._gnss_streak >= limit:
            self.gnss_resets += 1
            self.position_ok = False
            self._apply_gnss(t, z, cov)
            return True
        return False
