"""Pure helpers several domains share: errors, parameter sets, frames and geodesy, vehicle profiles,
input-health bookkeeping, the VehicleState plausibility rule and the user-file loader. No ROS imports."""
