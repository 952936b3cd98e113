"""
The ROS 2 side works: interfaces build, import, serialise and cross DDS between processes.

ROS 2 Kilted comes from PyPI wheels and the interface packages are built by
``scripts/setup_ros.sh`` (see ``docs/ros_setup.md``). Outside CI the ROS tests skip where
rclpy is not importable; with ``CI=true`` a missing rclpy fails them. Where rclpy is
present, a missing interface package fails at import: that is a broken setup, not an
absent ROS.

Run as a script (``python tests/test_ros_env.py publish SECONDS``), this module is the
publishing process of the cross-process test.
"""

import array
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

try:
    import rclpy
except ImportError as exc:  # pragma: no cover - depends on the environment
    rclpy = None
    ROS_IMPORT_ERROR = exc
else:
    ROS_IMPORT_ERROR = None
    from ament_index_python.packages import get_package_share_directory
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point, Pose, Quaternion, Transform, TransformStamped
    from geometry_msgs.msg import Vector3
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message
    from scorehmr_ros_msgs.msg import PersonDetection, PersonDetectionArray
    from scorehmr_ros_msgs.msg import SmplBody, SmplBodyArray
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

from scorehmr_ros.body.layouts import LAYOUTS, SMPL_JOINT_NAMES, SMPL_PARENTS

REPO = pathlib.Path(__file__).resolve().parents[1]

# The type hash of the real tf2_msgs/msg/TFMessage (REP-2011, RIHS01), as published by
# ROS 2 Jazzy nodes (`ros2 topic info --verbose /tf`, rosbag2 metadata.yaml); Kilted
# has the same definition. The compat package must advertise exactly this hash, or real
# tf2 nodes (rviz, tf2_ros) would not match the /tf topic.
TF_MESSAGE_TYPE_HASH = (
    'RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087')

# The project's interface hashes. A change here is an interface change: recorded bags
# and nodes built against the old definitions stop matching. Update on purpose only.
INTERFACE_TYPE_HASHES = {
    'scorehmr_ros_msgs/msg/SmplBodyArray': (
        'RIHS01_ae274ef39c2408e466dd0cd6f821b6c8cc680f5b2aaea020105c96da041c9ee7'),
    'scorehmr_ros_msgs/msg/PersonDetectionArray': (
        'RIHS01_98e677a1ca5a36370258e8d0f3c0ec76a79996129cb39b24d5302bcbcebfbb50'),
}

BODIES_TOPIC = 'scorehmr_test/bodies'
PUBLISHER_NODE = 'scorehmr_test_publisher'
ROUND_TRIP_TIMEOUT_S = 30.0
STAMP = (1700000000, 123456789)


