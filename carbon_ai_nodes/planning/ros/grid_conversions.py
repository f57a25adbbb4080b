"""GridForecast samples -> carbon_ai_msgs/GridIntensity."""

from __future__ import annotations

from builtin_interfaces.msg import Time

from carbon_ai_msgs.msg import GridIntensity
from carbon_ai_nodes.ros.stamps import to_time


def grid_intensity(stamp: Time, region: str, now_gco2_per_kwh: float, forecast_start_s: float,
                   step_s: float, forecast: list[float]) -> GridIntensity:
    """Build a GridIntensity message; ``forecast_start_s`` is clock time of ``forecast[0]``."""
    msg = GridIntensity(region=region, gco2_per_kwh=now_gco2_per_kwh, forecast_step_s=step_s,
                        forecast_gco2_per_kwh=forecast)
    msg.header.stamp = stamp
    msg.forecast_start = to_time(forecast_start_s)
    return msg
