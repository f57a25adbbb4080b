"""Grid carbon-intensity forecasts: load, validate and sample a replayable forecast table."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar

import numpy as np

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.common.params import ParamSet, param
from carbon_ai_nodes.common.user_files import read_csv


@dataclasses.dataclass(frozen=True)
class GridForecast:
    """Piecewise-constant intensity: ``gco2_per_kwh[i]`` holds from ``offset_s[i]`` to ``offset_s[i+1]``."""

    offset_s: np.ndarray
    gco2_per_kwh: np.ndarray

    def __post_init__(self) -> None:
        if len(self.offset_s) == 0 or len(self.offset_s) != len(self.gco2_per_kwh):
            raise ConfigError("grid forecast: needs at least one row, and one value per time")
        if self.offset_s[0] != 0.0:
            raise ConfigError(f"grid forecast: first offset_s={self.offset_s[0]}: must be 0")
        if np.any(np.diff(self.offset_s) <= 0):
            raise ConfigError("grid forecast: offset_s must strictly increase")
        if not np.all(np.isfinite(self.gco2_per_kwh)) or np.any(self.gco2_per_kwh < 0):
            raise ConfigError("grid forecast: gco2_per_kwh must be finite and >= 0")

    @property
    def period_s(self) -> float:
        """Length of one replay loop: the last offset plus the last step."""
        last_step = float(self.offset_s[-1] - self.offset_s[-2]) if len(self.offset_s) > 1 else 3600.0
        return float(self.offset_s[-1]) + last_step

    def at(self, t_s: float, loop: bool = True) -> float:
        """Intensity (gCO2/kWh) at ``t_s`` seconds from the start; looping or holding the last value."""
        if loop:
            t_s = math.fmod(t_s, self.period_s)
        index = int(np.searchsorted(self.offset_s, max(t_s, 0.0), side="right")) - 1
        return float(self.gco2_per_kwh[max(index, 0)])

    def window(self, start_s: float, step_s: float, count: int, loop: bool = True) -> list[float]:
        """``count`` values from ``start_s`` every ``step_s`` seconds."""
        return [self.at(start_s + i * step_s, loop) for i in range(count)]

    @classmethod
    def from_csv(cls, path: str | Path) -> GridForecast:
        """Read a CSV with a header ``offset_s,gco2_per_kwh``; errors name the file and line."""
        path = Path(path)
        rows = read_csv(path, "grid forecast", ("offset_s", "gco2_per_kwh"))
        offsets, values = [], []
        for line, row in enumerate(rows, start=2):
            try:
                offsets.append(float(row["offset_s"]))
                values.append(float(row["gco2_per_kwh"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"grid forecast {path}:{line}: expected numeric columns offset_s,gco2_per_kwh"
                ) from exc
        try:
            return cls(np.array(offsets), np.array(values))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class GridPublisherParams(ParamSet):
    """Parameters of the grid_publisher node (replays a forecast file as GridIntensity)."""

    SECTION: ClassVar[str] = "grid_publisher"
    forecast_file: str = param("", "CSV with columns offset_s,gco2_per_kwh (required)")
    region: str = param("example", "Grid region code copied into every message")
    period_s: float = param(1.0, "Publish period", unit="s", gt=0.0, max=3600.0)
    time_scale: float = param(1.0, "Forecast seconds replayed per clock second (fast-forward for demos)",
                              gt=0.0, max=1e6)
    horizon_s: float = param(86400.0, "Length of the forecast carried in each message", unit="s",
                             gt=0.0, max=7 * 86400.0)
    step_s: float = param(3600.0, "Spacing of forecast values", unit="s", gt=0.0)
    loop: bool = param(True, "Loop the file; false holds its last value")

    def check(self) -> None:
        """The file must be named, and the horizon must hold at least one step."""
        if not self.forecast_file:
            self.fail("forecast_file", "required: set it to a CSV such as config/grid/forecast_example.csv")
        if self.step_s > self.horizon_s:
            self.fail("step_s", f"must be <= horizon_s ({self.horizon_s})")
