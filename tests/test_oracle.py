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
    return Inputs(
        x=X.copy(),
        gamma=np.array([2.0]),
        beta=np.array([0.5]),
        running_mean=np.array([0.0]),
        running_var=np.array([1.0]),
        dy=np.array([[1.0], [0.0], [0.0], [0.0]]) if dy else None,
    )


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


# ---- the fields beyond mode: update_running, act, inplace (same hand example) -------------------------------
XHAT = np.array([-3.0, -1.0, 1.0, 3.0]) / S5
Z = 2 * XHAT + 0.5  # the affine output before any activation


def test_batch_statistics_without_update_leave_the_running_ones():
    ref = reference(case(update_running=False), inputs()).values
    assert ref["mean"] == pytest.approx([2.5]) and ref["var"] == pytest.approx([1.25])
    assert ref["y"].ravel() == pytest.approx(Z)
    assert ref["running_mean"] == pytest.approx([0.0]) and ref["running_var"] == pytest.approx([1.0])


def test_running_statistics_normalise_while_they_update():
    # normalise with running mean 0, var 1 (eps 0): y = 2 x + 1/2; the running ones still move to 1/4 and 41/40
    ref = reference(case(mode="infer", update_running=True), inputs()).values
    assert ref["y"].ravel() == pytest.approx([2.5, 4.5, 6.5, 8.5])
    assert ref["mean"] == pytest.approx([2.5]) and ref["var"] == pytest.approx([1.25])
    assert ref["running_mean"] == pytest.approx([0.25]) and ref["running_var"] == pytest.approx([41 / 40])
    # a scale-shift backward: dx = gamma * dy, dgamma = sum dy * (x - 0) / 1 = 1, dbeta = 1
    assert ref["dx"].ravel() == pytest.approx([2.0, 0.0, 0.0, 0.0])
    assert ref["dgamma"] == pytest.approx([1.0]) and ref["dbeta"] == pytest.approx([1.0])


def test_relu_forward_and_backward():
    inp = inputs()
    inp.dy[:] = [[0.0], [0.0], [0.0], [1.0]]  # only the last element (z > 0) lets a gradient through
    ref = reference(case(act="relu"), inp).values
    assert ref["y"].ravel() == pytest.approx(np.where(Z > 0, Z, 0.0))
    assert ref["dbeta"] == pytest.approx([1.0])
    assert ref["dgamma"] == pytest.approx([3 / S5])
    assert ref["dx"].ravel() == pytest.approx([4 / S5 * v for v in (0.2, -0.1, -0.4, 0.3)])
    blocked = reference(case(act="relu"), inputs()).values  # dy on the first element only, where z < 0
    assert blocked["dbeta"] == pytest.approx([0.0]) and blocked["dx"].ravel() == pytest.approx([0.0] * 4)


@pytest.mark.parametrize(
    "act, f, df",
    [
        ("sigmoid", lambda z: 1 / (1 + math.exp(-z)), lambda z: math.exp(-z) / (1 + math.exp(-z)) ** 2),
        ("tanh", math.tanh, lambda z: 1 / math.cosh(z) ** 2),
    ],
)
def test_smooth_activations(act, f, df):
    ref = reference(case(act=act), inputs()).values
    assert ref["y"].ravel() == pytest.approx([f(z) for z in Z])
    assert ref["dbeta"] == pytest.approx([df(Z[0])])  # dy = (1, 0, 0, 0)
    assert ref["dgamma"] == pytest.approx([df(Z[0]) * XHAT[0]])


def test_relu_keeps_nan():
    inp = inputs()
    inp.x[0, 0] = np.nan
    ref = reference(case(act="relu"), inp).values
    assert np.isnan(ref["y"]).all()  # a NaN in the channel makes its mean, so every z, NaN: relu keeps it


def test_in_place_outputs_are_y_and_dx():
    ref = reference(case(inplace=True), inputs()).values
    np.testing.assert_array_equal(ref["x_after"], ref["y"])
    np.testing.assert_array_equal(ref["dy_after"], ref["dx"])


def test_the_oracle_leaves_its_inputs_alone():
    inp = inputs()
    before = {k: np.copy(getattr(inp, k)) for k in ("x", "gamma", "beta", "running_mean", "running_var", "dy")}
    for kw in ({"act": "sigmoid"}, {"act": "relu"}, {"mode": "infer", "update_running": True, "act": "tanh"}):
        reference(case(**kw), inp)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(inp, k), v, err_msg=k)


def test_a_relu_kink_widens_the_gradient_scales():
    # z exactly 0 on one element: either side is right, and the scales allow its whole contribution
    inp = Inputs(
        x=np.array([[-1.0], [1.0], [-1.0], [1.0]]),
        gamma=np.array([1.0]),
        beta=np.array([0.0]),
        running_mean=np.array([0.0]),
        running_var=np.array([1.0]),
        dy=np.array([[1.0], [1.0], [1.0], [1.0]]),
    )
    c = case(mode="infer", act="relu", dtype="float32")
    inp.x[0, 0] = 0.0  # z = (0 - 0) / 1 = 0 there
    with_kink = reference(c, inp).scales
    inp.x[0, 0] = -1.0
    without = reference(c, inp).scales
    assert with_kink["dbeta"][0] > without["dbeta"][0] * 1e4
