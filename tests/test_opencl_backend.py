"""Quick self-checks of the OpenCL backend against the numpy peer, on every OpenCL device found.

A smoke test, not the conformance check (that one holds every backend against a float64 oracle).
"""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pytest

from conformance.backends import numpy_ref, opencl, opencl_plan, opencl_tuning
from conformance.backends.base import Result, Skip, TimingPolicy
from conformance.case import Case, Fill
from conformance.generate import generate

REASON = opencl.available()
DEVICES = [] if REASON else [d.key for d in opencl.devices()]
DEVICE_PARAMS = DEVICES or [pytest.param(None, marks=pytest.mark.skip(reason=REASON or "no OpenCL device"))]
QUICK = TimingPolicy(warmup=0, min_repeats=2, max_repeats=2, budget_s=0.0)
RTOL = {"float16": 2e-3, "float32": 1e-4, "float64": 1e-10}
NORMAL = Fill.make("normal")

# name -> Case keyword arguments; every case runs backward too
CASES = {
    "rank2-nc": dict(shape=(16, 5), axis=1, mode="train"),
    "nchw-fixgamma": dict(shape=(4, 3, 5, 6), axis=1, mode="train", fix_gamma=True),
    "nhwc-infer": dict(shape=(2, 5, 6, 3), axis=-1, mode="infer"),
    "nhwc-profile": dict(
        shape=(2, 5, 6, 3), axis=-1, mode="train", running_var="unbiased", stats="invstd", momentum_dir="new"
    ),
    "5d-profile": dict(
        shape=(2, 3, 4, 3, 2), axis=1, mode="train", running_var="unbiased", stats="invstd", momentum_dir="new"
    ),
    "nchw-infer-fixgamma": dict(shape=(3, 4, 2, 5), axis=1, mode="infer", fix_gamma=True),
}
DTYPE_CASES = ["nchw-fixgamma", "5d-profile", "nhwc-infer"]  # also run in float64 and float16


@pytest.fixture(scope="module", params=DEVICE_PARAMS)
def session(request):
    return opencl.open(request.param)


def _case(name, dtype="float32", **over):
    kw = dict(CASES[name], dtype=dtype, backward=True, fill=NORMAL)
    kw.update(over)
    return Case(name=name, **kw)


def _check_against_numpy(session, case):
    reason = opencl.supports(session, case)
    if case.dtype == "float64" and not session.info.fp64:
        assert reason == "device lacks cl_khr_fp64"
        return
    if case.dtype == "float16" and not session.info.fp16:
        assert reason == "device lacks cl_khr_fp16"
        return
    assert reason is None
    inputs = generate(case)
    result = opencl.run(session, case, inputs, QUICK)
    assert isinstance(result, Result)
    assert tuple(result.outputs) == case.outputs
    assert len(result.wall_ms) == 2 and len(result.kernel_ms) == 2
    assert all(t > 0 for t in result.kernel_ms)
    ref = numpy_ref._compute(case, inputs)
    for name in case.outputs:
        got, want = result.outputs[name], ref[name]
        expect_dtype = case.dtype if name in ("y", "dx") else case.param_dtype
        assert got.dtype == np.dtype(expect_dtype), name
        assert got.shape == want.shape == (case.shape if name in ("y", "dx") else (case.channels,)), name
        g, w = got.astype(np.float64), want.astype(np.float64)
        scale = max(float(np.max(np.abs(w))), 1e-30)
        err = float(np.max(np.abs(g - w))) / scale
        assert err <= RTOL[case.dtype], f"{name}: relative error {err:.2e} > {RTOL[case.dtype]:.0e}"
    if case.mode == "infer":  # read back from the device: unchanged, bit for bit
        assert np.array_equal(result.outputs["running_mean"], inputs.running_mean)
        assert np.array_equal(result.outputs["running_var"], inputs.running_var)
    if case.fix_gamma:
        assert not np.any(result.outputs["dgamma"])


@pytest.mark.parametrize("name", list(CASES))
def test_float32_matches_numpy(session, name):
    _check_against_numpy(session, _case(name))


@pytest.mark.parametrize("dtype", ["float64", "float16"])
@pytest.mark.parametrize("name", DTYPE_CASES)
def test_other_dtypes_match_numpy(session, name, dtype):
    _check_against_numpy(session, _case(name, dtype))


def test_offset_data_keeps_float32_accuracy(session):
    case = Case(name="offset", shape=(8, 4, 32, 32), axis=1, mode="train", fill=Fill.make("offset"))
    inputs = generate(case)
    result = opencl.run(session, case, inputs, QUICK)
    x = inputs.x.astype(np.float64).reshape(case.outer, case.channels, case.inner)
    exact = x.var(axis=(0, 2))
    rel = np.abs(result.outputs["var"].astype(np.float64) - exact) / exact
    assert float(np.max(rel)) < 1e-3, rel


