"""ROS messages <-> core dataclasses: the only place that imports both. One module per concern."""
