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
    assert out == '' and 'Downloading p.bin: 100%' in err and '293k/293k' in err # tqdm's bar, in KiB


def test_bad_checksum_argument(tmp_path):
    with pytest.raises(ValueError, match='MD5 .* or SHA-256'):
        download_file('http://127.0.0.1:1/x', tmp_path / 'x', checksum='abc')


def test_file_hash(tmp_path):
    p = tmp_path / 'f'
    p.write_bytes(b'abc')
    assert file_hash(p) == hashlib.sha256(b'abc').hexdigest()
    assert file_hash(p, 'md5') == hashlib.md5(b'abc').hexdigest()


# --- atomic, durable writes (one module for the whole library) ---

def test_threads_writing_one_file_never_share_a_part_file(tmp_path):
    "Part files were named by process id only: two threads of one process wrote into, and renamed, each other's."
    import threading
    from tl_course.cache import write_atomic # where the library's writers import it from
    target, errors = tmp_path / 'entry.json', []
    def writer(i):
        def write(p):
            p.write_text(f'{i}:' + 'x' * 1000); time.sleep(0.05); p.write_text(p.read_text() + f':{i}')
        try: write_atomic(target, write)
        except Exception as e: errors.append(repr(e))
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert errors == []
    first, _, last = target.read_text().partition(':')
    assert last.endswith(f':{first}') # one writer's whole content, not a mix
    assert leftovers(tmp_path) == ['entry.json']


def test_a_replace_is_flushed_to_disk_before_and_after(tmp_path, monkeypatch):
    "os.replace alone can leave an empty file after a power loss: the part file and the folder are fsynced."
    import os
    from tl_course.cache import write_atomic
    synced = []
    real = os.fsync
    def fsync(fd):
        synced.append(os.readlink(f'/proc/self/fd/{fd}')); real(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    write_atomic(tmp_path / 'checkpoint.npz', lambda p: p.write_bytes(b'weights'))
    assert len(synced) == 2 and '.part-' in synced[0] and synced[1] == str(tmp_path)


def test_stale_part_files_of_this_host_go_and_other_hosts_stay(tmp_path):
    import os, subprocess, sys
    from tl_course.download import _host, remove_stale_parts
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True).stdout.strip()
    mine_dead = tmp_path / f'a.npy.part-{_host()}-{dead}-1-0'
    mine_live = tmp_path / f'b.npy.part-{_host()}-{os.getpid()}-1-0'
    other = tmp_path / f'c.npy.part-another_host-{dead}-1-0' # its pid means nothing on this machine
    for p in (mine_dead, mine_live, other): p.write_text('x')
    remove_stale_parts(tmp_path)
    assert leftovers(tmp_path) == sorted([mine_live.name, other.name])


def test_cached_keras_weights_are_checked_and_a_writable_tmp_folder_is_not_read(tmp_path, monkeypatch, closed_port):
    import dataclasses, os
    import tl_course.registry as R
    from tl_course.registry import backbone_spec, imagenet_weights_path, WeightsUnavailable
    good = b'the real weights'
    spec = dataclasses.replace(backbone_spec('vgg16'), weights_files=lambda top, size: (
        'w_notop.h5', f'http://127.0.0.1:{closed_port}/w_notop.h5', hashlib.sha256(good).hexdigest()))
    home, fallback = tmp_path / 'home', tmp_path / 'tmp_keras' / 'models'
    monkeypatch.setenv('KERAS_HOME', str(home)); monkeypatch.setattr(R, 'KERAS_FALLBACK', fallback)
    (home / 'models').mkdir(parents=True); fallback.mkdir(parents=True)
    (home / 'models' / 'w_notop.h5').write_bytes(b'damaged or replaced')
    with pytest.raises(WeightsUnavailable): imagenet_weights_path(spec) # not trusted, and no download here
    (fallback / 'w_notop.h5').write_bytes(good)
    os.chmod(fallback, 0o777) # another user could have put it there
    with pytest.raises(WeightsUnavailable): imagenet_weights_path(spec)
    os.chmod(fallback, 0o755)
    assert imagenet_weights_path(spec) == fallback / 'w_notop.h5'
    (home / 'models' / 'w_notop.h5').write_bytes(good)
    assert imagenet_weights_path(spec) == home / 'models' / 'w_notop.h5'
