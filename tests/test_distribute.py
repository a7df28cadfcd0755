"Several devices through the engines TensorFlow and JAX already have, each against one device in the same process: MirroredStrategy on 2 logical CPUs, JAX DataParallel on 2 host devices, MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1."
import json, os, socket, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import keras

TESTS = str(Path(__file__).parent)
# the same small run with and without the distribution: no dropout (nor stochastic depth), no augmentation, and one batch per epoch (each
# device takes half of it), so the order in which batches are read cannot matter; what is left is the order of
# floating-point sums across devices
RUN = textwrap.dedent('''
    import json, sys, tempfile
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_train import digits, SIZE
    import tl_course.train as T
    from tl_course.backbones import get_backbone
    train, val = digits(per_class=4)
    def run(dist, run_dir=None):
        r = T.fine_tune(get_backbone('efficientnet_lite0', input_size=SIZE), train, val, epochs_fine=2, batch_size=12,
                        dropout=0.0, stochastic_depth=False, augment=False, cache=False, workers=1, distribution=dist,
                        run_dir=run_dir or tempfile.mkdtemp()) # checkpoints and the saved model too
        x = T.ImageBatches(val[0], val[1], SIZE, 12)[0][0]
        return {{'loss': r.history['loss'], 'val_accuracy': r.history['val_accuracy'],
                 'probs': np.asarray(r.model.predict(x, verbose=0)).tolist()}}
''')
TOL = dict(rtol=1e-4, atol=1e-5) # stated tolerance: float32 sums in another order, two epochs


def compare(one, many):
    np.testing.assert_allclose(many['loss'], one['loss'], **TOL)
    np.testing.assert_allclose(many['probs'], one['probs'], **TOL)
    assert many['val_accuracy'] == one['val_accuracy']


def python(code, env=None, timeout=900):
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **(env or {})})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='session')
def one_device():
    """The run on one TensorFlow device, computed once for both TensorFlow tests (`--dist loadgroup` keeps them on one
    worker; session scope, because a module-scoped fixture is torn down and computed again when another module's test
    runs between them). In this process (the tests that use it are TensorFlow's only): a subprocess would start
    TensorFlow once more for nothing."""
    ns = {}
    exec(RUN.format(tests=TESTS), ns)
    return json.loads(json.dumps(ns['run'](None))) # as the workers' results arrive: through JSON


# `slow` (out of .ci/test; `pytest -m slow tests/test_distribute.py` runs it): with it .ci/run measured 1178 s of its
# 1,200 on two cores with a cold feature cache. tf.distribute's replicated training stays covered in CI by the
# two-worker MultiWorkerMirroredStrategy test below, which compares with the same one-device run.
@pytest.mark.slow
@pytest.mark.tf_only
@pytest.mark.xdist_group('tf_one_device')
def test_mirrored_on_two_logical_cpus_matches_one_device(one_device):
    code = textwrap.dedent('''
        import tensorflow as tf
        cpu = tf.config.list_physical_devices('CPU')[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    ''') + RUN.format(tests=TESTS) + textwrap.dedent('''
        s = T.resolve_distribution('mirrored')
        print(json.dumps({'replicas': s.num_replicas_in_sync, 'many': run(s)}))
    ''')
    out = python(code, env={'KERAS_BACKEND': 'tensorflow'})
    assert out['replicas'] == 2
    compare(one_device, out['many'])


@pytest.mark.skipif(keras.backend.backend() == 'jax', reason='runs in a JAX subprocess of its own: once per CI run is enough')
def test_jax_data_parallel_on_two_host_devices_matches_one_device():
    # as on the GPU machines: no TensorFlow at all (Keras itself imports it where installed, to look for tf.data
    # objects and to seed it; those are its own optional imports, and they must stay optional)
    code = "import sys; sys.modules['tensorflow'] = None\n" + RUN.format(tests=TESTS) + textwrap.dedent('''
        import jax
        d = T.resolve_distribution('data_parallel')
        print(json.dumps({'devices': len(jax.devices()), 'mesh': list(d.device_mesh.shape), 'one': run(None), 'many': run(d)}))
    ''')
    # XLA's backend optimisations off, as .ci/test's JAX pass runs: compiling dominates these tiny runs
    out = python(code, env={'KERAS_BACKEND': 'jax', 'XLA_FLAGS': '--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0'})
    assert out['devices'] == 2 and out['mesh'] == [2]
    compare(out['one'], out['many'])


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks: s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks: s.close()
    return ports


@pytest.mark.tf_only
@pytest.mark.xdist_group('tf_one_device')
def test_multi_worker_on_two_processes_matches_one_device(tmp_path, one_device):
    # two worker processes on 127.0.0.1, each with one CPU device, told of each other by TF_CONFIG; the strategy is
    # made first thing in each program, as tf.distribute requires. Each worker is given its own run directory: the
    # chief (worker 0) writes its files, the other trains alongside and writes nothing.
    code = textwrap.dedent('''
        import json, os
        import tensorflow as tf
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    ''') + RUN.format(tests=TESTS) + textwrap.dedent('''
        task = json.loads(os.environ['TF_CONFIG'])['task']['index']
        out = {'task': task, 'replicas': strategy.num_replicas_in_sync, 'chief': T.is_chief(strategy),
               'many': run(strategy, os.environ['RUN_DIR'])}
        print(json.dumps(out))
    ''')
    hosts = [f'127.0.0.1:{p}' for p in free_ports(2)]
    procs = []
    for i in range(2):
        cfg = json.dumps({'cluster': {'worker': hosts}, 'task': {'type': 'worker', 'index': i}})
        env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'KERAS_BACKEND': 'tensorflow', 'TF_CONFIG': cfg,
               'RUN_DIR': str(tmp_path / f'worker{i}')}
        procs.append(subprocess.Popen([sys.executable, '-c', code], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=900)
            assert p.returncode == 0, stderr[-3000:]
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs: p.kill()
    chief, other = outs
    assert chief['replicas'] == other['replicas'] == 2
    assert (chief['chief'], other['chief']) == (True, False)
    compare(one_device, chief['many'])
    compare(chief['many'], other['many']) # both workers hold the same model
    assert {'checkpoint.npz', 'model.keras', 'metrics.json', 'history.csv'} <= {p.name for p in (tmp_path / 'worker0').iterdir()}
    assert not (tmp_path / 'worker1').exists() or not any((tmp_path / 'worker1').iterdir())


def test_distribution_names_are_checked():
    import tl_course.train as T
    assert T.resolve_distribution(None) is None
    with pytest.raises(ValueError, match="Expected distribution to be None, 'mirrored'"): T.resolve_distribution('tpu')
    wrong = 'data_parallel' if keras.backend.backend() == 'tensorflow' else 'mirrored'
    with pytest.raises(ValueError, match='needs the (JAX|TensorFlow) backend'): T.resolve_distribution(wrong)
