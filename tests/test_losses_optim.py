"Edge cases of the loss and gradient-descent modules (the lessons hold the main checks)."
import numpy as np
import pytest

from tl_course.losses import cross_entropy, log_softmax, logsumexp, loss_curve, one_hot, softmax
from tl_course.optim import (accuracy, add_bias, gradient_descent, numerical_gradient, relative_error,
                             softmax_regression_grad)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize('scale', [1e-3, 1, 100, 1e4, 1e300])
def test_softmax_is_a_distribution_at_any_scale(scale):
    z = RNG.normal(0, 1, (20, 7)) * scale
    p = softmax(z)
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-12)
    assert np.isfinite(log_softmax(z)).all()


def test_shift_invariance_and_logsumexp():
    z = RNG.normal(0, 5, (4, 6))
    np.testing.assert_allclose(softmax(z + 1234.5), softmax(z), atol=1e-12)
    np.testing.assert_allclose(logsumexp(z), np.log(np.exp(z).sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(logsumexp(z, axis=0, keepdims=True).shape, (1, 6))
    assert logsumexp(np.array([-np.inf, 0.0])) == 0.0
    assert logsumexp(np.array([-np.inf, -np.inf])) == -np.inf


def test_log_softmax_equals_log_of_softmax_where_both_are_finite():
    z = RNG.normal(0, 3, (10, 5))
    np.testing.assert_allclose(log_softmax(z), np.log(softmax(z)), rtol=1e-12)


@pytest.mark.parametrize('z', [[1000.0, -1000.0, 0.0], [-1e300, 1e300, 0.0], [0.0, 0.0, 0.0]])
def test_cross_entropy_finite_for_extreme_logits(z):
    for label in range(3):
        assert np.isfinite(cross_entropy(np.array([z]), [label]))


def test_cross_entropy_probability_zero_and_one():
    p = np.array([[0.0, 1.0], [1.0, 0.0]])
    losses = cross_entropy(p, [0, 0], from_logits=False, reduction='none')
    np.testing.assert_allclose(losses, [-np.log(1e-7), -np.log(1 - 1e-7)])


def test_probabilities_are_renormalised():
    p = np.array([[2.0, 6.0]])  # not summing to 1
    np.testing.assert_allclose(cross_entropy(p, [1], from_logits=False), -np.log(0.75))


def test_reductions_and_soft_targets():
    z = RNG.normal(0, 1, (6, 4))
    y = RNG.integers(0, 4, 6)
    per = cross_entropy(z, y, reduction='none')
    assert per.shape == (6,)
    np.testing.assert_allclose(cross_entropy(z, y, reduction='sum'), per.sum())
    np.testing.assert_allclose(cross_entropy(z, y), per.mean())
    soft = np.full((6, 4), 0.25)
    np.testing.assert_allclose(cross_entropy(z, soft), -log_softmax(z).mean(axis=1).mean())
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(z, y, reduction='avg')


def test_label_smoothing_equals_mixed_targets():
    z = RNG.normal(0, 2, (5, 3))
    y = RNG.integers(0, 3, 5)
    mixed = one_hot(y, 3) * 0.8 + 0.2 / 3
    np.testing.assert_allclose(cross_entropy(z, y, label_smoothing=0.2), cross_entropy(z, mixed), rtol=1e-12)


@pytest.mark.parametrize('labels,match', [([0.5, 1.0], 'integer'), ([[0, 1]], 'integer'), ([-1, 0], r'\[0, 2\]')])
def test_one_hot_refuses(labels, match):
    with pytest.raises(ValueError, match=match):
        one_hot(np.array(labels), 3)


def test_loss_curve_is_minus_log_p():
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(loss_curve(p, 4), -np.log(p), rtol=1e-12)


@pytest.mark.parametrize('n,d,c', [(1, 3, 2), (7, 5, 4), (30, 10, 10)])
def test_gradient_matches_finite_differences(n, d, c):
    X = add_bias(RNG.normal(0, 1, (n, d)))
    y = RNG.integers(0, c, n)
    W = RNG.normal(0, 0.5, (d + 1, c))
    loss, g = softmax_regression_grad(W, X, y)
    num = numerical_gradient(lambda w: softmax_regression_grad(w, X, y)[0], W)
    assert relative_error(g, num) < 1e-6
    assert np.isclose(loss, cross_entropy(X @ W, y))


def test_gradient_descent_decreases_loss_and_is_deterministic():
    X = add_bias(RNG.normal(0, 1, (60, 4)))
    y = (X @ RNG.normal(0, 3, (5, 3))).argmax(axis=1)  # labels from a linear teacher: learnable by this model
    a = gradient_descent(X, y, 0.5, 0.9, steps=40)
    b = gradient_descent(X, y, 0.5, 0.9, steps=40)
    np.testing.assert_array_equal(a.W, b.W)
    assert a.losses[-1] < a.losses[0] / 2 and len(a.losses) == 40
    assert np.isnan(a.test_accuracy)
    assert accuracy(a.W, X, y) > 0.8


def test_one_step_is_minus_lr_times_gradient():
    X = add_bias(RNG.normal(0, 1, (10, 3)))
    y = RNG.integers(0, 3, 10)
    W0 = RNG.normal(0, 1, (4, 3))
    run = gradient_descent(X, y, 0.3, momentum=0.9, steps=1, W0=W0)  # the first momentum step is a plain step
    np.testing.assert_allclose(run.W, W0 - 0.3 * softmax_regression_grad(W0, X, y)[1], rtol=1e-12)


def test_relative_error():
    assert relative_error([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert relative_error([1.0], [-1.0]) == 1.0
    assert abs(relative_error([1.0], [1.0 + 2e-8]) - 1e-8) < 1e-12
