"""The fusion core (EKF, validation, gating, late data, engine carry) against synthetic drives with known truth."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from fusion_synth import DATUM, Truth, measurements, trajectory

from carbon_ai_nodes.common.errors import InputRejectedError, ParameterError
from carbon_ai_nodes.common.geodesy import LocalFrame
from carbon_ai_nodes.fusion.ekf import FusionFilter
from carbon_ai_nodes.fusion.fusion_params import FusionParams
from carbon_ai_nodes.fusion.measurements import EngineSample, GnssFix, ImuSample, WheelSpeed, covariance3

T0 = 1000.0  # stamp of the synthetic drive's first sample
PARAMS = FusionParams(datum_latitude=DATUM.lat_deg, datum_longitude=DATUM.lon_deg, datum_altitude_m=DATUM.alt_m)


def run(f: FusionFilter, meas, skip=None) -> tuple[np.ndarray, dict]:
    """Feed measurements in order; return (t, speed, grade, east, north, heading, P_east) after each odom
    sample, and the rejection counts by (source, reason)."""
    rejected: dict = {}
    rows = []
    for src, m in meas:
        if skip and skip(src, m):
            continue
        try:
            getattr(f, f"update_{src}")(m, m.stamp_s)
        except InputRejectedError as exc:
            rejected[(src, exc.reason)] = rejected.get((src, exc.reason), 0) + 1
        if src == "odom":
            s = f.state_at(m.stamp_s)
            rows.append((m.stamp_s - T0, s.speed_mps, s.grade, s.east_m, s.north_m, s.heading_rad,
                         s.covariance[0, 0]))
    return np.array(rows), rejected


def errors(est: np.ndarray, truth: Truth, after_s: float = 15.0) -> dict[str, np.ndarray]:
    idx = np.searchsorted(truth.t_s, est[:, 0] - 1e-9)
    m = est[:, 0] > after_s
    i = idx[m]
    return {
        "speed": est[m, 1] - truth.speed_mps[i],
        "grade": est[m, 2] - truth.grade[i],
        "pos": np.hypot(est[m, 3] - truth.east_m[i], est[m, 4] - truth.north_m[i]),
        "heading": np.angle(np.exp(1j * (est[m, 5] - truth.heading_rad[i]))),
        "t": est[m, 0],
        "p_east": est[m, 6],
    }


def rmse(e: np.ndarray) -> float:
    return float(np.sqrt(np.mean(e**2)))


@pytest.fixture(scope="module")
def drive():
    truth = trajectory(duration_s=90.0, seed=3)
    return truth, measurements(truth, seed=4, t0_s=T0)


def test_speed_and_grade_within_bounds_with_realistic_noise(drive):
    """GNSS 1.5 m / 3 m (white + slow bias), IMU pitch 0.3 deg, accel 0.1 m/s^2 + 0.05 bias, wheel speed 0.5 %
    scale error: speed RMSE < 0.15 m/s, grade RMSE < 0.005 (0.5 %), position RMSE < 2 m, heading < 0.02 rad."""
    truth, meas = drive
    est, rejected = run(FusionFilter(PARAMS), meas)
    e = errors(est, truth)
    assert rmse(e["speed"]) < 0.15
    assert rmse(e["grade"]) < 0.005
    assert rmse(e["pos"]) < 2.0
    assert rmse(e["heading"]) < 0.02
    assert sum(rejected.values()) <= 0.01 * len(meas), rejected  # the gate does not eat good data


def test_grade_from_altitude_and_accelerometer_alone(drive):
    """Without IMU orientation, grade still comes from GNSS altitude change and the accelerometer's gravity."""
    truth, meas = drive
    est, _ = run(FusionFilter(PARAMS.replace(imu_use_pitch=False)), meas)
    assert rmse(errors(est, truth, after_s=20.0)["grade"]) < 0.015


def test_gate_rejects_injected_outliers(drive):
    truth, meas = drive
    rng = np.random.default_rng(7)
    corrupted = []
    outliers = 0
    for src, m in meas:
        if src == "gnss" and m.stamp_s - T0 > 20 and rng.random() < 0.1:
            e, n, u = DATUM.to_enu(m.latitude_deg, m.longitude_deg, m.altitude_m)
            lat, lon, alt = DATUM.to_geodetic(e + rng.choice([-1, 1]) * 25.0, n + 15.0, u)
            m = dataclasses.replace(m, latitude_deg=lat, longitude_deg=lon, altitude_m=alt)
            outliers += 1
        corrupted.append((src, m))
    est, rejected = run(FusionFilter(PARAMS), corrupted)
    gated = rejected.get(("gnss", "gated"), 0) + rejected.get(("gnss", "impossible_jump"), 0)
    assert outliers > 30
    assert gated >= outliers  # every 25-30 m outlier refused
    assert gated <= outliers + 3
    e = errors(est, truth)
    assert rmse(e["pos"]) < 2.0 and rmse(e["speed"]) < 0.15


