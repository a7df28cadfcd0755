"Reading one image: every kind of file a user may have, and the evaluation crop, pixel-exact."
import io, os, zlib

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tl_course.data import ImageError, bundled_photos, load_image, resize_center_crop

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)


def save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_png_exact(tmp_path):
    got = load_image(save(Image.fromarray(PHOTO), tmp_path / 'a.png'))
    assert got.dtype == np.uint8 and got.shape == (30, 40, 3)
    np.testing.assert_array_equal(got, PHOTO)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    grey = PHOTO[..., 0]
    got = load_image(save(Image.fromarray(grey), tmp_path / 'g.png'))
    assert got.shape == (30, 40, 3)
    for c in range(3): np.testing.assert_array_equal(got[..., c], grey)


def test_palette_png(tmp_path):
    im = Image.fromarray(PHOTO).quantize(16)
    got = load_image(save(im, tmp_path / 'p.png'))
    np.testing.assert_array_equal(got, np.asarray(im.convert('RGB')))


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2] = 200
    rgba[:2, :, 3] = 255     # top half opaque blue
    rgba[2:, :, 3] = 0       # bottom half transparent (blue underneath, to be ignored)
    got = load_image(save(Image.fromarray(rgba, 'RGBA'), tmp_path / 'a.png'))
    np.testing.assert_array_equal(got[0, 0], [0, 0, 200])
    np.testing.assert_array_equal(got[3, 0], [255, 255, 255])


def test_palette_with_transparency(tmp_path):
    im = Image.new('P', (4, 4), 1)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.info['transparency'] = 0
    im.putpixel((0, 0), 0)
    path = save(im, tmp_path / 't.png', transparency=0)
    got = load_image(path)
    np.testing.assert_array_equal(got[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(got[1, 1], [10, 200, 30])


def test_16_bit_png_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257, 65535, 32896]], np.uint16)
    got = load_image(save(Image.fromarray(arr), tmp_path / 'd.png'))
    np.testing.assert_array_equal(got[0, :, 0], [0, 1, 255, 128])


def test_cmyk_jpeg(tmp_path):
    im = Image.new('CMYK', (8, 8), (0, 255, 255, 0))  # red in CMYK
    got = load_image(save(im, tmp_path / 'c.jpg', quality=95))
    assert got.shape == (8, 8, 3)
    assert got[..., 0].mean() > 200 and got[..., 1].mean() < 60 and got[..., 2].mean() < 60


def test_exif_orientation_respected(tmp_path):
    im = Image.fromarray(PHOTO)  # 40 wide, 30 high
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    got = load_image(save(im, tmp_path / 'r.jpg', exif=exif, quality=95))
    assert got.shape == (40, 30, 3)


@pytest.mark.parametrize('name,content', [('empty.jpg', b''), ('notes.txt', b'hello'), ('.DS_Store', b'\x00\x00\x00\x01Bud1'),
                                          ('fake.png', b'\x89PNG\r\n\x1a\n' + b'\x00' * 20)])
def test_not_an_image(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=f'{name}: not a readable image'):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    full = save(Image.fromarray(RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8)), tmp_path / 'f.jpg')
    cut = tmp_path / 'cut.jpg'
    cut.write_bytes(full.read_bytes()[:3000])
    with pytest.raises(ImageError, match='cut.jpg'):
        load_image(cut)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match='nope.jpg: no such file'):
        load_image(tmp_path / 'nope.jpg')
    with pytest.raises(ImageError, match='is a folder'):
        load_image(tmp_path)


def test_decompression_bomb_refused(tmp_path):
    path = save(Image.new('L', (8000, 8000)), tmp_path / 'bomb.png')  # 64 Mpx, a few kB on disk
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ImageError, match='bomb.png: 8000x8000 pixels is over the limit'):
        load_image(path)
    assert load_image(path, max_pixels=10**8).shape == (8000, 8000, 3)


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads files whatever their permissions')
def test_unreadable_file(tmp_path):
    path = save(Image.fromarray(PHOTO), tmp_path / 'locked.png')
    path.chmod(0)
    with pytest.raises(ImageError, match='locked.png: permission denied'):
        load_image(path)


def test_center_crop_is_exact_when_no_resize_is_needed():
    img = RNG.integers(0, 256, (256, 300, 3), dtype=np.uint8)  # short side already 256
    got = resize_center_crop(img, 224)
    np.testing.assert_array_equal(got, img[16:240, 38:262])


def test_center_crop_keeps_the_centre():
    img = np.zeros((300, 600, 3), np.uint8)
    img[:, :150] = [255, 0, 0]   # left quarter red
    img[:, 450:] = [255, 0, 0]   # right quarter red
    img[:, 150:450] = [0, 255, 0]
    got = resize_center_crop(img, 224)
    assert got.shape == (224, 224, 3)
    assert (got[..., 0] == 0).all() and (got[..., 1] == 255).all()


