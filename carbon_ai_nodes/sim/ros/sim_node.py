"""sim: telemetry simulator. Drives a scenario vehicle's route (or a drive cycle) and publishes
``gnss/fix``, ``imu/data``, ``odom/wheel``, ``engine/telemetry`` (sensor QoS) with noise, dropouts and
optional faults; obeys ``actuator_command`` (speed and engine-load limits, e-stop), so the loop is closed.
Also publishes its ground truth on ``sim/true_emission`` (CarbonEstimate, backend ``sim-truth``) for evaluation.
"""

from __future__ import annotations

import math
import sys

from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, NavSatFix

from carbon_ai_msgs.msg import ActuatorCommand, CarbonEstimate, EngineTelemetry
from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, configured, run_node
from carbon_ai_nodes.sim.ros import conversions as conv
from carbon_ai_nodes.sim.vehicle_sim import DriveTrace, Route, SimParams, VehicleSim


def build_sim(p: SimParams) -> tuple[VehicleSim, str]:
    """The simulator core and asset id for these parameters (scenario vehicle, or profile + drive cycle)."""
    from carbon_ai_nodes.common.vehicle_profile import VehicleProfile, load_profile
    from carbon_ai_nodes.sim.plant_engine import engine_for

    origin = (p.origin_lat_deg, p.origin_lon_deg, 0.0)
    route = trace = engine = None
    payload = 0.0
    if p.scenario_file:
        from carbon_ai_nodes.graph.scenario import expand, load_scenario

        scenario = load_scenario(p.scenario_file)
        vehicle = scenario.vehicle(p.vehicle_id)
        profile = VehicleProfile.from_mapping(vehicle.profile, f"{scenario.path}: {vehicle.id}.profile")
        origin = scenario.origin
        payload = vehicle.initial_payload_kg
        engine = engine_for(vehicle.plant, profile)
        cycle = p.drive_cycle_file or expand(vehicle.drive_cycle, scenario)
        if cycle:
            trace = DriveTrace.from_csv(cycle)
        else:
            route = Route.from_list(vehicle.route, vehicle.cruise_speed_mps)
        asset = p.asset_id or vehicle.id
    else:
        profile = load_profile(p.profile_file)
        if not p.drive_cycle_file:
            raise ConfigError("sim.drive_cycle_file='': required when no scenario_file gives a route")
        trace = DriveTrace.from_csv(p.drive_cycle_file)
        asset = p.asset_id or profile.name
    return VehicleSim(p, profile, route=route, trace=trace, origin=origin, initial_payload_kg=payload,
                      engine=engine), asset


class Sim(CarbonNode[SimParams]):
    """Steps the vehicle on a timer at ``rate_hz`` and publishes what its sensors would."""

    def __init__(self) -> None:
        super().__init__("sim", SimParams)
        self.core: VehicleSim | None = None
        self.asset_id = ""
        self._last_wall_s = 0.0
        self._faulting: tuple[str, ...] = ()

    def configure(self, params: SimParams) -> None:
        self.core, self.asset_id = build_sim(params)
        engine = self.core.engine
        self.get_logger().info(f"fuel meter: {engine.describe() if engine else 'the emission model (no plant engine)'}")
        sensor = qos.sensor()
        self._gnss = self.publisher(NavSatFix, "gnss/fix", sensor)
        self._imu = self.publisher(Imu, "imu/data", sensor)
        self._odom = self.publisher(Odometry, "odom/wheel", sensor)
        self._engine = self.publisher(EngineTelemetry, "engine/telemetry", sensor)
        self._truth = self.publisher(CarbonEstimate, "sim/true_emission", qos.command())
        self.subscription(ActuatorCommand, "actuator_command", self._on_command, qos.command(),
                          input_name="actuator_command")
        self.timer(1.0 / params.rate_hz, self._step, name="step")

    def activate(self) -> None:
        self._last_wall_s = self.now_s()

    def params_changed(self, old: SimParams, new: SimParams) -> None:
        if self.core is not None:
            self.core.p = new  # noise, faults and rates apply from the next step; the vehicle keeps its state

    def _on_command(self, msg: ActuatorCommand) -> None:
        speed, load, estop = conv.command_values(msg)
        core = configured(self.core, "sim core")
        if core.command(core.truth.t_s, speed, load, estop):
            self.accept("actuator_command")
        else:
            self.reject("actuator_command", "non-finite or negative limit")

    def _step(self) -> None:
        now = self.now_s()
        # simulated time follows the clock, but a stalled process catches up in bounded steps
        dt = min(max(now - self._last_wall_s, 1e-4), 0.2)
        self._last_wall_s = now
        core, p = configured(self.core, "sim core"), self.params
        s = core.step(dt)
        r = core.readings(dt)
        faulting = tuple(f for f in p.faults if core.fault_active(f))
        if faulting != self._faulting:
            self.get_logger().warning(f"fault injection: {', '.join(faulting) or 'none'} active")
            self._faulting = faulting
        stamp = self.get_clock().now().to_msg()
        base = self.asset_id
        if r.gnss is not None:
            self._gnss.publish(conv.nav_sat_fix(stamp, f"{base}/gnss", *r.gnss, p.gnss_sigma_m))
        if r.imu is not None:
            ax, az, wz, pitch = r.imu
            yaw = s.heading_rad if math.isfinite(ax) else math.nan
            self._imu.publish(conv.imu(stamp, f"{base}/imu", ax, az, wz, yaw, pitch, p.accel_sigma_mps2,
                                       p.gyro_sigma_rps))
        if r.odom is not None:
            self._odom.publish(conv.wheel_odometry(stamp, f"{base}/odom", f"{base}/base_link", *r.odom,
                                                   p.wheel_speed_sigma_mps))
        if r.engine is not None:
            self._engine.publish(conv.engine_telemetry(stamp, r.engine))
            self._truth.publish(conv.true_emission(stamp, base, s.co2_g_s, s.fuel_lph, s.power_kw))

    def diagnostics_values(self) -> dict[str, str]:
        if self.core is None:
            return {}
        s = self.core.truth
        return {"sim_time_s": f"{s.t_s:.1f}", "speed_mps": f"{s.speed_mps:.2f}", "distance_m": f"{s.distance_m:.0f}",
                "fuel_l": f"{s.fuel_l:.3f}", "co2_kg": f"{s.co2_g / 1000:.3f}", "payload_kg": f"{s.payload_kg:.0f}",
                "speed_limit_mps": f"{s.speed_limit_mps:.2f}", "faults_active": ",".join(self._faulting)}


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes sim``."""
    sys.exit(run_node(Sim, args))


if __name__ == "__main__":
    main()
