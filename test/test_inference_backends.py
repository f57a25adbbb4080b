"""Residual model: ONNX export parity, backend selection and fallback, TensorRT cache keys, corrupt models,
hot swap and out-of-distribution handling (ONNX Runtime runs for real; TensorRT/CUDA skip where absent)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import onnxruntime as ort
import pytest
from conftest import REPO

from carbon_ai_nodes.carbon.carbon_estimator import CarbonEstimator, StateInput
from carbon_ai_nodes.carbon.emission_model import physics_rates
from carbon_ai_nodes.carbon.model_file import read_model
from carbon_ai_nodes.carbon.residual_backend import load_backend, select_backend
from carbon_ai_nodes.carbon.residual_features import INPUT_NAME, N_FEATURES, OUTPUT_NAME, FeatureRanges, feature_row
from carbon_ai_nodes.carbon.tensorrt_backend import engine_cache_key, engine_cache_path
from carbon_ai_nodes.carbon.training import mlp
from carbon_ai_nodes.commands.estimate import shipped_model_path
from carbon_ai_nodes.common.errors import ModelError
from carbon_ai_nodes.common.vehicle_profile import load_profile

SEDAN = load_profile(REPO / "config" / "vehicles" / "example_sedan.yaml")


def small_model(tmp_path, scale: float = 1.0, name: str = "m.onnx"):
    """Fit a tiny MLP on synthetic grouped data and export it (what the training script does)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, N_FEATURES)) * 3 + 5
    base = np.abs(rng.normal(size=400)) + 0.5
    group = np.arange(400)
    target = base * (1 + 0.1 * scale * np.tanh(x[:, 0] - 5))
    model = mlp.fit_grouped(x, base, group, target, hidden=(8,), l2=1e-4, max_iter=200)
    meta = {"feature_low": json.dumps([-1e9] * N_FEATURES), "feature_high": json.dumps([1e9] * N_FEATURES)}
    path = tmp_path / name
    path.write_bytes(mlp.to_onnx(model, INPUT_NAME, OUTPUT_NAME, metadata=meta))
    return model, path, x


def test_onnx_export_matches_the_trained_model(tmp_path):
    model, path, x = small_model(tmp_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})[0][:, 0]
    ref = model.predict(x)
    assert np.max(np.abs(ref)) > 0.01  # the model learned something, so parity is not trivially zero == zero
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_shipped_model_card_matches_the_file():
    card = json.loads((REPO / "carbon_ai_nodes" / "carbon" / "models" / "co2_residual_v1.json").read_text())
    data = (REPO / "carbon_ai_nodes" / "carbon" / "models" / "co2_residual_v1.onnx").read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"]
    assert card["input"]["name"] == INPUT_NAME and len(card["input"]["features"]) == N_FEATURES
    # On manufacturers it never saw, the residual must not make the (engine-speed) physics worse: a looser
    # residual fitted the training makers better and unseen ones worse, so the shipped one is regularised hard.
    for test in ("HWFE", "FTP"):
        held = card["error"]["held_out_manufacturers"][test]
        assert held["model_mape_pct"] <= held["physics_mape_pct"] + 0.2
    assert len(data) < 64_000


def test_auto_selection_picks_the_best_available_and_says_why():
    sel = select_backend(shipped_model_path(), "auto")
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        assert sel.backend.name == "onnxruntime-cpu"
        assert "tensorrt" in sel.skipped and "onnxruntime-cuda" in sel.skipped
        assert "not available" in sel.skipped["onnxruntime-cuda"]
    assert sel.backend.model_id.startswith("co2_residual_v1-")
    assert sel.backend.name in sel.describe()


def test_forced_backends():
    assert select_backend("", "physics").backend.name == "physics"
    assert select_backend(shipped_model_path(), "onnxruntime-cpu").backend.name == "onnxruntime-cpu"
    with pytest.raises(ModelError, match="unknown backend"):
        load_backend("openvino", shipped_model_path())


def test_tensorrt_backend_real_path_or_clear_refusal(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="TensorRT is not installed"):
            select_backend(shipped_model_path(), "tensorrt", cache_dir=tmp_path)
        pytest.skip("TensorRT is not installed on this machine (no GPU here): refusal checked, engine build skipped")
    b = select_backend(shipped_model_path(), "tensorrt", cache_dir=tmp_path).backend
    x = np.zeros((3, N_FEATURES), np.float32)
    ref = load_backend("onnxruntime-cpu", shipped_model_path()).run(x)
    np.testing.assert_allclose(b.run(x), ref, atol=1e-2)
    assert b.cache_path.is_file()


def test_onnxruntime_cuda_or_skip():
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ModelError, match="CUDAExecutionProvider not available"):
            load_backend("onnxruntime-cuda", shipped_model_path())
        pytest.skip("onnxruntime here has no CUDA provider (CPU-only build, no GPU): refusal checked")
    b = load_backend("onnxruntime-cuda", shipped_model_path())
    assert b.name == "onnxruntime-cuda"