@pytest.mark.parametrize('shape', [(5, 7, 3), (1000, 20, 3), (224, 224, 3)])
def test_center_crop_any_shape(shape):
    assert resize_center_crop(np.zeros(shape, np.uint8), 224).shape == (224, 224, 3)


def test_bundled_photos():
    photos = bundled_photos()
    assert set(photos) == {'chelsea', 'coffee', 'rocket', 'astronaut', 'motorcycle'}
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 and min(p.shape[:2]) >= 256 for p in photos.values())


# --- folders: layouts, splits, bad files, inspect ---

from pathlib import Path
import json, subprocess, sys

from tl_course.data import check_image, inspect, load_image_folder

SHARED = Path(__file__).resolve().parents[2] / 'shared' / 'data'


def noise(h=40, w=48, mode='RGB', seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == 'RGB' else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), 'RGB' if mode == 'RGB' else 'L')


def make_folder(root, layout):
    "layout: {'train/ants': 5, ...} -> that many noise JPEGs in each folder."
    for sub, n in layout.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n): noise(seed=zlib.crc32(repr((sub, i)).encode())).save(root / sub / f'{i}.jpg', quality=90)
    return root


def test_class_layout_with_stratified_seeded_split(tmp_path):
    root = make_folder(tmp_path / 'd', {'a': 20, 'b': 10, 'c': 3})
    f = load_image_folder(root, val_split=0.3, seed=1)
    assert f.classes == ['a', 'b', 'c'] and set(f.splits) == {'train', 'val'}
    assert np.bincount(f.labels('val')).tolist() == [6, 3, 1]
    assert np.bincount(f.labels('train')).tolist() == [14, 7, 2]
    assert not set(f.files('train')) & set(f.files('val'))
    assert load_image_folder(root, val_split=0.3, seed=1).files('val') == f.files('val')
    assert load_image_folder(root, val_split=0.3, seed=2).files('val') != f.files('val')
    assert load_image_folder(root).splits.keys() == {'train'}


def test_split_layout_and_split_names(tmp_path):
    root = make_folder(tmp_path / 'd', {'train/x': 3, 'train/y': 3, 'validation/x': 2, 'validation/y': 1, 'test/y': 2})
    f = load_image_folder(root)
    assert set(f.splits) == {'train', 'val', 'test'} and f.classes == ['x', 'y']
    assert f.labels('test').tolist() == [1, 1]  # a class missing from a split keeps its label
    with pytest.raises(ValueError, match='val split already'):
        load_image_folder(root, val_split=0.2)


def test_two_folders_for_one_split(tmp_path):
    root = make_folder(tmp_path / 'd', {'train/x': 2, 'val/x': 2, 'validation/x': 2})
    with pytest.raises(ValueError, match='name the val split'):
        load_image_folder(root)


def test_class_in_val_missing_from_train(tmp_path):
    root = make_folder(tmp_path / 'd', {'train/ants': 2, 'val/ants': 2, 'val/wasps': 2})
    with pytest.raises(ValueError, match=r"\['wasps'\] are missing from .*train"):
        load_image_folder(root)


def test_empty_class_folder(tmp_path):
    root = make_folder(tmp_path / 'd', {'ants': 3})
    (root / 'bees').mkdir()
    with pytest.raises(ValueError, match='bees: an empty class folder'):
        load_image_folder(root)
    (root / 'bees' / 'notes.txt').write_text('only a bad file')
    with pytest.raises(ValueError, match='bees: an empty class folder'):
        load_image_folder(root)


def test_no_class_folders_and_missing_root(tmp_path):
    (tmp_path / 'flat').mkdir()
    noise().save(tmp_path / 'flat' / 'a.jpg')
    with pytest.raises(ValueError, match='no class folders'):
        load_image_folder(tmp_path / 'flat')
    with pytest.raises(ValueError, match='no such folder'):
        load_image_folder(tmp_path / 'nope')


def placeholder():
    from PIL import ImageDraw
    im = Image.new('RGB', (300, 300), 'white')
    ImageDraw.Draw(im).text((60, 140), "WE'RE SORRY, THIS IMAGE COULD NOT BE FOUND", fill='gray')
    return im.convert('P')


