"""`conformance conventions` measures each installed framework's conventions from behaviour. The expected
values below are what each framework's documentation states (quoted in its backend module), plus the
deviations this suite found and registered; a release that changes a convention fails here."""

import json
import subprocess
import sys

import pytest

from conformance import conventions

# framework -> {convention: value observed on this suite's pinned versions}
EXPECTED = {
    "torch": {
        "momentum direction": "new",
        "running-variance estimator": "unbiased",
        "default eps": 1e-5,
        "default momentum": 0.1,
        "forward-only training updates running stats": "yes",
        "inference leaves running stats": "yes",
        "normalising variance": "biased",
    },
    "mxnet": {
        "momentum direction": "old",
        "running-variance estimator": "biased",
        "default eps": 0.001,
        "default momentum": 0.9,
        "batch statistic returned": "invstd",
        "forward-only training updates running stats": "no",
    },  # registered deviation
    "mxnet_v1": {"momentum direction": "old", "batch statistic returned": "var (biased)", "default eps": 0.001},
    "mxnet_v1_sym": {"momentum direction": "old", "batch statistic returned": "var (biased)", "default momentum": 0.9},
    "mindspore": {
        "momentum direction": "new",
        "default eps": 1e-5,
        "default momentum": 0.1,
        "running-variance estimator": "unbiased",
    },  # registered deviation: not documented
    "paddle": {
        "momentum direction": "old",
        "running-variance estimator": "biased",
        "default eps": 1e-5,
        "default momentum": 0.9,
        "batch statistic returned": "none",
    },
    "paddle_functional": {"momentum direction": "old", "default eps": 1e-5, "default momentum": 0.9},
    "paddle_static": {
        "momentum direction": "old",
        "running-variance estimator": "biased",
        "default eps": 1e-5,
        "default momentum": 0.9,
        "batch statistic returned": "none",
        "inference leaves running stats": "yes",
    },  # is_test=True in the static graph
    "onnxruntime": {
        "momentum direction": "old",
        "running-variance estimator": "biased",
        "default eps": 1e-5,
        "default momentum": 0.9,
    },
    "onnx_reference": {
        "momentum direction": "old",
        "running-variance estimator": "biased",
        "default eps": 1e-5,
        "default momentum": 0.9,
    },
}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv")
    r = subprocess.run(
        [sys.executable, "-m", "conformance", "conventions", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if r.returncode == 2 and "no framework backend is available" in r.stderr:
        pytest.skip("no framework is installed")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| convention |" in r.stdout
    return json.loads((out / "conventions.json").read_text()), r.stderr


@pytest.mark.parametrize("framework", sorted(EXPECTED))
def test_observed_conventions(measured, framework):
    results, stderr = measured
    if framework not in results:
        pytest.skip(f"{framework} is not installed here: {stderr.strip()[-300:]}")
    got = results[framework]
    assert "error" not in got, got
    for convention, want in EXPECTED[framework].items():
        assert got[convention] == want, f"{framework}: {convention}: got {got[convention]!r}, expected {want!r}"


def test_matrix_marks_a_mismatch():
    results = {
        "fw": {
            "version": "1",
            "documented": {"momentum direction": "old", "default eps": 1e-5},
            "momentum direction": "new",
            "default eps": 1e-5,
        }
    }
    text, mismatches = conventions.matrix(results)
    assert mismatches == 1
    assert "**MISMATCH** doc: old / seen: new" in text and "doc: 1e-05 / seen: 1e-05" in text
