"""ROS 2 side of carbon: nodes and message conversions (imports rclpy)."""
