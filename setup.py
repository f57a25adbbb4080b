"""ament_python package carbon_ai_nodes (the repository root)."""

import runpy
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "carbon_ai_nodes"

# One executable per node, as `ros2 run carbon_ai_nodes <name>` expects (node_entry: quiet stop while starting),
# plus the carbon-ai command. The node list
# is carbon_ai_nodes/node_registry.py, read by path: it imports nothing, so no dependency is needed to build.
NODES = runpy.run_path(str(Path(__file__).resolve().parent / PACKAGE / "node_registry.py"))["NODES"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["carbon/models/*.onnx", "carbon/models/*.json", "carbon/models/*.md", "graph/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/grid", glob("config/grid/*.csv")),
        (f"share/{PACKAGE}/config/vehicles", glob("config/vehicles/*.yaml")),
        (f"share/{PACKAGE}/config/plants", glob("config/plants/*.yaml") + glob("config/plants/*.md")),
        (f"share/{PACKAGE}/config/scenarios", glob("config/scenarios/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="carbon_ai maintainers",
    maintainer_email="carbon-ai@example.com",
    description="carbon_ai nodes: fusion, carbon inference, planner, actuator bridge, MQTT uplink.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"{node.name} = {PACKAGE}.node_entry:{node.name}" for node in NODES
        ]
        + [f"carbon-ai = {PACKAGE}.cli:main"],
    },
)
