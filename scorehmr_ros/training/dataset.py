"""
Training data for denoisers: the ``train.npz`` schema, read and validated.

N rows, each one body pose (camera-frame SMPL local rotations, global orientation
first). Required: ``pose_rotmat`` [N, 24, 3, 3] or ``pose_aa`` [N, 72] (axis-angle).
Optional: ``betas`` [N, 10]; ``cond`` [N, C] conditioning features; ``keypoints_2d``
[N, K, 3] with ``keypoint_layout`` (str), ``focal_px`` [N, 2], ``center_px`` [N, 2],
``image_size`` [N, 2] (height, width); ``cam_t`` [N, 3]; ``joints_3d`` [N, 24, 3];
``sequence_id``, ``frame_index``, ``view_id`` (int64 [N]); ``fps``, ``source``,
``licence`` (0-d arrays). Every problem raises :class:`DatasetError` naming the file and
the field.
"""

import dataclasses
import os
from typing import Dict, Optional

import numpy as np
import torch

from scorehmr_ros.body.layouts import get_layout
from scorehmr_ros.body.rotations import axis_angle_to_matrix
from scorehmr_ros.perception.keypoint_features import keypoint_features

#: Where the conditioning vector comes from.
COND_SOURCES = ('auto', 'cond', 'keypoints', 'none')


class DatasetError(ValueError):
    """A data file is missing, unreadable or has a field of the wrong shape or content."""


def read_npz(path: str) -> Dict[str, np.ndarray]:
    """
    Read every array of an ``.npz`` file without unpickling anything.

    :param path: the file.
    :return: name to array.
    """
    if not os.path.isfile(path):
        raise DatasetError(f'{path}: file not found')
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as err:  # noqa: B902 - zip/format errors of a corrupt file
        raise DatasetError(f'{path}: not a readable .npz file ({err})') from err


