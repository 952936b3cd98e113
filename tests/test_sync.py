"""The approximate-time synchroniser (ROS-free): pairing, slop, queue bound, time jumps."""

import random

import pytest

from scorehmr_ros.sync import ApproximateTimeSync, ns_to_stamp, stamp_to_ns

MS = 1_000_000
PERIOD_NS = 100 * MS  # 10 Hz cameras


def make_sync(num_streams=3, slop_ns=20 * MS, queue_size=5, **kwargs):
    sets = []
    sync = ApproximateTimeSync(num_streams, slop_ns, queue_size,
                               lambda stamp, payloads: sets.append((stamp, payloads)),
                               **kwargs)
    return sync, sets


def test_jittered_streams_are_paired_frame_by_frame():
    rng = random.Random(0)
    sync, sets = make_sync()
    frames = 50
    events = []
    for frame in range(frames):
        for cam in range(3):
            # +-5 ms capture jitter and up to 30 ms delivery delay: arrival order mixes.
            stamp = frame * PERIOD_NS + rng.randint(-5 * MS, 5 * MS)
            events.append((stamp + rng.randint(0, 30 * MS), cam, stamp, (frame, cam)))
    for _, cam, stamp, payload in sorted(events):
        sync.add(cam, stamp, payload)
    # Every frame is one set of the three cameras' messages of that frame.
    assert [[p[0] for p in payloads] for _, payloads in sets] == [[f] * 3 for f in
                                                                  range(frames)]
    assert all([p[1] for p in payloads] == [0, 1, 2] for _, payloads in sets)
    assert sync.stats.matched == frames and sync.stats.dropped == [0, 0, 0]
    stamps = [stamp for stamp, _ in sets]
    assert stamps == sorted(stamps)


def test_sets_outside_the_slop_are_rejected():
    sync, sets = make_sync(num_streams=2, slop_ns=10 * MS)
    sync.add(0, 0, 'a0')
    sync.add(1, 11 * MS, 'b0')  # 11 ms apart: one more than the slop
    assert sets == []
    sync.add(0, 100 * MS, 'a1')
    sync.add(1, 110 * MS, 'b1')  # exactly the slop: accepted
    assert sets == [(110 * MS, ['a1', 'b1'])]
    # The unmatched older pair was passed over by the newer set and counted as dropped.
    assert sync.stats.dropped == [1, 1]


def test_closest_partner_is_chosen():
    sync, sets = make_sync(num_streams=2, slop_ns=30 * MS)
    sync.add(1, 0, 'b_early')
    sync.add(1, 25 * MS, 'b_close')
    sync.add(0, 24 * MS, 'a')
    # Oldest pivot (0) already gives a valid set with b_early... but the pivot search
    # takes each stream's message closest to the pivot, so the pair is (a, b_early)
    # only if it is within the slop; it is (24 ms <= 30 ms).
    assert sets == [(24 * MS, ['a', 'b_early'])]
    sync.add(0, 26 * MS, 'a2')
    assert sets[-1] == (26 * MS, ['a2', 'b_close'])


def test_queue_is_bounded_and_overflow_counted():
    sync, sets = make_sync(num_streams=2, queue_size=3)
    for k in range(10):  # stream 1 never publishes
        sync.add(0, k * PERIOD_NS, k)
    assert sets == []
    assert len(sync._queues[0]) == 3
    assert sync.stats.dropped == [7, 0]
    assert sync.stats.received == [10, 0]


def test_stamps_going_backwards_reset_the_state():
    sync, sets = make_sync(num_streams=2)
    for k in range(3):
        sync.add(0, 1000 * PERIOD_NS + k * PERIOD_NS, k)
        sync.add(1, 1000 * PERIOD_NS + k * PERIOD_NS, k)
    assert len(sets) == 3
    # A bag loop: time restarts earlier. The first backwards message resets everything.
    assert sync.add(0, 5 * PERIOD_NS, 'loop') is False
    assert sync.stats.resets == 1
    # The reset forgot every stream's history: stream 1 looping too is no second reset.
    assert sync.add(1, 5 * PERIOD_NS, 'loop') is True
    assert sets[-1] == (5 * PERIOD_NS, ['loop', 'loop'])
    assert sync.stats.resets == 1


def test_small_reordering_within_tolerance_is_dropped_not_reset():
    sync, sets = make_sync(num_streams=1, backwards_tolerance_ns=50 * MS)
    sync.add(0, 100 * MS, 'a')
    assert sync.add(0, 90 * MS, 'late') is True
    assert sync.stats.resets == 0 and sync.stats.dropped == [1]
    assert [p for _, p in sets] == [['a']]


def test_inactive_stream_is_skipped_and_returns_when_it_publishes():
    sync, sets = make_sync(num_streams=3)
    sync.add(0, 0, 'a0')
    sync.add(1, 0, 'b0')
    assert sets == []
    sync.set_active(2, False)  # camera 2 timed out: the waiting pair goes out at once
    assert sets == [(0, ['a0', 'b0', None])]
    sync.add(2, PERIOD_NS, 'c1')  # back: active again, the next set waits for all three
    sync.add(0, PERIOD_NS, 'a1')
    assert len(sets) == 1
    sync.add(1, PERIOD_NS, 'b1')
    assert sets[-1] == (PERIOD_NS, ['a1', 'b1', 'c1'])
    assert sync.active == (True, True, True)


def test_returning_stream_whose_first_message_is_late_rejoins():
    # The returning camera's first message arrives just after the other camera's message
    # of the same instant went out alone: it is late (dropped), but the stream must take
    # part again from there on, else every later message of it would be late too.
    sync, sets = make_sync(num_streams=2)
    sync.set_active(1, False)
    sync.add(0, 0, 'a0')
    assert sets == [(0, ['a0', None])]
    assert sync.add(1, 0, 'b0') is True and sync.stats.dropped == [0, 1]
    assert sync.active == (True, True)
    sync.add(0, PERIOD_NS, 'a1')
    assert len(sets) == 1  # waits for camera 1 now
    sync.add(1, PERIOD_NS, 'b1')
    assert sets[-1] == (PERIOD_NS, ['a1', 'b1'])


@pytest.mark.parametrize('kwargs', [dict(num_streams=0), dict(slop_ns=-1),
                                    dict(queue_size=0), dict(slop_ns=0.5)])
def test_invalid_arguments_name_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        make_sync(**kwargs)


def test_stamp_conversion_round_trips():
    assert stamp_to_ns(1700000000, 123456789) == 1700000000123456789
    assert ns_to_stamp(1700000000123456789) == (1700000000, 123456789)