BAD_CASES = {  # file name -> (how to write it, the reason's start)
    'truncated.jpg': (lambda p, good: p.write_bytes(good.read_bytes()[:400]), 'cannot be decoded'),
    'zero.jpg': (lambda p, good: p.write_bytes(b''), 'empty file'),
    'notes.txt': (lambda p, good: p.write_text('hello'), 'not an image file'),
    '.DS_Store': (lambda p, good: p.write_bytes(b'\x00\x00\x00\x01Bud1'), 'not an image file'),
    'imageNotFound.gif': (lambda p, good: placeholder().save(p), 'not a photo'),
    'tiny.png': (lambda p, good: noise(5, 30).save(p), 'too small (30x5)'),
    'blank.png': (lambda p, good: Image.new('RGB', (64, 64), 'black').save(p), 'not a photo'),
    'bomb.png': (lambda p, good: Image.new('L', (8000, 8000)).save(p), 'over the limit'),
    'fake.png': (lambda p, good: p.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40), 'cannot be decoded'),
}


@pytest.mark.parametrize('name', BAD_CASES)
def test_each_bad_file_is_reported_and_skipped(tmp_path, name):
    root = make_folder(tmp_path / 'd', {'ants': 3, 'bees': 3})
    write, reason = BAD_CASES[name]
    write(root / 'ants' / name, root / 'ants' / '0.jpg')
    f = load_image_folder(root)
    assert [(p.name, reason in r) for p, r in f.bad] == [(name, True)], f.bad
    assert len(f.files()) == 6 and root / 'ants' / name not in f.files()
    with pytest.raises(ValueError, match=name.replace('.', r'\.')):
        load_image_folder(root, strict=True)


GOOD_CASES = {
    'grey.png': lambda p: noise(mode='L').save(p),
    'palette.png': lambda p: noise().quantize(256).save(p),
    'rgba.png': lambda p: noise().convert('RGBA').save(p),
    'cmyk.jpg': lambda p: noise().convert('CMYK').save(p, quality=95),
    'sixteen.png': lambda p: Image.fromarray((np.asarray(noise(mode='L'), np.uint16) * 257)).save(p),
    'rotated.jpg': lambda p: noise().save(p, exif=_exif_rotated()),
    'photo.webp': lambda p: noise().save(p),
}


def _exif_rotated():
    e = Image.Exif()
    e[0x0112] = 6
    return e


