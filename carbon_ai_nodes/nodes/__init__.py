"""Thin rclpy nodes, one per executable, each with ``main()``."""
