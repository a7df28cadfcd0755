"The safe legacy torch.save reader: the real Lite0 file, malicious pickles, damaged files."
import builtins, collections, os, pickle, subprocess
from pathlib import Path

import numpy as np
import pytest

from tl_course.weights import LEGACY_MAGIC, LEGACY_PROTOCOL, load_torch_legacy, save_torch_legacy

LITE0_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def expected_lite0_shapes():
    "Every tensor of the Lite0 checkpoint and its shape, derived from the EfficientNet-B0 block table."
    s = {}
    def bn(p, c):
        s.update({f'{p}.{k}': (c,) for k in ('weight', 'bias', 'running_mean', 'running_var')})
        s[f'{p}.num_batches_tracked'] = ()
    s['_conv_stem.weight'] = (32, 3, 3, 3); bn('_bn0', 32)
    cin, n = 32, 0
    for repeats, k, _, e, c in LITE0_STAGES:
        for _ in range(repeats):
            t, mid = f'_blocks.{n}.', cin * e
            if e != 1: s[t + '_expand_conv.weight'] = (mid, cin, 1, 1); bn(t + '_bn0', mid)
            s[t + '_depthwise_conv.weight'] = (mid, 1, k, k); bn(t + '_bn1', mid)
            s[t + '_project_conv.weight'] = (c, mid, 1, 1); bn(t + '_bn2', c)
            cin, n = c, n + 1
    s['_conv_head.weight'] = (1280, 320, 1, 1); bn('_bn1', 1280)
    s['_fc.weight'], s['_fc.bias'] = (1000, 1280), (1000,)
    return s


def test_lite0_all_tensors_with_their_shapes(lite0_path):
    sd = load_torch_legacy(lite0_path)
    want = expected_lite0_shapes()
    assert len(sd) == len(want) == 296
    assert {k: v.shape for k, v in sd.items()} == want
    assert sum(k.endswith('num_batches_tracked') for k in sd) == 49
    assert all(v.dtype == np.float32 for k, v in sd.items() if not k.endswith('num_batches_tracked'))
    n_params = sum(v.size for k, v in sd.items() if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked')))
    assert 4.6e6 < n_params < 4.7e6
    assert all(np.isfinite(v).all() for v in sd.values())
    assert all((v >= 0).all() for k, v in sd.items() if k.endswith('running_var'))  # some are exactly 0: dead channels


# --- malicious pickles: each payload is proven live with plain pickle, then refused with no side effect ---

class OsSystem:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

class BuiltinsEval:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (builtins.eval, (f"open({str(self.marker)!r}, 'w').write('x')",))

class SubprocessCall:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (subprocess.call, (['touch', str(self.marker)],))

PAYLOADS = {'os.system': OsSystem, 'builtins.eval': BuiltinsEval, 'subprocess': SubprocessCall}


def header(f, magic=LEGACY_MAGIC):
    for o in (magic, LEGACY_PROTOCOL, {'little_endian': True}): pickle.dump(o, f, protocol=2)


def write_with_payload(path, where, evil):
    "A legacy file with `evil` pickled at `where`: the state dict, inside it, the magic number or the key list."
    with open(path, 'wb') as f:
        if where == 'magic':
            pickle.dump(evil, f, protocol=2)
            return path
        header(f)
        if where == 'state_dict': pickle.dump(evil, f, protocol=2)
        elif where == 'inside_state_dict': pickle.dump(collections.OrderedDict(w=evil), f, protocol=2)
        elif where == 'keys':
            pickle.dump(collections.OrderedDict(), f, protocol=2)
            pickle.dump(evil, f, protocol=2)
    return path


@pytest.mark.parametrize('kind', PAYLOADS)
def test_payload_is_live_with_plain_pickle(tmp_path, kind):
    "The payloads really run code when unpickled naively (so the refusal tests below can fail)."
    marker = tmp_path / 'ran'
    pickle.loads(pickle.dumps(PAYLOADS[kind](marker), protocol=2))
    assert marker.exists()


@pytest.mark.parametrize('where', ['state_dict', 'inside_state_dict', 'magic', 'keys'])
@pytest.mark.parametrize('kind', PAYLOADS)
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, kind, where):
    marker = tmp_path / 'ran'
    path = write_with_payload(tmp_path / 'evil.pth', where, PAYLOADS[kind](marker))
    with pytest.raises(ValueError) as e:
        load_torch_legacy(path)
    assert str(path) in str(e.value)
    assert 'global' in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize('body,message', [
    # torch._utils._rebuild_tensor_v2('not a storage', 0, (1,), (1,))
    (b'ctorch._utils\n_rebuild_tensor_v2\n(X\x0d\x00\x00\x00not a storageK\x00K\x01\x85K\x01\x85tR.', 'built on a storage'),
    # torch.FloatStorage() called as a function
    (b'ctorch\nFloatStorage\n)R.', 'may not be called'),
    # a persistent id that is not a storage tuple
    (b'X\x03\x00\x00\x00abcQ.', 'persistent id')])
