"""PaddlePaddle paddle.nn.BatchNorm (the fluid-style layer), dygraph mode, on the CPU or the device
open() pins (gpu:N, ...: see _paddle).

One layer per run: BatchNorm(num_channels, act=<case act or None>, momentum=..., epsilon=..., dtype=<parameter
dtype>, data_layout='NCHW' | 'NHWC', in_place=<case inplace>, use_global_stats=..., trainable_statistics=...),
then layer.train() or layer.eval(): the three come from the flag combination (FLAGS, the page's words beside
each). Its weight, bias, _mean and _variance are set from the inputs with set_value(). The page prescribes eval()
for dygraph inference ("is_test ... only has effect on static graph mode. For dygraph mode, please use eval()").
The running statistics are read back from layer._mean / layer._variance after the call; with in_place, the
caller's x tensor (and dy) after the call are the outputs x_after (dy_after).

The layer returns y only (no batch statistics). Layout: channel axis 1 -> 'NCHW', last axis -> 'NHWC', for
every rank (the kernel takes ranks 2 to 5 with either string); no other channel axis can be expressed.
Backward: paddle.grad of y against x, weight and bias with dy as the output gradient.
"""

from __future__ import annotations

from ..errors import first_line
from . import _paddle
from .base import Combo, Profile, Unsupported, combo_for

NAME = "paddle"
API = "paddle.nn.BatchNorm"

# From https://www.paddlepaddle.org.cn/documentation/docs/en/api/paddle/nn/BatchNorm_en.html:
#   momentum_dir 'old': "moving_mean = moving_mean * momentum + mu_beta * (1. - momentum)"
#   running_var 'biased': "sigma_beta^2 <- 1/m sum_i (x_i - mu_beta)^2 // mini-batch variance", and
#       "moving_variance = moving_variance * momentum + sigma_beta^2 * (1. - momentum)"
#   stats None: forward(input) returns the normalised tensor only
#   eps 1e-5: "epsilon=1e-05" / "Default: 1e-5";  momentum 0.9: "momentum=0.9" / "Default: 0.9"
DOCUMENTED = Profile(momentum_dir="old", running_var="biased", stats=None, eps=1e-5, momentum=0.9)
PROFILE = DOCUMENTED
EXTRA_OUTPUTS: dict[str, str] = {}
IMPLEMENTS = frozenset({"act=relu", "act=sigmoid", "act=tanh", "inplace=1"})  # act= and in_place= take them as is

# The page's flag combinations (training is layer.train() / layer.eval()). None: the page leaves it undefined.
_UGS = (
    "use_global_stats (bool, optional) - Whether to use global mean and variance. In inference or test mode, set "
    "use_global_stats to true or is_test to true, and the behavior is equivalent. In train mode, when setting "
    "use_global_stats True, the global mean and variance are also used during train period."
)
_TS = (
    "trainable_statistics (bool, optional) - Whether to calculate mean and var in eval mode. In eval mode, when "
    "setting trainable_statistics True, mean and variance will be calculated by current batch statistics."
)
FLAGS = (
    Combo(
        (("training", True), ("use_global_stats", False), ("trainable_statistics", False)),
        "batch",
        True,
        "When use_global_stats = False, the mu_beta and sigma_beta^2 are the statistics of one mini-batch ... "
        "moving_mean = moving_mean * momentum + mu_beta * (1. - momentum)",
    ),
    Combo(
        (("training", False), ("use_global_stats", False), ("trainable_statistics", False)),
        "running",
        False,
        "is_test ... only has effect on static graph mode. For dygraph mode, please use eval(); " + _UGS[:140],
    ),
    Combo((("training", False), ("use_global_stats", True), ("trainable_statistics", False)), "running", False, _UGS),
    Combo((("training", True), ("use_global_stats", True), ("trainable_statistics", False)), "running", None, _UGS),
    Combo((("training", False), ("use_global_stats", False), ("trainable_statistics", True)), "batch", None, _TS),
    Combo(
        (("training", True), ("use_global_stats", False), ("trainable_statistics", True)),
        None,
        None,
        "(the page describes trainable_statistics in eval mode only)",
    ),
    Combo(
        (("training", False), ("use_global_stats", True), ("trainable_statistics", True)),
        None,
        None,
        "(the page gives both flags opposite meanings in eval mode)",
    ),
    Combo(
        (("training", True), ("use_global_stats", True), ("trainable_statistics", True)),
        None,
        None,
        "(the page describes trainable_statistics in eval mode only)",
    ),
)

available = _paddle.available
version = _paddle.version
devices = _paddle.devices


def open(device_key):
    _paddle.pin(device_key)  # the device's Place; to_tensor then creates every tensor there
    return None


def supports(session, case):
    return _paddle.common_supports(API, case)


def run(session, case, inputs, policy, use_defaults=False):
    p = _paddle.paddle()
    combo = combo_for(FLAGS, case)
    kwargs = {} if use_defaults else {"momentum": PROFILE.translate_momentum(case.momentum), "epsilon": case.eps}
    try:
        layer = p.nn.BatchNorm(
            case.channels,
            act=None if case.act == "none" else case.act,
            dtype=case.param_dtype,
            data_layout=_paddle.layout(case),
            in_place=case.inplace,
            use_global_stats=combo.get("use_global_stats"),
            trainable_statistics=combo.get("trainable_statistics"),
            **kwargs,
        )
    except Exception as exc:
        if _paddle.rejected(exc):
            raise Unsupported(first_line(exc)) from None
        raise
    layer.weight.set_value(inputs.gamma)
    layer.bias.set_value(inputs.beta)
    layer._mean.set_value(inputs.running_mean)
    layer._variance.set_value(inputs.running_var)
    if combo.get("training"):
        layer.train()
    else:
        layer.eval()

    def params():
        return layer.weight, layer.bias, layer._mean, layer._variance

    return _paddle.execute(case, inputs, policy, layer, params)
