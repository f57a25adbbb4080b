"""Simulation and independent scoring: the vehicle simulator, the FASTSim plant and the run report (pure)
and, in ``ros/``, the sim node."""
