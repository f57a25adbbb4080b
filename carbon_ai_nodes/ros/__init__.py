"""Shared ROS 2 plumbing: the node base class, parameters, QoS, real-time executors, intra-process
delivery, message stamps and the test/bench probe."""
