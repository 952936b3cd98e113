"""Cross-view association against synthetic ground truth (stick figures, ring of cameras)."""

from hypothesis import given, settings, strategies as st
from multiview_scene import (grouping_accuracy, look_at, make_views, random_people,
                             ring_cameras)
import numpy as np
import pytest

from scorehmr_ros.fusion.association import (associate, AssociationConfig,
                                             AssociationCounters, Associator, ViewDetections)


def _scene(num_people, num_views, seed, **kwargs):
    rng = np.random.default_rng(seed)
    people = random_people(num_people, rng, min_separation_m=kwargs.pop('sep', 0.9))
    views, truth = make_views(people, ring_cameras(num_views), rng, **kwargs)
    return people, views, truth


def _true_label(person, truth):
    labels = {int(truth[v][d]) for v, d in person.detections.items()}
    assert len(labels) == 1
    return labels.pop()


@pytest.mark.parametrize('num_views', [2, 3, 4])
@pytest.mark.parametrize('num_people', [1, 2, 3, 4])
def test_clean_scenes_are_grouped_exactly(num_people, num_views):
    for seed in range(3):
        people, views, truth = _scene(num_people, num_views, seed, ids='absent')
        counters = AssociationCounters()
        persons = associate(views, counters=counters)
        assert grouping_accuracy(persons, truth) == 1.0
        assert len(persons) == num_people
        assert counters.persons_multi_view == num_people
        for person in persons:
            assert person.num_views == num_views
            assert person.upstream_id is None
            # 1.5 px noise: keypoints within ~1 cm of the truth; a keypoint seen only by two
            # opposite cameras (rays ~10 degrees from parallel) can be off by ~15 cm.
            good = person.conf_3d > 0
            error = np.linalg.norm(person.points_3d[good]
                                   - people[_true_label(person, truth)][good], axis=-1)
            assert good.sum() >= 15
            assert np.median(error) < 0.02 and error.max() < 0.25
            assert person.reprojection_error_px < 3.0
            assert person.epipolar_error < AssociationConfig().max_epipolar_error


def test_partial_visibility_gives_single_view_persons():
    # Person 0 only in view 0; person 1 missing from view 2; person 2 everywhere.
    hidden = [(1, 0), (2, 0), (2, 1)]
    for seed in range(5):
        _, views, truth = _scene(3, 3, seed, hidden=hidden)
        persons = associate(views)
        assert grouping_accuracy(persons, truth) == 1.0
        by_label = {_true_label(p, truth): p for p in persons}
        assert sorted(by_label[0].detections) == [0]
        assert not by_label[0].is_multi_view and (by_label[0].conf_3d == 0).all()
        assert sorted(by_label[1].detections) == [0, 1]
        assert sorted(by_label[2].detections) == [0, 1, 2]


def test_hidden_people_in_four_views():
    rng = np.random.default_rng(11)
    accuracies = []
    for seed in range(10):
        hidden = [(v, p) for v in range(4) for p in range(4) if rng.random() < 0.3]
        _, views, truth = _scene(4, 4, seed, hidden=hidden)
        accuracies.append(grouping_accuracy(associate(views), truth))
    assert min(accuracies) == 1.0


def test_all_low_confidence_view_is_counted_and_ignored():
    _, views, truth = _scene(3, 3, 7, ids='absent')
    views[1].keypoints[..., 2] = 0.1
    counters = AssociationCounters()
    persons = associate(views, counters=counters)
    assert counters.views_low_confidence == 1
    assert counters.detections_low_confidence == 3
    assert counters.detections == 9
    assert all(1 not in p.detections for p in persons)
    truth[1] = truth[1][:0]   # view 1 contributes nothing usable
    assert grouping_accuracy(persons, truth) == 1.0


