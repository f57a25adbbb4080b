"""Which received summaries no vehicle could have sent (pure; no rclpy): the fleet side's guard against forged,
corrupted or clock-broken summaries that still decode. The CSB formats already make negative amounts and a
window ending before it starts impossible; what is left are windows from the future and amounts beyond any
machine."""

from __future__ import annotations

from carbon_ai_nodes.uplink.summary_codec import Summary

MAX_CLOCK_AHEAD_S = 86_400.0  # a window ending more than a day after the receiver's clock: a broken or forged clock
# 5 kg CO2/s is about 1.6 kg diesel/s, some 20 MW of fuel: beyond the largest mining truck (about 3.5 MW engine)
MAX_CO2_KG_PER_S = 5.0
MAX_FUEL_L_PER_S = MAX_CO2_KG_PER_S / 2.68  # diesel, 2.68 kg CO2 per litre
MAX_SPEED_KM_PER_S = 0.15  # 540 km/h
MIN_WINDOW_S = 1.0  # amounts of a shorter window are compared as if it lasted this long


def implausible_reason(s: Summary, now_s: float) -> str:
    """Why no vehicle could have sent ``s`` (received at Unix time ``now_s``), or '' when it is plausible. Gap
    records carry no amounts and are checked for their time only."""
    if s.window_end_s > now_s + MAX_CLOCK_AHEAD_S:
        return f"window ends {s.window_end_s - now_s:.0f} s after the receiver's clock"
    if s.gap:
        return ""
    window_s = max(s.window_end_s - s.window_start_s, MIN_WINDOW_S)
    for name, amount, limit, unit in (("co2_kg", s.co2_kg, MAX_CO2_KG_PER_S, "kg/s"),
                                      ("fuel_l", s.fuel_l, MAX_FUEL_L_PER_S, "L/s"),
                                      ("distance_km", s.distance_km, MAX_SPEED_KM_PER_S, "km/s"),
                                      ("measured_co2_kg", s.measured_co2_kg or 0.0, MAX_CO2_KG_PER_S, "kg/s"),
                                      ("co2_sigma_kg", s.co2_sigma_kg or 0.0, MAX_CO2_KG_PER_S, "kg/s")):
        if amount / window_s > limit:
            return f"{name}={amount:g} in {window_s:g} s is over {limit:g} {unit}"
    if (s.measured_s or 0.0) > s.window_end_s - s.window_start_s + 0.05:  # 0.05 s: the payload's 0.1 s steps
        return f"measured_s={s.measured_s:g} is longer than its {s.window_end_s - s.window_start_s:g} s window"
    return ""
