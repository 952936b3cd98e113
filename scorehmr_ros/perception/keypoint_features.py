"""
Conditioning features computed from 2D keypoints alone (no image backbone).

A prior conditioned on these features needs only a 2D keypoint detector. The features
describe the pose the keypoints show, not where the person is in the image: coordinates
are normalised by the box of the confident keypoints (centre to 0, longest side to 2),
so they do not change when the image is shifted or scaled.
"""

import torch

#: Coordinates beyond this many pixels are garbage (no camera is that large); such
#: keypoints count as unconfident, which also keeps the float64 arithmetic far from
#: overflow.
MAX_ABS_PX = 1e7


def keypoint_feature_dim(num_keypoints: int) -> int:
    """
    Return the feature size C of :func:`keypoint_features` for K keypoints.

    :param num_keypoints: K.
    :return: 3 K.
    """
    return 3 * int(num_keypoints)


def keypoint_features(keypoints_2d, min_confidence: float = 0.0) -> torch.Tensor:
    """
    Compute translation- and scale-invariant features of 2D keypoints.

    Layout: ``[x_1, y_1, ..., x_K, y_K, c_1, ..., c_K]``. A keypoint is confident when
    its coordinates and confidence are finite, its coordinates lie within
    :data:`MAX_ABS_PX` and its confidence exceeds ``min_confidence``; unconfident
    keypoints get zeros (coordinates and confidence). Confident coordinates are
    ``(p - centre) / half_side`` of the box of the confident keypoints, so they lie in
    [-1, 1] and the longest box side spans 2; a single confident keypoint (or several at
    one point) maps to 0. Confidences are clipped to [0, 1]. Deterministic, and finite
    for any input (no confident keypoint gives all zeros).

    :param keypoints_2d: [B, K, 3] ``(x_px, y_px, confidence)`` (tensor or array).
    :param min_confidence: confidences at or below this count as missing.
    :return: [B, 3 K] float32 features (float64 for float64 input).
    """
    kp = torch.as_tensor(keypoints_2d)
    if kp.dim() != 3 or kp.shape[-1] != 3:
        raise ValueError(f'keypoints_2d: expected [B, K, 3], got {list(kp.shape)}')
    out_dtype = torch.float64 if kp.dtype == torch.float64 else torch.float32
    kp = kp.to(torch.float64)
    xy, conf = kp[..., :2], kp[..., 2]
    valid = (torch.isfinite(kp).all(dim=-1) & (xy.abs() <= MAX_ABS_PX).all(dim=-1)
             & (conf > min_confidence))
    # Replace invalid coordinates before any arithmetic so that NaN/inf cannot leak.
    xy = torch.where(valid[..., None], xy, torch.zeros_like(xy))
    big = torch.full_like(xy, float(MAX_ABS_PX) * 2)
    low = torch.where(valid[..., None], xy, big).amin(dim=1)           # [B, 2]
    high = torch.where(valid[..., None], xy, -big).amax(dim=1)         # [B, 2]
    any_valid = valid.any(dim=1)
    centre = torch.where(any_valid[:, None], 0.5 * (low + high), torch.zeros_like(low))
    half_side = 0.5 * (high - low).amax(dim=-1)
    half_side = torch.where(any_valid, half_side, torch.zeros_like(half_side))
    # A degenerate box (one point) has no scale: its coordinates are all 0 after centring.
    half_side = torch.where(half_side > 0, half_side, torch.ones_like(half_side))
    coords = (xy - centre[:, None]) / half_side[:, None, None]
    coords = torch.where(valid[..., None], coords.clamp(-1.0, 1.0), torch.zeros_like(coords))
    conf = torch.where(valid, conf.clamp(0.0, 1.0), torch.zeros_like(conf))
    feats = torch.cat((coords.reshape(kp.shape[0], -1), conf), dim=1)
    return feats.to(out_dtype)