@pytest.mark.parametrize('name', GOOD_CASES)
def test_unusual_but_good_images_are_kept_and_read_as_rgb(tmp_path, name):
    root = make_folder(tmp_path / 'd', {'a': 2, 'b': 2})
    GOOD_CASES[name](root / 'a' / name)
    f = load_image_folder(root)
    assert f.bad == [] and root / 'a' / name in f.files()
    img = load_image(root / 'a' / name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads files whatever their permissions')
def test_unreadable_file_in_a_folder(tmp_path):
    root = make_folder(tmp_path / 'd', {'a': 2, 'b': 2})
    (root / 'a' / '0.jpg').chmod(0)
    assert load_image_folder(root).bad == [(root / 'a' / '0.jpg', 'permission denied')]


def test_inspect_counts_sizes_and_leakage(tmp_path):
    root = make_folder(tmp_path / 'd', {'train/a': 3, 'train/b': 2, 'val/a': 1, 'val/b': 1})
    (root / 'val' / 'b' / 'copy.jpg').write_bytes((root / 'train' / 'a' / '1.jpg').read_bytes())
    BAD_CASES['truncated.jpg'][0](root / 'train' / 'b' / 'cut.jpg', root / 'train' / 'b' / '0.jpg')
    r = inspect(root)
    assert r['splits'] == {'train': 5, 'val': 3}
    assert r['counts'] == {'train': {'a': 3, 'b': 2}, 'val': {'a': 1, 'b': 2}}
    assert r['image_width'] == {'min': 48, 'median': 48.0, 'max': 48}
    assert r['duplicates_across_splits'] == [['train/a/1.jpg', 'val/b/copy.jpg']]
    assert [b['file'] for b in r['bad']] == ['train/b/cut.jpg']
    json.dumps(r)  # serialisable as it is


def test_check_image_accepts_a_real_photo(tmp_path):
    from skimage import data
    Image.fromarray(data.astronaut()).save(tmp_path / 'a.jpg')
    assert check_image(tmp_path / 'a.jpg') == ''


@pytest.mark.skipif(not SHARED.is_dir(), reason='../shared/data is not here')
def test_hymenoptera_as_documented():
    r = inspect(SHARED / 'hymenoptera_data')
    assert r['splits'] == {'train': 244, 'val': 153} and r['classes'] == ['ants', 'bees']
    assert [b['file'] for b in r['bad']] == ['train/ants/imageNotFound.gif']


@pytest.mark.skipif(not SHARED.is_dir(), reason='../shared/data is not here')
def test_cifar10_subset_as_documented():
    f = load_image_folder(SHARED / 'cifar10_subset')
    assert len(f.classes) == 10 and {s: len(v[0]) for s, v in f.splits.items()} == {'train': 5000, 'test': 10000}
    assert f.bad == [] and np.bincount(f.labels('train')).tolist() == [500] * 10


@pytest.mark.skipif(not SHARED.is_dir(), reason='../shared/data is not here')
def test_cli_inspect_json_on_hymenoptera():
    r = subprocess.run([sys.executable, '-c', 'import sys; from tl_course.cli import main; sys.exit(main())', 'inspect',
                        str(SHARED / 'hymenoptera_data'), '--json'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out['splits'] == {'train': 244, 'val': 153} and len(out['bad']) == 1
    assert 'tensorflow' not in r.stderr.lower()


def test_cli_inspect_bad_folder_exit_2(tmp_path):
    r = subprocess.run([sys.executable, '-c', 'import sys; from tl_course.cli import main; sys.exit(main())', 'inspect',
                        str(tmp_path / 'nope')], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'nope: no such folder' in r.stderr


# --- augmentation and pipelines ---

from tl_course.data import (augment, image_batches, random_resized_crop, random_rotate, resize_short_side, tf_dataset,
                            translate)


@pytest.fixture(scope='module')
def small_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('pipe')
    for c, n in (('a', 5), ('b', 4)):
        (root / c).mkdir()
        for i in range(n): noise(50 + 7 * i, 60, seed=10 * i + len(c) + ord(c)).save(root / c / f'{i}.png')
    return load_image_folder(root)


def test_augment_shapes_and_determinism():
    base = resize_short_side(np.asarray(noise(300, 400)), 256)
    assert base.shape == (256, 341, 3)
    a = augment(base, 224, np.random.default_rng(5))
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, augment(base, 224, np.random.default_rng(5)))
    assert not np.array_equal(a, augment(base, 224, np.random.default_rng(6)))


def halves(h=64, w=64):
    "Left half black, right half white."
    img = np.zeros((h, w, 3), np.uint8); img[:, w // 2:] = 255
    return img


def test_augment_crop_scale_sets_how_much_of_the_image_a_crop_keeps():
    # a crop of at least 90 % of the area always spans the middle, so both halves show; 5 % crops mostly show one
    def two_tone(img): return (img < 64).any() and (img > 192).any()
    wide = [augment(halves(), 96, np.random.default_rng(s), flip=False, crop_scale=(0.9, 1.0)) for s in range(30)]
    tight = [augment(halves(), 96, np.random.default_rng(s), flip=False, crop_scale=(0.05, 0.05)) for s in range(30)]
    assert all(two_tone(a) for a in wide)
    assert sum(two_tone(a) for a in tight) < 15
    np.testing.assert_array_equal(augment(halves(), 96, np.random.default_rng(1)),  # the default: a quarter to all of it
                                  augment(halves(), 96, np.random.default_rng(1), crop_scale=(0.25, 1.0)))


def test_random_resized_crop_on_extreme_aspect():
    out = random_resized_crop(np.zeros((10, 1000, 3), np.uint8), 32, np.random.default_rng(0))
    assert out.shape == (32, 32, 3)


@pytest.mark.parametrize('dx,dy', [(5, 0), (0, -4), (-3, 6)])
def test_translate_moves_content_exactly(dx, dy):
    img = np.asarray(noise(40, 50))
    out = translate(img, dx, dy)
    ys, xs = slice(10, 30), slice(10, 40)
    np.testing.assert_array_equal(out[ys, xs], img[10 - dy:30 - dy, 10 - dx:40 - dx])


def test_rotation_by_zero_is_identity():
    img = np.asarray(noise())
    np.testing.assert_array_equal(random_rotate(img, np.random.default_rng(0), max_degrees=0), img)


def test_image_batches_eval_is_the_centre_crop(small_folder):
    ds = image_batches(small_folder.files(), small_folder.labels(), size=32, batch_size=4)
    assert len(ds) == 3
    x, y = ds[2]
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32 and y.tolist() == [1]
    np.testing.assert_array_equal(x[0], resize_center_crop(load_image(small_folder.files()[-1]), 32))


def test_image_batches_training_seeded_and_varied(small_folder):
    make = lambda seed: image_batches(small_folder.files(), small_folder.labels(), 32, 4, training=True, seed=seed)
    a = make(0)
    first = a[0]
    np.testing.assert_array_equal(first[0], make(0)[0][0])
    assert not np.array_equal(first[0], make(1)[0][0])
    a.on_epoch_end()
    assert not np.array_equal(first[0], a[0][0])
    labels = np.concatenate([a[i][1] for i in range(len(a))])
    assert sorted(labels.tolist()) == sorted(small_folder.labels().tolist())  # every image once per epoch


def test_one_pipeline_keeps_a_small_training_image_as_it_is_and_a_large_one_at_the_crop_base():
    from tl_course.data import base_image
    small, large = np.asarray(noise(40, 30)), np.asarray(noise(600, 400))
    np.testing.assert_array_equal(base_image(small, 224, training=True), small) # not enlarged, then resampled again
    assert base_image(large, 224, training=True).shape[:2] == (384, 256) # short side 224 / 0.875
    np.testing.assert_array_equal(base_image(small, 32), resize_center_crop(small, 32, 1.0)) # evaluation: the whole short side
    from tl_course.batches import ImageBatches
    a = image_batches([small, large], [0, 1], 32, 2, training=True, seed=5)[0][0]
    np.testing.assert_array_equal(a, ImageBatches([small, large], [0, 1], 32, 2, training=True, seed=5)[0][0].astype(np.float32))


def test_image_batches_with_worker_threads(small_folder):
    plain = image_batches(small_folder.files(), small_folder.labels(), 32, 4)
    threaded = image_batches(small_folder.files(), small_folder.labels(), 32, 4, workers=2)
    for i in range(len(plain)): np.testing.assert_array_equal(plain[i][0], threaded[i][0])


def test_image_batches_applies_the_backbone_preprocessing(small_folder):
    from tl_course.backbones import backbone_spec
    raw = image_batches(small_folder.files(), small_folder.labels(), 32, 4)[0][0]
    pre = image_batches(small_folder.files(), small_folder.labels(), 32, 4,
                        preprocess=backbone_spec('efficientnet_lite0').preprocess)[0][0]
    np.testing.assert_allclose(pre, raw / 127.5 - 1, atol=1e-6)


def test_backend_neutral_path_never_imports_tensorflow(small_folder):
    code = ('import sys; from tl_course.data import load_image_folder, image_batches; '
            'from tl_course.backbones import backbone_spec; '
            f'f = load_image_folder({str(small_folder.root)!r}); '
            'ds = image_batches(f.files(), f.labels(), 32, 4, training=True, preprocess=backbone_spec("efficientnet_lite0").preprocess); '
            'x, y = ds[0]; print(x.shape, "tensorflow" in sys.modules)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'KERAS_BACKEND': 'jax'})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == 'False' and '(4, 32, 32, 3)' in r.stdout


@pytest.mark.tf_only
def test_tf_dataset_matches_the_neutral_path_on_evaluation(small_folder):
    from tl_course.backbones import backbone_spec
    pre = backbone_spec('efficientnet_lite0').preprocess
    neutral = image_batches(small_folder.files(), small_folder.labels(), 32, 4, preprocess=pre)
    tfd = list(tf_dataset(small_folder.files(), small_folder.labels(), 32, 4, preprocess=pre))
    assert len(tfd) == len(neutral)
    for (x, y), i in zip(tfd, range(len(neutral))):
        np.testing.assert_array_equal(x.numpy(), neutral[i][0])
        np.testing.assert_array_equal(y.numpy(), neutral[i][1])


@pytest.mark.tf_only
def test_tf_dataset_training_seeded_and_reshuffled(small_folder):
    make = lambda: tf_dataset(small_folder.files(), small_folder.labels(), 32, 4, training=True, seed=3)
    ds = make()
    e1 = np.concatenate([x.numpy() for x, _ in ds])
    e2 = np.concatenate([x.numpy() for x, _ in ds])
    np.testing.assert_array_equal(e1, np.concatenate([x.numpy() for x, _ in make()]))
    assert e1.shape == (9, 32, 32, 3) and not np.array_equal(e1, e2)
    assert sorted(np.concatenate([y.numpy() for _, y in ds]).tolist()) == sorted(small_folder.labels().tolist())



@pytest.mark.tf_only
def test_tf_dataset_a_pass_left_early_still_counts_as_an_epoch(small_folder):
    "Epoch n of the data set is epoch n of `image_batches`, however much of the passes before it was read (or prefetched)."
    args = (small_folder.files(), small_folder.labels(), 32, 1) # nine batches: prefetching cannot finish a pass left after one
    ds, ib = tf_dataset(*args, training=True, seed=3), image_batches(*args, training=True, seed=3)
    for _ in ds.take(1): pass # epoch 0, left after its first batch
    ib.on_epoch_end()
    for (x, y), i in zip(ds, range(len(ib))): # epoch 1
        np.testing.assert_array_equal(x.numpy(), ib[i][0]); np.testing.assert_array_equal(y.numpy(), ib[i][1])

# --- data sets by name: offline sets, downloads against a server on 127.0.0.1 ---

import tarfile, zipfile
from tl_course import data as D
from tl_course.data import ArchiveSpec, extract_archive, get_dataset
from tl_course.download import DownloadError


def png_bytes(seed):
    buf = io.BytesIO()
    noise(seed=seed).save(buf, 'PNG')
    return buf.getvalue()


def mini_zip(path, top='mini', extra=None):
    with zipfile.ZipFile(path, 'w') as z:
        for split in ('train', 'val'):
            for c in ('a', 'b'):
                for i in range(2): z.writestr(f'{top}/{split}/{c}/{i}.png', png_bytes(zlib.crc32(repr((split, c, i)).encode()) % 1000))
        for name, data in (extra or {}).items(): z.writestr(name, data)
    return path


def cache_files(cache):
    return sorted(str(p.relative_to(cache)) for p in cache.rglob('*') if p.is_file()) if cache.exists() else []


@pytest.fixture
def serve_dataset(http_server, monkeypatch):
    "Register data set 'mini' served from the test server; returns (register, root, requests)."
    base, root, requests = http_server
    def register(fname, folder='mini', sha256=None, size='auto'):
        size = (root / fname).stat().st_size if size == 'auto' else size
        monkeypatch.setitem(D.DATASETS, 'mini', ArchiveSpec(f'{base}/{fname}', size, sha256, folder))
    return register, root, requests


def test_offline_sets():
    d, m = get_dataset('digits'), get_dataset('mnist5k')
    assert d.x.shape == (1797, 8, 8, 3) and d.x.dtype == np.uint8 and d.x.max() == 255
    assert m.x.shape == (5000, 28, 28, 3) and np.bincount(m.y).tolist() == [500] * 10 and m.classes[3] == '3'
    assert set(get_dataset('photos')) >= {'chelsea', 'coffee'}
    with pytest.raises(ValueError, match='Unknown data set'):
        get_dataset('imagenet')


def test_download_unpack_and_cache(serve_dataset, tmp_path):
    register, root, requests = serve_dataset
    from tl_course.download import file_hash
    mini_zip(root / 'mini.zip')
    register('mini.zip', sha256=file_hash(root / 'mini.zip'))
    cache = tmp_path / 'cache'
    folder = get_dataset('mini', cache_dir=cache, progress=False)
    f = load_image_folder(folder)
    assert {s: len(v[0]) for s, v in f.splits.items()} == {'train': 4, 'val': 4}
    assert get_dataset('mini', cache_dir=cache, progress=False) == folder and requests == ['/mini.zip']
    assert not [p for p in cache_files(cache) if '.part' in p]


def test_tar_gz_archives(serve_dataset, tmp_path):
    register, root, _ = serve_dataset
    with tarfile.open(root / 'mini.tgz', 'w:gz') as t:
        for c in ('x', 'y'):
            for i in range(2):
                data = png_bytes(i + ord(c))
                info = tarfile.TarInfo(f'flowers/{c}/{i}.png'); info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    register('mini.tgz', folder='flowers')
    f = load_image_folder(get_dataset('mini', cache_dir=tmp_path / 'c', progress=False))
    assert f.classes == ['x', 'y'] and len(f.files()) == 4


def test_corrupt_archive_leaves_nothing(serve_dataset, tmp_path):
    register, root, _ = serve_dataset
    data = bytearray(mini_zip(root / 'good.zip').read_bytes())
    i = data.index(b'\x89PNG') + 200
    data[i:i + 50] = b'\x00' * 50  # damage a member's bytes: the CRC no longer matches
    (root / 'mini.zip').write_bytes(bytes(data))
    register('mini.zip')
    cache = tmp_path / 'cache'
    with pytest.raises(ValueError, match='cannot be unpacked.*deleted'):
        get_dataset('mini', cache_dir=cache, progress=False)
    assert cache_files(cache) == [] and not [p for p in cache.rglob('*') if p.is_dir() and 'mini' in p.name]


def test_wrong_checksum_leaves_nothing(serve_dataset, tmp_path):
    register, root, _ = serve_dataset
    mini_zip(root / 'mini.zip')
    register('mini.zip', sha256='0' * 64)
    with pytest.raises(DownloadError, match='does not match'):
        get_dataset('mini', cache_dir=tmp_path / 'cache', progress=False)
    assert cache_files(tmp_path / 'cache') == []


def test_wrong_size_leaves_nothing(serve_dataset, tmp_path):
    register, root, _ = serve_dataset
    mini_zip(root / 'mini.zip')
    register('mini.zip', size=123)
    with pytest.raises(DownloadError, match='expected 123'):
        get_dataset('mini', cache_dir=tmp_path / 'cache', progress=False)
    assert cache_files(tmp_path / 'cache') == []


def test_archive_without_the_expected_folder(serve_dataset, tmp_path):
    register, root, _ = serve_dataset
    mini_zip(root / 'mini.zip', top='other')
    register('mini.zip')
    with pytest.raises(ValueError, match='no mini/ folder'):
        get_dataset('mini', cache_dir=tmp_path / 'cache', progress=False)
    assert cache_files(tmp_path / 'cache') == []


def test_path_traversal_refused(tmp_path):
    evil = mini_zip(tmp_path / 'evil.zip', extra={'../../escaped.txt': 'x'})
    with pytest.raises(ValueError, match='outside'):
        extract_archive(evil, tmp_path / 'out' / 'mini')
    assert not (tmp_path / 'escaped.txt').exists() and not (tmp_path / 'out' / 'mini').exists()
    assert not list((tmp_path / 'out').glob('mini.part-*'))


def test_registry_names_the_tutorial_archives():
    assert D.DATASETS['hymenoptera'].url.endswith('/tutorial/hymenoptera_data.zip')
    assert D.DATASETS['cats_vs_dogs'].size == 68_606_236 and D.DATASETS['tf_flowers'].size == 228_813_984
    assert D.DATASETS['hymenoptera'].size == 47_286_322


def test_permission_denied_is_reported_even_as_root(tmp_path, monkeypatch):
    "Root reads any file, so the denial is injected where the file is opened; the handling is what is tested."
    root = make_folder(tmp_path / 'd', {'a': 2, 'b': 2})
    locked = root / 'a' / '1.jpg'
    real_open = Image.open
    def guarded(fp, *a, **kw):
        if Path(fp) == locked: raise PermissionError(13, 'Permission denied', str(fp))
        return real_open(fp, *a, **kw)
    monkeypatch.setattr(Image, 'open', guarded)
    assert check_image(locked) == 'permission denied'
    with pytest.raises(ImageError, match='1.jpg: permission denied'):
        load_image(locked)
    f = load_image_folder(root)
    assert f.bad == [(locked, 'permission denied')] and locked not in f.files()


@pytest.mark.parametrize('shape', [(375, 500, 3), (130, 193, 3), (1984, 2592, 3), (32, 32, 3), (500, 260, 3)])
def test_center_crop_resamples_only_the_box_as_resize_all_then_crop_would(shape):
    # the reference: resize the whole image, then cut the central square out of it
    img = np.asarray(Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).filter(ImageFilter.GaussianBlur(2)))
    h, w = shape[:2]
    scale = 256 / min(h, w)
    nh, nw = max(224, round(h * scale)), max(224, round(w * scale))
    full = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC)).astype(int)
    top, left = (nh - 224) // 2, (nw - 224) // 2
    diff = np.abs(resize_center_crop(img, 224).astype(int) - full[top:top + 224, left:left + 224])
    assert diff.max() <= 2 and diff.mean() < 0.1, (diff.mean(), diff.max())  # off by one grey level, here and there


# --- derived data sets: CIFAR-10's binary archive and DTD's, served on 127.0.0.1 ---

import functools
from tl_course.datasets import CIFAR10_CLASSES, cifar10_subset, dtd10


def fake_cifar_archive(path, per_batch=2, seed=0):
    "CIFAR-10's binary layout: cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin, 3,073-byte records (label, then pixels per channel)."
    "Each image a left-right ramp (+0..31) over a colour: red 20 x batch (0-5), green 10 x position in the batch, blue 10 x label."
    with tarfile.open(path, 'w:gz') as t:
        for b, m in enumerate([f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']):
            labels = np.repeat(np.arange(10, dtype=np.uint8), per_batch)
            rgb = np.stack([np.full(len(labels), 20 * b), 10 * np.arange(len(labels)), 10 * labels], 1)
            planes = rgb[:, :, None, None] + np.arange(32)[None, None, None, :] + np.zeros((1, 1, 32, 1), int)
            recs = np.concatenate([labels[:, None], planes.reshape(len(labels), 3072).astype(np.uint8)], 1)
            info = tarfile.TarInfo(f'cifar-10-batches-bin/{m}'); info.size = recs.nbytes
            t.addfile(info, io.BytesIO(recs.tobytes()))
    return path


def test_cifar10_subset_downloaded_checked_and_derived(serve_dataset, tmp_path, monkeypatch):
    register, root, _ = serve_dataset
    from tl_course.download import file_hash
    fake_cifar_archive(root / 'cifar-10-binary.tar.gz', per_batch=2)
    base = root / 'cifar-10-binary.tar.gz'
    register('cifar-10-binary.tar.gz', folder='cifar10_subset', sha256=file_hash(base, 'md5'))
    mini = D.DATASETS['mini']
    monkeypatch.setitem(D.DATASETS, 'mini', ArchiveSpec(mini.url, mini.size, mini.checksum, 'cifar10_subset',
                                                       functools.partial(cifar10_subset, per_class=3)))
    folder = load_image_folder(get_dataset('mini', cache_dir=tmp_path / 'c', progress=False))
    assert folder.classes == sorted(CIFAR10_CLASSES)
    assert {s: len(v[0]) for s, v in folder.splits.items()} == {'train': 30, 'test': 20}
    # the first images of each class, in the archive's order: batch 1's two cats (positions 6, 7), then batch 2's first
    colour = lambda f: load_image(tmp_path / 'c' / 'cifar10_subset' / f).reshape(-1, 3).mean(0).round()
    for f, want in (('train/cat/0000.jpg', (0, 60, 30)), ('train/cat/0001.jpg', (0, 70, 30)),
                    ('train/cat/0002.jpg', (20, 60, 30)), ('test/truck/0001.jpg', (100, 190, 90))):
        assert np.abs(colour(f) - np.add(want, 15.5)).max() <= 3, (f, colour(f))
    assert not [p for p in cache_files(tmp_path / 'c') if '.part' in p]


def test_cifar_archive_with_wrong_checksum_or_layout_leaves_nothing(serve_dataset, tmp_path, monkeypatch):
    register, root, _ = serve_dataset
    mini_zip(root / 'mini.zip')
    register('mini.zip', folder='cifar10_subset')
    mini = D.DATASETS['mini']
    monkeypatch.setitem(D.DATASETS, 'mini', ArchiveSpec(mini.url, mini.size, None, 'cifar10_subset', cifar10_subset))
    with pytest.raises(ValueError, match="not CIFAR-10's binary archive"):
        get_dataset('mini', cache_dir=tmp_path / 'c', progress=False)
    assert cache_files(tmp_path / 'c') == []
    monkeypatch.setitem(D.DATASETS, 'mini', ArchiveSpec(mini.url, mini.size, '0' * 32, 'cifar10_subset', cifar10_subset))
    with pytest.raises(DownloadError, match='does not match'):
        get_dataset('mini', cache_dir=tmp_path / 'c', progress=False)
    assert cache_files(tmp_path / 'c') == []


def test_dtd10_derived_from_dtds_layout(tmp_path):
    with tarfile.open(tmp_path / 'dtd.tar.gz', 'w:gz') as t:
        for c in ('banded', 'zigzagged', 'blotchy'):
            for i in range(10):
                buf = io.BytesIO(); noise(60, 80, seed=i).save(buf, 'JPEG'); data = buf.getvalue()
                info = tarfile.TarInfo(f'dtd/images/{c}/{c}_{i:04d}.jpg'); info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    folder = load_image_folder(dtd10(tmp_path / 'dtd.tar.gz', tmp_path / 'dtd10', n_classes=2, short=32))
    assert folder.classes == ['banded', 'blotchy']  # the first two, alphabetically
    assert {s: len(v[0]) for s, v in folder.splits.items()} == {'train': 8, 'test': 2}  # every 2nd of 10: 5, the 5th to test
    assert min(load_image(folder.files('test')[0]).shape[:2]) == 32


def test_local_copy_first_then_one_line_when_missing(tmp_path, monkeypatch, capsys, closed_port):
    (tmp_path / 'hymenoptera_data' / 'train' / 'ants').mkdir(parents=True)
    monkeypatch.setenv('TL_COURSE_DATA', str(tmp_path))
    assert get_dataset('hymenoptera') == tmp_path / 'hymenoptera_data'  # found, nothing fetched
    monkeypatch.setitem(D.DATASETS, 'dtd10', ArchiveSpec(f'http://127.0.0.1:{closed_port}/dtd.tar.gz', folder='dtd10'))
    assert get_dataset('dtd10', missing='skip', progress=False) is None
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and 'dtd10: not found and not downloaded' in out and 'TL_COURSE_DATA' in out
    with pytest.raises(DownloadError, match='no public download'):
        get_dataset('aid10')
    with pytest.raises(ValueError, match="Expected missing to be 'raise', 'skip' or 'stop'"):
        get_dataset('aid10', missing='ignore')
    assert get_dataset('dtd10', missing='stop', progress=False) is None # outside IPython: one line, None, nothing skipped
    assert 'The cells below are skipped' in capsys.readouterr().out


def test_a_class_of_one_image_cannot_be_split_and_the_error_says_where(tmp_path):
    root = make_folder(tmp_path / 'd', {'a': 6, 'lonely': 1})
    with pytest.raises(ValueError, match=r"d: class 'lonely' has a single image"):
        load_image_folder(root, val_split=0.3)
