"""Tests of the joint sets and index maps in scorehmr_ros.body.layouts."""

import dataclasses

import pytest

from scorehmr_ros.body import layouts as L


def test_smpl_joint_names_and_tree():
    assert len(L.SMPL_JOINT_NAMES) == 24
    assert len(set(L.SMPL_JOINT_NAMES)) == 24
    assert L.SMPL_JOINT_NAMES[0] == 'pelvis'
    assert L.SMPL_JOINT_NAMES[18] == 'left_elbow'
    assert L.SMPL_JOINT_NAMES[23] == 'right_hand'
    assert L.SMPL_PARENTS == [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16,
                              17, 18, 19, 20, 21]
    # Parents precede children, so a forward pass over joint ids is a valid traversal.
    assert all(0 <= p < j for j, p in enumerate(L.SMPL_PARENTS) if j > 0)


def test_left_right_names_are_mirrored_in_the_tree():
    names = L.SMPL_JOINT_NAMES
    for j, name in enumerate(names):
        if name.startswith('left_'):
            right = names.index('right_' + name[len('left_'):])
            parent_l, parent_r = L.SMPL_PARENTS[j], L.SMPL_PARENTS[right]
            assert names[parent_l].replace('left_', '') == \
                names[parent_r].replace('right_', '')


def test_smplx45_names():
    assert len(L.SMPLX45_JOINT_NAMES) == 45 == L.NUM_SMPLX45_JOINTS
    assert len(set(L.SMPLX45_JOINT_NAMES)) == 45
    assert L.SMPLX45_JOINT_NAMES[24] == 'nose'
    assert L.SMPLX45_JOINT_NAMES[29] == 'left_big_toe'
    assert L.SMPLX45_JOINT_NAMES[44] == 'right_pinky'
    assert set(L.SMPLX_VERTEX_JOINT_IDS) == set(L.SMPLX_VERTEX_JOINT_NAMES)


def test_vertex_ids_match_installed_smplx():
    from smplx.vertex_ids import vertex_ids
    smplh = vertex_ids['smplh']
    for name, key in L.SMPLX_VERTEX_ID_KEYS.items():
        assert L.SMPLX_VERTEX_JOINT_IDS[name] == smplh[key], name
    assert L.SMPLX_VERTEX_JOINT_IDS['nose'] == 332
    assert L.SMPLX_VERTEX_JOINT_IDS['right_heel'] == 6787


def test_vertex_joint_order_matches_smplx_selector():
    from smplx.vertex_ids import vertex_ids
    from smplx.vertex_joint_selector import VertexJointSelector
    selector = VertexJointSelector(vertex_ids=vertex_ids['smplh'])
    assert selector.extra_joints_idxs.tolist() == list(L.smplx_vertex_joint_ids())


def test_body25_map():
    assert L.SMPLX45_TO_BODY25 == [24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7,
                                   25, 26, 27, 28, 29, 30, 31, 32, 33, 34]
    assert len(L.BODY25_JOINT_NAMES) == 25
    for body25_name, index in zip(L.BODY25_JOINT_NAMES, L.SMPLX45_TO_BODY25):
        expected = 'pelvis' if body25_name == 'mid_hip' else body25_name
        assert L.SMPLX45_JOINT_NAMES[index] == expected


def test_coco17_map():
    assert len(L.COCO17_JOINT_NAMES) == 17 == len(L.SMPLX45_TO_COCO17)
    for name, index in zip(L.COCO17_JOINT_NAMES, L.SMPLX45_TO_COCO17):
        assert L.SMPLX45_JOINT_NAMES[index] == name


def test_scorehmr44_constants():
    assert len(L.SCOREHMR44_JOINT_NAMES) == 44
    assert L.SCOREHMR44_JOINT_NAMES[:25] == L.BODY25_JOINT_NAMES
    assert L.SCOREHMR44_LSP14 == list(range(25, 38)) + [43]
    assert len(L.SCOREHMR44_LSP14) == 14
    assert L.SCOREHMR44_PELVIS == 39
    assert 'pelvis' in L.SCOREHMR44_JOINT_NAMES[L.SCOREHMR44_PELVIS]
    assert list(range(44))[L.SCOREHMR44_GT_SLICE] == list(range(25, 44))


@pytest.mark.parametrize('name', sorted(L.LAYOUTS))
def test_layout_indices_valid(name):
    layout = L.get_layout(name)
    assert layout.name == name
    assert layout.num_joints == len(layout.joint_names)
    assert len(set(layout.joint_names)) == layout.num_joints
    if layout.indices is None:
        assert name == 'scorehmr44'
    else:
        assert len(layout.indices) == layout.num_joints
        assert all(0 <= i < 45 for i in layout.indices)


def test_layout_sizes():
    sizes = {name: layout.num_joints for name, layout in L.LAYOUTS.items()}
    assert sizes == {'smpl24': 24, 'smplx45': 45, 'body25': 25, 'scorehmr44': 44,
                     'coco17': 17}


def test_layout_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        L.get_layout('body25').name = 'x'


@pytest.mark.parametrize('bad', ['body_25', 'BODY25', '', None])
def test_get_layout_unknown(bad):
    with pytest.raises(ValueError) as info:
        L.get_layout(bad)
    message = str(info.value)
    assert repr(bad) in message
    for name in L.LAYOUTS:
        assert name in message
