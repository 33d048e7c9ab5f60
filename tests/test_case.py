"""Case ids round-trip and expand deterministically."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conformance.case import DTYPES, FILL_PARAMS, Case, Fill
from conformance.errors import UserError
from conformance.generate import generate


@st.composite
def cases(draw):
    rank = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank)))
    axis = draw(st.integers(-rank, rank - 1))
    kind = draw(st.sampled_from([k for k in FILL_PARAMS if k != "exact"]))
    params = {k: draw(st.floats(0.0, 1.0) if k in ("fraction", "std") else st.floats(-1e6, 1e6)) for k in FILL_PARAMS[kind]}
    if kind == "uniform":
        params["low"], params["high"] = sorted((params["low"], params["high"]))
    return Case(
        name=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,12}", fullmatch=True)),
        dtype=draw(st.sampled_from(DTYPES)), shape=shape, axis=axis,
        mode=draw(st.sampled_from(["train", "infer"])), backward=draw(st.booleans()), fix_gamma=draw(st.booleans()),
        running_var=draw(st.sampled_from(["biased", "unbiased"])), stats=draw(st.sampled_from(["var", "invstd"])),
        momentum_dir=draw(st.sampled_from(["old", "new"])), eps=draw(st.floats(0, 1)), momentum=draw(st.floats(0, 1)),
        seed=draw(st.integers(0, 2**63 - 1)), fill=Fill.make(kind, params),
        inputs=draw(st.none() | st.text(min_size=1, max_size=20)),
    )


@settings(max_examples=300, deadline=None)
@given(cases())
def test_id_round_trips(c):
    assert Case.from_id(c.id) == c
    assert "/" not in c.id and " " not in c.id and "\n" not in c.id  # a file name and a shell word


def test_id_is_readable():
    c = Case(name="small-nchw", shape=(8, 16, 7, 7), axis=1, backward=True)
    assert c.id.startswith("small-nchw,dtype=float32,shape=8x16x7x7,axis=1,mode=train,backward=1,")


@pytest.mark.parametrize("bad", ["", "x,shape=0x3", "x,bogus=1", "x,shape=2x3,shape=2x3", "x,backward=yes",
                                 "x,fill=normal:mean", "x,fill=weird", "x,axis=5", "x,eps=abc", "bad name,dtype=float32"])
def test_bad_ids_are_user_errors(bad):
    with pytest.raises(UserError):
        Case.from_id(bad)


def test_generation_is_deterministic_and_dtype_independent():
    a = generate(Case(name="a", shape=(4, 3, 5), backward=True, dtype="float64"))
    b = generate(Case(name="b", shape=(4, 3, 5), backward=True, dtype="float64"))
    f = generate(Case(name="a", shape=(4, 3, 5), backward=True, dtype="float32"))
    for k, v in a.as_dict().items():
        np.testing.assert_array_equal(v, b.as_dict()[k])
        np.testing.assert_array_equal(v.astype(np.float32), f.as_dict()[k])


def test_exact_fill_has_exact_statistics():
    c = Case(name="e", shape=(6, 5, 4), axis=1, fill=Fill.make("exact"), dtype="float16")
    x = generate(c).x.astype(np.float64).transpose(1, 0, 2).reshape(5, -1)
    mean = x.mean(axis=1)
    assert np.all(mean * 4 == np.round(mean * 4))  # dyadic centres
    var = ((x - mean[:, None]) ** 2).mean(axis=1)
    assert np.all(np.log2(var) == np.round(np.log2(var)))  # a^2 with a a power of two


def test_special_fill_puts_nan_and_inf():
    x = generate(Case(name="s", shape=(64, 64), fill=Fill.make("special", {"fraction": 0.1}))).x
    assert np.isnan(x).any() and np.isposinf(x).any() and np.isneginf(x).any()
    assert 0.05 < (~np.isfinite(x)).mean() < 0.15


def test_exact_fill_rejects_odd_counts():
    with pytest.raises(UserError, match="even number"):
        Case(name="e", shape=(3, 2), fill=Fill.make("exact"))
