"""TensorFlow (CPU, eager): tf.nn.moments and tf.nn.batch_normalization, the unfused composition.

Training (normalise with the batch): mean, variance = tf.nn.moments(x, axes=<every axis but the channel>,
keepdims=True), then y = tf.nn.batch_normalization(x, mean, variance, offset, scale, variance_epsilon).
Inference (normalise with the running statistics): the same call with the running mean and variance. scale,
offset and the running statistics are reshaped (tf.reshape) to the rank of x, 1 on every reduced axis, as the page
allows, so every channel axis is expressed. The batch statistics are outputs 'mean' and 'var' (moments' two
results, squeezed); backward is tf.GradientTape over the whole composition (through moments in training).

The running statistics are NOT TensorFlow's: neither function keeps or updates any. This adapter computes them,
with TensorFlow ops in the parameter dtype, by the canonical rule running = momentum * running + (1 - momentum)
* batch, batch being moments' mean and variance (so the running rows check moments, and the adapter's three
operations); where the case leaves them (inference, update_running = false) they are the inputs as given. That
is the whole of update_running=0/1 in IMPLEMENTS: it is this composition, not a TensorFlow flag. There is no
flag that chooses the statistics (FLAGS is empty): the caller passes them, and the page says which to pass.

Pages (quoted; TensorFlow 2.x API docs):
  https://www.tensorflow.org/api_docs/python/tf/nn/batch_normalization
    "tf.nn.batch_normalization(x, mean, variance, offset, scale, variance_epsilon, name=None)"
                                                  -> variance_epsilon has no default (eps None)
    "Normalizes a tensor by mean and variance, and applies (optionally) a scale gamma to it, as well as an
     offset beta: gamma(x - mu)/sigma + beta"
    "In all generality, they can have the same number of dimensions as the input x, with identical sizes as x
     for the dimensions that are not normalized over (the 'depth' dimension(s)), and dimension 1 for the others
     which are being normalized over. mean and variance in this case would typically be the outputs of
     tf.nn.moments(..., keepdims=True) during training, or running averages thereof during inference."
  https://www.tensorflow.org/api_docs/python/tf/nn/moments
    "The mean and variance are calculated by aggregating the contents of x across axes."
    "Returns: Two Tensor objects: mean and variance."   -> the batch statistic is the variance (stats 'var');
                                                           biased or not is not said
No momentum, no running variance, no defaults: DOCUMENTED is None there; PROFILE takes the canonical choices
(momentum weighs the old value, biased variance), which are this adapter's.

float16 data: batch_normalization computes in x's dtype and takes mean, variance, offset and scale of that dtype;
the case's float32 parameters are passed as they are and TensorFlow's refusal is the 'unsupported' reason.
float64 runs as float64. Threads and oneDNN: see _tensorflow.py.
"""

from __future__ import annotations

from ..errors import first_line
from . import _tensorflow
from .base import Profile, Result, Unsupported, time_repeats

NAME = "tensorflow_nn"
API = "tf.nn.moments + tf.nn.batch_normalization"

DOCUMENTED = Profile(momentum_dir=None, running_var=None, stats="var", eps=None, momentum=None)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats="var", eps=None, momentum=None)
EXTRA_OUTPUTS: dict[str, str] = {}
IMPLEMENTS = frozenset({"update_running=0", "update_running=1"})  # the adapter's running update, as said above
FLAGS: tuple = ()  # no flag chooses the statistics: the caller passes them


def available():
    return _tensorflow.available()


def version() -> str:
    return _tensorflow.version()


def devices():
    return _tensorflow.cpu_devices(fp64=True)


def open(device_key):
    _tensorflow.tf()
    return None


def supports(session, case):
    if case.fix_gamma:
        return "tf.nn.batch_normalization has no fix_gamma (scale is applied when given)"
    return None


def run(session, case, inputs, policy, use_defaults=False):
    tf = _tensorflow.tf()
    if use_defaults:
        raise Unsupported("tf.nn.batch_normalization has no default variance_epsilon (and no momentum)")
    nd, ax = len(case.shape), case.channel_axis
    axes = [i for i in range(nd) if i != ax]
    bshape = [case.channels if i == ax else 1 for i in range(nd)]
    eps, mom = float(case.eps), float(case.momentum)

    x = tf.constant(inputs.x)
    scale, offset = tf.constant(inputs.gamma), tf.constant(inputs.beta)
    rm, rv = tf.constant(inputs.running_mean), tf.constant(inputs.running_var)
    dy = tf.constant(inputs.dy) if case.backward else None
    batch = case.normalize_with == "batch"

    def forward():
        mean = var = None
        if case.batch_stats:
            mean, var = tf.nn.moments(x, axes=axes, keepdims=True)
        m, v = (mean, var) if batch else (tf.reshape(rm, bshape), tf.reshape(rv, bshape))
        y = tf.nn.batch_normalization(x, m, v, tf.reshape(offset, bshape), tf.reshape(scale, bshape), eps)
        return y, mean, var

    def call():
        if not case.backward:
            return forward(), None
        with tf.GradientTape() as tape:
            tape.watch([x, scale, offset])
            outs = forward()
        return outs, tape.gradient(outs[0], [x, scale, offset], output_gradients=dy)

    try:
        (y, mean, var), grads = call()
        if case.updates_running:  # the adapter's update (see the module docstring)
            new_rm = mom * rm + (1.0 - mom) * tf.reshape(mean, [-1])
            new_rv = mom * rv + (1.0 - mom) * tf.reshape(var, [-1])
        else:
            new_rm, new_rv = rm, rv
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, ValueError, TypeError) as exc:
        raise Unsupported(f"{API}: {first_line(exc)}") from None

    outputs = {"y": y.numpy().copy(), "running_mean": new_rm.numpy().copy(), "running_var": new_rv.numpy().copy()}
    if mean is not None:
        outputs["mean"], outputs["var"] = tf.reshape(mean, [-1]).numpy().copy(), tf.reshape(var, [-1]).numpy().copy()
    if grads is not None:
        outputs["dx"], outputs["dgamma"], outputs["dbeta"] = (g.numpy().copy() for g in grads)
    untouched = {"x": x.numpy().copy(), "gamma": scale.numpy().copy(), "beta": offset.numpy().copy()}
    walls, _ = time_repeats(lambda: call() and None, policy)
    notes = [
        f"moments over axes {axes}; "
        + (
            "running statistics updated by the adapter" if case.updates_running else "running statistics passed through"
        ),
        _tensorflow.thread_note(),
    ]
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)
