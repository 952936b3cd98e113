"""body layer of the scorehmr_ros core (no ROS imports)."""
