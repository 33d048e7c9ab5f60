"""OpenVINO: the BatchNormInference operation (opset5) in a one-node model compiled for each device OpenVINO lists.

One target per device in ov.Core().available_devices ('openvino@CPU', 'openvino@GPU', ...). The model has
Parameters data, gamma, beta, mean, variance and one opset5.batch_norm_inference node with the case's epsilon;
it is compiled for the device (ov.Core().compile_model) and called with the inputs. Building and compiling are
not timed; the timing is of the compiled model's call.

Pages (quoted):
  https://docs.openvino.ai/2021.2/openvino_docs_ops_normalization_BatchNormInference_5.html
    "Versioned name: BatchNormInference-5"
    "input - input tensor with data for normalization. At least a 2D tensor of type T, the second dimension
     represents the channel axis and must have a span of at least 1."  gamma, beta, mean, variance: "A 1D tensor
     of type T with the same span as input's channel axis."; attribute epsilon: float, required
  https://docs.openvino.ai/2025/documentation/openvino-ir-format/operation-sets/operation-specs/normalization/batch-norm-inference-1.html
    (the page as stored says "Versioned name: BatchNormInference-5")
    "Normalizes each activation x(k) by the mean and variance ... where E[x(k)] and Var(x(k)) are the mean and
     variance, calculated per channel axis of data input, and correspond to mean and variance inputs,
     respectively. Additionally, epsilon is a value added to the variance for numerical stability"
  https://docs.openvino.ai/2024/openvino-workflow/running-inference/inference-devices-and-modes/cpu-device.html
    "CPU plugin supports the following data types as inference precision of internal primitives: Floating-point
     data types: FP32 (Intel x86-64, Arm), BF16 (Intel x86-64), FP16 (Intel x86-64, Arm) ..."  -> no f64
So: inference only (the operation normalises with the mean and variance it is given and returns y alone: no
batch statistics, no running update, no backward); no default epsilon; every input of one type T.

What the adapter does about that:
  - training (normalize_with = batch) and any running update: unsupported, with that reason; backward: dx,
    dgamma, dbeta are not returned ('unsupported' rows), the forward is timed;
  - the running statistics after the call are the mean and variance fed in, read back (the operation has no
    other); x, gamma and beta are read back from the fed arrays after the call;
  - channel axis: the spec fixes it at 1; a case with its channel elsewhere is moved to axis 1 with numpy
    (np.moveaxis) before the call and y moved back after it, as for ONNX;
  - float16 data: the case's gamma, beta, mean and variance are float32; T is one type, so the model takes them as
    f32 Parameters and converts them to f16 inside the model (Convert nodes) before BatchNormInference;
  - precision: the device's INFERENCE_PRECISION_HINT is left at the plugin's default and recorded, and so is the
    precision the compiled model actually runs BatchNormInference in (runtimePrecision of that layer in
    compiled.get_runtime_model()); where that is not the data's type (the CPU plugin runs an f64 model in f32:
    f64 is not among its inference precisions) the case is unsupported, with what was found;
  - threads: INFERENCE_NUM_THREADS is the plugin's default for this machine (what a compiled model reports
    with it unset), set explicitly on the device in open() and recorded.
There are no flags choosing the statistics (FLAGS is empty): the operation only ever uses the ones it is given.
"""

from __future__ import annotations

import numpy as np

from ..errors import first_line
from .base import DeviceInfo, Profile, Result, Skip, Unsupported, time_repeats

NAME = "openvino"
OPSET = 5

DOCUMENTED = Profile(momentum_dir=None, running_var=None, stats=None, eps=None, momentum=None)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats=None, eps=None, momentum=None)
EXTRA_OUTPUTS: dict[str, str] = {}
IMPLEMENTS: frozenset = frozenset()
FLAGS: tuple = ()

_core = None


def _ov():
    import openvino

    return openvino


def core():
    global _core
    if _core is None:
        _core = _ov().Core()
    return _core


def available():
    try:
        import openvino
        import openvino.opset5  # noqa: F401
    except Exception as exc:
        return f"openvino import failed: {first_line(exc)}"
    return None


def version() -> str:
    return _ov().__version__


def _prop(device: str, name: str, default=""):
    try:
        value = core().get_property(device, name)
    except Exception:
        return default
    return value.get_type_name() if hasattr(value, "get_type_name") else value


def devices():
    out = []
    for dev in core().available_devices:
        caps = list(_prop(dev, "OPTIMIZATION_CAPABILITIES", []) or [])
        out.append(
            DeviceInfo(
                key=dev,
                name=str(_prop(dev, "FULL_DEVICE_NAME", dev)),
                vendor="OpenVINO",
                platform=str(_prop(dev, "DEVICE_ARCHITECTURE")),
                driver=version(),
                fp16=True,
                fp64="FP64" in caps,
                extra={"capabilities": caps, "inference_precision_hint": str(_prop(dev, "INFERENCE_PRECISION_HINT"))},
            )
        )
    return out


