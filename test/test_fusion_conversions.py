"""Message <-> core conversions of the fusion node: REP-145 absent parts, unset stamps, output frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, NavSatFix, NavSatStatus

from carbon_ai_nodes.fusion.ekf import FusionFilter
from carbon_ai_nodes.fusion.fusion_params import FusionParams
from carbon_ai_nodes.fusion.measurements import GnssFix, WheelSpeed
from carbon_ai_nodes.fusion.ros import conversions as conv


def test_imu_parts_flagged_absent_are_left_out_and_unset_stamp_becomes_receipt_time():
    msg = Imu()
    msg.orientation_covariance[0] = -1.0  # no orientation
    msg.angular_velocity.z = 0.2
    msg.linear_acceleration.x = 1.5
    msg.linear_acceleration_covariance[0] = 0.04
    sample = conv.imu_sample(msg, now_s=123.5)
    assert sample.stamp_s == 123.5
    assert sample.quaternion_xyzw is None
    assert sample.yaw_rate_rps == 0.2 and sample.yaw_rate_var == 0.0  # all-zero covariance: parameters apply
    assert sample.accel_x_mps2 == 1.5 and sample.accel_x_var == pytest.approx(0.04)
    msg.orientation_covariance[0] = 0.0
    msg.orientation.w = 0.0
    assert conv.imu_sample(msg, 0.0).quaternion_xyzw is None  # all-zero quaternion: not an orientation
    msg.orientation.w = 1.0
    msg.header.stamp.sec = 7
    sample = conv.imu_sample(msg, 123.5)
    assert sample.quaternion_xyzw == (0.0, 0.0, 0.0, 1.0) and sample.stamp_s == 7.0


def test_navsatfix_status_and_covariance_types():
    msg = NavSatFix(latitude=48.0, longitude=11.0, altitude=500.0)
    msg.position_covariance = [4.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 9.0]
    assert conv.gnss_fix(msg, 1.0).cov_enu_m2 is None  # COVARIANCE_TYPE_UNKNOWN by default
    msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
    fix = conv.gnss_fix(msg, 1.0)
    assert list(fix.cov_enu_m2) == list(msg.position_covariance)
    assert fix.status >= 0  # STATUS_UNKNOWN (the unset default on newer distros) is not "no fix"
    msg.status.status = NavSatStatus.STATUS_NO_FIX
    assert conv.gnss_fix(msg, 1.0).status < 0


def test_wheel_odometry_takes_twist_and_its_variance():
    msg = Odometry()
    msg.twist.twist.linear.x = 4.0
    msg.twist.covariance[0] = 0.01
    w = conv.wheel_speed(msg, 5.0)
    assert (w.stamp_s, w.speed_mps, w.speed_var) == (5.0, 4.0, 0.01)


def _converged_filter() -> FusionFilter:
    f = FusionFilter(FusionParams())
    for i in range(40):  # 10 m/s north-east for 4 s
        t = 100.0 + 0.1 * i
        d = 10.0 * 0.1 * i / math.sqrt(2)
        lat, lon = 48.0 + d / 111_200.0, 11.0 + d / (111_200.0 * math.cos(math.radians(48.0)))
        f.update_gnss(GnssFix(t, lat, lon, 500.0), t)
        f.update_odom(WheelSpeed(t, 10.0), t)
    return f


def test_state_to_vehicle_state_and_odometry():
    f = _converged_filter()
    state = f.state_at(f.t)
    assert state.heading_valid
    msg = conv.vehicle_state(state, Odometry().header.stamp, "van3", "map", [])
    assert msg.asset_id == "van3" and msg.header.frame_id == "map"
    assert msg.heading_rad == pytest.approx(math.pi / 4, abs=0.1)
    cov = np.array(msg.covariance).reshape(6, 6)
    assert np.allclose(cov, cov.T) and np.all(np.diag(cov) > 0)
    assert math.isnan(msg.fuel_rate_lph)  # no engine telemetry: NaN, not zero
    odom = conv.odometry(state, msg.header.stamp, "map", "base_link")
    q = odom.pose.pose.orientation
    yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
    assert yaw == pytest.approx(state.heading_rad, abs=1e-9)
    assert odom.twist.twist.linear.x == pytest.approx(state.speed_mps)
    assert odom.pose.covariance[0] == pytest.approx(state.state_covariance[0, 0])