def test_engine_cache_key_changes_with_model_trt_version_gpu_and_precision(tmp_path):
    base = engine_cache_key("ab" * 32, "10.3.0.26", "Orin (nvgpu)", True)
    assert base == "abababababab-trt10.3.0.26-orin_nvgpu-fp16"
    variants = {engine_cache_key("cd" * 32, "10.3.0.26", "Orin (nvgpu)", True),
                engine_cache_key("ab" * 32, "8.6.2", "Orin (nvgpu)", True),
                engine_cache_key("ab" * 32, "10.3.0.26", "NVIDIA RTX A2000", True),
                engine_cache_key("ab" * 32, "10.3.0.26", "Orin (nvgpu)", False)}
    assert base not in variants and len(variants) == 4
    assert engine_cache_path(tmp_path, base) == tmp_path / f"{base}.engine"


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", None], ids=["empty", "garbage", "truncated"])
def test_corrupt_model_is_refused_with_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content if content is not None else (REPO / "carbon_ai_nodes" / "carbon" / "models" /
                                                          "co2_residual_v1.onnx").read_bytes()[:300])
    with pytest.raises(ModelError) as info:
        load_backend("onnxruntime-cpu", path)
    assert str(path) in str(info.value)
    sel = select_backend(path, "auto")  # auto falls back to physics and says why
    assert sel.backend.name == "physics" and str(path) in sel.skipped["onnxruntime-cpu"]
    with pytest.raises(ModelError, match="cannot read"):
        read_model(tmp_path / "missing.onnx")


def test_wrong_input_name_is_refused(tmp_path):
    model, _, _ = small_model(tmp_path)
    path = tmp_path / "renamed.onnx"
    path.write_bytes(mlp.to_onnx(model, "x", OUTPUT_NAME))
    with pytest.raises(ModelError, match="expected one input named 'features'"):
        load_backend("onnxruntime-cpu", path)


def state(speed=15.0, accel=0.3, grade=0.0, payload=math.nan, coolant=math.nan):
    return StateInput("car", 1.0, speed, accel, grade, payload, coolant_temp_c=coolant)


def test_hot_swap_changes_the_serving_model_atomically(tmp_path):
    _, path_a, _ = small_model(tmp_path, 1.0, "a.onnx")
    _, path_b, _ = small_model(tmp_path, -3.0, "b.onnx")
    est = CarbonEstimator(SEDAN, load_backend("onnxruntime-cpu", path_a))
    s = state(speed=7.0)
    first = est.estimate(s)
    est.set_backend(load_backend("onnxruntime-cpu", path_b))
    second = est.estimate(s)
    assert first.model_id != second.model_id and second.model_id.startswith("b-")
    assert first.co2_rate_g_s != pytest.approx(second.co2_rate_g_s)
    assert first.physics_co2_rate_g_s == second.physics_co2_rate_g_s


def test_out_of_distribution_inputs_use_physics():
    est = CarbonEstimator(SEDAN, load_backend("onnxruntime-cpu", shipped_model_path()))
    ranges = FeatureRanges((0.0,) * N_FEATURES, (1.0,) * N_FEATURES)
    ok = est.estimate(state())
    assert not ok.is_out_of_distribution and ok.backend == "onnxruntime-cpu"
    assert ok.co2_rate_g_s != pytest.approx(ok.physics_co2_rate_g_s, rel=1e-6)
    hill = est.estimate(state(grade=0.03))  # flat-road training data, but the model ignores grade itself
    assert not hill.is_out_of_distribution and hill.physics_co2_rate_g_s > ok.physics_co2_rate_g_s
    fast = est.estimate(state(speed=60.0))  # 216 km/h: far beyond any certification cycle
    assert fast.is_out_of_distribution
    assert fast.co2_rate_g_s == pytest.approx(fast.physics_co2_rate_g_s)
    assert fast.uncertainty_g_s > 0
    assert "speed_mps" in est.ood_reason(state(speed=60.0))
    assert ranges.outside(feature_row(SEDAN, 0.5, 0.1, 0.0, 0.0)) != ""
    # a diesel truck is outside what the gasoline-car model saw, whatever its speed
    truck = CarbonEstimator(load_profile(REPO / "config" / "vehicles" / "class8_truck.yaml"), est.backend)
    t = truck.estimate(state())
    assert t.is_out_of_distribution and t.co2_rate_g_s == pytest.approx(t.physics_co2_rate_g_s)


def test_physics_backend_and_batch_equal_single_estimates():
    est = CarbonEstimator(SEDAN, load_backend("onnxruntime-cpu", shipped_model_path()))
    states = [state(speed=v, accel=a) for v, a in ((0.0, 0.0), (10.0, 1.0), (25.0, -2.0), (60.0, 0.0), (20.0, 0.2))]
    batch = est.estimate_batch(states)
    assert [b.co2_rate_g_s for b in batch] == pytest.approx([est.estimate(s).co2_rate_g_s for s in states])
    assert batch[2].co2_rate_g_s == 0.0  # fuel cut
    phys = CarbonEstimator(SEDAN, load_backend("physics", ""))
    e = phys.estimate(states[1])
    assert e.backend == "physics" and not e.is_out_of_distribution
    assert e.co2_rate_g_s == pytest.approx(physics_rates(SEDAN, 10.0, 1.0, 0.0, math.nan).co2_g_s)
