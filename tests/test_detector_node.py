"""
The MediaPipe detector node over real DDS, alone and in front of the refinement node.

One detector process (cameras ``cam0`` and ``cam1``) and one refinement node (``cam0``,
``front_end: upstream``, random weights) run in a fresh namespace; the test process
publishes a real photo (Debian opencv-doc's messi5.jpg) with its CameraInfo and bad
images, and checks the detections, the refined body and the detector's counters.
"""

import os
from pathlib import Path
import random
import subprocess
import sys
import time

from conftest import all_finite, require_ros
import numpy as np
import pytest

from scorehmr_ros.demo_ros import isolated_ros_env
from scorehmr_ros.perception import images
from scorehmr_ros.perception.mediapipe_pose import mediapipe_available

try:
    import rclpy  # noqa: F401 - only to know whether the ROS modules below import
except ImportError:  # pragma: no cover - require_ros() skips or fails these tests
    pass
else:
    from diagnostic_msgs.msg import DiagnosticArray
    from scorehmr_ros_msgs.msg import PersonDetection, PersonDetectionArray
    from sensor_msgs.msg import CameraInfo, Image

    from scorehmr_ros.ros import convert
    from std_msgs.msg import Header

    from scorehmr_ros.ros import testbed
    from scorehmr_ros.ros.replay import spin_until
    from scorehmr_ros.ros.testbed import (NodeProcess, random_namespace, RELIABLE,
                                          stamp_to_ns, write_params)

REPO = Path(__file__).resolve().parents[1]
MESSI = images.sample_media_path('messi5.jpg')
FRAME = 'cam0_optical'
STARTUP_TIMEOUT_S = 40.0
REPLY_TIMEOUT_S = 15.0

needs_mediapipe = pytest.mark.skipif(
    not mediapipe_available(), reason='mediapipe (requirements-nodeps.txt) is not installed')


def camera_info(height, width, stamp_ns, focal_px=None):
    """CameraInfo: focal max(H, W) (or ``focal_px``), principal point off-centre."""
    f = float(focal_px or max(height, width))
    k = np.array([[f, 0.0, width / 2.0 + 3.0], [0.0, f, height / 2.0 - 2.0], [0, 0, 1]])
    return CameraInfo(header=Header(stamp=convert.stamp_msg(stamp_ns), frame_id=FRAME),
                      height=height, width=width, distortion_model='plumb_bob', d=[0.0] * 5,
                      k=k.ravel().tolist(), r=np.eye(3).ravel().tolist(),
                      p=np.concatenate((k, np.zeros((3, 1))), axis=1).ravel().tolist())


def image(rgb, stamp_ns, encoding='bgr8'):
    """An image message of an RGB array (bgr8 by default, as most drivers send)."""
    data = rgb[..., ::-1] if encoding == 'bgr8' else rgb
    return convert.numpy_to_image(data, encoding, Header(
        stamp=convert.stamp_msg(stamp_ns), frame_id=FRAME))


