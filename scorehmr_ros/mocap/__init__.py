"""Motion-capture input: BVH reading, retargeting to SMPL, virtual-camera datasets."""
