"""The one plausibility rule for a CarbonEstimate's CO2 rates, shared by every node that reads them (pure).

The rates are net: an electric drive regenerating returns energy to its battery, and carbon_inference credits it
at the grid intensity, so its CO2 rate is negative while it brakes (emission_model.physics_rates). The actuator
bridge, planner and uplink used to refuse every negative rate: the factory's electric tractors flapped between
AUTO and SAFE_FALLBACK at each stop, and the uplink's windows lost the credit the plant (FASTSim's battery energy
net of regeneration) counts.
"""

from __future__ import annotations

import math

from carbon_ai_nodes.common.errors import InputRejectedError

# A 4 MW mining truck burns ~1000 L/h, ~0.8 kg CO2/s; a rate beyond this either way is a fault, not a vehicle.
MAX_CO2_RATE_G_S = 5000.0


def check_co2_rates(co2_rate_g_s: float, physics_co2_rate_g_s: float) -> None:
    """Raise InputRejectedError (``nan``, ``inf``, or ``out_of_range``: beyond +-MAX_CO2_RATE_G_S) for a
    CarbonEstimate's model and physics CO2 rates, g/s (negative = net regeneration of an electric drive)."""
    for name, value in (("co2_rate_g_s", co2_rate_g_s), ("physics_co2_rate_g_s", physics_co2_rate_g_s)):
        if not math.isfinite(value):
            raise InputRejectedError("nan" if math.isnan(value) else "inf", f"{name}={value}")
        if abs(value) > MAX_CO2_RATE_G_S:
            raise InputRejectedError("out_of_range", f"{name}={value}: beyond +-{MAX_CO2_RATE_G_S:g} g/s")
