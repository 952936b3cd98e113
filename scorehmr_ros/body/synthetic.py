"""
A synthetic body in SMPL's format, generated here (it is not SMPL and holds no SMPL data).

It stands in for the licensed SMPL model in tests and whenever no SMPL file is
configured, so it keeps every convention the rest of the code relies on:

- 6890 vertices, 24 joints with SMPL's names and kinematic tree, 10 shape directions,
  207 pose-corrective directions: smplx's ``SMPLLayer`` runs it unchanged;
- SMPL's rest pose: T-pose in metres, y up, the body facing +z, the subject's left on
  +x, pelvis near (0, -0.22, 0.03), head top near y = +0.52 and soles near y = -1.18
  (1.70 m tall);
- the 21 vertex ids that smplx reads as keypoints (nose 332, eyes, ears, toes, heels,
  fingertips; see :data:`scorehmr_ros.body.layouts.SMPLX_VERTEX_JOINT_IDS`) sit at
  the anatomically matching places, because guidance projects them as OpenPose
  keypoints.

Construction: one closed tube per body part (torso, neck, head, and per side upper arm,
forearm, hand, thigh, shin, foot) with an elliptical, smoothly varying cross-section and
rounded ends: 15 closed surfaces, 13720 triangles in all. Vertices are then renumbered
so that the keypoint ids land on the right spots. The rest joints :data:`REST_JOINTS`
are our own rounded anthropometric values, close to SMPL's neutral rest joints.
"""

from dataclasses import dataclass, replace
import functools
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from scorehmr_ros.body.layouts import (
    NUM_SMPL_JOINTS, NUM_SMPL_VERTICES, SMPL_PARENTS,
    SMPLX_VERTEX_JOINT_IDS)
from scorehmr_ros.body.smpl_file import (
    load_smpl_arrays, NUM_POSE_BASIS, save_smpl_npz, SmplArrays)

_LOG = logging.getLogger(__name__)

SYNTHETIC_SOURCE = 'synthetic SMPL-format body (generated, not SMPL)'
NUM_SYNTHETIC_BETAS = 10
# Bump when the generator changes, so cached .npz files of older versions are not reused.
GENERATOR_VERSION = 1

# [24, 3] rest joints in metres, SMPL order, SMPL rest frame (y up, facing +z, left +x).
REST_JOINTS = np.array([
    [0.000, -0.220, 0.030],   # pelvis
    [0.070, -0.310, 0.020],   # left_hip
    [-0.070, -0.310, 0.020],  # right_hip
    [0.000, -0.100, 0.000],   # spine1
    [0.100, -0.700, 0.010],   # left_knee
    [-0.100, -0.700, 0.010],  # right_knee
    [0.000, 0.030, 0.005],    # spine2
    [0.090, -1.100, -0.035],  # left_ankle
    [-0.090, -1.100, -0.035],  # right_ankle
    [0.000, 0.090, 0.030],    # spine3
    [0.115, -1.160, 0.090],   # left_foot (ball of the foot)
    [-0.115, -1.160, 0.090],  # right_foot
    [0.000, 0.285, -0.010],   # neck
    [0.080, 0.195, -0.005],   # left_collar
    [-0.080, 0.195, -0.005],  # right_collar
    [0.000, 0.350, 0.045],    # head
    [0.170, 0.222, -0.018],   # left_shoulder
    [-0.170, 0.222, -0.018],  # right_shoulder
    [0.415, 0.210, -0.035],   # left_elbow
    [-0.415, 0.210, -0.035],  # right_elbow
    [0.660, 0.218, -0.040],   # left_wrist
    [-0.660, 0.218, -0.040],  # right_wrist
    [0.745, 0.210, -0.055],   # left_hand
    [-0.745, 0.210, -0.055],  # right_hand
])
REST_JOINTS.setflags(write=False)

