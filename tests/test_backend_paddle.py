"""The PaddlePaddle backends (paddle: nn.BatchNorm, paddle_functional: nn.functional.batch_norm) through
their real worker processes, against the float64 oracle.

Paddle is never imported here (it must not share a process with MindSpore): everything goes through Worker,
and the profile comes from the worker's handshake.
"""

import dataclasses
import importlib.util

import numpy as np
import pytest
from flag_checks import flag_case as _flag_case
from flag_checks import flag_round_trip as _flag_round_trip
from flag_checks import flag_run as _flag_run

from conformance.backends.base import TimingPolicy
from conformance.case import Case, Fill
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype
from conformance.worker import Worker

if importlib.util.find_spec("paddle") is None:
    pytest.skip("paddle is not installed", allow_module_level=True)

BACKENDS = ("paddle", "paddle_functional")
QUICK = TimingPolicy(warmup=0, min_repeats=1, max_repeats=2, budget_s=0.0)
F32 = lambda v: float(np.float32(v))

PASSING = [
    Case("nchw", shape=(4, 3, 5, 5), axis=1, backward=True),
    Case("nchw-infer", shape=(4, 3, 5, 5), axis=1, mode="infer", backward=True),
    Case("nc", shape=(8, 5), axis=1, backward=True),
    Case("nc-infer", shape=(8, 5), axis=-1, mode="infer", backward=True),
    Case("nhwc", shape=(4, 5, 5, 3), axis=-1, backward=True),
    Case("nhwc-infer", shape=(4, 5, 5, 3), axis=-1, mode="infer", backward=True),
    Case("ncl", shape=(4, 3, 6), axis=1, backward=True),
    Case("nlc", shape=(4, 6, 3), axis=-1, backward=True),
    Case("ncdhw", shape=(2, 3, 2, 3, 4), axis=1, backward=True),
    Case("ndhwc", shape=(2, 2, 3, 4, 3), axis=-1, backward=True),
    Case("offset", shape=(4, 3, 4, 4), fill=Fill.make("offset")),
    Case("params", shape=(4, 3, 5, 5), momentum=0.3, eps=0.125, mode="train"),
    # float64 with momentum and eps that float32 holds exactly (see the xfail cases below)
    Case("f64-exact-attrs", shape=(4, 3, 5, 5), dtype="float64", momentum=0.75, eps=2.0**-16, backward=True),
    Case("f64-f32-attrs", shape=(4, 3, 5, 5), dtype="float64", momentum=F32(0.9), eps=F32(1e-5), backward=True),
    Case("f64-f32-attrs-infer", shape=(4, 3, 5, 5), dtype="float64", eps=F32(1e-5), mode="infer", backward=True),
]

F32_ATTRS = (
    "Paddle's batch_norm op holds momentum and epsilon as C++ float attributes: float64 data is "
    "normalised with float32(1e-5) and the running statistics move with float32(0.9)"
)
ONE_VALUE = (
    "with one value per channel in training Paddle's kernel copies y = x, leaves the running "
    "statistics alone, and its backward gives dx = dy, dgamma = dbeta = 0"
)
DEVIATING = [
    pytest.param(
        Case("f64", shape=(4, 3, 5, 5), dtype="float64", backward=True),
        marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=F32_ATTRS),
        id="f64",
    ),
    pytest.param(
        Case("f64-infer", shape=(4, 3, 5, 5), dtype="float64", mode="infer", backward=True),
        marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=F32_ATTRS),
        id="f64-infer",
    ),
    pytest.param(
        Case("one-value", shape=(1, 3), backward=True),
        marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=ONE_VALUE),
        id="one-value",
    ),
]

UNSUPPORTED = [
    (Case("half", shape=(4, 3, 5, 5), dtype="float16"), "float16) of kernel `batch_norm` is not registered"),
    (Case("fixg", shape=(4, 3, 5, 5), fix_gamma=True), "has no fix_gamma parameter"),
    (Case("axis2", shape=(4, 3, 5, 5), axis=2), "has no axis parameter"),
    (Case("rank6", shape=(2, 3, 2, 2, 2, 2), axis=1), "dimension of input X must smaller than or equal to 5"),
]


@pytest.fixture(scope="module", params=BACKENDS)
def worker(request):
    w = Worker(request.param, None).start()
    if w.state != "ready":
        pytest.skip(f"{request.param}: {w.reason}")
    yield w
    w.stop()


def profiled(w, case):
    prof = w.meta.profile
    return dataclasses.replace(
        case,
        momentum_dir=prof.momentum_dir or "old",
        running_var=prof.running_var or "biased",
        stats=prof.stats or case.stats,
    )


def run_case(w, case, use_defaults=False):
    case = profiled(w, case)
    inputs = generate(case)
    reply = w.run(case, inputs, QUICK, timeout=60, use_defaults=use_defaults)
    if not reply.ok:  # not an AssertionError: an xfail(raises=AssertionError) must not swallow it
        pytest.fail(f"{w.backend}: {reply.status}: {reply.reason}" + (f"\n{reply.detail}" if reply.detail else ""))
    return case, inputs, reply.result