def test_nan_keypoints_and_empty_views():
    _, views, truth = _scene(2, 3, 8)
    views[0].keypoints[0, :5] = np.nan
    views[2] = ViewDetections(keypoints=np.zeros((0, 25, 3)), k=views[2].k,
                              world_to_camera=views[2].world_to_camera,
                              track_ids=np.zeros(0, dtype=np.int64))
    truth[2] = truth[2][:0]
    persons = associate(views)
    assert grouping_accuracy(persons, truth) == 1.0
    for person in persons:
        assert np.isfinite(person.points_3d).all() and np.isfinite(person.conf_3d).all()
    assert associate([]) == []
    assert associate(views[2:]) == []


@pytest.mark.parametrize('num_views', [2, 4])
def test_consistent_upstream_ids(num_views):
    for seed in range(3):
        _, views, truth = _scene(4, num_views, seed, ids='consistent')
        counters = AssociationCounters()
        persons = associate(views, counters=counters)
        assert grouping_accuracy(persons, truth) == 1.0
        assert counters.upstream_id_conflicts == 0
        for person in persons:
            assert person.upstream_id == _true_label(person, truth) + 1


@pytest.mark.parametrize('num_views', [2, 4])
def test_conflicting_upstream_ids_lose_to_geometry_and_are_counted(num_views):
    for seed in range(3):
        _, views, truth = _scene(4, num_views, seed, ids='conflicting')
        counters = AssociationCounters()
        persons = associate(views, counters=counters)
        assert grouping_accuracy(persons, truth) == 1.0
        assert counters.upstream_id_conflicts > 0


def test_same_upstream_id_never_joins_inconsistent_detections():
    # Two people, each seen in one view only, both labelled id 1 upstream.
    people = random_people(2, np.random.default_rng(2))
    cameras = ring_cameras(2)
    rng = np.random.default_rng(3)
    views, _ = make_views(people, cameras, rng, hidden=[(0, 1), (1, 0)])
    for view in views:
        view.track_ids[:] = 1
    counters = AssociationCounters()
    persons = associate(views, counters=counters)
    assert [p.num_views for p in persons] == [1, 1]
    assert counters.upstream_id_conflicts == 1
    assert counters.persons_single_view == 2


def test_upstream_ids_can_be_ignored():
    _, views, truth = _scene(3, 2, 4, ids='conflicting')
    counters = AssociationCounters()
    persons = associate(views, AssociationConfig(use_upstream_ids=False), counters)
    assert grouping_accuracy(persons, truth) == 1.0
    assert counters.upstream_id_conflicts == 0
    assert all(p.upstream_id is None for p in persons)


def _panned_camera(pan_rad, offset_m):
    """Camera 0 of the ring turned by ``pan_rad`` and moved by ``offset_m`` sideways."""
    k, pose = ring_cameras(1)[0]
    centre = -pose[:3, :3].T @ pose[:3, 3]
    target = centre + np.array([[np.cos(pan_rad), -np.sin(pan_rad), 0.0],
                                [np.sin(pan_rad), np.cos(pan_rad), 0.0],
                                [0.0, 0.0, 1.0]]) @ (np.array([0.0, 0.0, 0.9]) - centre)
    return k, look_at(centre + np.array([0.0, offset_m, 0.0]), target)


def test_cameras_with_a_common_centre_have_no_geometry():
    rng = np.random.default_rng(5)
    people = random_people(2, rng)
    views, _ = make_views(people, [_panned_camera(0.0, 0.0), _panned_camera(0.05, 0.0)], rng)
    counters = AssociationCounters()
    persons = associate(views, counters=counters)
    assert all(not p.is_multi_view for p in persons)
    assert len(persons) == sum(len(v.keypoints) for v in views) == 4
    assert counters.clusters_split == 0


