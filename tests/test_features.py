"Feature extraction (against Keras's own predict), the disk cache (every key part, across processes, killed writers), the probe."
import dataclasses, os, signal, subprocess, sys, textwrap, time, zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tl_course.features as F
from tl_course.backbones import get_backbone
from tl_course.registry import stage_outputs
from tl_course.data import ImageError, load_image, load_image_folder, resize_center_crop

SIZE = 32


@pytest.fixture(scope='session') # not 'module': under xdist another module's test in between tore it down, and it was built again
def bb():
    return get_backbone('efficientnet_lite0', input_size=SIZE)


def _photo(path, rgb, seed, size=(48, 40), noise=40):
    rng = np.random.default_rng(seed)
    img = np.clip(np.array(rgb) + rng.normal(0, noise, size[::-1] + (3,)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90)
    return path


@pytest.fixture(scope='module')
def colours(tmp_path_factory):
    "A folder with train/ and val/ splits of two colour classes: a linear probe must separate them."
    root = tmp_path_factory.mktemp('colours')
    for split, n in (('train', 8), ('val', 4)):
        for c, rgb in (('red', (200, 40, 40)), ('blue', (40, 60, 200))):
            (root / split / c).mkdir(parents=True)
            for i in range(n): _photo(root / split / c / f'{c}{i}.jpg', rgb, zlib.crc32(f'{split}/{c}/{i}'.encode()))
    return root


@pytest.fixture
def files(tmp_path):
    d = tmp_path / 'imgs'
    d.mkdir()
    return [_photo(d / f'{i:02d}.jpg', (30 * i % 255, 120, 200 - 10 * i), i, (40 + 3 * i, 36)) for i in range(11)]


def reference(bb, files, crop=0.875, mirror=False):
    "Keras's own `model.predict` on the same images: what the extraction must equal."
    x = bb.preprocess(np.stack([resize_center_crop(load_image(f), SIZE, crop) for f in files]).astype(np.float32))
    y = bb.model.predict(x, verbose=0)
    return (y + bb.model.predict(x[:, :, ::-1], verbose=0)) / 2 if mirror else y


@pytest.mark.parametrize('batch_size', [4, 32])
@pytest.mark.parametrize('mirror', [False, True])
def test_features_equal_model_predict(bb, files, batch_size, mirror):
    got = F.extract_features(bb, files, batch_size=batch_size, mirror=mirror, cache=False, progress=False)
    assert got.shape == (len(files), 1280) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference(bb, files, mirror=mirror), atol=2e-5)


def test_extraction_and_evaluation_read_the_same_pixels(bb, files):
    "One pipeline: the features are the model's outputs on the evaluation batches that fine-tuning evaluates on."
    from tl_course.batches import ImageBatches
    ev = ImageBatches(files, np.zeros(len(files), np.int64), SIZE, 4, preprocess=bb.preprocess)
    got = F.extract_features(bb, files, batch_size=4, cache=False, progress=False)
    np.testing.assert_allclose(got, bb.model.predict(ev, verbose=0), atol=2e-5)


def test_mirror_changes_features(bb, files):
    a, b = (F.extract_features(bb, files, mirror=f, cache=False, progress=False) for f in (False, True))
    assert np.abs(a - b).max() > 1e-3


def test_array_input_and_its_errors(bb, files):
    imgs = np.stack([resize_center_crop(load_image(f), 40, 1.0) for f in files])
    x = bb.preprocess(np.stack([resize_center_crop(im, SIZE) for im in imgs]).astype(np.float32))
    np.testing.assert_allclose(F.extract_features(bb, imgs, cache=False, progress=False),
                               bb.model.predict(x, verbose=0), atol=2e-5)
    with pytest.raises(ValueError, match=r'\(N, H, W, 3\) uint8'):
        F.extract_features(bb, imgs.astype(np.float32), cache=False)
    with pytest.raises(ValueError, match=r'\(N, H, W, 3\) uint8'):
        F.extract_features(bb, imgs[..., 0], cache=False)


