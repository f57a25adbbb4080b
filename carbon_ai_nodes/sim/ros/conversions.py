"""Simulator readings (sim/vehicle_sim.py) -> sensor_msgs/NavSatFix, Imu, nav_msgs/Odometry,
carbon_ai_msgs/EngineTelemetry, and ActuatorCommand -> simulator command values."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, NavSatFix, NavSatStatus

from carbon_ai_msgs.msg import ActuatorCommand, CarbonEstimate, EngineTelemetry
from carbon_ai_nodes.common.frames import yaw_pitch_quaternion


def nav_sat_fix(stamp: Time, frame_id: str, lat_deg: float, lon_deg: float, alt_m: float,
                sigma_m: float) -> NavSatFix:
    """A GNSS fix with a diagonal covariance from the horizontal sigma (m); vertical is twice as noisy."""
    msg = NavSatFix(latitude=lat_deg, longitude=lon_deg, altitude=alt_m)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.status.status = NavSatStatus.STATUS_FIX
    msg.status.service = NavSatStatus.SERVICE_GPS
    var_h = max(sigma_m, 0.01) ** 2
    msg.position_covariance = [var_h, 0.0, 0.0, 0.0, var_h, 0.0, 0.0, 0.0, 4.0 * var_h]
    msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
    return msg


def imu(stamp: Time, frame_id: str, accel_x_mps2: float, accel_z_mps2: float, yaw_rate_rps: float,
        yaw_rad: float, pitch_rad: float, accel_sigma: float, gyro_sigma: float) -> Imu:
    """An IMU sample: specific force (m/s^2), yaw rate (rad/s), orientation from yaw and pitch."""
    msg = Imu()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    if math.isfinite(yaw_rad) and math.isfinite(pitch_rad):
        x, y, z, w = yaw_pitch_quaternion(yaw_rad, pitch_rad)
    else:
        x = y = z = w = math.nan
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = x, y, z, w
    msg.orientation_covariance = [1e-3, 0, 0, 0, 1e-3, 0, 0, 0, 1e-2]
    msg.angular_velocity.z = yaw_rate_rps
    g2 = max(gyro_sigma, 1e-4) ** 2
    msg.angular_velocity_covariance = [g2, 0, 0, 0, g2, 0, 0, 0, g2]
    msg.linear_acceleration.x = accel_x_mps2
    msg.linear_acceleration.z = accel_z_mps2
    a2 = max(accel_sigma, 1e-3) ** 2
    msg.linear_acceleration_covariance = [a2, 0, 0, 0, a2, 0, 0, 0, a2]
    return msg


def wheel_odometry(stamp: Time, frame_id: str, child_frame_id: str, east_m: float, north_m: float,
                   heading_rad: float, speed_mps: float, speed_sigma: float) -> Odometry:
    """Dead-reckoned wheel odometry: pose in ``frame_id``, forward speed in the body frame."""
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    msg.pose.pose.position.x = east_m
    msg.pose.pose.position.y = north_m
    x, y, z, w = yaw_pitch_quaternion(heading_rad, 0.0) if math.isfinite(heading_rad) else (math.nan,) * 4
    o = msg.pose.pose.orientation
    o.x, o.y, o.z, o.w = x, y, z, w
    msg.pose.covariance[0] = msg.pose.covariance[7] = 1.0
    msg.pose.covariance[35] = 0.05
    msg.twist.twist.linear.x = speed_mps
    msg.twist.covariance[0] = max(speed_sigma, 1e-3) ** 2
    return msg


def engine_telemetry(stamp: Time, values: tuple[float, float, float, float, float, float]) -> EngineTelemetry:
    """EngineTelemetry from (rpm, load %, fuel L/h, coolant C, payload kg, ambient C)."""
    rpm, load, fuel, coolant, payload, ambient = values
    msg = EngineTelemetry(engine_speed_rpm=rpm, engine_load_pct=load, fuel_rate_lph=fuel, coolant_temp_c=coolant,
                          payload_kg=payload, ambient_temp_c=ambient)
    msg.header.stamp = stamp
    return msg


def true_emission(stamp: Time, asset_id: str, co2_g_s: float, fuel_lph: float, power_kw: float) -> CarbonEstimate:
    """The simulator's ground truth as a CarbonEstimate (backend ``sim-truth``), for evaluation only."""
    msg = CarbonEstimate(asset_id=asset_id, co2_rate_g_s=co2_g_s, fuel_rate_lph=fuel_lph, power_kw=power_kw,
                         physics_co2_rate_g_s=co2_g_s, uncertainty_g_s=0.0, backend="sim-truth",
                         model_id="vehicle_sim")
    msg.header.stamp = stamp
    return msg


def command_values(msg: ActuatorCommand) -> tuple[float, float, bool]:
    """speed limit (m/s), engine load limit (%), e-stop from an ActuatorCommand."""
    return msg.speed_limit_mps, msg.engine_load_limit_pct, msg.mode == ActuatorCommand.MODE_ESTOP
