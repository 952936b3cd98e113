"""
The body model: SMPL (or the synthetic SMPL-format body) through ``smplx.SMPLLayer``.

Dimension letters: B batch, V vertices (6890), K keypoints of a layout. Outputs are in
the body frame (no translation), metres, SMPL axes (y up, facing +z).
"""

import contextlib
import io
import logging
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Tuple

import smplx
from smplx.lbs import blend_shapes, vertices2joints
from smplx.utils import Struct
import torch

from scorehmr_ros.body.anny import (
    anny_body_path, ANNY_MODEL_NAME, ANNY_SOURCE_PREFIX, is_anny_file, load_anny_arrays)
from scorehmr_ros.body.layouts import (
    get_layout, NUM_EXTRA_JOINTS, NUM_SMPL_JOINTS, SMPL_PARENTS, SMPLX45_TO_BODY25)
from scorehmr_ros.body.smpl_file import (
    load_extra_regressor, load_smpl_arrays, PathLike, SmplArrays, with_extra_regressor)
from scorehmr_ros.body.synthetic import make_synthetic_smpl

_LOG = logging.getLogger(__name__)

NUM_BETAS = 10
# smplx joint copied into the 19 ScoreHMR extra joints when no extra regressor is loaded.
PLACEHOLDER_JOINT = 0  # pelvis


class BodyOutput(NamedTuple):
    """
    Posed body in the body frame.

    :param vertices: [B, V, 3] posed mesh vertices, metres
    :param joints45: [B, 45, 3] smplx joints: 24 SMPL joints then 21 vertex joints
    """

    vertices: torch.Tensor
    joints45: torch.Tensor


