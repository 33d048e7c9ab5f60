"""MXNet 1.9.1 `mx.nd.BatchNorm` (imperative NDArray API), CPU.

Call: mx.nd.BatchNorm(data, gamma, beta, moving_mean, moving_var, eps=, momentum=, fix_gamma=,
use_global_stats=, output_mean_var=True, axis=). fix_gamma is always passed from the case (MXNet's default
is True). Training records under mx.autograd.record(train_mode=True) with attach_grad on data, gamma and
beta, then out.backward(dy); inference passes use_global_stats=True (what the docs describe for inference)
and records with train_mode=False. moving_mean and moving_var are auxiliary states updated in place:
they are read back after the call.

Returned: [out, mean, var]; the docs say the two extra outputs are "data_mean and the inverse of data_var"
(parameter list: "Output the mean and inverse std"), so the third is reported as 'invstd'.
Conventions (mxnet-python-ndarray-BatchNorm.txt): "moving_mean = moving_mean * momentum + data_mean *
(1 - momentum)" -> momentum weighs the old value; "moving_var = ... + data_var * (1 - momentum)" with
data_var = var(...), biased or not unsaid -> running_var None; defaults eps 0.001, momentum 0.9.
"""

from __future__ import annotations

from . import _mxnet
from .base import Profile

NAME = "mxnet"
DOCUMENTED = Profile(momentum_dir="old", running_var=None, stats="invstd", eps=0.001, momentum=0.9)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats="invstd", eps=0.001, momentum=0.9)
EXTRA_OUTPUTS: dict[str, str] = {}

available = _mxnet.available
version = _mxnet.version
devices = _mxnet.devices


def open(device_key):  # noqa: A001 - the contract's name
    _mxnet.load()
    return None


def supports(session, case):
    return None


def _op(x, g, b, rm, rv, **attrs):
    return _mxnet.load().nd.BatchNorm(x, g, b, rm, rv, **attrs)


def run(session, case, inputs, policy, use_defaults=False):
    attrs = _mxnet.params(case, PROFILE, use_defaults)
    attrs["axis"] = case.axis
    return _mxnet.run_imperative(case, inputs, policy, _op, attrs, PROFILE.stats, notes=[])
