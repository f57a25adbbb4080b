"""Sensor messages -> fusion core inputs, and the fused state -> VehicleState / nav_msgs/Odometry.

Conventions followed (REP-103, REP-145, sensor_msgs docs): an IMU covariance whose element 0 is -1 means
"this part is not provided"; an all-zero covariance means "unknown" (the node's parameters apply);
NavSatFix covariance is East-North-Up. A zero header stamp (drivers that never set it) is replaced by the
receipt time, so such inputs still work, just with transport latency folded in; a negative or malformed stamp
is refused (``bad_stamp``, conversions.time.header_stamp_s: the rule every node applies).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, NavSatFix, NavSatStatus

from carbon_ai_msgs.msg import EngineTelemetry, SourceHealth, VehicleState
from carbon_ai_nodes.common.frames import yaw_pitch_quaternion
from carbon_ai_nodes.fusion.measurements import EngineSample, GnssFix, ImuSample, WheelSpeed
from carbon_ai_nodes.fusion.state import PSI, E, FusedState, N, R, U, V
from carbon_ai_nodes.ros.stamps import stamp_or_now

UNKNOWN_VARIANCE = 1e6  # for quantities the filter does not estimate (roll, lateral speed, ...)


def _cov3(values: Any) -> list[float] | None:
    flat = list(values)
    return None if not any(flat) else flat


def gnss_fix(msg: NavSatFix, now_s: float) -> GnssFix:
    """NavSatFix -> GnssFix; COVARIANCE_TYPE_UNKNOWN (or an all-zero matrix) leaves the covariance to parameters."""
    cov = None
    if msg.position_covariance_type != NavSatFix.COVARIANCE_TYPE_UNKNOWN:
        cov = _cov3(msg.position_covariance)
    # STATUS_UNKNOWN (-2, Jazzy and newer; the default of an unset message) is taken as a fix: the position is
    # still range-checked and gated. Only an explicit STATUS_NO_FIX is refused.
    status = NavSatStatus.STATUS_NO_FIX if msg.status.status == NavSatStatus.STATUS_NO_FIX else 0
    return GnssFix(stamp_or_now(msg.header.stamp, now_s), msg.latitude, msg.longitude, msg.altitude, status, cov)


def imu_sample(msg: Imu, now_s: float) -> ImuSample:
    """Imu -> ImuSample; parts flagged as absent (covariance[0] == -1) are left out."""
    q = None
    orientation_cov = None
    if msg.orientation_covariance[0] != -1.0:
        o = msg.orientation
        if not (o.x == 0.0 and o.y == 0.0 and o.z == 0.0 and o.w == 0.0):  # an unset quaternion: no orientation
            q = (o.x, o.y, o.z, o.w)
            orientation_cov = _cov3(msg.orientation_covariance)
    yaw_rate, yaw_rate_var = None, 0.0
    if msg.angular_velocity_covariance[0] != -1.0:
        yaw_rate, yaw_rate_var = msg.angular_velocity.z, float(msg.angular_velocity_covariance[8])
    accel, accel_var = None, 0.0
    if msg.linear_acceleration_covariance[0] != -1.0:
        accel, accel_var = msg.linear_acceleration.x, float(msg.linear_acceleration_covariance[0])
    return ImuSample(stamp_or_now(msg.header.stamp, now_s), q, orientation_cov, yaw_rate, yaw_rate_var,
                     accel, accel_var)


def wheel_speed(msg: Odometry, now_s: float) -> WheelSpeed:
    """Wheel odometry -> WheelSpeed (twist.linear.x and angular.z, in the child frame)."""
    cov = msg.twist.covariance
    return WheelSpeed(stamp_or_now(msg.header.stamp, now_s), msg.twist.twist.linear.x, float(cov[0]),
                      msg.twist.twist.angular.z, float(cov[35]))


def engine_sample(msg: EngineTelemetry, now_s: float) -> EngineSample:
    """EngineTelemetry -> EngineSample (NaN stays NaN: not available)."""
    return EngineSample(stamp_or_now(msg.header.stamp, now_s), msg.engine_speed_rpm, msg.engine_load_pct,
                        msg.fuel_rate_lph, msg.coolant_temp_c, msg.payload_kg, msg.ambient_temp_c)


def vehicle_state(state: FusedState, stamp: Time, asset_id: str, frame_id: str,
                  sources: list[SourceHealth], into: VehicleState | None = None) -> VehicleState:
    """The VehicleState of a fused state and the per-source health entries; refills ``into`` when given
    (a publisher serialises synchronously, so one message object can be reused for every publish)."""
    e = state.engine
    msg = VehicleState() if into is None else into
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.asset_id = asset_id
    msg.speed_mps = state.speed_mps
    msg.accel_mps2 = state.accel_mps2
    msg.grade = state.grade
    msg.heading_rad = state.heading_rad if state.heading_valid else math.nan
    msg.east_m, msg.north_m, msg.up_m = state.east_m, state.north_m, state.up_m
    msg.latitude, msg.longitude, msg.altitude_m = state.latitude_deg, state.longitude_deg, state.altitude_m
    msg.payload_kg = e["payload_kg"]
    msg.engine_speed_rpm = e["engine_speed_rpm"]
    msg.engine_load_pct = e["engine_load_pct"]
    msg.fuel_rate_lph = e["fuel_rate_lph"]
    msg.ambient_temp_c = e["ambient_temp_c"]
    msg.coolant_temp_c = e["coolant_temp_c"]
    msg.is_idle = state.is_idle
    if msg.sources is not sources:
        msg.sources = sources
    # A float64 ndarray of 36 is taken as is (no per-element checks); the 6x6 is a fresh copy per state.
    msg.covariance = np.ascontiguousarray(state.covariance, dtype=np.float64).reshape(36)
    return msg


_UINT32_MAX = 2**32 - 1



def fill_source_health(entry: SourceHealth, enabled: bool, stale: bool, healthy: bool, age_s: float,
                       accepted: int, rejected: int) -> SourceHealth:
    """Refill one SourceHealth entry in place (age in s; counts saturate at uint32)."""
    entry.enabled = enabled
    entry.stale = stale
    entry.healthy = healthy
    entry.age_s = age_s
    entry.accepted_count = min(accepted, _UINT32_MAX)
    entry.rejected_count = min(rejected, _UINT32_MAX)
    return entry


def odometry(state: FusedState, stamp: Time, frame_id: str, child_frame_id: str,
             into: Odometry | None = None) -> Odometry:
    """nav_msgs/Odometry of the estimate for rviz / other stacks: pose in the ENU frame, twist in the body.
    Refills ``into`` when given (see :func:`vehicle_state`)."""
    msg = Odometry() if into is None else into
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    pose = msg.pose.pose
    pose.position.x, pose.position.y, pose.position.z = state.east_m, state.north_m, state.up_m
    heading = state.heading_rad if state.heading_valid else 0.0
    q = yaw_pitch_quaternion(heading, math.atan(state.grade))
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = q
    p = state.state_covariance
    pose_cov = np.zeros(36)
    pose_cov[[0, 1, 2, 6, 7, 8, 12, 13, 14]] = p[np.ix_((E, N, U), (E, N, U))].ravel()
    pose_cov[21] = UNKNOWN_VARIANCE  # roll: not estimated
    pose_cov[28] = UNKNOWN_VARIANCE  # pitch: estimated as grade, reported through VehicleState
    pose_cov[35] = p[PSI, PSI] if state.heading_valid else UNKNOWN_VARIANCE
    msg.pose.covariance = pose_cov  # a float64 ndarray of 36 is taken without per-element checks
    msg.twist.twist.linear.x = state.speed_mps
    msg.twist.twist.angular.z = state.yaw_rate_rps
    twist_cov = np.zeros(36)
    twist_cov[0] = p[V, V]
    twist_cov[7] = twist_cov[14] = twist_cov[21] = twist_cov[28] = UNKNOWN_VARIANCE
    twist_cov[35] = p[R, R]
    msg.twist.covariance = twist_cov
    return msg
