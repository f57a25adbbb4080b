"""Vehicle and machine profiles: the road-load description (or a power/fuel map) the emission model runs on.

A profile file is YAML holding one profile (a mapping) or a list of them. The minimal road-vehicle schema::

    name: example sedan
    mass_kg: 1814.4            # test mass, including equivalent rotating inertia
    road_load:                 # coast-down form F = a + b*v + c*v^2 (N; v in m/s)
      a_n: 182.1
      b_n_per_mps: 0.168
      c_n_per_mps2: 0.6013
    fuel: gasoline             # gasoline | diesel | cng | electric
    rated_power_kw: 375
    displacement_l: 4.0

Optional keys: ``top_gear_rpm_per_mps`` (engine rpm per m/s of road speed in top gear: the EPA "N/V"
ratio in rpm/mph times 2.237; sets the modelled engine speed), ``cylinders`` (number of engine cylinders:
with the displacement it gives the cylinder size, which sets the friction per litre), ``transmission``
(``automatic`` | ``manual`` | ``automated_manual`` | ``cvt``; a ``manual``, shifted at fixed road speeds,
keeps the engine faster at low speed; the others and no value use the shared gear model), ``idle_fuel_lph``,
``payload_capacity_kg``, ``accessory_power_kw``, ``drivetrain_efficiency``, ``fuel_cut`` (bool), ``kind``
(``road`` | ``machine``), ``fuel_map`` (``power_kw``/``fuel_lph`` lists, for non-road machinery such as
excavators, kilns, compressors), ``grid_gco2_per_kwh`` (electric), ``description``. Errors name the file,
the profile and the key: ``van.yaml[0].mass_kg=-3: must be > 0``. A road vehicle's coast-down curve must give
a force > 0 over 0-40 m/s (a negative B alone is a normal fit); masses, powers and displacements must lie in
PHYSICAL_RANGE (wide enough for mining haul trucks).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.common.user_files import load_yaml

FUELS = ("gasoline", "diesel", "cng", "electric")
# Bounds that catch unit slips (grams for kilograms, W for kW) while taking every real machine: a loaded
# 450 t-class mining haul truck weighs about 800 t and carries about 4 MW and 95 L (Cummins QSK95); the
# largest mobile engines stay under 200 L; a scooter or a small robot starts at about 50 kg and 0.1 kW.
PHYSICAL_RANGE = {
    "mass_kg": (50.0, 1.5e6),
    "rated_power_kw": (0.1, 50_000.0),
    "displacement_l": (0.0, 200.0),
    "payload_capacity_kg": (0.0, 1.5e6),
}
PHYSICAL_UNIT = {"mass_kg": "kg", "rated_power_kw": "kW", "displacement_l": "L", "payload_capacity_kg": "kg"}
# The coast-down curve must resist motion at every speed a road vehicle drives; a negative B coefficient is
# normal (23 % of EPA 2022 rows), so the curve is checked, not each coefficient's sign.
ROAD_LOAD_CHECK_MPS = (0.0, 40.0)
TRANSMISSIONS = ("automatic", "manual", "automated_manual", "cvt")
KINDS = ("road", "machine")


@dataclasses.dataclass(frozen=True)
class VehicleProfile:
    """One vehicle or machine. Forces in N, speeds in m/s, masses in kg, powers in kW.

    Road vehicles use the coast-down road load ``F = a_n + b_n_per_mps*v + c_n_per_mps2*v^2``; machines
    (``kind == "machine"``) use ``fuel_map`` (shaft power -> fuel rate) and ``engine_load_pct`` instead.
    """

    name: str
    mass_kg: float
    a_n: float
    b_n_per_mps: float
    c_n_per_mps2: float
    fuel: str
    rated_power_kw: float
    displacement_l: float
    idle_fuel_lph: float | None = None
    top_gear_rpm_per_mps: float | None = None
    cylinders: int | None = None
    transmission: str | None = None
    payload_capacity_kg: float = 0.0
    accessory_power_kw: float | None = None
    drivetrain_efficiency: float = 0.90
    fuel_cut: bool = True
    kind: str = "road"
    fuel_map_power_kw: tuple[float, ...] = ()
    fuel_map_fuel_lph: tuple[float, ...] = ()
    grid_gco2_per_kwh: float = 400.0
    description: str = ""

    def __post_init__(self) -> None:
        def bad(key: str, reason: str) -> ConfigError:
            return ConfigError(f"{self.name or '?'}.{key}={getattr(self, key)!r}: {reason}")

        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name={self.name!r}: a non-empty string is required")
        for key in ("mass_kg", "rated_power_kw"):
            v = getattr(self, key)
            if not _is_num(v) or not v > 0:
                raise bad(key, "must be a number > 0")
        for key in ("a_n", "b_n_per_mps", "c_n_per_mps2"):
            if not _is_num(getattr(self, key)):
                raise bad(key, "must be a finite number")
        for key in ("displacement_l", "payload_capacity_kg", "grid_gco2_per_kwh"):
            v = getattr(self, key)
            if not _is_num(v) or v < 0:
                raise bad(key, "must be a number >= 0")
        for key, (low, high) in PHYSICAL_RANGE.items():
            v = getattr(self, key)
            if key == "mass_kg" and self.kind == "machine":
                continue  # a machine's mass is not used (it runs on its fuel map)
            if not low <= v <= high:
                raise bad(key, f"outside the physical range [{low:g}, {high:g}] {PHYSICAL_UNIT[key]}")
        if self.kind == "road":
            _check_road_load(self)
        for key in ("idle_fuel_lph", "accessory_power_kw"):
            v = getattr(self, key)
            if v is not None and (not _is_num(v) or v < 0):
                raise bad(key, "must be a number >= 0")
        v = self.top_gear_rpm_per_mps
        if v is not None and (not _is_num(v) or not 5.0 <= v <= 500.0):
            raise bad("top_gear_rpm_per_mps", "must be a number in [5, 500] rpm per m/s")
        c = self.cylinders
        if c is not None and (not isinstance(c, int) or isinstance(c, bool) or not 1 <= c <= 24):
            raise bad("cylinders", "must be a whole number in [1, 24]")
        if self.transmission is not None and self.transmission not in TRANSMISSIONS:
            raise bad("transmission", "must be one of " + ", ".join(TRANSMISSIONS))
        if not _is_num(self.drivetrain_efficiency) or not 0.3 <= self.drivetrain_efficiency <= 1.0:
            raise bad("drivetrain_efficiency", "must be in [0.3, 1.0]")
        if self.fuel not in FUELS:
            raise bad("fuel", "must be one of " + ", ".join(FUELS))
        if self.kind not in KINDS:
            raise bad("kind", "must be one of " + ", ".join(KINDS))
        if self.fuel != "electric" and self.kind == "road" and not self.displacement_l > 0:
            raise bad("displacement_l", "must be > 0 for a combustion engine")
        if not isinstance(self.fuel_cut, bool):
            raise bad("fuel_cut", "expected true or false")
        p, f = self.fuel_map_power_kw, self.fuel_map_fuel_lph
        if len(p) != len(f):
            raise ConfigError(f"{self.name}.fuel_map: power_kw and fuel_lph must have the same length")
        if self.kind == "machine" and not self.is_electric and len(p) < 2:
            raise ConfigError(f"{self.name}.fuel_map: a machine needs at least two (power_kw, fuel_lph) points")
        if p and (any(not _is_num(x) for x in p + f) or any(b <= a for a, b in zip(p, p[1:], strict=False))
                  or any(x < 0 for x in f)):
            raise ConfigError(f"{self.name}.fuel_map: power_kw must increase strictly and fuel_lph be >= 0")

    @property
    def is_electric(self) -> bool:
        """True for battery-electric vehicles and grid-powered machines."""
        return self.fuel == "electric"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "") -> VehicleProfile:
        """Build from the YAML schema above; ``where`` prefixes error messages (file and index)."""
        prefix = f"{where}." if where else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where or 'profile'}: expected a mapping of keys, got {type(data).__name__}")
        known = {"name", "mass_kg", "road_load", "fuel", "rated_power_kw", "displacement_l", "idle_fuel_lph",
                 "top_gear_rpm_per_mps", "cylinders", "transmission", "payload_capacity_kg",
                 "accessory_power_kw", "drivetrain_efficiency", "fuel_cut", "kind", "fuel_map", "grid_gco2_per_kwh",
                 "description"}
        for key in data:
            if key not in known:
                raise ConfigError(f"{prefix}{key}: unknown key; known: {', '.join(sorted(known))}")
        kind = data.get("kind", "road")
        for key in ("name", "mass_kg", "fuel", "rated_power_kw"):
            if key not in data:
                raise ConfigError(f"{prefix}{key}: required key missing")
        road = data.get("road_load")
        if road is None:
            if kind != "machine":
                raise ConfigError(f"{prefix}road_load: required key missing (a_n, b_n_per_mps, c_n_per_mps2)")
            road = {"a_n": 0.0, "b_n_per_mps": 0.0, "c_n_per_mps2": 0.0}
        if not isinstance(road, Mapping):
            raise ConfigError(f"{prefix}road_load: expected a mapping with a_n, b_n_per_mps, c_n_per_mps2")
        for key in ("a_n", "b_n_per_mps", "c_n_per_mps2"):
            if key not in road:
                raise ConfigError(f"{prefix}road_load.{key}: required key missing")
        extra = set(road) - {"a_n", "b_n_per_mps", "c_n_per_mps2"}
        if extra:
            raise ConfigError(f"{prefix}road_load.{sorted(extra)[0]}: unknown key")
        fmap = data.get("fuel_map") or {}
        if not isinstance(fmap, Mapping):
            raise ConfigError(f"{prefix}fuel_map: expected a mapping with power_kw and fuel_lph lists")
        try:
            return cls(
                name=data["name"], mass_kg=data["mass_kg"], a_n=road["a_n"], b_n_per_mps=road["b_n_per_mps"],
                c_n_per_mps2=road["c_n_per_mps2"], fuel=data["fuel"], rated_power_kw=data["rated_power_kw"],
                displacement_l=data.get("displacement_l", 0.0), idle_fuel_lph=data.get("idle_fuel_lph"),
                top_gear_rpm_per_mps=data.get("top_gear_rpm_per_mps"), cylinders=data.get("cylinders"),
                transmission=data.get("transmission"),
                payload_capacity_kg=data.get("payload_capacity_kg", 0.0),
                accessory_power_kw=data.get("accessory_power_kw"),
                drivetrain_efficiency=data.get("drivetrain_efficiency", 0.90),
                fuel_cut=data.get("fuel_cut", True), kind=kind,
                fuel_map_power_kw=tuple(fmap.get("power_kw", ())), fuel_map_fuel_lph=tuple(fmap.get("fuel_lph", ())),
                grid_gco2_per_kwh=data.get("grid_gco2_per_kwh", 400.0),
                description=data.get("description", ""),
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
        except TypeError as exc:
            raise ConfigError(f"{where or 'profile'}: {exc}") from None


def road_load_minimum(a_n: float, b_n_per_mps: float, c_n_per_mps2: float,
                      speed_range_mps: tuple[float, float] = ROAD_LOAD_CHECK_MPS) -> tuple[float, float]:
    """The smallest coast-down force ``a + b v + c v^2`` (N) over ``speed_range_mps`` and the speed (m/s) where
    it occurs: an end of the range, or the vertex of an upward parabola inside it."""
    lo, hi = speed_range_mps
    candidates = [lo, hi]
    if c_n_per_mps2 > 0 and lo < -b_n_per_mps / (2.0 * c_n_per_mps2) < hi:
        candidates.append(-b_n_per_mps / (2.0 * c_n_per_mps2))
    return min((a_n + b_n_per_mps * v + c_n_per_mps2 * v * v, v) for v in candidates)


def _check_road_load(p: VehicleProfile) -> None:
    force_n, speed_mps = road_load_minimum(p.a_n, p.b_n_per_mps, p.c_n_per_mps2)
    if not force_n > 0:
        lo, hi = ROAD_LOAD_CHECK_MPS
        raise ConfigError(
            f"{p.name}.road_load (a_n={p.a_n:g}, b_n_per_mps={p.b_n_per_mps:g}, c_n_per_mps2={p.c_n_per_mps2:g}): "
            f"the force a + b*v + c*v^2 is {force_n:.4g} N at {speed_mps:.3g} m/s; it must stay > 0 over "
            f"{lo:g}-{hi:g} m/s (check the coefficients' units: N, N/(m/s), N/(m/s)^2)")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_profiles(path: str | Path) -> list[VehicleProfile]:
    """Read a YAML file holding one profile or a list of profiles; raises ConfigError naming file and key."""
    data = load_yaml(path, "vehicle profile")
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ConfigError(f"{path}: no vehicle profile in the file")
    multi = isinstance(data, list)
    return [VehicleProfile.from_mapping(d, f"{path}[{i}]" if multi else str(path)) for i, d in enumerate(items)]


def load_profile(path: str | Path) -> VehicleProfile:
    """The single profile of a file (the first one if it holds a list)."""
    return load_profiles(path)[0]