def test_allowed_globals_cannot_be_abused(tmp_path, body, message):
    path = tmp_path / 'abuse.pth'
    with open(path, 'wb') as f:
        header(f)
        f.write(b'\x80\x02' + body)
    with pytest.raises(ValueError, match=message):
        load_torch_legacy(path)


# --- damaged files ---

@pytest.mark.parametrize('cut', [0, 10, 40, 5_000, -100_000, -10])
def test_truncated_file(tmp_path, lite0_path, cut):
    data = lite0_path.read_bytes()
    path = tmp_path / 'truncated.pth'
    path.write_bytes(data[:cut] if cut >= 0 else data[:len(data) + cut])
    with pytest.raises(ValueError) as e:
        load_torch_legacy(path)
    assert str(path) in str(e.value)


def test_truncated_in_storage_data_says_so(tmp_path, lite0_path):
    path = tmp_path / 't.pth'
    path.write_bytes(lite0_path.read_bytes()[:-10])
    with pytest.raises(ValueError, match='truncated'):
        load_torch_legacy(path)


def test_wrong_magic_number(tmp_path):
    path = tmp_path / 'magic.pth'
    with open(path, 'wb') as f: header(f, magic=12345)
    with pytest.raises(ValueError, match='magic number 12345'):
        load_torch_legacy(path)


def test_trailing_bytes(tmp_path, lite0_path):
    path = tmp_path / 'trailing.pth'
    path.write_bytes(lite0_path.read_bytes() + b'\x00')
    with pytest.raises(ValueError, match='trailing bytes'):
        load_torch_legacy(path)


@pytest.mark.parametrize('view', [(4, (2, 3), (3, 1)), (0, (3, 3), (3, 1)), (0, (2, 3), (4, 1))])
def test_view_outside_storage(tmp_path, view):
    path = save_torch_legacy({'w': np.zeros((2, 3), np.float32)}, tmp_path / 'view.pth', _views={'w': view})
    with pytest.raises(ValueError, match='views elements'):
        load_torch_legacy(path)


def test_negative_stride_refused(tmp_path):
    path = save_torch_legacy({'w': np.zeros((2, 3), np.float32)}, tmp_path / 'neg.pth', _views={'w': (5, (2, 3), (-3, 1))})
    with pytest.raises(ValueError, match='invalid view'):
        load_torch_legacy(path)


def test_zip_format_named(tmp_path):
    path = tmp_path / 'new.pt'
    path.write_bytes(b'PK\x03\x04' + b'\x00' * 100)
    with pytest.raises(ValueError, match='zip-format'):
        load_torch_legacy(path)


def test_not_a_pickle_at_all(tmp_path):
    path = tmp_path / 'photo.pth'
    path.write_bytes(b'\xff\xd8\xff\xe0' + os.urandom(200))
    with pytest.raises(ValueError, match='photo.pth'):
        load_torch_legacy(path)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_torch_legacy(tmp_path / 'nope.pth')


# --- the writer ---

