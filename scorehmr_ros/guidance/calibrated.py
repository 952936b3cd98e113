"""
Calibrated multi-view guidance: one body per person, reprojected into every view.

Rows sharing a ``view_group`` are views of one person. With each row's extrinsics
(``world_to_camera``), the group has ONE diffusion state, held in the optical frame of an
anchor view (the view with the largest summed keypoint confidence), and one body-to-anchor
translation. The denoiser is conditioned on the anchor view's features: the prior was
trained on camera-frame poses with one image's features, so one view's features are the
input it knows (averaging eps over views would not be the score of one distribution).

Geometry. SMPL rotates the body about its rest pelvis ``J0``, so a body posed in the anchor
camera with root rotation ``R0`` and translation ``t_a`` is, in a camera ``v`` with relative
transform ``p_v = R_va p_a + t_va``, the same SMPL body with root ``R_va R0`` and
translation ``R_va (J0 + t_a) + t_va - J0``. The keypoint loss of the group is the sum of
the per-view L_repr (each with that view's intrinsics and per-keypoint confidences), so a
view without the person's keypoints (confidence 0) drops out with weight 0.

Rows whose extrinsics are non-finite (missing or stale camera) are split off into groups
of their own and refined as single views.
"""

import dataclasses
from typing import Optional

import torch

from scorehmr_ros.guidance.losses import keypoint_reprojection_loss


@dataclasses.dataclass
class CalibratedGroups:
    """
    How the rows of one call form calibrated groups (B rows, G groups).

    :param row_group: [B] int64 group of each row.
    :param anchor_row: [G] int64 anchor row of each group.
    :param calibrated: [G] bool, the group's anchor has extrinsics (world pose known).
    :param rel_rot: [B, 3, 3] rotation from the anchor camera to the row's camera.
    :param rel_t: [B, 3] translation of that transform, metres.
    :param anchor_to_world: [G, 4, 4] float64 anchor-camera-to-world (NaN if uncalibrated).
    :param split_rows: rows without extrinsics (refined as single views).
    """

    row_group: torch.Tensor
    anchor_row: torch.Tensor
    calibrated: torch.Tensor
    rel_rot: torch.Tensor
    rel_t: torch.Tensor
    anchor_to_world: torch.Tensor
    split_rows: int

    @property
    def num_groups(self) -> int:
        """G."""
        return int(self.anchor_row.shape[0])


@dataclasses.dataclass
class GroupResult:
    """
    Per-person outputs of calibrated multi-view refinement (G groups, S samples).

    :param row_group: [B] group of each input row.
    :param anchor_row: [G] row whose camera frame holds the group's state (the rows of
        :class:`~scorehmr_ros.refiner.RefinementResult` give the body in every row's camera).
    :param calibrated: [G] False for a group of one row without extrinsics.
    :param world_rotmats: [G, S, 24, 3, 3] the body with its root orientation in the world
        frame (NaN where not calibrated).
    :param world_t: [G, S, 3] body-to-world translation, metres (SMPL convention: the
        world pelvis is ``rest pelvis + world_t``; NaN where not calibrated).
    :param world_pelvis: [G, S, 3] pelvis position in the world, metres.
    :param num_views: [G] views that had at least one confident keypoint.
    """

    row_group: torch.Tensor
    anchor_row: torch.Tensor
    calibrated: torch.Tensor
    world_rotmats: torch.Tensor
    world_t: torch.Tensor
    world_pelvis: torch.Tensor
    num_views: torch.Tensor


def build_groups(view_group: Optional[torch.Tensor], world_to_camera: torch.Tensor,
                 conf: torch.Tensor) -> CalibratedGroups:
    """
    Group rows, pick anchors and compute the anchor-to-view transforms.

    :param view_group: [B] person index of each row, or None (all rows one person).
    :param world_to_camera: [B, 4, 4] extrinsics; non-finite rows are uncalibrated.
    :param conf: [B, K] guiding keypoint confidences (anchor = largest sum; ties: first).
    :return: the grouping, on the device of ``conf``.
    """
    b = conf.shape[0]
    device = conf.device
    w2c = world_to_camera.detach().to('cpu', torch.float64)
    valid = torch.isfinite(w2c).all(dim=-1).all(dim=-1)
    people = (torch.zeros(b, dtype=torch.long) if view_group is None
              else view_group.detach().to('cpu').long())
    # Rows without extrinsics cannot share a body with other views: one group each.
    keys = [(int(people[r]), -1) if bool(valid[r]) else (int(people[r]), r) for r in range(b)]
    order = {key: index for index, key in enumerate(dict.fromkeys(keys))}
    row_group = torch.tensor([order[key] for key in keys], dtype=torch.long)
    score = conf.detach().to('cpu', torch.float64).sum(dim=-1)
    anchors = []
    for g in range(len(order)):
        members = torch.nonzero(row_group == g).flatten()
        anchors.append(int(members[torch.argmax(score[members])]))
    anchor_row = torch.tensor(anchors, dtype=torch.long)
    anchor_to_world = torch.full((len(anchors), 4, 4), float('nan'), dtype=torch.float64)
    rel = torch.eye(4, dtype=torch.float64).repeat(b, 1, 1)
    for g, a in enumerate(anchors):
        if bool(valid[a]):
            anchor_to_world[g] = torch.linalg.inv(w2c[a])
    for r in range(b):
        g = int(row_group[r])
        if bool(valid[r]) and r != anchors[g]:
            rel[r] = w2c[r] @ anchor_to_world[g]
    dtype = conf.dtype
    return CalibratedGroups(
        row_group=row_group.to(device), anchor_row=anchor_row.to(device),
        calibrated=valid[anchor_row].to(device), rel_rot=rel[:, :3, :3].to(device, dtype),
        rel_t=rel[:, :3, 3].to(device, dtype), anchor_to_world=anchor_to_world.to(device),
        split_rows=int((~valid).sum()))


