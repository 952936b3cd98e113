"""
Reading photos, image folders and videos as RGB arrays, with errors that name the file.

OpenCV (installed with the detector extra) decodes images and videos; without it,
Pillow (a core dependency) decodes images and videos are refused with a clear message.
"""

import logging
import os
from typing import Iterator, List, Optional, Tuple

import numpy as np

LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')

#: Folders searched for the sample media of Debian's ``opencv-doc`` package (installed
#: system-wide, or extracted into the repository's ``.cache`` by scripts/setup.sh).
_OPENCV_DOC_DATA = 'usr/share/doc/opencv-doc/examples/data'
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MediaError(ValueError):
    """An image or video file is missing, unreadable or not decodable."""


def read_image(path: str) -> np.ndarray:
    """
    Read an image file.

    :param path: image file (any format OpenCV or Pillow decodes).
    :return: [H, W, 3] uint8 RGB.
    :raises MediaError: naming the file, if it is missing, unreadable or corrupt.
    """
    if not os.path.isfile(path):
        raise MediaError(f'{path}: no such image file')
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except OSError as err:
        raise MediaError(f'{path}: cannot read the file ({err.strerror})') from err
    image = _decode(data, path)
    if image is None or image.ndim < 2 or image.shape[0] < 2 or image.shape[1] < 2:
        raise MediaError(f'{path}: not a decodable image (corrupt or unsupported format, '
                         f'{len(data)} bytes)')
    return image


def _decode(data: bytes, path: str) -> Optional[np.ndarray]:
    cv2 = _cv2()
    if cv2 is not None:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return None if image is None else np.ascontiguousarray(image[:, :, ::-1])
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert('RGB'))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        LOG.debug('%s: Pillow cannot decode: %s', path, err)
        return None


def exif_focal_px(path: str, image_hw: Tuple[int, int]) -> Optional[float]:
    """
    Focal length in pixels from a photo's EXIF ``FocalLengthIn35mmFilm`` tag.

    :param path: image file.
    :param image_hw: (height, width) of the decoded image, pixels.
    :return: focal length in pixels (``f_35mm / 36 mm * max(H, W)``), or None when the
        file has no usable tag.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            exif = img.getexif().get_ifd(0x8769)   # the Exif sub-IFD
            focal_35mm = exif.get(0xA405)          # FocalLengthIn35mmFilm
    except (UnidentifiedImageError, OSError, ValueError, AttributeError):
        return None
    if not focal_35mm or float(focal_35mm) <= 0:
        return None
    return float(focal_35mm) / 36.0 * max(image_hw)


def list_images(folder: str) -> List[str]:
    """
    List the image files of a folder, sorted by name.

    :param folder: directory.
    :return: paths of the files with an image extension.
    :raises MediaError: if the folder holds no image.
    """
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise MediaError(f'{folder}: folder holds no image file ({", ".join(IMAGE_EXTENSIONS)})')
    return [os.path.join(folder, n) for n in names]


def iter_frames(path: str, max_frames: Optional[int] = None,
                stride: int = 1) -> Iterator[Tuple[int, str, Optional[np.ndarray]]]:
    """
    Iterate over the frames of a video file or an image folder.

    A folder's corrupt image yields ``None`` for that frame (the caller counts and skips
    it); a video that cannot be opened or has no frame raises.

    :param path: video file or folder of images.
    :param max_frames: stop after this many yielded frames.
    :param stride: use every ``stride``-th frame.
    :return: iterator of (frame index, frame name, [H, W, 3] uint8 RGB or None).
    :raises MediaError: if the path is missing, the video is unreadable or the folder
        holds no image.
    """
    if stride < 1:
        raise MediaError(f'stride must be >= 1, got {stride}')
    if os.path.isdir(path):
        frames = _folder_frames(path)
    elif os.path.isfile(path):
        frames = _video_frames(path)
    else:
        raise MediaError(f'{path}: no such video file or image folder')
    count = 0
    for index, name, image in frames:
        if index % stride:
            continue
        if max_frames is not None and count >= max_frames:
            return
        count += 1
        yield index, name, image


def _folder_frames(folder: str):
    for index, file in enumerate(list_images(folder)):
        try:
            image = read_image(file)
        except MediaError as err:
            LOG.warning('%s; frame skipped', err)
            image = None
        yield index, os.path.splitext(os.path.basename(file))[0], image


def _video_frames(path: str):
    cv2 = _cv2()
    if cv2 is None:
        raise MediaError(f'{path}: reading videos needs OpenCV; install the detector extra '
                         '(requirements-nodeps.txt) or pass a folder of images')
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise MediaError(f'{path}: cannot open the video (unreadable or unsupported)')
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, f'frame_{index:06d}', np.ascontiguousarray(frame[:, :, ::-1])
            index += 1
        if index == 0:
            raise MediaError(f'{path}: the video has no decodable frame')
    finally:
        capture.release()


def video_fps(path: str) -> float:
    """
    Frame rate of a video file (25 when unknown or for a folder).

    :param path: video file or folder.
    :return: frames per second.
    """
    cv2 = _cv2()
    if cv2 is None or os.path.isdir(path):
        return 25.0
    capture = cv2.VideoCapture(path)
    fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    return float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0


def sample_media_path(name: str = 'messi5.jpg') -> Optional[str]:
    """
    Find one of the sample files of Debian's ``opencv-doc`` (e.g. ``messi5.jpg``).

    Searched: ``$SCOREHMR_SAMPLE_DATA``, the system install, and ``<repo>/.cache/opencv-doc``
    where scripts/setup.sh extracts the package.

    :param name: file name inside ``examples/data``.
    :return: the path, or None if it is nowhere.
    """
    folders = [os.environ.get('SCOREHMR_SAMPLE_DATA', ''),
               os.path.join('/', _OPENCV_DOC_DATA),
               os.path.join(_REPO_ROOT, '.cache', 'opencv-doc', _OPENCV_DOC_DATA)]
    for folder in folders:
        if folder and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _cv2():
    try:
        import cv2
    except ImportError:
        return None
    return cv2
