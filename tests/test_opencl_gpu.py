"""The `gpu` kernel family (kernels_cl/gpu_*.cl, conformance/backends/opencl_gpu.py) forced on every OpenCL device
found (`--tune family=gpu`, here through CONFORMANCE_OPENCL_TUNE as the workers get it), run by the OpenCL
backend itself and held against the float64 oracle at the suite's thresholds; its launches (a single fused
launch for small problems, partial -> final -> elementwise otherwise, chunks from the compute units); and
determinism: the same device gives the same bits on every run (no floating-point atomics, fixed reduction order).

Real OpenCL runtime (PoCL, Intel's CPU runtime: both run work-groups of any size), no mocks. The tuning variants
force each path on every shape: `staged` (no single launch), `narrow` (work-groups of 64, tiles of at most 8
channels, many chunks per channel).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from conformance.backends import opencl, opencl_gpu, opencl_tuning
from conformance.backends.base import TimingPolicy, unimplemented
from conformance.case import Case, Fill
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype

REASON = opencl.available()
DEVICES = [] if REASON else [d.key for d in opencl.devices()]
ONCE = TimingPolicy(warmup=0, min_repeats=1, max_repeats=1, budget_s=0.0)
VARIANTS = {
    "default": {},
    "staged": {"single_launch_max": 0, "tile_max": 0},
    "narrow": {"wg": 64, "lanes": 8, "chunks_per_cu": 64, "min_per_item": 1},
}

# (name, Case keyword arguments): rank 2 to 5, both layouts, 1 and 2048 channels, 120000 and 301056 values per
# channel, every mode / update_running / act / inplace combination kind, the profiles, fills normal, offset,
# special (NaN, Inf), exact.
CASES = [
    ("nchw-7x7", dict(shape=(8, 16, 7, 7), axis=1, mode="train", backward=True)),
    ("nhwc-2048", dict(shape=(16, 2048), axis=1, mode="train", backward=True, act="relu")),
    ("one-channel-long", dict(shape=(4, 1, 300, 100), axis=1, mode="train", backward=True, fill=Fill.make("offset"))),
    ("nhwc-long", dict(shape=(100352, 3), axis=1, mode="train", backward=True, act="sigmoid", inplace=True)),
    (
        "rank5-axis2",
        dict(
            shape=(2, 4, 3, 5, 6),
            axis=2,
            mode="infer",
            update_running=True,
            act="tanh",
            inplace=True,
            backward=True,
            running_var="unbiased",
        ),
    ),
    (
        "special-nhwc",
        dict(
            shape=(3, 100, 2),
            axis=-1,
            mode="train",
            backward=True,
            act="sigmoid",
            fill=Fill.make("special", {"fraction": 0.05}),
        ),
    ),
    ("special-nchw", dict(shape=(2, 5, 40), axis=1, mode="infer", backward=True, fill=Fill.make("special"))),
    ("exact-infer", dict(shape=(4, 6, 4, 4), axis=1, mode="infer", backward=True, fill=Fill.make("exact"))),
    (
        "tiny-profile",
        dict(
            shape=(2, 3),
            axis=1,
            mode="train",
            backward=True,
            fix_gamma=True,
            running_var="unbiased",
            stats="invstd",
            momentum_dir="new",
            momentum=0.3,
        ),
    ),
    (
        "keep-running",
        dict(shape=(8, 3, 20, 20), axis=1, mode="train", update_running=False, act="relu", inplace=True, backward=True),
    ),
    ("infer-forward-nhwc", dict(shape=(8, 16, 7, 7), axis=-1, mode="infer", inplace=True, act="relu")),
    ("one-value-per-channel", dict(shape=(1, 7), axis=1, mode="infer", update_running=True, backward=True)),
]
DTYPE_CASES = ["nchw-7x7", "rank5-axis2", "special-nhwc"]  # also float16 (where the device has it) and float64
VARIANT_CASES = ["nchw-7x7", "one-channel-long", "rank5-axis2", "special-nhwc", "tiny-profile", "keep-running"]


def _open(key, overrides):
    old = os.environ.get(opencl_tuning.ENV)
    os.environ[opencl_tuning.ENV] = json.dumps({"family": "gpu", **overrides})
    try:
        return opencl.open(key)
    finally:
        if old is None:
            del os.environ[opencl_tuning.ENV]
        else:
            os.environ[opencl_tuning.ENV] = old


_SESSIONS: dict = {}


def _session(key, variant="default"):
    if REASON or key is None:
        pytest.skip(REASON or "no OpenCL device")
    if (key, variant) not in _SESSIONS:
        _SESSIONS[(key, variant)] = _open(key, VARIANTS[variant])
    return _SESSIONS[(key, variant)]


def _case(name, dtype="float32"):
    return Case(name=name, dtype=dtype, **dict(CASES)[name])


def _check(session, case):
    """Every output against the oracle; returns the outputs (None where the device lacks the dtype)."""
    assert session.family == "gpu" and session.planner is opencl_gpu
    reason = opencl.supports(session, case)
    if reason is not None:
        assert case.dtype in ("float16", "float64") and "lacks" in reason, reason
        return None
    assert unimplemented(opencl, case) is None
    inputs = generate(case)
    ref = reference(case, inputs)
    result = opencl.run(session, case, inputs, ONCE)
    assert tuple(result.outputs) == case.outputs
    for out in case.outputs:
        row = compare(out, result.outputs[out], ref.values[out], ref.scales[out], case, expected_dtype(case, out))
        assert row["status"] == "pass", f"{session.info.key} {case.id}: {out} {row['reason']}"
    if case.inplace:
        assert np.array_equal(result.outputs["x_after"], result.outputs["y"], equal_nan=True)
    if not case.updates_running:
        assert np.array_equal(result.outputs["running_mean"], inputs.running_mean)
    return result.outputs


DEVICE_PARAMS = DEVICES or [None]


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("name", [n for n, _ in CASES])
def test_gpu_family_matches_the_oracle(device, name):
    _check(_session(device), _case(name))


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("dtype", ["float16", "float64"])
@pytest.mark.parametrize("name", DTYPE_CASES)
def test_gpu_family_in_other_dtypes(device, name, dtype):
    _check(_session(device), _case(name, dtype))


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("variant", ["staged", "narrow"])
@pytest.mark.parametrize("name", VARIANT_CASES)
def test_every_path_matches_the_oracle(device, variant, name):
    session = _session(device, variant)
    case = _case(name)
    names = [launch[0] for launch in opencl_gpu.plan(session, case, generate(case))[1]]
    if variant == "staged" and case.backward and case.normalize_with == "batch":
        assert names[-3:] == ["gbn_bwd_partial", "gbn_bwd_final", "gbn_bwd_dx"], names
    _check(session, case)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("name", ["one-channel-long", "nhwc-2048", "special-nhwc"])
def test_same_bits_on_every_run(device, name):
    """Two runs of a case whose channels are cut into several chunks (merged in a fixed order) give the same
    bits, NaN where NaN."""
    session = _session(device, "narrow")
    case = _case(name)
    inputs = generate(case)
    first = opencl.run(session, case, inputs, ONCE).outputs
    second = opencl.run(session, case, generate(case), ONCE).outputs
    for out in case.outputs:
        assert first[out].tobytes() == second[out].tobytes(), out


def test_launches_follow_the_shape():
    """choose(): a single fused launch for small problems; few channels cut into chunks until the device's
    compute units are filled; channel-last tiles of neighbouring channels; work-groups within the device's
    limit."""
    tune = dict(opencl_gpu.DEFAULTS)
    choose = opencl_gpu.choose
    small = choose(tune, 8, 1024, Case(name="s", shape=(4, 3, 5), backward=True))
    assert small.fused and small.chunks == 1 and small.tile_width == 1 and small.work_group_size == 256
    few = choose(tune, 8, 1024, Case(name="f", shape=(32, 2, 56, 56)))
    assert not few.fused and few.tiles * few.chunks >= 4 * 8 and few.chunks * few.chunk_len >= 32 * 56 * 56
    many = choose(tune, 8, 1024, Case(name="m", shape=(2, 2048, 4, 4)))
    assert many.fused and many.chunks == 1 and many.tiles == 2048
    nhwc = choose(tune, 8, 1024, Case(name="n", shape=(64, 7, 7, 48), axis=-1))
    assert nhwc.tile_width == 64 and nhwc.tiles == 1 and nhwc.chunks > 1
    nhwc5 = choose(tune, 8, 1024, Case(name="n", shape=(6, 5), axis=1))
    assert nhwc5.tile_width == 8 and nhwc5.fused
    assert choose(tune, 8, 64, Case(name="w", shape=(6, 5))).work_group_size == 64
    assert choose({**tune, "wg": 100}, 8, 1024, Case(name="w", shape=(6, 5))).work_group_size == 64


def test_sources_and_kernels_are_the_family_files():
    names = {p.name for p in opencl.family_files("gpu")}
    assert set(opencl_gpu.SOURCES) == names
    source = opencl.program_source("gpu", opencl_gpu.SOURCES)
    for kernel in opencl_gpu.KERNELS:
        assert f"__kernel void {kernel}(" in source, kernel
    family = source.split('#line 1 "gpu_base.cl"')[1]
    assert not re.search(r"\b(atomic|atom)_\w+\s*\(", family)  # no atomics in the gpu family
