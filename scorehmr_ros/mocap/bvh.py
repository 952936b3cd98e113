"""
A strict BVH (Biovision Hierarchy) reader and its forward kinematics.

Format: a ``HIERARCHY`` section (one ``ROOT``, nested ``JOINT`` blocks and ``End Site``
blocks, each with an ``OFFSET`` and, for joints, ``CHANNELS n name...`` with any order
and subset of ``Xposition Yposition Zposition Xrotation Yrotation Zrotation``), then
``MOTION`` with ``Frames: F``, ``Frame Time: dt`` and F rows of C numbers, one row per
line (C = the total channel count, in joint order).

Conventions (those of the common readers):

* Rotation channels are Euler angles in degrees, composed in file order as intrinsic
  rotations: channels ``c1 c2 c3`` give ``R = R_c1 @ R_c2 @ R_c3``. A joint's local
  rotation maps its own coordinates into its parent's.
* Position channels, where a joint has them, replace the matching components of its
  ``OFFSET`` (they are the joint's position in its parent's frame, not an increment).
* Units are whatever the file uses; :mod:`scorehmr_ros.mocap.retarget` converts.

Bad files (missing braces or keywords, wrong number of values in a row, fewer or more
rows than ``Frames:``, a truncated last row, non-numeric, NaN or infinite values, unknown
or repeated channel names, duplicate joint names, zero frames) raise :class:`BvhError`
with the file name, the line number and what was expected. Nothing else escapes.

Letters: F frames, J joints, C channels.
"""

from dataclasses import dataclass
import math
import os
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, 'os.PathLike[str]']

#: Canonical channel names; files are matched case-insensitively.
CHANNEL_NAMES = ('Xposition', 'Yposition', 'Zposition', 'Xrotation', 'Yrotation',
                 'Zrotation')
_CHANNEL_BY_LOWER = {name.lower(): name for name in CHANNEL_NAMES}
_AXIS = {'X': 0, 'Y': 1, 'Z': 2}
# A deeper hierarchy than this is not a body; it also bounds the parser's stack.
MAX_DEPTH = 256


class BvhError(ValueError):
    """A BVH file is malformed; the message names the file, the line and the expectation."""


@dataclass(frozen=True)
class BvhMotion:
    """
    The content of a BVH file.

    :param source: the file name (or ``'<string>'``).
    :param joint_names: [J] joint names, parents before children (file order).
    :param parents: [J] int64 parent index, -1 for the root.
    :param offsets: [J, 3] float64 offset of each joint in its parent's frame, file units.
    :param end_site_offsets: [J, 3] float64 offset of the joint's ``End Site`` (zeros
        where it has none).
    :param has_end_site: [J] bool.
    :param channels: per joint, its channel names in file order.
    :param channel_start: [J] int64 column of each joint's first channel in ``motion``.
    :param frame_time_s: seconds between frames.
    :param motion: [F, C] float64 channel values (degrees for rotations).
    """

    source: str
    joint_names: Tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    end_site_offsets: np.ndarray
    has_end_site: np.ndarray
    channels: Tuple[Tuple[str, ...], ...]
    channel_start: np.ndarray
    frame_time_s: float
    motion: np.ndarray

    @property
    def num_frames(self) -> int:
        """F, the number of frames."""
        return int(self.motion.shape[0])

    @property
    def num_joints(self) -> int:
        """J, the number of joints (End Sites not counted)."""
        return len(self.joint_names)

    @property
    def fps(self) -> float:
        """Frames per second, ``1 / frame_time_s``."""
        return 1.0 / self.frame_time_s

    def index(self, name: str) -> int:
        """
        Look a joint up by name.

        :param name: the joint's name in the file.
        :return: its index.
        :raises KeyError: naming the joint and the file when it is absent.
        """
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(f'{self.source}: no joint named {name!r}') from None

    def children(self, joint: int) -> List[int]:
        """
        Return the direct children of a joint.

        :param joint: joint index.
        :return: indices of the joints whose parent it is.
        """
        return [int(j) for j in np.nonzero(self.parents == joint)[0]]


