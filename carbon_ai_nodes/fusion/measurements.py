"""Measurement models of the fusion filter: the sensor inputs, their validation, and how each observes the state.

- GNSS fix -> east, north, up (NavSatFix covariance is already ENU).
- IMU -> pitch (``-atan(grade)``: REP-103 pitch is positive nose-down), yaw rate, and longitudinal specific
  force ``accel + g * sin(atan(grade))``: an accelerometer on a slope also feels gravity, which is what lets
  altitude change, pitch and accelerometer agree on one grade. Optionally yaw (off by default: magnetometer
  yaw is rarely trustworthy on a vehicle).
- Wheel odometry -> speed (and optionally yaw rate).
- Engine telemetry is carried through, not fused: its channels are range-checked here.

A validated motion input becomes a typed measurement, which the filter keeps in its replay history: a
:class:`PositionFix` (GNSS in the local frame) or :class:`ScalarMeasurements` (independent scalar
observations, each naming the :class:`Quantity` it observes). :func:`position_rows` and
:func:`observation_row` turn them into the filter's scalar update rows at a predicted state. Content checks
raise :class:`InputRejectedError` with a stable ``reason`` key; the stamp rules are the filter's.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Literal, NamedTuple

import numpy as np

from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.frames import G_MPS2, wrap_angle
from carbon_ai_nodes.common.vehicle_state_rules import ENGINE_RANGES
from carbon_ai_nodes.fusion.fusion_params import FusionParams
from carbon_ai_nodes.fusion.state import PSI, STATE_SIZE, A, E, G, N, R, U, V

ENGINE_CHANNELS = ("engine_speed_rpm", "engine_load_pct", "fuel_rate_lph", "coolant_temp_c", "payload_kg",
                   "ambient_temp_c")
# One scalar EKF update row: (state index, observation row h or None for "observes x[index]", innovation,
# variance).
UpdateRow = tuple[int, np.ndarray | None, float, float]


# ----------------------------------------------------------------------------- inputs (from the node's messages)
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



# ----------------------------------------------------------------------------- validated measurements
class Quantity(enum.IntEnum):
    """What one scalar observation measures (units as in the state). An IntEnum: it hashes as an int, so
    picking its measurement model per row stays cheap."""

    SPEED = 1  # m/s, wheel odometry
    YAW_RATE = 2  # rad/s, gyro z or odometry angular z
    PITCH = 3  # rad, REP-103: nose up (uphill) is negative
    ACCEL = 4  # m/s^2, longitudinal specific force: acceleration + gravity on the grade
    YAW = 5  # rad, ENU heading


class Observation(NamedTuple):
    """One scalar observation: the quantity, its measured value and its variance."""

    quantity: Quantity
    value: float
    variance: float


class ScalarMeasurements(NamedTuple):
    """The independent scalar observations of one IMU sample or wheel-odometry message; ``source`` picks
    the gate (``imu_gate`` or ``odom_gate``)."""

    source: Literal["imu", "odom"]
    observations: tuple[Observation, ...]


class PositionFix(NamedTuple):
    """A GNSS fix in the local ENU frame: position (m, [east, north, up]) and its 3x3 covariance (m^2)."""

    enu_m: np.ndarray
    cov_m2: list[list[float]]


Measurement = PositionFix | ScalarMeasurements


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


def position_rows(fix: PositionFix, x: np.ndarray) -> list[UpdateRow]:
    """Scalar update rows of a GNSS fix at the predicted state ``x``.

    A diagonal covariance gives three direct rows; a correlated one is whitened by its Cholesky factor
    (computed here in plain Python: cheaper than a numpy call for 3x3), giving unit-variance rows.
    """
    z, c = fix.enu_m, fix.cov_m2
    y = [float(z[0] - x[E]), float(z[1] - x[N]), float(z[2] - x[U])]
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
    rows: list[UpdateRow] = []
    for i in range(3):
        hv = np.zeros(STATE_SIZE)
        hv[E], hv[N], hv[U] = inv[i]
        rows.append((E, hv, inv[i][0] * y[0] + inv[i][1] * y[1] + inv[i][2] * y[2], 1.0))
    return rows


def _speed_row(z: float, var: float, x: np.ndarray) -> UpdateRow:
    return V, None, z - float(x[V]), var


def _yaw_rate_row(z: float, var: float, x: np.ndarray) -> UpdateRow:
    return R, None, z - float(x[R]), var


def _yaw_row(z: float, var: float, x: np.ndarray) -> UpdateRow:
    return PSI, None, wrap_angle(z - float(x[PSI])), var


def _pitch_row(z: float, var: float, x: np.ndarray) -> UpdateRow:
    """pitch = -atan(grade)."""
    g = float(x[G])
    k = 1.0 / math.sqrt(1.0 + g * g)
    hv = np.zeros(STATE_SIZE)
    hv[G] = -k * k
    return G, hv, z + math.atan(g), var


def _accel_row(z: float, var: float, x: np.ndarray) -> UpdateRow:
    """Specific force = accel + g * sin(atan(grade))."""
    g = float(x[G])
    k = 1.0 / math.sqrt(1.0 + g * g)
    hv = np.zeros(STATE_SIZE)
    hv[A] = 1.0
    hv[G] = G_MPS2 * k**3
    return A, hv, z - (float(x[A]) + G_MPS2 * g * k), var


_ROW_MODELS = {Quantity.SPEED: _speed_row, Quantity.YAW_RATE: _yaw_rate_row, Quantity.YAW: _yaw_row,
               Quantity.PITCH: _pitch_row, Quantity.ACCEL: _accel_row}


def observation_row(obs: Observation, x: np.ndarray) -> UpdateRow:
    """The scalar update row of ``obs`` at the predicted state ``x``."""
    return _ROW_MODELS[obs.quantity](obs.value, obs.variance, x)


# ----------------------------------------------------------------------------- validation of the inputs
def gnss_covariance(fix: GnssFix, params: FusionParams) -> list[list[float]]:
    """Check a fix's content; return its 3x3 ENU covariance (m^2): the parameters' when the receiver gives
    none, else the receiver's with ``gnss_min_sigma_m`` added to the variances."""
    if fix.status < 0:
        raise InputRejectedError("no_fix", f"status {fix.status}")
    if not _finite(fix.latitude_deg, fix.longitude_deg, fix.altitude_m):
        raise InputRejectedError("nan", "latitude/longitude/altitude not finite")
    if not (-90.0 <= fix.latitude_deg <= 90.0 and -180.0 <= fix.longitude_deg <= 180.0):
        raise InputRejectedError("out_of_range", f"lat {fix.latitude_deg}, lon {fix.longitude_deg}")
    if not -1000.0 <= fix.altitude_m <= 20000.0:
        raise InputRejectedError("out_of_range", f"altitude {fix.altitude_m} m")
    p = params
    if fix.cov_enu_m2 is None:
        h2, v2 = p.gnss_sigma_m**2, p.gnss_sigma_up_m**2
        return [[h2, 0.0, 0.0], [0.0, h2, 0.0], [0.0, 0.0, v2]]
    cov = covariance3(fix.cov_enu_m2)
    floor = p.gnss_min_sigma_m**2
    for i in range(3):
        cov[i][i] += floor
    return cov


