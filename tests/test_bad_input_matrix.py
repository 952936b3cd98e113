"""
Bad-input matrix: every malformed input against ONE real node process over DDS.

Each parametrised case publishes one kind of bad input, waits until the diagnostics
counter named for it has grown by the expected amount, then checks that the node still
answers a good frame from both cameras (and, where the case says so, that the bad input
produced no output, or the documented one). Every output received during the whole run
must be finite. ``docs/reliability.md`` is the same matrix in prose: keep them together.

The node is started once for the module (startup dominates otherwise); a case that left
the node in a bad state would make every later case fail, which is what it should do.
"""

import dataclasses
import math
import random
import time
from typing import Callable, Dict, List, Tuple

from conftest import all_finite, require_ros
import numpy as np
import pytest

from scorehmr_ros.body.model import BodyModel
from scorehmr_ros.demo_ros import isolated_ros_env
from scorehmr_ros.synthetic_stream import make_stream

try:
    import rclpy  # noqa: F401 - only to know whether ROS 2 is importable
except ImportError:  # pragma: no cover - depends on the environment
    testbed = None
else:
    from scorehmr_ros.ros import testbed

CAMERAS = ('cam0', 'cam1')
MAX_PEOPLE = 4
STARTUP_TIMEOUT_S = 60.0
COUNTER_TIMEOUT_S = 10.0
FRAME_TIMEOUT_S = 30.0


@dataclasses.dataclass
class Rig:
    """The node process, the testbed and the synthetic views it publishes."""

    node: object
    bed: object
    views: Dict[str, object]
    last_good_ns: int = 0

    def now_ns(self) -> int:
        """A fresh stamp, later than every stamp published so far."""
        self.last_good_ns = max(time.time_ns(), self.last_good_ns + 1_000_000)
        return self.last_good_ns

    def good_frame(self, info: bool = True) -> int:
        """Publish a good frame from every camera; wait for both outputs; its stamp."""
        stamp_ns = self.now_ns()
        for cam in CAMERAS:
            self.bed.publish_view(self.views[cam], stamp_ns, info=info)
        frames = [self.views[c].frame_id for c in CAMERAS]
        got = self.bed.spin_until(
            lambda: all(self.bed.bodies_at(stamp_ns, f) for f in frames)
            or not self.node.alive(), FRAME_TIMEOUT_S)
        assert self.node.alive(), 'the node died:\n' + self.node.output()[-3000:]
        assert got, (f'no output for a good frame; counters {self.bed.counters()}\n'
                     + self.node.output()[-3000:])
        return stamp_ns


@pytest.fixture(scope='module')
def rig(tmp_path_factory):
    require_ros()
    tmp = tmp_path_factory.mktemp('matrix')
    env = isolated_ros_env(tmp / 'ros_log', random.SystemRandom().randint(1, 200))
    namespace = testbed.random_namespace()
    params = testbed.write_params(tmp / 'params.yaml', {
        'cameras': CAMERAS, 'input_qos': 'reliable', 'diagnostics_period_s': 0.1,
        # No camera times out while the matrix waits for slow refinements, and no set is
        # stale; both have their own tests (test_fault_injection.py).
        'camera_timeout_s': 60.0, 'stale_age_s': 0.0, 'max_people': MAX_PEOPLE,
        'max_queue': 8, 'refiner.sampler.outer_iters': 1})
    with pytest.MonkeyPatch.context() as patch:
        for name in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_LOG_DIR'):
            patch.setenv(name, env[name])
        node = testbed.NodeProcess(params, env, namespace, tmp / 'node.log')
        bed = testbed.Testbed(int(env['ROS_DOMAIN_ID']), namespace, CAMERAS)
        try:
            assert bed.spin_until(lambda: bed.ready() or not node.alive(),
                                  STARTUP_TIMEOUT_S) and node.alive(), \
                'node did not start:\n' + node.output()[-3000:]
            frame = make_stream(BodyModel.from_config(None), CAMERAS, num_people=1,
                                num_frames=1, seed=5)[0]
            rig = Rig(node, bed, {v.camera: v for v in frame.views})
            # Detections before any CameraInfo: counted, nothing refined.
            before = bed.fresh_counters()
            bed.publish(CAMERAS[0], 'detections',
                        testbed.detections_msg(rig.views[CAMERAS[0]], rig.now_ns()))
            assert bed.spin_until(lambda: bed.counters().get('no_camera_info', 0)
                                  > before['no_camera_info'], COUNTER_TIMEOUT_S)
            rig.good_frame()
            yield rig
            assert all(all_finite(m) for m in bed.output_messages())
        finally:
            bed.close()
            code, _ = node.stop()
            assert code == 0, node.output()[-3000:]


