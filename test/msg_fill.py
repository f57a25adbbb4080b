"""Fill any ROS message with deterministic values, and compare two messages field by field (NaN == NaN)."""

from __future__ import annotations

import importlib
import math
import random
from typing import Any

import numpy as np
from rosidl_parser.definition import (
    AbstractNestedType,
    AbstractSequence,
    AbstractString,
    Array,
    BasicType,
    NamespacedType,
)


def _scalar(type_name: str, rng: random.Random, special: float | None) -> Any:
    if type_name in ("float", "double", "long double"):
        return special if special is not None else rng.uniform(-1e6, 1e6)
    if type_name == "boolean":
        return rng.random() < 0.5
    if type_name in ("octet", "char"):
        return bytes([rng.randint(0, 255)])
    bits = {"int8": 7, "uint8": 8, "int16": 15, "uint16": 16, "int32": 31, "uint32": 32, "int64": 63,
            "uint64": 64}[type_name]
    return rng.randint(0, 2**bits - 1)


def _value(slot: Any, rng: random.Random, special: float | None) -> Any:
    if isinstance(slot, AbstractNestedType):
        size = slot.size if isinstance(slot, Array) else rng.randint(1, 3)
        return [_value(slot.value_type, rng, special) for _ in range(size)]
    if isinstance(slot, AbstractString):
        return "".join(rng.choice("abcxyz_/ 019ü") for _ in range(rng.randint(0, 12)))
    if isinstance(slot, BasicType):
        return _scalar(slot.typename, rng, special)
    if isinstance(slot, NamespacedType):
        *package, name = slot.namespaced_name()
        return fill(getattr(importlib.import_module(".".join(package)), name), rng, special)
    raise TypeError(f"unsupported slot {slot}")


def fill(msg_type: Any, rng: random.Random, special: float | None = None) -> Any:
    """A message of ``msg_type`` with random values; every float set to ``special`` when given (NaN, inf)."""
    msg = msg_type()
    for name, slot in zip(msg.get_fields_and_field_types(), msg.SLOT_TYPES, strict=True):
        value = _value(slot, rng, special)
        if isinstance(slot, (Array, AbstractSequence)) and isinstance(slot.value_type, BasicType) \
                and slot.value_type.typename in ("float", "double"):
            value = np.array(value, dtype=np.float64) if isinstance(slot, Array) else [float(v) for v in value]
        setattr(msg, name, value)
    return msg


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where ``a`` and ``b`` differ; NaN equals NaN. Empty list = identical."""
    if hasattr(a, "get_fields_and_field_types"):
        out = []
        for name in a.get_fields_and_field_types():
            out += differences(getattr(a, name), getattr(b, name), f"{path}.{name}")
        return out
    if isinstance(a, (list, tuple, np.ndarray)) or (hasattr(a, "tolist") and not np.isscalar(a)):
        a_list, b_list = list(a), list(b)
        if len(a_list) != len(b_list):
            return [f"{path}: length {len(a_list)} != {len(b_list)}"]
        out = []
        for i, (x, y) in enumerate(zip(a_list, b_list, strict=True)):
            out += differences(x, y, f"{path}[{i}]")
        return out
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating)) and math.isnan(a) \
            and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
