"""The two TensorFlow backends (tensorflow: fused_batch_norm / FusedBatchNormV3; tensorflow_nn: moments +
batch_normalization) through their real worker processes, against the oracle."""

import dataclasses
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from conformance.backends.base import TimingPolicy
from conformance.case import Case, Fill, profiled
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype
from conformance.worker import Worker

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

QUICK = TimingPolicy(warmup=0, min_repeats=1, max_repeats=2, budget_s=0.01)
_workers = {}


@pytest.fixture(scope="module")
def workers():
    yield _workers
    for w in _workers.values():
        w.stop()


def _worker(workers, name):
    if name not in workers:
        workers[name] = Worker(name, None).start()
    w = workers[name]
    if w.state != "ready":
        pytest.skip(f"{name} backend unavailable: {w.reason}")
    return w


def _run(w, case, use_defaults=False, inputs=None):
    """The case under the backend's profile, with the flag combination whose documented meaning is the case's."""
    pc = profiled(case, w.meta.profile)
    labels = [c.label for c in w.meta.flags if c.means(pc)]
    if labels:
        pc = dataclasses.replace(pc, flags=labels[0])
    inputs = generate(pc) if inputs is None else inputs
    return pc, inputs, w.run(pc, inputs, QUICK, 60, use_defaults=use_defaults)


def _check(w, pc, inputs, result, skip=()):
    """Every returned output (but those in skip) passes against the oracle; x, gamma, beta bitwise unchanged."""
    ref = reference(pc, inputs)
    extra = w.meta.extra_outputs
    failures = []
    for name, got in result.outputs.items():
        if name in skip:
            continue
        q = extra.get(name, name)
        row = compare(name, got, ref.values[q], ref.scales[q], pc, expected_dtype(pc, q))
        if row["status"] != "pass":
            failures.append(row["reason"])
    assert not failures, failures
    for name in ("x", "gamma", "beta"):
        before, after = getattr(inputs, name), result.untouched[name]
        assert after.dtype == before.dtype and after.tobytes() == before.tobytes(), name