class Rig:
    """Both nodes as processes and the test side (a Testbed plus detector subscriptions)."""

    def __init__(self, tmp: Path):
        self.domain = random.SystemRandom().randint(1, 200)
        self.env = isolated_ros_env(tmp / 'ros_log', self.domain)
        self.namespace = random_namespace()
        # One file for both nodes (its '/**' section), as the launch file passes it, with
        # node.yaml's embedded default engine (shipped COCO-17 prior, anny body): the
        # configuration a user of the built-in detector runs.
        params = write_params(tmp / 'params.yaml', {
            'cameras': ['cam0'], 'input_qos': 'reliable', 'stale_age_s': 0.0,
            'camera_timeout_s': 60.0, 'refiner.sampler.outer_iters': 1}, engine={})
        self.refiner = NodeProcess(params, self.env, self.namespace, tmp / 'node.log')
        self.detector_log = open(tmp / 'detector.log', 'w', encoding='utf-8')
        self.detector = subprocess.Popen(
            [sys.executable, '-m', 'scorehmr_ros.ros.detector_node', '--ros-args',
             '--params-file', str(params), '-p', "cameras:=['cam0','cam1']",
             '-r', f'__ns:={self.namespace}'], env=self.env, text=True,
            stdout=self.detector_log, stderr=subprocess.STDOUT)
        self.tmp = tmp
        self.bed = testbed.Testbed(self.domain, self.namespace, ['cam0', 'cam1'])
        self.detections = []
        self.detector_diagnostics = []
        node = self.bed.node
        node.create_subscription(PersonDetectionArray, f'{self.namespace}/cam0/detections',
                                 self.detections.append, RELIABLE)
        self.prefix = f'{self.namespace}/scorehmr_detector: '
        node.create_subscription(
            DiagnosticArray, '/diagnostics',
            lambda msg: self.detector_diagnostics.extend(
                (time.monotonic(), s) for s in msg.status if s.name.startswith(self.prefix)),
            RELIABLE)

    def ready(self) -> bool:
        # cam0's inputs go to both nodes, cam1's to the detector only.
        subscribers = {('cam0', 'image'): 2, ('cam0', 'camera_info'): 2,
                       ('cam1', 'image'): 1, ('cam1', 'camera_info'): 1}
        return (all(self.bed.pubs[key].get_subscription_count() >= count
                    for key, count in subscribers.items())
                and bool(self.bed.received['diagnostics']) and bool(self.detector_diagnostics))

    def counters(self, after_s: float = -1.0, suffix: str = 'detector') -> dict:
        """Values of the newest detector status that arrived after ``after_s``."""
        for arrived_s, status in reversed(self.detector_diagnostics):
            if arrived_s < after_s:
                break
            if status.name == self.prefix + suffix:
                return {kv.key: kv.value for kv in status.values}
        return {}

    def fresh_counters(self) -> dict:
        now_s = time.monotonic()
        assert self.bed.spin_until(lambda: bool(self.counters(now_s)), REPLY_TIMEOUT_S), \
            self.output()
        return self.counters(now_s)

    def calibrate(self, height: int, width: int) -> bool:
        """Send cam0's CameraInfo until both nodes report it (topics are not ordered)."""
        def calibrated():
            self.bed.publish('cam0', 'camera_info', camera_info(height, width, 0))
            node_cam = self.bed._status('camera cam0')
            node_ok = node_cam is not None and any(
                kv.key == 'calibrated' and kv.value == 'True' for kv in node_cam.values)
            return node_ok and self.counters(suffix='camera cam0').get('calibrated') == 'True'
        return self.bed.spin_until(calibrated, STARTUP_TIMEOUT_S)

    def send(self, camera, msg, info=None):
        if info is not None:
            self.bed.publish(camera, 'camera_info', info)
        self.bed.publish(camera, 'image', msg)

    def detections_at(self, stamp_ns):
        return [m for m in self.detections if stamp_to_ns(m.header.stamp) == stamp_ns]

    def output(self) -> str:
        self.detector_log.flush()
        text = (self.tmp / 'detector.log').read_text(encoding='utf-8', errors='replace')
        return f'--- detector\n{text[-3000:]}\n--- node\n{self.refiner.output()[-3000:]}'

    def close(self):
        self.bed.close()
        self.refiner.stop()
        if self.detector.poll() is None:
            self.detector.send_signal(2)
            try:
                self.detector.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.detector.kill()
                self.detector.wait()
        self.detector_log.close()


