"""ROS 2 glue of scorehmr_ros: the node, message conversion and parameters."""
