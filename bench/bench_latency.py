"""End-to-end latency benchmark: sensor -> ActuatorCommand through fusion, carbon_inference and actuator_bridge
(separate processes, and composed with --compose) against a bare 3-hop rclpy relay chain measured in the same run.

    python bench/bench_latency.py [--json] [--rate 100] [--duration 10] [--compose]

Same as ``carbon-ai bench latency``; prints p50/p99 per chain and the pipeline/bare p99 ratio.
"""

import sys

from carbon_ai_nodes.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "latency", *sys.argv[1:]]))
