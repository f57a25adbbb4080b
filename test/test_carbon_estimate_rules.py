"""One CarbonEstimate CO2-rate rule at every hop that reads an estimate: net rates, so an electric drive
regenerating (a negative rate) passes; NaN, inf and absurd magnitudes are refused with their reason."""

from __future__ import annotations

import math

import pytest
import yaml
from conftest import REPO

from carbon_ai_msgs.msg import CarbonEstimate
from carbon_ai_nodes.actuation.ros.conversions import co2_rate
from carbon_ai_nodes.carbon.carbon_estimator import CarbonEstimator, StateInput
from carbon_ai_nodes.carbon.residual_backend import load_backend
from carbon_ai_nodes.common.carbon_estimate_rules import check_co2_rates
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
from carbon_ai_nodes.uplink.ros.conversions import estimate_sample
from carbon_ai_nodes.uplink.summary_window import EstimateSample, StateSample, SummaryWindow, check_estimate

SCENARIO = yaml.safe_load((REPO / "config" / "scenarios" / "factory_site.yaml").read_text())
TRACTOR = VehicleProfile.from_mapping(SCENARIO["vehicles"][0]["profile"], "factory_site tractor1")


def braking_tractor_estimate() -> CarbonEstimate:
    """carbon_inference's estimate for the factory's loaded electric tractor braking at 0.8 m/s^2 from 6 m/s."""
    e = CarbonEstimator(TRACTOR, load_backend("physics", "")).estimate(
        StateInput(asset_id="tractor1", stamp_s=100.0, speed_mps=6.0, accel_mps2=-0.8, grade=0.0,
                   payload_kg=25000.0))
    msg = CarbonEstimate(asset_id="tractor1", co2_rate_g_s=e.co2_rate_g_s,
                         physics_co2_rate_g_s=e.physics_co2_rate_g_s, fuel_rate_lph=e.fuel_rate_lph)
    msg.header.stamp.sec = 100
    return msg


def planner_hop(m: CarbonEstimate) -> None:
    check_co2_rates(m.co2_rate_g_s, m.physics_co2_rate_g_s)  # planning/ros/planner_node.py's whole check


def bridge_hop(m: CarbonEstimate) -> None:
    co2_rate(m, "tractor1")


def uplink_hop(m: CarbonEstimate) -> None:
    check_estimate(estimate_sample(m))


HOPS = [planner_hop, bridge_hop, uplink_hop]


@pytest.mark.parametrize("hop", HOPS)
def test_an_electric_drive_regenerating_passes_every_hop(hop):
    msg = braking_tractor_estimate()
    assert msg.co2_rate_g_s < 0  # the credit at the grid intensity: the bridges refused it, and went SAFE
    hop(msg)


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("rates, reason", [
    ((math.nan, 1.0), "nan"), ((1.0, math.inf), "inf"), ((-math.inf, 1.0), "inf"),
    ((5001.0, 1.0), "out_of_range"), ((1.0, -5001.0), "out_of_range"),
])
def test_impossible_rates_are_refused_with_their_reason(hop, rates, reason):
    msg = braking_tractor_estimate()
    msg.co2_rate_g_s, msg.physics_co2_rate_g_s = rates
    with pytest.raises(InputRejectedError) as exc:
        hop(msg)
    assert exc.value.reason == reason


def test_the_uplink_window_nets_the_regeneration_credit():
    """10 s drawing 2 g/s, then 10 s regenerating at -0.5 g/s: the second window carries the credit."""
    w = SummaryWindow(window_s=10.0)
    closed = []
    for k in range(41):
        stamp_s = 100.0 + 0.5 * k
        closed += w.add_state(StateSample(stamp_s=stamp_s, speed_mps=5.0, is_idle=False))
        closed += w.add_estimate(EstimateSample(stamp_s=stamp_s, co2_rate_g_s=2.0 if stamp_s < 110.0 else -0.5,
                                                physics_co2_rate_g_s=2.0, fuel_rate_lph=0.0, latency_us=100))
    assert [round(t.co2_kg * 1000.0, 6) for t in closed] == [20.0, -5.0]
