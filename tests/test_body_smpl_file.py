"""Tests of the safe SMPL file loader in scorehmr_ros.body.smpl_file."""

import copyreg
import os
import pickle
import sys
import types

import numpy as np
import pytest

from scorehmr_ros.body.smpl_file import (
    convert_smpl_pickle_to_npz, load_extra_regressor, load_smpl_arrays, restricted_load,
    save_smpl_npz, SmplArrays, SmplFileError, SmplFileNotFoundError)
from scorehmr_ros.body.synthetic import make_synthetic_smpl

FIELDS = ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights', 'kintree_table',
          'f')


@pytest.fixture(scope='module')
def arrays():
    return make_synthetic_smpl()


@pytest.fixture(scope='module')
def model_npz(arrays, tmp_path_factory):
    return save_smpl_npz(arrays, tmp_path_factory.mktemp('model') / 'model.npz')


def smpl_dict(arrays, **override):
    data = {name: np.array(getattr(arrays, name)) for name in FIELDS}
    # SMPL files store the root parent as uint32(-1) and faces as uint32.
    data['kintree_table'] = data['kintree_table'].astype(np.uint32)
    data['f'] = data['f'].astype(np.uint32)
    data['bs_style'] = 'lbs'
    data.update(override)
    return data


def write_pickle(path, obj, protocol=4):
    with open(path, 'wb') as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def assert_same_arrays(a, b):
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# ------------------------------------------------------------------------------------
# Fake chumpy / scipy classes, registered under the real module names while pickling so
# that the pickle names chumpy.ch.Ch and scipy.sparse._csc.csc_matrix exactly as a real
# SMPL file does. The loader must never import these modules.

class FakeCh:
    def __init__(self, x):
        self.x = np.asarray(x)
        self._dirty_vars = set(['x'])
        self._itr = None
        self._make_dense = False


class FakeCsc:
    def __init__(self, dense):
        cols, rows = np.nonzero(dense.T)           # column-major order
        self.data = dense[rows, cols]
        self.indices = rows.astype(np.int32)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(
            cols, minlength=dense.shape[1]))]).astype(np.int32)
        self._shape = dense.shape
        self.format = 'csc'
        self.maxprint = 50


class FakeCsr:
    def __init__(self, dense):
        rows, cols = np.nonzero(dense)
        self.data = dense[rows, cols]
        self.indices = cols.astype(np.int32)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(
            rows, minlength=dense.shape[0]))]).astype(np.int32)
        self._shape = dense.shape
        self.format = 'csr'


@pytest.fixture
def fake_modules(monkeypatch):
    def register(module_name, cls, class_name):
        module = types.ModuleType(module_name)
        setattr(module, class_name, cls)
        cls.__module__ = module_name
        cls.__qualname__ = class_name
        cls.__name__ = class_name
        monkeypatch.setitem(sys.modules, module_name, module)

    for parent in ('chumpy', 'scipy', 'scipy.sparse'):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    register('chumpy.ch', FakeCh, 'Ch')
    register('scipy.sparse._csc', FakeCsc, 'csc_matrix')
    register('scipy.sparse.csr', FakeCsr, 'csr_matrix')
    yield


# ------------------------------------------------------------------------------------

def test_npz_round_trip(arrays, model_npz):
    path = model_npz
    loaded = load_smpl_arrays(path)
    assert_same_arrays(arrays, loaded)
    assert loaded.J_regressor_extra is None
    assert loaded.is_synthetic
    assert loaded.source == str(path)
    assert loaded.v_template.dtype == np.float64 and loaded.f.dtype == np.int64
    assert not loaded.v_template.flags.writeable


def test_directory_resolves_model_file(arrays, tmp_path):
    save_smpl_npz(arrays, tmp_path / 'SMPL_NEUTRAL.npz')
    loaded = load_smpl_arrays(tmp_path)
    assert loaded.source == str(tmp_path / 'SMPL_NEUTRAL.npz')
    write_pickle(tmp_path / 'SMPL_NEUTRAL.pkl', smpl_dict(arrays))
    assert load_smpl_arrays(tmp_path).source == str(tmp_path / 'SMPL_NEUTRAL.pkl')