_Y, _Z = (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
_LEFT_TO_RIGHT = {1: 2, 4: 5, 7: 8, 10: 11, 13: 14, 16: 17, 18: 19, 20: 21, 22: 23}


@dataclass(frozen=True)
class _Tube:
    """
    A closed tube around the segment start -> end, described on the subject's left.

    Cross-section radii ``r1``/``r2`` (metres, along e1 = ``ref`` made orthogonal to the
    axis and e2 = axis x e1) and centre offsets ``o1`` are piecewise linear over the
    axis parameter ``knots`` in [0, 1], then multiplied by the end rounding
    (1 - |2t - 1|^roundness)^(1 / roundness). ``anchors`` are (coordinate along world axis
    ``anchor_axis``, SMPL joint) pairs; skinning weights are hat functions over them.
    ``keypoints`` maps smplx vertex-keypoint names to an anatomical target point; the
    nearest ring vertex becomes that keypoint.
    """

    name: str
    start: Tuple[float, float, float]
    end: Tuple[float, float, float]
    ref: Tuple[float, float, float]
    rings: int
    segments: int
    knots: Tuple[float, ...]
    r1: Tuple[float, ...]
    r2: Tuple[float, ...]
    o1: Tuple[float, ...]
    roundness: float
    anchor_axis: int
    anchors: Tuple[Tuple[float, int], ...]
    mirrored: bool
    keypoints: Tuple[Tuple[str, Tuple[float, float, float]], ...] = ()


def _left_parts() -> List[_Tube]:
    """Return the midline parts and the left limbs (``mirrored`` ones get a right copy)."""
    mid = [
        _Tube('torso', (0.0, -0.42, 0.0), (0.0, 0.30, 0.0), _Z, 38, 42,
              knots=(0.0, 0.167, 0.375, 0.583, 0.75, 0.889, 1.0),
              r1=(0.10, 0.11, 0.10, 0.10, 0.11, 0.095, 0.07),
              r2=(0.15, 0.17, 0.15, 0.14, 0.16, 0.18, 0.10),
              o1=(0.02, 0.02, 0.02, 0.03, 0.03, 0.0, -0.01), roundness=6.0,
              anchor_axis=1,
              anchors=((-0.25, 0), (-0.10, 3), (0.03, 6), (0.14, 9), (0.27, 12)),
              mirrored=False),
        _Tube('neck', (0.0, 0.20, 0.0), (0.0, 0.38, 0.0), _Z, 8, 24,
              knots=(0.0, 1.0), r1=(0.06, 0.055), r2=(0.055, 0.05), o1=(-0.005, 0.0),
              roundness=4.0, anchor_axis=1,
              anchors=((0.21, 9), (0.26, 12), (0.33, 12), (0.37, 15)), mirrored=False),
        _Tube('head', (0.0, 0.285, 0.0), (0.0, 0.525, 0.0), _Z, 24, 32,
              knots=(0.0, 1.0), r1=(0.098, 0.098), r2=(0.078, 0.078), o1=(0.025, 0.025),
              roundness=2.0, anchor_axis=1, anchors=((0.29, 12), (0.36, 15)),
              mirrored=False,
              keypoints=(('nose', (0.0, 0.38, 0.13)),
                         ('left_eye', (0.032, 0.435, 0.115)),
                         ('right_eye', (-0.032, 0.435, 0.115)),
                         ('left_ear', (0.08, 0.40, 0.005)),
                         ('right_ear', (-0.08, 0.40, 0.005)))),
    ]
    side = [
        _Tube('upper_arm', (0.10, 0.215, -0.015), (0.445, 0.21, -0.035), _Y, 18, 20,
              knots=(0.0, 0.5, 1.0), r1=(0.055, 0.048, 0.04), r2=(0.055, 0.048, 0.04),
              o1=(0.0, 0.0, 0.0), roundness=4.0, anchor_axis=0,
              anchors=((0.10, 9), (0.14, 13), (0.21, 16), (0.37, 16), (0.46, 18)),
              mirrored=True),
        _Tube('forearm', (0.39, 0.21, -0.035), (0.685, 0.218, -0.04), _Y, 16, 18,
              knots=(0.0, 0.5, 1.0), r1=(0.042, 0.036, 0.029), r2=(0.042, 0.036, 0.029),
              o1=(0.0, 0.0, 0.0), roundness=4.0, anchor_axis=0,
              anchors=((0.37, 16), (0.46, 18), (0.62, 18), (0.70, 20)), mirrored=True),
        _Tube('hand', (0.64, 0.215, -0.042), (0.855, 0.208, -0.055), _Y, 14, 20,
              knots=(0.0, 0.45, 1.0), r1=(0.022, 0.02, 0.012), r2=(0.03, 0.045, 0.04),
              o1=(0.0, 0.0, 0.0), roundness=3.0, anchor_axis=0,
              anchors=((0.62, 18), (0.70, 20), (0.72, 20), (0.78, 22)), mirrored=True,
              keypoints=(('left_thumb', (0.79, 0.205, -0.005)),
                         ('left_index', (0.845, 0.208, -0.025)),
                         ('left_middle', (0.856, 0.208, -0.048)),
                         ('left_ring', (0.85, 0.208, -0.068)),
                         ('left_pinky', (0.835, 0.208, -0.088)))),
        _Tube('thigh', (0.085, -0.24, 0.015), (0.10, -0.73, 0.01), _Z, 21, 24,
              knots=(0.0, 0.5, 1.0), r1=(0.09, 0.075, 0.055), r2=(0.08, 0.07, 0.055),
              o1=(0.0, 0.0, 0.0), roundness=4.0, anchor_axis=1,
              anchors=((-0.22, 0), (-0.32, 1), (-0.64, 1), (-0.74, 4)), mirrored=True),
        _Tube('shin', (0.10, -0.67, 0.01), (0.09, -1.13, -0.04), _Z, 20, 20,
              knots=(0.0, 0.3, 1.0), r1=(0.055, 0.055, 0.038), r2=(0.05, 0.05, 0.035),
              o1=(0.0, -0.01, 0.0), roundness=4.0, anchor_axis=1,
              anchors=((-0.64, 1), (-0.74, 4), (-1.05, 4), (-1.12, 7)), mirrored=True),
        _Tube('foot', (0.095, -1.14, -0.09), (0.105, -1.14, 0.17), _Y, 16, 20,
              knots=(0.0, 0.35, 0.75, 1.0), r1=(0.045, 0.045, 0.03, 0.022),
              r2=(0.032, 0.04, 0.046, 0.04), o1=(0.0, 0.0, -0.012, -0.015),
              roundness=3.0, anchor_axis=2,
              anchors=((-0.09, 7), (0.05, 7), (0.11, 10)), mirrored=True,
              keypoints=(('left_heel', (0.095, -1.175, -0.08)),
                         ('left_big_toe', (0.08, -1.165, 0.165)),
                         ('left_small_toe', (0.135, -1.17, 0.13)))),
    ]
    return mid + side


def _mirror_tube(tube: _Tube) -> _Tube:
    """Return the subject's-right copy of a left part (x negated, joints swapped)."""
    def flip(p: Tuple[float, float, float]) -> Tuple[float, float, float]:
        return (-p[0], p[1], p[2])

    return replace(
        tube, name='right_' + tube.name, start=flip(tube.start), end=flip(tube.end),
        anchors=tuple(((-c if tube.anchor_axis == 0 else c), _LEFT_TO_RIGHT.get(j, j))
                      for c, j in tube.anchors),
        keypoints=tuple((name.replace('left_', 'right_'), flip(d))
                        for name, d in tube.keypoints))


def _all_parts() -> List[_Tube]:
    parts = []
    for tube in _left_parts():
        if tube.mirrored:
            parts += [replace(tube, name='left_' + tube.name), _mirror_tube(tube)]
        else:
            parts.append(tube)
    return parts


@dataclass
class _PartMesh:
    verts: np.ndarray      # [N, 3]
    faces: np.ndarray      # [M, 3] local indices
    centres: np.ndarray    # [N, 3] axis point of each vertex's ring
    weights: np.ndarray    # [N, 24]


def _hat_weights(coord: np.ndarray, anchors: Sequence[Tuple[float, int]]) -> np.ndarray:
    """
    Partition-of-unity weights over anchors along one coordinate.

    :param coord: [N] coordinate of each vertex along the anchor axis
    :param anchors: (coordinate, joint) pairs, monotonic in coordinate
    :return: [N, 24] weights, rows summing to 1
    """
    positions = np.array([c for c, _ in anchors])
    order = np.argsort(positions)
    positions = positions[order]
    joints = [anchors[i][1] for i in order]
    weights = np.zeros((coord.shape[0], NUM_SMPL_JOINTS))
    for k, joint in enumerate(joints):
        basis = np.zeros(len(joints))
        basis[k] = 1.0
        # np.interp clamps outside the anchors, so the ends stay fully on one joint.
        weights[:, joint] += np.interp(coord, positions, basis)
    return weights


def _tube_mesh(tube: _Tube) -> _PartMesh:
    start, end = np.array(tube.start), np.array(tube.end)
    axis = end - start
    length = float(np.linalg.norm(axis))
    axis = axis / length
    ref = np.array(tube.ref)
    e1 = ref - ref.dot(axis) * axis
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)

    # Cosine spacing puts more rings near the rounded ends, where the surface turns.
    u = np.arange(tube.rings + 2) / (tube.rings + 1.0)
    t = 0.5 - 0.5 * np.cos(np.pi * u)
    rounding = np.clip(1.0 - np.abs(2.0 * t - 1.0) ** tube.roundness, 0.0, None)
    rounding = rounding ** (1.0 / tube.roundness)
    r1 = np.interp(t, tube.knots, tube.r1) * rounding
    r2 = np.interp(t, tube.knots, tube.r2) * rounding
    o1 = np.interp(t, tube.knots, tube.o1)
    centres = start + np.outer(t * length, axis) + np.outer(o1, e1)   # [R + 2, 3]

    phi = 2.0 * np.pi * np.arange(tube.segments) / tube.segments
    ring = (r1[1:-1, None, None] * np.cos(phi)[None, :, None] * e1
            + r2[1:-1, None, None] * np.sin(phi)[None, :, None] * e2)  # [R, S, 3]
    ring = ring + centres[1:-1, None, :]
    verts = np.concatenate([centres[:1], ring.reshape(-1, 3), centres[-1:]])
    vert_centres = np.concatenate([
        centres[:1], np.repeat(centres[1:-1], tube.segments, axis=0), centres[-1:]])

    faces = _tube_faces(tube.rings, tube.segments)
    if _signed_volume(verts, faces) < 0.0:
        faces = faces[:, ::-1]

    coord = verts[:, tube.anchor_axis]
    return _PartMesh(verts, faces, vert_centres, _hat_weights(coord, tube.anchors))


