"""ScoreHMR score-guided diffusion for 3D human recovery: library core and ROS 2 node.

Everything except :mod:`scorehmr_ros.ros` imports without rclpy.
"""

__version__ = '0.1.0'
