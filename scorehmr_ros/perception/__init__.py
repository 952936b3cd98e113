"""Perception front ends: keypoint features, feature extractors and regressors."""
