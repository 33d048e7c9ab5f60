"""A real broken OpenCL device: PyPI's PoCL 3.0 (pocl-binary-distribution), registered next to the working
runtimes. What it does depends on the CPU: on CPUs its LLVM does not know every program build fails ("unknown
target CPU 'generic'", seen on Zen 5); on AVX-512 hosts it builds float32 programs, then spends about two minutes
on the float64 program and aborts ("LLVM ERROR: Cannot emit physreg copy instruction"), after which its kernel
cache holds a program without kernels; on a Zen 2/3 host it builds and passes.

So the test holds the run to what the suite guarantees whatever a broken device does: the run completes with
its report, exit code 1 exactly when an unexpected status is present; every case has rows on every device; the
broken device's rows carry a status from the closed set and a reason saying what happened; and the working
devices' rows are those of the same run without the broken device. A small suite of its own (a float64 case
between two float32 ones, so the broken device must come back after it) and a --timeout derived from the run
without the broken device keep it short on any host."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conformance import opencl_env
from conformance.suite import load

SUITE = """[suite]
name = "broken-device"
[defaults]
backward = true
[[case]]
name = "first-f32"
shape = [4, 6, 5, 5]
[[case]]
name = "f64"
dtype = "float64"
shape = [4, 6, 5, 5]
[[case]]
name = "after-f32"
shape = [3, 4, 5, 6]
axis = -1
mode = "infer"
"""
# The README's closed set of statuses, and the ones that make `conformance run` exit 1.
STATUSES = {"pass", "fail", "unsupported", "skip", "error", "crash", "timeout", "xfail", "xpass"}
UNEXPECTED = {"fail", "error", "crash", "timeout", "xpass"}
# What a device may give: no known deviation names an OpenCL device, so never xfail or xpass.
DEVICE_STATUSES = {"pass", "unsupported", "skip", "crash", "error", "timeout", "fail"}


@pytest.fixture(scope="module")
def vendors(tmp_path_factory):
    """Two ICD folders: the working runtimes (the system's and Intel's from PyPI), and the same plus PoCL 3.0."""
    target = tmp_path_factory.mktemp("pocl30")
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            "pocl-binary-distribution==3.0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    libs = list((target / "pyopencl" / ".libs").glob("libpocl*.so"))
    if pip.returncode != 0 or not libs:
        pytest.skip(
            "pocl-binary-distribution 3.0 cannot be installed here: "
            f"{(pip.stderr or 'no libpocl').strip().splitlines()[-1]}"
        )
    working = tmp_path_factory.mktemp("working-vendors")
    for icd in Path("/etc/OpenCL/vendors").glob("*.icd"):
        shutil.copy(icd, working)
    intel = opencl_env._find_intel_runtime()
    if intel is not None:
        (working / "intel-cpu.icd").write_text(f"{intel}\n")
    if not list(working.glob("*.icd")):
        pytest.skip("no working OpenCL runtime is installed (Debian: apt-get install pocl-opencl-icd)")
    broken = tmp_path_factory.mktemp("with-broken-vendors")
    for icd in working.glob("*.icd"):
        shutil.copy(icd, broken)
    (broken / "pocl30-pypi.icd").write_text(f"{libs[0]}\n")
    return working, broken


def run(vendors_dir, suite, out, cache, timeout_s=None):
    """`conformance run` of the OpenCL backend on these vendors; PoCL's kernel cache in `cache`, so every test run
    starts from the same (cold) cache whatever earlier runs left in ~/.cache/pocl."""
    env = {**os.environ, "OCL_ICD_VENDORS": str(vendors_dir), "POCL_CACHE_DIR": str(cache)}
    args = [
        sys.executable,
        "-m",
        "conformance",
        "run",
        "--suite",
        str(suite),
        "--backend",
        "opencl",
        "--out",
        str(out),
        "--repeats",
        "2",
        "--history",
        "none",
    ] + (["--timeout", f"{timeout_s:.0f}"] if timeout_s else [])
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    return r, time.monotonic() - t0


def test_broken_device_gets_rows_with_reasons_and_the_others_are_untouched(vendors, tmp_path):
    working, broken = vendors
    suite = tmp_path / "broken-device.toml"
    suite.write_text(SUITE)
    case_ids = {c.id for c in load(str(suite)).cases}
    cache = tmp_path / "pocl-cache"
    cache.mkdir()

    # the working devices alone: they pass, and their elapsed time bounds what one case takes on one of them
    r0, elapsed = run(working, suite, tmp_path / "alone", cache)
    assert r0.returncode == 0, r0.stderr[-2000:]
    alone = pd.read_csv(tmp_path / "alone" / "results.csv")
    assert set(alone["status"]) <= {"pass", "unsupported"}, alone[alone["status"] != "pass"]["reason"].head().tolist()
    assert alone["target"].nunique() >= 1 and set(alone["case_id"]) == case_ids

    # with the broken device: a case that takes it longer than the whole run above took is cut off by --timeout
    # (twice that, plus slack for a loaded machine: no working device comes near it)
    out = tmp_path / "with-broken"
    r, _ = run(broken, suite, out, cache, timeout_s=2 * elapsed + 10)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    for name in ("results.csv", "summary.md", "run.json"):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "results.csv")
    meta = json.loads((out / "run.json").read_text())
    summary = (out / "summary.md").read_text()
    plain = html.unescape(summary.replace("\\", ""))  # as rendered: Markdown escapes and entities undone
    assert set(df["status"]) <= STATUSES
    assert r.returncode == (1 if df["status"].isin(UNEXPECTED).any() else 0), (
        r.returncode,
        df["status"].value_counts(),
    )

    devices = {t["target"]: device_identity(t["device"] or {}) for t in meta["targets"]}
    pypi = [
        label for label, t in zip(devices, meta["targets"]) if t["device"] and t["device"]["driver"].startswith("3.0")
    ]
    assert len(pypi) == 1, meta["targets"]
    pocl30 = df[df["target"] == pypi[0]]
    others = df[df["target"] != pypi[0]]

    # no row lost: every case on every target, the broken one included, with every output of the case
    assert set(df["target"]) == set(devices)
    for target, rows in df.groupby("target"):
        assert set(rows["case_id"]) == case_ids, target
    outputs = sorted(map(tuple, alone[alone["target"] == alone["target"].iloc[0]][["case_id", "output"]].values))
    assert sorted(map(tuple, pocl30[["case_id", "output"]].values)) == outputs

    # the working devices' rows are those of the run without the broken device (matched by device, not by key: a
    # key gets a suffix when another runtime names its device alike): same statuses, same results
    alone_meta = json.loads((tmp_path / "alone" / "run.json").read_text())
    alone = alone.assign(
        device_id=alone["target"].map({t["target"]: device_identity(t["device"] or {}) for t in alone_meta["targets"]})
    )
    others = others.assign(device_id=others["target"].map(devices))
    key = ["case_id", "device_id", "output"]
    both = others.merge(alone, on=key, how="outer", suffixes=("", "_alone"), indicator=True)
    assert (both["_merge"] == "both").all(), both[both["_merge"] != "both"][key]
    assert (both["status"] == both["status_alone"]).all()
    pd.testing.assert_series_equal(both["max_abs_err"], both["max_abs_err_alone"], check_names=False)

    # the broken device: a status from the closed set, and a reason for every row that does not pass
    assert set(pocl30["status"]) <= DEVICE_STATUSES, pocl30["status"].value_counts()
    notpass = pocl30[pocl30["status"] != "pass"]
    assert notpass["reason"].notna().all()
    for row in notpass.itertuples():
        what = row.reason.removesuffix(f" [{row.case_id}]").strip()
        assert what, row
        if row.status == "crash":  # how the worker ended
            assert re.search(r"worker died \((killed by SIG\w+|exit code -?\d+)\)", what), what
        elif row.status == "timeout":
            assert "no answer within" in what, what
        elif row.status == "error":  # an exception and its message, or why the worker could not start again
            assert re.match(r"[\w.]+: \S", what), what
        elif row.status == "unsupported":
            assert re.search(r"cl_khr_fp(16|64)", what), what
        assert row.reason in plain, row.reason  # listed in the summary, with the command that re-runs it
        assert f"conformance run --case {row.case_id} --backend opencl --device {row.device}" in plain
    assert counts_in_summary(summary, pypi[0]) == pocl30["status"].value_counts().to_dict()

    if "skip" in set(
        pocl30["status"]
    ):  # its compiler fails on this CPU: the device is skipped, whole, with the build error
        assert set(pocl30["status"]) == {"skip"}
        assert pocl30["reason"].str.match(r"OpenCL build of bn_common.h \+ (cpu|gpu)_\*\.cl for float32 failed: ").all()
        if pocl30["reason"].str.contains("unknown target CPU").any():
            assert "unknown target CPU" in plain


def device_identity(device: dict) -> tuple:
    return tuple(device.get(k) for k in ("platform", "name", "vendor", "driver", "version"))


def counts_in_summary(summary: str, target: str) -> dict:
    """{status: rows} of one target in summary.md's table of results per target."""

    def cells(line):
        return [c.strip().strip("`").replace("\\", "") for c in line.strip().strip("|").split("|")]

    lines = summary.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| target |") and ln.rstrip().endswith("| rows |"))
    row = next(cells(ln) for ln in lines[head + 2 :] if ln.startswith("|") and cells(ln)[0] == target)
    return {s: int(n) for s, n in zip(cells(lines[head]), row) if s not in ("target", "rows") and n not in ("", "0")}