def test_feature_maps_are_refused(files):
    maps = get_backbone('efficientnet_lite0', input_size=SIZE, pooling=None)
    with pytest.raises(ValueError, match='pooling="avg"'):
        F.extract_features(maps, files, cache=False)


def test_both_views_kept_apart(bb, files, tmp_path):
    both = F.extract_features(bb, files, mirror='both', cache=tmp_path, progress=False)
    assert both.shape == (len(files), 2, 1280)
    np.testing.assert_allclose(both[:, 0], reference(bb, files), atol=2e-5)
    np.testing.assert_allclose(both[:, 1], 2 * reference(bb, files, mirror=True) - reference(bb, files), atol=5e-5)
    np.testing.assert_allclose(np.asarray(both).mean(1), reference(bb, files, mirror=True), atol=2e-5)
    assert F.cache_path(F.feature_key(bb, files, 'both')) != F.cache_path(F.feature_key(bb, files, True))
    np.testing.assert_array_equal(F.extract_features(bb, files, mirror='both', cache=tmp_path, progress=False), both)
    with pytest.raises(ValueError, match="mirror to be False, True or 'both'"):
        F.extract_features(bb, files, mirror='flip', cache=False)


def test_images_smaller_than_the_input_are_kept_whole(bb, tmp_path):
    tiny = [_photo(tmp_path / f't{i}.jpg', (40 * i, 90, 160), i, (24, 20)) for i in range(3)]
    got = F.extract_features(bb, tiny, cache=False, progress=False)
    np.testing.assert_allclose(got, reference(bb, tiny, crop=1.0), atol=2e-5)
    assert np.abs(got - reference(bb, tiny, crop=0.875)).max() > 1e-3  # a centre crop would have cut pixels away


def test_memory_bound_streams_to_a_temporary_file(bb, files):
    out = F.extract_features(bb, files, cache=False, progress=False, max_memory=1000)
    assert isinstance(out, np.memmap)
    np.testing.assert_allclose(out, reference(bb, files), atol=2e-5)


def test_progress_bar(bb, files, capsys):
    "tqdm's bar: images done of all, the rate and the time left (a widget in Jupyter, this line in a terminal)."
    F.extract_features(bb, files, batch_size=4, cache=False, progress=True)
    err = capsys.readouterr().err
    assert f'features: 100%' in err and f'{len(files)}/{len(files)}' in err and 'img/s' in err
    F.extract_features(bb, files, batch_size=4, cache=False, progress=False)
    assert capsys.readouterr().err == ''


# --- the cache ---

class Calls:
    "Counts calls of the network, so a test can tell a cache hit from an extraction."
    def __init__(self, monkeypatch):
        self.n, real = 0, F.model_call
        def counting(model):
            call = real(model)
            def f(x): self.n += 1; return call(x)
            return f
        monkeypatch.setattr(F, 'model_call', counting)


def entries(d): return sorted(Path(d).glob('*.npy'))


@pytest.mark.backend_free
def test_cache_hit_does_not_run_the_network(bb, files, tmp_path, monkeypatch):
    calls, cache = Calls(monkeypatch), tmp_path / 'cache'
    cold = F.extract_features(bb, files, batch_size=4, cache=cache, progress=False)
    assert calls.n == 3 and len(entries(cache)) == 1
    warm = F.extract_features(bb, files, batch_size=4, cache=cache, progress=False)
    assert calls.n == 3, 'the second run ran the network'
    np.testing.assert_array_equal(warm, cold)
    np.testing.assert_allclose(warm, reference(bb, files), atol=2e-5)
    assert not list(cache.glob('*.part-*'))


@pytest.mark.backend_free
def test_default_cache_folder_follows_the_environment(bb, files, tmp_path, monkeypatch):
    monkeypatch.setenv('TL_COURSE_CACHE', str(tmp_path / 'tlc'))
    assert F.features_cache_dir() == tmp_path / 'tlc' / 'features'
    F.extract_features(bb, files[:3], progress=False)
    assert len(entries(tmp_path / 'tlc' / 'features')) == 1


