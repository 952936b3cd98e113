"""
ROS-free launch descriptions: launch arguments, nodes, parameters, remappings.

One description serves two runners: ``launch/multicam.launch.py`` turns it into
``launch``/``launch_ros`` actions on a real ROS 2 install, and the console launcher
(``scorehmr-launch multicam ...``, :mod:`scorehmr_ros.launcher`) turns it into processes
here, where ``launch`` is not installed. Substitutions are written ``$(arg name)``.
"""

import dataclasses
import os
import re
import sys
from typing import Dict, List, Mapping, Tuple

_ARG = re.compile(r'\$\(arg ([A-Za-z_][A-Za-z0-9_]*)\)')
REPO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'config')
#: Values of the ``front_end`` launch argument.
FRONT_ENDS = ('upstream', 'mediapipe')


@dataclasses.dataclass(frozen=True)
class LaunchArgument:
    """
    A described launch argument.

    :param name: argument name (``name:=value`` on the command line).
    :param default: default value (a string, as in ROS launch).
    :param description: what it sets.
    :param choices: the allowed values (empty: any value).
    """

    name: str
    default: str
    description: str
    choices: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """
    One node to start.

    :param package: ROS package.
    :param executable: console script of the package (real ROS install).
    :param module: ``python -m`` module that runs the same node (console launcher).
    :param name: node name.
    :param namespace: node namespace (may hold substitutions).
    :param parameter_files: parameter YAML files (may hold substitutions).
    :param parameters: parameter overrides ``name -> value`` (values may hold
        substitutions; a value ``'$(list name)'`` is the comma-separated argument
        ``name`` as a string list).
    :param remappings: ``(from, to)`` topic remappings.
    :param condition: ``(argument, value)``: the node starts only when that launch
        argument has that value; empty: always.
    """

    package: str
    executable: str
    module: str
    name: str
    namespace: str = ''
    parameter_files: Tuple[str, ...] = ()
    parameters: Tuple[Tuple[str, str], ...] = ()
    remappings: Tuple[Tuple[str, str], ...] = ()
    condition: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Description:
    """
    Launch arguments and nodes.

    :param arguments: declared arguments.
    :param nodes: nodes to start.
    """

    arguments: Tuple[LaunchArgument, ...]
    nodes: Tuple[NodeSpec, ...]


def multicam() -> Description:
    """
    Describe the multi-camera ScoreHMR node (and its optional detector) with parameters.

    With ``front_end:=mediapipe`` the built-in detector node (``scorehmr_detector``) also
    starts, in the same namespace, for the same cameras and with the same parameter file
    (its ``/**`` section: ``input_qos``, ``rectified``, ``refiner.body.model_path``); it
    publishes the ``<camera>/detections`` that the refinement node reads as usual.

    :return: the description behind ``launch/multicam.launch.py``.
    """
    arguments = (
        LaunchArgument('cameras', 'cam0,cam1,cam2',
                       'comma-separated camera names; each publishes <camera>/image, '
                       '<camera>/camera_info and <camera>/detections'),
        LaunchArgument('params_file', os.path.join(REPO_CONFIG, 'node.yaml'),
                       'node parameter file (config/node.yaml of the package)'),
        LaunchArgument('namespace', '', 'namespace of the node and its relative topics'),
        LaunchArgument('use_sim_time', 'false', 'use /clock (bag replay with --clock)'),
        LaunchArgument('bodies_topic', 'bodies', 'topic of the SmplBodyArray output'),
        LaunchArgument('front_end', 'upstream',
                       "where <camera>/detections come from: 'upstream' (another node "
                       "publishes them) or 'mediapipe' (also start scorehmr_detector, the "
                       'built-in MediaPipe Pose detector, one person per camera)',
                       choices=FRONT_ENDS),
    )
    node = NodeSpec(
        package='scorehmr_ros', executable='scorehmr-node', module='scorehmr_ros.ros.node',
        name='scorehmr', namespace='$(arg namespace)',
        parameter_files=('$(arg params_file)',),
        parameters=(('cameras', '$(list cameras)'), ('use_sim_time', '$(arg use_sim_time)')),
        remappings=(('bodies', '$(arg bodies_topic)'),))
    detector = NodeSpec(
        package='scorehmr_ros', executable='scorehmr-detector',
        module='scorehmr_ros.ros.detector_node', name='scorehmr_detector',
        namespace='$(arg namespace)', parameter_files=('$(arg params_file)',),
        parameters=(('cameras', '$(list cameras)'), ('use_sim_time', '$(arg use_sim_time)')),
        condition=('front_end', 'mediapipe'))
    return Description(arguments=arguments, nodes=(node, detector))


