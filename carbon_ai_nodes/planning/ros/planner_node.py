"""planner: carbon-aware fleet routing (service ``plan_route``) and flexible-load scheduling against the grid
forecast (``grid_intensity``), on OR-Tools and HiGHS.

Publishes ``route_plan`` (RoutePlan) and ``load_schedule`` (LoadSchedule), both reliable + transient local,
and ``route_path`` (nav_msgs/Path) and ``route_markers`` (MarkerArray, arcs coloured by CO2 per metre) for
rviz. A ``plan_route`` request for the same fleet as the current plan whose stops differ (stops added or
removed) is a replan: warm-started from the current plan and answered within ``replan_deadline_s`` with
the best plan found by then.

Subscribes ``road_congestion`` (RoadCongestion, reliable): a road between two stops is driven at most at
``speed_mps`` (``SPEED_CLEAR`` withdraws the report). A report that changes the congestion of the current
plan's roads triggers the same warm-started replan, published on ``route_plan``/``route_path``/
``route_markers`` within ``replan_deadline_s``; if no plan exists yet, it is kept for the next one. Reports
persist and apply to every later ``plan_route`` request naming both stops. Reports naming stops the current
plan does not have, or with a NaN/negative/infinite speed, are rejected and counted on /diagnostics
(``rejected.road_congestion.<reason>``).

Subscribes ``grid_intensity`` (GridIntensity, reliable + transient local): its forecast drives the load
schedule; its intensity now (``gco2_per_kwh``) is what electric vehicles' arcs are costed at from then on
(until one arrives, each profile's own ``grid_gco2_per_kwh``). A changed intensity while the current plan's
objective is co2 and at least one of its vehicles is electric triggers the same warm-started replan within
``replan_deadline_s`` (counted as ``grid_replans`` on /diagnostics); otherwise the plan stands. A forecast or
intensity that is NaN, infinite or negative is rejected (``rejected.grid_intensity.<reason>``).
"""

from __future__ import annotations

import math
import os
import sys
import time
import uuid

from nav_msgs.msg import Path
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from carbon_ai_msgs.msg import (
    CarbonEstimate,
    GridIntensity,
    LoadSchedule,
    RoadCongestion,
    RoutePlan,
    VehicleState,
)
from carbon_ai_msgs.srv import PlanRoute
from carbon_ai_nodes.common.carbon_estimate_rules import check_co2_rates
from carbon_ai_nodes.common.errors import CarbonAIError, ConfigError, InputRejectedError, SolverError
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
from carbon_ai_nodes.common.vehicle_state_rules import check_vehicle_state
from carbon_ai_nodes.planning.calibrated_model import calibrated_model
from carbon_ai_nodes.planning.load_schedule import Asset, Job, ScheduleProblem, load_jobs_file, solve_schedule
from carbon_ai_nodes.planning.ros import route_conversions as conv
from carbon_ai_nodes.planning.routing_model import (
    REPLAN_SOLVER_SHARE,
    Co2PerMetre,
    PlannerParams,
    RoutePlanResult,
    RoutingProblem,
    RoutingSolver,
    arc_costs,
    calibrated_co2_model,
    co2_depends_on_grid,
    load_profile_map,
    plan_routes,
    profile_co2_model,
    replan_routes,
)
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, configured, run_node