def imu_observations(imu: ImuSample, params: FusionParams) -> ScalarMeasurements:
    """Check an IMU sample; return the observations in use (pitch, yaw, yaw rate, accel, per parameters)."""
    p = params
    rows: list[Observation] = []
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
            rows.append(Observation(Quantity.PITCH, pitch, var))
        if p.imu_use_yaw:
            yaw = math.atan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))
            var = cov[2][2] if cov is not None and cov[2][2] > 0 else p.imu_yaw_sigma_rad**2
            rows.append(Observation(Quantity.YAW, yaw, var))
    if imu.yaw_rate_rps is not None and p.imu_use_yaw_rate:
        if not math.isfinite(imu.yaw_rate_rps) or not math.isfinite(imu.yaw_rate_var):
            raise InputRejectedError("nan", "angular velocity not finite")
        if abs(imu.yaw_rate_rps) > 10.0:
            raise InputRejectedError("out_of_range", f"yaw rate {imu.yaw_rate_rps} rad/s")
        rows.append(Observation(Quantity.YAW_RATE, imu.yaw_rate_rps,
                                imu.yaw_rate_var if imu.yaw_rate_var > 0 else p.imu_yaw_rate_sigma_rps**2))
    if imu.accel_x_mps2 is not None and p.imu_use_accel:
        if not math.isfinite(imu.accel_x_mps2) or not math.isfinite(imu.accel_x_var):
            raise InputRejectedError("nan", "linear acceleration not finite")
        if abs(imu.accel_x_mps2) > 4.0 * G_MPS2:
            raise InputRejectedError("out_of_range", f"accel x {imu.accel_x_mps2} m/s^2")
        rows.append(Observation(Quantity.ACCEL, imu.accel_x_mps2,
                                imu.accel_x_var if imu.accel_x_var > 0 else p.imu_accel_sigma_mps2**2))
    if imu.yaw_rate_var < 0 or imu.accel_x_var < 0:
        raise InputRejectedError("bad_covariance", "negative variance")
    if not rows:
        raise InputRejectedError("no_usable_data", "no orientation, gyro or accelerometer in use")
    return ScalarMeasurements("imu", tuple(rows))


def odom_observations(odom: WheelSpeed, params: FusionParams) -> ScalarMeasurements:
    """Check a wheel-odometry message; return its speed (and yaw rate when ``odom_use_yaw_rate``)."""
    p = params
    if not _finite(odom.speed_mps, odom.speed_var):
        raise InputRejectedError("nan", "speed not finite")
    if abs(odom.speed_mps) > p.max_speed_mps:
        raise InputRejectedError("out_of_range", f"speed {odom.speed_mps} m/s > max_speed_mps")
    if odom.speed_var < 0 or odom.yaw_rate_var < 0:
        raise InputRejectedError("bad_covariance", "negative variance")
    rows = [Observation(Quantity.SPEED, odom.speed_mps,
                        odom.speed_var if odom.speed_var > 0 else p.odom_speed_sigma_mps**2)]
    if p.odom_use_yaw_rate and math.isfinite(odom.yaw_rate_rps):
        rows.append(Observation(Quantity.YAW_RATE, odom.yaw_rate_rps,
                                odom.yaw_rate_var if odom.yaw_rate_var > 0 else p.imu_yaw_rate_sigma_rps**2))
    return ScalarMeasurements("odom", tuple(rows))


def engine_values(sample: EngineSample) -> tuple[dict[str, float], list[str]]:
    """The sample's usable channels by name, and those refused as out of range (NaN = absent, neither).

    Raises when no channel carries a usable value."""
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
    return good, bad