def _model(case, use_defaults=False):
    """Parameters data (channel axis at 1), gamma, beta, mean, variance; BatchNormInference-5; one Result."""
    ov = _ov()
    import openvino.opset5 as ops

    if use_defaults:
        raise Unsupported("BatchNormInference has no default epsilon (the attribute is required)")
    t_data = ov.Type(np.dtype(case.dtype))
    t_param = ov.Type(np.dtype(case.param_dtype))
    shape = list(np.moveaxis(np.empty(case.shape, dtype=np.uint8), case.channel_axis, 1).shape)
    data = ops.parameter(shape, t_data, name="data")
    params = [ops.parameter([case.channels], t_param, name=n) for n in ("gamma", "beta", "mean", "variance")]
    fed = [ops.convert(p, t_data) if t_param != t_data else p for p in params]
    node = ops.batch_norm_inference(data, *fed, float(case.eps), name="bn")
    return ov.Model([node], [data, *params], "batchnorm"), node.get_friendly_name()


def _runtime_precision(compiled, bn_name: str) -> str:
    """The runtime precision of the BatchNormInference layer in the compiled (executable) model."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = str(info["originalLayersNames"].astype(str)) if "originalLayersNames" in info else ""
        if bn_name in names.split(",") and "runtimePrecision" in info:
            return str(info["runtimePrecision"].astype(str))
    return "unknown"


def open(device_key):
    """The device, its default thread count made explicit (CPU plugin) and its precision hint, recorded."""
    c = core()
    if device_key is None and c.available_devices:  # no device named (conventions probe): the first listed
        device_key = c.available_devices[0]
    if device_key not in c.available_devices:
        raise Skip(f"OpenVINO lists no device {device_key!r}")
    session = {"device": device_key, "hint": str(_prop(device_key, "INFERENCE_PRECISION_HINT")), "threads": None}
    supported = _prop(device_key, "SUPPORTED_PROPERTIES", {}) or {}
    if "INFERENCE_NUM_THREADS" in supported:
        model, _ = _model(_Probe())
        threads = int(c.compile_model(model, device_key).get_property("INFERENCE_NUM_THREADS"))
        c.set_property(device_key, {"INFERENCE_NUM_THREADS": threads})
        session["threads"] = threads
    return session


class _Probe:
    """A minimal float32 case for the thread probe (what Case would give, without validating a name)."""

    dtype = param_dtype = "float32"
    shape = (2, 2)
    channel_axis = 1
    channels = 2
    eps = 1e-5


def supports(session, case):
    if case.fix_gamma:
        return "BatchNormInference has no fix_gamma (gamma is always an input)"
    if case.normalize_with == "batch":
        return "BatchNormInference-5 is inference only: it normalises with the mean and variance it is given"
    if case.updates_running:
        return "BatchNormInference-5 returns y only: it has no running statistics to update"
    return None


def run(session, case, inputs, policy, use_defaults=False):
    dev = session["device"]
    try:
        model, bn_name = _model(case, use_defaults)
        compiled = core().compile_model(model, dev)
    except Unsupported:
        raise
    except Exception as exc:  # the op or the plugin rejects the model
        raise Unsupported(f"openvino@{dev}: {first_line(exc)}") from None
    hint = (
        compiled.get_property("INFERENCE_PRECISION_HINT")
        if "INFERENCE_PRECISION_HINT" in compiled.get_property("SUPPORTED_PROPERTIES")
        else "n/a"
    )
    hint = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    runtime = _runtime_precision(compiled, bn_name)
    want = _ov().Type(np.dtype(case.dtype)).get_type_name()
    if runtime != want:
        raise Unsupported(
            f"openvino@{dev} runs BatchNormInference on {want} data in {runtime} (runtime model; "
            f"INFERENCE_PRECISION_HINT {hint}): it does not compute in {case.dtype}"
        )
    feeds = [
        np.moveaxis(inputs.x, case.channel_axis, 1).copy(),
        inputs.gamma.copy(),
        inputs.beta.copy(),
        inputs.running_mean.copy(),
        inputs.running_var.copy(),
    ]
    request = compiled.create_infer_request()

    def call():
        return request.infer(feeds, share_inputs=False)

    try:
        got = call()
    except Exception as exc:
        raise Unsupported(f"openvino@{dev}: {first_line(exc)}") from None
    y = np.ascontiguousarray(np.moveaxis(np.array(got[compiled.output(0)], copy=True), 1, case.channel_axis))
    outputs = {"y": y, "running_mean": feeds[3].copy(), "running_var": feeds[4].copy()}
    untouched = {
        "x": np.ascontiguousarray(np.moveaxis(feeds[0], 1, case.channel_axis)),
        "gamma": feeds[1].copy(),
        "beta": feeds[2].copy(),
    }
    walls, _ = time_repeats(lambda: call() and None, policy)
    notes = [
        f"device {dev}: INFERENCE_PRECISION_HINT {hint}, BatchNormInference runs in {runtime}; "
        f"INFERENCE_NUM_THREADS {session['threads'] if session['threads'] is not None else 'n/a'}"
    ]
    if case.channel_axis != 1:
        notes.append(f"channel axis {case.axis} moved to 1 with numpy (BatchNormInference fixes it at 1)")
    if case.dtype == "float16":
        notes.append("gamma, beta, mean, variance fed as f32 and converted to f16 in the model (one type T)")
    if case.backward:
        notes.append("BatchNormInference has no backward: dx, dgamma, dbeta not returned; forward timed")
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)
