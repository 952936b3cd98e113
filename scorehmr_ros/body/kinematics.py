"""
Joints-only SMPL kinematics: the smplx joint output without skinning the whole mesh.

Guidance only needs keypoints: the 24 SMPL joints (forward kinematics of the rest
joints) and a few vertex keypoints (nose, eyes, ears, toes, heels, fingertips), which
need blend shapes and skinning of just those vertices. This computes the same 45 joints
as ``smplx.SMPLLayer`` (same formulas, different summation order: equal to ~1e-6 m in
float32) at a small fraction of the cost, and its autograd graph is small too.

Letters: N rows, K vertex keypoints (21), J joints (24).
"""

from typing import List, NamedTuple, Tuple

import torch

from scorehmr_ros.body.layouts import (
    get_layout, NUM_EXTRA_JOINTS, SMPL_PARENTS, SMPLX45_TO_BODY25, SMPLX_VERTEX_JOINT_IDS)
from scorehmr_ros.body.model import BodyModel, PLACEHOLDER_JOINT


class RestState(NamedTuple):
    """
    Shape-dependent quantities, computed once per shape.

    :param joints: [N, 24, 3] rest joints.
    :param bones: [N, 24, 3] rest offset of each joint from its parent (root: unused).
    :param vertices: [N, K, 3] rest positions of the keypoint vertices.
    """

    joints: torch.Tensor
    bones: torch.Tensor
    vertices: torch.Tensor


