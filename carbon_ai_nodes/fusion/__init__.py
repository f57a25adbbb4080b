"""Vehicle-state fusion: the extended Kalman filter (pure: ekf.py, state.py, measurements.py, fusion_params.py) and,
in ``ros/``, its node and message conversions."""
