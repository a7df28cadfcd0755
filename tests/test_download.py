"Downloads against a real HTTP server on 127.0.0.1: verified, atomic, cached, failing clearly."
import hashlib, time

import pytest

from tl_course.download import DownloadError, download_file, file_hash


def served(root, name, data):
    (root / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_caches(http_server, tmp_path):
    base, root, requests = http_server
    data = bytes(range(256)) * 4000
    sha, md5 = served(root, 'w.h5', data)
    dest = tmp_path / 'cache' / 'w.h5'
    assert download_file(f'{base}/w.h5', dest, checksum=sha, progress=False) == dest
    assert dest.read_bytes() == data
    assert requests == ['/w.h5']
    download_file(f'{base}/w.h5', dest, checksum=md5, progress=False)  # cached: MD5 accepted too, no request
    assert requests == ['/w.h5']
    assert leftovers(dest.parent) == ['w.h5']


def test_cached_file_with_wrong_content_is_fetched_again(http_server, tmp_path):
    base, root, requests = http_server
    sha, _ = served(root, 'w.h5', b'right content')
    dest = tmp_path / 'w.h5'
    dest.write_bytes(b'stale or damaged')
    download_file(f'{base}/w.h5', dest, checksum=sha, progress=False)
    assert dest.read_bytes() == b'right content' and requests == ['/w.h5']


def test_wrong_checksum_leaves_nothing(http_server, tmp_path):
    base, root, _ = http_server
    served(root, 'w.h5', b'some bytes')
    cache = tmp_path / 'cache'
    with pytest.raises(DownloadError, match='does not match'):
        download_file(f'{base}/w.h5', cache / 'w.h5', checksum='0' * 64, progress=False)
    assert leftovers(cache) == []


def test_not_found(http_server, tmp_path):
    base, _, _ = http_server
    dest = tmp_path / 'dl' / 'missing.zip'
    with pytest.raises(DownloadError, match='HTTP 404') as e:
        download_file(f'{base}/missing.zip', dest, progress=False)
    assert f'{base}/missing.zip' in str(e.value) and str(dest) in str(e.value)
    assert leftovers(dest.parent) == []


def test_connection_cut_short_leaves_nothing(http_server, tmp_path):
    base, _, _ = http_server
    with pytest.raises(DownloadError, match='closed after 400 of 1000 bytes|IncompleteRead'):
        download_file(f'{base}/cut/400', tmp_path / 'dl' / 'cut.bin', progress=False)
    assert leftovers(tmp_path / 'dl') == []


def test_nothing_listening_fails_fast(closed_port, tmp_path):
    t0 = time.time()
    with pytest.raises(DownloadError, match='save it as'):
        download_file(f'http://127.0.0.1:{closed_port}/x.h5', tmp_path / 'x.h5', timeout=5, progress=False)
    assert time.time() - t0 < 5
    assert leftovers(tmp_path) == []


def test_progress_goes_to_stderr(http_server, tmp_path, capsys):
    base, root, _ = http_server
    served(root, 'p.bin', b'x' * 300_000)
    download_file(f'{base}/p.bin', tmp_path / 'p.bin')
    out, err = capsys.readouterr()
    assert out == '' and 'Downloading' in err and 'MiB' in err


def test_bad_checksum_argument(tmp_path):
    with pytest.raises(ValueError, match='MD5 .* or SHA-256'):
        download_file('http://127.0.0.1:1/x', tmp_path / 'x', checksum='abc')


def test_file_hash(tmp_path):
    p = tmp_path / 'f'
    p.write_bytes(b'abc')
    assert file_hash(p) == hashlib.sha256(b'abc').hexdigest()
    assert file_hash(p, 'md5') == hashlib.md5(b'abc').hexdigest()