@pytest.fixture(scope='module')
def rig(tmp_path_factory):
    require_ros()
    if not mediapipe_available():
        pytest.skip('mediapipe (requirements-nodeps.txt) is not installed')
    if MESSI is None:
        pytest.skip('messi5.jpg of Debian opencv-doc not found (scripts/setup.sh)')
    tmp = tmp_path_factory.mktemp('detector_rig')
    with pytest.MonkeyPatch.context() as patch:
        env = isolated_ros_env(tmp / 'unused', 0)
        patch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', env['ROS_AUTOMATIC_DISCOVERY_RANGE'])
        patch.delenv('ROS_STATIC_PEERS', raising=False)
        patch.delenv('ROS_LOCALHOST_ONLY', raising=False)
        rig = Rig(tmp)
        try:
            if not rig.bed.spin_until(rig.ready, STARTUP_TIMEOUT_S):
                pytest.fail('nodes not ready:\n' + rig.output())
            rig.photo = images.read_image(MESSI)
            if not rig.calibrate(*rig.photo.shape[:2]):
                pytest.fail('CameraInfo not taken:\n' + rig.output())
            yield rig
        finally:
            rig.close()


@pytest.mark.timeout(120)
def test_photo_gives_one_person_and_a_refined_body(rig):
    height, width = rig.photo.shape[:2]
    stamp_ns = 1_000_000_000
    rig.send('cam0', image(rig.photo, stamp_ns), camera_info(height, width, stamp_ns))
    assert rig.bed.spin_until(lambda: rig.detections_at(stamp_ns), REPLY_TIMEOUT_S), \
        rig.output()
    msg, = rig.detections_at(stamp_ns)
    assert msg.header.frame_id == FRAME and all_finite(msg)
    person, = msg.people
    assert person.keypoint_layout == PersonDetection.LAYOUT_COCO17
    assert person.track_id == PersonDetection.TRACK_ID_NONE
    # node.yaml's shipped COCO-17 prior: the start is the best of prior samples and the
    # rest pose.
    assert person.regressor == 'mediapipe_pose+keypoint_prior_fit' and not person.features
    xy = np.asarray(person.keypoints_xy).reshape(17, 2)
    conf = np.asarray(person.keypoint_confidence)
    assert conf.shape == (17,) and ((conf >= 0) & (conf <= 1)).all()
    assert int((conf >= 0.5).sum()) >= 12
    sure = xy[conf >= 0.5]
    assert ((sure >= 0) & (sure <= [width - 1, height - 1])).all()
    # Facing the camera: the left shoulder (COCO 5) is on the image's right of the right.
    assert xy[5, 0] > xy[6, 0]
    x0, y0, x1, y1 = person.bbox_xyxy
    assert 0 <= x0 < x1 <= width - 1 and 0 <= y0 < y1 <= height - 1
    assert 0 < person.score <= 1
    assert len(person.init_pose_aa) == 72 and len(person.init_betas) == 10
    cam_t = np.asarray(person.init_cam_t)
    assert cam_t.shape == (3,) and 0.5 < cam_t[2] < 20.0
    # The initial translation puts the body where the person is in the image.
    k = np.asarray(camera_info(height, width, 0).k).reshape(3, 3)
    centre_px = k[:2, :2] @ (cam_t[:2] / cam_t[2]) + k[:2, 2]
    assert x0 - 20 < centre_px[0] < x1 + 20 and y0 - 20 < centre_px[1] < y1 + 20

    # End to end: the refinement node (front_end: upstream) turns it into one body.
    assert rig.bed.spin_until(lambda: rig.bed.bodies_at(stamp_ns, FRAME), 30.0), rig.output()
    bodies, = rig.bed.bodies_at(stamp_ns, FRAME)
    assert len(bodies.bodies) == 1 and all_finite(bodies)


@pytest.mark.timeout(60)
def test_image_without_a_person_gives_an_empty_array(rig):
    height, width = rig.photo.shape[:2]
    stamp_ns = 2_000_000_000
    before = rig.fresh_counters()
    rig.send('cam0', image(np.full((height, width, 3), 127, np.uint8), stamp_ns, 'rgb8'),
             camera_info(height, width, stamp_ns))
    assert rig.bed.spin_until(lambda: rig.detections_at(stamp_ns), REPLY_TIMEOUT_S), \
        rig.output()
    msg, = rig.detections_at(stamp_ns)
    assert len(msg.people) == 0 and msg.header.frame_id == FRAME
    after = rig.fresh_counters()
    assert int(after['empty']) == int(before['empty']) + 1


