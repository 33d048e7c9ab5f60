"""The keras backend through its real worker processes, one per Keras backend installed (tensorflow, jax, torch):
every output against the oracle, every documented flag combination, the defaults, and what Keras does that its
page does not say (float64 computed in float32 off TensorFlow; keras@torch's one-pass variance)."""

import dataclasses
import importlib.util

import numpy as np
import pytest

from conformance.backends.base import TimingPolicy
from conformance.case import Case, Fill, profiled
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype
from conformance.worker import Worker

if importlib.util.find_spec("keras") is None:
    pytest.skip("keras is not installed", allow_module_level=True)
INSTALLED = [b for b in ("tensorflow", "jax", "torch") if importlib.util.find_spec(b) is not None]
if not INSTALLED:
    pytest.skip("keras is installed but none of its backends (tensorflow, jax, torch) is", allow_module_level=True)

QUICK = TimingPolicy(warmup=0, min_repeats=1, max_repeats=2, budget_s=0.01)
OFFSET = Fill.make("offset", {"mean": 100.0, "std": 0.5})


@pytest.fixture(scope="module", params=INSTALLED)
def worker(request):
    w = Worker("keras", request.param).start()
    if w.state != "ready":
        pytest.skip(f"keras@{request.param} unavailable: {w.reason}")
    yield w
    w.stop()


def _run(worker, case, use_defaults=False):
    pc = profiled(case, worker.meta.profile)
    inputs = generate(pc)
    reply = worker.run(pc, inputs, QUICK, 120, use_defaults=use_defaults)
    assert reply.ok, reply
    return pc, inputs, reply.result


def _failures(pc, inputs, result) -> list[str]:
    """Every returned output against the oracle, and x, gamma, beta bitwise unchanged."""
    ref = reference(pc, inputs)
    bad = []
    for name, got in result.outputs.items():
        row = compare(name, got, ref.values[name], ref.scales[name], pc, expected_dtype(pc, name))
        if row["status"] != "pass":
            bad.append(row["reason"])
    for name, after in result.untouched.items():
        before = getattr(inputs, name)
        if after.dtype != before.dtype or after.tobytes() != before.tobytes():
            bad.append(f"input {name} changed")
    return bad


