"""Shared by the two ONNX backends: a one-node BatchNormalization model, its feeds, and one run of it.

The operator is `BatchNormalization` at opset 15, the newest version of it in onnx 1.23
(onnx.defs.get_schema('BatchNormalization').since_version == 15; opsets 16 to 28 leave it unchanged) and one
onnxruntime 1.31 implements on CPU, training_mode included. The model has inputs X, scale, B, input_mean,
input_var; attributes epsilon, momentum, training_mode; outputs Y, and in training_mode also running_mean
and running_var (output case #1 of the spec; the operator returns no batch statistics at this opset).

Conventions, from the spec text (onnx.defs.get_schema('BatchNormalization').doc and its attributes):
  "running_mean = input_mean * momentum + current_mean * (1 - momentum)"   -> momentum weighs the OLD value
  "Notice that `ReduceVar` refers to the population variance, and it equals to sum(sqrd(x_i - x_avg)) / N
   where N is the population size (this formula does not use sample size N - 1)", and of output running_var:
  "This op uses the population size (N) for calculating variance, and not the sample size N-1."
                                                                         -> biased running variance
  attribute defaults: epsilon 1e-05, momentum 0.9.
The spec's X is (N x C x D1 ... Dn): the channel axis is fixed at 1. A case with its channel on another axis
is moved there with numpy (np.moveaxis) before the call, and Y is moved back after it.
ONNX defines no backward: dx, dgamma and dbeta are not returned (they become 'unsupported' rows), and the
timing is of the forward call only. Building the model and the engine's session is not timed.
epsilon and momentum are FLOAT attributes (32-bit): a float64 case gets them rounded to float32.
"""

from __future__ import annotations

import numpy as np

from ..errors import first_line
from .base import Profile, Result, Unsupported, time_repeats

OPSET = 15

DOCUMENTED = Profile(momentum_dir="old", running_var="biased", stats=None, eps=1e-5, momentum=0.9)
PROFILE = DOCUMENTED  # the spec states every convention
EXTRA_OUTPUTS: dict[str, str] = {}  # Y, running_mean, running_var only

NO_FIX_GAMMA = "ONNX BatchNormalization has no fix_gamma (scale is always an input)"


def supports(case) -> str | None:
    return NO_FIX_GAMMA if case.fix_gamma else None


def build_model(case, use_defaults: bool = False):
    """The one-node model for this case (shapes and dtypes fixed), checked with onnx.checker."""
    import onnx
    from onnx import helper

    data_t = helper.np_dtype_to_tensor_dtype(np.dtype(case.dtype))
    param_t = helper.np_dtype_to_tensor_dtype(np.dtype(case.param_dtype))
    shape = list(np.moveaxis(np.empty(case.shape, dtype=np.uint8), case.channel_axis, 1).shape)
    c = [case.channels]
    train = case.mode == "train"
    inputs = [helper.make_tensor_value_info("X", data_t, shape)]
    inputs += [helper.make_tensor_value_info(n, param_t, c) for n in ("scale", "B", "input_mean", "input_var")]
    outputs = [helper.make_tensor_value_info("Y", data_t, shape)]
    if train:
        outputs += [helper.make_tensor_value_info(n, param_t, c) for n in ("running_mean", "running_var")]
    attrs = {"training_mode": int(train)}
    if not use_defaults:
        attrs.update(epsilon=float(case.eps), momentum=float(PROFILE.translate_momentum(case.momentum)))
    node = helper.make_node("BatchNormalization", [i.name for i in inputs], [o.name for o in outputs], **attrs)
    graph = helper.make_graph([node], "batchnorm", inputs, outputs)
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets), producer_name="conformance"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def make_feeds(case, inputs) -> dict[str, np.ndarray]:
    """Fresh C-contiguous copies of the inputs, X with its channel axis moved to 1."""
    return {
        "X": np.moveaxis(inputs.x, case.channel_axis, 1).copy(),
        "scale": inputs.gamma.copy(),
        "B": inputs.beta.copy(),
        "input_mean": inputs.running_mean.copy(),
        "input_var": inputs.running_var.copy(),
    }


def _back(a: np.ndarray, case) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(np.asarray(a), 1, case.channel_axis))


def run(case, inputs, policy, use_defaults, make_runner, engine: str) -> Result:
    """One case on one engine. make_runner(model) -> callable(feeds) -> list of output arrays."""
    try:
        model = build_model(case, use_defaults)
    except Exception as exc:  # the checker rejects the model: the spec cannot express the case
        raise Unsupported(f"onnx.checker: {first_line(exc)}") from None
    feeds = make_feeds(case, inputs)
    try:
        call = make_runner(model)
        got = call(feeds)
    except Exception as exc:
        raise Unsupported(f"{engine}: {first_line(exc)}") from None
    outputs = {"y": _back(got[0], case).copy()}
    if case.mode == "train":
        outputs["running_mean"] = np.array(got[1], copy=True)
        outputs["running_var"] = np.array(got[2], copy=True)
    else:  # the running statistics in use are the feeds: read them back
        outputs["running_mean"] = feeds["input_mean"].copy()
        outputs["running_var"] = feeds["input_var"].copy()
    untouched = {"x": _back(feeds["X"], case).copy(), "gamma": feeds["scale"].copy(), "beta": feeds["B"].copy()}
    notes = []
    if case.channel_axis != 1:
        notes.append(f"channel axis {case.axis} moved to 1 with numpy (ONNX fixes it at 1)")
    if case.dtype == "float64" and not use_defaults:
        notes.append(
            "epsilon and momentum are FLOAT (32-bit) attributes in ONNX: the model holds them rounded to float32"
        )
    if case.backward:
        notes.append("ONNX BatchNormalization has no backward: dx, dgamma, dbeta not returned; forward timed")
    walls, _ = time_repeats(lambda: call(feeds), policy)
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)
