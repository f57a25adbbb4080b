"""ParamSet: one declaration validates types, ranges and cross-field rules with errors naming the key."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import pytest

from carbon_ai_nodes.common.errors import ConfigError, ParameterError
from carbon_ai_nodes.common.params import ParamSet, param


@dataclasses.dataclass(frozen=True)
class Example(ParamSet):
    SECTION: ClassVar[str] = "example"
    gate: float = param(3.0, "Gate", gt=0.0, unit="sigma")
    rate_hz: float = param(50.0, "Rate", min=1.0, max=1000.0, unit="Hz")
    depth: int = param(5, "Depth", min=1)
    enabled: bool = param(True, "On")
    mode: str = param("auto", "Mode", choices=("auto", "manual"))
    weights: tuple[float, ...] = param((1.0, 2.0), "Weights", min=0.0)
    datum_lat: float = param(math.nan, "Datum latitude", allow_nan=True, min=-90.0, max=90.0)
    low: float = param(0.0, "Low")
    high: float = param(1.0, "High")

    def check(self) -> None:
        if self.low >= self.high:
            self.fail("low", f"must be < high ({self.high})")


def test_defaults_are_valid_and_specs_carry_the_declaration():
    e = Example()
    assert e.gate == 3.0 and math.isnan(e.datum_lat)
    spec = Example.spec("gate")
    assert (spec.kind, spec.unit, spec.gt) == ("double", "sigma", 0.0)
    assert Example.spec("weights").kind == "double_array"
    assert Example.spec("rate_hz").constraints() == ">= 1.0, <= 1000.0"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gate": -1.0}, "example.gate=-1.0: must be > 0.0"),
        ({"gate": 0.0}, "example.gate=0.0: must be > 0.0"),
        ({"gate": math.nan}, "example.gate=nan: must be a number, not NaN"),
        ({"gate": math.inf}, "example.gate=inf: must be finite"),
        ({"gate": "3"}, "example.gate='3': expected a number"),
        ({"gate": True}, "example.gate=True: expected a number"),
        ({"rate_hz": 2000}, "example.rate_hz=2000: must be <= 1000.0"),
        ({"depth": 2.5}, "example.depth=2.5: expected an integer"),
        ({"depth": 0}, "example.depth=0: must be >= 1"),
        ({"enabled": "yes"}, "example.enabled='yes': expected true or false"),
        ({"mode": "fast"}, "example.mode='fast': must be one of 'auto', 'manual'"),
        ({"weights": [1.0, -1.0]}, "example.weights=[1.0, -1.0]: must be >= 0.0"),
        ({"weights": 1.0}, "example.weights=1.0: expected a list (double_array)"),
        ({"datum_lat": 91.0}, "example.datum_lat=91.0: must be <= 90.0"),
        ({"low": 2.0}, "example.low=2.0: must be < high (1.0)"),
    ],
)
def test_bad_values_raise_with_key_value_and_reason(changes, message):
    with pytest.raises(ParameterError) as info:
        Example().replace(**changes)
    assert str(info.value) == message
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_ints_are_accepted_for_floats_and_lists_become_tuples():
    e = Example.from_mapping({"rate_hz": 50, "weights": [1, 2, 3]})
    assert e.rate_hz == 50.0 and isinstance(e.rate_hz, float)
    assert e.weights == (1.0, 2.0, 3.0)
    assert e.as_dict()["weights"] == [1.0, 2.0, 3.0]


def test_unknown_keys_are_refused_with_the_known_names():
    with pytest.raises(ParameterError, match=r"example.gat='\?': unknown parameter; known: gate, rate_hz"):
        Example.from_mapping({"gat": 1.0})
    assert Example.from_mapping({"gat": 1.0}, ignore_unknown=True) == Example()


def test_instances_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Example().gate = 1.0  # type: ignore[misc]