@pytest.fixture
def ros_node(ros_env):
    """A node in its own context (no global rclpy state leaks into other tests)."""
    context = Context()
    rclpy.init(context=context, domain_id=int(ros_env['ROS_DOMAIN_ID']))
    node = Node('scorehmr_test_subscriber', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def reliable_qos(depth=10):
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def make_header():
    return Header(stamp=Time(sec=STAMP[0], nanosec=STAMP[1]), frame_id='map')


def make_smpl_body(track_id=7):
    # Values are multiples of 1/8 so that float32 fields hold them exactly.
    return SmplBody(
        id=track_id,
        body_model=SmplBody.BODY_MODEL_SMPL_NEUTRAL,
        local_rotations=[Quaternion(x=0.5, y=-0.5, z=0.5, w=0.5 + j) for j in range(24)],
        root_pose=Pose(position=Point(x=1.5, y=-2.0, z=0.875),
                       orientation=Quaternion(x=0.0, y=0.0, z=0.6, w=0.8)),
        betas=[0.125 * (k - 5) for k in range(10)],
        joints=[Point(x=0.25 * j, y=-0.125 * j, z=1.0) for j in range(24)],
        joint_confidence=[j / 32.0 for j in range(24)],
        joint_residual_px=[0.5 * j for j in range(24)],
        fit_loss=0.375,
        num_views=3,
        num_frames=5,
        iterations=10,
        latency_s=0.0625,
        refined=True,
    )


def make_body_array():
    return SmplBodyArray(header=make_header(),
                         bodies=[make_smpl_body(7), make_smpl_body(11)])


def make_person_detection():
    return PersonDetection(
        track_id=3,
        score=0.875,
        bbox_xyxy=[10.0, 20.0, 330.5, 470.25],
        keypoint_layout=PersonDetection.LAYOUT_COCO17,
        keypoints_xy=[float(v) for v in range(2 * 17)],
        keypoint_confidence=[0.5] * 17,
        init_pose_aa=[0.0625 * i for i in range(72)],
        init_betas=[0.25] * 10,
        init_cam_t=[0.0, 0.25, 4.5],
        features=[0.125] * 2048,
        regressor='pare',
    )


def make_detection_array():
    header = Header(stamp=Time(sec=STAMP[0], nanosec=STAMP[1]),
                    frame_id='cam0_color_optical_frame')
    return PersonDetectionArray(header=header, people=[make_person_detection()])


def make_tf_message():
    transforms = []
    for j, name in enumerate(SMPL_JOINT_NAMES):
        parent = 'body_7' if j == 0 else f'body_7_{SMPL_JOINT_NAMES[SMPL_PARENTS[j]]}'
        transforms.append(TransformStamped(
            header=Header(stamp=Time(sec=STAMP[0], nanosec=STAMP[1]), frame_id=parent),
            child_frame_id=f'body_7_{name}',
            transform=Transform(translation=Vector3(x=0.125 * j, y=0.0, z=-0.25),
                                rotation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))))
    return TFMessage(transforms=transforms)


def _is_default(value, default):
    if hasattr(value, '__len__') and not isinstance(value, str):
        if len(value) != len(default):
            return False
        return all(_is_default(a, b) for a, b in zip(value, default))
    return value == default


def assert_all_fields_set(msg):
    """Every field differs from its default, so a field left out of a builder shows up."""
    default = type(msg)()
    unset = [name for name in type(msg).get_fields_and_field_types()
             if _is_default(getattr(msg, name), getattr(default, name))]
    assert not unset, f'{type(msg).__name__}: fields left at their defaults: {unset}'


