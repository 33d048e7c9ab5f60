"""TensorFlow (CPU, eager): tf.compat.v1.nn.fused_batch_norm, the FusedBatchNormV3 op, with tf.raw_ops for the
outputs the wrapper drops.

The call is tf.compat.v1.nn.fused_batch_norm(x, scale, offset, mean, variance, epsilon, data_format, is_training,
exponential_avg_factor) -> (y, running_mean, running_var): the first three outputs of FusedBatchNormV3 (the op
names them y, batch_mean, batch_variance). They are y and the running statistics after the call. The op's
reserve_space_1 and reserve_space_2, which the wrapper drops, come from a second, untimed call of
tf.raw_ops.FusedBatchNormV3 with the same arguments; they are EXTRA_OUTPUTS mapped to what the op page says
they hold. reserve_space_3 is "some intermediate results" (empty on the CPU) and is not compared. Backward is
tf.GradientTape over the wrapper call: x, scale and offset watched, dy as the output gradient.

Pages (quoted; TensorFlow 2.x API docs):
  https://www.tensorflow.org/api_docs/python/tf/compat/v1/nn/fused_batch_norm
    "fused_batch_norm(x, scale, offset, mean=None, variance=None, epsilon=0.001, data_format='NHWC',
     is_training=True, name=None, exponential_avg_factor=1.0)"           -> default eps 0.001, factor 1.0
    "x: Input Tensor of 4 or 5 dimensions."
    "data_format: The data format for x. Support "NHWC" (default) or "NCHW" for 4D tenors and "NDHWC" or
     "NCDHW" for 5D tensors."
    "running_mean: ... The output value is (1 - exponential_avg_factor) * mean + exponential_avg_factor *
     batch_mean), where batch_mean is the mean of the current batch in x."
                              -> the factor weighs the NEW value (momentum_dir 'new'), default 1.0
    "running_var: ... The output value is (1 - exponential_avg_factor) * variance + exponential_avg_factor *
     batch_variance), where batch_variance is the variance of the current batch in x."
                              -> which variance (biased or unbiased) is not said: running_var None
    "exponential_avg_factor: ... If set to 1.0, the current batch average is returned."
    mean: "is_training==False (inference): Mean must be a Tensor ... containing the estimated population mean
     computed during training. is_training==True and exponential_avg_factor == 1.0: Mean must be None.
     is_training==True and exponential_avg_factor != 1.0: Mean must be a Tensor ... containing the exponential
     running mean."                                     (variance: the same words)
  https://www.tensorflow.org/api_docs/python/tf/raw_ops/FusedBatchNormV3
    "x: A Tensor. Must be one of the following types: half, bfloat16, float32."   -> no float64
    "scale: A Tensor. Must be one of the following types: bfloat16, float32."     -> float32 parameters for half x
    "reserve_space_1: A 1D Tensor for the computed batch mean, to be reused in the gradient computation."
    "reserve_space_2: A 1D Tensor for the computed batch variance (inverted variance in the cuDNN case), to be
     reused in the gradient computation."    -> on the CPU (no cuDNN): the batch variance, mapped to 'var'
The wrapper returns no batch statistic beside y (stats None); the reserve spaces stand in.

Flags (FLAGS): is_training chooses the statistics; exponential_avg_factor = 0 is, by the page's formula, a
training call that leaves the running statistics where they were (the canonical update_running = false). With a
factor of 1 (canonical momentum 0) the wrapper is called with mean=None, variance=None, as the page requires;
otherwise the factor is 1 - canonical momentum.

Layouts: channel axis 1 of a 4D (5D) input is 'NCHW' ('NCDHW'), the last axis 'NHWC' ('NDHWC'); every other
rank or channel axis cannot be expressed and is unsupported with the reason. float64 data is unsupported (the
op's type list); float16 data runs with float32 scale, offset, mean and variance, as the op's U type asks.
Threads and oneDNN: see _tensorflow.py.
"""

from __future__ import annotations

from ..errors import first_line
from . import _tensorflow
from .base import Combo, Profile, Result, Unsupported, combo_for, time_repeats

NAME = "tensorflow"
API = "tf.compat.v1.nn.fused_batch_norm"

DOCUMENTED = Profile(momentum_dir="new", running_var=None, stats=None, eps=0.001, momentum=1.0)
PROFILE = Profile(momentum_dir="new", running_var="biased", stats=None, eps=0.001, momentum=1.0)
EXTRA_OUTPUTS = {"reserve_space_1": "mean", "reserve_space_2": "var"}
IMPLEMENTS = frozenset({"update_running=0"})  # exponential_avg_factor=0: training without moving the running stats

