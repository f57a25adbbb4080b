"""ROS 2 side of actuation: nodes and message conversions (imports rclpy)."""
