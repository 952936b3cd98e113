"""
Synthetic ground truth for association, triangulation and tracking tests.

People are BODY_25 stick figures (metres, z up) placed on the floor; cameras stand on a
circle around the origin, at slightly different heights, looking at the scene centre.
No body model is needed: the tests are about geometry only.
"""

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from scorehmr_ros.fusion.association import Person, ViewDetections

# BODY_25 stick figure in the person's frame: x to the person's right, y forward, z up.
STICK_FIGURE_M = np.array([
    [0.00, 0.09, 1.62],    # nose
    [0.00, 0.00, 1.47],    # neck
    [0.19, 0.00, 1.44],    # right shoulder
    [0.23, 0.02, 1.15],    # right elbow
    [0.25, 0.08, 0.90],    # right wrist
    [-0.19, 0.00, 1.44],   # left shoulder
    [-0.23, 0.02, 1.15],   # left elbow
    [-0.25, 0.08, 0.90],   # left wrist
    [0.00, 0.00, 0.95],    # mid hip
    [0.10, 0.00, 0.94],    # right hip
    [0.11, 0.03, 0.52],    # right knee
    [0.11, -0.01, 0.09],   # right ankle
    [-0.10, 0.00, 0.94],   # left hip
    [-0.11, 0.03, 0.52],   # left knee
    [-0.11, -0.01, 0.09],  # left ankle
    [0.035, 0.08, 1.66],   # right eye
    [-0.035, 0.08, 1.66],  # left eye
    [0.08, 0.00, 1.63],    # right ear
    [-0.08, 0.00, 1.63],   # left ear
    [-0.10, 0.17, 0.02],   # left big toe
    [-0.15, 0.14, 0.02],   # left small toe
    [-0.11, -0.06, 0.03],  # left heel
    [0.10, 0.17, 0.02],    # right big toe
    [0.15, 0.14, 0.02],    # right small toe
    [0.11, -0.06, 0.03],   # right heel
])
NUM_KEYPOINTS = len(STICK_FIGURE_M)


def person_points(position_xy: Sequence[float], yaw_rad: float, scale: float = 1.0,
                  jitter: Optional[np.ndarray] = None) -> np.ndarray:
    """
    Place a stick figure on the floor.

    :param position_xy: [2] floor position, metres.
    :param yaw_rad: heading about the vertical axis.
    :param scale: body size factor.
    :param jitter: optional [25, 3] offsets in the person frame (pose variety), metres.
    :return: [25, 3] world points, metres.
    """
    local = STICK_FIGURE_M * scale + (0.0 if jitter is None else jitter)
    cos, sin = math.cos(yaw_rad), math.sin(yaw_rad)
    rot = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    return local @ rot.T + np.array([position_xy[0], position_xy[1], 0.0])


def random_people(num_people: int, rng: np.random.Generator, radius_m: float = 1.6,
                  min_separation_m: float = 0.9) -> np.ndarray:
    """
    Random people with distinct sizes, headings and poses, kept apart on the floor.

    :param num_people: P.
    :param rng: random generator.
    :param radius_m: people stand within this distance of the origin.
    :param min_separation_m: minimum distance between two people's feet.
    :return: [P, 25, 3] world points, metres.
    """
    positions: List[np.ndarray] = []
    while len(positions) < num_people:
        candidate = rng.uniform(-radius_m, radius_m, size=2)
        if np.linalg.norm(candidate) > radius_m:
            continue
        if all(np.linalg.norm(candidate - p) >= min_separation_m for p in positions):
            positions.append(candidate)
    people = [person_points(p, rng.uniform(-math.pi, math.pi), rng.uniform(0.85, 1.1),
                            rng.normal(0.0, 0.03, size=(NUM_KEYPOINTS, 3)))
              for p in positions]
    return np.stack(people) if people else np.zeros((0, NUM_KEYPOINTS, 3))


