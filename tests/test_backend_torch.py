"""The torch backend through its real worker process: every output it returns against the oracle."""

import importlib.util

import numpy as np
import pytest
from flag_checks import flag_case as _flag_case
from flag_checks import flag_round_trip as _flag_round_trip
from flag_checks import flag_run as _flag_run

from conformance.backends.base import TimingPolicy
from conformance.case import Case, profiled
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype
from conformance.worker import Worker

if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed", allow_module_level=True)

QUICK = TimingPolicy(warmup=0, min_repeats=1, max_repeats=2, budget_s=0.01)


@pytest.fixture(scope="module")
def worker():
    w = Worker("torch", None).start()
    if w.state != "ready":
        pytest.skip(f"torch backend unavailable: {w.reason}")
    yield w
    w.stop()


def _run(worker, case, use_defaults=False):
    pc = profiled(case, worker.meta.profile)
    inputs = generate(pc)
    reply = worker.run(pc, inputs, QUICK, 60, use_defaults=use_defaults)
    return pc, inputs, reply


def _check(worker, pc, inputs, result):
    """Every returned output passes against the oracle; x, gamma, beta are bitwise unchanged."""
    ref = reference(pc, inputs)
    extra = worker.meta.extra_outputs
    failures = []
    for name, got in result.outputs.items():
        q = extra.get(name, name)
        row = compare(name, got, ref.values[q], ref.scales[q], pc, expected_dtype(pc, q))
        if row["status"] != "pass":
            failures.append(row["reason"])
    assert not failures, failures
    for name in ("x", "gamma", "beta"):
        before, after = getattr(inputs, name), result.untouched[name]
        assert after.dtype == before.dtype and after.tobytes() == before.tobytes(), name


CASES = [
    Case(name="nchw", shape=(4, 3, 5, 2), axis=1, mode="train", backward=True),
    Case(name="nc", shape=(6, 5), axis=1, mode="train"),
    Case(name="nhwc", shape=(2, 3, 4, 5), axis=-1, mode="train", backward=True),
    Case(name="infer", shape=(4, 3, 5, 2), mode="infer", backward=True),
    Case(name="f64", dtype="float64", shape=(4, 3, 5, 2), mode="train", backward=True),
    Case(name="f16", dtype="float16", shape=(4, 3, 5, 2), mode="train", backward=True),
    Case(name="f16-infer", dtype="float16", shape=(6, 5), mode="infer"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outputs_match_the_oracle(worker, case):
    pc, inputs, reply = _run(worker, case)
    assert reply.ok, reply
    result = reply.result
    expect = {"y", "running_mean", "running_var"}
    if pc.backward:
        expect |= {"dx", "dgamma", "dbeta"}
    if pc.mode == "train":  # F.batch_norm returns no batch statistics; native_batch_norm's saved ones stand in
        expect |= {"save_mean", "save_invstd"}
    assert set(result.outputs) == expect
    assert result.wall_ms
    _check(worker, pc, inputs, result)


def test_profile_is_torch_documented_conventions(worker):
    prof = worker.meta.profile
    assert (prof.momentum_dir, prof.running_var, prof.stats, prof.eps, prof.momentum) == (
        "new",
        "unbiased",
        None,
        1e-5,
        0.1,
    )
    assert worker.meta.extra_outputs == {"save_mean": "mean", "save_invstd": "invstd"}


def test_defaults_are_momentum_0_1_new_and_unbiased_running_var(worker):
    case = Case(name="defaults", dtype="float64", shape=(8, 3), mode="train")
    pc, inputs, reply = _run(worker, case, use_defaults=True)
    assert reply.ok, reply
    out = reply.result.outputs
    x = inputs.x.astype(np.float64)
    np.testing.assert_allclose(out["running_mean"], 0.9 * inputs.running_mean + 0.1 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(out["running_var"], 0.9 * inputs.running_var + 0.1 * x.var(0, ddof=1), rtol=1e-12)
    y = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * inputs.gamma + inputs.beta
    np.testing.assert_allclose(out["y"], y, rtol=1e-12, atol=1e-12)


def test_fix_gamma_is_unsupported(worker):
    _, _, reply = _run(worker, Case(name="fg", shape=(4, 3), fix_gamma=True))
    assert reply.status == "unsupported" and "fix_gamma" in reply.reason


# ---- flag combinations (FLAGS): each defined one against the oracle, and its label round-tripping -------------


def test_each_defined_flag_combination(worker):
    """training x running statistics given or None: the three defined combinations pass against the oracle; with
    none given (batch statistics, no update: update_running=0), running_mean and running_var are the caller's
    tensors, bit for bit, and a note says they were not handed to torch."""
    defined = [c for c in worker.meta.flags if c.defined]
    assert [c.label for c in defined] == [
        "training=True,running_stats=given",
        "training=False,running_stats=given",
        "training=True,running_stats=None",
    ]
    for i, combo in enumerate(defined):
        case = _flag_case(worker, combo, shape=(4, 3, 5, 2), axis=1, backward=True, seed=100 + i)
        inputs, res, bad = _flag_run(worker, case)
        assert not bad, (combo.label, bad)
        if combo.get("running_stats") is None:
            assert case.features == ("update_running=0",)
            assert np.array_equal(res.outputs["running_mean"], inputs.running_mean)
            assert np.array_equal(res.outputs["running_var"], inputs.running_var)
            assert any("not handed to torch" in n for n in res.notes)


def test_flag_labels_round_trip(worker):
    _flag_round_trip(worker)
