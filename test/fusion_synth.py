"""Synthetic vehicle trajectories with known truth and realistic sensor noise, for the fusion tests and bench."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from carbon_ai_nodes.common.frames import G_MPS2
from carbon_ai_nodes.common.geodesy import LocalFrame
from carbon_ai_nodes.fusion.measurements import GnssFix, ImuSample, WheelSpeed

DATUM = LocalFrame(48.137, 11.575, 520.0)


@dataclasses.dataclass
class Truth:
    """Ground truth sampled every ``dt_s``."""

    t_s: np.ndarray
    east_m: np.ndarray
    north_m: np.ndarray
    up_m: np.ndarray
    speed_mps: np.ndarray
    accel_mps2: np.ndarray
    heading_rad: np.ndarray
    yaw_rate_rps: np.ndarray
    grade: np.ndarray


def trajectory(duration_s: float = 120.0, dt_s: float = 0.01, seed: int = 0) -> Truth:
    """A drive: pull away, cruise with speed changes, gentle turns, rolling hills (grade up to ~6 %)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, duration_s, dt_s)
    phase = rng.uniform(0, 2 * math.pi, 3)
    speed = 14.0 + 5.0 * np.sin(2 * math.pi * t / 40.0 + phase[0])
    ramp = np.clip(t / 10.0, 0.0, 1.0)
    speed = speed * ramp  # start from standstill
    accel = np.gradient(speed, dt_s)
    yaw_rate = 0.06 * np.sin(2 * math.pi * t / 30.0 + phase[1]) * ramp
    heading = 0.3 + np.cumsum(yaw_rate) * dt_s
    distance = np.cumsum(speed) * dt_s
    grade = 0.06 * np.sin(2 * math.pi * distance / 600.0 + phase[2])
    k = 1.0 / np.sqrt(1.0 + grade**2)
    east = np.cumsum(speed * k * np.cos(heading)) * dt_s
    north = np.cumsum(speed * k * np.sin(heading)) * dt_s
    up = np.cumsum(speed * grade * k) * dt_s
    return Truth(t, east, north, up, speed, accel, heading, yaw_rate, grade)


def measurements(truth: Truth, seed: int = 1, t0_s: float = 1000.0, gnss_sigma_m: float = 1.5,
                 gnss_sigma_up_m: float = 3.0) -> list[tuple[str, object]]:
    """Time-ordered (source, measurement): GNSS 10 Hz (white noise + a slow bias), IMU 100 Hz, odom 50 Hz."""
    rng = np.random.default_rng(seed)
    step = truth.t_s[1] - truth.t_s[0]
    out: list[tuple[str, object]] = []
    bias = np.zeros(3)
    accel_bias = 0.05
    for i, t in enumerate(truth.t_s):
        stamp = t0_s + float(t)
        if i % int(round(0.1 / step)) == 0:
            bias = bias * math.exp(-0.1 / 60.0) + rng.normal(0, [0.6, 0.6, 1.2]) * math.sqrt(1 - math.exp(-0.2 / 60))
            e, n, u = (np.array([truth.east_m[i], truth.north_m[i], truth.up_m[i]]) + bias
                       + rng.normal(0, [gnss_sigma_m, gnss_sigma_m, gnss_sigma_up_m]))
            lat, lon, alt = DATUM.to_geodetic(e, n, u)
            cov = np.diag([gnss_sigma_m**2, gnss_sigma_m**2, gnss_sigma_up_m**2])
            out.append(("gnss", GnssFix(stamp, lat, lon, alt, 0, cov)))
        pitch = -math.atan(truth.grade[i]) + rng.normal(0, 0.005)
        q = (0.0, math.sin(pitch / 2), 0.0, math.cos(pitch / 2))
        g = truth.grade[i]
        ax = truth.accel_mps2[i] + G_MPS2 * g / math.sqrt(1 + g * g) + accel_bias + rng.normal(0, 0.1)
        out.append(("imu", ImuSample(stamp, q, None, truth.yaw_rate_rps[i] + rng.normal(0, 0.01), 0.0, ax, 0.0)))
        if i % 2 == 0:
            out.append(("odom", WheelSpeed(stamp, truth.speed_mps[i] * 1.005 + rng.normal(0, 0.05))))
    return out