def look_at(position: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """
    World-to-camera transform of a camera at ``position`` looking at ``target`` (z up).

    :param position: [3] camera centre, metres.
    :param target: [3] point on the optical axis, metres.
    :return: [4, 4] world to optical frame (x right, y down, z forward).
    """
    position = np.asarray(position, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack((right, down, forward))
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = -rot @ position
    return out


def ring_cameras(num_cameras: int, radius_m: float = 5.0, focal_px: float = 1000.0,
                 image_wh: Tuple[int, int] = (1280, 720), start_deg: float = 20.0
                 ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """
    Cameras on a circle looking at the centre, 90 degrees apart (360/V beyond 4).

    :param num_cameras: V.
    :param radius_m: circle radius.
    :param focal_px: focal length, pixels.
    :param image_wh: image size, pixels.
    :param start_deg: azimuth of the first camera.
    :return: V ``(k [3, 3], world_to_camera [4, 4])``.
    """
    step = min(90.0, 360.0 / max(num_cameras, 1))
    width, height = image_wh
    k = np.array([[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0],
                  [0.0, 0.0, 1.0]])
    cameras = []
    for index in range(num_cameras):
        azimuth = math.radians(start_deg + index * step)
        centre = [radius_m * math.cos(azimuth), radius_m * math.sin(azimuth),
                  1.4 + 0.35 * index]
        cameras.append((k.copy(), look_at(centre, [0.0, 0.0, 0.9])))
    return cameras


def project_people(points: np.ndarray, k: np.ndarray, world_to_camera: np.ndarray,
                   image_wh: Tuple[int, int] = (1280, 720)) -> Tuple[np.ndarray, np.ndarray]:
    """
    Exact projection and in-image visibility.

    :param points: [P, K, 3] world points.
    :param k: [3, 3] intrinsics.
    :param world_to_camera: [4, 4] pose.
    :param image_wh: image size, pixels.
    :return: ``(pixels [P, K, 2], visible [P, K] bool)``.
    """
    cam = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    depth = cam[..., 2]
    pixels = (cam @ k.T)[..., :2] / np.where(depth > 0, depth, 1.0)[..., None]
    width, height = image_wh
    visible = (depth > 0.1) & (pixels[..., 0] >= 0) & (pixels[..., 0] < width) \
        & (pixels[..., 1] >= 0) & (pixels[..., 1] < height)
    return pixels, visible


def make_views(people: np.ndarray, cameras, rng: np.random.Generator, noise_px: float = 1.5,
               drop_prob: float = 0.1, hidden: Optional[Sequence[Tuple[int, int]]] = None,
               ids: str = 'consistent', shuffle: bool = True,
               min_keypoints: int = 4) -> Tuple[List[ViewDetections], List[np.ndarray]]:
    """
    Render noisy detections of the people in every camera.

    :param people: [P, K, 3] world points.
    :param cameras: ``[(k, world_to_camera)]`` from :func:`ring_cameras`.
    :param rng: random generator.
    :param noise_px: Gaussian pixel noise.
    :param drop_prob: probability that a keypoint is missed (confidence 0).
    :param hidden: ``(view, person)`` pairs where the person is not detected.
    :param ids: upstream ids: ``'consistent'`` (truth + 1), ``'absent'`` or
        ``'conflicting'`` (in even-numbered views, persons 0 and 1 swap ids).
    :param shuffle: shuffle detection order per view.
    :param min_keypoints: a person needs this many visible keypoints to be detected.
    :return: ``(views, truth)``: truth[v] is [P_v] the person index of every detection.
    """
    hidden = set(hidden or ())
    views, truth = [], []
    for v_index, (k, pose) in enumerate(cameras):
        pixels, visible = project_people(people, k, pose)
        conf = rng.uniform(0.6, 1.0, size=visible.shape)
        conf[~visible | (rng.random(visible.shape) < drop_prob)] = 0.0
        pixels = pixels + rng.normal(0.0, noise_px, size=pixels.shape)
        detected = [p for p in range(len(people)) if (v_index, p) not in hidden
                    and (conf[p] > 0).sum() >= min_keypoints]
        if shuffle:
            detected = list(rng.permutation(detected))
        keypoints = np.concatenate((pixels, conf[..., None]), -1)[detected]
        keypoints = keypoints.reshape(len(detected), people.shape[1], 3)
        track_ids = None
        if ids != 'absent':
            labels = np.asarray(detected, dtype=np.int64)
            if ids == 'conflicting' and v_index % 2 == 0:
                labels = np.where(labels == 0, 1, np.where(labels == 1, 0, labels))
            track_ids = labels + 1
        views.append(ViewDetections(keypoints=keypoints, k=k, world_to_camera=pose,
                                    track_ids=track_ids, name=f'cam{v_index}'))
        truth.append(np.asarray(detected, dtype=np.int64))
    return views, truth


def grouping_accuracy(persons: Sequence[Person], truth: Sequence[np.ndarray]) -> float:
    """
    Fraction of detections whose person holds exactly the detections of their true person.

    :param persons: association output.
    :param truth: truth[v] = [P_v] true person of every detection of view v.
    :return: accuracy in [0, 1] (1.0 with no detections).
    """
    true_groups = {}
    for v_index, labels in enumerate(truth):
        for d_index, label in enumerate(labels):
            true_groups.setdefault(int(label), set()).add((v_index, d_index))
    total = sum(len(g) for g in true_groups.values())
    if total == 0:
        return 1.0
    correct = 0
    for person in persons:
        members = set(person.detections.items())
        labels = {int(truth[v][d]) for v, d in members}
        if len(labels) == 1 and members == true_groups[labels.pop()]:
            correct += len(members)
    return correct / total
