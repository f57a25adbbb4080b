"""Scenario files: the one source of truth for a deployment's node graph, parameters, vehicles and routes.

A scenario (``config/scenarios/<name>.yaml``) holds::

    name: haul_truck_fleet
    description: ...
    origin: {lat_deg: -22.7, lon_deg: 117.8, alt_m: 600.0}   # local ENU datum of the routes
    nodes:                     # node set, in dependency order (the lifecycle manager configures in this order)
      grid_publisher: {scope: fleet, params: {...}}
      sim: {scope: vehicle, sim_only: true, params: {...}}
      fusion: {params: {...}, remaps: {...}}
      ...
    baseline_params:           # parameter overrides for the "carbon optimisation off" run (demo, A/B tests)
      planner: {...}
    vehicles:
      - id: truck1
        profile: {...}         # VehicleProfile schema (common/vehicle_profile.py)
        initial_payload_kg: 0
        cruise_speed_mps: 11
        route: [{east_m: 0, north_m: 0, up_m: 0, payload_kg: 220000}, ...]
        plant: {fastsim_file: $(config)/plants/Line_Haul_Conv.yaml, fuel_cut: true}   # the independent
                               # plant that scores its CO2 (sim/plant.py, config/plants/README.md)
        params: {sim: {...}}   # per-vehicle overrides

``scope: vehicle`` nodes run once per vehicle in namespace ``/<vehicle id>``; ``scope: fleet`` nodes run once in
the root namespace. String parameter values may use ``$(config)`` (the package's config/ directory),
``$(shared)`` (../shared/data beside the repo), ``$(scenario_file)``, ``$(vehicle_id)`` and ``$(profile_file)``
(the vehicle's profile, written out by :func:`write_profiles`).

:func:`graph` expands a scenario into :class:`NodeLaunch` entries; the runner and the launch files both use it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.common.user_files import load_yaml, number
from carbon_ai_nodes.common.vehicle_profile import VehicleProfile
from carbon_ai_nodes.node_registry import NODE_ORDER
from carbon_ai_nodes.sim.plant import PlantSpec

SCOPES = ("vehicle", "fleet")


def _config_dir(checkout: Path) -> Path:
    """The package's config/: the source checkout's when there is one, else the ament share directory's.

    In a checkout (and a ``--symlink-install`` build, whose modules resolve into it) config/ sits beside the
    package; a plain ``colcon build`` copies the modules to site-packages and config/ to share/carbon_ai_nodes.
    """
    if (checkout / "config" / "scenarios").is_dir():
        return checkout / "config"
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("carbon_ai_nodes")) / "config"
    except (ImportError, LookupError):  # PackageNotFoundError is a KeyError: no ROS environment, not installed
        return checkout / "config"


CHECKOUT_DIR = Path(__file__).resolve().parents[2]
CONFIG_DIR = _config_dir(CHECKOUT_DIR)
SCENARIO_DIR = CONFIG_DIR / "scenarios"
_VAR = re.compile(r"\$\((\w+)\)")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of the scenario: executable name, scope, parameters, remappings, sim-only flag."""

    name: str
    scope: str = "vehicle"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    remaps: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sim_only: bool = False
    log_level: str = "info"


@dataclasses.dataclass(frozen=True)
class Vehicle:
    """One vehicle: id (= namespace), profile mapping, route, per-node parameter overrides."""

    id: str
    profile: Mapping[str, Any]
    route: tuple[Any, ...] = ()
    drive_cycle: str = ""
    cruise_speed_mps: float = 10.0
    initial_payload_kg: float = 0.0
    params: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    plant: PlantSpec | None = None  # None: the scenario names no independent plant for this vehicle


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A validated scenario file."""

    name: str
    path: Path
    description: str
    origin: tuple[float, float, float]
    nodes: tuple[NodeSpec, ...]
    vehicles: tuple[Vehicle, ...]
    baseline_params: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    duration_s: float = 60.0

    def vehicle(self, vehicle_id: str = "") -> Vehicle:
        """The vehicle with ``vehicle_id`` (the first one when empty); ConfigError if unknown."""
        if not vehicle_id:
            return self.vehicles[0]
        for v in self.vehicles:
            if v.id == vehicle_id:
                return v
        raise ConfigError(f"{self.path}: no vehicle {vehicle_id!r}; known: {', '.join(v.id for v in self.vehicles)}")


@dataclasses.dataclass(frozen=True)
class NodeLaunch:
    """One process to start: module name, node name, namespace, parameters and remappings."""

    module: str
    namespace: str
    params: Mapping[str, Any]
    remaps: Mapping[str, str]
    vehicle_id: str = ""
    log_level: str = "info"

    @property
    def label(self) -> str:
        """``/ns/name`` for messages."""
        return f"{self.namespace.rstrip('/')}/{self.module}"


def find_scenario(name_or_path: str) -> Path:
    """A scenario by file path or by name in config/scenarios (``haul_truck`` or ``haul_truck.yaml``)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for candidate in (SCENARIO_DIR / name_or_path, SCENARIO_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(q.stem for q in SCENARIO_DIR.glob("*.yaml")))
    raise ConfigError(f"scenario {name_or_path!r}: not a file and not in {SCENARIO_DIR}; known: {known}")