class Kinematics(NamedTuple):
    """
    Forward kinematics of every frame.

    :param local_rotations: [F, J, 3, 3] joint-to-parent rotations.
    :param local_translations: [F, J, 3] joint position in the parent's frame, file units.
    :param global_rotations: [F, J, 3, 3] joint-to-world rotations.
    :param positions: [F, J, 3] joint positions in the world, file units.
    """

    local_rotations: np.ndarray
    local_translations: np.ndarray
    global_rotations: np.ndarray
    positions: np.ndarray


class _Token(NamedTuple):
    text: str
    line: int


def read_bvh(path: PathLike) -> BvhMotion:
    """
    Read a BVH file.

    :param path: the file.
    :return: its hierarchy and motion.
    :raises BvhError: if the file cannot be read or is malformed.
    """
    name = os.fspath(path)
    try:
        with open(name, 'rb') as handle:
            raw = handle.read()
    except OSError as err:
        raise BvhError(f'{name}: cannot read the file ({err.strerror or err})') from err
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        text = raw.decode('latin-1')
    return parse_bvh(text, source=name)


def parse_bvh(text: str, source: str = '<string>') -> BvhMotion:
    """
    Parse the text of a BVH file.

    :param text: the whole file.
    :param source: name used in error messages.
    :return: its hierarchy and motion.
    :raises BvhError: if the text is malformed.
    """
    lines = text.splitlines()
    motion_line = _find_motion_line(lines, source)
    tokens = list(_tokens(lines[:motion_line], first_line=1))
    hierarchy = _Hierarchy(source)
    hierarchy.parse(tokens, end_line=motion_line + 1)
    frames, frame_time_s, first_row = _parse_motion_header(lines, motion_line, source)
    motion = _parse_rows(lines, first_row, frames, hierarchy.num_channels, source)
    return BvhMotion(
        source=source, joint_names=tuple(hierarchy.names),
        parents=np.asarray(hierarchy.parents, dtype=np.int64),
        offsets=np.asarray(hierarchy.offsets, dtype=np.float64).reshape(-1, 3),
        end_site_offsets=np.asarray(hierarchy.end_sites, dtype=np.float64).reshape(-1, 3),
        has_end_site=np.asarray(hierarchy.has_end_site, dtype=bool),
        channels=tuple(tuple(c) for c in hierarchy.channels),
        channel_start=np.asarray(hierarchy.channel_start, dtype=np.int64),
        frame_time_s=frame_time_s, motion=motion)


def _tokens(lines: Sequence[str], first_line: int) -> Iterator[_Token]:
    """Whitespace-separated tokens with 1-based line numbers; braces are tokens of their own."""
    for number, line in enumerate(lines, start=first_line):
        for word in line.replace('{', ' { ').replace('}', ' } ').split():
            yield _Token(word, number)


def _find_motion_line(lines: Sequence[str], source: str) -> int:
    for number, line in enumerate(lines):
        words = line.split()
        if words and words[0].upper() == 'MOTION':
            if len(words) != 1:
                raise BvhError(f'{source}:{number + 1}: expected MOTION alone on its line, '
                               f'got {line.strip()!r}')
            return number
    raise BvhError(f'{source}:{len(lines)}: expected a MOTION section, found none '
                   '(file truncated?)')


