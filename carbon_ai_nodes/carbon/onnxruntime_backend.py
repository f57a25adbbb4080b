"""ONNX Runtime backend with the TensorRT, CUDA or CPU execution provider."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np

from carbon_ai_nodes.carbon.model_file import read_model
from carbon_ai_nodes.carbon.residual_features import INPUT_NAME, N_FEATURES, OUTPUT_NAME
from carbon_ai_nodes.common.errors import ModelError

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def provider_options(provider: str, cache_dir: str | Path, fp16: bool) -> dict[str, str]:
    """Options of the execution provider (TensorRT EP: engine cache and FP16)."""
    if provider == "tensorrt":
        opts = {"trt_fp16_enable": "True" if fp16 else "False"}
        if cache_dir:
            opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(cache_dir))
        return opts
    return {}


class OrtBackend:
    """One InferenceSession on exactly one provider (plus CPU for nodes a GPU provider leaves over).

    Loading runs one inference to prove the model works before it replaces anything.
    """

    def __init__(self, model_path: str | Path, provider: str = "cpu", *, cache_dir: str | Path = "",
                 fp16: bool = True, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(f"onnxruntime is not installed ({exc})") from None
        if provider not in PROVIDERS:
            raise ModelError(f"unknown ONNX Runtime provider {provider!r}; known: {', '.join(PROVIDERS)}")
        ep = PROVIDERS[provider]
        if ep not in ort.get_available_providers():
            raise ModelError(f"{ep} not available in this onnxruntime build")
        model = read_model(model_path)
        so = ort.SessionOptions()
        # One small MLP per call: threading costs more than it saves, and the node shares the CPU.
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers: list = [(ep, provider_options(provider, cache_dir, fp16))]
        if provider != "cpu":
            providers.append("CPUExecutionProvider")
        try:
            self.session = ort.InferenceSession(model.data, sess_options=so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"{model.path}: ONNX Runtime refused the model ({str(exc).splitlines()[0][:160]})") \
                from None
        if self.session.get_providers()[0] != ep:
            raise ModelError(f"{ep} could not take the model (fell back to {self.session.get_providers()[0]})")
        # The binding's run skips the Python wrapper's per-call argument checks (a few us per estimate);
        # the public method is the fallback should a future onnxruntime rename the attribute.
        inner = getattr(self.session, "_sess", None)
        self._fast_run = inner.run if inner is not None and hasattr(inner, "run") else None
        self._outputs = [OUTPUT_NAME]
        self.name = f"onnxruntime-{provider}"
        self.model_id = model.model_id
        self.metadata = model.metadata
        self.sha256 = model.sha256
        probe = self.run(np.zeros((1, N_FEATURES), np.float32))
        if probe.shape != (1,) or not np.all(np.isfinite(probe)):
            raise ModelError(f"{model.path}: model output for a zero input is {probe!r}, expected one finite value")
        self._bind_single_row(cpu=provider == "cpu")

    def _bind_single_row(self, cpu: bool) -> None:
        """Preallocate the [1, N_FEATURES] input and [1, 1] output that :meth:`run_one` refills.

        On the CPU provider both are bound to the session (IOBinding): a run then converts no arguments
        and allocates no output (bench/bench_inference.py: backend.run_one vs backend.run). GPU providers
        (not measured: no GPU here) refill the same input buffer but keep ``run``.
        """
        self._one_in = np.zeros((1, N_FEATURES), np.float32)
        self._one_in_bytes = self._one_in.data.cast("B")
        # struct packs doubles to float32 with the same C cast numpy uses, without building an array
        self._pack_row = struct.Struct(f"={N_FEATURES}f").pack_into
        self._one_out = np.zeros((1, 1), np.float32)
        self._one_out_f = self._one_out.data.cast("B").cast("f")
        self._one_lock = threading.Lock()  # the buffers serve one caller at a time; others allocate
        self._run_bound = None
        if not cpu:
            return
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, "cpu", 0, np.float32, list(self._one_in.shape), self._one_in.ctypes.data)
        binding.bind_output(OUTPUT_NAME, "cpu", 0, np.float32, list(self._one_out.shape), self._one_out.ctypes.data)
        inner, c_binding = getattr(self.session, "_sess", None), getattr(binding, "_iobinding", None)
        if inner is not None and c_binding is not None and hasattr(inner, "run_with_iobinding"):
            self._run_bound = lambda: inner.run_with_iobinding(c_binding, None)
        else:
            self._run_bound = lambda: self.session.run_with_iobinding(binding)
        self._binding = binding  # owns the binding the lambdas use
        # the bound path must give what run gives, or it is not used
        check = [float(i) for i in range(1, N_FEATURES + 1)]
        want = float(self.run(np.asarray([check], np.float32))[0])
        try:
            got = self.run_one(check)
        except Exception:  # noqa: BLE001 - any failure of the optional path leaves the plain run serving
            got = None
        if got != want:
            self._run_bound = None

    def run(self, features: np.ndarray) -> np.ndarray:
        """Corrections [N] for float32 features [N, N_FEATURES]."""
        if self._fast_run is not None:
            try:
                return self._fast_run(self._outputs, {INPUT_NAME: features}, None)[0].reshape(-1)
            except TypeError:  # a binding with another signature: use the public API from now on
                self._fast_run = None
        return self.session.run(self._outputs, {INPUT_NAME: features})[0].reshape(-1)

    def run_one(self, row: list[float]) -> float:
        """Correction for one feature row (N_FEATURES plain floats, FEATURES order); same value as ``run``."""
        if not self._one_lock.acquire(blocking=False):  # another thread holds the buffers
            return float(self.run(np.asarray([row], np.float32))[0])
        try:
            try:
                self._pack_row(self._one_in_bytes, 0, *row)
            except OverflowError:  # beyond float32: numpy makes it inf, as the batch path does
                self._one_in[0] = row
            if self._run_bound is not None:
                self._run_bound()
                return self._one_out_f[0]
            return float(self.run(self._one_in)[0])
        finally:
            self._one_lock.release()