class Planner(CarbonNode[PlannerParams]):
    """Route plans on request (replanned on stop changes, congestion and grid intensity changes), load
    schedules on each new grid forecast."""

    def __init__(self) -> None:
        super().__init__("planner", PlannerParams)
        self.solver: RoutingSolver | None = None
        self.co2_model: Co2PerMetre | None = None
        self.profiles: dict[str, VehicleProfile] = {}  # vehicle_profiles, by name and file stem
        self.model = "generic"  # which emission model prices routes: "generic" (profiles) or "calibrated"
        self.model_note = ""  # why the generic model prices them ('' when the calibrated one does)
        self.problem: RoutingProblem | None = None
        # The current plan's problem as requested, before congestion: clearing a report restores from it.
        self.base_problem: RoutingProblem | None = None
        # Reported road speed caps, (from stop_id, to_stop_id) -> m/s; kept across requests (roads outlive plans).
        self.congestion: dict[tuple[str, str], float] = {}
        self.congestion_replans = 0
        # Latest reported grid intensity (gCO2/kWh) electric vehicles are costed at; NaN = their profiles' own.
        self.grid_gco2_per_kwh = math.nan
        self.grid_replans = 0
        self.plan: RoutePlanResult | None = None
        self.baseline_routes: list[list[int]] = []
        self.jobs: tuple[list[Asset], list[Job]] | None = None
        self._last_forecast: tuple | None = None
        self.co2_correction = math.nan
        self.last_state_s = math.nan
        self.plans_made = 0
        self.replans = 0
        self.last_solve_ms = math.nan
        # The service lives as long as the node; requests are refused unless active.
        self._srv = self.create_service(PlanRoute, "plan_route", self._on_plan_route)

    def configure(self, params: PlannerParams) -> None:
        from carbon_ai_nodes.planning.ortools_routing import OrToolsRoutingSolver

        self.solver = OrToolsRoutingSolver()
        self.profiles = _load_profiles(params.vehicle_profiles)
        self.co2_model = profile_co2_model(self.profiles)
        self._check_calibration()
        if params.calibration_file and params.calibration_check_period_s > 0:
            self.timer(params.calibration_check_period_s, self._check_calibration, name="calibration")
        self.jobs = load_jobs_file(params.load_jobs_file) if params.load_jobs_file else None
        self._plan_pub = self.publisher(RoutePlan, "route_plan", qos.latched())
        self._schedule_pub = self.publisher(LoadSchedule, "load_schedule", qos.latched())
        self._path_pub = self.publisher(Path, "route_path", qos.latched())
        self._marker_pub = self.publisher(MarkerArray, "route_markers", qos.latched())
        self.subscription(VehicleState, "vehicle_state", self._on_state, qos.command(),
                          input_name="vehicle_state", timeout_s=params.state_timeout_s)
        self.subscription(CarbonEstimate, "carbon_estimate", self._on_estimate, qos.command(),
                          input_name="carbon_estimate")
        self.subscription(GridIntensity, "grid_intensity", self._on_grid, qos.latched(),
                          input_name="grid_intensity")
        self.subscription(RoadCongestion, "road_congestion", self._on_congestion, qos.command(),
                          input_name="road_congestion")
        self.timer(1.0, self.poll_watchdog, name="watchdog")

    def params_changed(self, old: PlannerParams, new: PlannerParams) -> None:
        if new.vehicle_profiles != old.vehicle_profiles or new.calibration_file != old.calibration_file:
            try:
                self.profiles = _load_profiles(new.vehicle_profiles)
            except CarbonAIError as exc:
                self.get_logger().error(f"{exc}; keeping the previous vehicle profiles")
            else:
                self.co2_model = profile_co2_model(self.profiles)
                self.model, self.model_note = "generic", ""
                self._check_calibration()
        if new.load_jobs_file != old.load_jobs_file:
            try:
                self.jobs = load_jobs_file(new.load_jobs_file) if new.load_jobs_file else None
            except CarbonAIError as exc:
                self.get_logger().error(f"planner.load_jobs_file: {exc}; keeping the previous jobs")
            self._last_forecast = None

    def _check_calibration(self) -> None:
        """Price the calibration's vehicles with their calibrated model once it is confident (logged once)."""
        p = self.params
        if self.model == "calibrated" or not p.calibration_file:
            return
        notes = []
        for profile in {prof.name: prof for prof in self.profiles.values()}.values():
            if profile.kind != "road" or profile.is_electric:
                continue  # the calibrated model covers combustion road vehicles
            _, rates, note = calibrated_model(profile, p.calibration_file, p.calibration_confidence)
            if rates is not None:
                names = {k for k, prof in self.profiles.items() if prof.name == profile.name}
                self.co2_model = calibrated_co2_model(configured(self.co2_model, "planner CO2 model"), names, rates)
                self.model, self.model_note = "calibrated", ""
                self.get_logger().info(f"routes of {profile.name} vehicles now priced with the calibrated model "
                                       f"({p.calibration_file})")
                return
            notes.append(note)
        # the file belongs to one profile: its note is the one that does not say 'calibration of X, not of Y'
        note = next((n for n in notes if ", not of " not in n), notes[0] if notes else "no vehicle profiles")
        if note != self.model_note:
            self.get_logger().info(f"routes priced with the generic model: {note}")
        self.model_note = note

    def diagnostics_values(self) -> dict[str, str]:
        return {
            "co2_model": self.model, "co2_model_note": self.model_note,
            "plans": str(self.plans_made), "replans": str(self.replans),
            "last_solve_ms": f"{self.last_solve_ms:.1f}",
            "co2_model_correction": f"{self.co2_correction:.3f}",
            "current_plan_stops": str(self.problem.n if self.problem else 0),
            "congested_arcs": str(len(self.congestion)), "congestion_replans": str(self.congestion_replans),
            "grid_gco2_per_kwh": f"{self.grid_gco2_per_kwh:.1f}", "grid_replans": str(self.grid_replans),
        }

    # ------------------------------------------------------------------ routing
    def _header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.params.frame_id)

    def _on_plan_route(self, request: PlanRoute.Request, response: PlanRoute.Response) -> PlanRoute.Response:
        if not self.is_active or not self.is_configured:
            response.success = False
            response.message = "planner is not active"
            return response
        t0 = time.monotonic()
        p = self.params
        try:
            if len(request.stops) > p.max_stops:
                raise SolverError(f"{len(request.stops)} stops: more than planner.max_stops ({p.max_stops})")
            if request.objective and request.objective not in ("distance", "time", "co2"):
                raise SolverError(f"objective={request.objective!r}: must be distance, time or co2")
            if not math.isfinite(request.time_limit_s):
                raise SolverError(f"time_limit_s={request.time_limit_s!r}: must be finite")
            base = conv.request_to_problem(list(request.stops), list(request.vehicles),
                                           request.objective or p.objective, default_speed_mps=13.9,
                                           allow_dropping=request.allow_dropping)
            problem = self._with_congestion(base)
            replan = self._is_replan(problem)
            fresh_limit_s = request.time_limit_s if request.time_limit_s > 0 else p.time_limit_s
            plan, base_routes = self._solve(problem, replan, t0, fresh_limit_s)
        except SolverError as exc:
            self.reject("plan_route", "invalid_request", str(exc))
            response.success = False
            response.message = str(exc)
            response.plan = conv.plan_to_msg(_error_plan(str(exc)), None, "", self._header())
            return response
        self.accept("plan_route")
        msg = self._adopt(plan, base, problem, base_routes, replan, t0)
        response.success = plan.status != "infeasible"
        response.message = plan.message or (
            f"{plan.status}: {plan.co2_g / 1000:.3f} kg CO2 vs {plan.baseline_co2_g / 1000:.3f} kg for the "
            f"shortest plan, {plan.distance_m:.0f} m" + (" (replan)" if replan else ""))
        response.plan = msg
        return response

    def _with_congestion(self, base: RoutingProblem) -> RoutingProblem:
        """``base`` with every reported road speed cap whose two stops it has applied."""
        ids = {s.stop_id for s in base.stops}
        problem = base
        for (a, b), speed_mps in self.congestion.items():
            if a in ids and b in ids:
                problem = problem.with_arc_speed(a, b, speed_mps)
        return problem

    def _solve(self, problem: RoutingProblem, replan: bool, t0: float,
               fresh_limit_s: float) -> tuple[RoutePlanResult, list[list[int]]]:
        """Plan ``problem``. A replan warm-starts from the current plan and its baseline and gets what is left
        of ``replan_deadline_s`` since ``t0`` (time.monotonic(), s) for the solvers; a fresh plan gets
        ``fresh_limit_s`` (s). Raises SolverError."""
        solver = configured(self.solver, "planner routing solver")
        costs = arc_costs(problem, configured(self.co2_model, "planner CO2 model"), self.grid_gco2_per_kwh)
        if not replan:
            return plan_routes(problem, solver, costs, time_limit_s=max(fresh_limit_s, 0.01))
        current, old = self.plan, self.problem
        if current is None or old is None:  # _is_replan said there is a current plan
            raise SolverError("no current plan to replan from")
        limit = self.params.replan_deadline_s * REPLAN_SOLVER_SHARE - (time.monotonic() - t0)
        return replan_routes(problem, solver, costs, current_routes=current.customer_routes(),
                             baseline_routes=self.baseline_routes, old_ids=[s.stop_id for s in old.stops],
                             time_limit_s=max(limit, 0.01))

    def _adopt(self, plan: RoutePlanResult, base: RoutingProblem, problem: RoutingProblem,
               base_routes: list[list[int]], replan: bool, t0: float) -> RoutePlan:
        """The RoutePlan of ``plan``; unless infeasible it becomes the current plan and is published with its
        Path and markers. ``base`` is ``problem`` before congestion; ``t0`` (time.monotonic(), s) is when the
        request or report arrived."""
        header = self._header()
        msg = conv.plan_to_msg(plan, problem, uuid.uuid4().hex[:12], header)
        if plan.status != "infeasible":
            self.base_problem, self.problem, self.plan, self.baseline_routes = base, problem, plan, base_routes
            self._plan_pub.publish(msg)
            self._path_pub.publish(conv.plan_to_path(plan, problem, header))
            self._marker_pub.publish(conv.plan_to_markers(plan, problem, header))
        self.plans_made += 1
        self.replans += int(replan)
        self.last_solve_ms = (time.monotonic() - t0) * 1000.0
        return msg

    def _is_replan(self, problem: RoutingProblem) -> bool:
        """Same fleet as the current plan, and its stops changed by additions/removals only."""
        if self.problem is None or self.plan is None:
            return False
        if [v.vehicle_id for v in problem.vehicles] != [v.vehicle_id for v in self.problem.vehicles]:
            return False
        old = {s.stop_id for s in self.problem.stops}
        return len(old & {s.stop_id for s in problem.stops}) > 0 and problem.objective == self.problem.objective

    # ------------------------------------------------------------------ inputs
    def _on_congestion(self, msg: RoadCongestion) -> None:
        t0 = time.monotonic()
        try:
            arcs, speed_mps = conv.congestion_from_msg(msg)
            if self.base_problem is not None:
                known = {s.stop_id for s in self.base_problem.stops}
                unknown = [sid for sid in arcs[0] if sid not in known]
                if unknown:
                    raise InputRejectedError("unknown_stop", f"{unknown[0]!r} is not a stop of the current plan")
        except InputRejectedError as exc:
            self.reject("road_congestion", exc.reason, exc.detail)
            return
        self.accept("road_congestion")
        changed = [arc for arc in arcs if self.congestion.get(arc, math.inf) != speed_mps]
        if not changed:
            return  # the same report re-sent (reports repeat while a jam lasts): the plan stands
        for arc in changed:
            if math.isinf(speed_mps):
                del self.congestion[arc]
            else:
                self.congestion[arc] = speed_mps
        road = ", ".join(f"{a} -> {b}" for a, b in changed)
        state = "clear again" if math.isinf(speed_mps) else f"congested: at most {speed_mps:.1f} m/s"
        if self.base_problem is None:
            self.get_logger().info(f"road {road} {state}; no plan yet, the next plan will use it")
            return
        self.get_logger().info(f"road {road} {state}; replanning within {self.params.replan_deadline_s:.2f} s")
        if self._replan_now("road_congestion", self._with_congestion(self.base_problem), t0):
            self.congestion_replans += 1

    def _replan_now(self, cause: str, problem: RoutingProblem, t0: float) -> bool:
        """Replan ``problem`` warm-started from the current plan within ``replan_deadline_s`` of ``t0``
        (time.monotonic(), s) and publish it; a failure is counted against ``cause`` and the current plan stays
        (the vehicles keep driving it; a later report or request may make the problem solvable)."""
        try:
            plan, base_routes = self._solve(problem, True, t0, self.params.replan_deadline_s)
        except SolverError as exc:
            self.reject(cause, "replan_failed", str(exc))
            return False
        if plan.status == "infeasible":
            self.reject(cause, "infeasible", plan.message or "no plan meets the time windows")
            return False
        assert self.base_problem is not None  # _adopt set it with the current plan a replan starts from
        self._adopt(plan, self.base_problem, problem, base_routes, True, t0)
        return True

    def _recost_for_grid(self, gco2_per_kwh: float, t0: float) -> None:
        """Adopt ``gco2_per_kwh`` (gCO2/kWh) for costing and, if it changes the current plan's objective (co2,
        an electric vehicle), replan warm-started within ``replan_deadline_s`` of ``t0`` (time.monotonic(), s)."""
        if gco2_per_kwh == self.grid_gco2_per_kwh:
            return  # the same intensity re-sent (forecast updates often keep it): the plan stands
        self.grid_gco2_per_kwh = gco2_per_kwh
        problem = self.problem
        if problem is None or self.plan is None or problem.objective != "co2":
            return  # kept for the next plan; distance and time plans do not depend on it
        co2_model = configured(self.co2_model, "planner CO2 model")
        if not any(co2_depends_on_grid(co2_model, v.profile, v.cruise_speed_mps) for v in problem.vehicles):
            return  # no electric vehicle: every arc costs the same as before (silent: forecasts come often)
        self.get_logger().info(f"grid intensity now {gco2_per_kwh:.0f} gCO2/kWh; replanning within "
                               f"{self.params.replan_deadline_s:.2f} s")
        if self._replan_now("grid_intensity", problem, t0):
            self.grid_replans += 1

    def _on_state(self, msg: VehicleState) -> None:
        try:
            check_vehicle_state(msg)  # standstill noise and NaN optional channels (payload) are normal
        except InputRejectedError as exc:
            self.reject("vehicle_state", exc.reason, exc.detail)
            return
        self.last_state_s = self.now_s()
        self.accept("vehicle_state")

    def _on_estimate(self, msg: CarbonEstimate) -> None:
        model, physics = msg.co2_rate_g_s, msg.physics_co2_rate_g_s
        try:
            check_co2_rates(model, physics)
        except InputRejectedError as exc:
            self.reject("carbon_estimate", exc.reason, exc.detail)
            return
        self.accept("carbon_estimate")
        if physics > 0.1 and not msg.is_out_of_distribution:
            # How far the learned model sits from the physics the planner's arc costs use (diagnostic).
            ratio = model / physics
            self.co2_correction = ratio if math.isnan(self.co2_correction) else (
                0.98 * self.co2_correction + 0.02 * ratio)

    def _on_grid(self, msg: GridIntensity) -> None:
        t0 = time.monotonic()
        try:
            start_s, step_s, values = conv.forecast_from_msg(msg)
            gco2_per_kwh = conv.current_intensity_from_msg(msg)
        except InputRejectedError as exc:
            self.reject("grid_intensity", exc.reason, exc.detail)
            return
        self.accept("grid_intensity")
        # Routes first: their replan has a deadline, the load schedule does not.
        self._recost_for_grid(gco2_per_kwh, t0)
        if self.jobs is None:
            return
        key = (step_s, tuple(values))
        if key == self._last_forecast:
            return  # same forecast re-sent: the schedule stands
        self._last_forecast = key
        assets, jobs = self.jobs
        try:
            problem = ScheduleProblem(tuple(assets), tuple(jobs), tuple(values), step_s,
                                      self.params.site_power_cap_kw)
            result = solve_schedule(problem, self.params.schedule_time_limit_s)
        except SolverError as exc:
            self.reject("grid_intensity", "unschedulable", str(exc))
            return
        self._schedule_pub.publish(conv.schedule_to_msg(result, problem, uuid.uuid4().hex[:12], self._header(),
                                                        start_s))