def test_modules_import_without_tensorflow():
    code = (
        "import sys, conformance.backends.tensorflow_fused, conformance.backends.tensorflow_nn; "
        "assert 'tensorflow' not in sys.modules, 'imported tensorflow'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- tensorflow (tf.compat.v1.nn.fused_batch_norm) -----------------------------------------------------------

FUSED = [
    Case(name="nchw", shape=(4, 3, 5, 2), axis=1, mode="train", backward=True),
    Case(name="nhwc", shape=(2, 3, 4, 5), axis=-1, mode="train", backward=True),
    Case(name="ncdhw", shape=(2, 3, 2, 3, 2), axis=1, mode="train", backward=True),
    Case(name="infer", shape=(4, 3, 5, 2), axis=-1, mode="infer", backward=True),
    Case(name="f16", dtype="float16", shape=(4, 3, 5, 2), mode="train", backward=True),
    Case(name="offset", shape=(4, 3, 5, 2), mode="train", fill=Fill.make("offset", {"mean": 100.0, "std": 0.5})),
]


@pytest.mark.parametrize("case", FUSED, ids=lambda c: c.name)
def test_fused_outputs_match_the_oracle(workers, case):
    w = _worker(workers, "tensorflow")
    pc, inputs, reply = _run(w, case)
    assert reply.ok, reply
    result = reply.result
    expect = {"y", "running_mean", "running_var", "reserve_space_1", "reserve_space_2"}
    if pc.backward:
        expect |= {"dx", "dgamma", "dbeta"}
    assert set(result.outputs) == expect
    assert result.wall_ms and result.notes
    # the running variance moves towards the unbiased batch variance: a registered deviation, pinned below
    _check(w, pc, inputs, result, skip=("running_var",) if pc.mode == "train" else ())


def test_fused_running_variance_uses_the_unbiased_batch_variance(workers):
    """Seen, not documented ('batch_variance is the variance of the current batch in x'): the running variance
    moves towards var * m / (m - 1)."""
    w = _worker(workers, "tensorflow")
    pc, inputs, reply = _run(w, Case(name="rv", shape=(4, 3, 5, 2), mode="train", momentum=0.7))
    assert reply.ok, reply
    x = np.moveaxis(inputs.x.astype(np.float64), 1, -1).reshape(-1, 3)
    f = 1 - 0.7
    out = reply.result.outputs
    np.testing.assert_allclose(out["running_var"], (1 - f) * inputs.running_var + f * x.var(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(out["running_mean"], (1 - f) * inputs.running_mean + f * x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["reserve_space_2"], x.var(0), rtol=1e-5)  # the reserve space holds the biased one


def test_fused_factor_zero_leaves_the_running_statistics(workers):
    w = _worker(workers, "tensorflow")
    pc, inputs, reply = _run(w, Case(name="keep", shape=(4, 3, 5, 2), mode="train", update_running=False))
    assert pc.flags == "is_training=True,exponential_avg_factor=0.0"
    assert reply.ok, reply
    out = reply.result.outputs
    assert out["running_mean"].tobytes() == inputs.running_mean.tobytes()
    assert out["running_var"].tobytes() == inputs.running_var.tobytes()
    _check(w, pc, inputs, reply.result)


def test_fused_momentum_zero_passes_no_statistics(workers):
    """Canonical momentum 0 is exponential_avg_factor 1, where the page says mean and variance must be None."""
    w = _worker(workers, "tensorflow")
    pc, inputs, reply = _run(w, Case(name="m0", shape=(4, 3, 5, 2), mode="train", momentum=0.0))
    assert reply.ok, reply
    assert any("mean=None" in n for n in reply.result.notes)
    _check(w, pc, inputs, reply.result, skip=("running_var",))


def test_fused_defaults_are_eps_0_001_and_factor_1(workers):
    w = _worker(workers, "tensorflow")
    prof = w.meta.profile
    assert (prof.momentum_dir, prof.running_var, prof.stats, prof.eps, prof.momentum) == (
        "new",
        "biased",
        None,
        0.001,
        1.0,
    )
    assert w.meta.documented.running_var is None
    assert w.meta.extra_outputs == {"reserve_space_1": "mean", "reserve_space_2": "var"}
    pc, inputs, reply = _run(w, Case(name="defaults", shape=(8, 3, 2, 2), axis=-1, mode="train"), use_defaults=True)
    assert reply.ok, reply
    out = reply.result.outputs
    x = inputs.x.astype(np.float64).reshape(-1, 2)
    np.testing.assert_allclose(out["running_mean"], x.mean(0), rtol=1e-5)  # factor 1: the batch's
    y = (x - x.mean(0)) / np.sqrt(x.var(0) + 0.001) * inputs.gamma + inputs.beta
    np.testing.assert_allclose(out["y"].reshape(-1, 2), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "case,words",
    [
        (Case(name="f64", dtype="float64", shape=(4, 3, 5, 2)), "float64"),
        (Case(name="nc", shape=(6, 5)), "4 or 5 dimensions"),
        (Case(name="axis2", shape=(2, 3, 4, 5), axis=2), "axis 2"),
        (Case(name="fg", shape=(4, 3, 2, 2), fix_gamma=True), "fix_gamma"),
        (Case(name="infer-update", shape=(4, 3, 2, 2), mode="infer", update_running=True), "update_running=1"),
    ],
    ids=lambda v: v.name if isinstance(v, Case) else "",
)
def test_fused_unsupported_with_the_reason(workers, case, words):
    _, _, reply = _run(_worker(workers, "tensorflow"), case)
    assert reply.status == "unsupported" and words in reply.reason, reply


# ---- tensorflow_nn (tf.nn.moments + tf.nn.batch_normalization) -------------------------------------------------

NN = [
    Case(name="nchw", shape=(4, 3, 5, 2), mode="train", backward=True),
    Case(name="nc", shape=(16, 5), mode="train", backward=True),
    Case(name="axis2", shape=(3, 7, 5), axis=2, mode="train", backward=True),
    Case(name="infer", shape=(4, 3, 5, 2), axis=-1, mode="infer", backward=True),
    Case(name="f64", dtype="float64", shape=(4, 3, 5, 2), mode="train", backward=True),
    Case(name="f16-infer", dtype="float16", shape=(6, 5), mode="infer"),
    Case(name="no-update", shape=(4, 3, 2, 2), mode="train", update_running=False),
    Case(name="infer-update", shape=(4, 3, 2, 2), mode="infer", update_running=True),
]


@pytest.mark.parametrize("case", NN, ids=lambda c: c.name)
def test_nn_outputs_match_the_oracle(workers, case):
    w = _worker(workers, "tensorflow_nn")
    pc, inputs, reply = _run(w, case)
    assert reply.ok, reply
    result = reply.result
    assert set(result.outputs) == set(pc.outputs)  # y, the batch statistics from moments, running, gradients
    _check(w, pc, inputs, result)


def test_nn_float16_training_is_refused_by_tensorflow(workers):
    """moments returns float16 statistics for float16 x, and batch_normalization will not mix them with the
    float32 scale: TensorFlow's own message is the reason."""
    _, _, reply = _run(_worker(workers, "tensorflow_nn"), Case(name="f16", dtype="float16", shape=(4, 3, 2, 2)))
    assert reply.status == "unsupported" and "half" in reply.reason, reply


def test_nn_has_no_defaults_and_no_flags(workers):
    w = _worker(workers, "tensorflow_nn")
    assert w.meta.flags == () and w.meta.documented.eps is None
    _, _, reply = _run(w, Case(name="d", shape=(4, 3), mode="infer"), use_defaults=True)
    assert reply.status == "unsupported" and "variance_epsilon" in reply.reason
