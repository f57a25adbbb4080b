"""Reading and checking a residual model file before any backend is built from it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from carbon_ai_nodes.carbon.residual_features import FEATURES, INPUT_NAME, OUTPUT_NAME
from carbon_ai_nodes.common.errors import ModelError

# The residual model installed with the package (package data, see setup.py).
SHIPPED_MODEL = Path(__file__).with_name("models") / "co2_residual_v1.onnx"


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A verified ONNX residual model: its bytes, sha256, id (``stem-hash8``) and metadata properties."""

    path: Path
    data: bytes
    sha256: str
    metadata: dict[str, str]

    @property
    def model_id(self) -> str:
        """Model name + short hash, as CarbonEstimate.model_id carries it."""
        return f"{self.path.stem}-{self.sha256[:8]}"


def read_model(path: str | Path) -> ModelFile:
    """Read and structurally check an ONNX model (one input ``features`` [N, len(FEATURES)], output ``correction``).

    Raises ModelError naming the file and the problem (missing, corrupt, wrong inputs).
    """
    import onnx

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"{p}: cannot read model ({exc.strerror or exc})") from None
    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types for bad files
        raise ModelError(f"{p}: not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") \
            from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelError(f"{p}: expected one input named {INPUT_NAME!r}, got {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 2 or (dims[1].dim_value and dims[1].dim_value != len(FEATURES)):
        raise ModelError(f"{p}: input {INPUT_NAME!r} must be [batch, {len(FEATURES)}]")
    if [o.name for o in model.graph.output] != [OUTPUT_NAME]:
        raise ModelError(f"{p}: expected one output named {OUTPUT_NAME!r}")
    meta = {m.key: m.value for m in model.metadata_props}
    if "features" in meta and json.loads(meta["features"]) != list(FEATURES):
        raise ModelError(f"{p}: trained on features {meta['features']}, this build computes {list(FEATURES)}")
    return ModelFile(p, data, hashlib.sha256(data).hexdigest(), meta)
