"""
Play a rosbag2 into ROS 2 with its recorded timing (``scorehmr-replay BAG``).

Messages are published as the serialized CDR recorded in the bag, so header stamps are
exactly as recorded; each one goes out at its log time relative to the first message,
divided by ``--rate``. With ``--clock`` the player also publishes ``/clock`` (the bag's log
time, every message and at ``--clock-hz`` in between) for nodes run with
``use_sim_time:=true``. ``--loop N`` plays the bag N times (stamps jump back at each loop,
as with ``ros2 bag play --loop``). ``--wait-for TOPIC`` (repeatable) holds playback until
that topic's publisher has a subscriber, so that nothing is sent before the consumer is up.

:class:`OutputCollector` is the other end used by the tests and the ROS demo: it records
the node's ``bodies`` and ``/tf`` in its own rclpy context.
"""

import argparse
import importlib
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from builtin_interfaces.msg import Time
import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from scorehmr_ros.bag_io import BagError, BagRecord, read_bag_raw

NODE_NAME = 'scorehmr_replay'


def message_class(msgtype: str):
    """
    Import the rclpy message class of a type name.

    :param msgtype: e.g. ``'sensor_msgs/msg/Image'``.
    :return: the class.
    :raises ValueError: the type is not importable.
    """
    package, kind, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{package}.{kind}'), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f'message type {msgtype} is not available: {exc}') from exc


#: Topics replayed latched (transient local), as their original publishers do.
LATCHED_TOPICS = ('/tf_static',)


def _qos(depth: int, latched: bool = False) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                      else DurabilityPolicy.VOLATILE)


