"""ROS 2 side of sim: nodes and message conversions (imports rclpy)."""