def list_scenarios() -> list[Path]:
    """Every scenario shipped in config/scenarios."""
    return sorted(SCENARIO_DIR.glob("*.yaml"))


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Read and validate a scenario; errors name the file and the key (``haul.yaml: vehicles[1].id: ...``)."""
    path = find_scenario(str(name_or_path))
    data = _mapping(load_yaml(path, "scenario"), str(path))
    known = {"name", "description", "origin", "nodes", "vehicles", "baseline_params", "duration_s"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: {key}: unknown key; known: {', '.join(sorted(known))}")
    origin = _mapping(data.get("origin"), f"{path}: origin")
    try:
        origin_t = (float(origin.get("lat_deg", 0.0)), float(origin.get("lon_deg", 0.0)),
                    float(origin.get("alt_m", 0.0)))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: origin: lat_deg, lon_deg, alt_m must be numbers") from None
    if not -90 <= origin_t[0] <= 90 or not -180 <= origin_t[1] <= 180:
        raise ConfigError(f"{path}: origin: latitude/longitude out of range")
    nodes = []
    for name, spec in _mapping(data.get("nodes"), f"{path}: nodes").items():
        where = f"{path}: nodes.{name}"
        spec = _mapping(spec, where)
        extra = set(spec) - {"scope", "params", "remaps", "sim_only", "log_level"}
        if extra:
            raise ConfigError(f"{where}.{sorted(extra)[0]}: unknown key")
        scope = spec.get("scope", "vehicle")
        if scope not in SCOPES:
            raise ConfigError(f"{where}.scope={scope!r}: must be one of {', '.join(SCOPES)}")
        log_level = str(spec.get("log_level", "info"))
        if log_level not in ("debug", "info", "warn", "error", "fatal"):
            raise ConfigError(f"{where}.log_level={log_level!r}: must be debug, info, warn, error or fatal")
        nodes.append(NodeSpec(name, scope, dict(_mapping(spec.get("params"), f"{where}.params")),
                              {str(k): str(v) for k, v in _mapping(spec.get("remaps"), f"{where}.remaps").items()},
                              bool(spec.get("sim_only", False)), log_level))
    if not nodes:
        raise ConfigError(f"{path}: nodes: at least one node is required")
    order = {n: i for i, n in enumerate(NODE_ORDER)}
    nodes.sort(key=lambda n: order.get(n.name, len(order)))
    vehicles: list[Vehicle] = []
    raw_vehicles = data.get("vehicles") or []
    if not isinstance(raw_vehicles, list) or not raw_vehicles:
        raise ConfigError(f"{path}: vehicles: a non-empty list is required")
    for i, v in enumerate(raw_vehicles):
        where = f"{path}: vehicles[{i}]"
        v = _mapping(v, where)
        extra = set(v) - {"id", "profile", "route", "drive_cycle", "cruise_speed_mps", "initial_payload_kg", "params",
                           "plant"}
        if extra:
            raise ConfigError(f"{where}.{sorted(extra)[0]}: unknown key")
        vid = v.get("id")
        if not isinstance(vid, str) or not _NAME.match(vid):
            raise ConfigError(f"{where}.id={vid!r}: must be a name like truck1 (letters, digits, _)")
        if any(o.id == vid for o in vehicles):
            raise ConfigError(f"{where}.id={vid!r}: duplicate vehicle id")
        profile = _mapping(v.get("profile"), f"{where}.profile")
        _check_profile(profile, f"{where}.profile")
        route = v.get("route") or []
        drive_cycle = str(v.get("drive_cycle") or "")
        if not route and not drive_cycle:
            raise ConfigError(f"{where}: give a route or a drive_cycle")
        cruise_speed_mps = number(v.get("cruise_speed_mps"), f"{where}.cruise_speed_mps", 10.0)
        if route:
            from carbon_ai_nodes.sim.vehicle_sim import Route

            try:
                Route.from_list(route, cruise_speed_mps)
            except ConfigError as exc:
                raise ConfigError(f"{where}.{exc}") from None
        vparams = {str(k): dict(_mapping(p, f"{where}.params.{k}"))
                   for k, p in _mapping(v.get("params"), f"{where}.params").items()}
        payload_kg = number(v.get("initial_payload_kg"), f"{where}.initial_payload_kg", 0.0)
        plant = None
        if v.get("plant") is not None:
            plant = PlantSpec.from_mapping(v["plant"], f"{where}.plant",
                                           expand=lambda p, where=where: _plant_path(p, path, f"{where}.plant"))
            plant = plant.scaled_to(profile)  # scale: true re-sizes the plant file to this vehicle
        vehicles.append(Vehicle(vid, dict(profile), tuple(route), drive_cycle, cruise_speed_mps, payload_kg,
                                vparams, plant))
    baseline = {str(k): dict(_mapping(p, f"{path}: baseline_params.{k}"))
                for k, p in _mapping(data.get("baseline_params"), f"{path}: baseline_params").items()}
    duration = number(data.get("duration_s"), f"{path}: duration_s", 60.0)
    if not duration > 0:
        raise ConfigError(f"{path}: duration_s={duration}: must be > 0")
    return Scenario(str(data.get("name") or path.stem), path, str(data.get("description", "")), origin_t,
                    tuple(nodes), tuple(vehicles), baseline, duration)


def _plant_path(value: str, scenario_path: Path, where: str) -> str:
    """A plant file path: ``$(config)``/``$(shared)`` substituted, relative paths from the scenario's folder."""
    p = Path(_substitute(value, _path_variables(), where))
    return str(p if p.is_absolute() else scenario_path.parent / p)