class BagPlayer:
    """
    Publishers for a bag's topics, and the timed playback loop.

    :param node: node that owns the publishers.
    :param records: records of :func:`scorehmr_ros.bag_io.read_bag_raw` (CDR bytes).
    :param clock: also publish ``/clock``.
    :param clock_hz: ``/clock`` rate between messages (wall time).
    """

    def __init__(self, node: Node, records: Sequence[BagRecord], clock: bool = False,
                 clock_hz: float = 50.0):
        if not records:
            raise ValueError('the bag holds no messages')
        self.node = node
        self.records = list(records)
        self.publishers = {}
        for record in self.records:
            if record.topic not in self.publishers:
                self.publishers[record.topic] = node.create_publisher(
                    message_class(record.msgtype), record.topic,
                    _qos(100, latched=True) if record.topic in LATCHED_TOPICS else _qos(10))
        self.clock_pub = node.create_publisher(Clock, '/clock', _qos(1)) if clock else None
        self.clock_period_s = 1.0 / clock_hz if clock_hz > 0 else float('inf')
        self.published = 0

    def wait_for_subscribers(self, topics: Sequence[str], timeout_s: float) -> List[str]:
        """
        Wait until each topic's publisher has a subscriber.

        :param topics: topics of the bag.
        :param timeout_s: how long to wait.
        :return: the topics still without a subscriber (empty on success).
        :raises ValueError: a topic is not in the bag.
        """
        unknown = [t for t in topics if t not in self.publishers]
        if unknown:
            raise ValueError(f'not in the bag: {", ".join(unknown)}; the bag has '
                             f'{", ".join(sorted(self.publishers))}')
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [t for t in topics if self.publishers[t].get_subscription_count() == 0]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.05)

    def _publish_clock(self, stamp_ns: int) -> None:
        if self.clock_pub is not None:
            sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
            self.clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))

    def play(self, rate: float = 1.0, loops: int = 1,
             sleep: Callable[[float], None] = time.sleep) -> int:
        """
        Publish every record ``loops`` times with the recorded relative timing.

        :param rate: playback speed factor (> 0).
        :param loops: how many times to play the bag (>= 1).
        :param sleep: sleep function (seconds).
        :return: messages published.
        """
        if not rate > 0:
            raise ValueError(f'rate must be > 0, got {rate}')
        first_ns = self.records[0].timestamp_ns
        for _ in range(max(int(loops), 1)):
            start_s = time.monotonic()
            for record in self.records:
                offset_s = (record.timestamp_ns - first_ns) * 1e-9 / rate
                while True:
                    remaining_s = start_s + offset_s - time.monotonic()
                    if remaining_s <= 0:
                        break
                    if self.clock_pub is not None:
                        elapsed_s = time.monotonic() - start_s
                        self._publish_clock(first_ns + int(elapsed_s * rate * 1e9))
                    sleep(min(remaining_s, self.clock_period_s))
                self._publish_clock(record.timestamp_ns)
                self.publishers[record.topic].publish(record.message)
                self.published += 1
        return self.published


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line of ``scorehmr-replay``."""
    parser = argparse.ArgumentParser(
        prog='scorehmr-replay', description='Play a rosbag2 (MCAP or sqlite3) with its '
        'recorded timing; header stamps are kept as recorded.')
    parser.add_argument('bag', help='bag directory (with metadata.yaml)')
    parser.add_argument('--rate', type=float, default=1.0, help='speed factor (default 1)')
    parser.add_argument('--loop', type=int, default=1, metavar='N',
                        help='play the bag N times (default 1)')
    parser.add_argument('--clock', action='store_true',
                        help='publish /clock from the bag log time (for use_sim_time)')
    parser.add_argument('--clock-hz', type=float, default=50.0,
                        help='/clock rate between messages (default 50)')
    parser.add_argument('--wait-for', action='append', default=[], metavar='TOPIC',
                        help='wait until TOPIC has a subscriber before playing (repeatable)')
    parser.add_argument('--wait-timeout', type=float, default=60.0,
                        help='seconds to wait for --wait-for subscribers (default 60)')
    parser.add_argument('--start-delay', type=float, default=0.5,
                        help='seconds between discovery and the first message (default 0.5)')
    parser.add_argument('--linger', type=float, default=0.5,
                        help='seconds to stay up after the last message (default 0.5)')
    args = parser.parse_args(argv)
    if not args.rate > 0:
        parser.error('--rate must be > 0')
    if args.loop < 1:
        parser.error('--loop must be >= 1')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point (``scorehmr-replay BAG [--rate R] [--loop N] [--clock]``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(rclpy.utilities.remove_ros_args(['scorehmr-replay'] + argv)[1:])
    try:
        records = list(read_bag_raw(args.bag))
    except BagError as exc:
        sys.stderr.write(f'scorehmr-replay: {exc}\n')
        return 2
    rclpy.init(args=['scorehmr-replay'] + argv)
    node = None
    status = 0
    try:
        node = Node(NODE_NAME)
        player = BagPlayer(node, records, clock=args.clock, clock_hz=args.clock_hz)
        missing = player.wait_for_subscribers(args.wait_for, args.wait_timeout)
        if missing:
            node.get_logger().error(f'no subscriber after {args.wait_timeout} s: '
                                    + ', '.join(missing))
            return 1
        time.sleep(max(args.start_delay, 0.0))
        node.get_logger().info(f'playing {len(records)} messages of {args.bag} at rate '
                               f'{args.rate} x {args.loop}')
        player.play(args.rate, args.loop)
        time.sleep(max(args.linger, 0.0))
        node.get_logger().info(f'done: {player.published} messages published')
    except (KeyboardInterrupt, ExternalShutdownException):
        status = 130
    except ValueError as exc:
        sys.stderr.write(f'scorehmr-replay: {exc}\n')
        status = 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status


class OutputCollector:
    """
    Subscriber to the node's ``bodies`` and ``/tf``, in its own rclpy context.

    :param domain_id: ROS domain id (None: ``ROS_DOMAIN_ID``).
    :param bodies_topic: topic of the ``SmplBodyArray`` output.
    """

    def __init__(self, domain_id: Optional[int] = None, bodies_topic: str = 'bodies'):
        from scorehmr_ros_msgs.msg import SmplBodyArray
        from tf2_msgs.msg import TFMessage
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node('scorehmr_output_collector', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.bodies: List = []
        self.tf: List = []
        self.bodies_topic = bodies_topic
        self.node.create_subscription(SmplBodyArray, bodies_topic, self.bodies.append,
                                      _qos(100))
        self.node.create_subscription(TFMessage, '/tf', self.tf.append, _qos(100))

    def connected(self) -> bool:
        """Whether the node's ``bodies`` and ``/tf`` publishers are discovered."""
        return (self.node.count_publishers(self.bodies_topic) > 0
                and self.node.count_publishers('/tf') > 0)

    def spin_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """
        Spin until ``condition()`` holds or ``timeout_s`` passes.

        :return: the final value of ``condition()``.
        """
        return spin_until(self.executor, condition, timeout_s)

    def bodies_by_key(self) -> Dict:
        """Received ``SmplBodyArray`` messages by ``(stamp_ns, frame_id)`` (newest wins)."""
        return {(convert_stamp(m.header.stamp), m.header.frame_id): m for m in self.bodies}

    def tf_stamps(self) -> Dict:
        """``(child_frame_id, parent frame_id)`` -> set of TF stamps received."""
        stamps: Dict = {}
        for msg in self.tf:
            for t in msg.transforms:
                stamps.setdefault((t.child_frame_id, t.header.frame_id), set()).add(
                    convert_stamp(t.header.stamp))
        return stamps

    def close(self) -> None:
        """Destroy the node and shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def spin_until(executor, condition: Callable[[], bool], timeout_s: float,
               step_s: float = 0.05) -> bool:
    """
    Spin an executor until ``condition()`` holds or ``timeout_s`` passes.

    :param executor: rclpy executor with the subscribing node.
    :param condition: checked between spins.
    :param timeout_s: longest wait, seconds.
    :param step_s: longest single spin, seconds.
    :return: the final value of ``condition()``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=step_s)
    return condition()


def convert_stamp(stamp) -> int:
    """Int nanoseconds of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


if __name__ == '__main__':
    raise SystemExit(main())
