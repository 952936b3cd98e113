"""BVH reader: the bvhtools test files, forward kinematics by hand, corrupt files, fuzzing."""

from pathlib import Path
import re

from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest

from scorehmr_ros.mocap.bvh import (
    BvhError, euler_to_matrix, forward_kinematics, parse_bvh, read_bvh)

MOCAP_DIR = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'mocap'

TINY = """HIERARCHY
ROOT root
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT a
  {
    OFFSET 1 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 2 0
    }
  }
  JOINT b
  {
    OFFSET 0 5 7
    CHANNELS 2 Yposition Xrotation
  }
}
MOTION
Frames: 2
Frame Time: 0.5
1 2 3 90 0 0 0 0 0 4 0
0 0 0 0 0 0 90 90 0 4 30
"""


def mocap_file(name):
    """Path of a bvhtools test file in the shared data folder, or skip."""
    path = MOCAP_DIR / name
    if not path.is_file():
        pytest.skip(f'{path} is absent (the shared mocap data lives in <repo>/../shared)')
    return path


def test_reads_the_smpl_named_bvhtools_file():
    bvh = read_bvh(mocap_file('bvhtools_test.bvh'))
    assert bvh.num_frames == 7184 and bvh.num_joints == 22
    assert bvh.fps == pytest.approx(30.0, abs=1e-3)
    assert bvh.joint_names[:5] == ('Hips', 'LeftUpLeg', 'LeftLeg', 'LeftFoot', 'LeftToe')
    assert bvh.channels[0] == ('Xposition', 'Yposition', 'Zposition', 'Zrotation',
                               'Yrotation', 'Xrotation')
    assert all(c == ('Zrotation', 'Yrotation', 'Xrotation') for c in bvh.channels[1:])
    assert bvh.motion.shape == (7184, 69) and np.isfinite(bvh.motion).all()
    assert bvh.parents[bvh.index('LeftForeArm')] == bvh.index('LeftArm')
    np.testing.assert_allclose(bvh.offsets[bvh.index('LeftLeg')], [43.5, -0.000042, 0.00001])
    kin = forward_kinematics(bvh, np.arange(0, 7184, 50))
    # The root's position channels are its world position.
    np.testing.assert_allclose(kin.positions[:, 0], bvh.motion[::50, :3])
    # Bone lengths are kept in every frame.
    lengths = np.linalg.norm(kin.positions[:, 2] - kin.positions[:, 1], axis=1)
    np.testing.assert_allclose(lengths, np.linalg.norm(bvh.offsets[2]), rtol=1e-9)


def test_reads_the_rigify_bvhtools_file():
    bvh = read_bvh(mocap_file('bvhtools_test3.bvh'))
    assert bvh.num_frames == 3089 and bvh.num_joints == 19
    assert bvh.fps == pytest.approx(24.0, abs=1e-3)
    assert {'spine.001', 'shoulder.L', 'thigh.R', 'forearm.L'} <= set(bvh.joint_names)
    assert bvh.channels[bvh.index('shoulder.L')][3:] == ('Yrotation', 'Xrotation', 'Zrotation')
    assert bvh.has_end_site[bvh.index('forearm.L')]
    kin = forward_kinematics(bvh)
    assert np.isfinite(kin.positions).all()
    # Position channels replace the OFFSET: the neck's equal it, so it stays 0.23 m above.
    neck, chest = bvh.index('neck'), bvh.index('spine.001')
    np.testing.assert_allclose(np.linalg.norm(kin.positions[:, neck] - kin.positions[:, chest],
                                              axis=1), np.linalg.norm(bvh.offsets[neck]),
                               atol=1e-5)


def rot_z90():
    return np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def test_forward_kinematics_matches_hand_computed_positions():
    bvh = parse_bvh(TINY, source='tiny.bvh')
    assert bvh.joint_names == ('root', 'a', 'b')
    assert bvh.frame_time_s == 0.5 and list(bvh.channel_start) == [0, 6, 9]
    kin = forward_kinematics(bvh)
    # Frame 0: root at (1, 2, 3) turned 90 deg about z (x -> y).
    np.testing.assert_allclose(kin.global_rotations[0, 0], rot_z90(), atol=1e-12)
    np.testing.assert_allclose(kin.positions[0, 1], [1, 3, 3], atol=1e-12)
    # b: Yposition 4 replaces the offset's y: local (0, 4, 7) -> world (1,2,3) + (-4, 0, 7).
    np.testing.assert_allclose(kin.positions[0, 2], [-3, 2, 10], atol=1e-12)
    end0 = kin.positions[0, 1] + kin.global_rotations[0, 1] @ bvh.end_site_offsets[1]
    np.testing.assert_allclose(end0, [-1, 3, 3], atol=1e-12)
    # Frame 1: a has channels Z X Y = 90, 90, 0: R = Rz(90) @ Rx(90) (file order, intrinsic).
    end1 = kin.positions[1, 1] + kin.global_rotations[1, 1] @ bvh.end_site_offsets[1]
    np.testing.assert_allclose(end1, [1, 0, 2], atol=1e-12)   # Rx first would give (-1,0,0)
    c, s = np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))
    np.testing.assert_allclose(kin.local_rotations[1, 2],
                               [[1, 0, 0], [0, c, -s], [0, s, c]], atol=1e-12)
    np.testing.assert_allclose(kin.positions[1, 2], [0, 4, 7], atol=1e-12)


