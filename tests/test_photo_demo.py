"""Tests of the photo/video demo: image reading errors and the pipeline end to end."""

import io
import os
import shutil

import numpy as np
import pytest

from scorehmr_ros.cli import main
from scorehmr_ros.config import load_config
from scorehmr_ros.perception import images
from scorehmr_ros.perception.mediapipe_pose import mediapipe_available

MESSI = images.sample_media_path('messi5.jpg')
needs_all = pytest.mark.skipif(
    not mediapipe_available() or MESSI is None,
    reason='needs mediapipe (requirements-nodeps.txt) and messi5.jpg of opencv-doc')
# A tiny refinement: 2 guided steps, 2 outer iterations.
TINY = {'sampler.tau': 4, 'sampler.ddim_step': 2, 'sampler.outer_iters': 2}


def test_demo_config_defaults_to_the_shipped_prior_and_keeps_explicit_choices():
    from scorehmr_ros.photo_demo import DEFAULT_PRIOR, demo_config

    cfg = demo_config(load_config(None))
    assert cfg.model.checkpoint == DEFAULT_PRIOR == 'builtin:mocap_prior_coco17'
    explicit = demo_config(load_config(None, {'model.checkpoint': '',
                                              'body.model_path': 'x.npz'}))
    assert explicit.model.checkpoint == '' and explicit.body.model_path == 'x.npz'


def _write_corrupt(path):
    with open(path, 'wb') as handle:
        handle.write(b'\xff\xd8\xff\xe0 this is not really a jpeg' * 3)


def test_corrupt_image_names_the_file(tmp_path):
    bad = str(tmp_path / 'broken.jpg')
    _write_corrupt(bad)
    with pytest.raises(images.MediaError, match='broken.jpg: not a decodable image'):
        images.read_image(bad)
    with pytest.raises(images.MediaError, match='no such image file'):
        images.read_image(str(tmp_path / 'missing.png'))


def test_folder_frames_skip_corrupt_files_and_refuse_bad_paths(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'a.png')
    _write_corrupt(str(tmp_path / 'b.jpg'))
    frames = list(images.iter_frames(str(tmp_path)))
    assert [(i, n) for i, n, _ in frames] == [(0, 'a'), (1, 'b')]
    assert frames[0][2].shape == (8, 8, 3) and frames[1][2] is None
    with pytest.raises(images.MediaError, match='no such video file or image folder'):
        list(images.iter_frames(str(tmp_path / 'nothing.avi')))
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(images.MediaError, match='holds no image'):
        list(images.iter_frames(str(empty)))
    not_video = tmp_path / 'clip.avi'
    not_video.write_bytes(b'garbage' * 10)
    with pytest.raises(images.MediaError, match='clip.avi'):
        list(images.iter_frames(str(not_video)))


def test_cli_corrupt_image_exits_nonzero_with_the_file_name(tmp_path, caplog):
    if not mediapipe_available():
        pytest.skip('mediapipe (requirements-nodeps.txt) is not installed')
    bad = str(tmp_path / 'broken.jpg')
    _write_corrupt(bad)
    code = main(['photo', bad, '--out', str(tmp_path / 'out')])
    assert code != 0
    assert 'broken.jpg: not a decodable image' in caplog.text
    assert not (tmp_path / 'out').exists()


@needs_all
def test_cli_blank_image_reports_no_person(tmp_path, capsys):
    from PIL import Image

    blank = str(tmp_path / 'blank.png')
    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(blank)
    code = main(['photo', blank, '--out', str(tmp_path / 'out')]
                + [f'--set={k}={v}' for k, v in TINY.items()])
    assert code == 1
    assert 'no person found in' in capsys.readouterr().out


@needs_all
def test_photo_demo_end_to_end(tmp_path):
    from scorehmr_ros.photo_demo import run_photo

    out = io.StringIO()
    code = run_photo(MESSI, str(tmp_path), load_config('config/refiner.yaml', TINY), out=out)
    text = out.getvalue()
    assert code == 0, text
    # The embedded default: the shipped prior, named as what it is, and its samples start.
    assert 'small open mocap prior (not the paper' in text and 'model-100.pt' in text
    assert 'poses sampled from the prior given the keypoints' in text
    for name in ('messi5_overlay.png', 'messi5_3d.png', 'messi5_results.npz'):
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert str(path) in text
    res = np.load(tmp_path / 'messi5_results.npz')
    assert res['rotmats'].shape == (1, 24, 3, 3) and res['keypoints_2d'].shape == (1, 17, 3)
    for key in ('rotmats', 'pose_aa', 'betas', 'cam_t', 'joints_3d', 'reproj_before_px',
                'reproj_after_px'):
        assert np.all(np.isfinite(res[key])), key
    assert res['reproj_after_px'][0] < res['reproj_before_px'][0]
    assert res['cam_t'][0, 2] > 0.5
    assert str(res['keypoint_layout']) == 'coco17'


