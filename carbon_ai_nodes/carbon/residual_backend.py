"""Third-party I/O behind small protocols (solver and MQTT link in their own modules). This package module
holds the inference-backend protocol and selection for the learned CO2 residual:

- ``tensorrt``: a TensorRT engine built from the ONNX model, cached by model hash + TensorRT version + GPU
- ``onnxruntime-tensorrt`` / ``onnxruntime-cuda`` / ``onnxruntime-cpu``: ONNX Runtime with that provider
- ``physics``: no model; the physics baseline is the estimate

:func:`select_backend` tries them in that order (or only the forced one) and says why each was skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np

from carbon_ai_nodes.common.errors import ModelError

BACKENDS = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "physics")
AUTO_ORDER = BACKENDS


class ResidualBackend(Protocol):
    """A loaded residual model: ``run`` maps float32 features [N, F] to corrections [N]."""

    name: str
    model_id: str
    metadata: dict[str, str]

    def run(self, features: np.ndarray) -> np.ndarray:
        """Corrections for a batch (float32 [N] or [N, 1])."""
        ...


@dataclasses.dataclass
class Selection:
    """The backend picked and why the ones before it were skipped (backend name -> reason)."""

    backend: ResidualBackend
    skipped: dict[str, str]

    def describe(self) -> str:
        """One line: picked backend and skipped ones with reasons."""
        why = "; ".join(f"{k}: {v}" for k, v in self.skipped.items())
        return f"backend {self.backend.name} ({self.backend.model_id})" + (f" [skipped {why}]" if why else "")


def load_backend(name: str, model_path: str | Path, *, cache_dir: str | Path = "",
                 fp16: bool = True) -> ResidualBackend:
    """Load one named backend; raises ModelError (unavailable library/device, bad model) with the reason."""
    if name == "physics":
        from carbon_ai_nodes.carbon.physics_backend import PhysicsBackend

        return PhysicsBackend()
    if not model_path:
        raise ModelError("no model_path set")
    if name == "tensorrt":
        from carbon_ai_nodes.carbon.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(model_path, cache_dir=cache_dir, fp16=fp16)
    if name.startswith("onnxruntime-"):
        from carbon_ai_nodes.carbon.onnxruntime_backend import OrtBackend

        return OrtBackend(model_path, provider=name.split("-", 1)[1], cache_dir=cache_dir, fp16=fp16)
    raise ModelError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}, auto")


def select_backend(model_path: str | Path, prefer: str = "auto", *, cache_dir: str | Path = "",
                   fp16: bool = True) -> Selection:
    """The first backend that loads, in AUTO_ORDER (``prefer="auto"``), or exactly ``prefer``.

    A forced backend that fails raises ModelError; ``auto`` always ends at ``physics`` at worst. A model
    file that is corrupt makes every model backend fail with the same reason (reported in ``skipped``).
    """
    if prefer != "auto":
        return Selection(load_backend(prefer, model_path, cache_dir=cache_dir, fp16=fp16), {})
    skipped: dict[str, str] = {}
    if model_path:
        from carbon_ai_nodes.carbon.model_file import read_model

        try:
            read_model(model_path)  # a bad file is the reason for every model backend: say so once, clearly
        except ModelError as exc:
            skipped = {name: str(exc) for name in AUTO_ORDER if name != "physics"}
            return Selection(load_backend("physics", ""), skipped)
    for name in AUTO_ORDER:
        try:
            return Selection(load_backend(name, model_path, cache_dir=cache_dir, fp16=fp16), skipped)
        except ModelError as exc:
            skipped[name] = str(exc)
    raise AssertionError("the physics backend cannot fail")  # pragma: no cover
