"""What the planner accepts of a vehicle's fused state (no ROS).

VehicleState.msg allows NaN in every float ("not available"), and a fusion filter's speed at standstill wobbles
around zero (-4.9e-05 m/s was seen): both are normal, not faults. Refusing them made the planner log "rejecting
vehicle_state" and "receiving valid data again" dozens of times in a 30 s run. Only what the planner cannot use is
rejected: a speed that is NaN, infinite or clearly negative, a payload that is infinite or negative.
"""

from __future__ import annotations

import math

from carbon_ai_nodes.core.errors import InputRejectedError

# A fused speed this close to zero is a standstill, whatever its sign (m/s).
STANDSTILL_NOISE_MPS = 0.05


def checked_state(speed_mps: float, payload_kg: float) -> tuple[float, float]:
    """``(speed_mps, payload_kg)`` as the planner uses them: a noise-sized negative speed becomes 0.0 m/s, a NaN
    payload stays NaN (not measured). Raises InputRejectedError (reason ``nan`` or ``out_of_range``) otherwise."""
    if math.isnan(speed_mps):
        raise InputRejectedError("nan", f"speed_mps={speed_mps}")
    if not math.isfinite(speed_mps) or speed_mps <= -STANDSTILL_NOISE_MPS:
        raise InputRejectedError("out_of_range", f"speed_mps={speed_mps}")
    if math.isinf(payload_kg) or payload_kg < 0:
        raise InputRejectedError("out_of_range", f"payload_kg={payload_kg}")
    return max(speed_mps, 0.0), payload_kg
