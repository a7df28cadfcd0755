"""Lesson 10's experiment machinery on both backends: `restart` is a fresh start, and `transfer_run` copies and
freezes what it says, from one start shared by every network."""
import numpy as np
import keras
import pytest
from tl_course.transfer import LAYERS, small_convnet, compiled, restart, train_steps, transfer_model, transfer_run, digit_task


@pytest.fixture(scope='module')
def task():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), np.repeat(np.arange(6), 10)
    return digit_task(x, y, range(3), n_train=6, seed=0), digit_task(x, y, range(3, 6), n_train=6, seed=0)


def net(width=2):
    i = keras.Input((28, 28, 1))
    return compiled(keras.Model(i, small_convnet(i, 3, width=width)))


def test_restart_is_a_model_built_anew_from_the_seed(task):
    (xa, ya, _, _), _ = task
    a = net(); train_steps(a, xa, ya, 3, batch=4, seed=5) # an optimizer state that restart must clear
    restart(a, 3)
    keras.utils.set_random_seed(3); b = net()
    for u, v in zip(a.get_weights(), b.get_weights()): np.testing.assert_array_equal(u, v)
    train_steps(a, xa, ya, 3, batch=4, seed=1); train_steps(b, xa, ya, 3, batch=4, seed=1)
    for u, v in zip(a.get_weights(), b.get_weights()): np.testing.assert_allclose(u, v, atol=1e-5)


def test_transfer_run_copies_freezes_and_shares_one_start(task):
    (xa, ya, _, _), (xb, yb, _, _) = task
    a = net(); train_steps(a, xa, ya, 3, batch=4)
    b = transfer_model(3, depths=(1, 4), width=2)
    w = lambda k, name: b.get_layer(f'{k}_{name}').get_weights()
    restart(b, 7)
    assert not np.array_equal(w('scratch', 'conv2')[0], w('fine1', 'conv2')[0]) # restart alone: each branch its own draw
    start = {name: w('scratch', name) for name in LAYERS + ('output',)} # transfer_run restarts from the same seed: this start
    transfer_run(b, a, xb, yb, 1, seed=7) # one step of Adam moves a weight by about its learning rate (0.002)
    for k in ('frozen1', 'fine1', 'frozen4', 'fine4'): # every network from scratch's start, where nothing was copied
        np.testing.assert_allclose(w(k, 'output')[0], start['output'][0], atol=0.01)
    np.testing.assert_allclose(w('fine1', 'conv2')[0], start['conv2'][0], atol=0.01)
    transfer_run(b, a, xb, yb, 3, seed=7)
    for name in LAYERS: # frozen: still A's weights after training on B
        for u, v in zip(w('frozen4', name), a.get_layer(name).get_weights()): np.testing.assert_array_equal(u, v)
    assert not np.array_equal(w('fine4', 'conv1')[0], a.get_layer('conv1').get_weights()[0]) # fine-tuned: moved
