"""Person tracking across frames: stable ids, gaps, crossings, resets, 2D fallback."""

import math

from multiview_scene import make_views, person_points, project_people, ring_cameras
import numpy as np
import pytest

from scorehmr_ros.fusion.association import associate, Person
from scorehmr_ros.fusion.tracking import box_iou, keypoint_box, Tracker, TrackerConfig

CAMERAS = ring_cameras(3)


def _person(points, views=(0, 1, 2), rng=None, noise_m=0.0):
    """A Person as association would build it from exact (or noisy) 3D keypoints."""
    if rng is not None and noise_m:
        points = points + rng.normal(0.0, noise_m, size=points.shape)
    keypoints_2d = {}
    for view in views:
        pixels, visible = project_people(points[None], *CAMERAS[view])
        keypoints_2d[view] = np.concatenate((pixels[0], visible[0, :, None] * 0.9), -1)
    multi = len(views) >= 2
    return Person(detections={v: 0 for v in views}, keypoints_2d=keypoints_2d,
                  points_3d=points if multi else np.zeros_like(points),
                  conf_3d=np.full(len(points), 0.9 if multi else 0.0))


def _walker(start_xy, velocity_xy, time_s, yaw=0.0):
    start = np.asarray(start_xy, dtype=np.float64)
    return person_points(start + np.asarray(velocity_xy) * time_s, yaw)


def test_walkers_through_association_keep_their_ids():
    rng = np.random.default_rng(0)
    tracker = Tracker()
    starts = [(-1.2, -0.8), (0.0, 1.0), (1.2, -0.6)]
    velocities = [(0.8, 0.2), (-0.5, -0.3), (-0.2, 0.9)]
    ids_by_truth = {}
    for frame in range(20):
        time_s = frame / 10.0
        people = np.stack([_walker(s, v, time_s) for s, v in zip(starts, velocities)])
        views, truth = make_views(people, CAMERAS, rng, ids='absent')
        persons = associate(views)
        ids = tracker.update(100.0 + time_s, persons)
        assert len(ids) == len(persons) == 3
        for person, track_id in zip(persons, ids):
            label = {int(truth[v][d]) for v, d in person.detections.items()}.pop()
            assert ids_by_truth.setdefault(label, track_id) == track_id
    assert sorted(ids_by_truth.values()) == [1, 2, 3]
    counters = tracker.counters
    assert counters.tracks_created == 3 and counters.tracks_lost == 0
    assert counters.matched_3d == 3 * 19 and counters.ambiguous_assignments == 0
    # The constant-velocity state converges to the walking speed.
    for track in tracker.tracks:
        label = next(k for k, v in ids_by_truth.items() if v == track.track_id)
        np.testing.assert_allclose(track.velocity_m_s[:2], velocities[label], atol=0.1)


def test_crossing_people_keep_ids_and_the_ambiguity_is_counted():
    # Two people walk towards each other 0.3 m apart laterally: near the crossing both
    # tracks are inside the 0.5 m gate of both people; the velocity prediction keeps ids.
    rng = np.random.default_rng(1)
    tracker = Tracker(gate_m=0.5)
    first = None
    for frame in range(30):
        time_s = frame / 10.0
        persons = [_person(_walker((-1.5, 0.15), (1.0, 0.0), time_s), rng=rng, noise_m=0.01),
                   _person(_walker((1.5, -0.15), (-1.0, 0.0), time_s, math.pi), rng=rng,
                           noise_m=0.01)]
        ids = tracker.update(time_s, persons)
        first = first or ids
        assert ids == first
    assert tracker.counters.ambiguous_assignments > 0
    assert tracker.counters.tracks_created == 2


def test_crossing_through_association_never_crashes_and_swaps_are_counted():
    # Head-on on the same line with detector noise: the people overlap in the images, so
    # association and tracking may fail around the crossing; nothing may crash, and every
    # id change against the truth must come with counted ambiguity or new tracks.
    rng = np.random.default_rng(2)
    tracker = Tracker()
    ids_by_truth = {}
    changes = 0
    for frame in range(30):
        time_s = frame / 10.0
        people = np.stack([_walker((-1.5, 0.0), (1.0, 0.0), time_s),
                           _walker((1.5, 0.05), (-1.0, 0.0), time_s, math.pi)])
        views, truth = make_views(people, CAMERAS, rng, noise_px=3.0, ids='absent')
        persons = associate(views)
        ids = tracker.update(time_s, persons)
        assert len(ids) == len(persons)
        for person, track_id in zip(persons, ids):
            labels = {int(truth[v][d]) for v, d in person.detections.items()}
            if len(labels) == 1:
                label = labels.pop()
                if ids_by_truth.get(label, track_id) != track_id:
                    changes += 1
                ids_by_truth[label] = track_id
    counters = tracker.counters
    assert counters.ambiguous_assignments > 0
    assert changes <= counters.ambiguous_assignments + counters.tracks_created


