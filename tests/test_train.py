"Fine-tuning: what trains and what must not move (frozen weights, BatchNorm statistics), the schedule and loss, checkpoints that survive a SIGKILL, the saved model."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest
import keras

import tl_course.train as T
from tl_course.backbones import get_backbone
from tl_course.data import get_dataset

SIZE = 32
REPO = Path(__file__).resolve().parents[1]


def digits(per_class=6, classes=3, seed=0):
    "A few of scikit-learn's digits (8 x 8, upscaled by the pipeline): train and val arrays, labels."
    d = get_dataset('digits')
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(d.y == c))[:2 * per_class] for c in range(classes)]).reshape(classes, -1)
    tr, va = idx[:, :per_class].ravel(), idx[:, per_class:].ravel()
    return (d.x[tr], d.y[tr]), (d.x[va], d.y[va])


def bn_layers(model):
    return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


def snapshot(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


class Snap(keras.callbacks.Callback):
    "Copies of the base's variables, and of the model being fitted, when each phase starts and ends."
    def __init__(self, base): super().__init__(); self.base, self.snaps = base, []
    def on_train_begin(self, logs=None): self.snaps.append((snapshot(self.model), snapshot(self.base)))
    def on_train_end(self, logs=None): self.snaps.append((snapshot(self.model), snapshot(self.base)))


def test_set_trainable():
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    m, names = bb.model, [l.name for l in bb.model.layers]
    assert T.set_trainable(m, None) == 0 and not m.trainable_weights
    n = T.set_trainable(m, 'cut', bb.cut_layer)
    cut = names.index(bb.cut_layer)
    trained = [l for l in m.layers if l.trainable and l.weights]
    assert n == len(trained) > 0 and all(names.index(l.name) > cut for l in trained)
    assert not any(l.trainable for l in bn_layers(m)), 'BatchNorm must stay frozen (inference mode)'
    T.set_trainable(m, 'cut', bb.cut_layer, bn_training=True)
    assert all(l.trainable for l in bn_layers(m) if names.index(l.name) > cut)
    assert not any(l.trainable for l in bn_layers(m) if names.index(l.name) <= cut)
    assert T.set_trainable(m, 'all', bn_training=True) == sum(bool(l.weights) for l in m.layers)
    assert T.set_trainable(m, 1.0) == sum(bool(l.weights) for l in m.layers if not isinstance(l, keras.layers.BatchNormalization))
    assert 0 < T.set_trainable(m, 0.2) < n
    with pytest.raises(ValueError, match="no layer 'nope'"): T.set_trainable(m, 'nope')
    with pytest.raises(ValueError, match='Expected unfreeze'): T.set_trainable(m, 2.0)


def test_warmup_cosine_schedule():
    s = T.warmup_cosine(1e-3, total_steps=100, warmup_steps=10, floor=1e-5)
    assert type(s) is keras.optimizers.schedules.CosineDecay # Keras's own schedule, set up
    lr = lambda t: float(keras.ops.convert_to_numpy(s(t)))
    np.testing.assert_allclose([lr(t) for t in (0, 4, 9)], [1e-3 / 11, 5e-3 / 11, 1e-2 / 11], rtol=1e-5) # never 0
    np.testing.assert_allclose([lr(t) for t in (10, 55, 100, 500)], [1e-3, 1e-5 + (1e-3 - 1e-5) / 2, 1e-5, 1e-5], rtol=1e-4)
    assert all(lr(t) > lr(t + 10) for t in range(10, 90, 10)) # decreasing after the warm-up
    no_warmup = T.warmup_cosine(1e-3, 100) # starts at the peak
    np.testing.assert_allclose([float(keras.ops.convert_to_numpy(no_warmup(t))) for t in (0, 50, 100)], [1e-3, 5e-4, 0], atol=1e-9)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert lr(37) == float(keras.ops.convert_to_numpy(again(37)))
    # a model saved with the schedule this library had before (tl_course>WarmupCosine) still loads, as CosineDecay
    old = {'module': None, 'class_name': 'WarmupCosine', 'registered_name': 'tl_course>WarmupCosine',
           'config': {'peak': 1e-3, 'total_steps': 100, 'warmup_steps': 10, 'floor': 1e-5}}
    loaded = keras.saving.deserialize_keras_object(old)
    assert type(loaded) is keras.optimizers.schedules.CosineDecay and float(keras.ops.convert_to_numpy(loaded(37))) == lr(37)


def test_sparse_smoothed_cross_entropy():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    y = np.array([0, 1])
    ref = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[y], p)
    np.testing.assert_allclose(T.SparseSmoothedCE(0.1)(y, p), ref, rtol=1e-6)
    plain = keras.losses.SparseCategoricalCrossentropy()(y, p)
    np.testing.assert_allclose(T.SparseSmoothedCE(0.0)(y, p), plain, rtol=1e-6)
    assert abs(float(T.SparseSmoothedCE(0.1)(y, p)) - float(plain)) > 1e-3


