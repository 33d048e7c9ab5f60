"""Flax linen: flax.linen.BatchNorm, applied eagerly on the CPU; gradients with jax.vjp.

One module per run: nn.BatchNorm(axis=<case axis>, momentum=..., epsilon=..., use_scale=not fix_gamma,
use_bias=True, dtype=<case dtype>, param_dtype=<case parameter dtype>, use_fast_variance=<flag>), applied as
bn.apply({'params': {'scale': gamma, 'bias': beta}, 'batch_stats': {'mean': running_mean, 'var': running_var}},
x, use_running_average=<flag>, mutable=<flag>): the flag combination (FLAGS) gives use_running_average (the
call argument), mutable (['batch_stats'] or False) and use_fast_variance. dtype is the case's dtype, so float16
data gives a float16 y (the page: "dtype: the dtype of the result (default: infer from input and params)", which
for float16 data and float32 parameters would be float32); the statistics are float32 or wider whatever dtype
is ("Statistics are always at least float32 for stability", _compute_stats). The running statistics after the
call are the returned batch_stats when mutable, else the ones passed in (the page: "In this case we are not
mutating the batch statistics collection"). fix_gamma is use_scale=False ("if True, multiply by scale (gamma)"):
no scale parameter, so no dgamma. Any channel axis (axis: "the feature or non-batch axis of the input").
Backward: jax.vjp of (x, params) -> y with dy (see _flax.py). float64: jax_enable_x64 is enabled in open().

Conventions, from https://flax.readthedocs.io/en/latest/api_reference/flax.linen/layers.html#flax.linen.BatchNorm
(the docstring of flax 0.12.0's flax.linen.BatchNorm):
  "momentum: decay rate for the exponential moving average of the batch statistics."
                                   -> momentum weighs the OLD value (a decay rate keeps that much of it)
  which variance the running 'var' moves towards (biased or unbiased) is not stated: running_var None
  (PROFILE: the canonical biased)
  defaults "momentum=0.99", "epsilon=1e-05" (the signature on the page)
  the module returns the normalised input only (stats None; no EXTRA_OUTPUTS); the batch statistics are not
  returned, the running ones are the 'batch_stats' collection.
  use_fast_variance (default True): "If true, use a faster, but less numerically stable, calculation for the
  variance." Both ways are flag combinations (the default first), so every training case runs with each: the
  page says less stable, not how much (offset data: see cases/known_deviations.toml).
"""

from __future__ import annotations

from . import _flax
from .base import Combo, Profile, combo_for

NAME = "flax_linen"
API = "flax.linen.BatchNorm"
PAGE = "https://flax.readthedocs.io/en/latest/api_reference/flax.linen/layers.html#flax.linen.BatchNorm"

DOCUMENTED = Profile(momentum_dir="old", running_var=None, stats=None, eps=1e-5, momentum=0.99)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats=None, eps=1e-5, momentum=0.99)
EXTRA_OUTPUTS: dict[str, str] = {}
IMPLEMENTS = frozenset()  # no activation, no in-place; no flag normalises with one kind of statistics and updates
# otherwise than the page pairs them

_URA = (
    "use_running_average: if True, the statistics stored in batch_stats will be used instead of computing the "
    "batch statistics on the input."
)
_TRAIN = (
    "We then update the batch_stats during training by specifying that the batch_stats collection is mutable in "
    "the apply method for our module: y, new_batch_stats = BN.apply(variables, x, mutable=['batch_stats'], "
    "use_running_average=False)"
)
_EVAL = (
    "During eval we would define BN with use_running_average=True and use the batch_stats collection from "
    "training to set the statistics. In this case we are not mutating the batch statistics collection, and "
    "needn't mark it mutable"
)
FLAGS = (
    Combo(
        (("use_running_average", False), ("mutable", "batch_stats"), ("use_fast_variance", True)),
        "batch",
        True,
        _TRAIN + " / " + _flax.FAST_VARIANCE_QUOTE + " (default True)",
    ),
    Combo(
        (("use_running_average", False), ("mutable", "batch_stats"), ("use_fast_variance", False)),
        "batch",
        True,
        _TRAIN + " / " + _flax.FAST_VARIANCE_QUOTE,
    ),
    Combo((("use_running_average", True), ("mutable", False)), "running", False, _EVAL + " / " + _URA),
    Combo(
        (("use_running_average", True), ("mutable", "batch_stats")),
        "running",
        False,
        _EVAL + ": y = BN.apply(variables, x, mutable=['batch_stats'], use_running_average=True)",
    ),
    Combo(
        (("use_running_average", False), ("mutable", False)),
        None,
        None,
        "(the page pairs use_running_average=False with a mutable batch_stats collection only)",
    ),
)


def available():
    return _flax.available("flax.linen")


version = _flax.version
devices = _flax.devices


def open(device_key):
    return _flax.open_session()


def supports(session, case):
    return _flax.supports(API, case)


def run(session, case, inputs, policy, use_defaults=False):
    import flax.linen as nn
    import jax.numpy as jnp

    combo = combo_for(FLAGS, case)
    dtype, param_dtype = _flax.dtypes(case)
    kwargs = (
        {}
        if use_defaults
        else {"momentum": float(PROFILE.translate_momentum(case.momentum)), "epsilon": float(case.eps)}
    )
    bn = nn.BatchNorm(
        axis=case.axis,
        use_scale=not case.fix_gamma,
        use_bias=True,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=bool(combo.get("use_fast_variance", True)),
        **kwargs,
    )
    stats = {"mean": jnp.asarray(inputs.running_mean), "var": jnp.asarray(inputs.running_var)}
    mutable = ["batch_stats"] if combo.get("mutable") else False
    ura = bool(combo.get("use_running_average"))

    def fn(x, params):
        out = bn.apply({"params": params, "batch_stats": stats}, x, use_running_average=ura, mutable=mutable)
        if mutable:
            y, updated = out
            return y, dict(updated["batch_stats"])
        return out, stats

    notes = list(session["notes"]) + [f"flags {combo.label}"]
    return _flax.execute(case, inputs, policy, fn, notes)
