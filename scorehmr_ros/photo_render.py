"""
Pictures of the photo demo (matplotlib, Agg backend: no display needed).

The mesh overlay is drawn with the painter's algorithm (faces sorted far to near, flat
shaded by their normal), which is exact enough for one convex-ish body per person.
"""

from typing import Sequence, Tuple

import matplotlib

matplotlib.use('Agg')
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

_PERSON_COLOURS = ((0.35, 0.6, 1.0), (1.0, 0.55, 0.2), (0.4, 0.85, 0.4), (0.9, 0.4, 0.8))


def _project(points: np.ndarray, focal_px: float, center) -> np.ndarray:
    z = np.maximum(points[..., 2:3], 1e-3)
    return points[..., :2] * focal_px / z + np.asarray(center)


def _shade(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Return per-face [F] depth and [F] brightness (light from the camera)."""
    tri = vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    centre = tri.mean(1)
    view = -centre / (np.linalg.norm(centre, axis=1, keepdims=True) + 1e-12)
    return centre[:, 2], np.abs((normal * view).sum(1))


def draw_overlay(path: str, image: np.ndarray, frame, vertices: np.ndarray,
                 faces: np.ndarray, joints: np.ndarray, bones: Sequence[Tuple[int, int]],
                 min_conf: float) -> None:
    """
    Draw fitted bodies, their projected skeletons and the detected keypoints on a photo.

    :param path: output PNG.
    :param image: [H, W, 3] uint8 RGB.
    :param frame: :class:`scorehmr_ros.photo_demo.FrameResult` of the image.
    :param vertices: [P, V, 3] camera-frame meshes, metres.
    :param faces: [F, 3] triangles.
    :param joints: [P, 17, 3] camera-frame COCO-17 joints, metres.
    :param bones: COCO-17 index pairs.
    :param min_conf: detected keypoints below this confidence are not drawn.
    """
    height, width = image.shape[:2]
    center = (width / 2.0, height / 2.0)
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(image)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis('off')
    for p in range(vertices.shape[0]):
        colour = np.array(_PERSON_COLOURS[p % len(_PERSON_COLOURS)])
        depth, light = _shade(vertices[p], faces)
        order = np.argsort(-depth)
        uv = _project(vertices[p], frame.focal_px, center)[faces[order]]
        shades = np.clip(0.35 + 0.65 * light[order], 0, 1)[:, None] * colour
        ax.add_collection(PolyCollection(uv, facecolors=np.c_[shades, np.full(len(uv), 0.55)],
                                         edgecolors='none'))
        fitted = _project(joints[p], frame.focal_px, center)
        ax.add_collection(LineCollection([fitted[list(b)] for b in bones], colors='white',
                                         linewidths=1.5))
        kp = frame.detections.keypoints[p]
        segs = [kp[list(b), :2] for b in bones if kp[b[0], 2] >= min_conf
                and kp[b[1], 2] >= min_conf]
        ax.add_collection(LineCollection(segs, colors='red', linewidths=1.0,
                                         linestyles='dashed'))
        ok = kp[:, 2] >= min_conf
        ax.scatter(kp[ok, 0], kp[ok, 1], s=10, c='red', zorder=3)
    for box in frame.detections.boxes:
        ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False,
                                   edgecolor='yellow', linewidth=0.8))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def draw_3d(path: str, vertices: np.ndarray, faces: np.ndarray, joints: np.ndarray,
            bones: Sequence[Tuple[int, int]]) -> None:
    """
    Draw the fitted bodies in the camera frame (x right, y down, z ahead; shown y up).

    :param path: output PNG.
    :param vertices: [P, V, 3] meshes, metres.
    :param faces: [F, 3] triangles.
    :param joints: [P, 17, 3] COCO-17 joints, metres.
    :param bones: COCO-17 index pairs.
    """
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    fig = plt.figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot(projection='3d')

    def view(points):
        # Plot axes (x, depth, up) so that the camera looks along the plot's y axis.
        return np.stack((points[..., 0], points[..., 2], -points[..., 1]), axis=-1)

    for p in range(vertices.shape[0]):
        colour = _PERSON_COLOURS[p % len(_PERSON_COLOURS)]
        _, light = _shade(vertices[p], faces)
        shades = np.clip(0.35 + 0.65 * light, 0, 1)[:, None] * np.array(colour)
        ax.add_collection3d(Poly3DCollection(view(vertices[p])[faces], facecolors=shades,
                                             edgecolors='none', alpha=0.9))
        ax.add_collection3d(Line3DCollection([view(joints[p])[list(b)] for b in bones],
                                             colors='k', linewidths=1.5))
    points = view(vertices.reshape(-1, 3))
    mid = (points.max(0) + points.min(0)) / 2
    half = max(float((points.max(0) - points.min(0)).max()) / 2, 0.5)
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_zlim(mid[2] - half, mid[2] + half)
    ax.set_xlabel('x (m)')
    ax.set_ylabel('depth z (m)')
    ax.set_zlabel('up -y (m)')
    ax.set_title('fitted body, camera frame')
    ax.view_init(elev=15, azim=-60)
    fig.savefig(path)
    plt.close(fig)
