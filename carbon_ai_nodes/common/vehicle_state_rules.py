"""The one plausibility rule for a VehicleState, shared by every node that reads one (pure; no ROS).

VehicleState.msg says every float may be NaN when the quantity is unknown: a channel is refused for NaN only
where the reading node needs it (``required``), and for a value outside its physical range always. Speeds a
little below zero are the filter's noise at standstill (fusion publishes e.g. -4.9e-05 m/s while parked):
they pass and read as 0.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from carbon_ai_nodes.common.errors import InputRejectedError

MAX_SPEED_MPS = 120.0  # 432 km/h: above any road vehicle or machine this runs on
STANDSTILL_NOISE_MPS = 0.5  # negative speeds down to this are estimator noise at standstill
MAX_ACCEL_MPS2 = 15.0
MAX_GRADE = 1.0  # rise/run (45 degrees)
# Carried-through EngineTelemetry channels (J1939 SPN ranges, rounded out); fusion refuses telemetry outside
# them, so a state it publishes never carries such a value.
ENGINE_RANGES = {
    "engine_speed_rpm": (0.0, 10000.0),
    "engine_load_pct": (0.0, 250.0),
    "fuel_rate_lph": (0.0, 3000.0),
    "coolant_temp_c": (-60.0, 200.0),
    "payload_kg": (-500.0, 1.0e6),  # load cells read slightly negative when empty
    "ambient_temp_c": (-70.0, 80.0),
}
RANGES: tuple[tuple[str, float, float], ...] = (
    ("speed_mps", -STANDSTILL_NOISE_MPS, MAX_SPEED_MPS),
    ("accel_mps2", -MAX_ACCEL_MPS2, MAX_ACCEL_MPS2),
    ("grade", -MAX_GRADE, MAX_GRADE),
    *((name, lo, hi) for name, (lo, hi) in ENGINE_RANGES.items()),
)
REQUIRED = ("speed_mps",)


def check_vehicle_state(state: Any, required: tuple[str, ...] = REQUIRED) -> float:
    """Check one VehicleState (or any object with its field names: StateInput, StateSample); returns the
    speed (m/s) with standstill noise read as 0.

    Raises InputRejectedError ``nan`` when a ``required`` field is NaN or infinite, ``out_of_range`` when any
    field present is outside :data:`RANGES` (NaN in a field not required is "unknown" and passes).
    """
    plan = _PLANS.get((type(state), required)) or _plan(state, required)
    get_required, get_ranged, ranged = plan
    # Once per message on the inference path: one sum tells an all-finite state (a NaN or inf makes it
    # non-finite; so may huge finite values, which the loop then passes to the range checks).
    values = get_required(state)
    if not math.isfinite(sum(values)):
        for name, value in zip(required, values, strict=True):
            if not math.isfinite(value):
                raise InputRejectedError("nan", f"{name}={value}")
    for (name, lo, hi), value in zip(ranged, get_ranged(state)):  # noqa: B905 - both from one plan
        if not lo <= value <= hi and value == value:  # NaN (unknown) is the one value unequal to itself
            raise InputRejectedError("out_of_range", f"{name}={value:g} outside [{lo:g}, {hi:g}]")
    speed = state.speed_mps
    return speed if speed > 0.0 else 0.0


_Getter = Callable[[Any], tuple[float, ...]]
_PLANS: dict[tuple[type, tuple[str, ...]], tuple[_Getter, _Getter, tuple[tuple[str, float, float], ...]]] = {}


def _getter(names: tuple[str, ...]) -> _Getter:
    if not names:
        return lambda _: ()
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda s: (one(s),)
    several: _Getter = operator.attrgetter(*names)  # several names: a tuple of their values
    return several


def _plan(state: Any, required: tuple[str, ...]) -> tuple[_Getter, _Getter, tuple[tuple[str, float, float], ...]]:
    """The fields of this type of state to read, found once per type (a message type has them all)."""
    ranged = tuple(r for r in RANGES if hasattr(state, r[0]))
    plan = (_getter(required), _getter(tuple(name for name, _, _ in ranged)), ranged)
    _PLANS[(type(state), required)] = plan
    return plan
