"""Grid forecast core: loading, validation with file:line errors, sampling and looping."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

from carbon_ai_nodes.common.errors import ConfigError
from carbon_ai_nodes.planning.grid_forecast import GridForecast, GridPublisherParams


def test_example_file_loads_and_samples_piecewise_constant():
    f = GridForecast.from_csv(REPO / "config" / "grid" / "forecast_example.csv")
    assert f.period_s == 48 * 3600
    assert f.at(0.0) == f.at(3599.0) == pytest.approx(273.3)
    assert f.at(3600.0) == pytest.approx(250.0)
    assert f.at(f.period_s + 10.0) == f.at(10.0)  # loops
    assert f.at(1e9, loop=False) == f.gco2_per_kwh[-1]
    assert f.window(0.0, 3600.0, 3) == [f.at(0.0), f.at(3600.0), f.at(7200.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("offset_s,gco2_per_kwh\n0,100\n3600,abc\n", ":3: expected numeric columns"),
        ("time,value\n0,100\n", "needs columns offset_s,gco2_per_kwh; found time,value"),
        ("offset_s,gco2_per_kwh\n0,100\n0,200\n", "offset_s must strictly increase"),
        ("offset_s,gco2_per_kwh\n10,100\n", "first offset_s=10.0: must be 0"),
        ("offset_s,gco2_per_kwh\n0,-5\n", "must be finite and >= 0"),
        ("offset_s,gco2_per_kwh\n", "needs at least one row"),
    ],
)
def test_bad_files_are_refused_with_location(tmp_path, text, message):
    path = tmp_path / "f.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        GridForecast.from_csv(path)
    assert str(path) in str(info.value)


def test_params_require_a_file_and_a_consistent_step():
    with pytest.raises(ConfigError, match="grid_publisher.forecast_file='': required"):
        GridPublisherParams()
    with pytest.raises(ConfigError, match="step_s=7200.0: must be <= horizon_s"):
        GridPublisherParams(forecast_file="x.csv", horizon_s=3600.0, step_s=7200.0)
    assert np.isclose(GridPublisherParams(forecast_file="x.csv").step_s, 3600.0)