@pytest.mark.parametrize('protocol', [1, 2, 4, 5])
def test_smpl_layout_pickle_with_chumpy_and_sparse(arrays, tmp_path, fake_modules, protocol):
    data = smpl_dict(arrays, shapedirs=FakeCh(arrays.shapedirs),
                     v_template=FakeCh(arrays.v_template),
                     J_regressor=FakeCsc(np.array(arrays.J_regressor)),
                     J_regressor_prior=FakeCsr(np.array(arrays.J_regressor)))
    path = write_pickle(tmp_path / 'model.pkl', data, protocol=protocol)
    raw = path.read_bytes()
    assert b'chumpy.ch' in raw and b'scipy.sparse._csc' in raw
    sys.modules.pop('chumpy.ch')   # prove the loader does not need the class
    loaded = load_smpl_arrays(path)
    assert_same_arrays(arrays, loaded)
    assert not loaded.is_synthetic
    assert loaded.kintree_table[0, 0] == -1


def test_python2_style_pickle_loads(arrays, tmp_path):
    # Protocol 2 with fix_imports names copy_reg/__builtin__ as Python 2 did.
    data = smpl_dict(arrays)
    path = tmp_path / 'py2.pkl'
    with open(path, 'wb') as fh:
        pickle.Pickler(fh, protocol=2, fix_imports=True).dump(data)
    assert_same_arrays(arrays, load_smpl_arrays(path))


def test_sparse_csr_stand_in_converts(tmp_path, fake_modules):
    dense = np.zeros((3, 4))
    dense[0, 1], dense[2, 3], dense[1, 0] = 1.5, -2.0, 3.0
    path = write_pickle(tmp_path / 'm.pkl', {'a': FakeCsr(dense), 'b': FakeCsc(dense)})
    loaded = restricted_load(path)
    from scorehmr_ros.body.smpl_file import to_array
    np.testing.assert_array_equal(to_array(loaded['a'], 'm', 'a'), dense)
    np.testing.assert_array_equal(to_array(loaded['b'], 'm', 'b'), dense)


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f'echo pwned > {self.target}',))


@pytest.mark.parametrize('nested', [False, True])
def test_os_system_pickle_is_refused(arrays, tmp_path, nested):
    target = tmp_path / 'pwned.txt'
    payload = smpl_dict(arrays, v_template=Evil(target)) if nested else Evil(target)
    path = write_pickle(tmp_path / 'evil.pkl', payload, protocol=2)
    with pytest.raises(SmplFileError) as info:
        load_smpl_arrays(path)
    message = str(info.value)
    assert f'{os.system.__module__}.system' in message    # posix.system on Linux
    assert str(path) in message
    assert 'numpy/scipy arrays' in message
    assert not target.exists()


@pytest.mark.parametrize('opcodes, refused', [
    (b"cbuiltins\neval\n(S'1+1'\ntR.", 'builtins.eval'),
    (b"c__builtin__\neval\n(S'1+1'\ntR.", '__builtin__.eval'),
    (b"csubprocess\nPopen\n(S'true'\ntR.", 'subprocess.Popen'),
    (b"cnumpy\nload\n(S'x.npy'\ntR.", 'numpy.load'),
    (b"cchumpy.ch\nCh\n(S'x'\ntR" + b"cscipy.sparse\nload_npz\n(S'x'\ntR.",
     'scipy.sparse.load_npz'),
])
def test_other_globals_are_refused(tmp_path, opcodes, refused):
    path = tmp_path / 'bad.pkl'
    path.write_bytes(opcodes)
    with pytest.raises(SmplFileError, match=refused.replace('.', r'\.')):
        load_smpl_arrays(path)


def test_pickle_cannot_mutate_allowed_functions(tmp_path):
    name_before = copyreg._reconstructor.__name__
    # GLOBAL copy_reg._reconstructor; BUILD (None, {'__name__': 'pwn'}) sets attributes.
    opcodes = (b'\x80\x02ccopy_reg\n_reconstructor\nN}X\x08\x00\x00\x00__name__'
               b'X\x03\x00\x00\x00pwns\x86b.')
    path = tmp_path / 'mutate.pkl'
    path.write_bytes(opcodes)
    with pytest.raises(SmplFileError):
        load_smpl_arrays(path)
    assert copyreg._reconstructor.__name__ == name_before


