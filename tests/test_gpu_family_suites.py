"""The shipped standard and edge suites with the gpu kernel family forced (`--tune family=gpu`) on every OpenCL
device found: GPU-shaped kernels (work-groups of many work-items, local-memory trees) checked for correctness on
CPU runtimes, which run work-groups of any size. Every row must pass, except float16 on a device without
cl_khr_fp16."""

import subprocess
import sys

import pandas as pd
import pytest

ocl = pytest.importorskip("conformance.backends.opencl", reason="pyopencl is not installed")
_reason = ocl.available()
if _reason is not None or not [d for d in ocl.devices() if d.key]:
    pytest.skip(f"no OpenCL device: {_reason or 'none found'}", allow_module_level=True)


@pytest.mark.parametrize("suite", ["standard", "edge"])
def test_suite_passes_with_the_gpu_family(suite, tmp_path):
    out = tmp_path / suite
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "run",
            "--suite",
            suite,
            "--backend",
            "opencl",
            "--tune",
            "family=gpu",
            "--rounds",
            "1",
            "--repeats",
            "1",
            "--history",
            "none",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    rows = pd.read_csv(out / "results.csv", keep_default_na=False, low_memory=False)
    assert len(rows) and set(rows["family"]) == {"gpu"}
    ran = rows[rows["status"] != "unsupported"]
    assert (ran["status"] == "pass").all(), (
        ran[ran["status"] != "pass"][["target", "output", "reason"]].head().to_string()
    )
    refused = rows[rows["status"] == "unsupported"]
    assert refused["reason"].str.contains("cl_khr_fp16").all() and (refused["dtype"] == "float16").all()
