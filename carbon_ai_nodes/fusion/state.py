"""The fusion filter's state layout and the estimate it reports.

State (8, SI units): ``[east_m, north_m, up_m, speed_mps, accel_mps2, heading_rad, yaw_rate_rps, grade]``
in a local ENU frame whose origin is the datum (configured, or the first valid fix).
"""

from __future__ import annotations

import dataclasses

import numpy as np

E, N, U, V, A, PSI, R, G = range(8)
STATE_SIZE = 8
# VehicleState.covariance rows/cols: [east, north, speed, accel, heading, grade]
OUTPUT_INDEX = np.array([E, N, V, A, PSI, G])


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