@pytest.mark.timeout(60)
def test_bad_images_are_counted_and_the_node_keeps_answering(rig):
    height, width = rig.photo.shape[:2]
    before = rig.fresh_counters()
    corrupt = image(rig.photo, 3_000_000_000)
    corrupt.data = bytes(corrupt.data)[:-width]  # data size != height x step
    rig.send('cam0', corrupt, camera_info(height, width, 3_000_000_000))
    wrong_size = image(np.zeros((80, 100, 3), np.uint8), 3_100_000_000)
    rig.send('cam0', wrong_size)
    depth = convert.numpy_to_image(np.zeros((height, width), np.uint16), 'mono16',
                                   Header(frame_id=FRAME))
    rig.send('cam0', depth)
    # cam1 never had a CameraInfo: its images cannot get an initial estimate.
    rig.send('cam1', image(rig.photo, 3_200_000_000))

    stamp_ns = 4_000_000_000
    rig.send('cam0', image(rig.photo, stamp_ns))
    assert rig.bed.spin_until(lambda: rig.detections_at(stamp_ns), REPLY_TIMEOUT_S), \
        rig.output()
    assert len(rig.detections_at(stamp_ns)[0].people) == 1
    assert rig.detector.poll() is None, rig.output()
    assert not rig.detections_at(3_000_000_000) and not rig.detections_at(3_100_000_000)
    expected = {'bad_image': 2, 'image_size_mismatch': 1, 'no_camera_info': 1,
                'detect_errors': 0}

    def increase():
        after = rig.counters(time.monotonic() - 1.5)
        return {name: int(after[name]) - int(before[name]) for name in expected} \
            if after else {}

    # The cam1 image travels on another topic: its counter may come a period later.
    rig.bed.spin_until(lambda: increase() == expected, REPLY_TIMEOUT_S)
    assert increase() == expected, rig.output()
    after = rig.counters()
    assert after['latency_s_p50'] != 'n/a' and float(after['latency_s_p99']) > 0


@pytest.mark.timeout(60)
def test_newest_image_wins_when_the_detector_is_busy(rig):
    height, width = rig.photo.shape[:2]
    before = rig.fresh_counters()
    stamps = [5_000_000_000 + i * 10_000_000 for i in range(6)]
    for stamp_ns in stamps:  # faster than MediaPipe (~0.1 s per image here)
        rig.send('cam0', image(rig.photo, stamp_ns))
    assert rig.bed.spin_until(lambda: rig.detections_at(stamps[-1]), REPLY_TIMEOUT_S), \
        rig.output()
    published = [s for s in stamps if rig.detections_at(s)]
    after = rig.fresh_counters()
    dropped = int(after['queue_dropped']) - int(before['queue_dropped'])
    assert dropped >= 1 and dropped + len(published) == len(stamps), (published, dropped)
    # Published in stamp order: an older image never overtakes a newer one.
    arrival = [stamp_to_ns(m.header.stamp) for m in rig.detections
               if stamp_to_ns(m.header.stamp) in stamps]
    assert arrival == sorted(arrival) == published


