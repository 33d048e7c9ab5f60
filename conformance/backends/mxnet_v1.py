"""MXNet 1.9.1 `BatchNorm_v1` (deprecated operator) through the imperative NDArray API, on the CPU or a
GPU (`gpu:N`, see _mxnet).

The operator takes five inputs: data, gamma, beta and the auxiliary states moving_mean, moving_var. The
generated Python wrapper mx.nd.BatchNorm_v1 exposes only data, gamma and beta (called with those MXNet
answers "Operator BatchNorm_v1 expects 5 inputs, but got 3 instead"), so the adapter invokes the same
registered operator the way that wrapper does, through mxnet.ndarray._internal._imperative_invoke, with
all five NDArrays. Autograd and backward as in mxnet_nd (see _mxnet.py), with its flag combinations of
train_mode and use_global_stats (FLAGS, the page's words beside each: the v1 pages say what mx.nd.BatchNorm's
says about use_global_stats and nothing about train_mode); output_mean_var is always on.

BatchNorm_v1 has no axis parameter (docs and operator list none): the channel axis is 1, so supports()
turns down any other channel axis. Ranks and dtypes are tried; MXNet rejects what it cannot run.

Returned: [out, mean, var]; the docs: "If output_mean_var is set to be true, then outputs both data_mean
and data_var" -> stats 'var'. Conventions (R pages mx.symbol.BatchNorm_v1, mx.nd.BatchNorm.v1; README.md, Sources):
"moving_mean = moving_mean * momentum + data_mean * (1 - momentum)" -> momentum weighs the old value;
data_var = var(...), biased or not unsaid -> running_var None; defaults eps 0.001 (the nd page prints
0.00100000005: the attribute is a float32), momentum 0.9 (0.899999976).
"""

from __future__ import annotations

import ctypes

from . import _mxnet
from .base import Profile, combo_for

NAME = "mxnet_v1"
DOCUMENTED = Profile(momentum_dir="old", running_var=None, stats="var", eps=0.001, momentum=0.9)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats="var", eps=0.001, momentum=0.9)
EXTRA_OUTPUTS: dict[str, str] = {}
FLAGS = _mxnet.flag_table("train_mode")
IMPLEMENTS: frozenset[str] = frozenset()

available = _mxnet.available
version = _mxnet.version
devices = _mxnet.devices


def open(device_key):
    mx = _mxnet.load()
    _mxnet.pin(device_key)  # to_nd() puts every array on its Context
    handle = ctypes.c_void_p()
    mx.base.check_call(mx.base._LIB.NNGetOpHandle(mx.base.c_str("BatchNorm_v1"), ctypes.byref(handle)))
    return handle.value


def supports(session, case):
    if case.channel_axis != 1:
        return f"BatchNorm_v1 has no axis parameter: the channel axis is fixed at 1 (case axis {case.axis})"
    return None


def run(session, case, inputs, policy, use_defaults=False):
    from mxnet.ndarray._internal import _imperative_invoke

    def op(x, g, b, rm, rv, **attrs):
        return _imperative_invoke(session, [x, g, b, rm, rv], list(attrs), list(attrs.values()), None, False, False)

    combo = combo_for(FLAGS, case)
    attrs = _mxnet.params(combo, case, PROFILE, use_defaults)
    notes = [
        "BatchNorm_v1 invoked through mxnet.ndarray._internal._imperative_invoke with 5 inputs "
        "(the mx.nd.BatchNorm_v1 wrapper passes only data, gamma, beta)"
    ]
    return _mxnet.run_imperative(
        case, inputs, policy, op, attrs, PROFILE.stats, notes, train=bool(combo.get("train_mode"))
    )