def spin_until(executor, condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return condition()


def publisher_type_hash(node, executor, topic, node_name, timeout_s=10.0):
    """RIHS01 hash that ``node_name``'s publisher on ``topic`` advertises in the graph."""
    found = {}

    def look():
        for info in node.get_publishers_info_by_topic(topic):
            if info.node_name == node_name:
                found['hash'] = str(info.topic_type_hash)
        return 'hash' in found

    assert spin_until(executor, look, timeout_s), f'no publisher of {node_name} on {topic}'
    return found['hash']


def test_smpl_body_doc_table_matches_body_layer():
    # SmplBody.msg documents the joint order in a comment; it must not drift from the
    # body layer that fills the message.
    text = (REPO / 'msg' / 'SmplBody.msg').read_text()
    rows = re.findall(r'(\d+) ([a-z_0-9]+) (-?\d+)', text)
    assert [int(i) for i, _, _ in rows] == list(range(24))
    assert tuple(name for _, name, _ in rows) == SMPL_JOINT_NAMES
    assert [int(parent) for _, _, parent in rows] == list(SMPL_PARENTS)


def test_person_detection_layouts_are_known():
    text = (REPO / 'msg' / 'PersonDetection.msg').read_text()
    layouts = re.findall(r'^string LAYOUT_\w+=(\w+)$', text, flags=re.MULTILINE)
    assert layouts and set(layouts) <= set(LAYOUTS)


def test_interfaces_import_and_build_with_all_fields(ros_env):
    messages = [make_smpl_body(), make_body_array(), make_person_detection(),
                make_detection_array(), make_tf_message()]
    for msg in messages:
        assert_all_fields_set(msg)
        # The C type support (the path rclpy publishes through) keeps every field.
        assert deserialize_message(serialize_message(msg), type(msg)) == msg
    body = SmplBody()
    assert (SmplBody.NUM_JOINTS, SmplBody.NUM_BETAS) == (24, 10)
    assert len(body.local_rotations) == 24 and len(body.betas) == 10
    assert body.local_rotations[0] == Quaternion(w=1.0)
    assert isinstance(make_smpl_body().joint_confidence, array.array)
    assert PersonDetection.TRACK_ID_NONE == 2 ** 32 - 1
    nan_body = SmplBody(fit_loss=math.nan)
    assert math.isnan(deserialize_message(serialize_message(nan_body), SmplBody).fit_loss)


def test_tf_message_type_hash_equals_real_tf2_msgs(ros_node):
    node, executor = ros_node
    publisher = node.create_publisher(TFMessage, '/tf', reliable_qos(100))
    try:
        advertised = publisher_type_hash(node, executor, '/tf', node.get_name())
    finally:
        node.destroy_publisher(publisher)
    assert advertised == TF_MESSAGE_TYPE_HASH
    # The hash rosidl generated at build time, as installed in the ament index.
    json_path = pathlib.Path(get_package_share_directory('tf2_msgs'), 'msg', 'TFMessage.json')
    assert TF_MESSAGE_TYPE_HASH in json_path.read_text()


def test_interface_type_hashes_are_stable(ros_node):
    node, executor = ros_node
    types = {'scorehmr_ros_msgs/msg/SmplBodyArray': SmplBodyArray,
             'scorehmr_ros_msgs/msg/PersonDetectionArray': PersonDetectionArray}
    advertised = {}
    for type_name, msg_type in types.items():
        topic = 'scorehmr_test/' + msg_type.__name__.lower()
        publisher = node.create_publisher(msg_type, topic, reliable_qos())
        try:
            advertised[type_name] = publisher_type_hash(node, executor, topic,
                                                        node.get_name())
        finally:
            node.destroy_publisher(publisher)
    assert advertised == INTERFACE_TYPE_HASHES, (
        'msg/*.msg changed the interface; if on purpose, update INTERFACE_TYPE_HASHES')


@pytest.mark.timeout(120)
def test_cross_process_dds_round_trip(ros_node):
    node, executor = ros_node
    received = {}
    node.create_subscription(SmplBodyArray, BODIES_TOPIC,
                             lambda msg: received.setdefault('bodies', msg), reliable_qos())
    node.create_subscription(TFMessage, '/tf',
                             lambda msg: received.setdefault('tf', msg), reliable_qos(100))
    child = subprocess.Popen(
        [sys.executable, str(pathlib.Path(__file__).resolve()), 'publish',
         str(ROUND_TRIP_TIMEOUT_S)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # The child imports scorehmr_ros even where it is not installed into the venv.
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))))
    try:
        got_both = spin_until(
            executor, lambda: len(received) == 2 or child.poll() is not None,
            ROUND_TRIP_TIMEOUT_S) and len(received) == 2
        remote_tf_hash = (publisher_type_hash(node, executor, '/tf', PUBLISHER_NODE)
                          if got_both else None)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)  # rclpy shuts the publisher down cleanly
        try:
            output, _ = child.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            output, _ = child.communicate()
    assert got_both, (f'received {sorted(received)} of [bodies, tf] within '
                      f'{ROUND_TRIP_TIMEOUT_S} s; publisher output:\n{output}')
    assert received['bodies'] == make_body_array()
    assert received['tf'] == make_tf_message()
    assert remote_tf_hash == TF_MESSAGE_TYPE_HASH


def publish_main(seconds):
    """Publish the fixed test messages at 10 Hz until interrupted or ``seconds`` pass."""
    rclpy.init()
    node = rclpy.create_node(PUBLISHER_NODE)
    bodies = node.create_publisher(SmplBodyArray, BODIES_TOPIC, reliable_qos())
    tf = node.create_publisher(TFMessage, '/tf', reliable_qos(100))
    body_msg, tf_msg = make_body_array(), make_tf_message()
    deadline = time.monotonic() + seconds
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            bodies.publish(body_msg)
            tf.publish(tf_msg)
            time.sleep(0.1)
    except Exception:
        if rclpy.ok():  # a publish racing the SIGINT shutdown is fine; anything else not
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] != 'publish':
        sys.exit(f'usage: {sys.argv[0]} publish SECONDS')
    publish_main(float(sys.argv[2]))