def test_initial_translation_uses_the_real_principal_point_and_focal_lengths(ros_required):
    from scorehmr_ros.body.model import BodyModel
    from scorehmr_ros.ros.detector_node import estimate_initial_bodies
    from scorehmr_ros.scene import camera_facing_orientation
    import torch

    body = BodyModel.from_config(None, dtype=torch.float64)
    rotmats = torch.eye(3, dtype=torch.float64).repeat(1, 24, 1, 1)
    rotmats[:, 0] = camera_facing_orientation(torch.zeros(1, dtype=torch.float64))
    with torch.no_grad():
        joints = body.keypoints(body(rotmats, torch.zeros(1, 10, dtype=torch.float64)),
                                'coco17')[0].numpy()
    true_t = np.array([0.4, -0.2, 4.0])
    intr = convert.Intrinsics(fx=600.0, fy=660.0, cx=350.0, cy=210.0, width=640, height=480)
    cam = joints + true_t
    uv = np.stack((intr.fx * cam[:, 0] / cam[:, 2] + intr.cx,
                   intr.fy * cam[:, 1] / cam[:, 2] + intr.cy), axis=1)
    keypoints = np.concatenate((uv, np.ones((17, 1))), axis=1)[None]
    est = estimate_initial_bodies(body, keypoints, intr)
    # The rest body seen exactly: the translation fit recovers it.
    np.testing.assert_allclose(est.cam_t[0], true_t, atol=1e-6)
    np.testing.assert_allclose(est.pose_aa[0, 1:], 0.0, atol=1e-9)
    assert est.betas.shape == (1, 10) and est.pose_aa.shape == (1, 24, 3)
    empty = estimate_initial_bodies(body, np.zeros((0, 17, 3)), intr)
    assert empty.cam_t.shape == (0, 3) and empty.pose_aa.shape == (0, 24, 3)


def test_shipped_prior_proposes_starts_that_reproject_closer(ros_required):
    """With the COCO-17 prior configured, ``auto`` samples starts and never loses in 2D."""
    from scorehmr_ros.body.rotations import axis_angle_to_matrix
    from scorehmr_ros.ros.detector_node import (DetectorSettings, ESTIMATE_NAME,
                                                estimate_initial_bodies, make_estimator,
                                                PRIOR_ESTIMATE_NAME)
    from scorehmr_ros.scene import camera_facing_orientation
    import torch

    refiner, name = make_estimator(DetectorSettings(checkpoint='builtin:mocap_prior_coco17'))
    assert name == PRIOR_ESTIMATE_NAME and refiner.keypoint_cond_layout == 'coco17'
    body, rest_name = make_estimator(DetectorSettings(checkpoint='builtin:mocap_prior_coco17',
                                                      initial_estimate='rest'))
    assert rest_name == ESTIMATE_NAME and not hasattr(body, 'denoiser')
    with pytest.raises(ValueError, match='initial_estimate: prior needs'):
        make_estimator(DetectorSettings(initial_estimate='prior'))
    # A person with the arms down and a bent knee (far from the T-shaped rest pose), seen
    # by a camera with fx != fy and an off-centre principal point.
    aa = torch.zeros(1, 24, 3, dtype=torch.float64)
    aa[0, 16, 2], aa[0, 17, 2] = -1.2, 1.2  # shoulders (SMPL 16/17) down
    aa[0, 4, 0] = 0.8                        # left knee
    rotmats = axis_angle_to_matrix(aa)
    rotmats[:, 0] = camera_facing_orientation(torch.zeros(1, dtype=torch.float64))
    rb = refiner.body
    with torch.no_grad():
        joints = rb.keypoints(rb(rotmats.to(next(rb.buffers()).dtype),
                                 torch.zeros(1, 10, dtype=next(rb.buffers()).dtype)),
                              'coco17')[0].double().numpy()
    intr = convert.Intrinsics(fx=600.0, fy=660.0, cx=350.0, cy=210.0, width=640, height=480)

    def project(points):
        return np.stack((intr.fx * points[:, 0] / points[:, 2] + intr.cx,
                         intr.fy * points[:, 1] / points[:, 2] + intr.cy), axis=1)

    keypoints = np.concatenate((project(joints + [0.3, -0.1, 4.0]), np.ones((17, 1))),
                               axis=1)[None]

    def error_px(est):
        with torch.no_grad():
            out = rb(axis_angle_to_matrix(torch.as_tensor(est.pose_aa)).to(torch.float64),
                     torch.as_tensor(est.betas, dtype=torch.float64))
            kp = rb.keypoints(out, 'coco17')[0].numpy() + est.cam_t[0]
        return float(np.linalg.norm(project(kp) - keypoints[0, :, :2], axis=1).mean())

    prior = estimate_initial_bodies(refiner, keypoints, intr)
    rest = estimate_initial_bodies(refiner.body, keypoints, intr)
    assert np.isfinite(prior.pose_aa).all() and prior.cam_t[0, 2] > 0.5
    # The arms-down person is closer to a prior sample than to the T-pose: a sample wins.
    assert error_px(prior) < 0.8 * error_px(rest), (error_px(prior), error_px(rest))


