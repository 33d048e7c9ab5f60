"""PaddlePaddle paddle.nn.functional.batch_norm, dygraph mode, on the CPU or the device open() pins
(gpu:N, ...: see _paddle).

batch_norm(x, running_mean, running_var, weight, bias, training=..., momentum=..., epsilon=...,
data_format=..., use_global_stats=...): training and use_global_stats (None, True or False) come from the case's
flag combination (FLAGS, the page's words beside each; six of them). running_mean and running_var are updated
in place in the tensors passed; they are read back from them.

The function returns y only. Layout: channel axis 1 -> 'NC' / 'NCL' / 'NCHW' / 'NCDHW' and channel axis last
-> 'NLC' / 'NHWC' / 'NDHWC' by rank (2 to 5; a rank-2 input has its channels on axis 1 either way). Ranks
the page names no format for are tried with 'NCHW' / 'NHWC' (the wrapper maps every format to one of these
two before the kernel) and the kernel's message becomes the 'unsupported' reason. No other channel axis can
be expressed. Backward: paddle.grad of y against x, weight and bias with dy as the output gradient.
"""

from __future__ import annotations

from . import _paddle
from .base import Combo, Profile, combo_for

NAME = "paddle_functional"
API = "paddle.nn.functional.batch_norm"

# The official page (the function's docstring) states the defaults: "momentum(float, optional): ... Default:
# 0.9", "epsilon(float, optional): ... Default: 1e-5"; it shows no update formula, so the momentum direction
# and the running-variance estimator are not stated there. It returns y only ("Returns: None" on the page,
# a Tensor in fact): no batch statistics.
DOCUMENTED = Profile(momentum_dir=None, running_var=None, stats=None, eps=1e-5, momentum=0.9)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats=None, eps=1e-5, momentum=0.9)
EXTRA_OUTPUTS: dict[str, str] = {}
IMPLEMENTS: frozenset[str] = frozenset()  # no act, no in-place; no combination means batch-no-update or the reverse

# The official page (https://www.paddlepaddle.org.cn/documentation/docs/en/api/paddle/nn/functional/batch_norm_en.html,
# the function's docstring) on the two flags; None: the page leaves it undefined. Where they disagree (training
# says one thing, use_global_stats the other), use_global_stats is the one that speaks of the statistics used,
# training alone of tracking the running ones.
_TRAINING = (
    "training(bool, optional): True means train mode which compute by batch data and track global mean and "
    "var during train period. False means inference mode which compute by global mean and var which "
    "calculated by train period."
)
_UGS = (
    "use_global_stats(bool|None, optional): Whether to use global mean and variance. If set to False, use the "
    "statistics of one mini-batch, if set to True, use the global statistics, if set to None, use global "
    "statistics in the test phase and use the statistics of one mini-batch in the training phase."
)
FLAGS = (
    Combo((("training", True), ("use_global_stats", None)), "batch", True, _TRAINING + " " + _UGS),
    Combo((("training", False), ("use_global_stats", None)), "running", False, _TRAINING + " " + _UGS),
    Combo((("training", True), ("use_global_stats", False)), "batch", True, _TRAINING + " " + _UGS),
    Combo((("training", False), ("use_global_stats", True)), "running", False, _TRAINING + " " + _UGS),
    Combo(
        (("training", True), ("use_global_stats", True)),
        "running",
        None,
        _UGS + " (training=True says 'track global mean and var'; whether they move is not said)",
    ),
    Combo(
        (("training", False), ("use_global_stats", False)),
        "batch",
        None,
        _UGS + " (training=False is 'inference mode'; whether the running statistics move is not said)",
    ),
)

_FORMATS = {  # rank -> (channels on axis 1, channels last)
    2: ("NC", "NC"),
    3: ("NCL", "NLC"),
    4: ("NCHW", "NHWC"),
    5: ("NCDHW", "NDHWC"),
}

available = _paddle.available
version = _paddle.version
devices = _paddle.devices


def open(device_key):
    _paddle.pin(device_key)  # the device's Place; to_tensor then creates every tensor there
    return None


def supports(session, case):
    return _paddle.common_supports(API, case)


def data_format(case) -> str:
    style = _paddle.layout(case)
    first, last = _FORMATS.get(len(case.shape), ("NCHW", "NHWC"))
    return first if style == "NCHW" else last


def run(session, case, inputs, policy, use_defaults=False):
    p = _paddle.paddle()
    rmean = p.to_tensor(inputs.running_mean)
    rvar = p.to_tensor(inputs.running_var)
    weight = p.to_tensor(inputs.gamma, stop_gradient=not case.backward)
    bias = p.to_tensor(inputs.beta, stop_gradient=not case.backward)
    kwargs = {} if use_defaults else {"momentum": PROFILE.translate_momentum(case.momentum), "epsilon": case.eps}
    fmt = data_format(case)
    combo = combo_for(FLAGS, case)
    flags = {"training": combo.get("training"), "use_global_stats": combo.get("use_global_stats")}

    def call(x):
        return p.nn.functional.batch_norm(x, rmean, rvar, weight, bias, data_format=fmt, **flags, **kwargs)

    result = _paddle.execute(case, inputs, policy, call, lambda: (weight, bias, rmean, rvar))
    if len(case.shape) not in _FORMATS:
        result.notes.append(f"rank {len(case.shape)} has no documented data_format name; tried {fmt!r}")
    return result