# ------------------------------------------------------------------------- the cases
#
# A case publishes its bad input and returns what to check:
#   counter, amount: the diagnostics counter and its least increase;
#   absent: (stamp_ns, frame_id) pairs that must never be published;
#   bodies: (stamp_ns, frame_id) -> ids of the bodies the one output at it must carry.


@dataclasses.dataclass
class Expect:
    counter: str
    amount: int = 1
    absent: List[Tuple[int, str]] = dataclasses.field(default_factory=list)
    bodies: Dict[Tuple[int, str], List[int]] = dataclasses.field(default_factory=dict)
    info_next: bool = True  # the good frame after it also sends CameraInfo


def _image(rig, **fields) -> Expect:
    view = rig.views['cam0']
    msg = testbed.image_msg(view, rig.now_ns())
    for name, value in fields.items():
        setattr(msg, name, value)
    rig.bed.publish('cam0', 'image', msg)
    return Expect('bad_image')


def _camera_info(rig, **fields) -> Expect:
    view = rig.views['cam1']
    msg = testbed.camera_info_msg(view, rig.now_ns())
    for name, value in fields.items():
        setattr(msg, name, value)
    rig.bed.publish('cam1', 'camera_info', msg)
    # The next frame sends no CameraInfo: the previous valid intrinsics must be in use.
    return Expect('bad_camera_info', info_next=False)


def _people(rig, mutate: Callable, counter: str, amount: int = 1, kept: bool = False
            ) -> Expect:
    """
    Publish a frame whose cam0 detections are ``mutate(person)``.

    The output for cam0 at that stamp must carry the person if ``kept``, else no body.
    """
    stamp_ns = rig.now_ns()
    view = rig.views['cam0']
    people = mutate(testbed.person_msg(view, 0))
    for cam in CAMERAS:
        rig.bed.publish_view(rig.views[cam], stamp_ns, detections=cam != 'cam0')
    rig.bed.publish('cam0', 'detections', testbed.detections_msg(view, stamp_ns, people))
    ids = [int(view.track_ids[0])] if kept else []
    return Expect(counter, amount, bodies={(stamp_ns, view.frame_id): ids})


def _with(**fields):
    def mutate(person):
        for name, value in fields.items():
            setattr(person, name, value)
        return [person]
    return mutate


def _keypoints(index, x=None, conf=None):
    def mutate(person):
        xy, c = list(person.keypoints_xy), list(person.keypoint_confidence)
        if x is not None:
            xy[2 * index] = x
        if conf is not None:
            c[index] = conf
        person.keypoints_xy, person.keypoint_confidence = xy, c
        return [person]
    return mutate


def _stamped(rig, offset_ns: int, counter: str, amount: int, refined: bool) -> Expect:
    """Detections of both cameras stamped ``offset_ns`` from now."""
    stamp_ns = time.time_ns() + offset_ns
    for cam in CAMERAS:
        rig.bed.publish_view(rig.views[cam], stamp_ns, info=False, image=False)
    keys = [(stamp_ns, rig.views[c].frame_id) for c in CAMERAS]
    if refined:
        return Expect(counter, amount, bodies={
            k: [int(rig.views[c].track_ids[0])] for k, c in zip(keys, CAMERAS)})
    return Expect(counter, amount, absent=keys)


