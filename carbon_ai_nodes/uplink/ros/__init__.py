"""ROS 2 side of uplink: nodes and message conversions (imports rclpy)."""
