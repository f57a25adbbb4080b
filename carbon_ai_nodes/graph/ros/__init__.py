"""ROS 2 side of graph: nodes and message conversions (imports rclpy)."""