def _check_profile(profile: Mapping[str, Any], where: str) -> None:
    VehicleProfile.from_mapping(profile, where)


def profile_path(run_dir: Path, vehicle: Vehicle) -> Path:
    """Where :func:`write_profiles` puts a vehicle's profile."""
    return run_dir / f"{vehicle.id}_profile.yaml"


def write_profiles(scenario: Scenario, run_dir: Path) -> None:
    """Write each vehicle's profile as its own YAML file (for nodes taking a ``profile_file``)."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    for v in scenario.vehicles:
        profile_path(run_dir, v).write_text(yaml.safe_dump(dict(v.profile), sort_keys=False))


def _substitute(value: Any, variables: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in variables:
                raise ConfigError(f"{where}: unknown substitution $({m.group(1)}); known: {', '.join(variables)}")
            return variables[m.group(1)]

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(v, variables, where) for v in value]
    return value


def _path_variables() -> dict[str, str]:
    """``$(config)`` and ``$(shared)`` (../shared/data beside the checkout) for paths in scenario files."""
    return {"config": str(CONFIG_DIR), "shared": str(CHECKOUT_DIR.parent / "shared" / "data")}


def expand(value: str, scenario: Scenario | None = None) -> str:
    """Substitute ``$(config)``, ``$(shared)`` (and ``$(scenario_file)``) in a path from a scenario file."""
    variables = _path_variables()
    if scenario is not None:
        variables["scenario_file"] = str(scenario.path.resolve())
    return _substitute(value, variables, str(scenario.path) if scenario else "path")


def graph(scenario: Scenario, run_dir: Path, *, use_sim: bool = True, baseline: bool = False,
          only: tuple[str, ...] = (), sim_uplink: bool = False) -> list[NodeLaunch]:
    """Expand the scenario into the processes to start, in dependency order.

    ``use_sim`` false drops ``sim_only`` nodes (on a real vehicle); ``baseline`` applies ``baseline_params``
    (carbon optimisation off); ``only`` restricts to these node names.

    A simulated run (``use_sim`` and the scenario has a simulator) is kept apart from the vehicle's real data:
    its uplink queues live in ``run_dir/uplink/`` (never the vehicle's ``$ROS_HOME/carbon_ai`` queue, which it
    would later upload as the vehicle's own) and it has no broker (``mqtt_host: ''``) unless ``sim_uplink``.
    """
    simulated = use_sim and any(spec.sim_only for spec in scenario.nodes)
    out: list[NodeLaunch] = []
    common = {**_path_variables(), "scenario_file": str(scenario.path.resolve())}
    for spec in scenario.nodes:
        if (spec.sim_only and not use_sim) or (only and spec.name not in only):
            continue
        targets = scenario.vehicles if spec.scope == "vehicle" else (None,)
        for vehicle in targets:
            params = dict(spec.params)
            if baseline:
                params.update(scenario.baseline_params.get(spec.name, {}))
            variables = dict(common, vehicle_id="", profile_file="")
            if vehicle is not None:
                params.update(vehicle.params.get(spec.name, {}))
                variables.update(vehicle_id=vehicle.id, profile_file=str(profile_path(run_dir, vehicle)))
            params = {k: _substitute(v, variables, f"{scenario.path}: nodes.{spec.name}.params.{k}")
                      for k, v in params.items()}
            if simulated and spec.name == "uplink_bridge":
                params.update(sim_uplink_params(run_dir, vehicle.id if vehicle is not None else "fleet",
                                                sim_uplink))
            out.append(NodeLaunch(spec.name, f"/{vehicle.id}" if vehicle is not None else "", params,
                                  dict(spec.remaps), vehicle.id if vehicle is not None else "", spec.log_level))
    return out


def sim_uplink_params(run_dir: Path, asset: str, sim_uplink: bool) -> dict[str, str]:
    """The uplink_bridge parameters of a simulated run: its own queue file under ``run_dir``, no broker unless
    ``sim_uplink`` (then the configured one)."""
    params = {"queue_path": str(Path(run_dir).resolve() / "uplink" / f"uplink_{asset}.sqlite3")}
    if not sim_uplink:
        params["mqtt_host"] = ""
    return params
