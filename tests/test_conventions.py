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


# conventions.md (conventions.matrix) and report.html judged "documented vs seen" with two copies of the rule that
# disagreed on the first four cases; expected values written from the rule in conventions.agrees' docstring
AGREEMENT = [
    # documented None for this row means "returns none" (Profile.stats): agrees with "none" (report.html said no)
    ("batch statistic returned", None, "none", True),
    # an int seen is a number: 1 is 1.0 (conventions.md said no)
    ("default momentum", 1.0, 1, True),
    # a bool is not a measurement (report.html compared True as 1 and False as 0)
    ("default momentum", 1.0, True, False),
    ("default eps", 0.0, False, False),
    # cases where both copies agreed, kept
    ("batch statistic returned", None, "var (biased)", False),
    ("batch statistic returned", "var", "var (biased)", True),
    ("batch statistic returned", "invstd", "var (biased)", False),
    ("batch statistic returned", "none", "none", True),
    ("default eps", 1e-5, 1.0009e-5, True),  # within 1e-3 relative
    ("default eps", 1e-5, 1.002e-5, False),
    ("default eps", 1e-3, "error: boom", False),
    ("default momentum", 0.1, None, False),
    ("momentum direction", "new", "new", True),
    ("momentum direction", "old", "new", False),
]


@pytest.mark.parametrize(("row", "documented", "seen", "expected"), AGREEMENT)
def test_agreement_rule(row, documented, seen, expected):
    assert conventions.agrees(row, documented, seen) is expected


def test_markdown_and_html_count_the_same_mismatches():
    from conformance.html_conventions import conventions_section

    results = {
        "fw": {
            "version": "1",
            "documented": {"default momentum": 1.0, "default eps": 1.0, "batch statistic returned": "var"},
            "default momentum": 1,  # agrees: an int is a number
            "default eps": True,  # a bool does not
            "batch statistic returned": "var (biased)",
        }
    }
    _, mismatches = conventions.matrix(results)
    page = conventions_section(results)
    assert mismatches == 1 == page.count('class="mismatch"')
    assert "1 mismatch(es)" in page
