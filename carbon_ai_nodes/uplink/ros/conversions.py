"""CarbonEstimate / VehicleState -> summary-window samples, and Summary -> CarbonSummary."""

from __future__ import annotations

from builtin_interfaces.msg import Time

from carbon_ai_msgs.msg import CarbonEstimate, CarbonSummary, VehicleState
from carbon_ai_nodes.common.vehicle_state_rules import check_vehicle_state
from carbon_ai_nodes.ros.stamps import to_seconds, to_time
from carbon_ai_nodes.uplink.summary_codec import Summary
from carbon_ai_nodes.uplink.summary_window import EstimateSample, StateSample


def estimate_sample(msg: CarbonEstimate) -> EstimateSample:
    """The window core's view of one estimate (stamp from its header)."""
    return EstimateSample(
        stamp_s=to_seconds(msg.header.stamp), co2_rate_g_s=msg.co2_rate_g_s,
        physics_co2_rate_g_s=msg.physics_co2_rate_g_s, fuel_rate_lph=msg.fuel_rate_lph,
        latency_us=int(msg.inference_latency_us), uncertainty_g_s=msg.uncertainty_g_s,
        model=f"{msg.backend}:{msg.model_id}" if msg.backend or msg.model_id else "",
    )


def state_sample(msg: VehicleState) -> StateSample:
    """The window core's view of one fused state; InputRejectedError for a state that fails the VehicleState
    rule (core.vehicle_state_rules), standstill noise read as 0 m/s."""
    speed_mps = check_vehicle_state(msg)
    return StateSample(stamp_s=to_seconds(msg.header.stamp), speed_mps=speed_mps, is_idle=bool(msg.is_idle),
                       fuel_rate_lph=msg.fuel_rate_lph)


def carbon_summary(summary: Summary, stamp: Time, frame_id: str = "") -> CarbonSummary:
    """The ROS message of a produced (numbered, stored) summary."""
    msg = CarbonSummary(
        asset_id=summary.asset_id, sequence=summary.sequence,
        window_start=to_time(summary.window_start_s), window_end=to_time(summary.window_end_s),
        co2_kg=summary.co2_kg, fuel_l=summary.fuel_l, distance_km=summary.distance_km, idle_s=summary.idle_s,
        avoided_co2_kg=summary.avoided_co2_kg, estimate_count=min(summary.estimate_count, 2**32 - 1),
        worst_latency_us=min(summary.worst_latency_us, 2**32 - 1),
    )
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg
