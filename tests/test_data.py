"Reading one image: every kind of file a user may have, and the evaluation crop, pixel-exact."
import io, os

import numpy as np
import pytest
from PIL import Image

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
