"""carbon_ai: on-machine CO2 reduction for vehicles and machinery, as ROS 2 nodes around pure-Python cores."""

__version__ = "0.1.0"