def _duplicate(rig) -> Expect:
    """A frame sent twice: the second copy is dropped, the output is not repeated."""
    stamp_ns = rig.good_frame()
    for cam in CAMERAS:
        rig.bed.publish_view(rig.views[cam], stamp_ns, info=False, image=False)
    return Expect('duplicate_stamps', 2, bodies={
        (stamp_ns, rig.views[c].frame_id): [int(rig.views[c].track_ids[0])]
        for c in CAMERAS})


def _late(rig) -> Expect:
    """cam0 sends a stamp just before the last set's (reordered delivery): dropped."""
    stamp_ns = rig.good_frame() - 5_000_000
    rig.bed.publish_view(rig.views['cam0'], stamp_ns, info=False, image=False)
    return Expect('sync_dropped', 1, absent=[(stamp_ns, rig.views['cam0'].frame_id)])


def _foreign_frame(rig, topic: str) -> Expect:
    stamp_ns = rig.now_ns()
    view = rig.views['cam0']
    msg = (testbed.image_msg if topic == 'image' else testbed.detections_msg)(view, stamp_ns)
    msg.header.frame_id = 'somewhere_else_optical'
    rig.bed.publish('cam0', topic, msg)
    return Expect('frame_id_mismatch', absent=[(stamp_ns, 'somewhere_else_optical'),
                                               (stamp_ns, view.frame_id)])


def _fifty(rig) -> Expect:
    """50 people: the MAX_PEOPLE best scored are refined, in their order."""
    def crowd(person):
        people = []
        for i in range(50):
            p = testbed.person_msg(rig.views['cam0'], 0)
            # Scores rise then fall, so the best ones sit in the middle of the array.
            p.track_id, p.score = 100 + i, 0.9 - abs(i - 25.4) * 0.01
            people.append(p)
        return people
    expect = _people(rig, crowd, 'people_capped', 50 - MAX_PEOPLE)
    (key,) = expect.bodies
    expect.bodies[key] = [100 + i for i in (24, 25, 26, 27)]
    return expect


