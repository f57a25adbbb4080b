"""ament_python package carbon_ai_nodes (the repository root)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "carbon_ai_nodes"

# One executable per node, as `ros2 run carbon_ai_nodes <name>` expects, plus the carbon-ai command.
NODES = {
    "fusion": "fusion",
    "carbon_inference": "carbon_inference",
    "planner": "planner",
    "actuator_bridge": "actuator_bridge",
    "uplink_bridge": "uplink_bridge",
    "sim": "sim",
    "grid_publisher": "grid_publisher",
    "lifecycle_manager": "lifecycle_manager",
    "eco_speed": "eco_speed",
    "latency_probe": "latency_probe",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["models/*.onnx", "models/*.json", "models/*.md", "*.xml"]},
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
            f"{exe} = {PACKAGE}.nodes.{module}:main" for exe, module in NODES.items()
        ]
        + [f"carbon-ai = {PACKAGE}.cli:main"],
    },
)