def _touch_later(f): st = os.stat(f); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

def _rewrite(f): Path(f).write_bytes(Path(f).read_bytes() + b'\0')  # same pixels, one more byte


@pytest.mark.parametrize('change', ['weights', 'input_size', 'preprocessing', 'pooling', 'mtime', 'size',
                                    'file_removed', 'order', 'mirror', 'crop'])
@pytest.mark.backend_free
def test_cache_missed_whenever_a_key_part_changes(bb, files, tmp_path, monkeypatch, change):
    calls, cache = Calls(monkeypatch), tmp_path / 'cache'
    first = F.extract_features(bb, files, cache=cache, progress=False)
    n0 = calls.n
    model, fl, kw = bb, list(files), {}
    if change == 'weights':
        model = get_backbone('efficientnet_lite0', input_size=SIZE)
        v = model.model.get_layer('head_conv').kernel
        v.assign(v.numpy() * 1.001)
    elif change == 'input_size': model = get_backbone('efficientnet_lite0', input_size=SIZE + 8)
    elif change == 'preprocessing': model = dataclasses.replace(bb, spec=dataclasses.replace(bb.spec, preprocessing='torch'))
    elif change == 'pooling': model = get_backbone('efficientnet_lite0', input_size=SIZE, pooling='max')
    elif change == 'mtime': _touch_later(fl[3])
    elif change == 'size': _rewrite(fl[3])
    elif change == 'file_removed': fl = fl[:-1]
    elif change == 'order': fl = fl[::-1]
    elif change == 'mirror': kw = {'mirror': True}
    elif change == 'crop': kw = {'crop_fraction': 1.0}
    second = F.extract_features(model, fl, cache=cache, progress=False, **kw)
    assert calls.n > n0, f'changing {change} did not start a new extraction'
    assert len(entries(cache)) == 2
    if change in ('mtime', 'size'): np.testing.assert_allclose(second, first, atol=2e-5) # same pixels, yet re-read
    if change == 'order': np.testing.assert_allclose(second, first[::-1], atol=2e-5)
    # (at 32 px the last feature map is 1x1, so max and average pooling agree: the key tells them apart anyway)
    if change in ('weights', 'input_size', 'preprocessing', 'mirror', 'crop'): assert np.abs(second - first).max() > 1e-4


@pytest.mark.backend_free
def test_same_build_twice_hits(bb, files, tmp_path, monkeypatch):
    "Two builds of the same network (other layer names, same weights) share cache entries."
    calls, cache = Calls(monkeypatch), tmp_path / 'cache'
    F.extract_features(bb, files, cache=cache, progress=False)
    n0 = calls.n
    F.extract_features(get_backbone('efficientnet_lite0', input_size=SIZE), files, cache=cache, progress=False)
    assert calls.n == n0


