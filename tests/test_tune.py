"""The OpenCL kernel family and its parameters: chosen per device from its properties and the tuning table
(opencl_tuning.py), overridable for a run with `--tune KEY=VALUE` (run, bench, and the pytest plugin's
--conformance-tune), which reaches the OpenCL workers and is recorded: run.json `tune`, the report headers, and
the family and tuning columns of results.csv and bench.csv (empty for every backend but OpenCL).

Real OpenCL runtimes, no mocks: the CLI runs as a user runs it, on one small case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conformance.backends import opencl, opencl_tuning
from conformance.lifecycle import tuned

REASON = opencl.available()
DEVICES = [] if REASON else opencl.devices()
needs_device = pytest.mark.skipif(not DEVICES, reason=REASON or "no OpenCL device")
CASE = (
    "v,dtype=float32,shape=4x3x10,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,"
    "eps=1e-05,momentum=0.9,seed=0,fill=normal:mean=0.0:std=1.0"
)


def cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "conformance", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# ---- the choice ---------------------------------------------------------------------------------------------
@needs_device
def test_family_comes_from_the_device_properties():
    """These devices are CPUs: each gets the cpu family, by its properties, in its DeviceInfo and its session;
    a device that says GPU gets the gpu family (the same function, on its properties), Oclgrind (a GPU by its
    type) the cpu family by its table entry, an unknown device the defaults."""
    import pyopencl as cl

    for info, dev in opencl.enumerate_devices():
        props = opencl.props(dev)
        assert props["device_type"] == "cpu" and dev.type & cl.device_type.CPU, info.key
        assert props["compute_units"] == dev.max_compute_units and props["max_work_group_size"] >= 1
        tune = opencl_tuning.params(info.key, props)
        assert tune["family"] == "cpu"
        assert info.extra["family"] == "cpu" and info.extra["tuning"] == opencl_tuning.compact(tune)
        assert info.extra["tuning"].startswith("apply_ls=") and "wg=" not in info.extra["tuning"]
        as_gpu = opencl_tuning.params("some-gpu", {**props, "device_type": "gpu", "max_work_group_size": 128})
        assert as_gpu["family"] == "gpu" and as_gpu["wg"] == 128  # the default 256, fitted to the device's limit
        assert opencl_tuning.compact(as_gpu).startswith("wg=128;chunks_per_cu=")
    session = opencl.open(DEVICES[0].key)
    assert session.family == "cpu" and session.planner.__name__.endswith("opencl_plan")
    assert opencl_tuning.params("oclgrind-oclgrind-simulator", {"device_type": "gpu"})["family"] == "cpu"
    unknown = opencl_tuning.params("unknown device")
    assert unknown["family"] == "cpu" and unknown["wg"] == opencl_tuning.GPU_DEFAULT["wg"]


def test_overrides_parse_and_check():
    got = opencl_tuning.parse_overrides(["family=gpu", "wg=64", "nt_bytes=none", "prefetch=false", "seg=0x1000"])
    assert got == {"family": "gpu", "wg": 64, "nt_bytes": None, "prefetch": False, "seg": 4096}
    assert opencl_tuning.params("pocl-x", {"device_type": "cpu"}, {"family": "gpu", "wg": 64})["wg"] == 64
    for bad in ("wg", "=3", "nope=1", "wg=abc", "wg=1.5", "wg=0", "family=tpu", "prefetch=1", "nt_bytes=-1"):
        with pytest.raises(ValueError) as err:
            opencl_tuning.parse_overrides([bad])
        assert repr(bad) in str(err.value) and "\n" not in str(err.value), bad


def test_tuned_sets_and_restores_the_worker_environment(monkeypatch):
    monkeypatch.setenv(opencl_tuning.ENV, '{"wg": 32}')
    with tuned({"family": "gpu"}):
        assert json.loads(os.environ[opencl_tuning.ENV]) == {"family": "gpu"}
        assert opencl_tuning.env_overrides() == {"family": "gpu"}
    with tuned(None):  # no --tune: a variable left in the shell does not apply unrecorded
        assert opencl_tuning.ENV not in os.environ
    assert os.environ[opencl_tuning.ENV] == '{"wg": 32}'


# ---- the CLI ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "bench"])
@pytest.mark.parametrize("value", ["wg=abc", "colour=blue", "family=tpu", "wg"])
def test_bad_tune_is_one_line_exit_2(tmp_path, command, value):
    r = cli(command, "--case", CASE, "--out", str(tmp_path / "out"), "--tune", "family=cpu", "--tune", value)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tune" in lines[0] and repr(value) in lines[0], r.stderr
    assert not (tmp_path / "out").exists()  # refused before anything runs


@needs_device
def test_tune_family_gpu_reaches_the_workers_and_is_recorded(tmp_path):
    """`--tune family=gpu --tune wg=64` on the CPU devices: every OpenCL row ran the gpu family with wg=64 (the
    family's kernels are there: the rows pass), numpy's rows have empty family and tuning, and run.json, summary.md
    and report.html say the overrides."""
    out = tmp_path / "out"
    r = cli(
        "run",
        "--case",
        CASE,
        "--backend",
        "opencl",
        "--backend",
        "numpy",
        "--out",
        str(out),
        "--history",
        "none",
        "--repeats",
        "1",
        "--rounds",
        "1",
        "--tune",
        "family=gpu",
        "--tune",
        "wg=64",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    sut, peer = df[df["backend"] == "opencl"], df[df["backend"] == "numpy"]
    assert len(sut) and len(peer)
    assert set(sut["family"]) == {"gpu"}
    assert all(t.startswith("wg=64;chunks_per_cu=") for t in sut["tuning"]), set(sut["tuning"])
    assert set(peer["family"]) == {""} and set(peer["tuning"]) == {""}
    assert set(sut["status"]) == {"pass"}, sut[["output", "status", "reason"]]
    meta = json.loads((out / "run.json").read_text())
    assert meta["tune"] == {"family": "gpu", "wg": 64}
    assert {t["device"]["extra"]["family"] for t in meta["targets"] if t["backend"] == "opencl"} == {"gpu"}
    assert "Tuning overrides (--tune): family=gpu, wg=64" in (out / "summary.md").read_text()
    html = (out / "report.html").read_text()
    assert "Tuning overrides (--tune)" in html and "family=gpu, wg=64" in html


@needs_device
def test_a_family_without_kernels_is_unsupported_with_the_reason(tmp_path):
    """With no gpu_*.cl files, --tune family=gpu makes every OpenCL row unsupported, saying why: never a quiet
    run of the cpu family."""
    kernels = tmp_path / "kernels"
    shutil.copytree(opencl.kernels_dir(), kernels, ignore=shutil.ignore_patterns("gpu_*"))
    out = tmp_path / "out"
    r = cli(
        "run",
        "--case",
        CASE,
        "--backend",
        "opencl",
        "--out",
        str(out),
        "--history",
        "none",
        "--repeats",
        "1",
        "--rounds",
        "1",
        "--tune",
        "family=gpu",
        env={"CONFORMANCE_KERNELS_DIR": str(kernels)},
    )
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert len(df) and set(df["status"]) == {"unsupported"}, r.stdout + r.stderr
    assert df["reason"].str.contains("gpu kernel family has no kernel files").all(), set(df["reason"])
    assert set(df["family"]) == {"gpu"}


@needs_device
def test_bench_csv_has_family_and_tuning(tmp_path):
    """No --tune: the devices' own choice (cpu here) in bench.csv, empty for numpy; bench.json says no overrides."""
    out = tmp_path / "bench"
    r = cli(
        "bench",
        "--case",
        CASE,
        "--backend",
        "opencl",
        "--backend",
        "numpy",
        "--out",
        str(out),
        "--rounds",
        "1",
        "--repeats",
        "1",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_csv(out / "bench.csv", keep_default_na=False)
    sut, peer = df[df["backend"] == "opencl"], df[df["backend"] == "numpy"]
    assert set(sut["family"]) == {"cpu"} and all(t.startswith("apply_ls=") for t in sut["tuning"])
    assert set(peer["family"]) == {""} and set(peer["tuning"]) == {""}
    assert json.loads((out / "bench.json").read_text())["tune"] == {}
