"""
Safe loading of licensed SMPL model files.

SMPL is distributed as a Python-2 pickle whose arrays are numpy arrays, chumpy ``Ch``
objects and scipy sparse matrices. Unpickling such a file with :mod:`pickle` executes
whatever callables it names, so this module never does: :class:`RestrictedUnpickler`
admits only numpy array reconstruction and maps the chumpy and scipy classes onto inert
stand-ins that merely record their pickled state (neither chumpy nor scipy is imported).
``.npz`` files are read with ``allow_pickle=False``.

Every array is checked for shape and finiteness; errors are :class:`SmplFileError` and
name the file, the field, and the expected and received shapes.

Dimension letters: V vertices (6890), F triangles, S shape directions (>= 10).
"""

import copyreg
from dataclasses import dataclass, replace
import logging
import os
from pathlib import Path
import pickle
import tempfile
import types
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from scorehmr_ros.body.layouts import (
    NUM_EXTRA_JOINTS, NUM_SMPL_JOINTS, NUM_SMPL_VERTICES, SMPL_PARENTS)

_LOG = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

NUM_POSE_BASIS = 9 * (NUM_SMPL_JOINTS - 1)  # 207: (R - I) of the 23 non-root joints
MIN_BETAS = 10
# Looked up, in this order, when the configured model path is a directory.
MODEL_FILENAMES = (
    'SMPL_NEUTRAL.pkl', 'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl', 'SMPL_NEUTRAL.npz')
REQUIRED_FIELDS = (
    'v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights', 'kintree_table', 'f')
EXTRA_REGRESSOR_KEY = 'J_regressor_extra'
# npz key that marks files written from a synthetic body (not a field of SMPL files).
_SYNTHETIC_KEY = 'scorehmr_is_synthetic'

_HOW_TO_RUN_WITHOUT = (
    'or run without it on the synthetic SMPL-format body by setting '
    '`body.model_path: null` (or omitting it) in the configuration')


class SmplFileError(ValueError):
    """An SMPL model file is missing, unsafe or malformed."""


class SmplFileNotFoundError(SmplFileError, FileNotFoundError):
    """The configured SMPL model (or extra regressor) file does not exist."""


# --------------------------------------------------------------------------------------
# Restricted unpickling

class PickledStandIn:
    """
    Inert record of an object of a class that is never imported.

    Instances only keep what the pickle hands them: constructor arguments and the state
    given to ``__setstate__``. Subclasses are created per refused-but-mapped global so
    that messages can name the original class (:attr:`pickled_global`).
    """

    pickled_global = 'object'
    args: Tuple[Any, ...] = ()
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class ChumpyStandIn(PickledStandIn):
    """Stand-in for chumpy objects; ``state['x']`` holds the array of a ``Ch``."""


class SparseStandIn(PickledStandIn):
    """Stand-in for scipy CSC/CSR matrices; the state holds data/indices/indptr/shape."""

    sparse_format = 'csc'


def _numpy_reconstructors() -> Dict[str, Any]:
    # Taken from numpy's own reducers so that the numpy 1.x and 2.x module spellings
    # both resolve to whatever this numpy provides.
    return {
        '_reconstruct': np.ndarray((0,)).__reduce__()[0],
        'scalar': np.float64(0.0).__reduce__()[0],
        # Pickle protocol 5 rebuilds arrays from an in-band buffer.
        '_frombuffer': np.zeros(1).__reduce_ex__(5)[0],
    }


def _latin1_encode(text: Any, encoding: str = 'utf-8') -> bytes:
    """
    Stand-in for ``_codecs.encode``, which Python 3 uses to pickle bytes (protocol < 3).

    :param text: the str holding the bytes
    :param encoding: must be latin-1, the only one pickle writes
    :return: the bytes
    """
    if not isinstance(text, str) or encoding.lower().replace('-', '') != 'latin1':
        raise SmplFileError(f'refusing _codecs.encode with encoding {encoding!r} in an '
                            'SMPL file')
    return text.encode('latin1')


