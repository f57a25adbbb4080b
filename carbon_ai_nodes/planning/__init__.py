"""Lower-carbon plans: routing (OR-Tools), load scheduling against the grid forecast and eco speed
(pure) and, in ``ros/``, the planner, eco_speed and grid_publisher nodes."""