def test_round_trip_with_views(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {'a': rng.normal(size=(3, 4, 5)).astype(np.float32), 'b': np.arange(5, dtype=np.int64),
              'scalar': np.array(2.5, np.float32), 'empty': np.zeros((0, 3), np.float32)}
    back = load_torch_legacy(save_torch_legacy(arrays, tmp_path / 'r.pth'))
    assert list(back) == list(arrays)
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype and back[k].shape == arrays[k].shape
        np.testing.assert_array_equal(back[k], arrays[k])
    # a transposed view of the same storage
    t = load_torch_legacy(save_torch_legacy({'a': arrays['a'][0]}, tmp_path / 't.pth', _views={'a': (0, (5, 4), (1, 5))}))
    np.testing.assert_array_equal(t['a'], arrays['a'][0].T)


def test_writer_refuses_other_dtypes(tmp_path):
    with pytest.raises(ValueError, match='float64'):
        save_torch_legacy({'x': np.zeros(3)}, tmp_path / 'x.pth')


def test_writer_reproduces_lite0_file_exactly(tmp_path, lite0_path):
    "Our writer emits the same tensors; what it writes reads back to identical arrays."
    sd = load_torch_legacy(lite0_path)
    back = load_torch_legacy(save_torch_legacy(sd, tmp_path / 'copy.pth'))
    assert list(back) == list(sd)
    assert all(np.array_equal(back[k], sd[k]) for k in sd)


def test_file_written_by_pytorch_itself():
    """A legacy file written by PyTorch 2.13.0 (`torch.save(sd, path, _use_new_zipfile_serialization=False)`):
    views sharing one storage (`a`, its transpose `b`, an offset slice `c`), an int64 scalar `d`, a permuted tensor
    `e`. The .npz beside it holds `v.numpy()` of each, saved in the same run."""
    data = Path(__file__).parent / 'data'
    got = load_torch_legacy(data / 'torch_legacy_views.pth')
    want = np.load(data / 'torch_legacy_views.npz')
    assert list(got) == ['a', 'b', 'c', 'd', 'e']
    for k in got:
        assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(got[k], want[k])


def test_a_file_cannot_change_the_shared_stand_ins(tmp_path):
    "A BUILD opcode on torch.FloatStorage once renamed it os.system for every later save and load in the process."
    from tl_course import weights as W
    path = tmp_path / 'build.pth'
    with open(path, 'wb') as f:
        header(f)
        # torch.FloatStorage, then BUILD with the state {'module': 'os', 'name': 'system'}
        f.write(b"ctorch\nFloatStorage\n(dS'module'\nS'os'\nsS'name'\nS'system'\nsb.")
    with pytest.raises(ValueError, match='may be malicious'):
        load_torch_legacy(path)
    assert repr(W._STORAGE_TYPES['FloatStorage']) == 'torch.FloatStorage'
    good = save_torch_legacy({'w': np.arange(6, dtype=np.float32).reshape(2, 3)}, tmp_path / 'good.pth')
    assert b'os\nsystem' not in good.read_bytes()
    np.testing.assert_array_equal(load_torch_legacy(good)['w'], np.arange(6, dtype=np.float32).reshape(2, 3))
    with pytest.raises(AttributeError): W._STORAGE_TYPES['FloatStorage'].name = 'system'


def test_a_view_with_more_elements_than_its_storage_is_refused(tmp_path):
    "Stride 0 repeats one number: a 332-byte file once became a 1.6 GB array."
    path = save_torch_legacy({'w': np.zeros(1, np.float32)}, tmp_path / 'zero.pth', _views={'w': (0, (20_000, 20_000), (0, 0))})
    assert path.stat().st_size < 1000
    with pytest.raises(ValueError, match='more than storage'):
        load_torch_legacy(path)


@pytest.mark.parametrize('view', [(0, (float('inf'),), (1,)), (float('inf'), (1,), (1,)), (0, (10**30,), (1,))])
def test_an_infinite_or_enormous_size_or_offset_is_the_readers_error(tmp_path, view):
    path = save_torch_legacy({'w': np.zeros(1, np.float32)}, tmp_path / 'big.pth', _views={'w': view})
    with pytest.raises(ValueError) as e:
        load_torch_legacy(path)
    assert str(path) in str(e.value)
