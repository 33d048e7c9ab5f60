"""MXNet 1.9.1 `mx.nd.BatchNorm` (imperative NDArray API), on the CPU or a GPU (`gpu:N`, see _mxnet).

Call: mx.nd.BatchNorm(data, gamma, beta, moving_mean, moving_var, eps=, momentum=, fix_gamma=,
use_global_stats=, output_mean_var=True, axis=), recorded under mx.autograd.record(train_mode=...) with
attach_grad on data, gamma and beta, then out.backward(dy, train_mode=...). train_mode and use_global_stats come
from the case's flag combination (FLAGS, built by _mxnet.flag_table with the page's words beside each): training
is train_mode=True, use_global_stats=False; inference train_mode=False, use_global_stats=True (the page: "It is
often used during inference"); train_mode=True with use_global_stats=True is inference too ("This will force
change batch-norm into a scale shift operator"); train_mode=False with use_global_stats=False is left undefined
(the page never mentions train_mode), run only by `conformance conventions`. fix_gamma is always passed from the
case (MXNet's default is True). moving_mean and moving_var are auxiliary states updated in place: they are read
back after the call.

output_mean_var (page default 0: "Output the mean and inverse std") is on in the call every output comes from.
Its other value is one further untimed forward call under the same flags, with output_mean_var=False on fresh
copies of the moving statistics: its y is the extra output y_mean_var_off, held against the same y (a note says
when that call returns anything but the one array the page implies).

Returned: [out, mean, var]; the docs say the two extra outputs are "data_mean and the inverse of data_var"
(parameter list: "Output the mean and inverse std"), so the third is reported as 'invstd'.
Conventions (mxnet.ndarray.BatchNorm page, README.md, Sources): "moving_mean = moving_mean * momentum + data_mean *
(1 - momentum)" -> momentum weighs the old value; "moving_var = ... + data_var * (1 - momentum)" with
data_var = var(...), biased or not unsaid -> running_var None; defaults eps 0.001, momentum 0.9.
"""

from __future__ import annotations

from . import _mxnet
from .base import Profile, combo_for

NAME = "mxnet"
DOCUMENTED = Profile(momentum_dir="old", running_var=None, stats="invstd", eps=0.001, momentum=0.9)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats="invstd", eps=0.001, momentum=0.9)
EXTRA_OUTPUTS = {"y_mean_var_off": "y"}  # y of the same call with output_mean_var=False
FLAGS = _mxnet.flag_table("train_mode")
IMPLEMENTS: frozenset[str] = frozenset()  # no act, no in-place; no combination means batch-no-update or the reverse

available = _mxnet.available
version = _mxnet.version
devices = _mxnet.devices


def open(device_key):
    _mxnet.pin(device_key)  # to_nd() puts every array on its Context
    return None


def supports(session, case):
    return None


def _op(x, g, b, rm, rv, **attrs):
    return _mxnet.load().nd.BatchNorm(x, g, b, rm, rv, **attrs)


def run(session, case, inputs, policy, use_defaults=False):
    combo = combo_for(FLAGS, case)
    train = bool(combo.get("train_mode"))
    attrs = _mxnet.params(combo, case, PROFILE, use_defaults)
    attrs["axis"] = case.axis
    result = _mxnet.run_imperative(case, inputs, policy, _op, attrs, PROFILE.stats, notes=[], train=train)
    mx = _mxnet.load()
    try:  # output_mean_var's other value: forward only, fresh moving statistics, untimed
        with mx.autograd.record(train_mode=train):
            outs = _op(
                *(
                    _mxnet.to_nd(a)
                    for a in (inputs.x, inputs.gamma, inputs.beta, inputs.running_mean, inputs.running_var)
                ),
                **{**attrs, "output_mean_var": False},
            )
        outs = _mxnet.outputs_list(outs)
        result.outputs["y_mean_var_off"] = outs[0].asnumpy()
    except mx.base.MXNetError as exc:
        result.notes.append(f"output_mean_var=False: {_mxnet.message(exc)}")
        return result
    if len(outs) != 1:
        result.notes.append(f"output_mean_var=False returned {len(outs)} arrays")
    return result