class FieldReader:
    """
    Validating accessor of the arrays of one file.

    :param path: file name used in messages.
    :param arrays: name to array.
    """

    def __init__(self, path: str, arrays: Dict[str, np.ndarray]):
        self.path = path
        self.arrays = arrays
        self.n: Optional[int] = None

    def has(self, name: str) -> bool:
        """Whether the file has the field."""
        return name in self.arrays

    def float(self, name: str, shape, required: bool = True) -> Optional[torch.Tensor]:
        """
        Read a floating-point field of a given shape (``'N'`` is the row count).

        :param name: field name.
        :param shape: expected shape with ``'N'`` for the rows and ``None`` for any size.
        :param required: raise if missing.
        :return: float32 tensor or ``None``.
        """
        value = self._get(name, shape, required)
        if value is None:
            return None
        if value.dtype.kind not in 'fiu':
            raise DatasetError(f'{self.path}: field {name!r} must be numeric, got {value.dtype}')
        if not np.isfinite(value).all():
            bad = int((~np.isfinite(value)).reshape(value.shape[0], -1).any(1).sum())
            raise DatasetError(f'{self.path}: field {name!r} contains NaN or inf '
                               f'({bad} row(s))')
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64)).float()

    def int(self, name: str, required: bool = False) -> Optional[torch.Tensor]:
        """
        Read an integer [N] field.

        :param name: field name.
        :param required: raise if missing.
        :return: int64 tensor or ``None``.
        """
        value = self._get(name, ('N',), required)
        if value is None:
            return None
        if value.dtype.kind not in 'iu':
            raise DatasetError(f'{self.path}: field {name!r} must be integer (int64 [N]), '
                               f'got {value.dtype}')
        return torch.from_numpy(value.astype(np.int64))

    def string(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """
        Read a 0-d string field.

        :param name: field name.
        :param default: value when missing.
        :return: the string.
        """
        if name not in self.arrays:
            return default
        value = self.arrays[name]
        if value.ndim != 0 or value.dtype.kind not in 'US':
            raise DatasetError(f'{self.path}: field {name!r} must be a 0-d string array, '
                               f'got {value.dtype} {list(value.shape)}')
        return str(value)

    def scalar(self, name: str) -> Optional[float]:
        """
        Read an optional positive 0-d number (e.g. ``fps``).

        :param name: field name.
        :return: the value or ``None``.
        """
        if name not in self.arrays:
            return None
        value = self.arrays[name]
        if value.size != 1 or value.dtype.kind not in 'fiu' or not np.isfinite(value).all() \
                or float(value.reshape(())) <= 0:
            raise DatasetError(f'{self.path}: field {name!r} must be one positive number, '
                               f'got {value!r}')
        return float(value.reshape(()))

    def _get(self, name, shape, required):
        if name not in self.arrays:
            if required:
                raise DatasetError(f'{self.path}: missing field {name!r}')
            return None
        value = self.arrays[name]
        if self.n is None and shape and shape[0] == 'N':
            self.n = int(value.shape[0]) if value.ndim else -1
        want = tuple(self.n if s == 'N' else s for s in shape)
        ok = value.ndim == len(want) and all(w is None or w == g
                                             for w, g in zip(want, value.shape))
        if not ok:
            text = ', '.join('?' if s is None else str(s) for s in shape)
            raise DatasetError(f'{self.path}: field {name!r} has shape {list(value.shape)}, '
                               f'expected [{text}] with N = {self.n}')
        return value


def read_pose(reader: FieldReader, rotmat_name: str, aa_name: str) -> torch.Tensor:
    """
    Read a pose given as rotation matrices or as axis-angle.

    :param reader: the file's reader.
    :param rotmat_name: name of the [N, 24, 3, 3] field.
    :param aa_name: name of the [N, 72] axis-angle field.
    :return: [N, 24, 3, 3] float32 rotations.
    """
    if reader.has(rotmat_name):
        rotmats = reader.float(rotmat_name, ('N', 24, 3, 3))
        ortho = rotmats @ rotmats.transpose(-1, -2) - torch.eye(3)
        if rotmats.shape[0] and float(ortho.abs().max()) > 1e-3:
            raise DatasetError(f'{reader.path}: field {rotmat_name!r} holds matrices that are '
                               f'not rotations (max |R R^T - I| = {float(ortho.abs().max()):.3g})')
        return rotmats
    if reader.has(aa_name):
        aa = reader.float(aa_name, ('N', 72))
        return axis_angle_to_matrix(aa.double().reshape(-1, 24, 3)).float()
    raise DatasetError(f'{reader.path}: missing field {rotmat_name!r} (or {aa_name!r})')


@dataclasses.dataclass
class TrainingData:
    """
    A validated training set (N rows).

    :param path: the file it came from.
    :param rotmats: [N, 24, 3, 3] SMPL rotations, camera frame root.
    :param betas: [N, 10] shape (zeros when the file has none).
    :param cond: [N, C] conditioning features; C = 0 for an unconditional prior.
    :param cond_source: ``'cond'``, ``'keypoints'`` or ``'none'``.
    :param keypoint_layout: layout of the keypoints the features came from, if any.
    :param has_betas: whether the file gave shape.
    :param meta: provenance strings (``source``, ``licence``) and ``fps``.
    """

    path: str
    rotmats: torch.Tensor
    betas: torch.Tensor
    cond: torch.Tensor
    cond_source: str
    keypoint_layout: Optional[str]
    has_betas: bool
    meta: Dict[str, object]

    @property
    def num_rows(self) -> int:
        """N."""
        return int(self.rotmats.shape[0])

    @property
    def cond_dim(self) -> int:
        """C (0: no conditioning)."""
        return int(self.cond.shape[1])


def load_training_data(path: str, cond_source: str = 'auto') -> TrainingData:
    """
    Read and validate a ``train.npz``.

    :param path: the file.
    :param cond_source: ``'cond'`` (the file's ``cond``), ``'keypoints'`` (features of
        its ``keypoints_2d``, :func:`keypoint_features`), ``'none'`` (unconditional) or
        ``'auto'`` (``cond`` if present, else keypoints if present, else none).
    :return: the data.
    """
    if cond_source not in COND_SOURCES:
        raise DatasetError(f'cond_source must be one of {COND_SOURCES}, got {cond_source!r}')
    reader = FieldReader(path, read_npz(path))
    rotmats = read_pose(reader, 'pose_rotmat', 'pose_aa')
    n = rotmats.shape[0]
    if n == 0:
        raise DatasetError(f'{path}: no rows (N = 0)')
    reader.n = n
    betas = reader.float('betas', ('N', 10), required=False)
    layout = reader.string('keypoint_layout')
    keypoints = None
    if reader.has('keypoints_2d'):
        keypoints = read_keypoints(reader, layout)
    for name in ('cam_t',):
        reader.float(name, ('N', 3), required=False)
    for name in ('focal_px', 'center_px', 'image_size'):
        reader.float(name, ('N', 2), required=False)
    reader.float('joints_3d', ('N', 24, 3), required=False)
    for name in ('sequence_id', 'frame_index', 'view_id'):
        reader.int(name)
    if cond_source == 'auto':
        cond_source = ('cond' if reader.has('cond') else
                       'keypoints' if keypoints is not None else 'none')
    if cond_source == 'cond':
        cond = reader.float('cond', ('N', None))
    elif cond_source == 'keypoints':
        if keypoints is None:
            raise DatasetError(f'{path}: missing field {"keypoints_2d"!r} (needed for '
                               'keypoint features)')
        cond = keypoint_features(keypoints).float()
    else:
        cond = torch.zeros(n, 0)
    meta = {'source': reader.string('source', ''), 'licence': reader.string('licence', ''),
            'fps': reader.scalar('fps')}
    return TrainingData(path=path, rotmats=rotmats,
                        betas=betas if betas is not None else torch.zeros(n, 10), cond=cond,
                        cond_source=cond_source,
                        keypoint_layout=layout if keypoints is not None else None,
                        has_betas=betas is not None, meta=meta)


def read_keypoints(reader: FieldReader, layout: Optional[str]) -> torch.Tensor:
    """
    Read [N, K, 3] keypoints of the file's layout.

    Coordinates may be NaN where the confidence is 0 (a missing detection); the
    confidences themselves must be finite.
    """
    field = 'keypoints_2d'
    if layout is None:
        raise DatasetError(f'{reader.path}: field {"keypoint_layout"!r} is required with '
                           f'{field!r}')
    try:
        k = get_layout(layout).num_joints
    except ValueError as err:
        raise DatasetError(f'{reader.path}: field {"keypoint_layout"!r}: {err}') from None
    value = reader._get(field, ('N', k, 3), True)
    if value.dtype.kind not in 'fiu':
        raise DatasetError(f'{reader.path}: field {field!r} must be numeric, got {value.dtype}')
    conf = value[..., 2]
    bad = ~np.isfinite(conf) | (~np.isfinite(value[..., :2]).all(-1) & (conf != 0))
    if bad.any():
        raise DatasetError(f'{reader.path}: field {field!r} contains NaN or inf in '
                           f'{int(bad.any(1).sum())} row(s) (allowed only in the coordinates '
                           'of keypoints with confidence 0)')
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