def check(w, case, use_defaults=False):
    case, inputs, res = run_case(w, case, use_defaults)
    assert res.wall_ms and all(t > 0 for t in res.wall_ms)
    extra = w.meta.extra_outputs
    want = {"y", "running_mean", "running_var"} | ({"dx", "dgamma", "dbeta"} if case.backward else set())
    assert set(res.outputs) == want  # the API returns no batch statistics
    for name in ("x", "gamma", "beta"):
        got, before = res.untouched[name], getattr(inputs, name)
        assert got.dtype == before.dtype and got.tobytes() == before.tobytes(), f"{name} modified"
    ref = reference(case, inputs)
    failures = []
    for name, got in res.outputs.items():
        q = extra.get(name, name)
        row = compare(name, got, ref.values[q], ref.scales[q], case, expected_dtype(case, q))
        if row["status"] != "pass":
            failures.append(row["reason"])
    assert not failures, f"{w.backend} {case.id}: " + "; ".join(failures)


def test_meta(worker):
    meta = worker.meta
    assert meta.version.startswith("3.") and meta.extra_outputs == {}
    prof, doc = meta.profile, meta.documented
    assert (prof.momentum_dir, prof.running_var, prof.stats, prof.eps, prof.momentum) == (
        "old",
        "biased",
        None,
        1e-5,
        0.9,
    )
    if worker.backend == "paddle":
        assert doc == prof
    else:  # the functional page states the defaults only
        assert (doc.momentum_dir, doc.running_var, doc.stats) == (None, None, None)


@pytest.mark.parametrize("case", PASSING, ids=lambda c: c.name)
def test_passes(worker, case):
    check(worker, case)


def test_framework_defaults(worker):
    check(worker, Case("defaults", shape=(4, 3, 5, 5), backward=True), use_defaults=True)


@pytest.mark.parametrize("case", DEVIATING)
def test_deviations(worker, case):
    check(worker, case)


def test_one_value_per_channel_is_identity(worker):
    """Pins the diagnosis of the one-value xfail: the layer acts as the identity."""
    case, inputs, res = run_case(worker, Case("one-value", shape=(1, 3), backward=True))
    assert np.array_equal(res.outputs["y"], inputs.x) and np.array_equal(res.outputs["dx"], inputs.dy)
    assert not res.outputs["dgamma"].any() and not res.outputs["dbeta"].any()
    assert np.array_equal(res.outputs["running_mean"], inputs.running_mean)
    assert np.array_equal(res.outputs["running_var"], inputs.running_var)


@pytest.mark.parametrize("case,reason", UNSUPPORTED, ids=lambda v: getattr(v, "name", ""))
def test_unsupported(worker, case, reason):
    reply = worker.run(profiled(worker, case), generate(case), QUICK, timeout=60)
    assert reply.status == "unsupported" and reason in reply.reason, reply


def test_paddle_stays_out_of_this_process(worker):
    import sys

    assert "paddle" not in sys.modules


# ---- flag combinations (FLAGS): each defined one against the oracle, and its label round-tripping -------------


@pytest.mark.parametrize("act", ["none", "relu"])
def test_each_defined_flag_combination(worker, act):
    """paddle: train()/eval() x use_global_stats x trainable_statistics; paddle_functional: training x
    use_global_stats (None, True, False). Every combination the page defines passes against the oracle; act
    goes through the layer's act= (paddle), and the function, which has none, turns it down before the call."""
    defined = [c for c in worker.meta.flags if c.defined]
    assert len(defined) == {"paddle": 3, "paddle_functional": 4}[worker.backend]
    for i, combo in enumerate(defined):
        case = _flag_case(worker, combo, shape=(4, 3, 5, 5), axis=1, backward=True, act=act, seed=70 + i)
        if act != "none" and worker.backend == "paddle_functional":
            reply = worker.run(case, generate(case), QUICK, timeout=60)
            assert reply.status == "unsupported" and "does not implement act=relu" in reply.reason, reply
            continue
        _, _, bad = _flag_run(worker, case)
        assert not bad, (combo.label, bad)


def test_in_place_leaves_x_and_dy(worker):
    """The registered in_place deviation under every defined combination: everything else passes, and the
    caller's x and dy come back bit for bit unchanged (not y and dx); the function has no in_place."""
    for i, combo in enumerate(c for c in worker.meta.flags if c.defined):
        case = _flag_case(worker, combo, shape=(4, 3, 5, 5), axis=1, backward=True, inplace=True, seed=80 + i)
        if worker.backend == "paddle_functional":
            reply = worker.run(case, generate(case), QUICK, timeout=60)
            assert reply.status == "unsupported" and "does not implement inplace=1" in reply.reason, reply
            continue
        inputs, res, bad = _flag_run(worker, case)
        assert set(bad) == {"x_after", "dy_after"}, (combo.label, bad)
        assert np.array_equal(res.outputs["x_after"], inputs.x) and np.array_equal(res.outputs["dy_after"], inputs.dy)


def test_flag_labels_round_trip(worker):
    _flag_round_trip(worker)
