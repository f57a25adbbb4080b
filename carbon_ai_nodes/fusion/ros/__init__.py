"""ROS 2 side of fusion: nodes and message conversions (imports rclpy)."""