class _Hierarchy:
    """Recursive-descent parser of the HIERARCHY section, with an explicit stack."""

    def __init__(self, source: str):
        self.source = source
        self.names: List[str] = []
        self.parents: List[int] = []
        self.offsets: List[Tuple[float, float, float]] = []
        self.end_sites: List[Tuple[float, float, float]] = []
        self.has_end_site: List[bool] = []
        self.channels: List[List[str]] = []
        self.channel_start: List[int] = []
        self.num_channels = 0
        self._tokens: List[_Token] = []
        self._pos = 0
        self._end_line = 0

    def _error(self, expected: str, token: Optional[_Token] = None) -> BvhError:
        if token is None:
            return BvhError(f'{self.source}:{self._end_line}: expected {expected}, '
                            'reached the MOTION section (missing braces or values?)')
        return BvhError(f'{self.source}:{token.line}: expected {expected}, '
                        f'got {token.text!r}')

    def _next(self, expected: str) -> _Token:
        if self._pos >= len(self._tokens):
            raise self._error(expected)
        token = self._tokens[self._pos]
        self._pos += 1
        return token

    def _peek(self) -> Optional[_Token]:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _keyword(self, word: str) -> _Token:
        token = self._next(word)
        if token.text.upper() != word.upper():
            raise self._error(word, token)
        return token

    def _number(self, what: str) -> float:
        token = self._next(what)
        value = _to_float(token.text)
        if value is None:
            raise self._error(what, token)
        return value

    def _offset(self, what: str) -> Tuple[float, float, float]:
        self._keyword('OFFSET')
        return tuple(self._number(f'{axis} of the {what} OFFSET (a finite number)')
                     for axis in 'xyz')

    def _name(self, keyword: _Token) -> str:
        """Read the rest of the keyword's line (a name may contain spaces), up to a brace."""
        words = []
        while True:
            token = self._peek()
            if token is None or token.line != keyword.line or token.text in '{}':
                break
            words.append(self._next('a name').text)
        if not words:
            raise self._error(f'a joint name after {keyword.text}', self._peek())
        name = ' '.join(words)
        if name in self.names:
            raise BvhError(f'{self.source}:{keyword.line}: duplicate joint name {name!r} '
                           '(joint names must be unique)')
        return name

    def _channels(self, joint: int) -> None:
        token = self._peek()
        if token is None or token.text.upper() != 'CHANNELS':
            return
        self._next('CHANNELS')
        count_token = self._next('the channel count')
        if not count_token.text.isdigit() or int(count_token.text) > len(CHANNEL_NAMES):
            raise self._error(f'a channel count 0..{len(CHANNEL_NAMES)}', count_token)
        names = []
        for _ in range(int(count_token.text)):
            token = self._next(f'{int(count_token.text)} channel names')
            canonical = _CHANNEL_BY_LOWER.get(token.text.lower())
            if canonical is None:
                raise self._error('a channel name (' + ' '.join(CHANNEL_NAMES) + ')', token)
            if canonical in names:
                raise self._error(f'a channel not yet listed for this joint ({names})', token)
            names.append(canonical)
        self.channels[joint] = names
        self.channel_start[joint] = self.num_channels
        self.num_channels += len(names)

    def _add_joint(self, keyword: _Token, parent: int) -> int:
        name = self._name(keyword)
        self.names.append(name)
        self.parents.append(parent)
        self.offsets.append((0.0, 0.0, 0.0))
        self.end_sites.append((0.0, 0.0, 0.0))
        self.has_end_site.append(False)
        self.channels.append([])
        self.channel_start.append(self.num_channels)
        joint = len(self.names) - 1
        self._keyword('{')
        self.offsets[joint] = self._offset(f'joint {name!r}')
        self._channels(joint)
        return joint

    def parse(self, tokens: List[_Token], end_line: int) -> None:
        self._tokens, self._pos, self._end_line = tokens, 0, end_line
        self._keyword('HIERARCHY')
        root = self._keyword('ROOT')
        stack = [self._add_joint(root, -1)]
        while stack:
            token = self._next(f'JOINT, End Site or "}}" closing joint '
                               f'{self.names[stack[-1]]!r}')
            word = token.text.upper()
            if word == '}':
                stack.pop()
            elif word == 'JOINT':
                if len(stack) >= MAX_DEPTH:
                    raise self._error(f'a hierarchy at most {MAX_DEPTH} joints deep', token)
                stack.append(self._add_joint(token, stack[-1]))
            elif word == 'END':
                self._keyword('Site')
                self._keyword('{')
                joint = stack[-1]
                if self.has_end_site[joint]:
                    raise self._error(f'at most one End Site in joint {self.names[joint]!r}',
                                      token)
                self.end_sites[joint] = self._offset(f'End Site of {self.names[joint]!r}')
                self.has_end_site[joint] = True
                self._keyword('}')
            else:
                raise self._error(f'JOINT, End Site or "}}" in joint '
                                  f'{self.names[stack[-1]]!r}', token)
        extra = self._peek()
        if extra is not None:
            raise self._error('MOTION after the ROOT block (one ROOT per file)', extra)


