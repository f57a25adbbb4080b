"""Vehicle-state fusion: the extended Kalman filter (pure) and, in ``ros/``, its node and message conversions."""