CASES = [
    Case(name="nchw", shape=(4, 3, 5, 2), axis=1, mode="train", backward=True),
    Case(name="nc", shape=(6, 5), axis=1, mode="train"),
    Case(name="nhwc", shape=(2, 3, 4, 5), axis=-1, mode="train", backward=True),
    Case(name="middle-axis", shape=(3, 7, 5), axis=2, mode="train", backward=True),
    Case(name="infer", shape=(4, 3, 5, 2), mode="infer", backward=True),
    Case(name="f16", dtype="float16", shape=(4, 3, 5, 2), mode="train", backward=True),
    Case(name="f16-infer", dtype="float16", shape=(6, 5), mode="infer"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outputs_match_the_oracle(worker, case):
    pc, inputs, result = _run(worker, case)
    expect = {"y", "running_mean", "running_var"} | ({"dx", "dgamma", "dbeta"} if pc.backward else set())
    assert set(result.outputs) == expect  # the layer returns y only: no batch statistics
    assert result.outputs["y"].dtype == np.dtype(pc.dtype) and result.outputs["running_mean"].dtype == np.dtype(
        pc.param_dtype
    )
    assert result.wall_ms
    assert not _failures(pc, inputs, result)


def test_fix_gamma_is_scale_false_without_dgamma(worker):
    pc, inputs, result = _run(worker, Case(name="fg", shape=(4, 3, 5, 2), mode="train", backward=True, fix_gamma=True))
    assert "dgamma" not in result.outputs and "gamma" not in result.untouched  # scale=False: no gamma variable
    assert {"y", "dx", "dbeta"} <= set(result.outputs)
    assert not _failures(pc, inputs, result)


def test_every_documented_flag_combination_does_what_its_page_says(worker):
    """Each combination of training= and layer.trainable, on a case meaning what the page says it does."""
    combos = worker.meta.flags
    assert [c.label for c in combos] == [
        "training=True,trainable=True",
        "training=False,trainable=True",
        "training=True,trainable=False",
        "training=False,trainable=False",
    ]
    for combo in combos:
        mode = "train" if combo.normalize_with == "batch" else "infer"
        case = Case(name="flags", shape=(6, 4, 3), mode=mode, backward=True, flags=combo.label)
        pc, inputs, result = _run(worker, case)
        assert not _failures(pc, inputs, result), combo.label
        moved = not np.array_equal(result.outputs["running_mean"], inputs.running_mean)
        assert moved is combo.update_running, combo.label


def test_defaults_are_momentum_0_99_old_and_epsilon_1e_3(worker):
    case = Case(name="defaults", shape=(8, 3), mode="train")
    pc, inputs, result = _run(worker, case, use_defaults=True)
    x = inputs.x.astype(np.float64)
    out = result.outputs
    np.testing.assert_allclose(out["running_mean"], 0.99 * inputs.running_mean + 0.01 * x.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["running_var"], 0.99 * inputs.running_var + 0.01 * x.var(0), rtol=1e-6, atol=1e-7)
    y = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3) * inputs.gamma + inputs.beta
    np.testing.assert_allclose(out["y"], y, rtol=1e-5, atol=1e-5)
    y_torch_eps = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * inputs.gamma + inputs.beta
    assert np.abs(out["y"] - y_torch_eps).max() > 1e-4  # the data tell 1e-3 from 1e-5


def test_float64_is_float64_on_tensorflow_only(worker):
    """Keras's dtype promotion maps float64 to float32 off TensorFlow (BIT64_TO_BIT32_DTYPE), and the layer computes in
    result_type(input, float32): a float64 layer on jax or torch returns float64 arrays holding float32 results."""
    pc, inputs, result = _run(
        worker, Case(name="f64", dtype="float64", shape=(4, 3, 5, 2), mode="train", backward=True)
    )
    assert result.outputs["y"].dtype == np.float64
    ref = reference(pc, inputs)
    err = np.abs(result.outputs["running_mean"] - ref.values["running_mean"]).max()
    if worker.device_key == "tensorflow":
        assert err < 1e-14 and not _failures(pc, inputs, result)
    else:
        assert 1e-10 < err < 1e-5  # float32 rounding, far above float64's
        f32 = np.float32(pc.momentum) * inputs.running_mean.astype(np.float32) + np.float32(
            1 - pc.momentum
        ) * inputs.x.astype(np.float32).reshape(4, 3, 10).mean(axis=(0, 2), dtype=np.float32)
        assert np.abs(result.outputs["running_mean"] - f32).max() < 1e-6


def test_offset_data_variance(worker):
    """keras@torch computes the batch variance as E[x^2] - E[x]^2 (keras/src/backend/torch/nn.py moments): on data
    at 100 +- 0.5 in float32 the running variance is off by ~3e-4 relative; tensorflow and jax subtract the mean
    first."""
    case = Case(name="offset", shape=(16, 32), mode="train", backward=True, fill=OFFSET)
    pc, inputs, result = _run(worker, case)
    ref = reference(pc, inputs)
    rel = np.abs(result.outputs["running_var"] / ref.values["running_var"] - 1).max()
    if worker.device_key == "torch":
        assert rel > 1e-4 and _failures(pc, inputs, result)
    else:
        assert rel < 1e-5 and not _failures(pc, inputs, result)


def test_profile_is_the_documented_one(worker):
    doc, prof = worker.meta.documented, worker.meta.profile
    assert (doc.momentum_dir, doc.running_var, doc.stats, doc.eps, doc.momentum) == ("old", None, None, 1e-3, 0.99)
    assert (prof.momentum_dir, prof.running_var) == ("old", "biased")
    assert worker.meta.extra_outputs == {}
    assert worker.meta.version.startswith("3.")


def test_a_probe_becomes_the_worker_of_any_keras_backend():
    """The probe lists the devices without importing keras, so it can become the worker of a backend other than the
    first (keras imported with another backend first would make open() refuse: Keras fixes its backend at import;
    unset, KERAS_BACKEND means tensorflow)."""
    probe = Worker("keras", probe=True).launch().await_ready(keep_probe=True)
    try:
        assert probe.state == "devices", probe.reason
        assert [d.key for d in probe.devices] == INSTALLED
        other = "jax" if "jax" in INSTALLED else INSTALLED[-1]  # jax: the quickest import
        probe.adopt(other).await_ready()
        assert probe.state == "ready", probe.reason
        case = profiled(Case(name="adopted", shape=(4, 3), mode="train"), probe.meta.profile)
        reply = probe.run(case, generate(case), QUICK, 120)
        assert reply.ok, reply
        assert not _failures(case, generate(case), reply.result)
    finally:
        probe.stop()


def test_act_and_in_place_are_unsupported(worker):
    for case in (
        Case(name="relu", shape=(4, 3), act="relu"),
        Case(name="ip", shape=(4, 3), inplace=True),
        Case(name="no-update", shape=(4, 3), update_running=False),
    ):
        reply = worker.run(profiled(case, worker.meta.profile), generate(case), QUICK, 60)
        assert reply.status == "unsupported" and "does not implement" in reply.reason, reply


def test_notes_record_the_threads(worker):
    _, _, result = _run(worker, dataclasses.replace(CASES[1], name="threads"))
    text = " ".join(result.notes)
    assert {"tensorflow": "intra/inter-op threads", "jax": "jax_enable_x64 = True", "torch": "torch.get_num_threads()"}[
        worker.device_key
    ] in text
