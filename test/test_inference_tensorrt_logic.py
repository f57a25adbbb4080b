"""The TensorRT backend's own logic (engine build, cache reuse, rebuild of an unusable cache, selection
order) against a stand-in for the TensorRT and CUDA Python modules: the real libraries cannot exist on
this machine (no GPU; TensorRT is not installable here), so only they are replaced."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from carbon_ai_nodes.carbon.residual_backend import select_backend
from carbon_ai_nodes.carbon.residual_features import N_FEATURES
from carbon_ai_nodes.carbon.tensorrt_backend import TensorRTBackend
from carbon_ai_nodes.commands.estimate import shipped_model_path
from carbon_ai_nodes.common.errors import ModelError


def fake_modules(version: str = "10.3.0", gpus: int = 1, parse_ok: bool = True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = []

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class Network:
        pass

    class Config:
        def __init__(self):
            self.flags = set()

        def set_memory_pool_limit(self, pool, size):
            pass

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            self.profile = profile

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shape = (name, lo, opt, hi)

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.builds.append(config.flags)
            return b"ENGINE:" + ("fp16" if "FP16" in config.flags else "fp32").encode()

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            return parse_ok

        def get_error(self, i):
            return "unsupported operator"

    class Context:
        def set_tensor_address(self, name, ptr):
            pass

        def set_input_shape(self, name, shape):
            self.shape = shape

        def execute_async_v3(self, stream):
            return True

    class Engine:
        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine() if bytes(blob).startswith(b"ENGINE:") else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)

    cudart = types.ModuleType("cuda.cudart")
    cudart.cudaGetDeviceCount = lambda: (0, gpus)
    cudart.cudaGetDeviceProperties = lambda i: (0, types.SimpleNamespace(name=b"Fake Orin GPU"))
    cudart.cudaStreamCreate = lambda: (0, 7)
    cudart.cudaMalloc = lambda n: (0, 4096)
    cudart.cudaMemcpyAsync = lambda *a: (0,)
    cudart.cudaStreamSynchronize = lambda s: (0,)
    cudart.cudaFree = lambda p: (0,)
    cudart.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cuda = types.ModuleType("cuda")
    cuda.cudart = cudart
    return trt, cuda, cudart


@pytest.fixture
def fake_trt(monkeypatch):
    def install(**kw):
        trt, cuda, cudart = fake_modules(**kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "cuda", cuda)
        monkeypatch.setitem(sys.modules, "cuda.cudart", cudart)
        return trt
    return install


def test_engine_is_built_once_then_loaded_from_the_cache(fake_trt, tmp_path):
    trt = fake_trt()
    first = TensorRTBackend(shipped_model_path(), cache_dir=tmp_path)
    assert len(trt.builds) == 1 and "FP16" in trt.builds[0]
    assert first.cache_path.is_file() and first.cache_path.parent == tmp_path
    assert "trt10.3.0" in first.cache_path.name and "fake_orin_gpu" in first.cache_path.name
    second = TensorRTBackend(shipped_model_path(), cache_dir=tmp_path)
    assert len(trt.builds) == 1  # reused, not rebuilt
    assert second.cache_path == first.cache_path
    assert second.run(np.zeros((3, N_FEATURES), np.float32)).shape == (3,)
    assert second.run(np.zeros((70, N_FEATURES), np.float32)).shape == (70,)  # chunked above MAX_BATCH
    fp32 = TensorRTBackend(shipped_model_path(), cache_dir=tmp_path, fp16=False)
    assert fp32.cache_path != first.cache_path and len(trt.builds) == 2


def test_unusable_cache_is_rebuilt_and_a_new_trt_version_gets_its_own_engine(fake_trt, tmp_path):
    trt = fake_trt()
    b = TensorRTBackend(shipped_model_path(), cache_dir=tmp_path)
    b.cache_path.write_bytes(b"truncated")
    TensorRTBackend(shipped_model_path(), cache_dir=tmp_path)
    assert len(trt.builds) == 2 and b.cache_path.read_bytes().startswith(b"ENGINE:")
    trt8 = fake_trt(version="8.6.2")
    c = TensorRTBackend(shipped_model_path(), cache_dir=tmp_path)
    assert len(trt8.builds) == 1 and "trt8.6.2" in c.cache_path.name


def test_auto_selection_prefers_tensorrt_and_falls_back_without_a_gpu(fake_trt, tmp_path):
    fake_trt()
    assert select_backend(shipped_model_path(), "auto", cache_dir=tmp_path).backend.name == "tensorrt"
    fake_trt(gpus=0)
    sel = select_backend(shipped_model_path(), "auto", cache_dir=tmp_path)
    assert sel.backend.name == "onnxruntime-cpu" and sel.skipped["tensorrt"] == "no CUDA device"
    fake_trt(parse_ok=False)
    with pytest.raises(ModelError, match="unsupported operator"):
        TensorRTBackend(shipped_model_path(), cache_dir=tmp_path / "other")
