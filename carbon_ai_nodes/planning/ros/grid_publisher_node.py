"""grid_publisher: replays a grid carbon-intensity forecast file as carbon_ai_msgs/GridIntensity.

Publishes ``grid_intensity`` (reliable, transient local, so a late planner gets the latest forecast).
"""

from __future__ import annotations

import math
import sys

from carbon_ai_msgs.msg import GridIntensity
from carbon_ai_nodes.planning.grid_forecast import GridForecast, GridPublisherParams
from carbon_ai_nodes.planning.ros.grid_conversions import grid_intensity
from carbon_ai_nodes.ros import qos
from carbon_ai_nodes.ros.node_base import CarbonNode, configured, run_node


class GridPublisher(CarbonNode[GridPublisherParams]):
    """Replays a forecast CSV on a timer, fast-forwarded by ``time_scale``."""

    def __init__(self) -> None:
        super().__init__("grid_publisher", GridPublisherParams)
        self.forecast: GridForecast | None = None
        self._start_s = 0.0

    def configure(self, params: GridPublisherParams) -> None:
        self.forecast = GridForecast.from_csv(params.forecast_file)
        self._pub = self.publisher(GridIntensity, "grid_intensity", qos.latched())
        self.timer(params.period_s, self._publish, name="publish")

    def activate(self) -> None:
        self._start_s = self.now_s()
        self._publish()

    def _publish(self) -> None:
        p = self.params
        source = configured(self.forecast, "grid_publisher forecast")
        offset_s = (self.now_s() - self._start_s) * p.time_scale
        count = max(1, int(math.floor(p.horizon_s / p.step_s)))
        forecast = source.window(offset_s, p.step_s, count, p.loop)
        self._pub.publish(grid_intensity(
            self.get_clock().now().to_msg(), p.region, source.at(offset_s, p.loop),
            self.now_s(), p.step_s / p.time_scale, forecast,
        ))


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run carbon_ai_nodes grid_publisher``."""
    sys.exit(run_node(GridPublisher, args))


if __name__ == "__main__":
    main()