@pytest.fixture(scope='session') # not 'module': under xdist another module's test in between tore it down, and it was built again
def tiny_run(tmp_path_factory):
    "One run of both phases on 18 digit images, with the base's variables copied as each phase starts and ends."
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    snap = Snap(bb.model)
    train, val = digits()
    run_dir = tmp_path_factory.mktemp('run')
    run = T.fine_tune(bb, train, val, epochs_head=3, epochs_fine=2, run_dir=run_dir, callbacks=[snap], cache=False,
                      batch_size=8, workers=1)
    return run, snap.snaps, bb, run_dir, (train, val)


def test_phase_1_moves_the_head_and_nothing_else(tiny_run):
    run, snaps, bb, _, _ = tiny_run
    (head_a, a), (head_b, b) = snaps[0], snaps[1]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), 'a frozen weight moved in phase 1'
    assert sorted(head_a) == ['classifier/bias', 'classifier/kernel'], 'phase 1 fits the new head alone'
    assert not np.array_equal(head_a['classifier/kernel'], head_b['classifier/kernel'])
    # phase 1's own loss falls (its epochs 0 to 2); the history's last row is phase 2's, on augmented images under
    # dropout, whose loss need not be below phase 1's first (it was not once on JAX: 1.159 against 1.156)
    assert run.history['phase'][:4] == [1, 1, 1, 2] and run.history['loss'][2] < run.history['loss'][0]


def test_phase_2_trains_the_top_and_keeps_batchnorm_statistics(tiny_run):
    run, snaps, bb, _, _ = tiny_run
    (_, a), (_, b) = snaps[2], snaps[3]
    names = [l.name for l in bb.model.layers]
    cut = names.index(bb.cut_layer)
    moved = {k for k in a if not np.array_equal(a[k], b[k])}
    layer_of = lambda path: path.split('/')[-2]
    assert moved, 'phase 2 trained nothing'
    assert all(names.index(layer_of(k)) > cut for k in moved), f'weights before the cut moved: {sorted(moved)[:3]}'
    stats = [k for k in a if k.endswith(('moving_mean', 'moving_variance'))]
    assert len(stats) == 2 * len(bn_layers(bb.model)) and not moved & set(stats), 'BatchNorm statistics changed'
    assert [p for p in run.history['phase']] == [1, 1, 1, 2, 2] and run.history['epoch'] == [0, 1, 2, 3, 4]


def test_batchnorm_statistics_do_move_when_asked(tmp_path):
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    snap = Snap(bb.model)
    train, val = digits(per_class=3)
    T.fine_tune(bb, train, None, epochs_head=1, epochs_fine=1, bn_training=True, callbacks=[snap], cache=False,
                batch_size=9, workers=1)
    (_, a), (_, b) = snap.snaps[2], snap.snaps[3]
    moved = [k for k in a if k.endswith('moving_mean') and not np.array_equal(a[k], b[k])]
    assert moved, 'with bn_training=True the statistics after the cut must update (else the test above proves nothing)'


def test_run_directory_holds_everything(tiny_run):
    run, _, _, run_dir, (train, val) = tiny_run
    assert {'checkpoint.npz', 'history.csv', 'history.json', 'metrics.json', 'model.keras', 'learning_curves.png'} <= \
        {p.name for p in run_dir.iterdir()}
    assert not [p for p in run_dir.iterdir() if '.part-' in p.name]
    m = json.loads((run_dir / 'metrics.json').read_text())
    assert m == run.metrics and m['n_train'] == 18 and m['n_val'] == 18 and 0 <= m['accuracy'] <= 1
    lines = (run_dir / 'history.csv').read_text().splitlines()
    assert lines[0].split(',')[:2] == ['phase', 'epoch'] and len(lines) == 6
    state, _ = T.read_checkpoint(run_dir / 'checkpoint.npz')
    assert state['finished'] and state['history'] == run.history


