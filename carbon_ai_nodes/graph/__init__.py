"""Running a node graph: scenarios, the runner and node processes, lifecycle supervision and, in
``ros/``, the lifecycle manager, latency probe and MCAP recorder/player."""