DESCRIPTIONS = {'multicam': multicam}


def resolve_arguments(description: Description, given: Mapping[str, str]) -> Dict[str, str]:
    """
    Values of every argument: given ones, else defaults; unknown names raise.

    :param description: the description.
    :param given: ``name -> value`` from the command line.
    :return: ``name -> value`` for every declared argument.
    """
    declared = {arg.name: arg.default for arg in description.arguments}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f'unknown launch argument(s) {unknown}; declared: {sorted(declared)}')
    for arg in description.arguments:
        if arg.choices and arg.name in given and given[arg.name] not in arg.choices:
            raise ValueError(f'launch argument {arg.name}:={given[arg.name]} is not one of '
                             f'{list(arg.choices)}')
    return {**declared, **given}


def enabled(node: NodeSpec, values: Mapping[str, str]) -> bool:
    """
    Whether a node starts with these argument values (its ``condition`` holds).

    :param node: the node.
    :param values: resolved arguments.
    :return: True when the node has no condition or its argument has the value.
    """
    if not node.condition:
        return True
    argument, value = node.condition
    return values[argument] == value


def substitute(text: str, values: Mapping[str, str]):
    """
    Replace ``$(arg name)``; ``'$(list name)'`` gives the comma-separated list.

    :param text: text with substitutions.
    :param values: resolved arguments.
    :return: a string, or a list of strings for ``$(list ...)``.
    """
    match = re.fullmatch(r'\$\(list ([A-Za-z_][A-Za-z0-9_]*)\)', text)
    if match:
        return [item.strip() for item in values[match.group(1)].split(',') if item.strip()]
    return _ARG.sub(lambda m: values[m.group(1)], text)


def typed(value):
    """ROS-style typing of a launch string: ``'true'`` -> True, ``'2'`` -> 2, ..."""
    if not isinstance(value, str):
        return value
    if value.lower() in ('true', 'false'):
        return value.lower() == 'true'
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def resolve_node(node: NodeSpec, values: Mapping[str, str]) -> Dict[str, object]:
    """
    Apply every substitution to a node; return it as plain data.

    :param node: the node.
    :param values: resolved arguments.
    :return: dict with ``package, executable, module, name, namespace, parameter_files,
        parameters, remappings``; the shape ``launch_ros.actions.Node`` takes.
    """
    return {
        'package': node.package, 'executable': node.executable, 'module': node.module,
        'name': node.name, 'namespace': substitute(node.namespace, values),
        'parameter_files': [substitute(p, values) for p in node.parameter_files],
        'parameters': {k: typed(substitute(v, values)) for k, v in node.parameters},
        'remappings': [(a, substitute(b, values)) for a, b in node.remappings],
    }


def _ros_value(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, list):
        return '[' + ','.join(f"'{v}'" for v in value) + ']'
    return str(value)


def command(resolved: Mapping[str, object], python: str = sys.executable) -> List[str]:
    """
    Command line that runs a resolved node without ``ros2 run``.

    :param resolved: output of :func:`resolve_node`.
    :param python: interpreter.
    :return: argv.
    """
    argv = [python, '-m', str(resolved['module']), '--ros-args',
            '-r', f'__node:={resolved["name"]}']
    if resolved['namespace']:
        argv += ['-r', f'__ns:=/{str(resolved["namespace"]).strip("/")}']
    for path in resolved['parameter_files']:
        argv += ['--params-file', path]
    for key, value in resolved['parameters'].items():
        argv += ['-p', f'{key}:={_ros_value(value)}']
    for source, target in resolved['remappings']:
        argv += ['-r', f'{source}:={target}']
    return argv
