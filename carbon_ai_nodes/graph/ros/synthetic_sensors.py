"""Synthetic sensor messages for latency measurement: the latency_probe node and ``carbon-ai bench latency`` feed
the same streams, so the pipeline and the bare relay chain are measured alike."""

from __future__ import annotations

import math
from typing import Any

from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, NavSatFix, NavSatStatus

from carbon_ai_msgs.msg import EngineTelemetry
from carbon_ai_nodes.common.frames import G_MPS2

SENSOR_TOPICS = (("imu/data", Imu), ("odom/wheel", Odometry), ("gnss/fix", NavSatFix),
                 ("engine/telemetry", EngineTelemetry))


def synthetic_sensors(k: int, stamp: Any, rate_hz: float = 100.0) -> list[Any]:
    """Tick ``k``'s messages, in SENSOR_TOPICS order: IMU and odometry always, GNSS and engine every tenth tick
    (None otherwise). A vehicle heading north at 10 + sin(t) m/s, as its odometry says, so fixes pass the gate."""
    t = k / rate_hz
    imu = Imu()
    imu.header.stamp = stamp
    imu.header.frame_id = "imu"
    imu.orientation.w = 1.0
    imu.linear_acceleration.x = 0.2 * math.sin(t)
    imu.linear_acceleration.z = G_MPS2
    odom = Odometry()
    odom.header.stamp = stamp
    odom.pose.pose.orientation.w = 1.0
    odom.twist.twist.linear.x = 10.0 + math.sin(t)
    if k % 10:
        return [imu, odom, None, None]
    north_m = 10.0 * t - math.cos(t) + 1.0
    fix = NavSatFix(latitude=-22.7 + north_m / 111_320.0, longitude=117.8, altitude=600.0)
    fix.header.stamp = stamp
    fix.status.status = NavSatStatus.STATUS_FIX
    fix.position_covariance = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 4.0]
    fix.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
    engine = EngineTelemetry(engine_speed_rpm=1400.0, engine_load_pct=50.0, fuel_rate_lph=20.0,
                             coolant_temp_c=88.0, payload_kg=500.0, ambient_temp_c=20.0)
    engine.header.stamp = stamp
    return [imu, odom, fix, engine]