NAN, INF = math.nan, math.inf
CASES = {
    # Images (checked, not used by the upstream front end): counted and dropped.
    'image_unsupported_encoding': lambda r: _image(r, encoding='yuv422'),
    'image_unknown_encoding_empty': lambda r: _image(r, encoding=''),
    'image_empty_data': lambda r: _image(r, data=b''),
    'image_zero_size': lambda r: _image(r, height=0, width=0, step=0, data=b''),
    'image_step_too_small': lambda r: _image(r, step=10),
    'image_data_short': lambda r: _image(r, data=bytes(48 * 64 - 1)),
    'image_data_long': lambda r: _image(r, data=bytes(48 * 64 + 64)),
    'image_mono16_odd_step': lambda r: _image(r, encoding='mono16', step=129,
                                              data=bytes(48 * 129)),
    'image_foreign_frame_id': lambda r: _foreign_frame(r, 'image'),
    # CameraInfo: rejected, the previous valid intrinsics stay in use.
    'camera_info_zero_k': lambda r: _camera_info(r, k=[0.0] * 9),
    'camera_info_nan_k': lambda r: _camera_info(r, k=[NAN] + [1.0] * 8),
    'camera_info_inf_k': lambda r: _camera_info(r, k=[60.0, 0, 32, 0, INF, 24, 0, 0, 1]),
    'camera_info_negative_focal': lambda r: _camera_info(r, k=[-60.0, 0, 32, 0, 60, 24, 0, 0,
                                                               1]),
    'camera_info_distortion_length': lambda r: _camera_info(r, d=[0.0] * 4),
    'camera_info_distortion_nan': lambda r: _camera_info(r, d=[NAN] + [0.0] * 4),
    # Detections.
    'detections_nan_keypoint': lambda r: _people(r, _keypoints(3, x=NAN), 'nan_keypoints',
                                                 kept=True),
    'detections_inf_keypoint': lambda r: _people(r, _keypoints(4, x=-INF), 'nan_keypoints',
                                                 kept=True),
    'detections_nan_confidence': lambda r: _people(r, _keypoints(5, conf=NAN),
                                                   'nan_keypoints', kept=True),
    'detections_negative_confidence': lambda r: _people(r, _keypoints(6, conf=-0.5),
                                                        'nan_keypoints', kept=True),
    'detections_count_disagrees_with_layout': lambda r: _people(
        r, _with(keypoint_layout='coco17'), 'bad_detection'),
    'detections_unknown_layout': lambda r: _people(r, _with(keypoint_layout='body99'),
                                                   'bad_detection'),
    'detections_nan_pose': lambda r: _people(r, _with(init_pose_aa=[NAN] * 72),
                                             'bad_detection'),
    'detections_short_pose': lambda r: _people(r, _with(init_pose_aa=[0.0] * 69),
                                               'bad_detection'),
    'detections_behind_camera': lambda r: _people(r, _with(init_cam_t=[0.0, 0.0, -3.0]),
                                                  'bad_detection'),
    'detections_inf_features': lambda r: _people(r, _with(features=[INF] * 3072),
                                                 'bad_detection'),
    'detections_wrong_feature_size': lambda r: _people(r, _with(features=[0.0] * 7),
                                                       'bad_detection'),
    'detections_zero_people': lambda r: _people(r, lambda person: [], 'empty_detections'),
    'detections_fifty_people': _fifty,
    'detections_foreign_frame_id': lambda r: _foreign_frame(r, 'detections'),
    # Stamps.
    # A jump back (a bag loop, a clock reset) starts a new timeline, which is refined.
    'stamp_backwards_60s': lambda r: _stamped(r, -60 * 10**9, 'time_jumps', 1, True),
    'stamp_far_future_1h': lambda r: _stamped(r, 3600 * 10**9, 'future_stamps', 2, False),
    'stamp_duplicated': _duplicate,
    'stamp_late_within_tolerance': _late,
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize('case', list(CASES))
def test_bad_input_is_counted_and_the_node_keeps_answering(rig, case):
    bed = rig.bed
    before = bed.fresh_counters()
    expect = CASES[case](rig)
    wanted = before.get(expect.counter, 0) + expect.amount
    assert expect.counter in before, f'no counter {expect.counter!r} in {sorted(before)}'
    grown = bed.spin_until(lambda: bed.counters().get(expect.counter, 0) >= wanted
                           or not rig.node.alive(), COUNTER_TIMEOUT_S)
    assert rig.node.alive(), 'the node died:\n' + rig.node.output()[-3000:]
    assert grown, (f'{expect.counter} did not reach {wanted}: {bed.counters()}')
    good_ns = rig.good_frame(info=expect.info_next)
    for key, ids in expect.bodies.items():
        msgs = bed.bodies_at(*key)
        assert len(msgs) == 1 and [b.id for b in msgs[0].bodies] == ids, (key, msgs)
    for key in expect.absent:
        assert not bed.bodies_at(*key), f'{case}: output published for {key}'
    # The good frame's bodies: one per camera, finite, refined from a real estimate.
    for cam in CAMERAS:
        (msg,) = bed.bodies_at(good_ns, rig.views[cam].frame_id)
        assert [b.id for b in msg.bodies] == [int(rig.views[cam].track_ids[0])]
        joints = np.array([[j.x, j.y, j.z] for j in msg.bodies[0].joints])
        assert np.isfinite(joints).all() and joints[:, 2].min() > 0
    assert all(all_finite(m) for m in bed.output_messages()), case
    # Nothing else broke: no output was dropped as non-finite, nothing raised.
    after = bed.fresh_counters()
    assert after['non_finite_output'] == 0 and after['refine_errors'] == 0, after