@needs_all
def test_video_demo_on_an_image_folder(tmp_path):
    from scorehmr_ros.photo_demo import run_video

    frames = tmp_path / 'frames_in'
    frames.mkdir()
    shutil.copy(MESSI, frames / '000.jpg')
    _write_corrupt(str(frames / '001.jpg'))
    out = io.StringIO()
    code = run_video(str(frames), str(tmp_path / 'out'),
                     load_config('config/refiner.yaml', TINY), out=out)
    text = out.getvalue()
    assert code == 0, text
    assert '2 frame(s), 1 with a person, 1 unreadable' in text
    res = np.load(tmp_path / 'out' / 'frames' / '000_results.npz')
    assert res['rotmats'].shape == (1, 24, 3, 3)
    assert os.path.isfile(tmp_path / 'out' / 'frames' / '000_overlay.png')


VTEST = images.sample_media_path('vtest.avi')
needs_vtest = pytest.mark.skipif(
    not mediapipe_available() or VTEST is None,
    reason='needs mediapipe (requirements-nodeps.txt) and vtest.avi of opencv-doc')


@needs_vtest
def test_cli_video_hog_boxes_refine_several_people_per_frame(tmp_path, capsys):
    out_dir = tmp_path / 'out'
    code = main(['video', VTEST, '--out', str(out_dir), '--boxes', 'hog', '--max-frames', '1']
                + [f'--set={k}={v}' for k, v in TINY.items()])
    text = capsys.readouterr().out
    assert code == 0, text
    assert 'person boxes: hog' in text
    res = np.load(out_dir / 'frames' / 'frame_000000_results.npz')
    people = res['rotmats'].shape[0]
    # Whole-frame MediaPipe finds nobody in vtest.avi; the HOG boxes find 3 in frame 0.
    assert people >= 2, text
    assert f'frame 0: {people} person(s)' in text
    assert res['keypoints_2d'].shape == (people, 17, 3) and res['cam_t'].shape == (people, 3)
    for key in ('rotmats', 'betas', 'cam_t', 'joints_3d', 'reproj_after_px'):
        assert np.all(np.isfinite(res[key])), key
    assert np.all(res['cam_t'][:, 2] > 1.0)
    # Distinct people, not one person found several times.
    assert np.min(np.linalg.norm(res['cam_t'][:, None] - res['cam_t'][None], axis=-1)
                  + np.eye(people) * 1e3) > 0.3
    assert np.all(res['reproj_after_px'] < 15.0), res['reproj_after_px']
    overlay = out_dir / 'frames' / 'frame_000000_overlay.png'
    assert overlay.is_file() and overlay.stat().st_size > 10000
    assert str(out_dir / 'frames') in text


def test_cli_unreadable_video_exits_nonzero_and_writes_nothing(tmp_path, caplog):
    if not mediapipe_available():
        pytest.skip('mediapipe (requirements-nodeps.txt) is not installed')
    clip = tmp_path / 'clip.avi'
    clip.write_bytes(b'garbage' * 10)
    for path in (str(clip), str(tmp_path / 'missing.avi')):
        code = main(['video', path, '--out', str(tmp_path / 'out'), '--boxes', 'hog'])
        assert code == 2
        assert path in caplog.text
    assert 'cannot open the video' in caplog.text and 'no such video file' in caplog.text
    assert not (tmp_path / 'out').exists()


def test_unknown_person_boxes_are_refused():
    from scorehmr_ros.photo_demo import PhotoPipeline

    with pytest.raises(ValueError, match="person boxes must be one of none, hog, got 'yolo'"):
        PhotoPipeline(load_config(None), person_boxes='yolo')
    with pytest.raises(SystemExit):
        main(['video', 'x.avi', '--out', 'y', '--boxes', 'yolo'])


def _demo_args(tmp_path, *extra):
    from scorehmr_ros.cli import _parser

    return _parser().parse_args(['demo', '--output-dir', str(tmp_path / 'demo'), *extra])


def test_demo_part4_flags_and_missing_sample(tmp_path, monkeypatch, caplog, capsys):
    from scorehmr_ros import cli

    assert _demo_args(tmp_path, '--no-video').no_video
    args = _demo_args(tmp_path)
    assert not args.no_video and args.video is None
    # Without the sample media part 4 says why it is skipped and does not fail the demo.
    monkeypatch.setattr(images, 'sample_media_path', lambda name='': None)
    assert cli._demo_video(args, load_config(None)) == 0
    assert 'part 4 (video, several people) skipped' in caplog.text
    assert 'part 4:' not in capsys.readouterr().out
    assert not (tmp_path / 'demo').exists()


@needs_all
def test_demo_part4_runs_run_video_with_hog_boxes_into_output_dir(tmp_path, capsys):
    from PIL import Image

    from scorehmr_ros import cli

    # A folder with one blank frame: the plumbing (path, boxes, output folder, exit code 1
    # when nobody is found) without the cost of the real video, tested above.
    frames = tmp_path / 'clip'
    frames.mkdir()
    Image.fromarray(np.full((96, 128, 3), 200, np.uint8)).save(frames / '000.png')
    args = _demo_args(tmp_path, '--video', str(frames))
    code = cli._demo_video(args, load_config(None, TINY))
    text = capsys.readouterr().out
    assert code == 1, text
    assert 'scorehmr demo, part 4' in text and 'person boxes: hog' in text
    assert 'no person found in any frame' in text
    assert (tmp_path / 'demo' / 'video' / 'frames' / '000_overlay.png').is_file()
    assert str(tmp_path / 'demo' / 'video' / 'frames') in text
