"""Case ids round-trip and expand deterministically."""

import re
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import any_cases

from conformance import generate as gen
from conformance.case import FILL_PARAMS, Case, Fill, file_stem
from conformance.errors import UserError
from conformance.generate import generate


@settings(max_examples=300, deadline=None)
@given(any_cases())
def test_id_round_trips(c):
    assert Case.from_id(c.id) == c
    assert "/" not in c.id and " " not in c.id and "\n" not in c.id  # a file name and a shell word


def test_id_is_readable():
    c = Case(name="small-nchw", shape=(8, 16, 7, 7), axis=1, backward=True)
    assert c.id.startswith("small-nchw,dtype=float32,shape=8x16x7x7,axis=1,mode=train,backward=1,")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x,shape=0x3",
        "x,bogus=1",
        "x,shape=2x3,shape=2x3",
        "x,backward=yes",
        "x,fill=normal:mean",
        "x,fill=weird",
        "x,axis=5",
        "x,eps=abc",
        "bad name,dtype=float32",
    ],
)
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


@settings(max_examples=200, deadline=None)
@given(any_cases(), st.text(min_size=1, max_size=300))
def test_file_stems_are_bounded_safe_and_unique(c, tail):
    long = Case(name="n" * 80, shape=c.shape, axis=c.axis, inputs=f"{'deep/' * 40}{tail}@0123456789abcdef")
    for case_id in (c.id, long.id, c.id + tail):
        stem = file_stem(case_id)
        assert len(stem) <= 100 and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.,=+-]*", stem), stem
    assert file_stem(c.id) != file_stem(c.id + tail)  # the same first 60 characters, another id
    assert file_stem(c.id).startswith(c.id[:20].replace("%", "_").lstrip("_.,=+-"))  # readable


def test_inputs_root_is_not_part_of_the_case():
    a = Case(name="a", shape=(2, 3), inputs="data/x.npz@0123456789abcdef", inputs_root="/here")
    b = Case(name="a", shape=(2, 3), inputs="data/x.npz@0123456789abcdef", inputs_root="/elsewhere/else")
    assert a == b and a.id == b.id and hash(a) == hash(b) and "here" not in a.id
    assert a.inputs_file == "data/x.npz" and a.inputs_digest == "0123456789abcdef"
    assert str(b.inputs_path) == "/elsewhere/else/data/x.npz"
    assert str(Case.from_id(a.id, inputs_root="/r").inputs_path) == "/r/data/x.npz"


@pytest.mark.parametrize("bad", ["x.npz", "/abs/x.npz@0123456789abcdef", "x.npz@0123", "x.npz@0123456789ABCDEF"])
def test_inputs_need_a_relative_path_and_a_digest(bad):
    with pytest.raises(UserError, match="inputs"):
        Case(name="a", shape=(2, 3), inputs=bad)
    with pytest.raises(UserError, match="inputs"):
        Case.from_id(f"a,shape=2x3,inputs={quote(bad, safe='@')}")


@pytest.mark.parametrize("kind", sorted(FILL_PARAMS))
def test_drawing_in_chunks_gives_the_values_of_one_draw(kind, monkeypatch):
    c = Case(
        name="c",
        shape=(6, 5, 7),
        axis=1,
        backward=True,
        fill=Fill.make(kind, {"fraction": 0.3} if kind == "special" else None),
    )
    whole = generate(c)
    monkeypatch.setattr(gen, "CHUNK", 4)  # 210 values: 53 chunks, the last one short
    for name, value in generate(c).as_dict().items():
        np.testing.assert_array_equal(value, whole.as_dict()[name])
    if kind == "normal":  # and those are the documented draws, whole: x, gamma, beta, running_mean, running_var, dy
        rng = np.random.default_rng(c.seed)
        x = rng.normal(0.0, 1.0, size=c.shape)
        (
            rng.uniform(size=5),
            rng.choice([-1.0, 1.0], size=5),
            rng.normal(size=5),
            rng.normal(size=5),
            rng.uniform(size=5),
        )
        dy = rng.normal(0.0, 1.0, size=c.shape)
        np.testing.assert_array_equal(whole.x, x.astype(np.float32))
        np.testing.assert_array_equal(whole.dy, dy.astype(np.float32))


def test_new_fields_stay_out_of_default_ids_and_round_trip():
    plain = Case(name="a", shape=(4, 3))
    assert not any(t in plain.id for t in ("update_running", "act=", "inplace", "flags"))
    for kw in (
        {"update_running": False},
        {"mode": "infer", "update_running": True},
        {"act": "tanh"},
        {"inplace": True, "backward": True},
        {"flags": "training=False,use_global_stats=True"},
    ):
        c = Case(name="a", shape=(4, 3), **kw)
        assert Case.from_id(c.id) == c, c.id
        if c.flags:
            assert "," not in c.id.split("flags=")[1].split(",fill")[0]  # flags quoted into one token


def test_update_running_as_mode_says_is_one_case():
    assert Case(name="a", update_running=True) == Case(name="a")
    assert Case(name="a", mode="infer", update_running=False) == Case(name="a", mode="infer")
    c = Case(name="a", mode="infer", update_running=True)
    assert (c.normalize_with, c.updates_running, c.batch_stats) == ("running", True, True)
    assert c.outputs[:5] == ("y", "mean", "var", "running_mean", "running_var")


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"act": "gelu"}, "act"),
        ({"inplace": 1}, "inplace"),
        ({"update_running": "yes"}, "update_running"),
        ({"flags": "a,b"}, "flags"),
    ],
)
def test_bad_new_fields_are_user_errors(kw, field):
    with pytest.raises(UserError, match=field):
        Case(name="a", **kw)


def test_suite_normalize_with_is_mode(tmp_path):
    from conformance import suite

    s = suite.parse({"suite": {"name": "n"}, "case": [{"name": "a", "normalize_with": ["batch", "running"]}]}, "x.toml")
    assert [c.mode for c in s.cases] == ["train", "infer"]
    with pytest.raises(UserError, match="contradicts"):
        suite.parse(
            {"suite": {"name": "n"}, "case": [{"name": "a", "mode": "train", "normalize_with": "running"}]}, "x.toml"
        )