def test_chumpy_without_x_is_an_error(arrays, tmp_path, fake_modules):
    bad = FakeCh(np.zeros(3))
    del bad.x
    path = write_pickle(tmp_path / 'noy.pkl', smpl_dict(arrays, shapedirs=bad))
    with pytest.raises(SmplFileError, match=r"'shapedirs'.*chumpy\.ch\.Ch"):
        load_smpl_arrays(path)


@pytest.mark.parametrize('field, value, expected', [
    ('v_template', np.zeros((100, 3)), r"'v_template' has shape \[100, 3\], expected "
                                       r'\[V=6890, 3\]'),
    ('shapedirs', np.zeros((6890, 3, 4)), r"'shapedirs' has shape \[6890, 3, 4\], "
                                          r'expected \[V=6890, 3, S>=10\]'),
    ('J_regressor', np.zeros((23, 6890)), r"'J_regressor' has shape \[23, 6890\]"),
    ('f', np.zeros((10, 4), np.int64), r"'f' has shape \[10, 4\]"),
    ('f', np.zeros((10, 3)), r"'f' has dtype float64, expected integers"),
])
def test_wrong_shapes_name_file_and_field(arrays, tmp_path, field, value, expected):
    path = write_pickle(tmp_path / 'shape.pkl', smpl_dict(arrays, **{field: value}))
    with pytest.raises(SmplFileError, match=expected) as info:
        load_smpl_arrays(path)
    assert str(path) in str(info.value)


def test_non_finite_values_are_refused(arrays, tmp_path):
    weights = np.array(arrays.weights)
    weights[5, 3] = np.nan
    path = save_smpl_npz_raw(tmp_path / 'nan.npz', smpl_dict(arrays, weights=weights))
    with pytest.raises(SmplFileError, match=r"'weights' contains non-finite") as info:
        load_smpl_arrays(path)
    assert str(path) in str(info.value)


def save_smpl_npz_raw(path, data):
    np.savez(path, **{k: v for k, v in data.items() if isinstance(v, np.ndarray)})
    return path


def test_missing_field_is_named(arrays, tmp_path):
    data = smpl_dict(arrays)
    del data['posedirs']
    path = write_pickle(tmp_path / 'missing.pkl', data)
    with pytest.raises(SmplFileError, match=r"missing field\(s\) 'posedirs'") as info:
        load_smpl_arrays(path)
    assert str(path) in str(info.value)


def test_wrong_kinematic_tree(arrays, tmp_path):
    kintree = np.array(arrays.kintree_table)
    kintree[0, 5] = 3
    path = save_smpl_npz_raw(tmp_path / 'tree.npz', smpl_dict(arrays, kintree_table=kintree))
    with pytest.raises(SmplFileError, match="'kintree_table'"):
        load_smpl_arrays(path)


def test_top_level_must_be_a_dict(tmp_path):
    path = write_pickle(tmp_path / 'list.pkl', [np.zeros(3)])
    with pytest.raises(SmplFileError, match='dict of SMPL arrays'):
        load_smpl_arrays(path)


def test_npz_with_object_array_is_refused(arrays, tmp_path):
    data = smpl_dict(arrays)
    data['v_template'] = np.array([object()] * 3, dtype=object)
    path = tmp_path / 'obj.npz'
    np.savez(path, **{k: v for k, v in data.items() if isinstance(v, np.ndarray)})
    with pytest.raises(SmplFileError, match='obj.npz'):
        load_smpl_arrays(path)


def test_corrupt_pickle_is_an_error(tmp_path):
    path = tmp_path / 'cut.pkl'
    path.write_bytes(pickle.dumps({'a': np.zeros(10)}, protocol=2)[:40])
    with pytest.raises(SmplFileError, match='cannot unpickle'):
        load_smpl_arrays(path)


