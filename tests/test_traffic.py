"""The traffic-aware roofline of `conformance bench`: the bytes each kernel family's chosen kernels move
(opencl_traffic.traffic, opencl_gpu.traffic, bench.generic_traffic) against hand-computed cases, how bench turns
them into columns, and a real bench run whose bench.csv has them. No timed assertions."""

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from conformance import bench
from conformance.backends import opencl_gpu, opencl_plan, opencl_traffic, opencl_tuning
from conformance.backends.base import DeviceInfo
from conformance.case import Case
from conformance.lifecycle import Target

MIB = 1 << 20
# the cpu family's defaults on a 2-unit CPU device (no tuning entry matches "test-device"): min_groups 4 -> want 8,
# fused_bytes 2 MiB, group_bytes 256 KiB, ahead 1; the gpu family's defaults (wg 256, chunks_per_cu 4)
CPU = opencl_tuning.params("test-device", {"device_type": "cpu", "compute_units": 2, "max_work_group_size": 4096})
GPU = {**CPU, "family": "gpu"}
SMALL = (8, 16, 8, 8)  # C 16, m 512: fused, a group of 2 channels (4 KiB of x) per work-item
LARGE = (64, 3, 512, 512)  # C 3 < 8 work-groups wanted: staged statistics; x 192 MiB


def nbytes(shape, dtype="float32"):
    return math.prod(shape) * np.dtype(dtype).itemsize


def cpu(shape, cache, in_flight=2, **kw):
    case = Case(name="t", shape=shape, **kw)
    how = opencl_plan.choose(CPU, 2, 64 * 1024, case)
    return how, opencl_traffic.traffic(how, case, cache, in_flight)


def gpu(shape, cache, in_flight=2, **kw):
    case = Case(name="t", shape=shape, **kw)
    how = opencl_gpu.choose(GPU, 2, 4096, case)
    return how, opencl_gpu.traffic(how, case, cache, in_flight)


def test_cpu_fused_small_reads_x_once():
    how, t = cpu(SMALL, 32 * MIB)
    assert how.fused and how.channel_group == 2 and how.steps == 1
    n = nbytes(SMALL)
    assert (t["reads_x"], t["reads_dy"], t["writes"], t["bytes"]) == (1, 0, 1, 2 * n)
    assert "fused" in t["why"] and "x read once" in t["why"]
    # 2 work-items in flight x 2 channels x 512 values x 4 B = 8 KiB: over a 4 KiB cache the second read misses
    _, t = cpu(SMALL, 4096)
    assert (t["reads_x"], t["bytes"]) == (2, 3 * n) and "x read twice" in t["why"]


def test_cpu_staged_channel_first_bigger_than_cache_reads_x_twice():
    how, t = cpu(LARGE, 32 * MIB)
    n = nbytes(LARGE)
    assert not how.fused and how.layout == "cf" and n == 192 * MIB
    assert (t["reads_x"], t["reads_dy"], t["writes"], t["bytes"]) == (2, 0, 1, 3 * n)
    assert t["why"] == "forward staged, x 192 MiB > 32 MiB cache: x read twice"
    _, t = cpu(LARGE, 256 * MIB)  # the same kernels, x within the cache: once
    assert (t["reads_x"], t["bytes"]) == (1, 2 * n)


def test_inference_reads_x_once_and_writes_y_once():
    for fn in (cpu, gpu):
        for shape in (SMALL, LARGE):
            _, t = fn(shape, 1 * MIB, mode="infer")
            assert (t["reads_x"], t["reads_dy"], t["writes"], t["bytes"]) == (1, 0, 1, 2 * nbytes(shape))


def test_backward_reads_x_and_dy():
    n = nbytes(LARGE)
    _, t = cpu(LARGE, 32 * MIB, backward=True)  # forward: x twice; backward: x + dy 384 MiB, each twice
    assert (t["reads_x"], t["reads_dy"], t["writes"], t["bytes"]) == (4, 2, 2, 8 * n)
    assert "backward staged, x + dy 384 MiB > 32 MiB cache: x, dy read twice" in t["why"]
    _, t = cpu(SMALL, 32 * MIB, backward=True)  # both fused, in cache: x once per pass, dy once
    assert (t["reads_x"], t["reads_dy"], t["writes"], t["bytes"]) == (2, 1, 2, 5 * nbytes(SMALL))
    _, t = cpu(SMALL, 32 * MIB, backward=True, inplace=True)  # + the copy of x the call takes first
    assert (t["reads_x"], t["writes"], t["bytes"]) == (3, 3, 7 * nbytes(SMALL))
    _, t = cpu(SMALL, 32 * MIB, backward=True, act="relu")  # an act program has no fused backward: staged
    assert "backward staged, x + dy" in t["why"] and t["reads_dy"] == 1


def test_gpu_family():
    how, t = gpu(SMALL, 32 * MIB)  # 8192 values: one launch, one chunk
    assert how.fused and how.chunks == 1 and (t["reads_x"], t["bytes"]) == (1, 2 * nbytes(SMALL))
    how, t = gpu(LARGE, 32 * MIB, backward=True)  # 3 tiles x 3 chunks: partial -> final -> apply, x and dy twice
    assert not how.fused and how.chunks == 3
    assert (t["reads_x"], t["reads_dy"], t["bytes"]) == (4, 2, 8 * nbytes(LARGE))
    # backward normalised with the running statistics: dx needs no sums, the partial kernel writes it
    _, t = gpu(LARGE, 32 * MIB, backward=True, mode="infer")
    assert (t["reads_x"], t["reads_dy"], t["writes"]) == (2, 1, 2)


