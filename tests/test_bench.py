"""`conformance bench` end to end on a small problem: every column, every phase, the roofline and speedups."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd

SUITE = """[suite]
name = "tiny-perf"
[[case]]
name = "small"
shape = [16, 32, 16, 16]
mode = ["train", "infer"]
backward = true
"""
COLUMNS = [
    "case_id",
    "phase",
    "backend",
    "device",
    "time_ms_median",
    "time_ms_p10",
    "time_ms_p90",
    "gbps",
    "frac_of_copy",
    "speedup_vs_best_framework",
    "peak_rss_mib",
    "kernel_ms_median",
    "copy_ms_median",
    "floor_ms_median",
    "floor_share",
    "traffic_bytes",
    "reads_x",
    "reads_dy",
    "traffic_model",
    "frac_of_traffic",
]


def test_bench_writes_csv_and_md(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "bench",
            "--suite",
            str(suite),
            "--backend",
            "opencl",
            "--backend",
            "numpy",
            "--backend",
            "torch",
            "--backend",
            "onnxruntime",
            "--rounds",
            "2",
            "--repeats",
            "2",
            "--out",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYOPENCL_NO_CACHE": "1"},
    )  # programs compiled afresh: their remarks too
    assert r.returncode == 0, r.stderr[-2000:]
    assert "CompilerWarning" not in r.stderr, r.stderr[-2000:]  # Intel's build remarks are no news to a user
    df = pd.read_csv(tmp_path / "b" / "bench.csv")
    assert set(COLUMNS) <= set(df.columns)
    assert df["case_id"].nunique() == 1  # the suite's two modes are one problem
    assert set(df["phase"]) == {"forward_train", "forward_infer", "backward"}
    ocl = df[df["backend"] == "opencl"]
    fwd_ocl = ocl[ocl["phase"] != "backward"]  # backward is a difference of medians: it may come out <= 0 when tiny
    assert len(ocl) and (fwd_ocl["time_ms_median"] > 0).all() and (fwd_ocl["kernel_ms_median"] > 0).all()
    assert np.isfinite(ocl["time_ms_median"]).all() and (ocl["copy_ms_median"] > 0).all()
    assert (fwd_ocl["frac_of_copy"] > 0).all()
    # the one-command floor is measured for every OpenCL device and the host, and its share is floor / median
    timed = df[(df["backend"].isin(["opencl", "numpy"])) & (df["phase"] != "backward")]
    assert (timed["floor_ms_median"] > 0).all() and np.isfinite(timed["floor_ms_median"]).all()
    assert np.allclose(timed["floor_share"], timed["floor_ms_median"] / timed["time_ms_median"])
    n = 16 * 32 * 16 * 16 * 4
    fwd = df[df["phase"] != "backward"]
    assert (fwd["bytes"] == 2 * n).all() and (df[df["phase"] == "backward"]["bytes"] == 3 * n).all()
    row = fwd_ocl.iloc[0]
    assert np.isclose(row["gbps"], row["bytes"] / (row["time_ms_median"] * 1e-3) / 1e9)
    frameworks = df[df["backend"].isin(["torch", "onnxruntime"])]
    if len(frameworks):  # speedups are against the fastest framework of the phase; ONNX has no backward
        onnx_bwd = df[(df["backend"] == "onnxruntime") & (df["phase"] == "backward")]
        assert onnx_bwd.empty or (onnx_bwd["status"] == "no result").all()
        for _phase, g in df.groupby("phase"):
            best = g[g["backend"].isin(["torch", "onnxruntime"])]["time_ms_median"].min()
            timed = g[g["time_ms_median"] > 0]  # a derived backward on a loaded machine may come out <= 0: no speedup
            assert np.allclose(timed["speedup_vs_best_framework"], best / timed["time_ms_median"], equal_nan=True)
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "## Targets of the OpenCL kernels" in md and "Peak resident memory" in md and "floor of one command" in md