def test_impossible_jump_is_refused_and_leaves_state_untouched(drive):
    _, meas = drive
    f = FusionFilter(PARAMS)
    run(f, meas[:3000])
    last_fix = next(m for s, m in reversed(meas[:3000]) if s == "gnss")
    x, p = f.x.copy(), f.P.copy()
    e, n, u = DATUM.to_enu(last_fix.latitude_deg, last_fix.longitude_deg, last_fix.altitude_m)
    lat, lon, alt = DATUM.to_geodetic(e + 200.0, n, u)
    jump = dataclasses.replace(last_fix, stamp_s=last_fix.stamp_s + 0.01, latitude_deg=lat, longitude_deg=lon)
    with pytest.raises(InputRejectedError) as exc:
        f.update_gnss(jump, jump.stamp_s)
    assert exc.value.reason == "impossible_jump"
    np.testing.assert_array_equal(f.x, x)
    np.testing.assert_array_equal(f.P, p)


def test_five_second_gnss_loss_degrades_gracefully_and_recovers(drive):
    truth, meas = drive
    est, _ = run(FusionFilter(PARAMS), meas, skip=lambda s, m: s == "gnss" and 50.0 <= m.stamp_s - T0 < 55.0)
    e = errors(est, truth)
    before = (e["t"] > 40) & (e["t"] < 50)
    outage = (e["t"] >= 50) & (e["t"] < 55)
    after = (e["t"] > 60) & (e["t"] < 70)
    p_at = {t: e["p_east"][np.argmin(np.abs(e["t"] - t))] for t in (50.0, 52.0, 54.9)}
    assert p_at[50.0] < p_at[52.0] < p_at[54.9]  # covariance grows while predicting without GNSS
    assert e["pos"][outage].max() < 6.0  # dead reckoning on wheel speed + gyro stays close
    assert np.abs(e["speed"][outage]).max() < 0.5  # speed does not need GNSS
    assert rmse(e["pos"][after]) < 1.2 * rmse(e["pos"][before]) + 0.5  # back to normal
    assert e["p_east"][(e["t"] > 57) & (e["t"] < 60)].max() < p_at[54.9]  # and confident again


def test_prediction_only_covariance_grows_and_state_stays_finite(drive):
    _, meas = drive
    f = FusionFilter(PARAMS)
    run(f, meas[:4000])
    now = f.t
    traces = [float(np.trace(f.state_at(now + dt).covariance)) for dt in (0.0, 1.0, 5.0, 60.0, 3600.0)]
    assert all(a < b for a, b in zip(traces[:-1], traces[1:], strict=True))
    late = f.state_at(now + 3600.0)
    assert all(math.isfinite(v) for v in (late.speed_mps, late.accel_mps2, late.grade, late.east_m))
    assert abs(late.accel_mps2) < 1e-6  # acceleration decays: no runaway extrapolation


def _arrival_order(meas, gnss_delay_s: float):
    """The same measurements as they would arrive when GNSS is ``gnss_delay_s`` late on the wire."""
    arrivals = [(m.stamp_s + (gnss_delay_s if s == "gnss" else 0.0), i, s, m) for i, (s, m) in enumerate(meas)]
    return [(s, m) for _, _, s, m in sorted(arrivals)]


def test_late_messages_are_folded_in_by_stamp(drive):
    """GNSS arriving 150 ms late (behind many IMU samples) gives exactly the in-order estimate."""
    _, meas = drive
    in_order = FusionFilter(PARAMS)
    run(in_order, meas[:6000])
    late = FusionFilter(PARAMS)
    _, rejected = run(late, _arrival_order(meas[:6000], 0.15))
    assert not rejected
    assert late.replays > 0
    np.testing.assert_allclose(late.x, in_order.x, rtol=0, atol=1e-9)
    np.testing.assert_allclose(late.P, in_order.P, rtol=0, atol=1e-9)


def test_too_late_and_backwards_stamps_are_dropped_without_effect(drive):
    _, meas = drive
    f = FusionFilter(PARAMS.replace(max_lateness_s=0.1, max_stamp_age_s=0.0))  # the lateness rule alone
    run(f, meas[:3000])
    x, p, t = f.x.copy(), f.P.copy(), f.t
    old_gnss = next(m for s, m in meas[:3000] if s == "gnss" and m.stamp_s < t - 1.0)
    for update, m in ((f.update_gnss, old_gnss), (f.update_odom, WheelSpeed(t - 5.0, 3.0))):
        with pytest.raises(InputRejectedError) as exc:
            update(m, t)
        assert exc.value.reason == "out_of_order"
    np.testing.assert_array_equal(f.x, x)
    np.testing.assert_array_equal(f.P, p)
    assert f.t == t