_RUNNING = (
    "running_mean: ... The output value is (1 - exponential_avg_factor) * mean + exponential_avg_factor * "
    "batch_mean), where batch_mean is the mean of the current batch in x."
)
FLAGS = (
    Combo(
        (("is_training", True),),
        "batch",
        True,
        "is_training==True and exponential_avg_factor != 1.0: Mean must be a Tensor of the same shape as scale "
        "containing the exponential running mean. " + _RUNNING,
    ),
    Combo(
        (("is_training", False),),
        "running",
        False,
        "is_training==False (inference): Mean must be a Tensor of the same shape as scale containing the estimated "
        "population mean computed during training.",
    ),
    Combo(
        (("is_training", True), ("exponential_avg_factor", 0.0)),
        "batch",
        False,
        "exponential_avg_factor: A float number (usually between 0 and 1) used for controlling the decay of the "
        "running population average of mean and variance. " + _RUNNING,
    ),
)

_TYPES = ("float16", "float32")  # FusedBatchNormV3's T: half, bfloat16, float32


def available():
    return _tensorflow.available()


def version() -> str:
    return _tensorflow.version()


def devices():
    return _tensorflow.cpu_devices(fp64=False)


def open(device_key):
    _tensorflow.tf()
    return None


def data_format(case) -> str | None:
    """The data_format string for the case's rank and channel axis, or None when none expresses it."""
    nd, ax = len(case.shape), case.channel_axis
    if nd not in (4, 5):
        return None
    spatial = "HW" if nd == 4 else "DHW"
    if ax == 1:
        return "NC" + spatial
    if ax == nd - 1:
        return "N" + spatial + "C"
    return None


def supports(session, case):
    if case.fix_gamma:
        return f"{API} has no fix_gamma (scale is always applied)"
    if case.dtype not in _TYPES:
        return f"FusedBatchNormV3 takes x of type half, bfloat16 or float32, not {case.dtype}"
    if data_format(case) is None:
        nd = len(case.shape)
        if nd not in (4, 5):
            return f"{API} takes x of 4 or 5 dimensions, not a rank-{nd} input"
        return (
            f"{API} has no axis parameter: its data_format puts the channels on axis 1 (NCHW/NCDHW) or last "
            f"(NHWC/NDHWC), not on axis {case.channel_axis} of a rank-{nd} input"
        )
    return None


def run(session, case, inputs, policy, use_defaults=False):
    tf = _tensorflow.tf()
    combo = combo_for(FLAGS, case)
    training = bool(combo.get("is_training"))
    fmt = data_format(case)
    kwargs = {"data_format": fmt, "is_training": training}
    if not use_defaults:
        factor = combo.get("exponential_avg_factor", PROFILE.translate_momentum(case.momentum))
        kwargs.update(epsilon=float(case.eps), exponential_avg_factor=float(factor))
    factor = kwargs.get("exponential_avg_factor", 1.0)
    no_stats = training and factor == 1.0  # the page: "Mean must be None"

    x = tf.constant(inputs.x)
    scale, offset = tf.constant(inputs.gamma), tf.constant(inputs.beta)
    mean = None if no_stats else tf.constant(inputs.running_mean)
    var = None if no_stats else tf.constant(inputs.running_var)
    dy = tf.constant(inputs.dy) if case.backward else None

    def call():
        if not case.backward:
            return tf.compat.v1.nn.fused_batch_norm(x, scale, offset, mean, var, **kwargs), None
        with tf.GradientTape() as tape:
            tape.watch([x, scale, offset])
            outs = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, mean, var, **kwargs)
        return outs, tape.gradient(outs[0], [x, scale, offset], output_gradients=dy)

    try:
        (y, run_mean, run_var), grads = call()
        raw = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=scale,
            offset=offset,
            mean=tf.constant([], scale.dtype) if mean is None else mean,
            variance=tf.constant([], scale.dtype) if var is None else var,
            **{"epsilon": 0.001, **kwargs},
        )  # the wrapper's default eps where it is not given
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, ValueError, TypeError) as exc:
        raise Unsupported(f"{API}: {first_line(exc)}") from None

    outputs = {
        "y": y.numpy().copy(),
        "running_mean": run_mean.numpy().copy(),
        "running_var": run_var.numpy().copy(),
        "reserve_space_1": raw[3].numpy().copy(),
        "reserve_space_2": raw[4].numpy().copy(),
    }
    if grads is not None:
        outputs["dx"], outputs["dgamma"], outputs["dbeta"] = (g.numpy().copy() for g in grads)
    untouched = {"x": x.numpy().copy(), "gamma": scale.numpy().copy(), "beta": offset.numpy().copy()}
    walls, _ = time_repeats(lambda: call() and None, policy)
    notes = [
        f"{combo.label}, data_format={fmt}"
        + ("" if use_defaults else f", exponential_avg_factor={factor:g}")
        + (", mean=None, variance=None" if no_stats else ""),
        _tensorflow.thread_note(),
    ]
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)