def multiview_keypoint_loss(joints_3d: torch.Tensor, translation: torch.Tensor,
                            row_state: torch.Tensor, rel_rot: torch.Tensor, rel_t: torch.Tensor,
                            target_px: torch.Tensor, conf: torch.Tensor,
                            focal_px: torch.Tensor, center_px: torch.Tensor,
                            image_size: torch.Tensor, sigma_px: float,
                            view_mean: bool = True):
    """
    Sum (or mean) over views of L_repr of one body per group.

    ``view_mean`` divides each group's sum by its number of views with at least one
    confident keypoint, so the step size rho_keypoints keeps the meaning it has for one
    view (the summed gradient of V views overshoots with the single-view rho; measured in
    docs/multiview_temporal.md). Views without a confident keypoint add 0 either way.

    :param joints_3d: [M, K, 3] body keypoints of each group state (body frame).
    :param translation: [M, 3] body-to-anchor-camera translation of each state.
    :param row_state: [N] int64 state of each view row.
    :param rel_rot: [N, 3, 3] anchor-to-view rotation of each row.
    :param rel_t: [N, 3] anchor-to-view translation of each row.
    :param target_px: [N, K, 2] observed keypoints of each row.
    :param conf: [N, K] confidences (0 drops a keypoint, all 0 drops the view).
    :param focal_px: [N, 2] focal lengths of the row's camera.
    :param center_px: [N, 2] principal points.
    :param image_size: [N, 2] image ``(height, width)``.
    :param sigma_px: Geman-McClure scale.
    :param view_mean: divide by the number of contributing views.
    :return: ``(loss per state [M], loss per row [N])``.
    """
    in_anchor = joints_3d[row_state] + translation[row_state][:, None, :]
    row_loss = keypoint_reprojection_loss(in_anchor, rel_t, target_px, conf, focal_px,
                                          center_px, image_size, sigma_px, rotation=rel_rot)
    state_loss = row_loss.new_zeros(joints_3d.shape[0]).index_add(0, row_state, row_loss)
    if view_mean:
        state_loss = state_loss / views_per_state(row_state, conf,
                                                  joints_3d.shape[0]).clamp_min(1)
    return state_loss, row_loss


def views_per_state(row_state: torch.Tensor, conf: torch.Tensor, num_states: int
                    ) -> torch.Tensor:
    """
    Count the view rows with at least one confident keypoint, per state.

    :param row_state: [N] int64 state of each view row.
    :param conf: [N, K] keypoint confidences of the rows.
    :param num_states: M.
    :return: [M] counts, in ``conf``'s dtype.
    """
    return conf.new_zeros(num_states).index_add(0, row_state,
                                                (conf > 0).any(dim=-1).to(conf.dtype))


def average_start(rotmats: torch.Tensor, cam_t: torch.Tensor, rest_pelvis: torch.Tensor,
                  groups: CalibratedGroups):
    """
    Robust start of each group from all its views, in the anchor camera frame.

    Every rotation (root mapped into the anchor frame) is the chordal L2 mean over the
    group's views (mean of matrices projected to SO(3)); the pelvis is the per-coordinate
    median of the views' pelvis positions mapped into the anchor frame.

    :param rotmats: [B, 24, 3, 3] per-row estimates (root in the row's camera).
    :param cam_t: [B, 3] per-row body-to-camera translations.
    :param rest_pelvis: [B, 3] rest pelvis of each row's shape.
    :param groups: the grouping.
    :return: ``(rotmats [G, 24, 3, 3], cam_t [G, 3])`` relative to the anchor camera.
    """
    inv_rot = groups.rel_rot.transpose(1, 2)
    mapped = rotmats.clone()
    mapped[:, 0] = inv_rot @ rotmats[:, 0]
    pelvis = torch.einsum('bij,bj->bi', inv_rot, rest_pelvis + cam_t - groups.rel_t)
    g = groups.num_groups
    summed = rotmats.new_zeros(g, 24, 3, 3).index_add(0, groups.row_group, mapped)
    u, _, vh = torch.linalg.svd(summed)
    fix = torch.ones(g, 24, 3, dtype=rotmats.dtype, device=rotmats.device)
    fix[..., -1] = torch.sign(torch.linalg.det(u @ vh))
    mean_rot = u @ torch.diag_embed(fix) @ vh
    out_t = torch.empty(g, 3, dtype=cam_t.dtype, device=cam_t.device)
    for index in range(g):
        members = groups.row_group == index
        out_t[index] = pelvis[members].median(dim=0).values - rest_pelvis[groups.anchor_row[index]]
    return mean_rot, out_t


def to_view(rotmats: torch.Tensor, cam_t: torch.Tensor, rest_pelvis: torch.Tensor,
            rot: torch.Tensor, trans: torch.Tensor):
    """
    Express bodies given in one frame in another (``p' = rot p + trans``).

    :param rotmats: [N, 24, 3, 3] bodies (root in the source frame).
    :param cam_t: [N, 3] body-to-source translations.
    :param rest_pelvis: [N, 3] rest pelvis of each body's shape.
    :param rot: [N, 3, 3] source-to-target rotation.
    :param trans: [N, 3] source-to-target translation.
    :return: ``(rotmats [N, 24, 3, 3], cam_t [N, 3])`` in the target frame.
    """
    out = rotmats.clone()
    out[:, 0] = rot @ rotmats[:, 0]
    pelvis = torch.einsum('nij,nj->ni', rot, rest_pelvis + cam_t) + trans
    return out, pelvis - rest_pelvis