def _to_float(text: str) -> Optional[float]:
    """Convert to a finite float, or None (non-numeric, NaN or infinite)."""
    if not text or '_' in text:   # Python's float() accepts '1_0'; BVH does not.
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_motion_header(lines: Sequence[str], motion_line: int, source: str
                         ) -> Tuple[int, float, int]:
    """Return ``(frames, frame_time_s, index of the first data line)``."""
    number = motion_line + 1
    header: Dict[str, Tuple[str, int]] = {}
    for key in ('frames', 'frame time'):
        while number < len(lines) and not lines[number].strip():
            number += 1
        if number >= len(lines):
            raise BvhError(f'{source}:{number}: expected "{_title(key)}:" after MOTION, '
                           'reached the end of the file')
        line = lines[number]
        label, sep, value = line.partition(':')
        if not sep or ' '.join(label.split()).lower() != key:
            raise BvhError(f'{source}:{number + 1}: expected "{_title(key)}: <value>", '
                           f'got {line.strip()!r}')
        header[key] = (value.strip(), number + 1)
        number += 1
    frames_text, frames_line = header['frames']
    if not frames_text.isdigit():
        raise BvhError(f'{source}:{frames_line}: expected a whole number of frames, '
                       f'got {frames_text!r}')
    frames = int(frames_text)
    if frames < 1:
        raise BvhError(f'{source}:{frames_line}: expected at least one frame, got 0')
    time_text, time_line = header['frame time']
    frame_time_s = _to_float(time_text)
    if frame_time_s is None or frame_time_s <= 0.0:
        raise BvhError(f'{source}:{time_line}: expected a positive finite frame time in '
                       f'seconds, got {time_text!r}')
    return frames, frame_time_s, number


def _title(key: str) -> str:
    return ' '.join(word.capitalize() for word in key.split())


def _parse_rows(lines: Sequence[str], first_row: int, frames: int, num_channels: int,
                source: str) -> np.ndarray:
    """Read F rows of C finite numbers, one per non-empty line, exactly F of them."""
    rows: List[List[str]] = []
    row_lines: List[int] = []
    for number in range(first_row, len(lines)):
        words = lines[number].split()
        if not words:
            continue
        if len(rows) == frames:
            raise BvhError(f'{source}:{number + 1}: expected the end of the file after '
                           f'{frames} frame rows (Frames: {frames}), got more rows')
        if len(words) != num_channels:
            raise BvhError(f'{source}:{number + 1}: expected {num_channels} values in frame '
                           f'row {len(rows)} (the channel count), got {len(words)}')
        rows.append(words)
        row_lines.append(number + 1)
    if len(rows) < frames:
        where = row_lines[-1] if row_lines else first_row
        raise BvhError(f'{source}:{where}: expected {frames} frame rows (Frames: {frames}), '
                       f'the file ends after {len(rows)} (truncated?)')
    if num_channels == 0:
        return np.zeros((frames, 0))
    flat = [word for row in rows for word in row]
    try:
        if any('_' in word for word in flat):
            raise ValueError('underscore')
        motion = np.array(flat, dtype=np.float64).reshape(frames, num_channels)
    except ValueError:
        motion = None
    bad_rows = (np.arange(frames) if motion is None
                else np.nonzero(~np.isfinite(motion).all(axis=1))[0])
    for row in bad_rows:
        for column, word in enumerate(rows[row]):
            if _to_float(word) is None:
                raise BvhError(f'{source}:{row_lines[row]}: expected a finite number in '
                               f'column {column + 1} of frame row {row}, got {word!r}')
    if motion is None:   # pragma: no cover - numpy and float() disagreed on a token
        raise BvhError(f'{source}:{first_row + 1}: unreadable numbers in the frame rows')
    return motion


