"""
Approximate-time synchronisation of N message streams (pure Python, no ROS).

The ROS 2 node uses it to group one message per camera into one refinement input, where
``message_filters`` is not installed (ROS 2 from PyPI wheels has none). Stamps are int
nanoseconds (``sec * 10**9 + nanosec``), so no float rounding can split or merge sets.

Matching rule: whenever a message arrives, the synchroniser looks for a set that takes,
from every *active* stream, the queued message closest in time to a pivot, and whose
stamps span at most ``slop_ns``. Candidate pivots are the queued stamps of all streams,
oldest first, so the oldest complete set is emitted first and no stream gets ahead.
After a set is emitted, every queued message at or before the set's stamp in its stream
is removed (older ones counted as dropped): the output stamps never go backwards.

Streams can be marked inactive (a camera that stopped publishing); sets are then formed
from the active streams only and carry ``None`` for the inactive ones.
"""

import collections
import dataclasses
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

#: One queued message: ``(stamp_ns, payload)``.
Entry = Tuple[int, Any]


@dataclasses.dataclass
class SyncStats:
    """
    Counters of a :class:`ApproximateTimeSync` (monotonic over its life).

    :param received: messages given to :meth:`ApproximateTimeSync.add`, per stream.
    :param matched: sets emitted.
    :param dropped: messages removed without being part of a set (queue overflow, or
        passed over by a newer set), per stream.
    :param resets: times a stream's stamp went backwards and all queues were cleared.
    """

    received: List[int]
    matched: int = 0
    dropped: List[int] = dataclasses.field(default_factory=list)
    resets: int = 0


