"""The oracle against values worked out by hand (exact fractions), not computed by any code under test."""

import math

import numpy as np
import pytest

from conformance.case import Case
from conformance.generate import Inputs
from conformance.oracle import reference

# One channel holding x = 1, 2, 3, 4 (shape (4, 1), channel axis 1), gamma 2, beta 0.5, eps 0,
# running mean 0, running variance 1, momentum 0.9, dy = 1, 0, 0, 0. By hand:
#   mean = 5/2, biased var = (9/4 + 1/4 + 1/4 + 9/4) / 4 = 5/4, unbiased var = 5/3, invstd = 2/sqrt(5)
#   xhat = (x - 5/2) * 2/sqrt(5) = (-3, -1, 1, 3) / sqrt(5)
#   y = 2 * xhat + 1/2
#   running_mean = 0.9 * 0 + 0.1 * 5/2 = 1/4; running_var = 0.9 + 0.1 * 5/4 = 41/40 (biased), 0.9 + 1/6 (unbiased)
#   dbeta = 1; dgamma = xhat[0] = -3/sqrt(5)
#   dx = gamma * invstd * (dy - dbeta/4 - xhat * dgamma/4) = 4/sqrt(5) * (3/10, -4/10, -1/10, 2/10)
S5 = math.sqrt(5.0)
X = np.array([[1.0], [2.0], [3.0], [4.0]])


def inputs(dy=True):
    return Inputs(x=X.copy(), gamma=np.array([2.0]), beta=np.array([0.5]), running_mean=np.array([0.0]),
                  running_var=np.array([1.0]), dy=np.array([[1.0], [0.0], [0.0], [0.0]]) if dy else None)


def case(**kw):
    base = dict(name="hand", dtype="float64", shape=(4, 1), axis=1, eps=0.0, momentum=0.9, backward=True)
    base.update(kw)
    return Case(**base)


def test_train_forward_and_running_stats():
    ref = reference(case(), inputs()).values
    assert ref["mean"] == pytest.approx([2.5])
    assert ref["var"] == pytest.approx([1.25])
    assert ref["y"].ravel() == pytest.approx([2 * v / S5 + 0.5 for v in (-3, -1, 1, 3)])
    assert ref["running_mean"] == pytest.approx([0.25])
    assert ref["running_var"] == pytest.approx([41 / 40])


def test_unbiased_running_var_and_invstd():
    ref = reference(case(running_var="unbiased", stats="invstd"), inputs()).values
    assert ref["running_var"] == pytest.approx([0.9 + 1 / 6])
    assert ref["invstd"] == pytest.approx([2 / S5])
    assert ref["var"] == pytest.approx([1.25])  # both batch statistics are always there


def test_momentum_direction_changes_nothing_in_the_canonical_values():
    a = reference(case(momentum_dir="old"), inputs()).values
    b = reference(case(momentum_dir="new"), inputs()).values
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_train_backward():
    ref = reference(case(), inputs()).values
    assert ref["dbeta"] == pytest.approx([1.0])
    assert ref["dgamma"] == pytest.approx([-3 / S5])
    assert ref["dx"].ravel() == pytest.approx([4 / S5 * v for v in (0.3, -0.4, -0.1, 0.2)])


def test_fix_gamma_uses_one_and_reports_zero_dgamma():
    ref = reference(case(fix_gamma=True), inputs()).values
    assert ref["y"].ravel() == pytest.approx([v / S5 + 0.5 for v in (-3, -1, 1, 3)])
    assert ref["dgamma"] == pytest.approx([0.0])
    assert ref["dx"].ravel() == pytest.approx([2 / S5 * v for v in (0.3, -0.4, -0.1, 0.2)])


def test_inference_uses_running_stats_and_leaves_them():
    # running mean 0, running var 1, eps 0: y = 2 x + 1/2, dx = 2 dy, dgamma = sum dy * x = 1
    ref = reference(case(mode="infer"), inputs()).values
    assert {"y", "running_mean", "running_var", "dx", "dgamma", "dbeta"} <= set(ref)
    assert ref["mean"] == pytest.approx([0.0]) and ref["invstd"] == pytest.approx([1.0])  # the statistics in use
    assert ref["y"].ravel() == pytest.approx([2.5, 4.5, 6.5, 8.5])
    assert ref["running_mean"] == pytest.approx([0.0]) and ref["running_var"] == pytest.approx([1.0])
    assert ref["dx"].ravel() == pytest.approx([2.0, 0.0, 0.0, 0.0])
    assert ref["dgamma"] == pytest.approx([1.0])


def test_channel_axis_last_matches_axis_one_transposed():
    # Two channels in NHWC; channel 0 = 1,2,3,4 and channel 1 = 10,20,30,40 (mean 25, var 125).
    x = np.array([[[[1.0, 10.0], [2.0, 20.0]], [[3.0, 30.0], [4.0, 40.0]]]])  # shape (1, 2, 2, 2), C last
    inp = Inputs(x=x, gamma=np.ones(2), beta=np.zeros(2), running_mean=np.zeros(2), running_var=np.ones(2), dy=None)
    ref = reference(Case(name="nhwc", dtype="float64", shape=(1, 2, 2, 2), axis=-1, eps=0.0), inp).values
    assert ref["mean"] == pytest.approx([2.5, 25.0])
    assert ref["var"] == pytest.approx([1.25, 125.0])
    assert ref["y"][..., 1].ravel() == pytest.approx([v / S5 for v in (-3, -1, 1, 3)])


def test_nan_propagates_to_its_channel_only():
    x = np.array([[1.0, 1.0], [np.nan, 2.0], [3.0, 3.0]])
    inp = Inputs(x=x, gamma=np.ones(2), beta=np.zeros(2), running_mean=np.zeros(2), running_var=np.ones(2), dy=None)
    ref = reference(Case(name="nan", dtype="float64", shape=(3, 2)), inp).values
    assert math.isnan(ref["mean"][0]) and ref["mean"][1] == pytest.approx(2.0)
    assert np.isnan(ref["y"][:, 0]).all() and np.isfinite(ref["y"][:, 1]).all()
