"""Parameters of the fusion node (rates, gates, noise terms, per-input enables, datum) and its input names."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from carbon_ai_nodes.common.geodesy import LocalFrame
from carbon_ai_nodes.common.params import ParamSet, param

MOTION_SOURCES = ("gnss", "imu", "odom")
SOURCES = ("gnss", "imu", "odom", "engine")


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