def _tube_faces(rings: int, segments: int) -> np.ndarray:
    """Triangles of a tube: pole fan, quad strips between rings, pole fan."""
    j = np.arange(segments)
    jn = (j + 1) % segments
    last_pole = 1 + rings * segments
    tris = [np.stack([np.zeros(segments, int), 1 + j, 1 + jn], axis=1)]
    for i in range(rings - 1):
        a, b = 1 + i * segments + j, 1 + i * segments + jn
        c, d = a + segments, b + segments
        tris.append(np.stack([a, c, b], axis=1))
        tris.append(np.stack([b, c, d], axis=1))
    base = 1 + (rings - 1) * segments
    tris.append(np.stack([np.full(segments, last_pole), base + jn, base + j], axis=1))
    return np.concatenate(tris).astype(np.int64)


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum('ij,ij->', v0, np.cross(v1, v2)) / 6.0)


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    s = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def _torso_weights(verts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Move upper-lateral torso vertices onto the collars and lower-lateral onto hips."""
    x, y = verts[:, 0], verts[:, 1]
    left = x > 0.0
    for joints, frac in (
            ((13, 14), _smoothstep(np.abs(x), 0.05, 0.15) * _smoothstep(y, 0.08, 0.20)),
            ((1, 2), _smoothstep(np.abs(x), 0.0, 0.10) * _smoothstep(-y, 0.22, 0.34))):
        target = np.zeros_like(weights)
        target[left, joints[0]] = 1.0
        target[~left, joints[1]] = 1.0
        weights = weights * (1.0 - frac[:, None]) + target * frac[:, None]
    return weights


def _keypoint_vertex(verts: np.ndarray, offset: int,
                     target: Tuple[float, float, float]) -> int:
    """Index (global, pre-renumbering) of the part's ring vertex nearest to a target."""
    # The poles (first and last vertex) are axis points, never a surface landmark.
    dist = np.linalg.norm(verts[1:-1] - np.array(target), axis=1)
    return offset + 1 + int(np.argmin(dist))


def _max_entropy_weights(local: np.ndarray, prior: np.ndarray) -> Optional[np.ndarray]:
    """
    Positive weights w ∝ prior * exp(lam . x) with sum_i w_i x_i = 0 (max-entropy coords).

    Minimises the convex log-partition function by damped Newton steps; the minimum
    exists exactly when the origin lies inside the convex hull of the points.

    :param local: [k, 3] points relative to the target joint
    :param prior: [k] positive prior weights
    :return: [k] weights summing to 1, or None if the origin is not inside the hull
    """
    log_prior = np.log(prior)
    lam = np.zeros(3)

    def objective(lam_: np.ndarray) -> Tuple[float, np.ndarray]:
        logits = log_prior + local @ lam_
        top = logits.max()
        pi = np.exp(logits - top)
        total = pi.sum()
        return top + np.log(total), pi / total

    value, pi = objective(lam)
    # Newton converges in a few steps when the solution exists; when the origin is
    # outside the hull lam diverges instead, so a small cap fails fast.
    for _ in range(40):
        grad = local.T @ pi
        if np.linalg.norm(grad) < 1e-12:
            return pi
        hess = (local * pi[:, None]).T @ local - np.outer(grad, grad)
        step = np.linalg.solve(hess + 1e-12 * np.eye(3), -grad)
        scale = 1.0
        while scale > 1e-8:
            new_value, new_pi = objective(lam + scale * step)
            if new_value <= value + 1e-4 * scale * grad.dot(step):
                break
            scale *= 0.5
        lam, value, pi = lam + scale * step, new_value, new_pi
    return pi if np.linalg.norm(local.T @ pi) < 1e-9 else None


def _regress_joint(verts: np.ndarray, joint: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """
    Non-negative, sum-to-one vertex weights whose weighted mean is ``joint``.

    Uses the k nearest vertices, with k doubled until the joint lies inside their hull,
    and maximum-entropy weights around a Gaussian prior on the distance.

    :param verts: [V, 3] rest vertices
    :param joint: [3] target joint
    :return: ([k] vertex indices, [k] weights)
    """
    dist = np.linalg.norm(verts - joint, axis=1)
    order = np.argsort(dist, kind='stable')
    for k in (64, 128, 256, 512, 1024, 2048):
        idx = order[:k]
        prior = np.exp(-2.0 * (dist[idx] / dist[idx].max()) ** 2)
        weights = _max_entropy_weights(verts[idx] - joint, prior)
        if weights is not None:
            keep = weights > 1e-9
            return idx[keep], weights[keep] / weights[keep].sum()
    raise RuntimeError(f'synthetic body: no vertices enclose the joint at {joint}')


def _shape_directions(verts: np.ndarray, centres: np.ndarray,
                      seed: int) -> np.ndarray:
    """
    Ten smooth shape directions.

    0 overall size, 1 girth, 2 leg length, 3 arm length, 4 shoulder width, 5 torso
    length, 6 belly, 7 hip width, 8 head size, 9 a seed-dependent low-frequency field.

    :param verts: [V, 3] rest vertices
    :param centres: [V, 3] axis point of each vertex's cross-section
    :param seed: seed of direction 9
    :return: [V, 3, 10] metres per unit beta
    """
    x, y = verts[:, 0], verts[:, 1]
    zeros = np.zeros_like(x)
    radial = verts - centres
    radial_len = np.linalg.norm(radial, axis=1, keepdims=True)
    radial_unit = np.divide(radial, radial_len, out=np.zeros_like(radial),
                            where=radial_len > 1e-9)
    head_centre = np.array([0.0, 0.405, 0.025])
    dirs = [
        0.04 * verts,
        0.2 * radial,
        np.stack([zeros, -0.04 * _smoothstep(-y, 0.20, 0.70), zeros], axis=1),
        np.stack([0.04 * np.sign(x) * _smoothstep(np.abs(x), 0.15, 0.70), zeros, zeros],
                 axis=1),
        np.stack([0.025 * np.tanh(x / 0.06) * _smoothstep(y, -0.05, 0.18), zeros, zeros],
                 axis=1),
        np.stack([zeros, 0.035 * _smoothstep(y, -0.25, 0.25), zeros], axis=1),
        np.stack([zeros, zeros, 0.03 * np.exp(-((y + 0.08) / 0.12) ** 2)
                  * np.exp(-(x / 0.12) ** 2) * np.clip(radial_unit[:, 2], 0.0, None)],
                 axis=1),
        np.stack([0.02 * np.tanh(x / 0.06) * np.exp(-((y + 0.35) / 0.15) ** 2), zeros,
                  zeros], axis=1),
        0.12 * (verts - head_centre) * _smoothstep(y, 0.27, 0.34)[:, None],
    ]
    rng = np.random.default_rng(seed)
    field = np.zeros_like(verts)
    for _ in range(3):
        freq = rng.normal(size=3) * 2.0          # wavelengths of a few decimetres
        phase = rng.uniform(0.0, 2.0 * np.pi)
        amp = rng.normal(size=3) * 0.005
        field += np.sin(verts @ freq + phase)[:, None] * amp
    dirs.append(field)
    return np.stack(dirs, axis=2)


@functools.lru_cache(maxsize=4)
def make_synthetic_smpl(seed: int = 0) -> SmplArrays:
    """
    Generate the synthetic SMPL-format body.

    Pose correctives (``posedirs``) are all zeros: the body deforms by linear blend
    skinning alone. ``seed`` only changes shape direction 9 (a smooth low-frequency
    field); everything else is fixed. Results are cached per seed and read-only.

    :param seed: seed of the seed-dependent shape direction
    :return: arrays with V = 6890, F = 13720, ``is_synthetic=True`` and
        ``source`` = :data:`SYNTHETIC_SOURCE`
    """
    parts = _all_parts()
    meshes = [_tube_mesh(p) for p in parts]
    verts = np.concatenate([m.verts for m in meshes])
    if verts.shape[0] != NUM_SMPL_VERTICES:
        raise RuntimeError(f'synthetic body has {verts.shape[0]} vertices, expected 6890')

    offsets = np.cumsum([0] + [m.verts.shape[0] for m in meshes])
    faces = np.concatenate([m.faces + off for m, off in zip(meshes, offsets)])
    centres = np.concatenate([m.centres for m in meshes])
    weights = np.concatenate([
        _torso_weights(m.verts, m.weights) if p.name == 'torso' else m.weights
        for p, m in zip(parts, meshes)])

    wanted: Dict[int, int] = {}   # SMPL vertex id -> generated vertex index
    for part, mesh, off in zip(parts, meshes, offsets):
        for name, target in part.keypoints:
            wanted[SMPLX_VERTEX_JOINT_IDS[name]] = _keypoint_vertex(mesh.verts, off, target)
    if len(set(wanted.values())) != len(wanted):
        raise RuntimeError('synthetic body: two keypoints landed on one vertex')

    # Renumber: order[new_id] = generated index, keypoints at their SMPL ids.
    order = np.full(NUM_SMPL_VERTICES, -1, dtype=np.int64)
    order[list(wanted)] = list(wanted.values())
    order[order < 0] = np.setdiff1d(np.arange(NUM_SMPL_VERTICES), list(wanted.values()))
    new_id = np.empty_like(order)
    new_id[order] = np.arange(NUM_SMPL_VERTICES)
    verts, centres, weights = verts[order], centres[order], weights[order]
    faces = new_id[faces]

    j_regressor = np.zeros((NUM_SMPL_JOINTS, NUM_SMPL_VERTICES))
    for j in range(NUM_SMPL_JOINTS):
        idx, w = _regress_joint(verts, REST_JOINTS[j])
        j_regressor[j, idx] = w

    kintree = np.stack([np.array(SMPL_PARENTS), np.arange(NUM_SMPL_JOINTS)])
    arrays = SmplArrays(
        v_template=verts,
        shapedirs=_shape_directions(verts, centres, seed),
        posedirs=np.zeros((NUM_SMPL_VERTICES, 3, NUM_POSE_BASIS)),
        J_regressor=j_regressor,
        weights=weights,
        kintree_table=kintree,
        f=faces,
        source=SYNTHETIC_SOURCE,
        is_synthetic=True,
    )
    _LOG.debug('generated the synthetic SMPL-format body (seed %d)', seed)
    return arrays


def default_cache_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/scorehmr_ros`` (default ``~/.cache/scorehmr_ros``)."""
    base = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(base) / 'scorehmr_ros'


def synthetic_smpl_path(cache_dir: Optional[Union[str, os.PathLike]] = None,
                        seed: int = 0) -> Path:
    """
    Write the synthetic body as an ``.npz`` (once) and return its path.

    The file name carries :data:`GENERATOR_VERSION` and the seed, so an outdated cache
    is never read. Useful for tools that want a model *file*.

    :param cache_dir: directory for the file; default :func:`default_cache_dir`
    :param seed: seed passed to :func:`make_synthetic_smpl`
    :return: path of an existing ``.npz`` that :func:`load_smpl_arrays` reads
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = directory / f'synthetic_smpl_v{GENERATOR_VERSION}_seed{seed}.npz'
    if path.is_file():
        try:
            if load_smpl_arrays(path).is_synthetic:
                return path
        except ValueError:
            _LOG.warning('rewriting unreadable cached synthetic body %s', path)
    return save_smpl_npz(make_synthetic_smpl(seed), path)