def test_tiny_baseline_clusters_fail_triangulation_and_are_split():
    # 5 mm apart: epipolar distances are tiny for any pairing, but no keypoint has enough
    # parallax to triangulate, so every cluster is split again; no detection is lost.
    rng = np.random.default_rng(5)
    people = random_people(2, rng)
    views, truth = make_views(people, [_panned_camera(0.0, 0.0), _panned_camera(0.05, 0.005)],
                              rng, ids='absent')
    counters = AssociationCounters()
    persons = associate(views, counters=counters)
    assert counters.clusters_split == 2
    assert all(not p.is_multi_view for p in persons)
    assert sorted((v, d) for p in persons for v, d in p.detections.items()) == \
        [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize('ids', ['absent', 'conflicting'])
def test_hard_scenes_report_accuracy(ids):
    """8 people 0.4 m apart, 8 px noise, 40 % missed keypoints, 20 % hidden, 3 views."""
    accuracies = []
    counters = AssociationCounters()
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        hidden = [(v, p) for v in range(3) for p in range(8) if rng.random() < 0.2]
        _, views, truth = _scene(8, 3, 100 + seed, sep=0.4, noise_px=8.0, drop_prob=0.4,
                                 hidden=hidden, ids=ids)
        accuracies.append(grouping_accuracy(associate(views, counters=counters), truth))
    # Measured over 20 seeds (benchmarks/bench_association.py): about 0.97-0.98.
    assert np.mean(accuracies) > 0.9
    assert (counters.upstream_id_conflicts > 0) == (ids == 'conflicting')


def test_associator_accumulates_counters():
    associator = Associator()
    for seed in range(3):
        _, views, _ = _scene(2, 3, seed)
        associator(views)
    assert associator.counters.frames == 3
    assert associator.counters.detections == 18
    assert associator.counters.as_dict()['persons_multi_view'] == 6


def test_bad_input_raises_with_field_names():
    _, views, _ = _scene(2, 2, 0)
    good = views[0]
    with pytest.raises(ValueError, match=r'views\[0\].keypoints'):
        associate([ViewDetections(good.keypoints[..., :2], good.k, good.world_to_camera)])
    with pytest.raises(ValueError, match=r'views\[1\].k'):
        associate([good, ViewDetections(good.keypoints, np.eye(4), good.world_to_camera)])
    with pytest.raises(ValueError, match=r'views\[0\].world_to_camera'):
        associate([ViewDetections(good.keypoints, good.k, np.eye(3))])
    with pytest.raises(ValueError, match=r'views\[0\].track_ids'):
        associate([ViewDetections(good.keypoints, good.k, good.world_to_camera,
                                  track_ids=np.arange(5))])
    with pytest.raises(ValueError, match='same layout'):
        associate([good, ViewDetections(views[1].keypoints[:, :17], views[1].k,
                                        views[1].world_to_camera)])
    with pytest.raises(ValueError, match='max_epipolar_error'):
        AssociationConfig(max_epipolar_error=float('nan'))
    with pytest.raises(ValueError, match='upstream_id_weight'):
        AssociationConfig(upstream_id_weight=0.5)
    with pytest.raises(ValueError, match='min_keypoints'):
        AssociationConfig(min_keypoints=0)


def _grouping(persons, orders):
    """Persons as a set of frozensets of (view, original detection index)."""
    return {frozenset((v, int(orders[v][d])) for v, d in p.detections.items())
            for p in persons}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), num_people=st.integers(1, 4),
       num_views=st.integers(2, 4), perm_seed=st.integers(0, 10_000),
       ids=st.sampled_from(['consistent', 'absent', 'conflicting']))
def test_detection_order_does_not_change_the_grouping(seed, num_people, num_views, perm_seed,
                                                      ids):
    _, views, _ = _scene(num_people, num_views, seed, ids=ids, shuffle=False,
                         noise_px=2.0, drop_prob=0.2)
    rng = np.random.default_rng(perm_seed)
    identity = [np.arange(len(v.keypoints)) for v in views]
    orders = [rng.permutation(len(v.keypoints)) for v in views]
    shuffled = [ViewDetections(v.keypoints[o], v.k, v.world_to_camera,
                               None if v.track_ids is None else v.track_ids[o])
                for v, o in zip(views, orders)]
    grouping = _grouping(associate(views), identity)
    assert grouping == _grouping(associate(shuffled), orders)
    # Every detection (all are usable here) is in exactly one person.
    members = [m for group in grouping for m in group]
    assert len(members) == len(set(members)) == sum(len(v.keypoints) for v in views)
