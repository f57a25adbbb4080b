"""Read CVRP / VRPTW benchmark instances (VRPLIB or Solomon format) into a :class:`RoutingProblem`.

Parsing is the ``vrplib`` package's; this module only maps its dictionary onto the routing core:
EUC_2D distances rounded to the nearest integer as TSPLIB specifies, explicit matrices as given, the fleet
from the ``-kN`` name suffix (or VEHICLES), time = distance (unit speed) for time windows, as Solomon's
instances define; the best known cost from a sibling ``bks.json``, the COMMENT line or a ``.sol`` file.
Library errors become :class:`SolverError` with the file named.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np

from carbon_ai_nodes.common.errors import SolverError
from carbon_ai_nodes.common.user_files import read_text
from carbon_ai_nodes.planning.routing_model import RoutingProblem, Stop, Vehicle


@dataclasses.dataclass(frozen=True)
class VrplibInstance:
    """A parsed instance: the problem, its name, the best known cost (NaN if unknown), the file's node ids."""

    name: str
    problem: RoutingProblem
    best_known_cost: float
    node_ids: list[int]


def best_known_cost(path: Path, comment: str, name: str = "") -> float:
    """The instance's entry in a sibling ``bks.json`` ({name: cost}), else the optimal/best value in the
    COMMENT line, else the ``Cost`` of a sibling ``.sol`` file, else NaN.

    ``bks.json`` comes first because published COMMENT values can be stale (older upper bounds); a gap
    measured against a stale, higher bound would flatter the solver.
    """
    table = path.parent / "bks.json"
    if table.is_file():
        try:
            value = json.loads(table.read_text()).get(name or path.stem)
        except (OSError, ValueError, AttributeError):  # a broken table only loses the reference value
            value = None
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    m = re.search(r"(?:optimal|best)\s*(?:value)?\s*[:=]?\s*([0-9]+(?:\.[0-9]+)?)", comment or "", re.I)
    if m:
        return float(m.group(1))
    sol = path.with_suffix(".sol")
    if sol.is_file():
        try:
            import vrplib

            return float(vrplib.read_solution(str(sol))["cost"])
        except Exception:  # noqa: BLE001 - a bad .sol only loses the reference value
            return math.nan
    return math.nan


def read_instance(path: str | Path, objective: str = "distance", extra_vehicles: int = 2) -> VrplibInstance:
    """Parse ``path`` (``.vrp`` VRPLIB, ``.txt`` Solomon); clear SolverError on anything malformed."""
    import vrplib

    path = Path(path)
    if not path.is_file():
        raise SolverError(f"{path}: no such file")
    read_text(path, "VRPLIB instance")  # a one-line error for a binary file (vrplib would raise UnicodeDecodeError)
    fmt = "solomon" if path.suffix.lower() == ".txt" else "vrplib"
    try:
        data = vrplib.read_instance(str(path), instance_format=fmt, compute_edge_weights=True)
    except Exception as exc:
        raise SolverError(f"{path}: not a valid {fmt.upper()} instance ({type(exc).__name__}: {exc})") from exc
    try:
        weights = np.asarray(data["edge_weight"], dtype=float)
        n = weights.shape[0]
        demand = np.asarray(data.get("demand", np.zeros(n)), dtype=float).reshape(-1)
        capacity = float(np.max(np.atleast_1d(data.get("capacity", math.inf))))
        depots = [int(d) for d in np.atleast_1d(data.get("depot", [0]))]
    except (KeyError, TypeError, ValueError) as exc:
        raise SolverError(f"{path}: missing or malformed section ({exc})") from exc
    # A file cut short still parses: the sections it lost default to nothing (fewer nodes, zero demands).
    dimension = data.get("dimension")
    if dimension is not None and int(dimension) != n:
        raise SolverError(f"{path}: DIMENSION is {int(dimension)} but {n} nodes were read (is the file cut short?)")
    if "CVRP" in str(data.get("type", "")).upper() and "demand" not in data:
        raise SolverError(f"{path}: a CVRP instance needs a DEMAND_SECTION (is the file cut short?)")
    if weights.ndim != 2 or weights.shape != (n, n) or len(demand) != n:
        raise SolverError(f"{path}: DIMENSION, EDGE_WEIGHT and DEMAND sizes disagree")
    if not np.isfinite(weights).all() or not np.isfinite(demand).all():
        raise SolverError(f"{path}: non-numeric or infinite distances or demands")
    if str(data.get("edge_weight_type", "")).upper() == "EUC_2D" or fmt == "solomon":
        # TSPLIB's nint() for EUC_2D; Solomon instances are conventionally reported unrounded.
        if fmt == "vrplib":
            weights = np.floor(weights + 0.5)
    coords = np.asarray(data.get("node_coord", np.zeros((n, 2))), dtype=float)
    windows = np.asarray(data.get("time_window", [[0.0, math.inf]] * n), dtype=float)
    service = np.asarray(data.get("service_time", np.zeros(n)), dtype=float).reshape(-1)
    if service.size == 1:
        service = np.full(n, float(service[0]))
    name = str(data.get("name", path.stem))
    stops = []
    for i in range(n):
        is_depot = i in depots
        stops.append(Stop(
            stop_id=str(i + 1), x_m=float(coords[i][0]), y_m=float(coords[i][1]),
            # CVRP demands are deliveries from the depot: the vehicle carries them from the start.
            demand_kg=0.0 if is_depot else -float(demand[i]),
            service_s=0.0 if is_depot else float(service[i]),
            window_open_s=float(windows[i][0]), window_close_s=float(windows[i][1]), is_depot=is_depot,
        ))
    m = re.search(r"-k(\d+)", name)
    fleet = int(data.get("vehicles", m.group(1) if m else 0) or 0)
    lower = int(math.ceil(float(demand.sum()) / capacity)) if math.isfinite(capacity) and capacity > 0 else 1
    n_veh = max(fleet, lower, 1) + extra_vehicles if fmt == "vrplib" else max(fleet, lower, 1)
    depot_id = str(depots[0] + 1)
    vehicles = tuple(Vehicle(f"v{k + 1}", capacity, depot_id, depot_id, cruise_speed_mps=1.0)
                     for k in range(n_veh))
    problem = RoutingProblem(tuple(stops), vehicles, objective=objective, distance_m=weights)
    return VrplibInstance(name, problem, best_known_cost(path, str(data.get("comment", "")), name), list(range(n)))