def euler_to_matrix(angles_deg: np.ndarray, axes: str) -> np.ndarray:
    """
    Compose intrinsic Euler rotations in the given axis order.

    :param angles_deg: [..., K] angles in degrees, one per axis.
    :param axes: K axis letters, e.g. ``'ZYX'``: ``R = R_z(a0) @ R_y(a1) @ R_x(a2)``.
    :return: [..., 3, 3] rotation matrices.
    """
    angles = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    result = np.broadcast_to(np.eye(3), angles.shape[:-1] + (3, 3)).copy()
    for k, axis in enumerate(axes):
        result = result @ _axis_rotation(angles[..., k], _AXIS[axis])
    return result


def _axis_rotation(angle_rad: np.ndarray, axis: int) -> np.ndarray:
    """[..., 3, 3] right-handed rotations by ``angle_rad`` about coordinate axis 0/1/2."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    out = np.zeros(angle_rad.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    out[..., axis, axis] = 1.0
    out[..., i, i] = c
    out[..., j, j] = c
    out[..., i, j] = -s
    out[..., j, i] = s
    return out


def forward_kinematics(bvh: BvhMotion, frames: Optional[np.ndarray] = None) -> Kinematics:
    """
    Pose the skeleton of every frame.

    :param bvh: the parsed file.
    :param frames: [F'] frame indices to pose (default: all).
    :return: local and global rotations, local translations and world positions.
    :raises BvhError: if the values overflow (file units far beyond any body).
    """
    motion = bvh.motion if frames is None else bvh.motion[np.asarray(frames)]
    num_frames, num_joints = motion.shape[0], bvh.num_joints
    local_rot = np.empty((num_frames, num_joints, 3, 3))
    local_trans = np.empty((num_frames, num_joints, 3))
    for joint in range(num_joints):
        names = bvh.channels[joint]
        start = int(bvh.channel_start[joint])
        local_trans[:, joint] = bvh.offsets[joint]
        rot_axes, rot_columns = '', []
        for k, name in enumerate(names):
            if name.endswith('position'):
                local_trans[:, joint, _AXIS[name[0]]] = motion[:, start + k]
            else:
                rot_axes += name[0]
                rot_columns.append(start + k)
        local_rot[:, joint] = euler_to_matrix(motion[:, rot_columns], rot_axes)
    global_rot = np.empty_like(local_rot)
    positions = np.empty_like(local_trans)
    with np.errstate(over='ignore', invalid='ignore'):
        for joint in range(num_joints):
            parent = int(bvh.parents[joint])
            if parent < 0:
                global_rot[:, joint] = local_rot[:, joint]
                positions[:, joint] = local_trans[:, joint]
            else:
                global_rot[:, joint] = global_rot[:, parent] @ local_rot[:, joint]
                positions[:, joint] = positions[:, parent] + np.einsum(
                    'fij,fj->fi', global_rot[:, parent], local_trans[:, joint])
    if not np.isfinite(positions).all():
        raise BvhError(f'{bvh.source}: joint positions overflow (offsets or positions far '
                       'beyond any body size)')
    return Kinematics(local_rot, local_trans, global_rot, positions)
