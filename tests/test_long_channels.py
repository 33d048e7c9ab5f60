"""Long channels: how each framework sums a channel, held against summation models written here.

cases/known_deviations.toml registers the perf suite's long-channel failures (100352 and 524288 values per
channel) with the summation each framework was found to use. These tests keep those reasons true: on channels
of 131072 values the framework's statistic equals the stated model to one rounding, and the model's own
rounding error is far from the exact value (at least 16 units of the oracle's error scale, where the OpenCL
kernels' blocked sums stay under 9), so the match identifies the summation rather than agreeing by chance.
The models are plain numpy written from the description in the registry, not taken from any backend.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conformance.backends.base import TimingPolicy
from conformance.case import Case, profiled
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import UNIT_ROUNDOFF, reference
from conformance.runner import expected_dtype
from conformance.worker import Worker

ONCE = TimingPolicy(warmup=0, min_repeats=1, max_repeats=1, budget_s=0.0)
NCHW = Case(name="long-nchw", shape=(2, 4, 256, 256), axis=1, mode="train", momentum=0.0, seed=5)
SEPARATION = 16.0  # norm_err of the model against the oracle, at least
NHWC = Case(name="long-nhwc", shape=(2, 256, 256, 4), axis=-1, mode="train", momentum=0.0, seed=5)


def channels(x: np.ndarray, axis: int) -> np.ndarray:
    """C x m: each channel's values in the array's index order."""
    moved = np.moveaxis(x, axis, 0)
    return moved.reshape(moved.shape[0], -1)


def chain(a: np.ndarray, dt) -> np.ndarray:
    """One sequential sum per row, left to right, in dtype dt (cumsum accumulates strictly in order)."""
    return np.cumsum(a.astype(dt), axis=-1, dtype=dt)[..., -1]


def two_pass_chain(x, axis, dt):
    """Mean, then mean of squared deviations, each one sequential chain per channel."""
    r = channels(x, axis).astype(dt)
    m = dt(r.shape[1])
    mean = chain(r, dt) / m
    return chain((r - mean[:, None]) ** 2, dt) / m


def two_pass_rows(x, axis, dt):
    """Each (n, c) row summed as one chain, then the rows in order; the same for the squared deviations."""
    assert axis == 1
    n, c = x.shape[:2]
    r = x.reshape(n, c, -1).astype(dt)
    m = dt(r.shape[0] * r.shape[2])
    mean = chain(chain(r, dt).T, dt) / m
    return chain(chain((r - mean[None, :, None]) ** 2, dt).T, dt) / m


def invstd(var, dt, eps):
    return (dt(1) / np.sqrt(var + dt(eps))).astype(dt)


# backend, case, output, model of that output from x
CLAIMS = [
    ("mxnet", NCHW, "invstd", lambda x, c: invstd(two_pass_chain(x, 1, np.float32), np.float32, c.eps)),
    (
        "mxnet",
        dataclasses.replace(NCHW, dtype="float64"),
        "invstd",
        lambda x, c: invstd(two_pass_chain(x, 1, np.float64), np.float64, c.eps),
    ),
    ("mxnet", NHWC, "invstd", lambda x, c: invstd(two_pass_chain(x, -1, np.float32), np.float32, c.eps)),
    ("mxnet_v1", NCHW, "var", lambda x, c: two_pass_rows(x, 1, np.float32)),
    ("mxnet_v1_sym", NCHW, "var", lambda x, c: two_pass_rows(x, 1, np.float32)),
    (
        "torch",
        dataclasses.replace(NCHW, dtype="float64"),
        "save_invstd",
        lambda x, c: invstd(two_pass_chain(x, 1, np.float64), np.float64, c.eps),
    ),
    # momentum 0: the running variance is the (biased) batch variance itself
    ("paddle", NHWC, "running_var", lambda x, c: two_pass_chain(x, -1, np.float32)),
    ("paddle_functional", NHWC, "running_var", lambda x, c: two_pass_chain(x, -1, np.float32)),
    ("numpy", NHWC, "var", lambda x, c: two_pass_chain(x, -1, np.float32)),
]


@pytest.fixture(scope="module")
def workers():
    started: dict[str, Worker] = {}

    def get(name):
        if name not in started:
            started[name] = Worker(name, None).start()
        w = started[name]
        if w.state != "ready":
            pytest.skip(f"{name} is not available here: {w.reason}")
        return w

    yield get
    for w in started.values():
        w.stop()


@pytest.mark.parametrize(
    "backend,case,output,model", CLAIMS, ids=[f"{b}-{c.name}-{c.dtype}-{o}" for b, c, o, _ in CLAIMS]
)
def test_long_channel_statistic_is_the_registered_summation(workers, backend, case, output, model):
    w = workers(backend)
    pc = profiled(case, w.meta.profile)
    inputs = generate(pc)
    reply = w.run(pc, inputs, ONCE, 120.0)
    assert reply.ok, reply
    got = np.asarray(reply.result.outputs[output], dtype=np.float64)
    expect = np.asarray(model(inputs.x, pc), dtype=np.float64)
    u = UNIT_ROUNDOFF[pc.dtype]
    off_model = float(np.max(np.abs(got - expect) / np.abs(expect)))
    assert off_model <= u, f"got {got}, expected the model's {expect} ({off_model / u:.1f} u off) [{pc.id}]"
    # the model is far from exact: held against the oracle like the framework's output
    quantity = w.meta.extra_outputs.get(output, output)
    ref = reference(pc, inputs)
    row = compare(
        output,
        expect.astype(pc.param_dtype),
        ref.values[quantity],
        ref.scales[quantity],
        pc,
        expected_dtype(pc, quantity),
    )
    assert row["norm_err"] >= SEPARATION, f"the model is {row['norm_err']:.3g} from exact, too close [{pc.id}]"