def test_euler_composition_order():
    angles = np.array([30.0, -50.0, 70.0])
    rz, ry, rx = (euler_to_matrix(np.array([a]), axis) for a, axis in zip(angles, 'ZYX'))
    np.testing.assert_allclose(euler_to_matrix(angles, 'ZYX'), rz @ ry @ rx, atol=1e-12)


def _replace_line(text, old, new):
    assert old in text
    return text.replace(old, new, 1)


CORRUPTIONS = {
    'missing brace': (lambda t: _replace_line(t, '    }\n  }\n  JOINT b', '    }\n  JOINT b'),
                      r'"}"|JOINT'),
    'row too short': (lambda t: _replace_line(t, '90 90 0 4 30', '90 90 0 4'), r'11 values'),
    'row too long': (lambda t: _replace_line(t, '90 90 0 4 30', '90 90 0 4 30 1'), r'11 val'),
    'fewer rows than Frames': (lambda t: _replace_line(t, 'Frames: 2', 'Frames: 3'),
                               r'3 frame rows'),
    'more rows than Frames': (lambda t: _replace_line(t, 'Frames: 2', 'Frames: 1'),
                              r'end of the file'),
    'truncated last frame': (lambda t: t[:-8], r'11 values'),
    'non-numeric value': (lambda t: _replace_line(t, '0 4 30', '0 x4 30'), r'finite number'),
    'NaN value': (lambda t: _replace_line(t, '0 4 30', '0 nan 30'), r'finite number'),
    'infinite value': (lambda t: _replace_line(t, '0 4 30', '0 -inf 30'), r'finite number'),
    'infinite offset': (lambda t: _replace_line(t, 'OFFSET 1 0 0', 'OFFSET 1 inf 0'),
                        r'OFFSET'),
    'short offset': (lambda t: _replace_line(t, 'OFFSET 1 0 0', 'OFFSET 1 0'), r'OFFSET'),
    'unknown channel': (lambda t: _replace_line(t, 'Yposition Xrotation',
                                                'Wposition Xrotation'), r'channel name'),
    'repeated channel': (lambda t: _replace_line(t, 'Yposition Xrotation',
                                                 'Xrotation Xrotation'), r'not yet listed'),
    'duplicate joint name': (lambda t: _replace_line(t, 'JOINT b', 'JOINT a'), r'duplicate'),
    'zero frames': (lambda t: t.split('Frames: 2')[0] + 'Frames: 0\nFrame Time: 0.5\n',
                    r'at least one frame'),
    'bad frame time': (lambda t: _replace_line(t, 'Frame Time: 0.5', 'Frame Time: -1'),
                       r'frame time'),
    'missing MOTION': (lambda t: t.split('MOTION')[0], r'MOTION'),
    'missing HIERARCHY': (lambda t: t.replace('HIERARCHY\n', ''), r'HIERARCHY'),
    'two roots': (lambda t: _replace_line(t, 'MOTION', 'ROOT x\n{\nOFFSET 0 0 0\n}\nMOTION'),
                  r'one ROOT'),
}


@pytest.mark.parametrize('name', sorted(CORRUPTIONS))
def test_corrupt_files_raise_bvh_error_with_file_and_line(name):
    corrupt, pattern = CORRUPTIONS[name]
    with pytest.raises(BvhError) as info:
        parse_bvh(corrupt(TINY), source='bad.bvh')
    message = str(info.value)
    assert re.match(r'bad\.bvh:\d+: ', message), message
    assert 'expected' in message or 'duplicate' in message, message
    assert re.search(pattern, message), message


def test_unreadable_file_raises_bvh_error(tmp_path):
    with pytest.raises(BvhError, match='cannot read'):
        read_bvh(tmp_path / 'absent.bvh')


MUTANT_TOKENS = ['{', '}', 'nan', 'inf', '1e999', '-1e308', 'JOINT', 'End', 'Site', 'OFFSET',
                 'CHANNELS', 'ROOT', 'MOTION', 'Frames:', '7', '0', '-3.5', 'Xrotation',
                 'Xposition', 'abc', '', '1_0', '\n', '99999999999999999999', '0x1p3']
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_parse(text):
    try:
        bvh = parse_bvh(text, source='fuzz.bvh')
    except BvhError:
        return
    for array in (bvh.offsets, bvh.end_site_offsets, bvh.motion):
        assert np.isfinite(array).all()
    assert bvh.frame_time_s > 0 and bvh.num_frames >= 1
    try:
        kin = forward_kinematics(bvh)
    except BvhError:
        return
    for array in kin:
        assert np.isfinite(array).all()


@FUZZ
@given(cut=st.integers(0, len(TINY)))
def test_fuzz_truncation_gives_bvh_error_or_finite_arrays(cut):
    _check_parse(TINY[:cut])


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(MUTANT_TOKENS),
                                st.sampled_from(['replace', 'insert', 'delete'])),
                      min_size=1, max_size=4))
def test_fuzz_token_mutation_gives_bvh_error_or_finite_arrays(edits):
    tokens = re.split(r'(\s+)', TINY)
    for position, token, action in edits:
        index = position % len(tokens)
        if action == 'replace':
            tokens[index] = token
        elif action == 'insert':
            tokens.insert(index, token + ' ')
        else:
            del tokens[index]
    _check_parse(''.join(tokens))
