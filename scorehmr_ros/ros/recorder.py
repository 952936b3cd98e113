"""
Record rclpy messages into an MCAP rosbag2 with ``rosbags`` (no rosbag2 install needed).

The node's ``record_bag`` parameter uses it: every message the node publishes (and, with
``record_inputs``, every input it received) is written with the log time the caller gives.
Messages are serialised by rosbags, not by rclpy: the Fast-CDR of the ROS 2 Kilted wheels
pads an *empty* sequence of 8-byte elements (``JointState.velocity``) to the element
alignment, which the CDR standard does not (rosbags refuses such a message); rclpy reads
the standard form back unchanged (tests/test_fault_injection.py checks the round trip for
every message type the node publishes or records). The bag is readable by ``ros2 bag``
and by :func:`scorehmr_ros.bag_io.read_bag` once :meth:`BagRecorder.close` has run:
rosbags writes the MCAP summary and ``metadata.yaml`` on close, so a process killed with
SIGKILL leaves a bag without them. Writes from several threads are serialised by a lock.
"""

import collections
from pathlib import Path
import re
import threading
from typing import Any, Dict, Optional, Union

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from scorehmr_ros.bag_io import BagError, make_typestore


def msgtype_of(msg) -> str:
    """
    ROS type name of an rclpy message instance.

    :param msg: e.g. a ``sensor_msgs.msg.Image``.
    :return: e.g. ``'sensor_msgs/msg/Image'``.
    """
    cls = type(msg)
    return f'{cls.__module__.split(".")[0]}/msg/{cls.__name__}'


#: ROS primitive type -> numpy dtype of rosbags' arrays.
_DTYPES = {'double': np.float64, 'float': np.float32, 'int8': np.int8, 'uint8': np.uint8,
           'int16': np.int16, 'uint16': np.uint16, 'int32': np.int32, 'uint32': np.uint32,
           'int64': np.int64, 'uint64': np.uint64, 'octet': np.uint8, 'char': np.uint8,
           'byte': np.uint8, 'boolean': np.bool_}
_SEQUENCE = re.compile(r'^sequence<([^,>]+)(?:, *\d+)?>$|^([^\[]+)\[\d*\]$')


def to_rosbags(msg, typestore: Typestore):
    """
    Convert an rclpy message into the rosbags dataclass of the same type.

    :param msg: an rclpy message instance.
    :param typestore: a type store that knows the type (and every nested one).
    :return: the rosbags message.
    """
    cls = typestore.types[msgtype_of(msg)]
    return cls(**{name: _field(getattr(msg, name), kind, typestore)
                  for name, kind in msg.get_fields_and_field_types().items()})


def _field(value: Any, kind: str, typestore: Typestore) -> Any:
    match = _SEQUENCE.match(kind)
    if match:
        element = match.group(1) or match.group(2)
        if element in _DTYPES:
            return np.asarray(value, dtype=_DTYPES[element])
        if '/' in element:
            return [to_rosbags(item, typestore) for item in value]
        return list(value)  # strings
    if hasattr(value, 'get_fields_and_field_types'):
        return to_rosbags(value, typestore)
    if isinstance(value, bytes):  # a single octet / char
        return value[0] if value else 0
    return value


class BagRecorder:
    """
    An open MCAP rosbag2 that rclpy messages are appended to.

    :param path: bag directory; must not exist (as with ``ros2 bag record``).
    :raises BagError: the directory exists or the bag cannot be created.
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f'{self.path}: record_bag must name a directory that does not '
                           'exist yet (a bag is never overwritten)')
        self._typestore = make_typestore()
        self._lock = threading.Lock()
        self._connections: Dict[str, object] = {}
        #: Messages written per topic.
        self.counts: Dict[str, int] = collections.Counter()
        self._writer: Optional[Writer] = Writer(self.path, version=9,
                                                storage_plugin=StoragePlugin.MCAP)
        try:
            self._writer.open()
        except Exception as exc:  # noqa: B902 - rosbags raises several types
            self._writer = None
            raise BagError(f'{self.path}: cannot create rosbag2: {exc}') from exc

    @property
    def is_open(self) -> bool:
        """Whether messages are still accepted."""
        return self._writer is not None

    def write(self, topic: str, msg, timestamp_ns: int) -> bool:
        """
        Append one message.

        :param topic: absolute topic name, e.g. ``'/scorehmr/bodies'``.
        :param msg: an rclpy message instance.
        :param timestamp_ns: log time, int nanoseconds.
        :return: False if the recorder is already closed (nothing written).
        :raises BagError: the message type is unknown to the bag's type store, or the
            write failed (e.g. the disk is full).
        """
        msgtype = msgtype_of(msg)
        try:
            data = self._typestore.serialize_cdr(to_rosbags(msg, self._typestore), msgtype)
        except Exception as exc:  # noqa: B902 - rosbags raises several types
            raise BagError(f'{self.path}: cannot serialise a {msgtype} for {topic}: '
                           f'{exc}') from exc
        with self._lock:
            if self._writer is None:
                return False
            try:
                connection = self._connections.get(topic)
                if connection is None:
                    connection = self._writer.add_connection(topic, msgtype,
                                                             typestore=self._typestore)
                    self._connections[topic] = connection
                self._writer.write(connection, int(timestamp_ns), data)
            except Exception as exc:  # noqa: B902 - rosbags raises several types
                raise BagError(f'{self.path}: cannot record {topic}: {exc}') from exc
            self.counts[topic] += 1
        return True

    def close(self) -> None:
        """Write the MCAP summary and ``metadata.yaml``; later writes are ignored."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as exc:  # noqa: B902 - rosbags raises several types
                raise BagError(f'{self.path}: cannot close rosbag2: {exc}') from exc
