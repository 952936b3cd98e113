"""
Launch: the ROS-free description, ``launch/multicam.launch.py`` and ``scorehmr-launch`` agree.

``launch``/``launch_ros`` are not installable here, so the launch file is executed against
recording stand-ins of exactly the classes it uses; what it builds must equal the
description. The console launcher then really starts the node over DDS.
"""

import importlib.util
import io
import os
import random
import shlex
import signal
import subprocess
import sys
import time
import types

import pytest

from scorehmr_ros import launch_description as ld
from scorehmr_ros import launcher
from scorehmr_ros.perception.mediapipe_pose import mediapipe_available

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_FILE = os.path.join(REPO, 'launch', 'multicam.launch.py')


class Recorded:
    """Stand-in for a launch class: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(Recorded):
    def perform(self, context):
        return context[self.args[0]]


def load_launch_file(monkeypatch):
    modules = {
        'launch': types.ModuleType('launch'),
        'launch.actions': types.ModuleType('launch.actions'),
        'launch.substitutions': types.ModuleType('launch.substitutions'),
        'launch_ros': types.ModuleType('launch_ros'),
        'launch_ros.actions': types.ModuleType('launch_ros.actions'),
        'ament_index_python': types.ModuleType('ament_index_python'),
        'ament_index_python.packages': types.ModuleType('ament_index_python.packages'),
    }
    modules['launch'].LaunchDescription = type('LaunchDescription', (Recorded,), {})
    modules['launch.actions'].DeclareLaunchArgument = type('DeclareLaunchArgument',
                                                           (Recorded,), {})
    modules['launch.actions'].OpaqueFunction = type('OpaqueFunction', (Recorded,), {})
    modules['launch.substitutions'].LaunchConfiguration = LaunchConfiguration
    modules['launch_ros.actions'].Node = type('Node', (Recorded,), {})
    modules['ament_index_python.packages'].get_package_share_directory = \
        lambda package: f'/opt/share/{package}'
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location('multicam_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_builds_the_described_arguments_and_node(monkeypatch):
    module = load_launch_file(monkeypatch)
    description = module.generate_launch_description()
    actions = description.args[0]
    declared = [a for a in actions if type(a).__name__ == 'DeclareLaunchArgument']
    expected = ld.multicam()
    assert [a.args[0] for a in declared] == [arg.name for arg in expected.arguments]
    for action, arg in zip(declared, expected.arguments):
        assert action.kwargs['description'] == arg.description
        default = ('/opt/share/scorehmr_ros/config/node.yaml' if arg.name == 'params_file'
                   else arg.default)
        assert action.kwargs['default_value'] == default
        assert action.kwargs.get('choices', []) == list(arg.choices)
    front_end, = [a for a in declared if a.args[0] == 'front_end']
    assert front_end.kwargs['choices'] == ['upstream', 'mediapipe']
    opaque, = [a for a in actions if type(a).__name__ == 'OpaqueFunction']
    values = ld.resolve_arguments(expected, {'cameras': 'left, right', 'namespace': 'robot',
                                             'use_sim_time': 'true',
                                             'params_file': '/tmp/p.yaml'})
    nodes = opaque.kwargs['function'](values)
    # front_end defaults to upstream: the refinement node only.
    assert len(nodes) == 1 and len(expected.nodes) == 2
    node = nodes[0].kwargs
    resolved = ld.resolve_node(expected.nodes[0], values)
    assert node['package'] == 'scorehmr_ros' and node['executable'] == 'scorehmr-node'
    assert node['name'] == resolved['name'] == 'scorehmr'
    assert node['namespace'] == 'robot'
    assert node['parameters'] == ['/tmp/p.yaml', {'cameras': ['left', 'right'],
                                                  'use_sim_time': True}]
    assert node['remappings'] == [('bodies', 'bodies')]

    # front_end:=mediapipe adds the detector: same namespace, cameras, parameter file.
    nodes = opaque.kwargs['function']({**values, 'front_end': 'mediapipe'})
    assert [n.kwargs['executable'] for n in nodes] == ['scorehmr-node', 'scorehmr-detector']
    detector = nodes[1].kwargs
    assert detector['name'] == 'scorehmr_detector' and detector['namespace'] == 'robot'
    assert detector['parameters'] == ['/tmp/p.yaml', {'cameras': ['left', 'right'],
                                                      'use_sim_time': True}]
    assert detector['remappings'] == []


def test_front_end_argument_is_checked():
    with pytest.raises(ValueError, match='front_end:=openpose is not one of'):
        ld.resolve_arguments(ld.multicam(), {'front_end': 'openpose'})
    assert launcher.main(['multicam', 'front_end:=openpose', '--dry-run']) == 2


def test_console_entry_points_are_declared():
    text = open(os.path.join(REPO, 'setup.py'), encoding='utf-8').read()
    assert "'scorehmr-node = scorehmr_ros.ros.node:main'" in text
    assert "'scorehmr-launch = scorehmr_ros.launcher:main'" in text
    assert "'scorehmr-detector = scorehmr_ros.ros.detector_node:main'" in text


def test_launcher_dry_run_renders_the_same_node(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, 'stdout', out)
    assert launcher.main(['multicam', 'cameras:=cam0,cam1', 'namespace:=robot',
                          'bodies_topic:=people', '--dry-run']) == 0
    argv = shlex.split(out.getvalue())
    assert argv[1:3] == ['-m', 'scorehmr_ros.ros.node']
    pairs = list(zip(argv[4::2], argv[5::2]))
    assert ('-r', '__node:=scorehmr') in pairs and ('-r', '__ns:=/robot') in pairs
    assert ('-p', "cameras:=['cam0','cam1']") in pairs
    assert ('-p', 'use_sim_time:=false') in pairs and ('-r', 'bodies:=people') in pairs
    assert ('--params-file', os.path.join(REPO, 'config', 'node.yaml')) in pairs


def test_launcher_dry_run_with_the_mediapipe_front_end(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, 'stdout', out)
    assert launcher.main(['multicam', 'cameras:=cam0,cam1', 'namespace:=robot',
                          'front_end:=mediapipe', '--dry-run']) == 0
    node_argv, detector_argv = (shlex.split(line) for line in out.getvalue().splitlines())
    assert node_argv[1:3] == ['-m', 'scorehmr_ros.ros.node']
    assert detector_argv[1:3] == ['-m', 'scorehmr_ros.ros.detector_node']
    pairs = list(zip(detector_argv[4::2], detector_argv[5::2]))
    assert ('-r', '__node:=scorehmr_detector') in pairs and ('-r', '__ns:=/robot') in pairs
    assert ('-p', "cameras:=['cam0','cam1']") in pairs
    assert ('--params-file', os.path.join(REPO, 'config', 'node.yaml')) in pairs


def test_launcher_rejects_unknown_arguments(caplog):
    assert launcher.main(['multicam', 'camras:=cam0', '--dry-run']) == 2
    assert 'camras' in caplog.text


@pytest.mark.timeout(90)
def test_launcher_starts_the_node_over_dds(monkeypatch, tmp_path):
    try:
        import rclpy
        from rclpy.context import Context
        from rclpy.node import Node
    except ImportError as exc:  # pragma: no cover - depends on the environment
        if os.environ.get('CI') == 'true':
            pytest.fail(f'CI=true requires ROS 2: {exc}')
        pytest.skip(f'rclpy is not importable ({exc})')
    domain = random.SystemRandom().randint(1, 200)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               ROS_LOG_DIR=str(tmp_path / 'ros_log'),
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    env.pop('ROS_STATIC_PEERS', None)
    env.pop('ROS_LOCALHOST_ONLY', None)
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    # With MediaPipe installed the detector node starts too (front_end:=mediapipe).
    detector = mediapipe_available()
    child = subprocess.Popen(
        [sys.executable, '-m', 'scorehmr_ros.launcher', 'multicam', 'cameras:=front,back',
         'namespace:=robot', 'bodies_topic:=people']
        + (['front_end:=mediapipe'] if detector else []), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = Node('scorehmr_launch_test', context=context)
    wanted = {'/robot/people', '/robot/front/detections', '/robot/back/image'}
    if detector:
        wanted |= {'/robot/scorehmr_detector', 'detector publishes'}
    found = set()
    try:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and child.poll() is None:
            found = {name for name, _ in node.get_topic_names_and_types()} | {
                f'{ns.rstrip("/")}/{name}' for name, ns in node.get_node_names_and_namespaces()}
            found &= wanted
            # The detector publishes each camera's detections.
            if detector and node.count_publishers('/robot/back/detections') >= 1:
                found.add('detector publishes')
            if found == wanted:
                break
            time.sleep(0.2)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
        try:
            output, _ = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            output, _ = child.communicate()
    assert found == wanted, output
    assert child.returncode == 0, output
