"""MXNet 1.9.1 `mx.sym.BatchNorm_v1` (deprecated operator) bound into an executor, on the CPU or a
GPU (`gpu:N`, see _mxnet).

The symbol BatchNorm_v1(data, gamma, beta, eps=, momentum=, fix_gamma=, use_global_stats=,
output_mean_var=True) is bound with Symbol.bind(args={data, gamma, beta}, args_grad=... when backward,
aux_states={moving_mean, moving_var}); then executor.forward(is_train=...) and, for backward,
executor.backward(out_grads=[dy], is_train=...). Outputs, gradients and aux states are read back from the
arrays handed to bind. is_train and use_global_stats come from the case's flag combination (FLAGS, the page's
words beside each): training is_train=True, use_global_stats=False; inference is_train=False,
use_global_stats=True; is_train=True with use_global_stats=True is inference too ("force change batch-norm into a
scale shift operator"); is_train=False with use_global_stats=False is undefined on the page (it never mentions
is_train), run only by `conformance conventions`. output_mean_var is always on.

No axis parameter: the channel axis is 1, other channel axes are turned down by supports(). Ranks and
dtypes are tried. Conventions as mxnet_v1 (same operator, same documentation pages).
"""

from __future__ import annotations

from . import _mxnet
from .base import Profile, Result, Unsupported, combo_for, time_repeats

NAME = "mxnet_v1_sym"
DOCUMENTED = Profile(momentum_dir="old", running_var=None, stats="var", eps=0.001, momentum=0.9)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats="var", eps=0.001, momentum=0.9)
EXTRA_OUTPUTS: dict[str, str] = {}
FLAGS = _mxnet.flag_table("is_train")
IMPLEMENTS: frozenset[str] = frozenset()

available = _mxnet.available
version = _mxnet.version
devices = _mxnet.devices


def open(device_key):
    _mxnet.pin(device_key)  # the executor is bound to its Context, to_nd() puts the arrays there
    return None


def supports(session, case):
    if case.channel_axis != 1:
        return f"BatchNorm_v1 has no axis parameter: the channel axis is fixed at 1 (case axis {case.axis})"
    return None


def run(session, case, inputs, policy, use_defaults=False):
    mx = _mxnet.load()
    combo = combo_for(FLAGS, case)
    train = bool(combo.get("is_train"))
    attrs = _mxnet.params(combo, case, PROFILE, use_defaults)
    sym = mx.sym.BatchNorm_v1(mx.sym.var("data"), mx.sym.var("gamma"), mx.sym.var("beta"), name="bn", **attrs)
    to_nd = _mxnet.to_nd
    args = {"data": to_nd(inputs.x), "gamma": to_nd(inputs.gamma), "beta": to_nd(inputs.beta)}
    aux = {"bn_moving_mean": to_nd(inputs.running_mean), "bn_moving_var": to_nd(inputs.running_var)}
    grads = (
        {k: mx.nd.zeros(v.shape, dtype=v.dtype, ctx=_mxnet.ctx()) for k, v in args.items()} if case.backward else None
    )
    dy = to_nd(inputs.dy) if case.backward else None

    try:
        exe = sym.bind(
            _mxnet.ctx(), args=args, args_grad=grads, grad_req="write" if case.backward else "null", aux_states=aux
        )

        def call():
            outs = exe.forward(is_train=train)
            if case.backward:
                exe.backward(out_grads=[dy], is_train=train)
            mx.nd.waitall()
            return outs

        outs = call()
        g = (grads["data"], grads["gamma"], grads["beta"]) if case.backward else None
        outputs = _mxnet.collect(case, PROFILE.stats, outs, aux["bn_moving_mean"], aux["bn_moving_var"], g)
        untouched = {k: args[n].asnumpy() for k, n in (("x", "data"), ("gamma", "gamma"), ("beta", "beta"))}
        walls, _ = time_repeats(call, policy)
    except mx.base.MXNetError as exc:
        raise Unsupported(_mxnet.message(exc)) from None
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=[])
