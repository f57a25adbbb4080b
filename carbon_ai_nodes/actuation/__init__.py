"""From plans to setpoints: the safety envelope and actuation targets (pure) and, in ``ros/``, the
actuator_bridge node."""
