"""Self-validating parameter sets.

Each concern declares its parameters once, as fields of a frozen dataclass deriving from :class:`ParamSet`::

    @dataclass(frozen=True)
    class FusionParams(ParamSet):
        SECTION: ClassVar[str] = "fusion"
        gnss_gate: float = param(3.0, "Mahalanobis gate for GNSS fixes", gt=0.0, unit="sigma")

The same declaration gives the core its validated values, the node its ROS parameter descriptors
(see ``carbon_ai_nodes.ros.parameters``), the runtime on-set-parameters check, and the README table
(``carbon-ai params``). A bad value raises :class:`ParameterError`: ``fusion.gnss_gate=-1.0: must be > 0.0``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from carbon_ai_nodes.common.errors import ParameterError

P = TypeVar("P", bound="ParamSet")

# Parameter kinds, named as ROS 2 names its parameter types.
SCALAR_KINDS = {bool: "bool", int: "integer", float: "double", str: "string"}
ARRAY_KINDS = {bool: "bool_array", int: "integer_array", float: "double_array", str: "string_array"}


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """Everything known about one parameter: derived from a :func:`param` field."""

    name: str
    kind: str  # one of SCALAR_KINDS / ARRAY_KINDS values
    default: Any
    description: str
    unit: str = ""
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    choices: tuple[Any, ...] | None = None
    read_only: bool = False
    allow_nan: bool = False

    @property
    def is_array(self) -> bool:
        """True for list-valued parameters."""
        return self.kind.endswith("_array")

    def constraints(self) -> str:
        """Human-readable constraints, e.g. ``"> 0.0, <= 10.0"``; empty when unconstrained."""
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt}")
        if self.min is not None:
            parts.append(f">= {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        return ", ".join(parts)


def param(
    default: Any,
    description: str,
    *,
    unit: str = "",
    min: float | None = None,  # noqa: A002 - reads best at the call site
    max: float | None = None,  # noqa: A002
    gt: float | None = None,
    choices: tuple[Any, ...] | None = None,
    read_only: bool = False,
    allow_nan: bool = False,
) -> Any:
    """Declare a parameter field: its default, a one-line description, its unit and its valid range.

    ``min``/``max`` are inclusive, ``gt`` is an exclusive lower bound; for arrays they apply to every element.
    ``read_only`` parameters can only be set at start-up. ``allow_nan`` admits NaN (meaning "not set").
    """
    meta = dict(
        description=description, unit=unit, min=min, max=max, gt=gt,
        choices=choices, read_only=read_only, allow_nan=allow_nan,
    )
    if isinstance(default, (list, tuple)):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={"carbon_ai": meta})


def _kind_of(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        element = typing.get_args(hint)[0]
        return ARRAY_KINDS[element]
    return SCALAR_KINDS[hint]


@dataclasses.dataclass(frozen=True)
class ParamSet:
    """Base of every parameter set. Subclasses are frozen dataclasses of :func:`param` fields.

    Override :meth:`check` for rules that involve several fields; raise through :meth:`fail`.
    """

    SECTION: ClassVar[str] = ""
    _specs_cache: ClassVar[tuple[ParamSpec, ...]]  # set per subclass by specs(), read from its own __dict__

    def __post_init__(self) -> None:
        for spec in self.specs():
            value = _coerce(self.SECTION, spec, getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)
        self.check()

    def check(self) -> None:
        """Cross-field validation hook; the default accepts everything."""

    def fail(self, name: str, reason: str) -> typing.NoReturn:
        """Raise the standard error for field ``name``."""
        raise ParameterError(self.SECTION, name, getattr(self, name), reason)

    @classmethod
    def specs(cls) -> tuple[ParamSpec, ...]:
        """The :class:`ParamSpec` of every field, in declaration order."""
        cached = cls.__dict__.get("_specs_cache")
        if cached is not None:
            return cached
        hints = typing.get_type_hints(cls)
        specs = []
        for field in dataclasses.fields(cls):
            meta = field.metadata.get("carbon_ai")
            if meta is None:
                continue
            specs.append(
                ParamSpec(name=field.name, kind=_kind_of(hints[field.name]), default=field.default, **meta)
            )
        result = tuple(specs)
        cls._specs_cache = result
        return result

    @classmethod
    def spec(cls, name: str) -> ParamSpec:
        """The spec of one field; raises ParameterError for an unknown name."""
        for s in cls.specs():
            if s.name == name:
                return s
        known = ", ".join(s.name for s in cls.specs())
        raise ParameterError(cls.SECTION, name, "?", f"unknown parameter; known: {known}")

    @classmethod
    def from_mapping(cls: type[P], values: Mapping[str, Any], *, ignore_unknown: bool = False) -> P:
        """Build from a mapping (a YAML section, ROS parameter values); unknown keys are an error."""
        names = {s.name for s in cls.specs()}
        if not ignore_unknown:
            for key in values:
                if key not in names:
                    cls.spec(key)  # raises with the list of known names
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self: P, **changes: Any) -> P:
        """A validated copy with some fields changed."""
        for key in changes:
            self.spec(key)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Field values by name (arrays as lists, as ROS and YAML take them)."""
        return {s.name: list(v) if isinstance((v := getattr(self, s.name)), tuple) else v for s in self.specs()}


def _coerce(section: str, spec: ParamSpec, value: Any) -> Any:
    """Check type and range of one value; ints are accepted where floats are expected."""
    if spec.is_array:
        if not isinstance(value, (list, tuple)):
            raise ParameterError(section, spec.name, value, f"expected a list ({spec.kind})")
        scalar = spec.kind[: -len("_array")]
        return tuple(_coerce_scalar(section, spec, v, scalar, whole=value) for v in value)
    return _coerce_scalar(section, spec, value, spec.kind, whole=value)


def _coerce_scalar(section: str, spec: ParamSpec, value: Any, kind: str, *, whole: Any) -> Any:
    def bad(reason: str) -> ParameterError:
        return ParameterError(section, spec.name, whole, reason)

    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("expected true or false")
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("expected an integer")
    elif kind == "double":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("expected a number")
        value = float(value)
        if math.isnan(value):
            if spec.allow_nan:
                return value
            raise bad("must be a number, not NaN")
        if math.isinf(value):
            raise bad("must be finite")
    elif kind == "string":
        if not isinstance(value, str):
            raise bad("expected a string")
    if kind in ("integer", "double"):
        if spec.gt is not None and not value > spec.gt:
            raise bad(f"must be > {spec.gt}")
        if spec.min is not None and not value >= spec.min:
            raise bad(f"must be >= {spec.min}")
        if spec.max is not None and not value <= spec.max:
            raise bad(f"must be <= {spec.max}")
    if spec.choices is not None and value not in spec.choices:
        raise bad("must be one of " + ", ".join(repr(c) for c in spec.choices))
    return value