def test_saved_model_reloads_and_predicts_identically(tiny_run):
    run, _, _, run_dir, (train, val) = tiny_run
    again = keras.saving.load_model(run_dir / 'model.keras')
    x = T.ImageBatches(val[0], val[1], SIZE, 18)[0][0]
    np.testing.assert_allclose(again.predict(x, verbose=0), run.model.predict(x, verbose=0), atol=1e-6)
    assert isinstance(again.get_layer('preprocess'), T.Preprocess) and again.get_layer('classifier').dtype_policy.name == 'float32'


def test_image_batches_are_uint8_and_the_model_reads_them_as_the_same_floats(tiny_run):
    run, _, _, _, (train, val) = tiny_run
    x = T.ImageBatches(val[0], val[1], SIZE, 18)[0][0]
    assert x.dtype == np.uint8, 'uint8 batches: a quarter of the bytes of float32 to make and to copy to the device'
    np.testing.assert_array_equal(run.model.predict(x, verbose=0), run.model.predict(x.astype(np.float32), verbose=0))
    aug = T.ImageBatches(train[0], train[1], SIZE, 6, training=True)[0][0]
    assert aug.dtype == np.uint8 and aug.std() > 0


def test_image_batches_pass_crop_scale_to_augment():
    from tl_course.data import augment
    imgs = np.zeros((3, 36, 36, 3), np.uint8); imgs[:, :, 18:] = 255 # smaller than the crop base: not resized
    b = T.ImageBatches(imgs, [0, 1, 2], SIZE, 3, training=True, crop_scale=(0.6, 0.9), seed=4)
    x, _ = b[0]
    for k, j in enumerate(b.order):
        np.testing.assert_array_equal(x[k], augment(imgs[j], SIZE, np.random.default_rng([4, 0, int(j)]), crop_scale=(0.6, 0.9)))
    assert not np.array_equal(x, T.ImageBatches(imgs, [0, 1, 2], SIZE, 3, training=True, seed=4)[0][0])


def test_predictions_average_each_image_and_its_mirror_image(tiny_run):
    run, _, _, _, (train, val) = tiny_run
    x = T.ImageBatches(val[0], val[1], SIZE, 18)[0][0]
    mirrored = T.ImageBatches(val[0], val[1], SIZE, 18, mirror=True)[0][0]
    np.testing.assert_array_equal(mirrored, x[:, :, ::-1])
    one, other = (np.asarray(run.model.predict(v, verbose=0), np.float64) for v in (x, mirrored))
    assert np.abs(one - other).max() > 1e-4, 'the mirror images must give other probabilities, else the test proves nothing'
    np.testing.assert_allclose(run.predict(val[0]), (one + other) / 2, atol=1e-6)
    m = run.metrics
    assert m['mirror'] is True and m['accuracy'] == ((one + other).argmax(1) == val[1]).mean()
    assert m['accuracy_single_view'] == (one.argmax(1) == val[1]).mean()
    run.mirror = False
    try: np.testing.assert_allclose(run.predict(val[0]), one, atol=1e-6)
    finally: run.mirror = True


def test_a_finished_run_is_not_trained_again(tiny_run):
    run, _, bb, run_dir, (train, val) = tiny_run
    again = T.fine_tune(get_backbone('efficientnet_lite0', input_size=SIZE), train, val, epochs_head=3, epochs_fine=2,
                        run_dir=run_dir, cache=False, batch_size=8, workers=1)
    assert again.history == run.history and again.metrics['accuracy'] == run.metrics['accuracy']


def test_other_settings_in_the_same_run_directory_are_refused(tiny_run):
    run, _, bb, run_dir, (train, val) = tiny_run
    with pytest.raises(ValueError, match='other settings \\(epochs_fine\\)'):
        T.fine_tune(bb, train, val, epochs_head=3, epochs_fine=5, run_dir=run_dir, cache=False, batch_size=8)


