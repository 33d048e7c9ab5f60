"""The comparison: its metrics on hand-made arrays, and that it fails what it should."""

import numpy as np
import pytest

from conformance.case import Case, Fill
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference

CASE = Case(name="c", shape=(4, 1), dtype="float32")
ONE_ULP = float(np.spacing(np.float32(1.0)))  # 2^-23


def cmp(got, expected, scale=1.0, dtype="float32", name="mean"):
    expected = np.asarray(expected, dtype=np.float64)
    return compare(name, np.asarray(got, dtype=dtype), expected, np.full(1, scale), CASE, dtype)


def test_metrics_of_one_ulp():
    row = cmp([1.0 + ONE_ULP], [1.0])
    assert row["max_abs_err"] == ONE_ULP and row["max_ulp"] == 1.0 and row["ulp_at_max"] == 1.0
    assert row["max_rel_err"] == ONE_ULP
    assert row["norm_err"] == 2.0  # u = 2^-24, scale 1
    assert row["status"] == "pass"


def test_error_beyond_threshold_fails_with_got_and_expected():
    row = cmp([1.0 + 100 * ONE_ULP], [1.0])
    assert row["status"] == "fail" and row["norm_err"] == 200.0
    assert "got 1.0000119" in row["reason"] and "expected 1.0" in row["reason"]


@pytest.mark.parametrize(
    "got, expected", [([np.nan], [1.0]), ([1.0], [np.nan]), ([np.inf], [-np.inf]), ([np.nan], [np.inf])]
)
def test_nan_inf_pattern_must_match(got, expected):
    row = cmp(got, expected)
    assert row["status"] == "fail" and "NaN/Inf pattern differs at 1" in row["reason"]


def test_matching_nan_passes():
    assert cmp([np.nan], [np.nan])["status"] == "pass"


def test_shape_dtype_missing():
    assert "shape" in cmp([1.0, 2.0], [1.0])["reason"]
    assert "dtype" in compare("mean", np.ones(1, np.float64), np.ones(1), np.ones(1), CASE, "float32")["reason"]
    assert "missing" in compare("mean", None, np.ones(1), np.ones(1), CASE, "float32")["reason"]


def naive_variance(case, inputs):
    x = inputs.x.astype(np.float32).reshape(case.outer, case.channels, case.inner)
    return ((x * x).mean(axis=(0, 2)) - x.mean(axis=(0, 2)) ** 2).astype(np.float32)


def test_naive_variance_fails_on_offset_data_but_not_on_centred_data():
    off = Case(name="off", shape=(16, 8, 8, 8), fill=Fill.make("offset", {"mean": 1e4, "std": 0.1}))
    cen = Case(name="cen", shape=(16, 8, 8, 8))
    for case, expect in ((off, "fail"), (cen, "pass")):
        inputs = generate(case)
        ref = reference(case, inputs)
        row = compare("var", naive_variance(case, inputs), ref.values["var"], ref.scales["var"], case, "float32")
        assert row["status"] == expect, row


def test_unbiased_normalisation_is_caught():
    """Normalising with the unbiased variance (a common slip) fails y on a small batch."""
    case = Case(name="u", shape=(4, 3))
    inputs = generate(case)
    ref = reference(case, inputs)
    x = inputs.x.astype(np.float64)
    mean, var_u = x.mean(axis=0), x.var(axis=0, ddof=1)
    y = ((x - mean) / np.sqrt(var_u + case.eps) * inputs.gamma + inputs.beta).astype(np.float32)
    assert compare("y", y, ref.values["y"], ref.scales["y"], case, "float32")["status"] == "fail"