def _resolve(path: str) -> str:
    """A relative path as given if it exists here, else inside the installed package share (launch runs
    nodes from anywhere); ConfigError naming the parameter when neither exists."""
    if os.path.isabs(path) or os.path.exists(path):
        if not os.path.exists(path):
            raise ConfigError(f"planner.vehicle_profiles: {path} does not exist")
        return path
    try:
        from ament_index_python.packages import get_package_share_directory

        shared = os.path.join(get_package_share_directory("carbon_ai_nodes"), path)
    except Exception:  # noqa: BLE001 - no ament index (plain checkout): only the working directory counts
        shared = ""
    if shared and os.path.exists(shared):
        return shared
    raise ConfigError(f"planner.vehicle_profiles: {path} not found (relative to {os.getcwd()} or the package share)")


def _load_profiles(paths: tuple[str, ...]) -> dict[str, VehicleProfile]:
    try:
        return load_profile_map([_resolve(p) for p in paths])
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith("planner.") else f"planner.vehicle_profiles: {msg}") from None


def _error_plan(message: str) -> RoutePlanResult:
    return RoutePlanResult("", (), (), math.nan, 0.0, 0.0, 0.0, status="error", message=message)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes planner``."""
    sys.exit(run_node(Planner, args))


if __name__ == "__main__":
    main()
