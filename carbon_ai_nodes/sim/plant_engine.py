"""The plant's engine, live (pure; pyyaml + numpy, no FASTSim import): fuel rate from a FASTSim vehicle file's
fuel converter, for the simulator's ``engine/telemetry`` and ``sim/true_emission``.

The simulator used to take its fuel from ``emission_model.physics_rates``, the model the optimiser and the
estimator use, so the demo graded itself. Here the fuel comes from the plant file (NREL's numbers, not ours):

- efficiency vs output-power fraction (``fc.eff_interp_from_pwr_out``), linear, as FASTSim interpolates it;
- rated power: the *vehicle's* (its profile's ``rated_power_kw``); the file's map is per power fraction, so a
  plant engine of another size keeps its curve's shape (FASTSim scales engines the same way), and its idle fuel
  and auxiliary load scale with the rated power;
- output power = wheel power / the file's transmission efficiency + auxiliary load; fuel power = output /
  efficiency, never below the file's idle fuel power while the engine runs (FASTSim's rule);
- fuel-cut policy (stated): with the file's decel fuel cut-off on (or ``fuel_cut: true`` in the plant spec), no
  fuel while the wheels drive the engine (wheel power <= 0) at or above the file's minimum cut-off speed and
  decelerating at least as hard as its minimum cut-off deceleration; with a start-stop controller in the file,
  no fuel while stopped; otherwise the engine idles with its auxiliaries.

Fuel energy is converted to litres of the *vehicle's* fuel (its telemetry reads in its own fuel) with the
emission model's LHV and CO2 factors. A transient engine (turbo lag, warm-up) is not modelled; FASTSim's own
run over a recorded trace (sim/plant.py) is the reference these rates are checked against (test_plant_engine).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from carbon_ai_nodes.common.errors import ConfigError

STOPPED_MPS = 0.05  # FASTSim's stopped-speed threshold


@dataclasses.dataclass(frozen=True)
class PlantEngine:
    """A fuel converter from a FASTSim file, sized to ``rated_power_w`` (W). Rates in W, L/h, g/s."""

    name: str
    rated_power_w: float
    frac: np.ndarray  # output power / rated, increasing from 0 to 1
    eff: np.ndarray  # brake efficiency at each fraction
    idle_fuel_w: float
    aux_w: float
    transmission_eff: float
    fuel_cut: bool
    fuel_cut_min_speed_mps: float
    fuel_cut_max_accel_mps2: float  # the file's minimum DFCO deceleration, as a (negative) acceleration
    start_stop: bool
    lhv_j_per_l: float
    co2_g_per_l: float

    @classmethod
    def from_file(cls, path: str | Path, rated_power_kw: float, fuel: str, fuel_cut: bool | None = None) -> PlantEngine:
        """Read the fuel converter of FASTSim 3 file ``path`` (YAML), sized to ``rated_power_kw`` (kW), burning
        ``fuel`` (the vehicle's: diesel, gasoline, cng); ``fuel_cut`` overrides the file's DFCO (None = keep)."""
        import yaml

        from carbon_ai_nodes.carbon.emission_model import FUEL_CO2_G_PER_L, FUEL_LHV_MJ_PER_L

        where = f"plant {path}"
        if fuel not in FUEL_LHV_MJ_PER_L:
            raise ConfigError(f"{where}: fuel={fuel!r} has no engine; known: {', '.join(FUEL_LHV_MJ_PER_L)}")
        if not (math.isfinite(rated_power_kw) and rated_power_kw > 0):
            raise ConfigError(f"{where}: rated_power_kw={rated_power_kw}: must be > 0")
        try:
            data = yaml.safe_load(Path(path).read_text())
            conv = data["pt_type"]["Conv"]
            fc = conv["fc"]
            interp = fc["eff_interp_from_pwr_out"]["data"]
            frac, eff = _array(interp["grid"][0]), _array(interp["values"])
            file_rated_w = float(fc["pwr_out_max_watts"])
            idle_w = float(fc.get("pwr_idle_fuel_watts") or 0.0)
            aux_w = float(data.get("pwr_aux_base_watts") or 0.0)
            trans = conv.get("transmission", {}).get("eff_interp", 1.0)
            trans_eff = float(trans if not isinstance(trans, Mapping) else _array(trans["data"]["values"]).max())
            dfco = conv.get("dfco_cntrl") or {}
            control = conv.get("pt_cntrl")
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: not a FASTSim 3 conventional vehicle file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if len(frac) < 2 or len(frac) != len(eff) or np.any(np.diff(frac) <= 0) or frac[0] != 0 or frac[-1] < 1:
            raise ConfigError(f"{where}: efficiency grid must rise from 0 to >= 1 with one value per point")
        if not (np.all((eff >= 0) & (eff < 1)) and eff.max() > 0 and file_rated_w > 0 and 0 < trans_eff <= 1):
            raise ConfigError(f"{where}: efficiencies must lie in [0, 1), rated power and transmission > 0")
        scale = rated_power_kw * 1000.0 / file_rated_w
        return cls(str(data.get("name") or Path(path).stem), rated_power_kw * 1000.0, frac, eff, idle_w * scale,
                   aux_w * scale, trans_eff, bool(dfco.get("dfco_enabled", False)) if fuel_cut is None else fuel_cut,
                   float(dfco.get("minimum_dfco_speed_meters_per_second") or 0.0),
                   float(dfco.get("minimum_dfco_deceleration_meters_per_second_squared") or 0.0),
                   isinstance(control, Mapping) and "StartStop" in control,
                   FUEL_LHV_MJ_PER_L[fuel] * 1e6, FUEL_CO2_G_PER_L[fuel])

    def output_power_w(self, wheel_power_w: float) -> float:
        """The engine's output (brake) power, W, for a wheel power (W): through the transmission, plus the
        auxiliaries, at most the rated power (what J1939's engine load, SPN 92, is a share of)."""
        return min(max(wheel_power_w, 0.0) / self.transmission_eff + self.aux_w, self.rated_power_w)

    def fuel_power_w(self, wheel_power_w: float, speed_mps: float, accel_mps2: float = 0.0) -> float:
        """Fuel power (W, LHV) for a wheel power (W; negative = braking or coasting) at ``speed_mps`` (m/s) and
        ``accel_mps2`` (m/s^2)."""
        if speed_mps < STOPPED_MPS and self.start_stop:
            return 0.0
        if wheel_power_w <= 0.0 and self.fuel_cut and speed_mps >= max(self.fuel_cut_min_speed_mps, STOPPED_MPS) \
                and accel_mps2 <= self.fuel_cut_max_accel_mps2:
            return 0.0
        out_w = self.output_power_w(wheel_power_w)
        eff = float(np.interp(out_w / self.rated_power_w, self.frac, self.eff))
        return max(out_w / eff if eff > 0 else 0.0, self.idle_fuel_w)

    def rates(self, wheel_power_w: float, speed_mps: float, accel_mps2: float = 0.0) -> tuple[float, float]:
        """CO2 (g/s) and fuel (L/h) of the vehicle's fuel, at a wheel power (W), speed (m/s), acceleration."""
        fuel_lph = self.fuel_power_w(wheel_power_w, speed_mps, accel_mps2) / self.lhv_j_per_l * 3600.0
        return fuel_lph * self.co2_g_per_l / 3600.0, fuel_lph

    def describe(self) -> str:
        """One line for logs and reports: what the engine is and its fuel-cut policy."""
        return (f"{self.name} engine map at {self.rated_power_w / 1000:.0f} kW (peak efficiency "
                f"{self.eff.max():.2f}, aux {self.aux_w / 1000:.1f} kW, idle fuel {self.idle_fuel_w / 1000:.1f} kW, "
                f"fuel cut {'on' if self.fuel_cut else 'off'}{', start-stop' if self.start_stop else ''})")


def _array(value: Any) -> np.ndarray:
    """A FASTSim YAML array: a plain list or the ndarray form ``{v: 1, dim: [n], data: [...]}``."""
    if isinstance(value, Mapping):
        value = value["data"]
    return np.asarray(value, float).ravel()


def engine_for(spec: Any, profile: Any) -> PlantEngine | None:
    """The live engine of a vehicle: its plant's (a PlantSpec with a FASTSim file) sized to the profile's rated
    power and burning its fuel; None for a model-only plant, no plant, or an electric vehicle or a machine."""
    if spec is None or spec.model_only or profile.fuel == "electric" or getattr(profile, "kind", "road") != "road":
        return None
    return PlantEngine.from_file(spec.fastsim_file, profile.rated_power_kw, profile.fuel, spec.fuel_cut)
