"""`conformance constraints`: every argument constraint a seed API's page states, called on the real frameworks
just inside and just outside (one worker process per framework, one command run for the whole module).

The known results below are what this machine's pinned versions did (mindspore 2.10.0, paddlepaddle 3.3.1,
mxnet 1.9.1); a release that starts or stops enforcing one fails here. A framework that is not installed is
skipped (by name); one that is installed but shows as skip in the table fails."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conformance import cli
from conformance.constraints import CONSTRAINTS, FRAMEWORK

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("constraints")
    r = subprocess.run(
        [sys.executable, "-m", "conformance", "constraints", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out / "constraints.csv", keep_default_na=False)
    return df, r.stdout, (out / "constraints.md").read_text()


def rows_of(table, framework):
    df = table[0]
    d = df[df["framework"] == framework]
    if (d["status"] == "skip").all():
        if importlib.util.find_spec(framework) is None:
            pytest.skip(f"{framework} is not installed: {d['message'].iloc[0]}")
        pytest.fail(f"{framework} is installed but every row is skip: {d['message'].iloc[0]}")
    return d


def one(d, backend, constraint, side):
    r = d[(d["backend"] == backend) & (d["constraint"] == constraint) & (d["side"] == side)]
    assert len(r) == 1, (backend, constraint, side)
    return r.iloc[0]


def test_a_row_per_stated_constraint_and_side(table):
    df, stdout, md = table
    assert len(df) == 2 * len(CONSTRAINTS)
    got = sorted(zip(df["backend"], df["constraint"], df["side"]))
    assert got == sorted((c.backend, c.name, s) for c in CONSTRAINTS for s in ("inside", "outside"))
    assert set(df["status"]) <= {"enforced", "accepted", "crash", "timeout", "skip"}
    assert (df["page"] != "").all() and (df["message"] != "").all()
    # one summary line per framework on stdout; the Markdown table holds every row, its cells escaped
    assert [ln.split()[0].rstrip(":") for ln in stdout.splitlines()] == list(dict.fromkeys(FRAMEWORK.values()))
    assert md.count("\n| ") == len(df) + 1 and "max\\|y-ref" in md


@pytest.mark.parametrize("framework", list(dict.fromkeys(FRAMEWORK.values())))
def test_every_inside_value_is_accepted(table, framework):
    d = rows_of(table, framework)
    inside = d[d["side"] == "inside"]
    assert (inside["status"] == "accepted").all(), inside[inside["status"] != "accepted"][["constraint", "message"]]
    assert inside["message"].str.contains("finite").all()
    assert (inside["finding"] == "no").all()


def test_mindspore_as_observed(table):
    d = rows_of(table, "mindspore")
    assert d["version"].iloc[0].startswith("2.10")
    # mindspore 2.10.0: epsilon=0 is rejected, with the page's range in the message
    r = one(d, "mindspore", "epsilon > 0", "outside")
    assert r["status"] == "enforced" and "eps must be in (0,1]" in r["message"]
    assert one(d, "mindspore", "epsilon <= 1", "outside")["status"] == "enforced"
    # momentum=0 is accepted (the page: [0, 1]) though the rejection of -0.01 says "must be in (0,1]"
    assert one(d, "mindspore", "momentum >= 0", "inside")["status"] == "accepted"
    assert "momentum must be in (0,1]" in one(d, "mindspore", "momentum >= 0", "outside")["message"]
    assert "Tensor[Float64]" in one(d, "mindspore", "input_x dtype", "outside")["message"]
    # a 4D input is accepted (the page says shape (N, C)): a finding
    r = one(d, "mindspore", "input_x shape (N, C)", "outside")
    assert (r["status"], r["finding"]) == ("accepted", "yes") and "(2, 3, 4, 5)" in r["message"]
    # NHWC on the CPU is rejected, but by a copy failure, not a message naming the layout
    assert one(d, "mindspore", "data_format NHWC only on GPU", "outside")["status"] == "enforced"


def test_paddle_as_observed(table):
    d = rows_of(table, "paddle")
    assert d["version"].iloc[0].startswith("3.3")
    # paddle 3.3.1: a lower-case 'nhwc' is accepted and taken as NHWC (y matches the channel-last reference)
    r = one(d, "paddle", "data_layout NCHW/NHWC", "outside")
    assert (r["status"], r["finding"]) == ("accepted", "yes") and "finite" in r["message"]
    assert "ShapeError" in one(d, "paddle", "num_channels, more", "outside")["message"]
    for backend, name in (("paddle", "dtype float32/float64"), ("paddle_functional", "x dtype float32/float64")):
        r = one(d, backend, name, "outside")
        assert r["status"] == "enforced" and "float16" in r["message"]
    assert "data_format must be one of" in one(d, "paddle_functional", "data_format list", "outside")["message"]


def test_mxnet_as_observed(table):
    d = rows_of(table, "mxnet")
    assert d["version"].iloc[0] == "1.9.1"
    # mxnet 1.9.1: nd.BatchNorm takes a gamma/beta of length k+1 or k-1 without a word (k-1 reads past the end:
    # y is garbage); BatchNorm_v1 rejects both
    for name in ("gamma shape (k,), longer", "gamma shape (k,), shorter"):
        r = one(d, "mxnet", name, "outside")
        assert r["status"] in ("accepted", "crash") and r["finding"] == "yes"
        assert "shape mismatch" in one(d, "mxnet_v1", name, "outside")["message"]
    assert "Channel axis out of range" in one(d, "mxnet", "axis in the input shape", "outside")["message"]
    # eps below CUDNN_BN_MIN_EPSILON is accepted on the CPU, where the page's cudnn-only limit does not apply
    r = one(d, "mxnet", "eps >= CUDNN_BN_MIN_EPSILON", "outside")
    assert (r["status"], r["finding"]) == ("accepted", "no") and r["scope"]


def test_unknown_backend_is_a_user_error(capsys, tmp_path):
    assert cli.main(["constraints", "--backend", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope' has no constraints table" in err and "mindspore" in err
    (tmp_path / "file").write_text("")
    assert cli.main(["constraints", "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