GOOD_Q = (0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(("source", "bad", "reason"), [
    ("gnss", GnssFix(T0, math.nan, 11.5, 500.0), "nan"),
    ("gnss", GnssFix(T0, 48.1, math.inf, 500.0), "nan"),
    ("gnss", GnssFix(T0, 95.0, 11.5, 500.0), "out_of_range"),
    ("gnss", GnssFix(T0, 48.1, 11.5, 500.0, status=-1), "no_fix"),
    ("gnss", GnssFix(T0, 48.1, 11.5, 500.0, cov_enu_m2=[1, 0, 0, 0, -4, 0, 0, 0, 1]), "bad_covariance"),
    ("gnss", GnssFix(T0, 48.1, 11.5, 500.0, cov_enu_m2=[1, 5, 0, 5, 1, 0, 0, 0, 1]), "bad_covariance"),
    ("gnss", GnssFix(T0, 48.1, 11.5, 500.0, cov_enu_m2=[1, 0, 0, 0, math.nan, 0, 0, 0, 1]), "bad_covariance"),
    ("gnss", GnssFix(T0 + 60.0, 48.1, 11.5, 500.0), "future_stamp"),
    ("gnss", GnssFix(math.nan, 48.1, 11.5, 500.0), "nan"),
    ("imu", ImuSample(T0, (math.nan, 0.0, 0.0, 1.0)), "nan"),
    ("imu", ImuSample(T0, (0.0, 0.0, 0.0, 0.5)), "bad_quaternion"),
    ("imu", ImuSample(T0, GOOD_Q, orientation_cov=[[1, 0, 0], [0, -1, 0], [0, 0, 1]]), "bad_covariance"),
    ("imu", ImuSample(T0, None, None, math.inf), "nan"),
    ("imu", ImuSample(T0, None, None, None, 0.0, 400.0), "out_of_range"),
    ("imu", ImuSample(T0), "no_usable_data"),
    ("odom", WheelSpeed(T0, math.nan), "nan"),
    ("odom", WheelSpeed(T0, 500.0), "out_of_range"),
    ("odom", WheelSpeed(T0, 5.0, speed_var=-1.0), "bad_covariance"),
])
def test_bad_input_is_rejected_with_its_reason_and_changes_nothing(drive, source, bad, reason):
    _, meas = drive
    f = FusionFilter(FusionParams())  # no datum: bad fixes must not set one either
    f.update_odom(WheelSpeed(T0 - 0.1, 5.0), T0)
    x, p = f.x.copy(), f.P.copy()
    with pytest.raises(InputRejectedError) as exc:
        getattr(f, f"update_{source}")(bad, T0)
    assert exc.value.reason == reason
    np.testing.assert_array_equal(f.x, x)
    np.testing.assert_array_equal(f.P, p)
    assert f.frame is None


def test_fixes_before_the_datum_do_not_crash_and_the_first_valid_fix_sets_it():
    f = FusionFilter(FusionParams())
    with pytest.raises(InputRejectedError):
        f.update_gnss(GnssFix(T0, 0.0, 0.0, 0.0, status=-1), T0)
    assert f.frame is None and not f.initialized
    assert math.isnan(f.state_at(T0).latitude_deg)  # asking early is fine too
    f.update_gnss(GnssFix(T0 + 0.1, 48.2, 11.6, 510.0), T0 + 0.1)
    assert f.frame == LocalFrame(48.2, 11.6, 510.0)
    s = f.state_at(T0 + 0.1)
    assert s.latitude_deg == pytest.approx(48.2, abs=1e-9) and s.east_m == pytest.approx(0.0, abs=1e-6)


def test_persistent_gnss_shift_reinitialises_position_after_the_configured_streak(drive):
    """If GNSS keeps disagreeing (the filter, not the receiver, went wrong), position is re-taken from GNSS."""
    _, meas = drive
    f = FusionFilter(PARAMS.replace(gnss_reset_after=5))
    run(f, meas[:2000])
    shifted = []
    for src, m in meas[2000:4000]:
        if src == "gnss":
            e, n, u = DATUM.to_enu(m.latitude_deg, m.longitude_deg, m.altitude_m)
            lat, lon, alt = DATUM.to_geodetic(e + 80.0, n, u)
            m = dataclasses.replace(m, latitude_deg=lat, longitude_deg=lon)
        shifted.append((src, m))
    _, rejected = run(f, shifted)
    assert f.gnss_resets >= 1
    assert sum(rejected.values()) >= 4
    last = next(m for s, m in reversed(shifted) if s == "gnss")
    e, _, _ = DATUM.to_enu(last.latitude_deg, last.longitude_deg, last.altitude_m)
    assert abs(f.state_at(last.stamp_s).east_m - e) < 10.0


def test_engine_quantities_are_low_passed_aged_and_range_checked():
    f = FusionFilter(FusionParams(engine_filter_tau_s=0.5, engine_timeout_s=1.0))
    f.update_engine(EngineSample(T0, engine_speed_rpm=800.0, payload_kg=1000.0), T0)
    assert f.engine_at(T0)["engine_speed_rpm"] == 800.0  # the first sample is taken as is
    f.update_engine(EngineSample(T0 + 0.5, engine_speed_rpm=1800.0, payload_kg=1000.0), T0 + 0.5)
    rpm = f.engine_at(T0 + 0.5)["engine_speed_rpm"]
    assert rpm == pytest.approx(800.0 + 1000.0 * (1 - math.exp(-1.0)))
    assert math.isnan(f.engine_at(T0 + 0.5)["fuel_rate_lph"])  # never measured stays NaN
    bad = f.update_engine(EngineSample(T0 + 0.6, engine_speed_rpm=1800.0, fuel_rate_lph=-50.0), T0 + 0.6)
    assert bad == ["fuel_rate_lph"]
    with pytest.raises(InputRejectedError, match="out_of_order"):
        f.update_engine(EngineSample(T0 + 0.1, engine_speed_rpm=900.0), T0 + 0.6)
    with pytest.raises(InputRejectedError, match="out_of_range"):
        f.update_engine(EngineSample(T0 + 0.7, engine_speed_rpm=-5.0), T0 + 0.7)
    assert math.isnan(f.engine_at(T0 + 5.0)["engine_speed_rpm"])  # aged out
    f.update_odom(WheelSpeed(T0 + 0.7, 0.0), T0 + 0.7)
    assert f.state_at(T0 + 0.7).is_idle
    f.update_engine(EngineSample(T0 + 1.9, engine_speed_rpm=800.0), T0 + 1.9)
    f.update_odom(WheelSpeed(T0 + 2.0, 1.0, speed_var=0.01), T0 + 2.0)
    assert not f.state_at(T0 + 2.0).is_idle  # engine running but moving


def test_parameters_validate_with_the_key_named():
    with pytest.raises(ParameterError, match=r"fusion\.gnss_gate=-1\.0: must be > 0\.0"):
        FusionParams(gnss_gate=-1.0)
    with pytest.raises(ParameterError, match="at least one motion source"):
        FusionParams(gnss_enabled=False, imu_enabled=False, odom_enabled=False)
    with pytest.raises(ParameterError, match="datum_longitude"):
        FusionParams(datum_latitude=48.0)
    assert FusionParams(gnss_enabled=False, imu_enabled=False).odom_enabled


def test_datum_change_at_runtime_rebases_position(drive):
    _, meas = drive
    f = FusionFilter(PARAMS)
    run(f, meas[:1000])
    f.set_params(PARAMS.replace(datum_latitude=DATUM.lat_deg + 0.01))
    assert not f.position_ok and f.frame.lat_deg == pytest.approx(DATUM.lat_deg + 0.01)
    run(f, meas[1000:1200])
    assert f.position_ok and f.state_at(f.t).north_m < -1000.0  # now ~1.1 km south of the new datum


def test_covariance3_accepts_psd_and_refuses_the_rest():
    assert covariance3(np.diag([1.0, 2.0, 0.0]))[1][1] == 2.0
    assert covariance3([4, 1, 0, 1, 4, 0, 0, 0, 9])[0][1] == 1.0
    for bad in ([1, 2, 0, 2, 1, 0, 0, 0, 1], [1, 0, 0, 0, 1, 0, 0, 0], [1, 0.5, 0, 0, 1, 0, 0, 0, 1]):
        with pytest.raises(InputRejectedError, match="bad_covariance"):
            covariance3(bad)


@pytest.mark.parametrize(("lat", "lon"), [(48.137, 11.575), (-33.9, 151.2), (64.1, -21.9), (0.0, 179.9)])
def test_geodesy_round_trip(lat, lon):
    frame = LocalFrame(lat, lon, 100.0)
    for e, n, u in ((0.0, 0.0, 0.0), (1500.0, -2500.0, 30.0), (-20000.0, 15000.0, -80.0)):
        back = frame.to_enu(*frame.to_geodetic(e, n, u))
        assert np.allclose(back, (e, n, u), atol=1e-4)
    # 0.001 deg of latitude is about 111 m north
    assert frame.to_enu(lat + 0.001, lon, 100.0)[1] == pytest.approx(110.6, abs=1.0)
