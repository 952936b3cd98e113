"""
Multi-camera ScoreHMR node (real ROS 2 install: ``ros2 launch scorehmr_ros multicam.launch.py``).

Built from the ROS-free description ``scorehmr_ros.launch_description.multicam()``, which
the console launcher (``scorehmr-launch multicam``) runs too; ``tests/test_launch.py``
checks that both give the same nodes, parameters and remappings. ``front_end:=mediapipe``
also starts the built-in detector node (``scorehmr-detector``) for the same cameras.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from scorehmr_ros import launch_description as ld


def _nodes(context, *args, **kwargs):
    description = ld.multicam()
    values = {arg.name: LaunchConfiguration(arg.name).perform(context)
              for arg in description.arguments}
    actions = []
    for spec in description.nodes:
        if not ld.enabled(spec, values):
            continue
        node = ld.resolve_node(spec, values)
        actions.append(Node(
            package=node['package'], executable=node['executable'], name=node['name'],
            namespace=node['namespace'],
            parameters=list(node['parameter_files']) + [node['parameters']],
            remappings=list(node['remappings']), output='screen'))
    return actions


def generate_launch_description():
    """Declare the described arguments, then start the described nodes."""
    share_config = os.path.join(get_package_share_directory('scorehmr_ros'), 'config',
                                'node.yaml')
    declared = []
    for arg in ld.multicam().arguments:
        default = share_config if arg.name == 'params_file' else arg.default
        extra = {'choices': list(arg.choices)} if arg.choices else {}
        declared.append(DeclareLaunchArgument(arg.name, default_value=default,
                                              description=arg.description, **extra))
    return LaunchDescription(declared + [OpaqueFunction(function=_nodes)])
