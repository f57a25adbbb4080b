"""Bridge between core ParamSets and ROS 2 parameters: descriptors, start-up loading, runtime changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from carbon_ai_nodes.common.errors import ParameterError
from carbon_ai_nodes.common.params import ParamSet, ParamSpec

P = TypeVar("P", bound=ParamSet)

_ROS_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "integer": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
    "bool_array": ParameterType.PARAMETER_BOOL_ARRAY,
    "integer_array": ParameterType.PARAMETER_INTEGER_ARRAY,
    "double_array": ParameterType.PARAMETER_DOUBLE_ARRAY,
    "string_array": ParameterType.PARAMETER_STRING_ARRAY,
}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of one parameter. Ranges go in ``additional_constraints`` and are checked by the
    ParamSet (not by rclpy), so every bad value gets the same ``section.name=value: reason`` error and an
    integer written for a double (``rate_hz: 50``) is accepted."""
    unit = f" [{spec.unit}]" if spec.unit else ""
    return ParameterDescriptor(
        name=spec.name,
        type=_ROS_TYPES[spec.kind],
        description=spec.description + unit,
        additional_constraints=spec.constraints(),
        read_only=spec.read_only,
        dynamic_typing=True,
    )


def declare(node: Node, param_type: type[ParamSet]) -> None:
    """Declare every parameter of ``param_type`` on ``node`` with its default and descriptor."""
    for spec in param_type.specs():
        default = list(spec.default) if spec.is_array else spec.default
        # rclpy cannot type an empty list; declared unset, it reads back as the spec's default.
        node.declare_parameter(spec.name, default if default != [] else None, descriptor(spec))


def _value(parameter: Parameter, spec: ParamSpec) -> object:
    value = parameter.value
    if value is None:
        return spec.default
    # ROS array values come as array.array or lists; the ParamSet wants plain sequences.
    return list(value) if spec.is_array else value


def load(node: Node, param_type: type[P]) -> P:
    """Read and validate the current values; raises ParameterError naming the first bad one."""
    values = {spec.name: _value(node.get_parameter(spec.name), spec) for spec in param_type.specs()}
    return param_type.from_mapping(values)


def on_set_validator(
    param_type: type[P],
    current: Callable[[], P | None],
    apply: Callable[[P], None],
) -> Callable[[list[Parameter]], SetParametersResult]:
    """An on-set-parameters callback that validates a runtime change with the same ParamSet rules.

    ``current`` returns the active ParamSet (None before configure: then any change is accepted now and
    validated at configure). On success ``apply`` receives the new ParamSet.
    """
    specs = {spec.name: spec for spec in param_type.specs()}

    def callback(parameters: list[Parameter]) -> SetParametersResult:
        base = current()
        changes = {p.name: _value(p, specs[p.name]) for p in parameters if p.name in specs}
        if base is None or not changes:
            return SetParametersResult(successful=True)
        try:
            candidate = base.replace(**changes)
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        apply(candidate)
        return SetParametersResult(successful=True)

    return callback
