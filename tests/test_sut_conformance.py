"""The OpenCL kernels against the float64 oracle, on every OpenCL device found, across ranks, axes, dtypes,
modes, flags, fills and profiles. This is the system under test held to the suite's own thresholds."""

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from strategies import runnable_cases

from conformance.backends.base import TimingPolicy
from conformance.case import Case, Fill
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype
from conformance.suite import load

ocl = pytest.importorskip("conformance.backends.opencl", reason="pyopencl is not installed")
from conformance.backends import opencl_plan  # noqa: E402

_reason = ocl.available()
DEVICES = [d for d in ocl.devices() if d.key] if _reason is None else []
if not DEVICES:
    pytest.skip(f"no OpenCL device: {_reason or 'none found'}", allow_module_level=True)

ONCE = TimingPolicy(warmup=0, min_repeats=1, max_repeats=1, budget_s=0)
_sessions = {}


def session(device):
    if device.key not in _sessions:
        _sessions[device.key] = ocl.open(device.key)
    return _sessions[device.key]


def check(device, case):
    check_session(device, session(device), case)


def check_session(device, s, case):
    reason = ocl.supports(s, case)
    if reason is not None:
        lacks = {"float64": "cl_khr_fp64", "float16": "cl_khr_fp16"}.get(case.dtype)
        assert lacks and lacks in reason, f"{device.key} refused a {case.dtype} case: {reason}"
        assert not (device.fp64 if case.dtype == "float64" else device.fp16)
        return
    inputs = generate(case)
    ref = reference(case, inputs)
    result = ocl.run(s, case, inputs, ONCE)
    assert set(result.outputs) == set(case.outputs)
    for out in case.outputs:
        row = compare(out, result.outputs[out], ref.values[out], ref.scales[out], case, expected_dtype(case, out))
        assert row["status"] == "pass", f"{device.key}: {row['reason']}"


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.key)
@pytest.mark.parametrize("case", load("smoke").cases + load("edge").cases, ids=lambda c: c.id)
def test_suites_pass(device, case):
    check(device, case)


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.key)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=runnable_cases())
def test_random_shapes_pass(device, case):
    check(device, case)


# Long channels of few distinct values (float16 data, offset or 7x7 rows): one long chain of additions drifts,
# its roundings leaning one way. With plain running sums these failed on Intel's runtime in float16, var
# norm_err 306 (NCHW 56x56), 1193 (a fused channel-last tile of 16384 rows) and 669 (1024 rows of 7x7).
LONG = [
    ((32, 4, 56, 56), 1, Fill.make("offset", {"mean": 100.0, "std": 1.0})),
    ((16384, 16), 1, Fill.make("normal")),
    ((1024, 4, 7, 7), 1, Fill.make("offset", {"mean": 100.0, "std": 1.0})),
    ((32, 56, 56, 4), -1, Fill.make("offset", {"mean": 100.0, "std": 1.0})),
    ((2, 4, 65536), 1, Fill.make("offset", {"mean": 100.0, "std": 1.0})),
]


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.key)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shape,axis,fill", LONG, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else None)
def test_long_channels_keep_their_accuracy(device, dtype, shape, axis, fill):
    check(device, Case(name="long", shape=shape, axis=axis, dtype=dtype, mode="train", backward=True, fill=fill))


# Large outputs are written with streaming stores (the tuning's nt_bytes, 16 MiB on PoCL and Intel) where every
# 8-value store is aligned: each case is at least that big, channel-first (fused kernels), channel-last (tiles)
# and 7x7 maps (training: tiles of positions; inference: the elementwise kernel in aligned blocks across the
# ends of 49-value rows), and a channel-first shape with too few channels for the fused kernels (staged, its
# elementwise kernels in blocks), so those branches meet the oracle. (A streaming store on a misaligned address
# is a crash, not a wrong value.)
# (dtype, shape, axis, mode, expected streaming flags: the layout's kernels "nt", the elementwise ones "nt_flat")
STREAMING = [
    (dtype, shape, axis, mode, (True, axis == 1))
    for dtype, n in (("float16", 8), ("float32", 4), ("float64", 2))
    for shape, axis in (((n, 64, 128, 128), 1), ((n, 128, 128, 64), -1))
    for mode in ("train", "infer")
    if mode == "train" or dtype == "float32"
]
STREAMING += [
    ("float32", (42, 2048, 7, 7), 1, "train", (True, True)),
    ("float32", (42, 2048, 7, 7), 1, "infer", (False, True)),
    ("float32", (2, 3, 701, 999), 1, "train", (False, True)),
    ("float16", (4, 3, 701, 999), 1, "infer", (False, True)),
]


# Which kernels a shape gets depends on the device's compute units (work is split until there are min_groups
# work-groups per unit): on a host with many cores these shapes would take other branches. So they run with the
# plan of a PLAN_UNITS-unit device, on the real device (the split changes which kernels run and how the work is
# cut, never what is computed): the same branches on every host.
PLAN_UNITS = 2


def planned_for(device, units):
    s = session(device)  # the same context, queues and programs (its cache)
    return dataclasses.replace(s, info=dataclasses.replace(s.info, extra={**s.info.extra, "compute_units": units}))


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.key)
@pytest.mark.parametrize(
    "dtype,shape,axis,mode,flags",
    STREAMING,
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) and isinstance(v[0], int) else str(v),
)
def test_streaming_stores_pass(device, dtype, shape, axis, mode, flags):
    case = Case(name="big", shape=shape, axis=axis, dtype=dtype, mode=mode, backward=True, fill=Fill.make("normal"))
    s = planned_for(device, PLAN_UNITS)
    if s.tuning["nt_bytes"] is None:
        pytest.skip(f"{device.key}: its tuning has no streaming stores")
    how = opencl_plan.choose(s.tuning, PLAN_UNITS, s.info.extra["local_mem_size"], case)
    assert (how.nt, how.nt_flat) == flags, how
    if how.layout == "cf" and how.fused and mode == "train":  # groups one after the other, prefetching
        want = s.tuning["min_groups"] * PLAN_UNITS
        assert how.steps == min(s.tuning["ahead"], -(-case.channels // how.channel_group) // want) > 1, how
    check_session(device, s, case)


def test_planted_bug_is_caught():
    """The same comparison fails a kernel result that was nudged by 1e-3 relative: the check can fail."""
    device = DEVICES[0]
    case = Case(name="plant", shape=(8, 16, 7, 7), backward=True)
    inputs = generate(case)
    ref = reference(case, inputs)
    result = ocl.run(session(device), case, inputs, ONCE)
    for out in case.outputs:
        bad = result.outputs[out] * (1 + 1e-3)
        row = compare(out, bad, ref.values[out], ref.scales[out], case, expected_dtype(case, out))
        assert row["status"] == "fail", out