class ApproximateTimeSync:
    """
    Group one message per stream whose stamps lie within ``slop_ns`` of each other.

    :param num_streams: N streams (cameras), at least 1.
    :param slop_ns: largest allowed spread (max - min) of the stamps of a set, ns.
    :param queue_size: messages kept per stream while waiting for partners (>= 1).
    :param callback: called with ``(stamp_ns, [payload or None] * N)`` for every set;
        ``stamp_ns`` is the newest stamp of the set.
    :param backwards_tolerance_ns: a stamp earlier than the stream's newest by more than
        this is a time jump (bag loop, simulation reset) and clears every queue; smaller
        reorderings are dropped as late messages.
    """

    def __init__(self, num_streams: int, slop_ns: int, queue_size: int,
                 callback: Callable[[int, List[Any]], None],
                 backwards_tolerance_ns: int = 0):
        if not isinstance(num_streams, int) or num_streams < 1:
            raise ValueError(f'num_streams must be a positive int, got {num_streams!r}')
        if not isinstance(slop_ns, int) or slop_ns < 0:
            raise ValueError(f'slop_ns must be an int >= 0, got {slop_ns!r}')
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f'queue_size must be a positive int, got {queue_size!r}')
        self.num_streams = num_streams
        self.slop_ns = slop_ns
        self.queue_size = queue_size
        self.backwards_tolerance_ns = int(backwards_tolerance_ns)
        self._callback = callback
        self._queues: List[Deque[Entry]] = [collections.deque() for _ in range(num_streams)]
        self._newest: List[Optional[int]] = [None] * num_streams
        self._active = [True] * num_streams
        self._last_set_ns: Optional[int] = None
        self.stats = SyncStats(received=[0] * num_streams, dropped=[0] * num_streams)

    @property
    def active(self) -> Tuple[bool, ...]:
        """[N] whether each stream takes part in matching."""
        return tuple(self._active)

    def set_active(self, stream: int, active: bool) -> None:
        """
        Include or exclude a stream from matching (excluded: its slot in sets is None).

        :param stream: stream index.
        :param active: False for a stream that stopped publishing.
        """
        if self._active[stream] == active:
            return
        self._active[stream] = active
        if not active:
            self.stats.dropped[stream] += len(self._queues[stream])
            self._queues[stream].clear()
        if any(self._active):
            self._match()

    def reset(self) -> None:
        """Forget every queued message and the stamp history (counted as a reset)."""
        for index, queue in enumerate(self._queues):
            self.stats.dropped[index] += len(queue)
            queue.clear()
        self._newest = [None] * self.num_streams
        self._last_set_ns = None
        self.stats.resets += 1

    def add(self, stream: int, stamp_ns: int, payload: Any) -> bool:
        """
        Queue one message and emit every set that is complete.

        :param stream: stream index in ``[0, N)``.
        :param stamp_ns: header stamp, int nanoseconds.
        :param payload: anything; handed back in the set.
        :return: False if the stamp went backwards beyond the tolerance (queues were
            reset; the message starts the new history), else True.
        """
        if not 0 <= stream < self.num_streams:
            raise IndexError(f'stream {stream} out of range [0, {self.num_streams})')
        stamp_ns = int(stamp_ns)
        self.stats.received[stream] += 1
        # A stream that publishes again takes part from now on, even if this message is
        # late: the active streams' message of the same instant may have been matched
        # without it a moment ago, and waiting for an in-time one would never end.
        self._active[stream] = True
        jumped = False
        newest = self._newest[stream]
        if newest is not None and stamp_ns < newest - self.backwards_tolerance_ns:
            self.reset()
            jumped = True
        elif ((newest is not None and stamp_ns <= newest)
              or (self._last_set_ns is not None and stamp_ns <= self._last_set_ns)):
            # Late or duplicate: a set at or after it was already emitted.
            self.stats.dropped[stream] += 1
            return True
        queue = self._queues[stream]
        queue.append((stamp_ns, payload))
        self._newest[stream] = stamp_ns
        while len(queue) > self.queue_size:
            queue.popleft()
            self.stats.dropped[stream] += 1
        self._match()
        return not jumped

    def _match(self) -> None:
        while True:
            found = self._find_set()
            if found is None:
                return
            picks, stamp_ns = found
            payloads: List[Any] = [None] * self.num_streams
            for stream, position in picks.items():
                queue = self._queues[stream]
                for _ in range(position):
                    queue.popleft()
                    self.stats.dropped[stream] += 1
                payloads[stream] = queue.popleft()[1]
            # Messages of other active streams at or before the set are now too old.
            for stream in range(self.num_streams):
                queue = self._queues[stream]
                while queue and queue[0][0] <= stamp_ns:
                    queue.popleft()
                    self.stats.dropped[stream] += 1
            self._last_set_ns = stamp_ns
            self.stats.matched += 1
            self._callback(stamp_ns, payloads)

    def _find_set(self) -> Optional[Tuple[Dict[int, int], int]]:
        """Oldest set within the slop: ``({stream: queue position}, newest stamp)``."""
        streams = [i for i in range(self.num_streams) if self._active[i]]
        if not streams or any(not self._queues[i] for i in streams):
            return None
        pivots = sorted(stamp for i in streams for stamp, _ in self._queues[i])
        for pivot in pivots:
            picks: Dict[int, int] = {}
            stamps = []
            for stream in streams:
                position = _closest(self._queues[stream], pivot)
                picks[stream] = position
                stamps.append(self._queues[stream][position][0])
            if max(stamps) - min(stamps) <= self.slop_ns:
                return picks, max(stamps)
        return None


def _closest(queue: Sequence[Entry], stamp_ns: int) -> int:
    """Position of the entry nearest ``stamp_ns`` (the earlier one on a tie)."""
    best, best_gap = 0, None
    for position, (stamp, _) in enumerate(queue):
        gap = abs(stamp - stamp_ns)
        if best_gap is None or gap < best_gap:
            best, best_gap = position, gap
    return best


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """
    Int nanoseconds of a ``builtin_interfaces/Time``.

    :param sec: seconds (int32 in the message).
    :param nanosec: nanoseconds in ``[0, 10**9)``.
    :return: ``sec * 10**9 + nanosec``.
    """
    return int(sec) * 1_000_000_000 + int(nanosec)


def ns_to_stamp(stamp_ns: int) -> Tuple[int, int]:
    """
    ``(sec, nanosec)`` of int nanoseconds (inverse of :func:`stamp_to_ns`).

    :param stamp_ns: nanoseconds.
    :return: ``(sec, nanosec)`` with ``0 <= nanosec < 10**9``.
    """
    return divmod(int(stamp_ns), 1_000_000_000)
