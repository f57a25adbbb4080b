"""Pure cores: numpy/scipy/stdlib only. Nothing in this package may import rclpy or any *_msgs package."""
