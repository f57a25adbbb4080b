"""ROS 2 side of planning: nodes and message conversions (imports rclpy)."""