class JointsOnlyBody(torch.nn.Module):
    """
    The 45 smplx joints of a :class:`BodyModel`, computed without the full mesh.

    :param body: the body model whose arrays are used (not modified).
    :param elementwise: write the 3x3 products as broadcast multiply-adds instead of
        batched matmuls, which a compiler can fuse (slower in eager mode).
    """

    def __init__(self, body: BodyModel, elementwise: bool = False):
        super().__init__()
        self.elementwise = elementwise
        layer = body.smpl
        vertex_ids = torch.as_tensor(list(SMPLX_VERTEX_JOINT_IDS.values()), dtype=torch.long)
        j_reg = layer.J_regressor                      # [24, V]
        shapedirs = layer.shapedirs                    # [V, 3, 10]
        self.register_buffer('joint_template', j_reg @ layer.v_template)          # [24, 3]
        self.register_buffer('joint_shapedirs', torch.einsum('jv,vcl->jcl', j_reg, shapedirs))
        self.register_buffer('vertex_template', layer.v_template[vertex_ids])    # [K, 3]
        self.register_buffer('vertex_shapedirs', shapedirs[vertex_ids])          # [K, 3, 10]
        num_v = layer.v_template.shape[0]
        posedirs = layer.posedirs.reshape(-1, num_v, 3)                          # [207, V, 3]
        self.register_buffer('vertex_posedirs', posedirs[:, vertex_ids].reshape(207, -1))
        self.register_buffer('vertex_weights', layer.lbs_weights[vertex_ids])    # [K, 24]
        self.parents = list(SMPL_PARENTS)
        levels, order = _levels(self.parents)
        # Index tensors are buffers so that they live on the model's device.
        self.num_levels = len(levels)
        for i, (children, parent_pos) in enumerate(levels):
            self.register_buffer(f'level{i}_children', children)
            self.register_buffer(f'level{i}_parent_pos', parent_pos)
        self.register_buffer('order_inverse', torch.argsort(torch.as_tensor(order)))
        self.register_buffer('parent_index', torch.as_tensor(
            [0] + self.parents[1:], dtype=torch.long))

    def rest(self, betas: torch.Tensor) -> RestState:
        """
        Rest joints and keypoint vertices of shaped bodies.

        :param betas: [N, 10] shape.
        :return: the rest state.
        """
        joints = self.joint_template + torch.einsum('nl,jcl->njc', betas, self.joint_shapedirs)
        bones = joints - joints[:, self.parent_index]    # the root's entry (0) is unused
        vertices = self.vertex_template + torch.einsum(
            'nl,kcl->nkc', betas, self.vertex_shapedirs)
        return RestState(joints, bones, vertices)

    def forward(self, rotmats: torch.Tensor, rest: RestState) -> torch.Tensor:
        """
        Pose the joints.

        :param rotmats: [N, 24, 3, 3] local rotations, SMPL order.
        :param rest: :meth:`rest` of the rows' shapes.
        :return: [N, 45, 3] smplx joints (24 SMPL joints, 21 vertex joints), body frame.
        """
        rot_global, joints = self._forward_kinematics(rotmats, rest)
        # Linear blend skinning of the keypoint vertices only.
        n = rotmats.shape[0]
        eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
        pose_feature = (rotmats[:, 1:] - eye).reshape(n, -1)                     # [N, 207]
        offsets = (pose_feature @ self.vertex_posedirs).reshape(n, -1, 3)        # [N, K, 3]
        v_posed = rest.vertices + offsets
        # A_j maps rest to posed space: x -> R_j x + (t_j - R_j J_j).
        trans = joints - self._mv(rot_global, rest.joints)                      # [N, 24, 3]
        if self.elementwise:
            w = self.vertex_weights[None, :, :, None]
            rot_blend = (w[..., None] * rot_global[:, None]).sum(2)
            trans_blend = (w * trans[:, None]).sum(2)
        else:
            rot_blend = torch.einsum('kj,njab->nkab', self.vertex_weights, rot_global)
            trans_blend = torch.einsum('kj,nja->nka', self.vertex_weights, trans)
        vertices = self._mv(rot_blend, v_posed) + trans_blend
        return torch.cat((joints, vertices), dim=1)

    def _mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[..., 3, 3] @ [..., 3, 3]."""
        if self.elementwise:
            return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)
        return a @ b

    def _mv(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """[..., 3, 3] @ [..., 3] -> [..., 3]."""
        if self.elementwise:
            return (a * v[..., None, :]).sum(-1)
        return (a @ v[..., None])[..., 0]

    def _forward_kinematics(self, rotmats: torch.Tensor, rest: RestState
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
        """[N, 24, 3, 3] global rotations and [N, 24, 3] posed joints, level by level."""
        prev_rot = rotmats[:, :1]
        prev_pos = rest.joints[:, :1]
        rots, poss = [prev_rot], [prev_pos]
        for i in range(self.num_levels):
            children = getattr(self, f'level{i}_children')
            parent_pos = getattr(self, f'level{i}_parent_pos')
            parent_rot = prev_rot[:, parent_pos]
            prev_pos = self._mv(parent_rot, rest.bones[:, children]) + prev_pos[:, parent_pos]
            prev_rot = self._mm(parent_rot, rotmats[:, children])
            rots.append(prev_rot)
            poss.append(prev_pos)
        rot_global = torch.cat(rots, dim=1)[:, self.order_inverse]
        joints = torch.cat(poss, dim=1)[:, self.order_inverse]
        return rot_global, joints


def _levels(parents: List[int]):
    """
    Group joints by depth in the kinematic tree.

    :return: ``(levels, order)``: per depth >= 1 the children's joint indices and their
        parents' positions within the previous level; ``order`` lists joints level by
        level (so ``argsort(order)`` restores SMPL order after concatenation).
    """
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    order, levels, prev = [0], [], [0]
    for d in range(1, max(depth) + 1):
        children = [j for j in range(len(parents)) if depth[j] == d]
        parent_pos = [prev.index(parents[j]) for j in children]
        levels.append((torch.as_tensor(children), torch.as_tensor(parent_pos)))
        order.extend(children)
        prev = children
    return levels, order


def keypoints_from_joints45(joints45: torch.Tensor, layout: str) -> torch.Tensor:
    """
    Keypoints of a layout from the 45 smplx joints alone.

    The 44-joint layout's 19 regressed joints need the mesh; here they are placeholder
    copies of the pelvis, which is exact for guidance (their confidence is zero) but
    not for evaluation.

    :param joints45: [N, 45, 3] smplx joints.
    :param layout: layout name of :mod:`scorehmr_ros.body.layouts`.
    :return: [N, K, 3] keypoints.
    """
    spec = get_layout(layout)
    if spec.indices is not None:
        return joints45[:, list(spec.indices)]
    body25 = joints45[:, list(SMPLX45_TO_BODY25)]
    extra = joints45[:, PLACEHOLDER_JOINT:PLACEHOLDER_JOINT + 1].expand(-1, NUM_EXTRA_JOINTS, -1)
    return torch.cat((body25, extra), dim=1)
