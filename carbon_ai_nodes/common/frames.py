"""Physical constants, angles and frame conventions shared by fusion, the simulator and the emission physics.

One home, so the simulator that makes the sensor data and the filter that reads it cannot disagree: ROS REP 103
axes (x forward, y left, z up; a nose-up pitch is a negative rotation about y), angles in radians wrapped into
(-pi, pi]. Geodetic frames (WGS84 <-> local ENU) live in :mod:`carbon_ai_nodes.common.geodesy`.
"""

from __future__ import annotations

import math

G_MPS2 = 9.80665  # standard gravity (CGPM 1901), m/s^2


def wrap_angle(a_rad: float) -> float:
    """Angle (rad) wrapped into (-pi, pi]."""
    a = math.fmod(a_rad + math.pi, 2.0 * math.pi)
    if a <= 0.0:
        a += 2.0 * math.pi
    return a - math.pi


def yaw_pitch_quaternion(yaw_rad: float, nose_up_rad: float) -> tuple[float, float, float, float]:
    """x, y, z, w of a body yawed ``yaw_rad`` (about z, from east, counter-clockwise) and pitched nose up by
    ``nose_up_rad`` (on an uphill grade: atan(grade)); roll 0. REP 103's +y points left, so nose up is a
    negative rotation about y."""
    cy, sy = math.cos(yaw_rad / 2), math.sin(yaw_rad / 2)
    cp, sp = math.cos(-nose_up_rad / 2), math.sin(-nose_up_rad / 2)
    return (-sy * sp, cy * sp, sy * cp, cy * cp)

