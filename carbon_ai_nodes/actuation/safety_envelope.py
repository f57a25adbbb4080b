"""The actuator bridge's safety envelope: modes, transitions, input watchdog, bounds, slew limits, deadband.

Pure and deterministic: every method takes the time (seconds, on the caller's clock) it should act at, so
the same sequence of calls always yields the same commands. No ROS imports.

Modes, by precedence (the first that applies wins, re-evaluated on every :meth:`SafetyEnvelope.step`):

1. ``ESTOP``: an e-stop was requested (or its heartbeat was lost). Latched: only :meth:`reset_estop` clears
   it, and only while the e-stop input is released. Outputs jump to zero at once (no slew).
2. ``MANUAL_OVERRIDE``: an operator override is active and fresh. Operator values (NaN = the safe value)
   are clamped to the bounds and slew-limited. An override that goes stale while active is a fault
   (``SAFE_FALLBACK``), not a silent return to the plan.
3. ``SAFE_FALLBACK``: a required input is stale, invalid or has no publisher, the caller reports an internal
   error of its control path (:meth:`SafetyEnvelope.set_internal_fault`), or inputs have not yet been
   healthy for ``healthy_window_s`` since the last fault / reset / start. A vehicle state none of whose motion
   sensors is healthy (:func:`motion_sources_problem`) is invalid: it is a prediction, however fresh its stamp.
   Outputs slew to the configured safe setpoint (which need not be zero: a loaded haul truck on a slope needs
   engine load to hold).
4. ``AUTO``: the planned target, through the deadband, the slew limits and the bounds.

Whatever goes in (NaN, inf, huge values, time going backwards), every output is finite, within its bounds,
and moves by at most ``slew * dt`` per step except when jumping to the e-stop setpoint.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable
from typing import ClassVar

from carbon_ai_nodes.common.params import ParamSet, param

# The VehicleState.sources names that measure motion are the ones fusion writes (engine does not measure motion).
from carbon_ai_nodes.fusion.fusion_params import MOTION_SOURCES

INPUT_NAMES = ("vehicle_state", "carbon_estimate", "route_plan", "load_schedule")


class Mode(enum.IntEnum):
    """Bridge modes; values equal carbon_ai_msgs/ActuatorCommand.MODE_*."""

    AUTO = 0
    SAFE_FALLBACK = 1
    MANUAL_OVERRIDE = 2
    ESTOP = 3


@dataclasses.dataclass(frozen=True)
class ActuatorBridgeParams(ParamSet):
    """Parameters of the actuator_bridge node: bounds, slew, deadband, safe setpoint, deadlines, targets."""

    SECTION: ClassVar[str] = "actuator_bridge"
    asset_id: str = param("", "This vehicle/asset: selects its route and load schedule; empty = the only one")
    control_rate_hz: float = param(20.0, "Rate of the command stream (kept when inputs stop)", unit="Hz",
                                   min=1.0, max=1000.0, read_only=True)
    publish_on_input: bool = param(True, "Also publish right after an input changes the target (cuts latency "
                                         "by up to one control period); e-stop always does")
    status_period_s: float = param(1.0, "Period of the actuator_status republish (also sent on every mode "
                                        "change)", unit="s", gt=0.0, max=60.0, read_only=True)
    # Absolute bounds (speed and load start at 0)
    speed_limit_max_mps: float = param(30.0, "Upper bound of speed_limit_mps", unit="m/s", gt=0.0, max=100.0)
    engine_load_max_pct: float = param(100.0, "Upper bound of engine_load_limit_pct", unit="%", gt=0.0, max=100.0)
    power_min_kw: float = param(0.0, "Lower bound of power_setpoint_kw (negative = regeneration allowed)",
                                unit="kW", min=-1e5, max=0.0)
    power_max_kw: float = param(500.0, "Upper bound of power_setpoint_kw", unit="kW", min=0.0, max=1e5)
    # Slew limits
    speed_slew_mps_per_s: float = param(2.0, "Max rate of change of speed_limit_mps", unit="m/s^2", gt=0.0)
    load_slew_pct_per_s: float = param(25.0, "Max rate of change of engine_load_limit_pct", unit="%/s", gt=0.0)
    power_slew_kw_per_s: float = param(50.0, "Max rate of change of power_setpoint_kw", unit="kW/s", gt=0.0)
    # Deadband (AUTO targets closer than this to the held target are ignored)
    speed_deadband_mps: float = param(0.25, "Deadband on planned speed_limit_mps changes", unit="m/s", min=0.0)
    load_deadband_pct: float = param(1.0, "Deadband on planned engine_load_limit_pct changes", unit="%", min=0.0)
    power_deadband_kw: float = param(0.5, "Deadband on planned power_setpoint_kw changes", unit="kW", min=0.0)
    # Safe setpoint held in SAFE_FALLBACK (and the value of NaN fields of a manual override)
    safe_speed_limit_mps: float = param(5.0, "speed_limit_mps held in SAFE_FALLBACK", unit="m/s", min=0.0)
    safe_engine_load_limit_pct: float = param(60.0, "engine_load_limit_pct held in SAFE_FALLBACK (not 0: a "
                                                    "loaded vehicle on a slope needs load to hold)",
                                              unit="%", min=0.0)
    safe_power_setpoint_kw: float = param(0.0, "power_setpoint_kw held in SAFE_FALLBACK", unit="kW")
    # AUTO targets
    cruise_speed_limit_mps: float = param(25.0, "speed_limit_mps in AUTO where the plan recommends none",
                                          unit="m/s", gt=0.0)
    engine_load_limit_pct: float = param(100.0, "engine_load_limit_pct in AUTO before CO2 tightening",
                                         unit="%", min=0.0, max=100.0)
    default_power_kw: float = param(0.0, "power_setpoint_kw in AUTO outside any LoadSchedule slot", unit="kW")
    co2_limit_g_s: float = param(0.0, "Estimated CO2 rate above which the engine load limit is scaled down "
                                      "by limit/rate (0 = off)", unit="g/s", min=0.0)
    co2_min_load_pct: float = param(40.0, "Floor of the CO2-tightened engine load limit", unit="%",
                                    min=0.0, max=100.0)
    route_max_offset_m: float = param(50.0, "Farther than this from every arc of the route, the cruise "
                                            "limit applies", unit="m", gt=0.0)
    # Plan sizes and sanity, checked on receipt before any heavy work (a 100,000-stop plan once held the control
    # loop for 2.5 s): an oversize or insane plan is refused and counted, and the previous one is dropped.
    plan_max_bytes: int = param(2_000_000, "route_plan / load_schedule messages larger than this (serialised) "
                                           "are refused before they are deserialised", unit="B",
                                min=1024, max=100_000_000)
    route_max_stops: int = param(5000, "Routes with more stops than this are refused (an eco route of a 4.5 km "
                                       "loop at 5 m spacing has 900)", min=2, max=1_000_000)
    schedule_max_slots: int = param(10000, "Load schedules with more slots than this are refused", min=1,
                                    max=1_000_000)
    schedule_min_slot_s: float = param(1.0, "Load schedule slots shorter than this are refused", unit="s",
                                       gt=0.0, max=3600.0)
    schedule_max_slot_s: float = param(86400.0, "Load schedule slots longer than this are refused", unit="s",
                                       gt=0.0, max=604800.0)
    # Watchdog
    required_inputs: tuple[str, ...] = param(("vehicle_state", "carbon_estimate"),
                                             "Inputs that must be fresh and valid for AUTO", choices=INPUT_NAMES)
    vehicle_state_timeout_s: float = param(0.5, "Deadline of vehicle_state (0 = none)", unit="s", min=0.0)
    carbon_estimate_timeout_s: float = param(1.0, "Deadline of carbon_estimate (0 = none)", unit="s", min=0.0)
    route_plan_timeout_s: float = param(0.0, "Deadline of route_plan (0 = none: plans are latched)", unit="s",
                                        min=0.0)
    load_schedule_timeout_s: float = param(0.0, "Deadline of load_schedule (0 = none)", unit="s", min=0.0)
    manual_override_timeout_s: float = param(1.0, "An active override must be refreshed within this",
                                             unit="s", gt=0.0)
    estop_heartbeat_timeout_s: float = param(0.0, "If > 0, the estop topic is a heartbeat: silence latches "
                                                  "ESTOP (0 = off)", unit="s", min=0.0)
    require_motion_source: bool = param(True, "Refuse a vehicle_state none of whose motion sources (gnss, imu, "
                                              "odom, from VehicleState.sources) is healthy: fusion is only "
                                              "predicting, so the state is not evidence the vehicle is where it says")
    max_input_age_s: float = param(1.0, "Reject stamped inputs older (or further in the future) than this "
                                        "(0 = off)", unit="s", min=0.0)
    healthy_window_s: float = param(2.0, "Inputs must be healthy this long before SAFE_FALLBACK returns to "
                                         "AUTO", unit="s", min=0.0, max=600.0)
    liveliness_check_period_s: float = param(0.5, "How often required inputs are checked for a live publisher "
                                                  "(0 = off)", unit="s", min=0.0, max=60.0,
                                            read_only=True)

    def check(self) -> None:
        """Safe and cruise setpoints must lie inside the bounds."""
        if self.safe_speed_limit_mps > self.speed_limit_max_mps:
            self.fail("safe_speed_limit_mps", f"must be <= speed_limit_max_mps ({self.speed_limit_max_mps})")
        if self.safe_engine_load_limit_pct > self.engine_load_max_pct:
            self.fail("safe_engine_load_limit_pct", f"must be <= engine_load_max_pct ({self.engine_load_max_pct})")
        if not self.power_min_kw <= self.safe_power_setpoint_kw <= self.power_max_kw:
            self.fail("safe_power_setpoint_kw", f"must be within [power_min_kw, power_max_kw] "
                                                f"([{self.power_min_kw}, {self.power_max_kw}])")
        if len(set(self.required_inputs)) != len(self.required_inputs):
            self.fail("required_inputs", "lists an input twice")
        if self.schedule_min_slot_s > self.schedule_max_slot_s:
            self.fail("schedule_min_slot_s", f"must be <= schedule_max_slot_s ({self.schedule_max_slot_s})")

    def timeout_s(self, name: str) -> float:
        """Deadline of one of :data:`INPUT_NAMES` (0 = none)."""
        return float(getattr(self, f"{name}_timeout_s"))


def motion_sources_problem(sources: Iterable[tuple[str, bool, bool]]) -> str:
    """Why a vehicle state must not drive the actuator: ``""`` if usable, else a short reason.

    ``sources`` holds ``(name, enabled, healthy)`` per entry of VehicleState.sources. The state is unusable when
    it lists motion sources (:data:`MOTION_SOURCES`) and none of them is both enabled and healthy: every motion
    sensor is silent (stale) or rejected, and the estimate is dead reckoning from the last good data. A state
    listing no motion source (a producer without per-source health) is left to the other checks.
    """
    motion = [(name, enabled, healthy) for name, enabled, healthy in sources if name in MOTION_SOURCES]
    if not motion or any(enabled and healthy for _, enabled, healthy in motion):
        return ""
    return "no_motion_source"


@dataclasses.dataclass(frozen=True)
class Setpoint:
    """The three actuator quantities: speed cap (m/s), engine load cap (%), power setpoint (kW)."""

    speed_limit_mps: float
    engine_load_limit_pct: float
    power_setpoint_kw: float

    def as_tuple(self) -> tuple[float, float, float]:
        """(speed_limit_mps, engine_load_limit_pct, power_setpoint_kw)."""
        return (self.speed_limit_mps, self.engine_load_limit_pct, self.power_setpoint_kw)


ESTOP_SETPOINT = Setpoint(0.0, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class Command:
    """One output of :meth:`SafetyEnvelope.step`."""

    mode: Mode
    setpoint: Setpoint
    plan_id: str
    reason: str
    mode_changed: bool
    previous_mode: Mode


@dataclasses.dataclass
class _Input:
    timeout_s: float
    last_ok_s: float | None = None
    invalid_reason: str = ""
    publishers: int | None = None  # None = unknown (liveliness not checked)
    publishers_seen: bool = False


def _finite_or(value: float, fallback: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return fallback
    return value if math.isfinite(value) else fallback


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


class SafetyEnvelope:
    """Mode logic and output limiting of the actuator bridge (see the module docstring for the rules)."""

    def __init__(self, params: ActuatorBridgeParams, now_s: float) -> None:
        self.params = params
        now_s = _finite_or(now_s, 0.0)
        self._inputs: dict[str, _Input] = {}
        self._configure_inputs(params)
        self.mode = Mode.SAFE_FALLBACK
        self.mode_since_s = now_s
        self.reason = "starting: waiting for inputs"
        self.estop_latched = False
        self.estop_engaged = False  # last value of the e-stop input
        self.estop_reason = ""
        self._estop_last_s: float | None = now_s
        self._override_active = False
        self._override_target = self._safe()
        self._override_last_s: float | None = None
        self._override_lost = False
        self._target: Setpoint | None = None
        self._plan_id = ""
        self._healthy_since_s: float | None = None
        self._internal_fault = ""
        self._last_step_s = now_s
        self._output = self._safe()
        self._held = self._safe()

    # ------------------------------------------------------------------ configuration
    def _configure_inputs(self, params: ActuatorBridgeParams) -> None:
        for name in INPUT_NAMES:
            state = self._inputs.setdefault(name, _Input(params.timeout_s(name)))
            state.timeout_s = params.timeout_s(name)

    def update_params(self, params: ActuatorBridgeParams) -> None:
        """Apply a validated runtime parameter change; outputs stay continuous (slew applies)."""
        self.params = params
        self._configure_inputs(params)

    def _safe(self) -> Setpoint:
        p = self.params
        return Setpoint(p.safe_speed_limit_mps, p.safe_engine_load_limit_pct, p.safe_power_setpoint_kw)

    # ------------------------------------------------------------------ inputs
    def input_ok(self, name: str, now_s: float) -> None:
        """A valid message of input ``name`` arrived."""
        state = self._inputs[name]
        state.last_ok_s = _finite_or(now_s, self._last_step_s)
        state.invalid_reason = ""

    def input_invalid(self, name: str, reason: str) -> None:
        """A message of ``name`` was rejected: the input counts as unhealthy until the next valid one."""
        self._inputs[name].invalid_reason = reason or "invalid"

    def input_publishers(self, name: str, count: int) -> None:
        """Liveliness: how many publishers the input has in the ROS graph.

        Only a drop to 0 after publishers were seen counts (the upstream node left): the graph can lag
        behind the data at start-up, so "never seen" is left to the deadline.
        """
        state = self._inputs[name]
        state.publishers = int(count)
        state.publishers_seen = state.publishers_seen or count > 0

    def set_target(self, target: Setpoint, plan_id: str = "") -> None:
        """The AUTO target computed from the plans and the estimate; non-finite fields become the safe value."""
        safe = self._safe()
        self._target = Setpoint(
            _finite_or(target.speed_limit_mps, safe.speed_limit_mps),
            _finite_or(target.engine_load_limit_pct, safe.engine_load_limit_pct),
            _finite_or(target.power_setpoint_kw, safe.power_setpoint_kw),
        )
        self._plan_id = plan_id

    def set_estop(self, engaged: bool, now_s: float, reason: str = "e-stop input engaged") -> None:
        """The e-stop input (any True latches ESTOP; False only releases the input, it does not reset)."""
        self._estop_last_s = _finite_or(now_s, self._last_step_s)
        self.estop_engaged = bool(engaged)
        if engaged:
            self._latch_estop(reason)

    def _latch_estop(self, reason: str) -> None:
        if not self.estop_latched:
            self.estop_latched = True
            self.estop_reason = reason

    def reset_estop(self, now_s: float) -> tuple[bool, str]:
        """Clear a latched e-stop if its input is released; the bridge then passes through SAFE_FALLBACK."""
        if not self.estop_latched:
            return True, "no e-stop latched"
        if self.estop_engaged:
            return False, "e-stop input still engaged: release it first"
        timeout_s = self.params.estop_heartbeat_timeout_s
        now_s = _finite_or(now_s, self._last_step_s)
        if timeout_s > 0 and (self._estop_last_s is None or now_s - self._estop_last_s > timeout_s):
            return False, "e-stop heartbeat missing: restore it first"
        self.estop_latched = False
        self.estop_reason = ""
        self._healthy_since_s = None  # the healthy window restarts from the reset
        return True, f"e-stop reset; AUTO after inputs are healthy for {self.params.healthy_window_s:g} s"

    def set_override(self, active: bool, target: Setpoint, now_s: float) -> None:
        """Operator override; NaN (or inf) fields take the safe value. Must be refreshed while active."""
        safe = self._safe()
        self._override_active = bool(active)
        self._override_target = Setpoint(
            _finite_or(target.speed_limit_mps, safe.speed_limit_mps),
            _finite_or(target.engine_load_limit_pct, safe.engine_load_limit_pct),
            _finite_or(target.power_setpoint_kw, safe.power_setpoint_kw),
        )
        self._override_last_s = _finite_or(now_s, self._last_step_s)
        self._override_lost = False

    def set_internal_fault(self, fault: str) -> None:
        """An internal error of the caller's control path (``""`` = none): while set, the bridge holds
        SAFE_FALLBACK as for an invalid required input, and AUTO returns only after the healthy window."""
        self._internal_fault = fault

    # ------------------------------------------------------------------ health
    def input_problems(self, now_s: float) -> dict[str, str]:
        """Why each unhealthy input is unhealthy (required and optional), e.g. ``{"vehicle_state": "stale"}``."""
        problems = {}
        for name, state in self._inputs.items():
            if state.invalid_reason:
                problems[name] = f"invalid ({state.invalid_reason})"
            elif state.last_ok_s is None:
                if name in self.params.required_inputs:
                    problems[name] = "never received"
            elif state.timeout_s > 0 and now_s - state.last_ok_s > state.timeout_s:
                problems[name] = f"stale ({now_s - state.last_ok_s:.2f} s > {state.timeout_s:g} s)"
            elif state.publishers == 0 and state.publishers_seen and name in self.params.required_inputs:
                problems[name] = "no publisher"
        return problems

    def stale_inputs(self, now_s: float) -> list[str]:
        """Inputs past their deadline (or never received, if required)."""
        return sorted(n for n, why in self.input_problems(now_s).items() if not why.startswith("invalid"))

    def invalid_inputs(self) -> list[str]:
        """Inputs whose last message was rejected."""
        return sorted(n for n, s in self._inputs.items() if s.invalid_reason)

    def input_fresh(self, name: str, now_s: float) -> bool:
        """True if ``name`` has a valid, unexpired last message."""
        state = self._inputs[name]
        if state.last_ok_s is None or state.invalid_reason:
            return False
        return state.timeout_s <= 0 or now_s - state.last_ok_s <= state.timeout_s

    # ------------------------------------------------------------------ the control step
    def step(self, now_s: float) -> Command:
        """Decide the mode and the limited setpoint at ``now_s``. Call at the control rate (and on events)."""
        p = self.params
        now_s = _finite_or(now_s, self._last_step_s)
        dt_s = _clamp(now_s - self._last_step_s, 0.0, 2.0 / p.control_rate_hz)
        self._last_step_s = max(now_s, self._last_step_s)
        now_s = self._last_step_s  # time never runs backwards inside the envelope

        if (p.estop_heartbeat_timeout_s > 0 and not self.estop_latched
                and (self._estop_last_s is None or now_s - self._estop_last_s > p.estop_heartbeat_timeout_s)):
            self._latch_estop(f"e-stop heartbeat lost (> {p.estop_heartbeat_timeout_s:g} s)")

        override_fresh = (self._override_last_s is not None
                          and now_s - self._override_last_s <= p.manual_override_timeout_s)
        if self._override_active and not override_fresh:
            self._override_lost = True

        problems = {n: why for n, why in self.input_problems(now_s).items() if n in p.required_inputs}
        if self._internal_fault:
            problems["control"] = f"internal error ({self._internal_fault})"
        if problems:
            self._healthy_since_s = None
        elif self._healthy_since_s is None:
            self._healthy_since_s = now_s
        healthy_s = 0.0 if self._healthy_since_s is None else now_s - self._healthy_since_s  # 0 with problems

        target: Setpoint
        if self.estop_latched:
            mode, reason, target = Mode.ESTOP, self.estop_reason, ESTOP_SETPOINT
        elif self._override_active and override_fresh:
            mode, reason, target = Mode.MANUAL_OVERRIDE, "operator override active", self._override_target
        elif self._override_lost:
            mode, target = Mode.SAFE_FALLBACK, self._safe()
            reason = "manual_override stale while active: holding the safe setpoint"
        elif problems:
            mode, target = Mode.SAFE_FALLBACK, self._safe()
            reason = "; ".join(f"{n} {why}" for n, why in sorted(problems.items()))
        elif self.mode != Mode.AUTO and healthy_s < p.healthy_window_s:
            mode, target = Mode.SAFE_FALLBACK, self._safe()
            reason = (f"recovering: inputs healthy for {healthy_s:.2f} of "
                      f"{p.healthy_window_s:g} s")
        else:
            mode, reason = Mode.AUTO, "following the plan"
            target = self._target if self._target is not None else self._auto_default()

        previous = self.mode
        changed = mode != previous
        if changed:
            self.mode = mode
            self.mode_since_s = now_s
        self.reason = reason

        if mode == Mode.ESTOP:
            self._output = ESTOP_SETPOINT
            self._held = ESTOP_SETPOINT
        else:
            self._held = self._deadbanded(target) if mode == Mode.AUTO and not changed else target
            self._output = self._limited(self._held, dt_s)
        return Command(mode, self._output, self._plan_id if mode == Mode.AUTO else "", reason, changed, previous)

    def hold_safe(self, now_s: float, reason: str) -> Command:
        """The bridge stops commanding (deactivation): jump to the safe setpoint, or stay stopped in ESTOP.

        The jump skips the slew limits on purpose: nothing will follow this command, so the last word must
        be the safe one; the vehicle side owns ramping when its command stream ends.
        """
        previous = self.mode
        mode = Mode.ESTOP if self.estop_latched else Mode.SAFE_FALLBACK
        self._output = ESTOP_SETPOINT if mode == Mode.ESTOP else self._clamped(self._safe())
        self._held = self._output
        self._healthy_since_s = None
        self._last_step_s = max(self._last_step_s, _finite_or(now_s, self._last_step_s))
        if mode != previous:
            self.mode, self.mode_since_s = mode, self._last_step_s
        self.reason = reason
        return Command(mode, self._output, "", reason, mode != previous, previous)

    def _clamped(self, target: Setpoint) -> Setpoint:
        p = self.params
        return Setpoint(_clamp(target.speed_limit_mps, 0.0, p.speed_limit_max_mps),
                        _clamp(target.engine_load_limit_pct, 0.0, p.engine_load_max_pct),
                        _clamp(target.power_setpoint_kw, p.power_min_kw, p.power_max_kw))

    def _auto_default(self) -> Setpoint:
        p = self.params
        return Setpoint(p.cruise_speed_limit_mps, p.engine_load_limit_pct, p.default_power_kw)

    def _deadbanded(self, target: Setpoint) -> Setpoint:
        p = self.params
        held = self._held
        bands = (p.speed_deadband_mps, p.load_deadband_pct, p.power_deadband_kw)
        return Setpoint(*(
            new if abs(new - old) > band else old
            for new, old, band in zip(target.as_tuple(), held.as_tuple(), bands, strict=True)
        ))

    def _limited(self, target: Setpoint, dt_s: float) -> Setpoint:
        p = self.params
        bounds = ((0.0, p.speed_limit_max_mps), (0.0, p.engine_load_max_pct), (p.power_min_kw, p.power_max_kw))
        slews = (p.speed_slew_mps_per_s, p.load_slew_pct_per_s, p.power_slew_kw_per_s)
        out = []
        channels = zip(target.as_tuple(), self._output.as_tuple(), bounds, slews, strict=True)
        for goal, prev, (low, high), slew in channels:
            goal = _clamp(goal, low, high)
            step = slew * dt_s
            value = _clamp(prev + _clamp(goal - prev, -step, step), low, high)
            out.append(value)
        return Setpoint(*out)

    @property
    def output(self) -> Setpoint:
        """The last commanded setpoint."""
        return self._output
