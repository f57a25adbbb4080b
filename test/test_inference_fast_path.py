"""The per-message inference path gives exactly what the batch path gives: the ONNX Runtime single-row
binding, the estimator's one-row path and the VehicleState conversion, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import REPO

from carbon_ai_msgs.msg import VehicleState
from carbon_ai_nodes.carbon.carbon_estimator import CarbonEstimator, StateInput, validate_state
from carbon_ai_nodes.carbon.residual_backend import load_backend
from carbon_ai_nodes.carbon.residual_features import N_FEATURES
from carbon_ai_nodes.carbon.ros.conversions import state_input
from carbon_ai_nodes.commands.estimate import shipped_model_path
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.vehicle_profile import load_profile

SEDAN = load_profile(REPO / "config" / "vehicles" / "example_sedan.yaml")
TRUCK = load_profile(REPO / "config" / "vehicles" / "class8_truck.yaml")


@pytest.fixture(scope="module")
def ort_cpu():
    return load_backend("onnxruntime-cpu", shipped_model_path())


def batch_value(backend, row) -> float:
    return float(backend.run(np.array([row], dtype=np.float32))[0])


def test_run_one_is_bound_and_equals_run(ort_cpu):
    assert ort_cpu._run_bound is not None  # the IOBinding path is live on CPU, or run_one is only a wrapper
    rng = np.random.default_rng(7)
    rows = (rng.normal(size=(200, N_FEATURES)) * [10, 1, 0.05, 1, 50, 2, 0.5, 20, 0.5, 2, 0.5] + 1).tolist()
    got = [ort_cpu.run_one(r) for r in rows]
    want = [batch_value(ort_cpu, r) for r in rows]
    assert got == want
    assert len(set(got)) > 100  # a stale output buffer would repeat one value


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # numpy says inf
def test_run_one_beyond_float32_and_with_busy_buffers(ort_cpu):
    row = [1.0] * N_FEATURES
    row[0] = 1e39  # numpy turns it into inf; struct would refuse it
    np.testing.assert_equal(ort_cpu.run_one(row), batch_value(ort_cpu, row))
    row = [2.0] * N_FEATURES
    ort_cpu._one_lock.acquire()  # another thread is in run_one: this call must not wait nor share buffers
    try:
        assert ort_cpu.run_one(row) == batch_value(ort_cpu, row)
    finally:
        ort_cpu._one_lock.release()


class RunOnly:
    """A backend with only the batch API (as the TensorRT one): the estimator wraps it."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.model_id, self.metadata = inner, inner.name, inner.model_id, inner.metadata

    def run(self, features: np.ndarray) -> np.ndarray:
        return self.inner.run(features)


def states() -> list[StateInput]:
    out = []
    for v in (0.0, 0.5, 3.0, 9.0, 14.0, 22.0, 31.0, 60.0):
        for a in (-2.5, -0.3, 0.0, 0.4, 1.5):
            for grade, payload, rpm, coolant in ((0.0, math.nan, math.nan, math.nan), (0.03, 300.0, 2200.0, 45.0),
                                                 (-0.04, 0.0, math.nan, 88.0)):
                out.append(StateInput("car", 1.0, v, a, grade, payload, rpm, math.nan, coolant))
    return out


@pytest.mark.parametrize("profile", [SEDAN, TRUCK], ids=["sedan", "truck"])
def test_estimate_equals_the_batch_path_exactly(ort_cpu, profile):
    est = CarbonEstimator(profile, ort_cpu)
    wrapped = CarbonEstimator(profile, RunOnly(ort_cpu))
    ss = states()
    single = [est.estimate(s) for s in ss]
    assert single == [est.estimate_batch([s])[0] for s in ss]
    assert single == [wrapped.estimate(s) for s in ss]
    assert single == [est.estimate(s, validated=True) for s in ss]
    if profile is SEDAN:  # the cases the comparison covers: model applied, out of distribution, fuel cut
        assert {e.is_out_of_distribution for e in single} == {True, False}
        assert any(e.co2_rate_g_s != e.physics_co2_rate_g_s for e in single)
        assert any(e.co2_rate_g_s == 0.0 for e in single)
    else:  # a diesel truck is outside the gasoline-car model: physics, flagged
        assert all(e.co2_rate_g_s == e.physics_co2_rate_g_s for e in single)


@pytest.mark.parametrize("field", ["stamp_s", "speed_mps", "accel_mps2", "grade"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_fields_are_named(field, bad):
    s = StateInput("car", 1.0, 10.0, 0.0, 0.0)
    setattr(s, field, bad)
    with pytest.raises(InputRejectedError) as info:
        validate_state(s, SEDAN)
    assert info.value.reason == "nan" and info.value.detail.startswith(f"{field}=")
    with pytest.raises(InputRejectedError):
        CarbonEstimator(SEDAN, load_backend("physics", "")).estimate(s)


def test_huge_finite_values_are_out_of_range_not_nan():
    s = StateInput("car", 1.0, 1e308, 1e308, 0.0)  # their sum overflows to inf
    with pytest.raises(InputRejectedError) as info:
        validate_state(s, SEDAN)
    assert info.value.reason == "out_of_range" and info.value.detail.startswith("speed_mps=")


def test_state_input_maps_every_field():
    msg = VehicleState(asset_id="car7", speed_mps=1.5, accel_mps2=2.5, grade=0.035, payload_kg=450.0,
                       engine_speed_rpm=1800.0, engine_load_pct=42.0, coolant_temp_c=71.0)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 250_000_000
    assert state_input(msg, 99.0) == StateInput(asset_id="car7", stamp_s=12.25, speed_mps=1.5, accel_mps2=2.5,
                                                grade=0.035, payload_kg=450.0, engine_speed_rpm=1800.0,
                                                engine_load_pct=42.0, coolant_temp_c=71.0)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 0, 0  # never set: judged at arrival
    assert state_input(msg, 99.0).stamp_s == 99.0
    msg.header.stamp.sec = -5  # before the epoch: no clock reading, not "unstamped"
    with pytest.raises(InputRejectedError) as info:
        state_input(msg, 99.0)
    assert info.value.reason == "bad_stamp"