@needs_mediapipe
@pytest.mark.timeout(60)
def test_missing_mediapipe_stops_the_node_with_a_clear_error(tmp_path):
    require_ros()
    # A mediapipe package that cannot be imported, first on the path: as if not installed.
    stub = tmp_path / 'stub' / 'mediapipe'
    stub.mkdir(parents=True)
    (stub / '__init__.py').write_text("raise ImportError('No module named mediapipe')\n")
    env = isolated_ros_env(tmp_path / 'ros_log')
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path / 'stub'), env['PYTHONPATH']])
    proc = subprocess.run([sys.executable, '-m', 'scorehmr_ros.ros.detector_node'], env=env,
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'requirements-nodeps.txt' in proc.stderr and 'mediapipe' in proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr


def test_console_script_is_declared():
    text = (REPO / 'setup.py').read_text(encoding='utf-8')
    assert "'scorehmr-detector = scorehmr_ros.ros.detector_node:main'" in text


@needs_mediapipe
@pytest.mark.timeout(90)
def test_hog_person_boxes_give_several_people_per_camera(ros_env):
    """In-process node (``person_boxes: hog``) on a wide view with small pedestrians."""
    vtest = images.sample_media_path('vtest.avi')
    if vtest is None:
        pytest.skip('vtest.avi of Debian opencv-doc not found (scripts/setup.sh)')
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from scorehmr_ros.ros.detector_node import DetectorNode

    _, _, frame = next(images.iter_frames(vtest, max_frames=1))
    height, width = frame.shape[:2]
    context = Context()
    rclpy.init(context=context, domain_id=int(ros_env['ROS_DOMAIN_ID']))
    executor = SingleThreadedExecutor(context=context)
    detector = DetectorNode(context=context, parameter_overrides=[
        Parameter('person_boxes', value='hog'), Parameter('input_qos', value='reliable')])
    peer = Node('detector_peer', context=context)
    received = []
    peer.create_subscription(PersonDetectionArray, 'cam0/detections', received.append,
                             RELIABLE)
    pubs = {topic: peer.create_publisher(kind, f'cam0/{topic}', RELIABLE)
            for topic, kind in (('image', Image), ('camera_info', CameraInfo))}
    try:
        for node in (detector, peer):
            executor.add_node(node)

        def calibrated():
            pubs['camera_info'].publish(camera_info(height, width, 0))
            return detector.cameras[0].intrinsics is not None

        assert spin_until(executor, calibrated, 20.0, step_s=0.05)
        pubs['image'].publish(image(frame, 7_000_000_000, 'rgb8'))
        assert spin_until(executor, lambda: received, 30.0, step_s=0.05)
    finally:
        executor.shutdown()
        detector.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)
    msg, = received
    assert stamp_to_ns(msg.header.stamp) == 7_000_000_000 and all_finite(msg)
    # Full-frame MediaPipe finds nobody in this frame (test_mediapipe_pose.py).
    assert len(msg.people) >= 3
    assert {p.regressor for p in msg.people} == {'hog+mediapipe_pose+rest_pose_fit'}
    for person in msg.people:
        assert person.init_cam_t[2] > 1.0 and person.score >= 0.5