@pytest.mark.backend_free
def test_corrupt_entry_is_recomputed(bb, files, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    good = np.array(F.extract_features(bb, files, cache=cache, progress=False))
    entry, = entries(cache)
    entry.write_bytes(entry.read_bytes()[:200])  # truncated behind our back
    calls = Calls(monkeypatch)
    again = F.extract_features(bb, files, cache=cache, progress=False)
    assert calls.n > 0
    np.testing.assert_allclose(again, good, atol=1e-6)


class _Payload:
    "Unpickling this creates a file: proof that a pickle was loaded."
    def __init__(self, path): self.path = path
    def __reduce__(self): return (open, (self.path, 'w'))


@pytest.mark.backend_free
def test_a_pickle_in_the_cache_is_never_loaded(bb, files, tmp_path):
    cache = tmp_path / 'cache'
    good = np.array(F.extract_features(bb, files, cache=cache, progress=False))
    entry, = entries(cache)
    proof = tmp_path / 'pwned'
    np.save(entry, np.array([_Payload(str(proof))], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError): np.load(entry, mmap_mode='r')  # numpy refuses it without allow_pickle ...
    got = F.extract_features(bb, files, cache=cache, progress=False)
    assert not proof.exists()
    np.testing.assert_allclose(got, good, atol=1e-6)  # ... and the entry is extracted again


@pytest.mark.backend_free
def test_bad_image_names_the_file_and_leaves_no_entry(bb, files, tmp_path):
    cache = tmp_path / 'cache'
    files[5].write_bytes(files[5].read_bytes()[:300])
    with pytest.raises(ImageError, match=files[5].name):
        F.extract_features(bb, files, batch_size=4, cache=cache, progress=False)
    assert not list(cache.iterdir())


@pytest.mark.backend_free
def test_missing_file_is_named(bb, files, tmp_path):
    with pytest.raises(ImageError, match='gone.jpg'):
        F.extract_features(bb, files + [tmp_path / 'gone.jpg'], cache=tmp_path / 'c')


SCRIPT = '''
import sys, time, numpy as np
import tl_course.features as F
from tl_course.backbones import get_backbone
files, cache, slow = sys.argv[1].split(','), sys.argv[2], float(sys.argv[3])
real = F.model_call
def slow_call(model):
    call = real(model)
    def f(x): time.sleep(slow); return call(x)
    return f
F.model_call = slow_call
x = F.extract_features(get_backbone('efficientnet_lite0', input_size=%d), files, batch_size=2, cache=cache, progress=False)
np.save(sys.argv[4], np.asarray(x))
''' % SIZE


def _script(tmp_path, files, cache, slow):
    s = tmp_path / 'extract.py'
    s.write_text(SCRIPT)
    return [sys.executable, str(s), ','.join(map(str, files)), str(cache), str(slow), str(tmp_path / 'out.npy')]


@pytest.mark.backend_free
def test_entry_written_by_another_process_is_reused(bb, files, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    r = subprocess.run(_script(tmp_path, files, cache, 0), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    calls = Calls(monkeypatch)
    here = F.extract_features(bb, files, batch_size=2, cache=cache, progress=False)
    assert calls.n == 0, 'the entry written by the other process was not reused'
    np.testing.assert_array_equal(here, np.load(tmp_path / 'out.npy'))


@pytest.mark.backend_free
def test_process_killed_mid_write_leaves_no_entry(bb, files, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    p = subprocess.Popen(_script(tmp_path, files, cache, 0.5), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not list(cache.glob('*.part-*')) and time.time() < deadline and p.poll() is None: time.sleep(0.05)
    time.sleep(0.6)  # a batch or two is written into the part file
    assert p.poll() is None, 'the writer finished before it could be killed: ' + p.stderr.read().decode()[-1000:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    part, = cache.glob('*.part-*')
    assert part.stat().st_size > 0 and entries(cache) == [], 'a killed writer left an entry that could be read back'
    calls = Calls(monkeypatch)
    got = F.extract_features(bb, files, cache=cache, progress=False)
    assert calls.n > 0
    np.testing.assert_allclose(got, reference(bb, files), atol=2e-5)
    assert len(entries(cache)) == 1 and not part.exists(), 'the dead writer\'s part file was not cleaned up'


@pytest.mark.backend_free
def test_a_live_writers_part_file_is_left_alone(bb, files, tmp_path):
    cache = tmp_path / 'cache'
    cache.mkdir()
    from tl_course.download import _host
    live = cache / f'x.npy.part-{_host()}-{os.getppid()}-1-0'
    live.write_bytes(b'in progress')
    F.extract_features(bb, files[:2], cache=cache, progress=False)
    assert live.exists()


# --- the probe ---

def test_linear_probe_separates_colours(colours, tmp_path):
    p = F.linear_probe(colours, backbone=get_backbone('efficientnet_lite0', input_size=SIZE), layers='cut', power='auto', cache=tmp_path / 'c')
    m = p.metrics
    assert m['accuracy'] == 1.0 and m['n_train'] == 16 and m['n_val'] == 8 and m['classes'] == ['blue', 'red']
    assert m['eval_split'] == 'val' and m['mirror'] is True and m['C'] in F.CS
    cv = m['cv_accuracy_by_features']
    # the features by CV at power 1 (layers='cut': the head, or the head and the cut layer), then the power
    chosen = max(['head', 'head+block10_add'], key=cv.get)
    assert list(cv) == ['head', 'head+block10_add', f'{chosen}, signed power 0.5']
    assert m['features_from'] == max(cv, key=cv.get) and m['power'] == (0.5 if 'power' in m['features_from'] else 1)
    assert m['features'] == 1280 + 112 * ('block10_add' in m['features_from'])
    assert set(m['per_class_accuracy']) == {'blue', 'red'} and m['seconds'] >= m['seconds_fit'] > 0
    assert p.predict_files(sorted((colours / 'val' / 'red').iterdir())[:2], cache=tmp_path / 'c') == ['red', 'red']


@pytest.mark.backend_free
@pytest.mark.parametrize('selection,n,width', [('pca', 8, 8), ('pca', 500, 15), ('lda', None, 1)])
def test_linear_probe_with_selection(colours, tmp_path, selection, n, width):
    p = F.linear_probe(colours, backbone=get_backbone('efficientnet_lite0', input_size=SIZE), selection=selection,
                       n_components=n, layers='head', cache=tmp_path / 'c') # the head's features: one CV fit, not the default's eight to fourteen
    # this test is about the wiring (the width that reaches the classifier); with 16 noisy training images the
    # selected features cost an error at most, which is all the 0.75 allows (6 of 8)
    assert p.metrics['features'] == width and p.metrics['accuracy'] >= 0.75


@pytest.mark.parametrize('layers,width,name', [('head', 1280, 'head'), ('block10_add', 1392, 'head+block10_add'),
                                               (['block10_add', 'block4_add', 'block10_add'], 1432, 'head+block4_add+block10_add')])
def test_mid_level_features(colours, tmp_path, layers, width, name):
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    p = F.linear_probe(colours, backbone=bb, layers=layers, cache=tmp_path / 'c')
    assert (p.metrics['features'], p.metrics['features_from'], list(p.metrics['cv_accuracy_by_features'])) == (width, name, [name])
    val = sorted((colours / 'val' / 'blue').iterdir())
    assert p.features(val, cache=False).shape == (len(val), width)
    assert p.predict_files(val, cache=False) == ['blue'] * len(val)


@pytest.mark.backend_free
def test_power_chosen_by_cross_validation_reaches_the_pipeline(colours, tmp_path):
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    p = F.linear_probe(colours, backbone=bb, layers='head', power=0.5, cache=tmp_path / 'c')
    assert p.metrics['features_from'] == 'head, signed power 0.5' and p.pipeline.named_steps['power'].kw_args == {'p': 0.5}
    x = p.features(sorted((colours / 'val' / 'red').iterdir()), cache=tmp_path / 'c')
    np.testing.assert_array_equal(p.pipeline[:1].transform(x), np.sqrt(x))  # pooled ReLU6 outputs are >= 0


@pytest.mark.backend_free
def test_auto_layers_add_the_stages_cross_validation_prefers(colours, tmp_path, monkeypatch):
    "Forward selection: each round adds the stage whose columns CV scores best, at most two, and stops when none helps."
    import tl_course.probe as PR
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    stages = stage_outputs(bb)
    w = {s: int(bb.model.get_layer(s).output.shape[-1]) for s in stages}
    # the stage sets forward selection tries, told apart by their widths (each distinct along its path)
    tried = {1280: ['head']} | {1280 + w[s]: ['head', s] for s in stages} | {1392 + w[s]: ['head', s, 'block10_add'] for s in stages}
    liked = {'head': 0.5, 'block4_add': 0.8, 'block10_add': 0.9} # a made-up CV score per stage: the sum of those it holds
    def fake_cv(pipe):
        names = tried[pipe.named_steps['classifier'].n_features_in_]
        return sum(liked.get(k, 0) for k in names) - 0.01 * len(names)
    monkeypatch.setattr(PR, 'cv_accuracy', fake_cv)
    p = F.linear_probe(colours, backbone=bb, layers='auto', cache=False)
    assert p.extra_layers == tuple(stages) and p.metrics['features_from'] == 'head+block4_add+block10_add'
    cv = p.metrics['cv_accuracy_by_features']
    assert list(cv)[:1 + len(stages)] == ['head'] + [f'head+{s}' for s in stages] # round 1: the head, then each stage added
    assert len(cv) == 1 + len(stages) + len(stages) - 1 # round 2: each other stage added to head+block10_add
    blocks = PR.feature_columns(bb, tuple(stages))
    np.testing.assert_array_equal(p.columns, np.concatenate([blocks['head'], blocks['block4_add'], blocks['block10_add']]))
    assert p.metrics['features'] == 1280 + 40 + 112 and p.predict_files(sorted((colours / 'val' / 'red').iterdir()), cache=False) == ['red'] * 4


@pytest.mark.backend_free
def test_all_layers_measure_every_stage_alone(colours, tmp_path):
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    p = F.linear_probe(colours, backbone=bb, layers='all', cache=tmp_path / 'c')
    curve = p.metrics['by_layer']
    assert list(curve) == ['head'] + stage_outputs(bb)
    assert all(set(v) == {'cv', 'C', 'accuracy'} and 0 <= v['accuracy'] <= 1 for v in curve.values())
    assert curve['head']['cv'] == p.metrics['cv_accuracy_by_features']['head']
    again = F.linear_probe(colours, backbone=bb, layers='all', cache=tmp_path / 'c')
    assert again.metrics['cv_cached'] and again.metrics['by_layer'] == curve


@pytest.mark.backend_free
def test_layers_are_checked(colours):
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    for bad in ('block99_add', 'avg_pool', [], 'some'):
        with pytest.raises(ValueError, match="Expected layers to be 'auto', 'all', 'head', 'cut' or names .* block10_add"):
            F.linear_probe(colours, backbone=bb, layers=bad, cache=False)


def test_pooled_layers_are_the_layer_means(bb, files):
    "The appended columns are the spatial means of the named layer's output."
    import keras
    x = F.extract_features(bb, files, extra_layers=('block10_add',), cache=False, progress=False)
    inner = keras.Model(bb.model.inputs, bb.model.get_layer('block10_add').output)
    imgs = bb.preprocess(np.stack([resize_center_crop(load_image(f), SIZE) for f in files]).astype(np.float32))
    np.testing.assert_allclose(x[:, 1280:], inner.predict(imgs, verbose=0).mean(axis=(1, 2)), atol=2e-5)
    np.testing.assert_allclose(x[:, :1280], reference(bb, files), atol=2e-5)
    with pytest.raises(ValueError, match="no layers \\['nope'\\]"):
        F.extract_features(bb, files, extra_layers=('nope',), cache=False)


@pytest.mark.backend_free
def test_the_default_layers_are_the_suites_choice(colours, tmp_path):
    "With no `layers`, the probe chooses among every stage output, as 'auto' (bench/results/suite.json chose it over 'cut')."
    from tl_course.registry import stage_outputs
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    p = F.linear_probe(colours, backbone=bb, cache=tmp_path / 'c')
    cv = p.metrics['cv_accuracy_by_features']
    assert p.metrics['layers'] == 'auto' and p.extra_layers == tuple(stage_outputs(bb))
    assert {f'head+{s}' for s in stage_outputs(bb)} <= set(cv) # round one tried each stage beside the head
    assert p.metrics['features_from'] in cv and cv[p.metrics['features_from']] == max(cv.values())


@pytest.mark.backend_free
def test_cross_validation_is_cached_too(colours, tmp_path, monkeypatch):
    bb = get_backbone('efficientnet_lite0', input_size=SIZE) # layers='cut': two CV fits, counted below
    first = F.linear_probe(colours, backbone=bb, layers='cut', cache=tmp_path / 'c')
    fits = []
    real = F.fit_probe
    import tl_course.probe as PR  # linear_probe's module, where it looks fit_probe up
    monkeypatch.setattr(PR, 'fit_probe', lambda *a, **k: fits.append(k.get('Cs')) or real(*a, **k))
    again = F.linear_probe(colours, backbone=bb, layers='cut', cache=tmp_path / 'c')
    assert again.metrics['cv_cached'] and not first.metrics['cv_cached']
    assert fits == [(first.metrics['C'],)], 'a cached re-run must fit once, at the C chosen before'
    for k in ('accuracy', 'C', 'features_from', 'cv_accuracy_by_features'): assert again.metrics[k] == first.metrics[k]
    for a, b in zip(first.pipeline.steps, again.pipeline.steps): assert type(a[1]) is type(b[1])
    np.testing.assert_array_equal(first.pipeline.named_steps['classifier'].coef_, again.pipeline.named_steps['classifier'].coef_)
    fits.clear()
    F.linear_probe(colours, backbone=bb, layers='cut', cache=tmp_path / 'c', selection='pca', n_components=4)
    assert len(fits) == 3 and fits[0] is None, 'other probe settings must not reuse the cached choice'  # 2 CV fits, 1 refit


@pytest.mark.backend_free
def test_probe_on_a_folder_without_val_split(colours, tmp_path):
    with pytest.raises(ValueError, match='val_split'):
        F.linear_probe(colours / 'train', backbone=get_backbone('efficientnet_lite0', input_size=SIZE), cache=False)
    p = F.linear_probe(colours / 'train', backbone=get_backbone('efficientnet_lite0', input_size=SIZE),
                       val_split=0.25, cache=False)
    assert (p.metrics['n_train'], p.metrics['n_val']) == (12, 4)


@pytest.mark.backend_free
def test_fit_probe_checks_its_input():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    with pytest.raises(ValueError, match='at least 2 classes'): F.fit_probe(x, np.zeros(12, int))
    with pytest.raises(ValueError, match='class 2 has 1'): F.fit_probe(x, np.r_[np.zeros(6, int), np.ones(5, int), 2])
    with pytest.raises(ValueError, match='12 feature rows but 11'): F.fit_probe(x, np.zeros(11, int))
    with pytest.raises(ValueError, match="selection='tsne'"): F.probe_pipeline('tsne')
    y = np.r_[np.zeros(6, int), np.ones(3, int), 2 * np.ones(3, int)]
    assert F.fit_probe(x, y).named_steps['classifier'].cv.n_splits == 3  # folds shrink to the smallest class


@pytest.mark.backend_free
def test_power_normalisation_comes_first():
    np.testing.assert_array_equal(F.signed_power(np.array([-4., 0., 9.])), [-2., 0., 3.])
    pipe = F.probe_pipeline(power=0.5)
    assert list(pipe.named_steps)[:2] == ['power', 'standardise']
    np.testing.assert_array_equal(pipe[:1].fit_transform(np.array([[-4., 16.]])), [[-2., 4.]])
    assert 'power' not in F.probe_pipeline().named_steps


@pytest.mark.backend_free
def test_lda_pipelines():
    assert F.probe_pipeline('lda').named_steps['lda'].solver == 'eigen'
    plain = F.probe_pipeline('lda', shrinkage=None).named_steps['lda']
    assert plain.solver == 'svd' and plain.shrinkage is None


@pytest.mark.backend_free
def test_probe_never_sees_the_evaluation_labels(colours, tmp_path):
    "C and the weights come from the training split alone: swapping the val labels changes only the score."
    import shutil
    swapped = tmp_path / 'swapped'
    shutil.copytree(colours, swapped)
    (swapped / 'val' / 'red').rename(swapped / 'val' / 'tmp')
    (swapped / 'val' / 'blue').rename(swapped / 'val' / 'red')
    (swapped / 'val' / 'tmp').rename(swapped / 'val' / 'blue')
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    a, b = (F.linear_probe(d, backbone=bb, cache=False) for d in (colours, swapped))
    ca, cb = a.pipeline.named_steps['classifier'], b.pipeline.named_steps['classifier']
    assert F.pipe_c(a.pipeline) == F.pipe_c(b.pipeline) == a.metrics['C']
    np.testing.assert_allclose(ca.coef_, cb.coef_, rtol=1e-6)
    assert (a.metrics['accuracy'], b.metrics['accuracy']) == (1.0, 0.0)


@pytest.mark.backend_free
def test_the_probe_fits_in_the_span_of_its_rows_and_finds_what_a_plain_fit_finds():
    "The representer theorem: with fewer rows than features, the L2 logistic fit in the rows' span is the plain fit."
    import warnings
    from sklearn.linear_model import LogisticRegressionCV
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 200)) + np.eye(3)[y] @ rng.normal(size=(3, 200)) * 0.4
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ours = F._logistic(F.CS, 5, 0, 5000).fit(x, y)
        plain = LogisticRegressionCV(**ours.get_params()).fit(x, y) # the same settings, the plain fit
    assert isinstance(ours, F._RowSpan) and ours.coef_.shape == (3, 200) and ours.n_features_in_ == 200
    assert np.ravel(ours.C_)[0] == np.ravel(plain.C_)[0]
    np.testing.assert_allclose(ours.coef_, plain.coef_, atol=2e-3 * np.abs(plain.coef_).max())
    np.testing.assert_allclose(ours.predict_proba(x[:7]), plain.predict_proba(x[:7]), atol=2e-3)


@pytest.mark.backend_free
def test_the_pooled_layers_are_in_the_cache_key(bb, files, tmp_path):
    "block9_add and block10_add are both 112 wide, and the architecture digest ignores which layer is pooled."
    widths = {l: bb.model.get_layer(l).output.shape[-1] for l in ('block9_add', 'block10_add')}
    assert widths['block9_add'] == widths['block10_add'] # the same shape: only the key can tell them apart
    a = F.extract_features(bb, files, extra_layers=('block9_add',), cache=tmp_path, progress=False)
    b = F.extract_features(bb, files, extra_layers=('block10_add',), cache=tmp_path, progress=False)
    fresh = F.extract_features(bb, files, extra_layers=('block10_add',), cache=False, progress=False)
    np.testing.assert_allclose(b, fresh, atol=1e-6) # not block9_add's features from the cache
    assert np.abs(a[:, bb.feature_size:] - b[:, bb.feature_size:]).max() > 1e-3


def test_a_model_and_its_compiled_call_and_pooled_model_do_not_outlive_it():
    import gc, weakref
    from tl_course.backbones import model_call
    from tl_course.registry import with_pooled_layers
    def use():
        net = get_backbone('efficientnet_lite0', weights=None, input_size=SIZE)
        model_call(net.model)(np.zeros((2, SIZE, SIZE, 3), np.float32))
        pooled = with_pooled_layers(net, (net.cut_layer,))
        F.extract_features(pooled, np.zeros((2, SIZE, SIZE, 3), np.uint8), cache=False, progress=False)
        return weakref.ref(net.model), weakref.ref(pooled.model)
    refs = use()
    gc.collect()
    assert [r() for r in refs] == [None, None] # both collected once nothing refers to them


@pytest.mark.backend_free
def test_the_span_is_used_where_it_pays_and_gives_the_same_classifier_when_forced():
    "Two classes, or as many rows as half the features: the plain fit. Forced, the span fit finds the same weights."
    import warnings
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 300)) + np.eye(2)[y] @ rng.normal(size=(2, 300)) * 0.3
    calls = []
    real = np.linalg.eigh
    def eigh(a): calls.append(a.shape); return real(a)
    np.linalg.eigh = eigh
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            auto = F._SpanLogistic(C=0.01, max_iter=5000).fit(x, y)
            assert calls == [] # two classes: the plain fit, which is quick
            forced = F._SpanLogistic(C=0.01, max_iter=5000); forced.span = True; forced.fit(x, y)
            assert calls == [(60, 60)] # the rows' Gram matrix
    finally: np.linalg.eigh = real
    np.testing.assert_allclose(forced.coef_, auto.coef_, atol=2e-3 * np.abs(auto.coef_).max())