def test_generic_model_and_backward_difference():
    n = nbytes(LARGE)
    llc = (32 * MIB, "test")
    fwd = bench.generic_traffic(Case(name="t", shape=LARGE), llc)
    step = bench.generic_traffic(Case(name="t", shape=LARGE, backward=True), llc)
    assert (fwd["reads_x"], fwd["bytes"]) == (2, 3 * n) and "(test)" in fwd["why"]
    bwd = bench._backward_traffic(step, fwd)
    assert (bwd["reads_x"], bwd["reads_dy"], bwd["bytes"]) == (2, 2, 5 * n)
    assert bwd["why"].startswith("generic backward,") and "forward" not in bwd["why"].split(",")[0]
    small = bench.generic_traffic(Case(name="t", shape=SMALL, backward=True), llc)
    assert (small["reads_x"], small["reads_dy"], small["bytes"]) == (2, 1, 5 * nbytes(SMALL))


def test_rows_frac_of_traffic_is_frac_of_copy_on_the_moved_bytes():
    """bench._rows on made-up times: a forward that reads x twice is held to 3n bytes, not 2n."""
    case = Case(name="t", shape=LARGE)
    t = Target(backend="opencl", device=DeviceInfo(key="dev", extra={"family": "cpu", "tuning": ""}), state="ready")
    walls = {(t.label, "forward_train"): [10.0], (t.label, "forward_infer"): [6.0], (t.label, "train_step"): [30.0]}
    traffic = {
        (t.label, "forward_train"): cpu(LARGE, 32 * MIB)[1],
        (t.label, "forward_infer"): cpu(LARGE, 32 * MIB, mode="infer")[1],
        (t.label, "train_step"): cpu(LARGE, 32 * MIB, backward=True)[1],
    }
    rows = bench._rows(case, [t], walls, {k: [] for k in walls}, {}, {t.label: [4.0]}, {t.label: [0.01]}, traffic)
    got = {r["phase"]: r for r in rows}
    assert set(got) == {"forward_train", "forward_infer", "backward"}
    assert got["forward_train"]["reads_x"] == 2 and np.isclose(got["forward_train"]["frac_of_copy"], 0.4)
    assert np.isclose(got["forward_train"]["frac_of_traffic"], 0.6)  # 4 ms x 3n / 2n / 10 ms
    assert np.isclose(got["forward_infer"]["frac_of_traffic"], got["forward_infer"]["frac_of_copy"])
    b = got["backward"]  # 20 ms; x and dy twice each, dx once: 5n against 3n
    assert (b["reads_x"], b["reads_dy"], b["traffic_bytes"]) == (2, 2, 5 * nbytes(LARGE))
    assert np.isclose(b["frac_of_copy"], 1.5 * 4 / 20) and np.isclose(b["frac_of_traffic"], 2.5 * 4 / 20)


SUITE = """[suite]
name = "tiny-traffic"
[[case]]
name = "nchw"
shape = [8, 16, 8, 8]
mode = ["train"]
backward = true
[[case]]
name = "nhwc"
shape = [8, 8, 8, 16]
axis = -1
mode = ["train"]
backward = true
"""


def test_bench_csv_has_the_traffic_columns(tmp_path):
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
            "--rounds",
            "2",
            "--repeats",
            "2",
            "--out",
            str(tmp_path / "b"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(tmp_path / "b" / "bench.csv")
    assert {"traffic_bytes", "reads_x", "reads_dy", "traffic_model", "frac_of_traffic"} <= set(df.columns)
    assert (
        set(df["backend"]) >= {"opencl", "numpy"}
        and df["traffic_model"].map(lambda s: isinstance(s, str) and s != "").all()
    )
    assert (df["traffic_bytes"] >= df["bytes"]).all()
    assert (df[df["phase"] == "forward_infer"]["reads_x"] == 1).all() and (
        df[df["phase"] != "backward"]["reads_dy"] == 0
    ).all()
    assert (df[df["phase"] == "backward"]["reads_dy"] >= 1).all()
    ocl = df[df["backend"] == "opencl"]
    assert not ocl["traffic_model"].str.startswith("generic").any()  # the OpenCL rows state their own kernels
    assert df[df["backend"] == "numpy"]["traffic_model"].str.startswith("generic").all()
    timed = df[np.isfinite(df["time_ms_median"]) & (df["time_ms_median"] > 0)]
    assert len(timed) and np.isfinite(timed["frac_of_traffic"]).all()
    assert np.allclose(timed["frac_of_traffic"], timed["frac_of_copy"] * timed["traffic_bytes"] / timed["bytes"])
    assert (timed["frac_of_traffic"] >= timed["frac_of_copy"]).all()
    twice = timed[(timed["phase"] != "forward_infer") & (timed["reads_x"] == 2)]
    assert (twice["frac_of_traffic"] > twice["frac_of_copy"]).all()
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "frac of traffic" in md and "traffic per row" in md and "min_frac_of_traffic_16MB+" in md
