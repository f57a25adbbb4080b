"""eco_speed: eco-driving speed advice for a vehicle on a fixed route (haul roads, yard loops).

At configure it computes the route's eco speed caps from the emission model (planning/eco_speed.py: glide into
stops, crest downhills slowly, with the floor speed that minimises the predicted loop CO2 within a time
budget) and publishes them as a one-vehicle ``route_plan`` (RoutePlan, reliable + transient local) that the
actuator bridge follows, plus ``route_path`` (nav_msgs/Path) and ``route_markers`` (MarkerArray coloured by
predicted CO2 per metre) for rviz. With ``enabled: false`` (carbon optimisation off) the same route goes out
without speed advice, so the bridge applies its cruise limit. With ``calibration_file`` (the vehicle's
calibration that carbon_inference saves) the caps are planned with the calibrated model once it is confident
(re-checked every ``calibration_check_period_s`` until then); the log and /diagnostics (``model``) say which.
"""

from __future__ import annotations

import sys
import uuid

from nav_msgs.msg import Path
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from carbon_ai_msgs.msg import RoutePlan
from carbon_ai_nodes.planning.calibrated_model import calibrated_model
from carbon_ai_nodes.planning.eco_speed import EcoProfile, EcoSpeedParams, eco_profile
from carbon_ai_nodes.planning.ros import eco_conversions as conv
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, run_node


class EcoSpeed(CarbonNode[EcoSpeedParams]):
    """Publishes the eco speed profile of one vehicle's fixed route on activation and on parameter changes."""

    def __init__(self) -> None:
        super().__init__("eco_speed", EcoSpeedParams)
        self.profile: EcoProfile | None = None
        self.vehicle_id = ""
        self.model_note = ""  # why the generic model plans ('' when the calibrated one does)

    def configure(self, params: EcoSpeedParams) -> None:
        self.profile, self.vehicle_id, self.model_note = _build(params)
        self._plan_pub = self.publisher(RoutePlan, "route_plan", qos.latched())
        self._path_pub = self.publisher(Path, "route_path", qos.latched())
        self._marker_pub = self.publisher(MarkerArray, "route_markers", qos.latched())
        self._plan_id = f"eco-{uuid.uuid4().hex[:8]}"
        if params.republish_period_s > 0:
            # transient local hands the plan to late joiners, but a managed consumer (the actuator bridge)
            # ignores what arrives while it is still inactive; a periodic resend of the same plan reaches it
            self.timer(params.republish_period_s, self._publish, name="republish")
        if params.calibration_file and params.calibration_check_period_s > 0:
            self.timer(params.calibration_check_period_s, self._check_calibration, name="calibration")
        p = self.profile
        if p is None:  # a drive-cycle vehicle has no fixed route to advise on: stay up, publish nothing
            self.get_logger().info(f"{self.vehicle_id}: drives a drive cycle, not a fixed route; no advice")
            return
        self.get_logger().info(
            f"{self.vehicle_id}: loop {p.eco.distance_m:.0f} m, predicted CO2 {p.baseline.co2_g / 1000:.2f} kg "
            f"at cruise -> {p.eco.co2_g / 1000:.2f} kg with eco caps ({p.predicted_saving_pct:.1f} % less, loop "
            f"time {p.baseline.time_s:.0f} -> {p.eco.time_s:.0f} s, floor {p.floor_mps:.1f} m/s); advice "
            f"{'on' if params.enabled else 'off'}; {self._model_text()}")

    def _model_text(self) -> str:
        p = self.profile
        return "planned with the calibrated model" if p is not None and p.model == "calibrated" \
            else f"planned with the generic model ({self.model_note})"

    def _check_calibration(self) -> None:
        """Switch to the calibrated model once the saved calibration is confident (logged once)."""
        if self.profile is None or self.profile.model == "calibrated":
            return
        profile, _, note = _build(self.params)
        if profile is not None and profile.model == "calibrated":
            self.profile, self.model_note = profile, note
            self._plan_id = f"eco-{uuid.uuid4().hex[:8]}"
            self.get_logger().info(f"{self.vehicle_id}: calibration confident, caps re-planned: predicted saving "
                                   f"{profile.predicted_saving_pct:.1f} %; {self._model_text()}")
            self._publish()

    def activate(self) -> None:
        self._publish()

    def params_changed(self, old: EcoSpeedParams, new: EcoSpeedParams) -> None:
        self.profile, self.vehicle_id, self.model_note = _build(new)
        self._plan_id = f"eco-{uuid.uuid4().hex[:8]}"
        if self.is_active:
            self._publish()

    def _publish(self) -> None:
        if self.profile is None or not self.is_active:
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.params.frame_id)
        self._plan_pub.publish(conv.eco_plan(self.profile, self.vehicle_id, self._plan_id, header,
                                             self.params.enabled))
        self._path_pub.publish(conv.eco_path(self.profile, header))
        self._marker_pub.publish(conv.eco_markers(self.profile, header))

    def diagnostics_values(self) -> dict[str, str]:
        if self.profile is None:
            return {}
        p = self.profile
        return {"enabled": str(self.params.enabled), "route_points": str(len(p.points.s_m)),
                "floor_mps": f"{p.floor_mps:.1f}", "predicted_saving_pct": f"{p.predicted_saving_pct:.2f}",
                "model": p.model, "model_note": self.model_note[:200]}


def _build(p: EcoSpeedParams) -> tuple[EcoProfile | None, str, str]:
    from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
    from carbon_ai_nodes.graph.scenario import load_scenario
    from carbon_ai_nodes.sim.vehicle_sim import Route

    scenario = load_scenario(p.scenario_file)
    vehicle = scenario.vehicle(p.vehicle_id)
    if not vehicle.route:
        return None, vehicle.id, ""
    profile = VehicleProfile.from_mapping(vehicle.profile, f"{scenario.path}: {vehicle.id}.profile")
    profile, rates, note = calibrated_model(profile, p.calibration_file, p.calibration_confidence)
    route = Route.from_list(vehicle.route, vehicle.cruise_speed_mps)
    return eco_profile(profile, route, initial_payload_kg=vehicle.initial_payload_kg, spacing_m=p.spacing_m,
                       extra_decel_mps2=p.extra_decel_mps2, max_time_increase_pct=p.max_time_increase_pct,
                       max_accel_mps2=p.max_accel_mps2, max_decel_mps2=p.max_decel_mps2,
                       dwell_s=p.dwell_s, rates=rates), vehicle.id, note


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes eco_speed``."""
    sys.exit(run_node(EcoSpeed, args))


if __name__ == "__main__":
    main()
