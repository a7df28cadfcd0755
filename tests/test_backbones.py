"Backbones: Lite0 on real photos, the registry, weights from cache / download / file, labels, preprocessing."
import dataclasses, time

import keras
import numpy as np
import pytest

from tl_course import backbones as B
from tl_course.backbones import (BACKBONES, WeightsUnavailable, backbone_spec, decode_predictions, efficientnet_lite0,
                                 get_backbone, imagenet_classes, list_backbones, predict_batches, preprocess_input)
from tl_course.data import bundled_photos, resize_center_crop
from tl_course.weights import load_torch_legacy, save_torch_legacy

CATS = [281, 282, 285]


@pytest.fixture(scope='session') # not 'module': under xdist another module's test in between tore it down, and it was built again
def lite0():
    return efficientnet_lite0()


@pytest.fixture(scope='session') # not 'module': under xdist another module's test in between tore it down, and it was built again
def photo_probs(lite0):
    photos = bundled_photos()
    batch = np.stack([resize_center_crop(photos[k]) for k in ('chelsea', 'coffee', 'rocket', 'motorcycle')])
    return dict(zip(['chelsea', 'coffee', 'rocket', 'motorcycle'], predict_batches(lite0, preprocess_input(batch, 'tf'))))


# --- EfficientNet-Lite0 with the offline ImageNet weights ---

def test_chelsea_is_a_cat(photo_probs):
    p = photo_probs['chelsea']
    assert p[CATS].sum() >= 0.85
    assert {x.index for x in decode_predictions(p, top=3)[0]} == set(CATS)


def test_coffee_is_espresso(photo_probs):
    top = decode_predictions(photo_probs['coffee'])[0]
    assert top[0].index == 967 and top[0].name == 'espresso' and top[0].prob > 0.9


def test_rocket_and_motorcycle(photo_probs):
    rocket = [p.name for p in decode_predictions(photo_probs['rocket'])[0]]
    assert rocket[:2] == ['missile', 'projectile'] and 'space_shuttle' in rocket
    moto = [p.index for p in decode_predictions(photo_probs['motorcycle'])[0]]
    assert moto[0] in (665, 670)  # moped, motor scooter


def test_probabilities_are_a_distribution(photo_probs):
    for p in photo_probs.values():
        assert p.shape == (1000,) and abs(p.sum() - 1) < 1e-4 and (p >= 0).all()


def test_compiled_call_matches_predict(lite0):
    x = preprocess_input(np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3)).astype(np.float32), 'tf')
    np.testing.assert_allclose(predict_batches(lite0, x, batch_size=2), lite0.predict(x, verbose=0), atol=1e-5)


def test_features_without_top_are_the_pooled_head(lite0):
    feats = efficientnet_lite0(include_top=False, pooling='avg')
    x = preprocess_input(resize_center_crop(bundled_photos()['coffee'])[None], 'tf')
    head = keras.Model(lite0.input, lite0.get_layer('avg_pool').output)
    np.testing.assert_allclose(predict_batches(feats, x), predict_batches(head, x), atol=1e-5)
    assert feats.output.shape == (None, 1280)


@pytest.mark.parametrize('size', [32, 97, 260])
def test_lite0_other_input_sizes(size):
    m = efficientnet_lite0(include_top=False, pooling='max', input_shape=(size, size, 3))
    out = predict_batches(m, np.zeros((1, size, size, 3), np.float32))
    assert out.shape == (1, 1280) and np.isfinite(out).all()


def test_lite0_spatial_features():
    m = efficientnet_lite0(weights=None, include_top=False, input_shape=(64, 64, 3))
    assert m.output.shape == (None, 2, 2, 1280)


@pytest.mark.parametrize('kwargs,match', [
    (dict(input_shape=(31, 64, 3)), 'at least 32'), (dict(input_shape=(64, 64, 1)), 'input_shape'),
    (dict(classes=10), 'classes'), (dict(include_top=False, pooling='mean'), 'pooling'),
    (dict(weights='no/such/file.pth'), 'no such file'), (dict(weights='imagenett'), 'Expected `weights`')])
def test_lite0_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        efficientnet_lite0(**kwargs)


