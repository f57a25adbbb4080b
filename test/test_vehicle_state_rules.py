"""One VehicleState plausibility rule, applied alike at every hop that reads a VehicleState."""

from __future__ import annotations

import math

import pytest
from conftest import REPO

from carbon_ai_msgs.msg import VehicleState
from carbon_ai_nodes.actuation.ros.conversions import vehicle_position
from carbon_ai_nodes.carbon.carbon_estimator import CarbonEstimator, validate_state
from carbon_ai_nodes.carbon.residual_backend import load_backend
from carbon_ai_nodes.carbon.ros.conversions import state_input
from carbon_ai_nodes.common.errors import InputRejectedError
from carbon_ai_nodes.common.vehicle_profile import load_profile
from carbon_ai_nodes.common.vehicle_state_rules import check_vehicle_state
from carbon_ai_nodes.uplink.ros.conversions import state_sample
from carbon_ai_nodes.uplink.summary_window import SummaryWindow

TRUCK = load_profile(REPO / "config" / "vehicles" / "class8_truck.yaml")
NAN = math.nan


def parked(**fields) -> VehicleState:
    """What fusion publishes for a parked truck without a CAN gateway: speed a hair below 0, a load cell
    reading slightly negative, every engine channel unknown (NaN)."""
    m = VehicleState(asset_id="truck1", speed_mps=-4.9e-05, accel_mps2=0.0, grade=0.0, east_m=1.0, north_m=2.0,
                     payload_kg=NAN, engine_speed_rpm=NAN, engine_load_pct=NAN, fuel_rate_lph=NAN,
                     ambient_temp_c=NAN, coolant_temp_c=NAN, heading_rad=NAN)
    m.header.stamp.sec = 100
    for k, v in fields.items():
        setattr(m, k, v)
    return m


def planner_hop(m: VehicleState) -> None:
    check_vehicle_state(m)  # planning/ros/planner_node.py's whole check


def inference_hop(m: VehicleState) -> None:
    validate_state(state_input(m, now_s=0.0), TRUCK)


def bridge_hop(m: VehicleState) -> None:
    vehicle_position(m, "truck1", require_motion_source=False)


def uplink_hop(m: VehicleState) -> None:
    SummaryWindow().add_state(state_sample(m))


HOPS = [planner_hop, inference_hop, bridge_hop, uplink_hop]


def test_standstill_noise_reads_as_zero():
    assert check_vehicle_state(parked()) == 0.0
    assert check_vehicle_state(parked(speed_mps=-0.5)) == 0.0
    assert check_vehicle_state(parked(speed_mps=12.5)) == 12.5


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("fields", [
    {},  # the planner refused this as out_of_range (speed_mps=-4.9e-05) and nan (payload_kg=nan)
    {"payload_kg": -20.0},  # the estimator refused a load cell's empty reading
    {"payload_kg": 12000.0, "engine_speed_rpm": 650.0, "engine_load_pct": 8.0, "fuel_rate_lph": 2.1},
])
def test_a_parked_truck_passes_every_hop(hop, fields):
    hop(parked(**fields))


def test_the_estimator_gives_a_finite_estimate_for_a_parked_truck():
    e = CarbonEstimator(TRUCK, load_backend("physics", "")).estimate(state_input(parked(payload_kg=-20.0), now_s=0.0))
    assert math.isfinite(e.co2_rate_g_s) and e.co2_rate_g_s >= 0


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("fields, reason", [
    ({"speed_mps": NAN}, "nan"),
    ({"speed_mps": math.inf}, "nan"),
    ({"speed_mps": 500.0}, "out_of_range"),  # the bridge took up to 150 m/s, the estimator 120
    ({"speed_mps": 130.0}, "out_of_range"),
    ({"speed_mps": -3.0}, "out_of_range"),  # the bridge took any |v| <= 150
    ({"grade": 3.0}, "out_of_range"),
    ({"payload_kg": -5000.0}, "out_of_range"),
    ({"engine_speed_rpm": 20000.0}, "out_of_range"),
    ({"coolant_temp_c": math.inf}, "out_of_range"),
])
def test_every_hop_refuses_the_same_states(hop, fields, reason):
    with pytest.raises(InputRejectedError) as info:
        hop(parked(**fields))
    assert info.value.reason == reason
    assert next(iter(fields)) in info.value.detail


@pytest.mark.parametrize("hop, field", [(inference_hop, "accel_mps2"), (inference_hop, "grade"),
                                        (bridge_hop, "east_m"), (bridge_hop, "north_m")])
def test_a_hop_requires_only_what_it_uses(hop, field):
    with pytest.raises(InputRejectedError) as info:
        hop(parked(**{field: NAN}))
    assert info.value.reason == "nan" and info.value.detail.startswith(f"{field}=")
    for other in HOPS:
        if other is not hop and not (other is inference_hop and field in ("accel_mps2", "grade")):
            other(parked(**{field: NAN}))
