import functools, http.server, os, threading

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest

# the learner's own feature cache, as it was before the session fixture below pointed the tests elsewhere: the browser
# test's lessons run as a learner's do, and read what nbdev-test (or the learner) extracted before
LEARNER_CACHE = os.environ.get('TL_COURSE_CACHE')


@pytest.fixture(autouse=True, scope='session')
def _feature_cache(tmp_path_factory):
    "Cached features go to a folder of the test session, not the user's ~/.cache."
    os.environ['TL_COURSE_CACHE'] = str(tmp_path_factory.mktemp('tl_course_cache'))


@pytest.fixture(scope='session')
def lite0_path():
    from tl_course.backbones import lite0_checkpoint
    return lite0_checkpoint()


class _Handler(http.server.SimpleHTTPRequestHandler):
    "Serves a folder; records the paths asked for; '/cut/<n>' promises 1000 bytes and sends n."
    def log_message(self, *a): pass
    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith('/cut/'):
            self.send_response(200)
            self.send_header('Content-Length', '1000')
            self.end_headers()
            self.wfile.write(b'x' * int(self.path.rsplit('/', 1)[1]))
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def http_server(tmp_path):
    "A real HTTP server on 127.0.0.1 serving `root`; yields (base_url, root, requests)."
    root = tmp_path / 'served'
    root.mkdir()
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Handler, directory=root))
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}', root, server.requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    "A port on 127.0.0.1 where nothing listens."
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


# module fixtures that take seconds to build (a trained run, a network with its weights): under pytest-xdist with
# `--dist loadgroup` the tests that use one run on one worker, so the fixture is built once, not once per worker
# (measured in .ci/run: the run of test_train was built on both workers, 20 s each on TensorFlow, 34 and 28 s on JAX);
# those fixtures are session-scoped in their modules: a module fixture is torn down as soon as the worker runs a test
# of another module, and loadgroup interleaves them (the same run was still built twice, 41 and 30 s on JAX)
GROUPED_FIXTURES = ('tiny_run', 'lite0', 'lite0_top', 'bb')


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        used = [f for f in GROUPED_FIXTURES if f in getattr(item, 'fixturenames', ())]
        if used and not item.get_closest_marker('xdist_group'):
            item.add_marker(pytest.mark.xdist_group(f'{item.module.__name__}:{used[0]}'))
    # pytest-xdist groups by a '@group' suffix it writes to `item._nodeid`; pytest 9 builds the node id from `item._id`
    # instead, so no test was ever grouped (checked: two tests marked xdist_group('g') ran on gw0 and gw1). The suffix
    # is written here where pytest 9 reads it; on an older pytest, xdist's own `_nodeid` does it
    if not getattr(config.option, 'loadgroup', False): return # (set on xdist's workers under --dist loadgroup)
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get('name', 'default')) for m in item.iter_markers('xdist_group')})
        if not names or '@' in item.nodeid.rsplit(']', 1)[-1]: continue
        grouped = f"{item.nodeid}@{'_'.join(names)}"
        if hasattr(item, '_id'):
            from _pytest.nodeid import NodeId
            item._id = NodeId.parse(grouped)
        else: item._nodeid = grouped