def test_lite0_weights_from_files(tmp_path, lite0, lite0_path):
    "weights= a .pth checkpoint or a Keras .weights.h5 file gives the same network as 'imagenet'."
    x = np.random.default_rng(1).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    want = predict_batches(lite0, x)
    np.testing.assert_allclose(predict_batches(efficientnet_lite0(weights=str(lite0_path)), x), want, atol=1e-6)
    lite0.save_weights(tmp_path / 'lite0.weights.h5')
    np.testing.assert_allclose(predict_batches(efficientnet_lite0(weights=tmp_path / 'lite0.weights.h5'), x), want, atol=1e-6)
    assert np.abs(predict_batches(efficientnet_lite0(weights=None), x) - want).max() > 1e-3


def test_lite0_checkpoint_with_wrong_shapes(tmp_path, lite0_path):
    sd = load_torch_legacy(lite0_path)
    sd['_blocks.3._depthwise_conv.weight'] = sd['_blocks.3._depthwise_conv.weight'][:, :, :3, :3].copy()
    bad = save_torch_legacy(sd, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match='_blocks.3._depthwise_conv'):
        efficientnet_lite0(weights=bad)


def test_lite0_checkpoint_missing_a_tensor(tmp_path, lite0_path):
    sd = load_torch_legacy(lite0_path)
    del sd['_conv_head.weight']
    with pytest.raises(ValueError, match='_conv_head.weight'):
        efficientnet_lite0(weights=save_torch_legacy(sd, tmp_path / 'short.pth'))


@pytest.mark.parametrize('name', ['garbage.pth', 'garbage.weights.h5'])
def test_unreadable_weights_name_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b'this is not a weights file' * 10)
    with pytest.raises(ValueError) as e:
        efficientnet_lite0(weights=path)
    assert name in str(e.value)


@pytest.mark.backend_free # the reader's error message: the TensorFlow pass checks it
def test_keras_backbone_with_unreadable_weights(tmp_path):
    path = tmp_path / 'resnet.h5'
    path.write_bytes(b'\x89HDF\r\n\x1a\n' + b'\x00' * 50)  # an HDF5 signature and nothing else
    with pytest.raises(ValueError, match='resnet.h5: cannot load these weights into resnet50'):
        get_backbone('resnet50', weights=str(path))


# --- the registry ---

def test_registry_lists_the_required_backbones():
    assert {'vgg16', 'resnet50', 'inception_v3', 'mobilenet_v2', 'efficientnet_b0', 'convnext_tiny',
            'efficientnet_lite0'} <= set(list_backbones())


# EfficientNetB0, InceptionV3 and ConvNeXt-Tiny are Keras's own applications, which Keras tests on JAX, and the slowest to
# compile on the JAX CPU (20-30 s each): the TensorFlow pass builds them; the JAX pass builds the rest, ours among them
SLOW_KERAS_OWN = ('efficientnet_b0', 'inception_v3', 'convnext_tiny')
@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.backend_free) if n in SLOW_KERAS_OWN else n for n in BACKBONES])
def test_every_entry_builds_and_states_true_facts(name):
    spec = backbone_spec(name)
    bb = get_backbone(name, weights=None)
    assert bb.input_size == spec.default_size
    assert bb.model.input.shape == (None, spec.default_size, spec.default_size, 3)
    assert bb.model.output.shape == (None, spec.feature_size)
    names = [l.name for l in bb.model.layers]
    assert spec.cut_layer in names
    after = bb.model.layers[names.index(spec.cut_layer) + 1:]
    size = lambda ws: sum(int(np.prod(w.shape)) for w in ws)
    share = size([w for l in after for w in l.trainable_weights]) / size(bb.model.trainable_weights)
    assert 0.1 < share < 0.9, f'{name}: {share:.2f} of the weights lie after the cut'
    x = np.random.default_rng(0).integers(0, 256, (2, spec.default_size, spec.default_size, 3)).astype(np.float32)
    feats = predict_batches(bb.model, bb.preprocess(x))
    assert feats.shape == (2, spec.feature_size) and np.isfinite(feats).all()


