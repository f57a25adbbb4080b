"""TensorRT backend: builds an engine from the ONNX model once, caches it, and runs it on the GPU.

Written against the TensorRT Python API JetPack ships (8.6 on JetPack 5, 10.x on JetPack 6: both have
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``) and ``cuda-python`` (``cuda.cudart``)
for device memory. Import-guarded: where TensorRT, CUDA or a GPU is missing, loading raises ModelError
with the reason and selection moves on to ONNX Runtime.

Engines are specific to the model, the TensorRT version, the GPU and the precision, so the cache key holds
all four; a changed model or a JetPack upgrade builds a new engine instead of loading a stale one.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from carbon_ai_nodes.carbon.model_file import read_model
from carbon_ai_nodes.carbon.residual_features import INPUT_NAME, N_FEATURES, OUTPUT_NAME
from carbon_ai_nodes.common.errors import ModelError

MAX_BATCH = 64


def engine_cache_key(model_sha256: str, trt_version: str, gpu_name: str, fp16: bool) -> str:
    """File-name-safe key: model hash + TensorRT version + GPU + precision (``<hash12>-trt<ver>-<gpu>-fp16``)."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "_", gpu_name).strip("_").lower() or "gpu"
    ver = re.sub(r"[^0-9.]+", "", trt_version) or "unknown"
    return f"{model_sha256[:12]}-trt{ver}-{gpu}-{'fp16' if fp16 else 'fp32'}"


def engine_cache_path(cache_dir: str | Path, key: str) -> Path:
    """Where the engine for ``key`` is cached (``<cache_dir>/<key>.engine``)."""
    return Path(cache_dir).expanduser() / f"{key}.engine"


def default_cache_dir() -> Path:
    """~/.cache/carbon_ai/trt (engines survive restarts; a vehicle computer keeps its home)."""
    return Path.home() / ".cache" / "carbon_ai" / "trt"


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModelError(f"TensorRT is not installed ({exc.msg})") from None
    try:
        from cuda import cudart  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelError(f"cuda-python (cuda.cudart) is not installed ({exc.msg})") from None
    return trt, cudart


def _check(result):
    err, *rest = result
    if int(err) != 0:
        raise ModelError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTBackend:
    """A cached TensorRT engine for the residual MLP (dynamic batch 1..MAX_BATCH, FP16 where the GPU has it)."""

    name = "tensorrt"

    def __init__(self, model_path: str | Path, *, cache_dir: str | Path = "", fp16: bool = True) -> None:
        trt, cudart = _import_trt()
        n_dev = _check(cudart.cudaGetDeviceCount())
        if n_dev < 1:
            raise ModelError("no CUDA device")
        props = _check(cudart.cudaGetDeviceProperties(0))
        gpu_name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        model = read_model(model_path)
        self.model_id, self.metadata, self.sha256 = model.model_id, model.metadata, model.sha256
        self._trt, self._cudart = trt, cudart
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        use_fp16 = bool(fp16 and builder.platform_has_fast_fp16)
        key = engine_cache_key(model.sha256, trt.__version__, gpu_name, use_fp16)
        path = engine_cache_path(cache_dir or default_cache_dir(), key)
        self.cache_path, self.fp16 = path, use_fp16
        runtime = trt.Runtime(logger)
        engine = None
        if path.is_file():
            engine = runtime.deserialize_cuda_engine(path.read_bytes())  # None if unusable: rebuild below
        if engine is None:
            blob = self._build(trt, builder, logger, model.data, use_fp16)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(blob)
            tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated engine under the key
            engine = runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ModelError(f"TensorRT could not deserialise the engine for {model.path}")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self._in = _check(cudart.cudaMalloc(MAX_BATCH * N_FEATURES * 4))
        self._out = _check(cudart.cudaMalloc(MAX_BATCH * 4))
        self.context.set_tensor_address(INPUT_NAME, int(self._in))
        self.context.set_tensor_address(OUTPUT_NAME, int(self._out))

    @staticmethod
    def _build(trt, builder, logger, onnx_bytes: bytes, fp16: bool) -> bytes:
        flags = 0
        if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is the only mode from TensorRT 10
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelError(f"TensorRT ONNX parser refused the model: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 26)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (1, N_FEATURES), (8, N_FEATURES), (MAX_BATCH, N_FEATURES))
        config.add_optimization_profile(profile)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise ModelError("TensorRT engine build failed")
        return bytes(blob)

    def run(self, features: np.ndarray) -> np.ndarray:
        """Corrections [N]; batches above MAX_BATCH run in chunks."""
        if len(features) > MAX_BATCH:
            return np.concatenate([self.run(features[i:i + MAX_BATCH]) for i in range(0, len(features), MAX_BATCH)])
        cudart = self._cudart
        x = np.ascontiguousarray(features, dtype=np.float32)
        n = len(x)
        out = np.empty(n, np.float32)
        self.context.set_input_shape(INPUT_NAME, (n, N_FEATURES))
        _check(cudart.cudaMemcpyAsync(self._in, x.ctypes.data, x.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.execute_async_v3(self.stream):
            raise ModelError("TensorRT execution failed")
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, self._out, out.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return out

    def __del__(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is not None:
            for ptr in (getattr(self, "_in", None), getattr(self, "_out", None)):
                if ptr is not None:
                    cudart.cudaFree(ptr)


def model_sha256(path: str | Path) -> str:
    """sha256 of a model file (the first part of the engine cache key)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
