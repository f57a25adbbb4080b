"""carbon_ai_msgs VehicleState <-> estimator StateInput, Estimate -> CarbonEstimate."""

from __future__ import annotations

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from carbon_ai_msgs.msg import CarbonEstimate, VehicleState
from carbon_ai_nodes.carbon.carbon_estimator import Estimate, StateInput
from carbon_ai_nodes.ros.stamps import stamp_or_now


def state_input(msg: VehicleState, now_s: float) -> StateInput:
    """The estimator's view of a VehicleState (stamp in seconds; ``now_s`` if unstamped, InputRejectedError
    "bad_stamp" if invalid: conversions.time.header_stamp_s)."""
    # positional (StateInput's field order): once per message, keywords cost about 1 us more
    return StateInput(msg.asset_id, stamp_or_now(msg.header.stamp, now_s), msg.speed_mps, msg.accel_mps2, msg.grade,
                      msg.payload_kg, msg.engine_speed_rpm, msg.engine_load_pct, msg.coolant_temp_c)


def header_copy(header: Header) -> Header:
    """A Header with the same stamp and frame that shares nothing with ``header`` (to keep past a callback)."""
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id)


# This message is built once per state on the hot path. Where rosidl supports it (Jazzy and newer) the
# per-field type assertions are skipped: every value below is coerced to its field type first.
_NO_CHECK = {"check_fields": False} if "_check_fields" in getattr(CarbonEstimate, "__slots__", ()) else {}


def carbon_estimate(e: Estimate, header, latency_us: int, into: CarbonEstimate | None = None) -> CarbonEstimate:
    """A CarbonEstimate carrying the state's header (stamp and frame) and the measured latency.

    ``into`` reuses a message made by :func:`new_carbon_estimate` (publish serialises it at once, so one
    message per publisher can be refilled): this saves building a Header and Time per estimate.
    """
    msg = into if into is not None else new_carbon_estimate()
    msg.header = header
    msg.asset_id = str(e.asset_id)
    msg.co2_rate_g_s = float(e.co2_rate_g_s)
    msg.fuel_rate_lph = float(e.fuel_rate_lph)
    msg.power_kw = float(e.power_kw)
    msg.physics_co2_rate_g_s = float(e.physics_co2_rate_g_s)
    msg.uncertainty_g_s = float(e.uncertainty_g_s)
    msg.is_out_of_distribution = bool(e.is_out_of_distribution)
    msg.backend = str(e.backend)
    msg.model_id = str(e.model_id)
    msg.inference_latency_us = max(0, min(int(latency_us), 0xFFFFFFFF))
    return msg


def new_carbon_estimate() -> CarbonEstimate:
    """An empty CarbonEstimate (field checks off where rosidl allows: values are coerced when filled)."""
    return CarbonEstimate(**_NO_CHECK)