class BodyModel(torch.nn.Module):
    """
    SMPL-format body model with ScoreHMR's keypoint layouts.

    The arrays reach ``smplx.SMPLLayer`` through ``data_struct``, so smplx never opens
    or unpickles a model file itself. All model arrays are buffers: ``.to(device,
    dtype)`` moves and casts them (float32 and float64 are supported). As in smplx, the
    arrays pass through float32 on the way in, also for ``dtype=torch.float64``.

    :param arrays: validated model arrays (licensed SMPL or the synthetic body)
    :param dtype: floating dtype of the buffers
    """

    def __init__(self, arrays: SmplArrays, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.arrays_source = arrays.source
        self.is_synthetic = bool(arrays.is_synthetic)
        if arrays.source.startswith(ANNY_SOURCE_PREFIX):
            self.name = ANNY_MODEL_NAME
        else:
            self.name = 'synthetic SMPL-format body' if self.is_synthetic else 'SMPL'
        self.num_vertices = arrays.num_vertices
        self.parents: Tuple[int, ...] = tuple(SMPL_PARENTS)
        self.smpl = _make_smpl_layer(arrays, dtype)
        extra = arrays.J_regressor_extra
        self.has_extra_regressor = extra is not None
        self.register_buffer(
            'J_regressor_extra',
            torch.tensor(extra, dtype=dtype) if extra is not None else None)

    @classmethod
    def from_config(cls, model_path: Optional[PathLike],
                    extra_regressor: Optional[PathLike] = None,
                    dtype: torch.dtype = torch.float32) -> 'BodyModel':
        """
        Build the body model named by the configuration.

        :param model_path: licensed SMPL ``.pkl``/``.npz`` (or a directory holding one);
            ``'anny'`` the cached anny-derived body (generated on first use, see
            :mod:`scorehmr_ros.body.anny`) or a file written by its generator; None
            selects the synthetic SMPL-format body
        :param extra_regressor: optional [19, V] ``J_regressor_extra`` file
        :param dtype: floating dtype of the buffers
        :return: the model
        :raises SmplFileError: if a configured file is missing, unsafe or malformed
        """
        if model_path is None:
            arrays = make_synthetic_smpl()
            if extra_regressor is not None:
                arrays = with_extra_regressor(arrays, load_extra_regressor(extra_regressor))
            _LOG.info('body model: the synthetic SMPL-format body (generated, not SMPL); '
                      'set body.model_path to a licensed SMPL file for real SMPL')
        elif str(model_path) == 'anny' or is_anny_file(model_path):
            if extra_regressor is not None:
                raise ValueError('body.extra_regressor indexes SMPL vertices; it cannot be '
                                 'used with the anny-derived body')
            path = anny_body_path() if str(model_path) == 'anny' else model_path
            arrays = load_anny_arrays(path)
            _LOG.info('body model: the anny-derived SMPL-format body from %s (CC0 data, '
                      'not SMPL)', path)
        else:
            arrays = load_smpl_arrays(model_path, extra_regressor=extra_regressor)
        return cls(arrays, dtype=dtype)

    @property
    def faces(self) -> torch.Tensor:
        """[F, 3] int64 triangle vertex indices."""
        return self.smpl.faces_tensor

    def forward(self, rotmats: torch.Tensor, betas: torch.Tensor) -> BodyOutput:
        """
        Pose and shape the body.

        :param rotmats: [B, 24, 3, 3] rotation matrices, SMPL order (global orientation
            first); gradients flow through them
        :param betas: [B, 10] shape coefficients
        :return: vertices [B, V, 3] and joints45 [B, 45, 3], body frame, metres
        :raises ValueError: on wrong shapes
        """
        if rotmats.dim() != 4 or rotmats.shape[1:] != (NUM_SMPL_JOINTS, 3, 3):
            raise ValueError(
                f'rotmats must have shape [B, 24, 3, 3], got {list(rotmats.shape)}')
        if betas.shape != (rotmats.shape[0], NUM_BETAS):
            raise ValueError(
                f'betas must have shape [B={rotmats.shape[0]}, {NUM_BETAS}], got '
                f'{list(betas.shape)}')
        out = self.smpl(betas=betas, global_orient=rotmats[:, :1], body_pose=rotmats[:, 1:],
                        pose2rot=False)
        return BodyOutput(vertices=out.vertices, joints45=out.joints)

    def keypoints(self, output: BodyOutput, layout: str) -> torch.Tensor:
        """
        Select or regress the keypoints of a layout.

        ``'scorehmr44'`` is BODY_25 followed by ``J_regressor_extra @ vertices``. Without
        an extra regressor (:attr:`has_extra_regressor` False) those 19 joints are
        placeholders, copies of the pelvis; ScoreHMR's guidance zeroes their confidence
        anyway, but they must not be used for evaluation.

        :param output: result of :meth:`forward`
        :param layout: a name of :data:`scorehmr_ros.body.layouts.LAYOUTS`
        :return: [B, K, 3] keypoints, body frame, metres
        :raises ValueError: on an unknown layout name
        """
        spec = get_layout(layout)
        joints = output.joints45
        if spec.indices is not None:
            return joints[:, _index(spec.indices, joints.device)]
        body25 = joints[:, _index(SMPLX45_TO_BODY25, joints.device)]
        if self.J_regressor_extra is not None:
            extra = torch.einsum('jv,bvc->bjc', self.J_regressor_extra, output.vertices)
        else:
            extra = joints[:, PLACEHOLDER_JOINT:PLACEHOLDER_JOINT + 1].expand(
                -1, NUM_EXTRA_JOINTS, -1)
        return torch.cat([body25, extra], dim=1)

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """
        Regress the rest-pose joints of shaped bodies.

        :param betas: [B, 10] shape coefficients
        :return: [B, 24, 3] rest joints, metres
        """
        v_shaped = self.smpl.v_template + blend_shapes(betas, self.smpl.shapedirs)
        return vertices2joints(self.smpl.J_regressor, v_shaped)

    def extra_repr(self) -> str:
        return (f'name={self.name!r}, num_vertices={self.num_vertices}, '
                f'has_extra_regressor={self.has_extra_regressor}')


def _index(indices: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(indices, dtype=torch.long, device=device)


def _make_smpl_layer(arrays: SmplArrays, dtype: torch.dtype) -> smplx.SMPLLayer:
    """
    Build ``smplx.SMPLLayer`` from in-memory arrays.

    :param arrays: validated model arrays
    :param dtype: floating dtype of the buffers
    :return: the layer; with ``data_struct`` given, smplx never reads ``model_path``
    """
    struct = Struct(
        v_template=arrays.v_template, shapedirs=arrays.shapedirs, posedirs=arrays.posedirs,
        J_regressor=arrays.J_regressor, weights=arrays.weights,
        kintree_table=arrays.kintree_table, f=arrays.f)
    captured = io.StringIO()
    # smplx prints a warning for models with fewer than 300 shape directions (every
    # 10-beta SMPL file); keep it off stdout and in the log instead.
    with contextlib.redirect_stdout(captured):
        layer = smplx.SMPLLayer(model_path=_smpl_model_dir(arrays), data_struct=struct,
                                num_betas=NUM_BETAS, dtype=dtype)
    if captured.getvalue().strip():
        _LOG.debug('smplx: %s', captured.getvalue().strip())
    return layer


def _smpl_model_dir(arrays: SmplArrays) -> str:
    """
    Return the directory smplx is told the model lives in (never read).

    :param arrays: model arrays
    :return: the source file's directory, or '' for generated bodies
    """
    if arrays.is_synthetic and arrays.source.startswith(('synthetic', ANNY_SOURCE_PREFIX)):
        return ''
    return str(Path(arrays.source).parent)