@pytest.mark.backend_free # shape arithmetic of the architecture: the TensorFlow pass builds each at its minimum
@pytest.mark.parametrize('name', list(BACKBONES))
def test_minimum_size(name):
    spec = backbone_spec(name)
    assert get_backbone(name, weights=None, input_size=spec.min_size).model.input.shape[1] == spec.min_size
    with pytest.raises(ValueError, match=f'at least {spec.min_size}'):
        get_backbone(name, weights=None, input_size=spec.min_size - 1)


def test_get_backbone_errors():
    with pytest.raises(ValueError, match="Unknown backbone 'vgg61'.*vgg16"):
        get_backbone('vgg61')
    with pytest.raises(ValueError, match='takes 224-pixel inputs'):
        get_backbone('vgg16', weights=None, include_top=True, input_size=160)
    with pytest.raises(ValueError, match='Expected `weights`'):
        get_backbone('resnet50', weights='nowhere.h5')


def offline_spec(name, port):
    "The registry entry `name` with its weights served from a port where nothing listens."
    return dataclasses.replace(backbone_spec(name), weights_files=B._files(f'http://127.0.0.1:{port}/', 't.h5', 'nt.h5'))


def test_offline_keras_weights_fail_fast_with_instructions(monkeypatch, tmp_path, closed_port):
    monkeypatch.setenv('KERAS_HOME', str(tmp_path / 'keras'))
    monkeypatch.setitem(BACKBONES, 'vgg16', offline_spec('vgg16', closed_port))
    t0 = time.time()
    with pytest.raises(WeightsUnavailable) as e:
        get_backbone('vgg16')
    assert time.time() - t0 < 10
    msg = str(e.value)
    assert 'nt.h5' in msg and str(tmp_path / 'keras' / 'models' / 'nt.h5') in msg and 'weights=None' in msg


@pytest.mark.backend_free # download, checksum and cache; loading weights on JAX is checked by the Lite tests
def test_keras_weights_downloaded_verified_and_cached(monkeypatch, tmp_path, http_server):
    "The real download path: a weights file served on 127.0.0.1 is fetched, checked, cached and loaded."
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    from tl_course.download import file_hash
    base, root, requests = http_server
    source = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3), pooling='avg')
    fname = 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5'
    with h5py.File(root / fname, 'w') as f: legacy_h5_format.save_weights_to_hdf5_group(f, source)
    files = lambda include_top, size: (fname, f'{base}/{fname}', file_hash(root / fname))
    monkeypatch.setitem(BACKBONES, 'mobilenet_v2', dataclasses.replace(backbone_spec('mobilenet_v2'), weights_files=files))
    monkeypatch.setenv('KERAS_HOME', str(tmp_path / 'keras'))
    bb = get_backbone('mobilenet_v2', input_size=96)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    np.testing.assert_allclose(predict_batches(bb.model, x), predict_batches(source, x), atol=1e-5)
    assert (tmp_path / 'keras' / 'models' / fname).is_file() and requests == [f'/{fname}']
    get_backbone('mobilenet_v2', input_size=96)  # second time: from the cache
    assert requests == [f'/{fname}']


def test_keras_backbone_from_a_weights_file(tmp_path):
    a = get_backbone('mobilenet_v2', weights=None, input_size=96)
    a.model.save_weights(tmp_path / 'mine.weights.h5')
    b = get_backbone('mobilenet_v2', weights=str(tmp_path / 'mine.weights.h5'), input_size=96)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    np.testing.assert_allclose(predict_batches(b.model, x), predict_batches(a.model, x), atol=1e-6)


def test_weights_file_names_follow_keras():
    f = lambda n, top: backbone_spec(n).weights_files(top, backbone_spec(n).default_size)[0]
    assert f('vgg16', False) == 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
    assert f('efficientnet_b0', True) == 'efficientnetb0.h5'
    assert f('convnext_tiny', False) == 'convnext_tiny_notop.h5'
    assert backbone_spec('mobilenet_v2').weights_files(False, 160)[0].endswith('_1.0_160_no_top.h5')
    assert backbone_spec('mobilenet_v2').weights_files(True, 300)[0].endswith('_1.0_224.h5')


# --- labels and decoding ---