def test_nan_and_inf_propagate(session):
    case = Case(name="special", shape=(16, 6, 3), axis=1, mode="train", backward=True, fill=Fill.make("normal"))
    inputs = generate(case)
    x = inputs.x.copy()  # channel 0: +Inf, 1: -Inf, 2: NaN, 3: +Inf and -Inf, 4: a huge value, 5: clean
    x[3, 0, 1], x[5, 1, 2], x[0, 2, 0], x[1, 3, 0], x[2, 3, 2], x[4, 4, 1] = (
        np.inf,
        -np.inf,
        np.nan,
        np.inf,
        -np.inf,
        3e38,
    )
    inputs = dataclasses.replace(inputs, x=x)
    got = opencl.run(session, case, inputs, QUICK).outputs
    ref = numpy_ref._compute(case, inputs)
    for name in case.outputs:
        assert np.array_equal(np.isnan(got[name]), np.isnan(ref[name])), name
        assert np.array_equal(np.isinf(got[name]), np.isinf(ref[name])), name


@pytest.mark.parametrize("local_bytes", [16 * 1024, 48 * 1024, 256 * 1024])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_kernel_tables_fit_in_local_memory(local_bytes, dtype):
    """Wide shapes with few values per channel make choose() group many channels per work-item; its table
    (FUSED_TAB values per channel channel-first, TILE_TAB per channel of a channel-last tile or per position of a
    channel-first group of short rows) must stay within
    half the device's local memory (a launch past the whole of it fails: OUT_OF_RESOURCES on Intel's CPU
    runtime for 2x16384x3 float64 before the cap). The edge suite runs that shape on the real devices."""
    item = np.dtype("float64" if dtype == "float64" else "float32").itemsize
    tune = opencl_tuning.params("unknown device")
    for shape, axis in [
        ((2, 16384, 3), 1),
        ((1, 40000, 2), 1),
        ((2, 4096, 7, 7), 1),
        ((4, 65536), 1),
        ((2, 3, 9000), -1),
        ((32, 64, 56, 56), 1),
    ]:
        case = Case(name="wide", shape=shape, axis=axis, mode="train", dtype=dtype, backward=True, fill=NORMAL)
        how = opencl_plan.choose(tune, 2, local_bytes, case)
        # the kernels' tables: 5 arrays of the tile's channels (cl) or of the group's positions (cft), each
        # padded to a multiple of 8; 56 values per channel of a fused channel-first group (cf)
        group = how.tile_width if how.layout == "cl" else how.channel_group
        width = {"cl": group, "cft": group * case.inner}.get(how.layout)
        values = 5 * -(-width // 8) * 8 if width else 56 * group
        assert group >= 1
        assert values * item <= local_bytes // 2, (shape, how)
        assert opencl_plan.table_values(how, case) == values, (shape, how)


def test_devices_have_safe_unique_keys():
    if REASON:
        pytest.skip(REASON)
    keys = [d.key for d in opencl.devices()]
    assert len(keys) == len(set(keys))
    for key in keys:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", key), key


def test_build_failure_is_a_skip(monkeypatch, tmp_path):
    if not DEVICES:
        pytest.skip(REASON or "no OpenCL device")
    shutil.copytree(opencl.kernels_dir(), tmp_path / "k")
    path = tmp_path / "k" / "cpu_base.cl"  # cf_sums
    source = path.read_text()
    broken = source.replace("*s1 += sums_first(&r);", "*s1 += sums_firsts(&r);")
    assert broken != source, "the line to break has moved: update this test"
    path.write_text(broken)
    monkeypatch.setenv("CONFORMANCE_KERNELS_DIR", str(tmp_path / "k"))
    with pytest.raises(Skip, match="error") as err:  # the build log's first error names the file (#line markers)
        opencl.open(DEVICES[0])
    assert "cpu_base.cl" in str(err.value), err.value


def test_register_runtimes_respects_user_setting(monkeypatch):
    from conformance import opencl_env

    monkeypatch.setenv("OCL_ICD_VENDORS", "/somewhere/else")
    assert opencl_env.register_runtimes() is None
    assert opencl_env.os.environ["OCL_ICD_VENDORS"] == "/somewhere/else"


def test_register_runtimes_keeps_system_vendors(monkeypatch, tmp_path):
    from conformance import opencl_env

    monkeypatch.delenv("OCL_ICD_VENDORS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = opencl_env.register_runtimes()
    if folder is None:
        pytest.skip("no pip-installed OpenCL runtime here")
    names = {p.name for p in (tmp_path / "conformance" / "icd").glob("*.icd")}
    assert names == {p.name for p in opencl_env.SYSTEM_VENDORS.glob("*.icd")} | {opencl_env.INTEL_ICD}
    assert opencl_env.os.environ["OCL_ICD_VENDORS"] == folder
