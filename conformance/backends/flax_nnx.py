"""Flax NNX: flax.nnx.BatchNorm, called eagerly on the CPU; gradients with jax.vjp over nnx.split / nnx.merge.

One module per run: nnx.BatchNorm(channels, axis=<case axis>, momentum=..., epsilon=..., use_scale=not fix_gamma,
use_bias=True, dtype=<case dtype>, param_dtype=<case parameter dtype>, use_fast_variance=<flag>, rngs=nnx.Rngs(0));
its mean and var (BatchStat) are set from the running statistics, then layer.train() or layer.eval() and the call
argument use_running_average (None: not passed) come from the flag combination (FLAGS). The call is pure for
jax.vjp: graphdef, _, rest = nnx.split(layer, nnx.Param, ...); each call merges a fresh module from the
differentiated parameters ({'scale': gamma, 'bias': beta}) and the rest (its running statistics, as plain arrays:
nnx.to_pure_dict), calls it, and returns y with the module's mean and var after the call (the running statistics).
dtype is the case's dtype (float16 data -> float16 y; the statistics are float32 or wider).
fix_gamma is use_scale=False (no scale, so no dgamma). Any channel axis. float64: jax_enable_x64 in open().

Conventions, from https://flax.readthedocs.io/en/latest/api_reference/flax.nnx/nn/normalization.html (the
docstring of flax 0.12.0's flax.nnx.BatchNorm):
  "momentum: decay rate for the exponential moving average of the batch statistics."  -> the OLD value's weight
  which variance the running var moves towards is not stated: running_var None (PROFILE: the canonical biased)
  defaults "momentum=0.99", "epsilon=1e-05"; returns the normalised input only (stats None; no EXTRA_OUTPUTS)
  "To calculate the batch norm on the input and update the batch statistics, call the train() method (or pass in
   use_running_average=False in the constructor or during call time). To use the stored batch statistics' running
   average, call the eval() method (or pass in use_running_average=True in the constructor or during call time)."
  and, of __call__: "The use_running_average flag passed into the call method will take precedence over the
  use_running_average flag passed into the constructor."
  use_fast_variance (default True): "If true, use a faster, but less numerically stable, calculation for the
  variance": both ways are flag combinations of training, the default first.
"""

from __future__ import annotations

from . import _flax
from .base import Combo, Profile, combo_for

NAME = "flax_nnx"
API = "flax.nnx.BatchNorm"
PAGE = "https://flax.readthedocs.io/en/latest/api_reference/flax.nnx/nn/normalization.html"

DOCUMENTED = Profile(momentum_dir="old", running_var=None, stats=None, eps=1e-5, momentum=0.99)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats=None, eps=1e-5, momentum=0.99)
EXTRA_OUTPUTS: dict[str, str] = {}
IMPLEMENTS = frozenset()  # no activation, no in-place, no flag pairing the statistics otherwise

_TRAIN = (
    "To calculate the batch norm on the input and update the batch statistics, call the train() method (or pass "
    "in use_running_average=False in the constructor or during call time)."
)
_EVAL = (
    "To use the stored batch statistics' running average, call the eval() method (or pass in "
    "use_running_average=True in the constructor or during call time). [example: after layer.eval(); y = layer(x) "
    "the batch statistics are asserted unchanged]"
)
_PRECEDENCE = (
    "The use_running_average flag passed into the call method will take precedence over the "
    "use_running_average flag passed into the constructor."
)
FLAGS = (
    Combo(
        (("mode", "train"), ("use_running_average", None), ("use_fast_variance", True)),
        "batch",
        True,
        _TRAIN + " / " + _flax.FAST_VARIANCE_QUOTE + " (default True)",
    ),
    Combo(
        (("mode", "train"), ("use_running_average", None), ("use_fast_variance", False)),
        "batch",
        True,
        _TRAIN + " / " + _flax.FAST_VARIANCE_QUOTE,
    ),
    Combo((("mode", "eval"), ("use_running_average", None)), "running", False, _EVAL),
    Combo((("mode", "eval"), ("use_running_average", False)), "batch", True, _TRAIN + " " + _PRECEDENCE),
    Combo((("mode", "train"), ("use_running_average", True)), "running", False, _EVAL[:150] + " " + _PRECEDENCE),
)


def available():
    return _flax.available("flax.nnx")


version = _flax.version
devices = _flax.devices


def open(device_key):
    return _flax.open_session()


def supports(session, case):
    return _flax.supports(API, case)


def run(session, case, inputs, policy, use_defaults=False):
    import jax.numpy as jnp
    from flax import nnx

    combo = combo_for(FLAGS, case)
    dtype, param_dtype = _flax.dtypes(case)
    kwargs = (
        {}
        if use_defaults
        else {"momentum": float(PROFILE.translate_momentum(case.momentum)), "epsilon": float(case.eps)}
    )
    layer = nnx.BatchNorm(
        case.channels,
        axis=case.axis,
        use_scale=not case.fix_gamma,
        use_bias=True,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=bool(combo.get("use_fast_variance", True)),
        rngs=nnx.Rngs(0),
        **kwargs,
    )
    layer.mean.value = jnp.asarray(inputs.running_mean)
    layer.var.value = jnp.asarray(inputs.running_var)
    if combo.get("mode") == "train":
        layer.train()
    else:
        layer.eval()
    ura = combo.get("use_running_average")  # None: not passed (the call's own default)
    graphdef, _, rest = nnx.split(layer, nnx.Param, ...)  # the parameters come in as the differentiated argument
    rest = nnx.to_pure_dict(rest)  # plain arrays: merge wraps them in Variables of the caller's trace level

    def fn(x, params):
        m = nnx.merge(graphdef, nnx.State(params), nnx.State(rest))  # a fresh module, mutable inside the trace
        y = m(x) if ura is None else m(x, use_running_average=ura)
        return y, {"mean": m.mean.value, "var": m.var.value}

    notes = list(session["notes"]) + [f"flags {combo.label}"]
    return _flax.execute(case, inputs, policy, fn, notes)