def test_imagenet_classes():
    c = imagenet_classes()
    assert len(c) == 1000 and [x.index for x in c] == list(range(1000))
    wnids = [x.wnid for x in c]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000
    assert (c[0].name, c[309].name, c[310].name, c[999].name) == ('tench', 'bee', 'ant', 'toilet_tissue')


def test_decode_predictions():
    p = np.zeros((2, 1000)); p[0, [5, 7, 9]] = [0.2, 0.5, 0.3]; p[1, 999] = 1
    d = decode_predictions(p, top=3)
    assert [x.index for x in d[0]] == [7, 9, 5] and d[1][0].name == 'toilet_tissue' and d[1][0].prob == 1
    assert len(decode_predictions(p[0])) == 1 and len(decode_predictions(p[0])[0]) == 5
    with pytest.raises(ValueError, match=r'\(N, 1000\).*\(2, 10\)'):
        decode_predictions(np.zeros((2, 10)))
    with pytest.raises(ValueError, match='top'):
        decode_predictions(p, top=0)


# --- preprocessing ---

@pytest.mark.parametrize('mode,module', [('tf', 'mobilenet_v2'), ('caffe', 'vgg16'), ('torch', 'densenet')])
def test_preprocessing_matches_keras(mode, module):
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    ref = getattr(keras.applications, module).preprocess_input(x.copy())
    np.testing.assert_allclose(preprocess_input(x, mode), keras.ops.convert_to_numpy(ref), atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(preprocess_input(keras.ops.convert_to_tensor(x), mode)),
                               keras.ops.convert_to_numpy(ref), atol=1e-4)


def test_preprocessing_of_uint8_and_unknown_mode():
    x = np.full((1, 2, 2, 3), 255, np.uint8)
    np.testing.assert_allclose(preprocess_input(x, 'tf'), 1.0)
    np.testing.assert_array_equal(preprocess_input(x, 'none'), 255.0)
    with pytest.raises(ValueError, match="mode='rgb'"):
        preprocess_input(x, 'rgb')


# --- Lite1 and Lite2: the same blocks scaled, their own offline checkpoints ---

# Lite2 on the TensorFlow pass only: the same code as Lite1 at another scale, which the JAX pass checks
@pytest.mark.parametrize('variant, side, widest', [(1, 240, 320), pytest.param(2, 260, 352, marks=pytest.mark.backend_free)])
def test_larger_lites_read_their_checkpoints_and_see_the_photos(variant, side, widest):
    m = B.efficientnet_lite(variant)
    assert m.input.shape[1] == side and m.name == f'efficientnet_lite{variant}'
    assert m.get_layer('block20_project_conv').kernel.shape[-1] == widest and 'block21_dwconv' not in [l.name for l in m.layers]
    photos = bundled_photos()
    batch = np.stack([resize_center_crop(photos[k], side) for k in ('chelsea', 'coffee')])
    p = predict_batches(m, preprocess_input(batch, 'tf'))
    assert p[0, CATS].sum() > 0.75 and p[1].argmax() == 967 # the cat is a cat, the coffee an espresso


def test_a_lite_checkpoint_refuses_another_variant(tmp_path):
    with pytest.raises(ValueError, match=r'efficientnet-lite2-9656183e.pth: .* has shapes'):
        B.efficientnet_lite(1, weights=B.lite_checkpoint(2))
    with pytest.raises(ValueError, match=r'efficientnet-lite0-57934424.pth: _blocks.3._depthwise_conv has shapes'):
        B.efficientnet_lite(2, weights=B.lite_checkpoint(0)) # Lite2's stage 2 has three blocks of 3x3, Lite0's two
    sd = load_torch_legacy(B.lite_checkpoint(1))
    for k in [k for k in sd if k.startswith('_blocks.20.')]: del sd[k] # a Lite1 checkpoint without its last block
    with pytest.raises(ValueError, match=r"short.pth: tensor '_blocks.20.* is missing: not a checkpoint of efficientnet_lite1"):
        B.efficientnet_lite(1, weights=save_torch_legacy(sd, tmp_path / 'short.pth'))
    with pytest.raises(ValueError, match='variant in'):
        B.efficientnet_lite(3, weights=None)
