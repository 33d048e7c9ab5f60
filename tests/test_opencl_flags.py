"""The OpenCL system under test on the case fields beyond mode's two (update_running against mode, act,
inplace), on every OpenCL device found, against the float64 oracle at the suite's own thresholds; that in place
really is in place (the buffer the kernels read x from is the one they write y into, and the one read back as
x_after); and that a case with the defaults still builds the program it always built.

Real OpenCL runtime, no mocks. Kept small: each (dtype, act, update switch) is a program of its own, built the
first time a case needs it (pyopencl caches the binaries on disk, so a second run builds nothing).
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance.backends import opencl, opencl_plan, opencl_shared
from conformance.backends.base import TimingPolicy, unimplemented
from conformance.case import Case, Fill
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype
from conformance.suite import load

REASON = opencl.available()
DEVICES = [] if REASON else [d.key for d in opencl.devices()]
DEVICE_PARAMS = DEVICES or [pytest.param(None, marks=pytest.mark.skip(reason=REASON or "no OpenCL device"))]
ONCE = TimingPolicy(warmup=0, min_repeats=1, max_repeats=1, budget_s=0.0)
TWICE = TimingPolicy(warmup=0, min_repeats=2, max_repeats=2, budget_s=0.0)

# (name, Case keyword arguments): every case runs backward too. The shapes take different kernels (on a device of 2
# compute units, as here): 8x16x7x7 fused channel-first groups of short rows, 64x5 a fused channel-last tile,
# 2x3x4x5 axis -1 channel-last tiles, 4x8x40 fused channel-first groups, 3x4x37 a staged channel-first shape
# (too few channels for the fused kernels), whose elementwise kernels walk rows.
CASES = [
    ("relu-nchw", dict(shape=(8, 16, 7, 7), axis=1, mode="train", act="relu")),
    ("sigmoid-nhwc", dict(shape=(2, 3, 4, 5), axis=-1, mode="train", act="sigmoid")),
    ("tanh-nc", dict(shape=(64, 5), axis=1, mode="train", act="tanh", fix_gamma=True)),
    ("relu-infer-staged", dict(shape=(3, 4, 37), axis=1, mode="infer", act="relu")),
    ("keep-running-relu", dict(shape=(4, 8, 40), axis=1, mode="train", update_running=False, act="relu")),
    (
        "infer-update-nchw",
        dict(shape=(8, 16, 7, 7), axis=1, mode="infer", update_running=True, running_var="unbiased", stats="invstd"),
    ),
    ("infer-update-nhwc-tanh", dict(shape=(2, 3, 4, 5), axis=-1, mode="infer", update_running=True, act="tanh")),
    ("inplace-train", dict(shape=(4, 8, 40), axis=1, mode="train", inplace=True)),
    ("inplace-infer-nhwc", dict(shape=(2, 3, 4, 5), axis=-1, mode="infer", inplace=True)),
    ("inplace-all", dict(shape=(64, 5), axis=1, mode="infer", update_running=True, act="sigmoid", inplace=True)),
    (
        "inplace-keep-relu-special",
        dict(
            shape=(3, 4, 37),
            axis=1,
            mode="train",
            update_running=False,
            act="relu",
            inplace=True,
            fill=Fill.make("special"),
        ),
    ),
]
# also in float16 (float data, float accumulation) and float64: two cases, as each (dtype, switches) is a build
DTYPE_CASES = ["relu-nchw", "inplace-all"]


@pytest.fixture(scope="module", params=DEVICE_PARAMS)
def session(request):
    return opencl.open(request.param)


def _case(name, dtype="float32"):
    kw = dict(dict(CASES)[name])
    kw.setdefault("fill", Fill.make("normal"))
    return Case(name=name, dtype=dtype, backward=True, **kw)


def _check(session, case):
    """Every output against the oracle; returns the inputs and the result (None where the device lacks the dtype)."""
    reason = opencl.supports(session, case)
    if reason is not None:
        lacks = {"float64": "cl_khr_fp64", "float16": "cl_khr_fp16"}[case.dtype]
        assert lacks in reason
        return None, None
    assert unimplemented(opencl, case) is None
    inputs = generate(case)
    ref = reference(case, inputs)
    result = opencl.run(session, case, inputs, ONCE)
    assert tuple(result.outputs) == case.outputs
    for out in case.outputs:
        row = compare(out, result.outputs[out], ref.values[out], ref.scales[out], case, expected_dtype(case, out))
        assert row["status"] == "pass", f"{session.info.key} {case.id}: {row['reason']}"
    return inputs, result


@pytest.mark.parametrize("name", [n for n, _ in CASES])
def test_flags_match_the_oracle(session, name):
    case = _case(name)
    inputs, result = _check(session, case)
    out = result.outputs
    if not case.updates_running:  # read back from the device: untouched, bit for bit
        assert np.array_equal(out["running_mean"], inputs.running_mean)
        assert np.array_equal(out["running_var"], inputs.running_var)
    if case.inplace:  # the same buffer read back twice
        assert np.array_equal(out["x_after"], out["y"], equal_nan=True)
        assert np.array_equal(out["dy_after"], out["dx"], equal_nan=True)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
@pytest.mark.parametrize("name", DTYPE_CASES)
def test_flags_in_other_dtypes(session, name, dtype):
    _check(session, _case(name, dtype))


def test_infer_update_normalises_with_the_running_statistics_before_the_update(session):
    """infer + update_running=1: y as plain inference gives it (the running statistics before the update), the
    batch statistics and the updated running ones as training gives them."""
    case = _case("infer-update-nchw")
    inputs = generate(case)
    got = opencl.run(session, case, inputs, ONCE).outputs
    infer = opencl.run(session, Case(**{**_kwargs(case), "update_running": None}), inputs, ONCE).outputs
    train = opencl.run(session, Case(**{**_kwargs(case), "mode": "train"}), inputs, ONCE).outputs
    for name in ("y", "dx"):  # normalised with the batch statistics, these would be far off
        np.testing.assert_allclose(got[name], infer[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name in ("mean", "invstd", "running_mean", "running_var"):
        np.testing.assert_allclose(got[name], train[name], rtol=1e-6, atol=0, err_msg=name)


def _kwargs(case):
    return {
        f: getattr(case, f)
        for f in (
            "name",
            "dtype",
            "shape",
            "axis",
            "mode",
            "backward",
            "fix_gamma",
            "update_running",
            "act",
            "inplace",
            "running_var",
            "stats",
            "momentum_dir",
            "eps",
            "momentum",
            "seed",
            "fill",
        )
    }


@pytest.mark.parametrize("name", ["inplace-train", "inplace-infer-nhwc", "inplace-all"])
def test_inplace_binds_one_buffer_in_and_out(session, name):
    """The forward kernels get x's buffer as both x and y, the backward ones dy's as both dy and dx, and backward
    reads a copy of x taken by the first command of the call; run() reads x_after and dy_after from those
    buffers."""
    case = _case(name)
    inputs = generate(case)
    buffers, launches = opencl_plan.plan(session, case, inputs)
    assert buffers["y"] is buffers["x"] and buffers["dx"] is buffers["dy"]
    assert launches[0] == (opencl_shared.COPY, None, None, (buffers["x"], buffers["x_saved"]))
    forward = [args for kname, _, _, args in launches if kname.startswith(("bn_apply", "bn_fused_train"))]
    backward = [args for kname, _, _, args in launches if kname.startswith(("bn_bwd_apply", "bn_fused_bwd"))]
    assert forward and backward
    for args in forward:
        assert args[0] is buffers["x"] and args[1] is buffers["x"]
    for args in backward:
        assert args[0] is buffers["x_saved"] and args[1] is buffers["dy"] and args[2] is buffers["dy"]
    for kname, _, _, args in launches:  # no backward kernel reads x's buffer, which holds y by then
        if kname.startswith(("bn_bwd", "bn_fused_bwd")):
            assert all(a is not buffers["x"] for a in args), kname
    result = opencl.run(session, case, inputs, TWICE)
    assert any("in place" in note for note in result.notes)


def test_default_cases_build_the_program_they_always_built(session):
    """A case with the defaults needs no switch, so it runs the program open() built with the device's and the
    dtype's options alone; the switches only add -D options. The kernels' signatures in that program are the
    ones they had before the switches existed (argument counts)."""
    import pyopencl as cl

    defaults = [case for case in load("smoke").cases if not case.features]
    assert defaults
    for case in defaults:
        assert opencl_shared.defines(case) == (), case.id
    options = opencl.build_options(session, "float32")
    assert not [o for o in options if o.startswith(("-DACT_", "-DKEEP_RUNNING", "-DNORM_RUNNING"))]
    tune = session.tuning
    assert options[0] == f"-DAPPLY_LS={tune['apply_ls']}"
    assert ("-DNT_STORES" in options) == (tune["nt_bytes"] is not None)
    assert ("-DPREFETCH" in options) == bool(tune["prefetch"])
    assert ("float32",) in session.cache.programs  # what open() built
    program = session.cache.programs[("float32",)]
    assert {name: cl.Kernel(program, name).num_args for name in opencl.KERNELS} == DEFAULT_NUM_ARGS
    relu = Case(name="d", shape=(4, 3), act="relu", mode="infer", update_running=True)
    assert opencl_shared.defines(relu) == ("-DACT_RELU", "-DNORM_RUNNING")
    assert opencl.build_options(session, "float32", opencl_shared.defines(relu)) == options + [
        "-DACT_RELU",
        "-DNORM_RUNNING",
    ]
    assert opencl_shared.defines(Case(name="d", shape=(4, 3), update_running=False)) == ("-DKEEP_RUNNING",)


# argument counts of the default program's kernels (as before act, update_running and inplace existed)
DEFAULT_NUM_ARGS = {
    "bn_fused_train_cf": 23,
    "bn_fused_train_cl": 22,
    "bn_fused_train_cft": 22,
    "bn_fused_bwd_cf": 19,
    "bn_fused_bwd_cl": 19,
    "bn_fused_bwd_cft": 20,
    "bn_stats_partial_cf": 6,
    "bn_stats_partial_cl": 7,
    "bn_stats_final": 17,
    "bn_apply": 14,
    "bn_apply_cl": 15,
    "bn_bwd_partial_cf": 8,
    "bn_bwd_partial_cl": 9,
    "bn_bwd_final": 10,
    "bn_bwd_apply": 18,
    "bn_bwd_apply_cl": 19,
}


def test_every_new_feature_is_implemented():
    for case in (_case(n) for n, _ in CASES):
        assert unimplemented(opencl, case) is None, case.id
    assert {
        "update_running=0",
        "update_running=1",
        "act=relu",
        "act=sigmoid",
        "act=tanh",
        "inplace=1",
    } == opencl.IMPLEMENTS