def test_missing_file_says_where_and_how_to_run_without(tmp_path):
    path = tmp_path / 'models' / 'SMPL_NEUTRAL.pkl'
    with pytest.raises(SmplFileNotFoundError) as info:
        load_smpl_arrays(path)
    message = str(info.value)
    assert str(path) in message
    assert 'body.model_path: null' in message
    assert 'synthetic' in message
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ValueError)


def test_empty_directory_lists_expected_names(tmp_path):
    with pytest.raises(SmplFileNotFoundError) as info:
        load_smpl_arrays(tmp_path)
    message = str(info.value)
    assert 'SMPL_NEUTRAL.pkl' in message and str(tmp_path) in message
    assert 'body.model_path: null' in message


def test_unsupported_suffix(tmp_path):
    path = tmp_path / 'model.json'
    path.write_text('{}')
    with pytest.raises(SmplFileError, match='unsupported SMPL file type'):
        load_smpl_arrays(path)


def extra_regressor(seed=0):
    rng = np.random.default_rng(seed)
    extra = rng.random((19, 6890))
    return extra / extra.sum(axis=1, keepdims=True)


@pytest.mark.parametrize('kind', ['npy', 'npz', 'npz_single', 'pkl', 'pkl_dict'])
def test_extra_regressor_formats(model_npz, tmp_path, kind):
    extra = extra_regressor()
    if kind == 'npy':
        path = tmp_path / 'J_regressor_extra.npy'
        np.save(path, extra)
    elif kind == 'npz':
        path = tmp_path / 'extra.npz'
        np.savez(path, J_regressor_extra=extra, other=np.zeros(2))
    elif kind == 'npz_single':
        path = tmp_path / 'extra.npz'
        np.savez(path, anything=extra)
    elif kind == 'pkl':
        path = write_pickle(tmp_path / 'extra.pkl', extra)
    else:
        path = write_pickle(tmp_path / 'extra.pkl', {'J_regressor_extra': extra})
    np.testing.assert_array_equal(load_extra_regressor(path), extra)
    loaded = load_smpl_arrays(model_npz, extra_regressor=path)
    np.testing.assert_array_equal(loaded.J_regressor_extra, extra)


def test_extra_regressor_errors(tmp_path):
    path = tmp_path / 'extra.npy'
    np.save(path, np.zeros((17, 6890)))
    with pytest.raises(SmplFileError, match=r"'J_regressor_extra' has shape \[17, 6890\], "
                                            r'expected \[19, V=6890\]'):
        load_extra_regressor(path)
    with pytest.raises(SmplFileNotFoundError, match='body.extra_regressor'):
        load_extra_regressor(tmp_path / 'absent.npy')


def test_extra_regressor_stored_in_model_file(arrays, tmp_path):
    extra = extra_regressor(1)
    data = smpl_dict(arrays, J_regressor_extra=extra)
    loaded = load_smpl_arrays(write_pickle(tmp_path / 'with_extra.pkl', data))
    np.testing.assert_array_equal(loaded.J_regressor_extra, extra)
    npz = save_smpl_npz(loaded, tmp_path / 'with_extra.npz')
    np.testing.assert_array_equal(load_smpl_arrays(npz).J_regressor_extra, extra)


def test_convert_pickle_to_npz(arrays, tmp_path, fake_modules):
    data = smpl_dict(arrays, shapedirs=FakeCh(arrays.shapedirs),
                     J_regressor=FakeCsc(np.array(arrays.J_regressor)))
    pkl = write_pickle(tmp_path / 'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl', data)
    out = convert_smpl_pickle_to_npz(pkl, tmp_path / 'converted' / 'SMPL_NEUTRAL.npz')
    assert out.is_file()
    with np.load(out, allow_pickle=False) as npz:
        assert set(FIELDS) <= set(npz.files)
    converted = load_smpl_arrays(tmp_path / 'converted')
    assert_same_arrays(arrays, converted)
    assert not converted.is_synthetic


def test_smpl_arrays_validates_in_memory(arrays):
    with pytest.raises(SmplFileError, match=r"mine: field 'weights' has shape"):
        SmplArrays(**{**{n: getattr(arrays, n) for n in FIELDS},
                      'weights': np.zeros((6890, 23))}, source='mine')