def test_a_bad_checkpoint_is_named_and_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self): return (os.system, ('touch ' + str(tmp_path / 'pwned'),))
    bad = tmp_path / 'checkpoint.npz'
    with open(bad, 'wb') as f: np.save(f, np.array([Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match='checkpoint.npz: not a readable checkpoint.*delete it'):
        T.read_checkpoint(bad)
    assert not (tmp_path / 'pwned').exists()
    bad.write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(ValueError, match='not a readable checkpoint'): T.read_checkpoint(bad)


KILLED_RUN = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    from test_train import digits, SIZE
    import tl_course.train as T
    from tl_course.backbones import get_backbone
    train, val = digits()
    T.fine_tune(get_backbone('efficientnet_lite0', input_size=SIZE), train, val, epochs_head=2, epochs_fine=6,
                run_dir={run_dir!r}, cache=False, batch_size=6, workers=1)
''')


@pytest.mark.slow_on_jax
def test_resume_after_the_process_is_killed(tmp_path):
    run_dir = tmp_path / 'run'
    code = KILLED_RUN.format(tests=str(Path(__file__).parent), run_dir=str(run_dir))
    proc = subprocess.Popen([sys.executable, '-c', code], env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt, seen, t0 = run_dir / 'checkpoint.npz', None, time.time()
    try:
        while time.time() - t0 < 600 and proc.poll() is None:
            if ckpt.exists():
                state, _ = T.read_checkpoint(ckpt)
                if state['epoch'] >= 3: seen = state; break # in phase 2, with epochs still to run
            time.sleep(0.05)
        assert seen is not None, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else 'no checkpoint'
        proc.send_signal(signal.SIGKILL); proc.wait()
    finally:
        if proc.poll() is None: proc.kill()
    state, _ = T.read_checkpoint(ckpt) # the last complete epoch (the kill may have come after one more)
    assert not state['finished'] and state['epoch'] < 7
    train, val = digits()
    run = T.fine_tune(get_backbone('efficientnet_lite0', input_size=SIZE), train, val, epochs_head=2, epochs_fine=6,
                      run_dir=run_dir, cache=False, batch_size=6, workers=1)
    assert run.resumed_from == state['epoch']
    assert run.history['epoch'] == list(range(8)) and run.history['phase'] == [1] * 2 + [2] * 6
    k = state['epoch'] + 1
    assert all(run.history[c][:k] == state['history'][c] for c in state['history']), 'finished epochs were run again'
    assert json.loads((run_dir / 'metrics.json').read_text())['epochs'] == 8


@pytest.mark.parametrize('classes', [2, 3])
def test_the_exact_head_computes_the_probes_probabilities(classes):
    from tl_course.features import fit_probe
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12)).astype(np.float32) * rng.uniform(0.1, 5, 12) + rng.normal(size=12)
    y = np.arange(60) % classes
    x[:, 0] += 2 * y # something to learn
    pipe = fit_probe(x, y)
    kernel, bias = T.head_from_probe(pipe, classes)
    z = x @ kernel + bias
    p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(p, pipe.predict_proba(x), atol=1e-5)
    with pytest.raises(ValueError, match='the probe knows'): T.head_from_probe(pipe, classes + 1)


@pytest.mark.slow_on_jax
@pytest.mark.parametrize('policy', ['mixed_float16', 'mixed_bfloat16'])
def test_mixed_precision_keeps_the_output_in_float32(policy):
    train, val = digits(per_class=3)
    run = T.fine_tune(get_backbone('efficientnet_lite0', input_size=SIZE), train, val, epochs_fine=1, batch_size=9,
                      mixed_precision=policy, cache=False, workers=1)
    convs = [l for l in run.backbone.model.layers if isinstance(l, keras.layers.Conv2D)]
    assert convs and all(l.dtype_policy.name == policy for l in convs)
    assert all(v.dtype == 'float32' for v in run.model.weights), 'variables stay in float32 under a mixed policy'
    out = run.model.get_layer('classifier')
    assert out.dtype_policy.name == 'float32' and run.model.output.dtype == 'float32'
    assert keras.config.dtype_policy().name == 'float32', 'the global policy is restored'
    assert np.isfinite(run.history['loss']).all() and 0 <= run.metrics['accuracy'] <= 1


def test_lr_find_sweeps_and_restores_the_weights():
    bb = get_backbone('efficientnet_lite0', input_size=SIZE)
    model = T.classifier(bb, 3)
    T.set_trainable(bb.model, 'cut', bb.cut_layer)
    (x, y), _ = digits(per_class=4)
    before = snapshot(model)
    r = T.lr_find(model, T.ImageBatches(x, y, SIZE, 6, training=True), start=1e-6, end=10.0, steps=12, diverge=1e9)
    assert len(r['lr']) == len(r['loss']) == len(r['smoothed_loss']) == 12
    np.testing.assert_allclose([r['lr'][0], r['lr'][-1]], [1e-6, 10.0], rtol=1e-6)
    assert all(a < b for a, b in zip(r['lr'], r['lr'][1:]))
    # a suggestion is a tenth of a swept rate; or, where the loss did not fall clearly (12 noisy batches), none and why
    assert r['suggestion'] in [lr / 10 for lr in r['lr']] if r['suggestion'] is not None else r['reason'].startswith(('no usable descent', 'the loss was lowest'))
    after = snapshot(model)
    assert all(np.array_equal(before[k], after[k]) for k in before), 'lr_find must leave the weights as they were'
    assert max(r['loss']) > 2 * min(r['loss']), 'a learning rate of 10 should blow the loss up'
    assert T.plot_lr_find(r).axes[0].get_xscale() == 'log'


def test_phase_2_runs_by_default_only_with_enough_images_per_class():
    assert T.auto_epochs_fine(np.repeat([0, 1], T.FINE_TUNE_MIN_PER_CLASS), 2) == 4
    assert T.auto_epochs_fine(np.r_[np.zeros(T.FINE_TUNE_MIN_PER_CLASS - 1), np.ones(1000)], 2) == 0
    assert T.auto_epochs_fine(np.repeat([0, 1], T.FINE_TUNE_MIN_PER_CLASS), 3) == 0 # a class without images
    train, val = digits(per_class=4)
    run = T.fine_tune(get_backbone('efficientnet_lite0', input_size=SIZE), train, val, cache=False, workers=1)
    assert run.history['phase'] == [1] and run.settings['epochs_fine'] == 0


class Killed(Exception): pass


# the exact head (one row; no optimizer state, so its resume does not depend on the backend: TensorFlow pass only), and a
# head trained by AdamW (its optimizer's variables saved and restored: both backends)
@pytest.mark.parametrize('epochs_head', [pytest.param(None, marks=pytest.mark.backend_free), 2])
def test_resume_between_the_phases(tmp_path, epochs_head):
    "Killed right after phase 1's last checkpoint, before any phase-2 epoch ends: the same call resumes into phase 2."
    train, val = digits()
    kw = dict(epochs_head=epochs_head, epochs_fine=2, run_dir=tmp_path / 'run', cache=False, batch_size=6, workers=1)
    head_rows = 1 if epochs_head is None else epochs_head
    def kill_after_phase_1(row):
        if row['phase'] == 1 and row['epoch'] == head_rows - 1: raise Killed
    with pytest.raises(Killed):
        T.fine_tune(get_backbone('efficientnet_lite0', input_size=SIZE), train, val, on_epoch=kill_after_phase_1, **kw)
    state, _ = T.read_checkpoint(tmp_path / 'run' / 'checkpoint.npz')
    assert state['phase'] == 1 and not state['finished']
    run = T.fine_tune(get_backbone('efficientnet_lite0', input_size=SIZE), train, val, **kw)
    assert run.resumed_from == head_rows - 1
    assert run.history['phase'] == [1] * head_rows + [2, 2]
    assert all(run.history[c][:head_rows] == state['history'][c] for c in state['history']), 'phase 1 was run again'
    assert json.loads((tmp_path / 'run' / 'metrics.json').read_text())['epochs'] == head_rows + 2


def test_lr_find_says_when_nothing_falls():
    "No suggestion where the loss never falls (rates far too small) nor where it is lowest at the sweep's start (the old finder suggested start / 10 there)."
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation='softmax')])
    (x, y), _ = digits(per_class=2)
    one_batch = T.ImageBatches(x, y, SIZE, len(y))
    flat = T.lr_find(model, one_batch, start=1e-12, end=1e-10, steps=8)
    assert flat['suggestion'] is None and flat['reason'].startswith('no usable descent')
    assert flat['lr'][0] == 1e-12 and len(flat['lr']) == 8
    assert T.plot_lr_find(flat).axes[0].get_title().startswith('no usable descent')


@pytest.mark.backend_free # tqdm's bars around Keras's callbacks: the same on every backend
def test_progress_shows_a_bar_per_epoch(capsys):
    "progress=True: tqdm's bar per epoch, its batches and loss (a widget in Jupyter, stderr in a terminal)."
    train, val = digits()
    T.fine_tune(get_backbone('efficientnet_lite0', input_size=SIZE), train, val, epochs_head=1, epochs_fine=1, cache=False,
                batch_size=8, workers=1, progress=True)
    err = capsys.readouterr().err
    steps = -(-len(train[1]) // 8) # phase 2's batches of images
    assert 'phase 1, epoch 1 of 1' in err and 'phase 2, epoch 2 of 2' in err, err[-3000:] # the run's epochs, both phases
    assert f'/{steps} [' in err.split('phase 2, epoch 2 of 2')[-1] and 'loss=' in err # a bar of phase 2's batches
