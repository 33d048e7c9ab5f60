"""The OpenVINO backend (BatchNormInference-5 compiled for a device) through its real worker process, on the CPU."""

import importlib.util
import subprocess
import sys

import pytest

from conformance.backends.base import TimingPolicy
from conformance.case import Case, Fill, profiled
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype
from conformance.worker import Worker

if importlib.util.find_spec("openvino") is None:
    pytest.skip("openvino is not installed", allow_module_level=True)

QUICK = TimingPolicy(warmup=0, min_repeats=1, max_repeats=2, budget_s=0.01)


@pytest.fixture(scope="module")
def worker():
    w = Worker("openvino", "CPU").start()
    if w.state != "ready":
        pytest.skip(f"openvino backend unavailable on CPU: {w.reason}")
    yield w
    w.stop()


def _run(w, case, use_defaults=False):
    pc = profiled(case, w.meta.profile)
    inputs = generate(pc)
    return pc, inputs, w.run(pc, inputs, QUICK, 60, use_defaults=use_defaults)


def test_module_imports_without_openvino():
    code = "import sys, conformance.backends.openvino_bn; assert 'openvino' not in sys.modules, 'imported openvino'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_target_per_device_cpu_included(worker):
    keys = [d.key for d in worker.devices]
    assert "CPU" in keys and len(set(keys)) == len(keys)
    cpu = next(d for d in worker.devices if d.key == "CPU")
    assert cpu.extra["inference_precision_hint"]  # the plugin's default, recorded


CASES = [
    Case(name="nchw", shape=(4, 3, 5, 2), mode="infer"),
    Case(name="nc", shape=(16, 5), mode="infer"),
    Case(name="nhwc", shape=(2, 3, 4, 5), axis=-1, mode="infer"),
    Case(name="ncdhw", shape=(2, 3, 2, 3, 2), mode="infer"),
    Case(name="backward", shape=(4, 3, 5, 2), mode="infer", backward=True),
    Case(name="offset", shape=(4, 3, 5, 2), mode="infer", fill=Fill.make("offset", {"mean": 100.0, "std": 0.5})),
    Case(name="f16", dtype="float16", shape=(4, 3, 5, 2), mode="infer"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_inference_matches_the_oracle(worker, case):
    pc, inputs, reply = _run(worker, case)
    assert reply.ok, reply
    result = reply.result
    assert set(result.outputs) == {"y", "running_mean", "running_var"}  # no batch statistics, no backward
    assert result.wall_ms
    assert any("INFERENCE_PRECISION_HINT" in n and "runs in" in n for n in result.notes), result.notes
    ref = reference(pc, inputs)
    failures = []
    for name, got in result.outputs.items():
        row = compare(name, got, ref.values[name], ref.scales[name], pc, expected_dtype(pc, name))
        if row["status"] != "pass":
            failures.append(row["reason"])
    assert not failures, failures
    for name in ("x", "gamma", "beta"):
        before, after = getattr(inputs, name), result.untouched[name]
        assert after.dtype == before.dtype and after.tobytes() == before.tobytes(), name


@pytest.mark.parametrize(
    "case,words",
    [
        (Case(name="train", shape=(4, 3, 2, 2), mode="train"), "inference only"),
        (Case(name="update", shape=(4, 3, 2, 2), mode="infer", update_running=True), "update_running=1"),
        (Case(name="fg", shape=(4, 3), mode="infer", fix_gamma=True), "fix_gamma"),
        (Case(name="f64", dtype="float64", shape=(4, 3, 2, 2), mode="infer"), "does not compute in float64"),
    ],
    ids=lambda v: v.name if isinstance(v, Case) else "",
)
def test_unsupported_with_the_reason(worker, case, words):
    _, _, reply = _run(worker, case)
    assert reply.status == "unsupported" and words in reply.reason, reply


def test_no_default_epsilon(worker):
    _, _, reply = _run(worker, Case(name="d", shape=(4, 3), mode="infer"), use_defaults=True)
    assert reply.status == "unsupported" and "epsilon" in reply.reason