_NUMPY = _numpy_reconstructors()
_SAFE_GLOBALS: Dict[Tuple[str, str], Any] = {
    ('numpy.core.multiarray', '_reconstruct'): _NUMPY['_reconstruct'],
    ('numpy._core.multiarray', '_reconstruct'): _NUMPY['_reconstruct'],
    ('numpy.core.multiarray', 'scalar'): _NUMPY['scalar'],
    ('numpy._core.multiarray', 'scalar'): _NUMPY['scalar'],
    ('numpy.core.numeric', '_frombuffer'): _NUMPY['_frombuffer'],
    ('numpy._core.numeric', '_frombuffer'): _NUMPY['_frombuffer'],
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('copyreg', '_reconstructor'): copyreg._reconstructor,
    ('copy_reg', '_reconstructor'): copyreg._reconstructor,
    ('builtins', 'object'): object,
    ('__builtin__', 'object'): object,
    # Python 3 pickles bytes as _codecs.encode(str, 'latin1') below protocol 3.
    ('_codecs', 'encode'): _latin1_encode,
    ('builtins', 'bytes'): bytes,
    ('__builtin__', 'bytes'): bytes,
    ('builtins', 'bytearray'): bytearray,
    ('__builtin__', 'bytearray'): bytearray,
    # chumpy's pickled state contains a set ('_dirty_vars').
    ('builtins', 'set'): set,
    ('__builtin__', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('__builtin__', 'frozenset'): frozenset,
}
_SPARSE_NAMES = ('csc_matrix', 'csr_matrix', 'csc_array', 'csr_array')
_STAND_IN_CACHE: Dict[Tuple[str, str], type] = {}


def _stand_in_class(module: str, name: str) -> Optional[type]:
    """Return the inert stand-in class for a chumpy or scipy.sparse global, else None."""
    key = (module, name)
    if key in _STAND_IN_CACHE:
        return _STAND_IN_CACHE[key]
    if (module == 'scipy.sparse' or module.startswith('scipy.sparse.')) and \
            name in _SPARSE_NAMES:
        base, attrs = SparseStandIn, {'sparse_format': name[:3]}
    elif (module == 'chumpy' or module.startswith('chumpy.')) and name.isidentifier():
        base, attrs = ChumpyStandIn, {}
    else:
        return None
    attrs['pickled_global'] = f'{module}.{name}'
    cls = type(f'{base.__name__}[{module}.{name}]', (base,), attrs)
    _STAND_IN_CACHE[key] = cls
    return cls


class RestrictedUnpickler(pickle.Unpickler):
    """
    Unpickler that resolves only numpy array globals and inert chumpy/scipy stand-ins.

    Any other global (``os.system``, ``builtins.eval``, ...) raises
    :class:`SmplFileError` before it could be called. A hostile file can still ask numpy
    for a large allocation; it cannot run code.
    """

    def __init__(self, file: Any, source: str, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        safe = _SAFE_GLOBALS.get((module, name))
        if isinstance(safe, types.FunctionType):
            # A pickle can BUILD attributes onto any object it holds; hand out a private
            # copy so that it cannot alter the process-wide function.
            return types.FunctionType(safe.__code__, safe.__globals__, safe.__name__,
                                      safe.__defaults__, safe.__closure__)
        if safe is not None:
            return safe
        stand_in = _stand_in_class(module, name)
        if stand_in is not None:
            return stand_in
        raise SmplFileError(
            f'refusing to load {module}.{name} from {self._source}: SMPL files may only '
            'contain numpy/scipy arrays')

    def persistent_load(self, pid: Any) -> Any:
        raise SmplFileError(
            f'refusing persistent id {pid!r} in {self._source}: SMPL files may only contain '
            'numpy/scipy arrays')


def restricted_load(path: PathLike) -> Any:
    """
    Unpickle a file with :class:`RestrictedUnpickler` (Python-2 pickles included).

    :param path: pickle file
    :return: the unpickled object; chumpy/scipy objects appear as stand-ins
    :raises SmplFileError: on a refused global or a corrupt pickle
    """
    source = str(path)
    try:
        with open(path, 'rb') as fh:
            return RestrictedUnpickler(fh, source=source, encoding='latin1').load()
    except SmplFileError:
        raise
    except FileNotFoundError:
        raise SmplFileNotFoundError(f'file not found: {source}') from None
    except OSError as exc:
        raise SmplFileError(f'cannot read {source}: {exc}') from exc
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, MemoryError, OverflowError, UnicodeDecodeError) as exc:
        raise SmplFileError(f'cannot unpickle {source}: {type(exc).__name__}: {exc}') from exc


def _sparse_to_dense(obj: SparseStandIn, source: str, field: str) -> np.ndarray:
    state = obj.state if isinstance(obj.state, dict) else {}
    try:
        shape = tuple(int(n) for n in state.get('_shape', state.get('shape')))
        data = np.asarray(state['data'])
        indices = np.asarray(state['indices'], dtype=np.int64)
        indptr = np.asarray(state['indptr'], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise SmplFileError(
            f'{source}: field {field!r} is a {obj.pickled_global} without readable '
            f'data/indices/indptr/shape state ({exc})') from exc
    if len(shape) != 2 or data.dtype.kind not in 'fiu':
        raise SmplFileError(
            f'{source}: field {field!r} is a malformed {obj.pickled_global} '
            f'(shape {shape}, dtype {data.dtype})')
    # CSC compresses columns, CSR rows; the other axis is listed in `indices`.
    major, minor = (1, 0) if obj.sparse_format == 'csc' else (0, 1)
    counts = np.diff(indptr)
    if (indptr.shape != (shape[major] + 1,) or indptr[0] != 0 or np.any(counts < 0)
            or indptr[-1] != data.size or indices.shape != data.shape
            or np.any(indices < 0) or np.any(indices >= shape[minor])):
        raise SmplFileError(
            f'{source}: field {field!r} is a {obj.pickled_global} with inconsistent '
            f'indices/indptr for shape {shape}')
    dense = np.zeros(shape, dtype=np.float64)
    majors = np.repeat(np.arange(shape[major]), counts)
    rows, cols = (indices, majors) if major == 1 else (majors, indices)
    np.add.at(dense, (rows, cols), data.astype(np.float64))
    return dense


def to_array(value: Any, source: str, field: str) -> np.ndarray:
    """
    Turn a loaded SMPL field (ndarray, chumpy or sparse stand-in) into a numpy array.

    :param value: the unpickled value
    :param source: file name for messages
    :param field: field name for messages
    :return: numeric numpy array
    :raises SmplFileError: if the value holds no numeric array
    """
    if isinstance(value, SparseStandIn):
        return _sparse_to_dense(value, source, field)
    if isinstance(value, ChumpyStandIn):
        state = value.state if isinstance(value.state, dict) else {}
        if 'x' not in state:
            raise SmplFileError(
                f'{source}: field {field!r} is a {value.pickled_global} without an array '
                "'x'; convert the file with chumpy installed (see convert_smpl_pickle_to_npz)")
        return to_array(state['x'], source, field)
    if isinstance(value, PickledStandIn):
        raise SmplFileError(f'{source}: field {field!r} is a {value.pickled_global}')
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise SmplFileError(f'{source}: field {field!r} is not an array ({exc})') from exc
    if array.dtype.kind not in 'fiub':
        raise SmplFileError(
            f'{source}: field {field!r} has dtype {array.dtype}, expected a numeric array')
    return array


# --------------------------------------------------------------------------------------
# The validated arrays

# Expected shapes; letters bind to: V = 6890, S >= 10, F >= 1.
_SHAPES: Dict[str, Tuple[Union[int, str], ...]] = {
    'v_template': ('V', 3),
    'shapedirs': ('V', 3, 'S'),
    'posedirs': ('V', 3, NUM_POSE_BASIS),
    'J_regressor': (NUM_SMPL_JOINTS, 'V'),
    'weights': ('V', NUM_SMPL_JOINTS),
    'kintree_table': (2, NUM_SMPL_JOINTS),
    'f': ('F', 3),
    EXTRA_REGRESSOR_KEY: (NUM_EXTRA_JOINTS, 'V'),
}
_DIM_RULES = {
    'V': (lambda n: n == NUM_SMPL_VERTICES, f'V={NUM_SMPL_VERTICES}'),
    'S': (lambda n: n >= MIN_BETAS, f'S>={MIN_BETAS}'),
    'F': (lambda n: n >= 1, 'F>=1'),
}
_INT_FIELDS = ('kintree_table', 'f')


def _expected_text(field: str) -> str:
    dims = (_DIM_RULES[d][1] if isinstance(d, str) else str(d) for d in _SHAPES[field])
    return '[' + ', '.join(dims) + ']'


def _check_array(value: Any, source: str, field: str) -> np.ndarray:
    """Validate one field and return a read-only float64 (or int64) copy."""
    array = to_array(value, source, field)
    expected = _SHAPES[field]
    ok = array.ndim == len(expected) and all(
        _DIM_RULES[d][0](n) if isinstance(d, str) else n == d
        for d, n in zip(expected, array.shape))
    if not ok:
        raise SmplFileError(
            f'{source}: field {field!r} has shape {list(array.shape)}, expected '
            f'{_expected_text(field)}')
    if field in _INT_FIELDS:
        if array.dtype.kind not in 'iu':
            raise SmplFileError(
                f'{source}: field {field!r} has dtype {array.dtype}, expected integers')
        array = array.astype(np.int64)
        if field == 'kintree_table':
            # SMPL stores the root's parent as uint32(-1) = 4294967295.
            array[array == np.iinfo(np.uint32).max] = -1
    else:
        array = np.array(array, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise SmplFileError(
                f'{source}: field {field!r} contains non-finite values (NaN or inf)')
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class SmplArrays:
    """
    The arrays of an SMPL model, validated and read-only.

    :param v_template: [V, 3] rest-pose template vertices, metres
    :param shapedirs: [V, 3, S] shape blend-shape directions (S >= 10)
    :param posedirs: [V, 3, 207] pose-corrective blend shapes
    :param J_regressor: [24, V] dense joint regressor
    :param weights: [V, 24] linear-blend-skinning weights
    :param kintree_table: [2, 24] int64; row 0 the SMPL parents (root -1), row 1 joint ids
    :param f: [F, 3] int64 triangle vertex indices
    :param J_regressor_extra: [19, V] optional extra joint regressor (ScoreHMR joints
        25..43), or None
    :param source: file path, or ``'synthetic ...'`` for a generated body
    :param is_synthetic: True for the generated SMPL-format body (not SMPL)
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    kintree_table: np.ndarray
    f: np.ndarray
    J_regressor_extra: Optional[np.ndarray] = None
    source: str = ''
    is_synthetic: bool = False

    def __post_init__(self) -> None:
        for name in REQUIRED_FIELDS + (EXTRA_REGRESSOR_KEY,):
            value = getattr(self, name)
            if value is None and name == EXTRA_REGRESSOR_KEY:
                continue
            object.__setattr__(self, name, _check_array(value, self.source, name))
        parents = self.kintree_table[0].copy()
        parents[0] = -1  # the root's stored value varies between files
        if parents.tolist() != list(SMPL_PARENTS) or \
                self.kintree_table[1].tolist() != list(range(NUM_SMPL_JOINTS)):
            raise SmplFileError(
                f"{self.source}: field 'kintree_table' is {self.kintree_table.tolist()}, "
                f'expected the SMPL kinematic tree [{SMPL_PARENTS}, {list(range(24))}]')
        object.__setattr__(self, 'kintree_table', _read_only(
            np.stack([parents, self.kintree_table[1]])))
        if self.f.min() < 0 or self.f.max() >= self.num_vertices:
            raise SmplFileError(
                f"{self.source}: field 'f' has vertex indices outside [0, {self.num_vertices})")

    @property
    def num_vertices(self) -> int:
        """Number V of vertices."""
        return int(self.v_template.shape[0])

    @property
    def num_betas(self) -> int:
        """Number S of shape directions stored."""
        return int(self.shapedirs.shape[2])

    def as_dict(self) -> Dict[str, np.ndarray]:
        """
        Return the arrays under their SMPL key names.

        :return: field name -> array (J_regressor_extra only when present)
        """
        out = {name: getattr(self, name) for name in REQUIRED_FIELDS}
        if self.J_regressor_extra is not None:
            out[EXTRA_REGRESSOR_KEY] = self.J_regressor_extra
        return out


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def with_extra_regressor(arrays: SmplArrays, extra: Optional[np.ndarray]) -> SmplArrays:
    """
    Return a copy of ``arrays`` with another extra regressor.

    :param arrays: the model arrays
    :param extra: [19, V] extra joint regressor, or None to drop it
    :return: new validated arrays
    """
    return replace(arrays, J_regressor_extra=extra)


# --------------------------------------------------------------------------------------
# Files

def _missing_model_message(path: Path, directory: bool) -> str:
    where = (f'no SMPL model file in directory {path} (looked for {", ".join(MODEL_FILENAMES)})'
             if directory else f'SMPL model file not found: {path}')
    return (f'{where}. Put the licensed SMPL neutral model at the configured '
            f'`body.model_path` ({path}): SMPL_NEUTRAL.pkl or '
            'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl from https://smpl.is.tue.mpg.de, '
            f'or an .npz written by convert_smpl_pickle_to_npz; {_HOW_TO_RUN_WITHOUT}.')


def resolve_model_path(path: PathLike) -> Path:
    """
    Resolve a configured model path to an existing model file.

    :param path: an SMPL ``.pkl``/``.npz`` file, or a directory holding one of
        :data:`MODEL_FILENAMES`
    :return: the file to read
    :raises SmplFileNotFoundError: with where to put the file and how to run without it
    """
    resolved = Path(path).expanduser()
    if resolved.is_dir():
        for name in MODEL_FILENAMES:
            if (resolved / name).is_file():
                return resolved / name
        raise SmplFileNotFoundError(_missing_model_message(resolved, directory=True))
    if not resolved.is_file():
        raise SmplFileNotFoundError(_missing_model_message(resolved, directory=False))
    return resolved


def _load_npz(path: Path) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError) as exc:
        # ValueError covers object arrays, which would need pickle.
        raise SmplFileError(f'cannot read {path} as a numpy .npz file: {exc}') from exc


def _load_mapping(path: Path) -> Dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix in ('.pkl', '.pickle'):
        data = restricted_load(path)
    elif suffix == '.npz':
        data = _load_npz(path)
    else:
        raise SmplFileError(
            f'{path}: unsupported SMPL file type {suffix!r} (expected .pkl or .npz)')
    if not isinstance(data, Mapping):
        raise SmplFileError(
            f'{path}: expected a dict of SMPL arrays at the top level, got '
            f'{type(data).__name__}')
    return dict(data)


def load_smpl_arrays(path: PathLike,
                     extra_regressor: Optional[PathLike] = None) -> SmplArrays:
    """
    Load and validate an SMPL model file without executing pickled code.

    :param path: SMPL ``.pkl`` (read with :class:`RestrictedUnpickler`) or ``.npz``
        (SMPL key names), or a directory holding one of :data:`MODEL_FILENAMES`
    :param extra_regressor: optional ``.npy``/``.npz``/``.pkl`` file with the [19, V]
        ``J_regressor_extra``; it replaces one stored in the model file
    :return: the validated arrays (``is_synthetic`` True only for files written from a
        synthetic body)
    :raises SmplFileError: on a missing, unsafe or malformed file; the message names
        the file and field
    """
    resolved = resolve_model_path(path)
    source = str(resolved)
    data = _load_mapping(resolved)
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise SmplFileError(
            f'{source}: missing field(s) {", ".join(repr(m) for m in missing)}; an SMPL '
            f'model file holds {", ".join(REQUIRED_FIELDS)}')
    values = {name: data[name] for name in REQUIRED_FIELDS}
    extra = data.get(EXTRA_REGRESSOR_KEY)
    if extra_regressor is not None:
        extra = load_extra_regressor(extra_regressor)
    is_synthetic = bool(np.asarray(data.get(_SYNTHETIC_KEY, False)))
    arrays = SmplArrays(**values, J_regressor_extra=extra, source=source,
                        is_synthetic=is_synthetic)
    _LOG.info('loaded %s body model from %s (%d vertices, %d shape directions%s)',
              'synthetic SMPL-format' if is_synthetic else 'SMPL', source,
              arrays.num_vertices, arrays.num_betas,
              ', extra regressor' if arrays.J_regressor_extra is not None else '')
    return arrays


def load_extra_regressor(path: PathLike) -> np.ndarray:
    """
    Load the ScoreHMR extra joint regressor.

    :param path: ``.npy`` array, ``.npz`` (key ``J_regressor_extra`` or a single array)
        or ``.pkl`` (restricted; an array, a sparse matrix or a dict with that key)
    :return: [19, V] read-only float64 regressor
    :raises SmplFileError: on a missing, unsafe or malformed file
    """
    resolved = Path(path).expanduser()
    source = str(resolved)
    if not resolved.is_file():
        raise SmplFileNotFoundError(
            f'extra joint regressor not found: {source}. Put the [19, 6890] '
            'J_regressor_extra (.npy/.npz/.pkl) at the configured `body.extra_regressor`, '
            'or omit it (ScoreHMR keypoints 25..43 are then placeholders).')
    suffix = resolved.suffix.lower()
    if suffix == '.npy':
        try:
            value: Any = np.load(resolved, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise SmplFileError(f'cannot read {source} as a .npy array: {exc}') from exc
    elif suffix == '.npz':
        data = _load_npz(resolved)
        if EXTRA_REGRESSOR_KEY in data:
            value = data[EXTRA_REGRESSOR_KEY]
        elif len(data) == 1:
            value = next(iter(data.values()))
        else:
            raise SmplFileError(
                f'{source}: missing field {EXTRA_REGRESSOR_KEY!r} (keys: {sorted(data)})')
    elif suffix in ('.pkl', '.pickle'):
        value = restricted_load(resolved)
        if isinstance(value, Mapping):
            if EXTRA_REGRESSOR_KEY not in value:
                raise SmplFileError(
                    f'{source}: missing field {EXTRA_REGRESSOR_KEY!r} (keys: {sorted(value)})')
            value = value[EXTRA_REGRESSOR_KEY]
    else:
        raise SmplFileError(
            f'{source}: unsupported regressor file type {suffix!r} (expected .npy, .npz '
            'or .pkl)')
    return _check_array(value, source, EXTRA_REGRESSOR_KEY)


def save_smpl_npz(arrays: SmplArrays, path: PathLike, compress: bool = False) -> Path:
    """
    Write model arrays as an ``.npz`` that :func:`load_smpl_arrays` reads without pickle.

    The file is written to a temporary name and renamed, so readers never see a partial
    file.

    :param arrays: the model arrays
    :param path: target file (``.npz`` is the conventional suffix)
    :param compress: zip-deflate the arrays (smaller, slower to write and read)
    :return: the written path
    """
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    payload: Dict[str, np.ndarray] = dict(arrays.as_dict())
    payload[_SYNTHETIC_KEY] = np.asarray(arrays.is_synthetic)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + '.', suffix='.tmp',
                                    dir=str(target.parent))
    try:
        with os.fdopen(fd, 'wb') as fh:
            (np.savez_compressed if compress else np.savez)(fh, **payload)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def convert_smpl_pickle_to_npz(pkl_path: PathLike, npz_path: PathLike) -> Path:
    """
    Convert a licensed SMPL pickle into a pickle-free ``.npz``.

    :param pkl_path: SMPL ``.pkl`` (or a directory holding one)
    :param npz_path: target ``.npz`` file
    :return: the written path
    :raises SmplFileError: if the pickle is missing, unsafe or malformed
    """
    arrays = load_smpl_arrays(pkl_path)
    written = save_smpl_npz(arrays, npz_path)
    _LOG.info('converted %s to %s', arrays.source, written)
    return written
