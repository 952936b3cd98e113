"""Shared fixtures: ROS 2 availability and DDS isolation for the tests that use ROS."""

import math
import os
import random

import numpy as np
import pytest

from scorehmr_ros.demo_ros import isolated_ros_env

try:
    import rclpy  # noqa: F401 - only to know whether ROS 2 is importable
except ImportError as exc:  # pragma: no cover - depends on the environment
    ROS_IMPORT_ERROR = exc
else:
    ROS_IMPORT_ERROR = None


def require_ros():
    """Skip without ROS 2, except in CI (CI=true), where a missing ROS 2 is a failure."""
    if ROS_IMPORT_ERROR is None:
        return
    message = f'rclpy is not importable ({ROS_IMPORT_ERROR}); run scripts/setup_ros.sh'
    if os.environ.get('CI') == 'true':
        pytest.fail('CI=true requires ROS 2: ' + message)
    pytest.skip(message)


@pytest.fixture
def ros_required():
    """Skip or fail (see :func:`require_ros`) when ROS 2 is missing."""
    require_ros()


@pytest.fixture
def ros_env(monkeypatch, tmp_path):
    """Isolate DDS traffic to this machine and a random domain; logs in a temp dir."""
    require_ros()
    env = isolated_ros_env(tmp_path / 'ros_log', random.SystemRandom().randint(1, 200))
    for name in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_LOG_DIR'):
        monkeypatch.setenv(name, env[name])
    # Either would widen discovery beyond what the test asked for (or conflict with it).
    monkeypatch.delenv('ROS_STATIC_PEERS', raising=False)
    monkeypatch.delenv('ROS_LOCALHOST_ONLY', raising=False)
    return env


def message_floats(msg):
    """Yield every float inside a ROS message (nested messages, sequences, arrays)."""
    if isinstance(msg, float):
        yield msg
    elif isinstance(msg, (list, tuple)) or type(msg).__name__ == 'array':
        for item in msg:
            yield from message_floats(item)
    elif isinstance(msg, np.ndarray):
        yield from (float(v) for v in msg.ravel())
    elif hasattr(msg, 'get_fields_and_field_types'):
        for name in msg.get_fields_and_field_types():
            yield from message_floats(getattr(msg, name))


def all_finite(msg) -> bool:
    """Whether every float in a ROS message is finite (nothing non-finite is published)."""
    return all(math.isfinite(v) for v in message_floats(msg))
