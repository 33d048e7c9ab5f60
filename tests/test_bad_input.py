"""Whatever a suite file or an option holds, a mistake is exit code 2 and one line, never a traceback."""

import subprocess
import sys

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.cli import main

VALID = {
    "suite": {"name": "mine"},
    "defaults": {"dtype": "float32", "eps": 1e-5},
    "case": [
        {
            "name": "c1",
            "shape": [4, 3, 2, 2],
            "axis": 1,
            "mode": ["train", "infer"],
            "fill": {"kind": "normal", "mean": 0.0, "std": 1.0},
        }
    ],
}


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err):
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("conformance: error: ") and "Traceback" not in err


def write(tmp_path, text, name="suite.toml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


def test_valid_file_lists_its_cases(tmp_path, capsys):
    p = write(tmp_path, tomli_w.dumps(VALID))
    code, out, err = run_cli(["list", "cases", "--suite", str(p)], capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 2 and out.startswith("c1,dtype=float32,shape=4x3x2x2,axis=1,mode=train")


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda d: d["case"][0].update(shape=[4, 0, 2]), "shape"),
        (lambda d: d["case"][0].update(shpe=[4, 3]), "shpe"),
        (lambda d: d["case"][0].update(axis=7), "axis"),
        (lambda d: d["case"][0].update(dtype="bfloat16"), "bfloat16"),
        (lambda d: d["case"][0].update(fill={"kind": "cauchy"}), "cauchy"),
        (lambda d: d["case"][0].update(fill={"kind": "normal", "sigma": 1.0}), "sigma"),
        (lambda d: d["case"][0].update(eps=-1.0), "eps"),
        (lambda d: d["case"][0].update(momentum=1.5), "momentum"),
        (lambda d: d["case"][0].update(inputs="missing.npz"), "missing.npz"),
        (lambda d: d["case"][0].update(mode=[]), "mode"),
        (lambda d: d["case"][0].update(shape=[100000, 100000, 100]), "shape"),
        (lambda d: d.pop("suite"), "suite"),
        (lambda d: d.update(extra={"a": 1}), "extra"),
        (lambda d: d["defaults"].update(name="x"), "name"),
        # values that str.splitlines() would break the message at (found by the generated-files test below)
        (lambda d: d["case"][0].update(name="\x1e"), "\\x1e"),
        (lambda d: d["case"][0].update(name="a\u2028b"), "\\u2028"),
        (lambda d: d["case"][0].update(dtype="f\n32"), "dtype"),
    ],
)
def test_each_mistake_names_its_field_and_value(tmp_path, capsys, mutate, expect):
    data = {"suite": dict(VALID["suite"]), "defaults": dict(VALID["defaults"]), "case": [dict(VALID["case"][0])]}
    mutate(data)
    p = write(tmp_path, tomli_w.dumps(data))
    code, _, err = run_cli(["list", "cases", "--suite", str(p)], capsys)
    assert_one_line_error(code, err)
    assert str(p) in err and expect in err


def test_invalid_toml_and_binary_garbage(tmp_path, capsys):
    for i, text in enumerate(["[suite\nname=", b"\xff\xfe\x00garbage", "[[case]]\nname = 3\n"]):
        p = write(tmp_path, text, f"bad{i}.toml")
        code, _, err = run_cli(["list", "cases", "--suite", str(p)], capsys)
        assert_one_line_error(code, err)


toml_scalars = st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.booleans(), st.text(max_size=8))
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "name",
        "dtype",
        "shape",
        "axis",
        "mode",
        "backward",
        "fix_gamma",
        "running_var",
        "stats",
        "momentum_dir",
        "eps",
        "momentum",
        "seed",
        "fill",
        "inputs",
        "bogus",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suite=st.one_of(toml_values, st.dictionaries(st.text(max_size=6), toml_values)),
    defaults=st.dictionaries(field_names, toml_values, max_size=4),
    cases=st.lists(st.dictionaries(field_names, toml_values, max_size=8), max_size=3),
    keep_suite_name=st.booleans(),
)
def test_generated_files_give_exit_0_or_one_line(tmp_path, capsys, suite, defaults, cases, keep_suite_name):
    doc = {"suite": {"name": "gen"} if keep_suite_name else suite, "defaults": defaults, "case": cases}
    p = write(tmp_path, tomli_w.dumps(doc))
    code, out, err = run_cli(["list", "cases", "--suite", str(p)], capsys)
    if code != 0:
        assert_one_line_error(code, err)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_generated_garbage_gives_one_line(tmp_path, capsys, blob):
    p = write(tmp_path, blob)
    code, out, err = run_cli(["list", "cases", "--suite", str(p)], capsys)
    if code != 0:
        assert_one_line_error(code, err)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--backend", "nosuch"],
        ["run", "--suite", "nosuch"],
        ["run", "--case", "x,shape=2x3,axis=9"],
        ["run", "--device", "no-such-device-anywhere", "--backend", "numpy"],
        ["run", "--repeats", "0"],
        ["frobnicate"],
        ["run", "--suite"],
    ],
)
def test_bad_options_write_nothing(tmp_path, capsys, args):
    out = tmp_path / "out"
    code, _, err = run_cli(args + ["--out", str(out)] if args[0] == "run" and args[-1] != "--suite" else args, capsys)
    assert_one_line_error(code, err)
    assert not out.exists()


def test_console_entry_point_gives_one_line_too(tmp_path):
    p = write(tmp_path, "[suite]\nname='x'\n[[case]]\nname='a'\nshape=[2,-3]\n")
    r = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--suite", str(p), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "shape" in r.stderr and "-3" in r.stderr and not (tmp_path / "o").exists()
