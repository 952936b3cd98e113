"""Multi-view fusion, cross-view association, tracking and online temporal refinement (no ROS)."""