@pytest.mark.parametrize('gap_s, same_id', [(0.5, True), (1.5, False)])
def test_gap_shorter_than_max_age_keeps_the_id(gap_s, same_id):
    tracker = Tracker(max_age_s=1.0)
    velocity = (0.5, 0.0)
    stamps = [0.1 * i for i in range(10)]
    stamps += [stamps[-1] + gap_s + 0.1 * i for i in range(5)]
    ids = []
    for stamp in stamps:
        ids += tracker.update(stamp, [_person(_walker((-1.0, 0.0), velocity, stamp))])
    before, after = set(ids[:10]), set(ids[10:])
    assert len(before) == 1 and len(after) == 1
    assert (before == after) == same_id
    if not same_id:
        assert min(after) > max(before)   # ids are never reused
        assert tracker.counters.tracks_lost == 1
        assert tracker.counters.tracks_created == 2
    else:
        assert tracker.counters.tracks_lost == 0


def test_zero_and_fifty_people():
    tracker = Tracker()
    assert tracker.update(0.0, []) == []
    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(np.arange(10) * 1.2, np.arange(5) * 1.2), -1).reshape(-1, 2)
    # A crowd walking roughly one way: neighbours 1.2 m apart never come within the gate.
    headings = 0.7 + rng.uniform(-0.2, 0.2, size=len(grid))
    velocities = np.stack((np.cos(headings), np.sin(headings)), -1)
    first = None
    for frame in range(10):
        time_s = 1.0 + frame / 10.0
        persons = [_person(_walker(g, v, time_s - 1.0), rng=rng, noise_m=0.01)
                   for g, v in zip(grid, velocities)]
        ids = tracker.update(time_s, persons)
        first = first or ids
        assert ids == first
    assert len(set(first)) == 50
    assert tracker.update(3.0, []) == []
    assert tracker.counters.tracks_created == 50
    assert tracker.counters.tracks_lost == 50   # 1.1 s without people > max_age 1 s
    assert tracker.counters.ambiguous_assignments == 0


def test_stamp_going_back_resets_and_ids_are_not_reused():
    tracker = Tracker()
    person = _person(_walker((0.0, 0.0), (0.0, 0.0), 0.0))
    old = tracker.update(10.0, [person])
    tracker.update(10.1, [person])
    new = tracker.update(5.0, [person])   # bag replay looped
    assert new[0] > old[0]
    assert tracker.counters.time_resets == 1
    assert tracker.counters.tracks_lost == 1
    assert tracker.update(5.0, [person]) == new   # equal stamps are fine
    with pytest.raises(ValueError, match='stamp_s'):
        tracker.update(float('nan'), [person])


def test_single_view_frames_keep_the_id_by_2d_overlap():
    tracker = Tracker()
    ids = []
    for frame in range(15):
        time_s = frame / 10.0
        points = _walker((-0.5, 0.0), (0.6, 0.0), time_s)
        views = (0,) if 5 <= frame < 10 else (0, 1, 2)   # only camera 0 in the middle
        ids += tracker.update(time_s, [_person(points, views)])
    assert len(set(ids)) == 1
    assert tracker.counters.matched_2d == 5
    assert tracker.counters.matched_3d == 9

    # A person only ever seen by one camera is tracked in 2D alone.
    tracker = Tracker()
    ids = [tracker.update(f / 10.0, [_person(_walker((0.3, 0.3), (0.4, 0.0), f / 10.0),
                                             views=(1,))])[0] for f in range(10)]
    assert len(set(ids)) == 1 and tracker.counters.matched_2d == 9


def test_untrackable_person_gets_minus_one():
    tracker = Tracker()
    empty = Person(detections={0: 0}, keypoints_2d={0: np.zeros((25, 3))},
                   points_3d=np.zeros((25, 3)), conf_3d=np.zeros(25))
    good = _person(_walker((0.0, 0.0), (0.0, 0.0), 0.0))
    ids = tracker.update(0.0, [empty, good])
    assert ids[0] == -1 and ids[1] == 1
    assert tracker.counters.persons_untrackable == 1
    assert tracker.counters.detections_unmatched == 2
    assert tracker.counters.as_dict()['tracks_created'] == 1


def test_box_helpers():
    keypoints = np.array([[10.0, 20.0, 0.9], [30.0, 60.0, 0.8], [500.0, 500.0, 0.1]])
    np.testing.assert_allclose(keypoint_box(keypoints), [10.0, 20.0, 30.0, 60.0])
    assert keypoint_box(keypoints[:1]) is None
    box = np.array([0.0, 0.0, 10.0, 10.0])
    assert box_iou(box, box) == 1.0
    assert box_iou(box, box + 20.0) == 0.0
    assert box_iou(box, np.array([5.0, 0.0, 15.0, 10.0])) == pytest.approx(1.0 / 3.0)


def test_config_validation():
    with pytest.raises(ValueError, match='max_age_s'):
        TrackerConfig(max_age_s=0.0)
    with pytest.raises(ValueError, match='gate_m'):
        Tracker(gate_m=float('inf'))
    with pytest.raises(ValueError, match='min_iou'):
        TrackerConfig(min_iou=0.0)
    with pytest.raises(ValueError, match='velocity_smoothing'):
        TrackerConfig(velocity_smoothing=1.5)
    assert Tracker(TrackerConfig(gate_m=0.3), max_age_s=2.0).config == \
        TrackerConfig(gate_m=0.3, max_age_s=2.0)
