"""
Speed and accuracy of cross-view association and tracking on synthetic stick figures.

Scenes come from ``tests/multiview_scene.py`` (BODY_25 stick figures, cameras on a
5 m circle, 1280x720, focal 1000 px). Prints the fastest and the median wall time of
:func:`scorehmr_ros.fusion.association.associate` and of one
:meth:`scorehmr_ros.fusion.tracking.Tracker.update` per scene size, and the grouping
accuracy on a clean and on a hard setting. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_association.py
"""

import argparse
from pathlib import Path
import sys
import time

import numpy as np

from scorehmr_ros.fusion.association import associate
from scorehmr_ros.fusion.tracking import Tracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))
from multiview_scene import (grouping_accuracy, make_views, random_people,  # noqa: E402,I100
                             ring_cameras)


def time_case(num_people: int, num_views: int, repeats: int):
    """
    Fastest and median seconds of associate() and Tracker.update() on one scene.

    :param num_people: people in the scene.
    :param num_views: cameras.
    :param repeats: timed calls.
    :return: ``(associate_min_s, associate_median_s, update_min_s, update_median_s)``.
    """
    rng = np.random.default_rng(0)
    people = random_people(num_people, rng, radius_m=1.0 + 0.5 * num_people ** 0.5,
                           min_separation_m=0.7)
    views, _ = make_views(people, ring_cameras(num_views), rng)
    associate(views)
    assoc, update = [], []
    tracker = Tracker()
    for index in range(repeats):
        start = time.perf_counter()
        persons = associate(views)
        assoc.append(time.perf_counter() - start)
        start = time.perf_counter()
        tracker.update(index * 0.1, persons)
        update.append(time.perf_counter() - start)
    return (float(np.min(assoc)), float(np.median(assoc)), float(np.min(update)),
            float(np.median(update)))


def accuracy(num_people: int, num_views: int, seeds: int, **kwargs) -> float:
    """
    Mean grouping accuracy over seeds.

    :param num_people: people.
    :param num_views: cameras.
    :param seeds: scenes.
    :param kwargs: :func:`make_views` options (plus ``sep`` and ``hide``).
    :return: accuracy in [0, 1].
    """
    values = []
    sep = kwargs.pop('sep', 0.9)
    hide = kwargs.pop('hide', 0.0)
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        people = random_people(num_people, rng, min_separation_m=sep)
        hidden = [(v, p) for v in range(num_views) for p in range(num_people)
                  if rng.random() < hide]
        views, truth = make_views(people, ring_cameras(num_views), rng, hidden=hidden,
                                  **kwargs)
        values.append(grouping_accuracy(associate(views), truth))
    return float(np.mean(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--repeats', type=int, default=50)
    parser.add_argument('--seeds', type=int, default=20)
    args = parser.parse_args()
    print('people views  associate_ms (min / median)  tracker_update_ms (min / median)')
    for num_people, num_views in ((1, 2), (4, 4), (8, 4), (16, 4)):
        times_ms = [t * 1e3 for t in time_case(num_people, num_views, args.repeats)]
        print(f'{num_people:6d} {num_views:5d}  {times_ms[0]:8.2f} / {times_ms[1]:8.2f}'
              f'             {times_ms[2]:8.3f} / {times_ms[3]:8.3f}')
    print('\nsetting                                              views  ids          accuracy')
    hard = dict(noise_px=8.0, drop_prob=0.4, sep=0.4, hide=0.2)
    for name, people, views, options in (
            ('clean: 4 people, 1.5 px, 10 % missed', 4, 4, {}),
            ('hard: 8 people 0.4 m apart, 8 px, 40 % missed, 20 % hidden', 8, 2, hard),
            ('hard', 8, 3, hard), ('hard', 8, 4, hard)):
        for ids in ('absent', 'consistent', 'conflicting'):
            value = accuracy(people, views, args.seeds, ids=ids, **options)
            print(f'{name:52s} {views:5d}  {ids:11s}  {value:.4f}')


if __name__ == '__main__':
    main()
