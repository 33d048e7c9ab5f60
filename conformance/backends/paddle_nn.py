"""PaddlePaddle paddle.nn.BatchNorm (the fluid-style layer), dygraph mode, on the CPU.

One layer per run: BatchNorm(num_channels, momentum=..., epsilon=..., dtype=<parameter dtype>,
data_layout='NCHW' | 'NHWC'), with act=None, use_global_stats=False, trainable_statistics=False. Its weight,
bias, _mean and _variance are set from the inputs with set_value(). Train: layer.train(); inference:
layer.eval(), which is what the page prescribes for dygraph ("is_test ... only has effect on static graph
mode. For dygraph mode, please use eval()"; it also says use_global_stats=True and is_test are equivalent
in inference). The running statistics are read back from layer._mean / layer._variance after the call.

The layer returns y only (no batch statistics). Layout: channel axis 1 -> 'NCHW', last axis -> 'NHWC', for
every rank (the kernel takes ranks 2 to 5 with either string); no other channel axis can be expressed.
Backward: paddle.grad of y against x, weight and bias with dy as the output gradient.
"""

from __future__ import annotations

from . import _paddle
from .base import Profile, Unsupported

NAME = "paddle"
API = "paddle.nn.BatchNorm"

# From /work/shared/framework-docs/paddle-nn-BatchNorm.txt:
#   momentum_dir 'old': "moving_mean = moving_mean * momentum + mu_beta * (1. - momentum)"
#   running_var 'biased': "sigma_beta^2 <- 1/m sum_i (x_i - mu_beta)^2 // mini-batch variance", and
#       "moving_variance = moving_variance * momentum + sigma_beta^2 * (1. - momentum)"
#   stats None: forward(input) returns the normalised tensor only
#   eps 1e-5: "epsilon=1e-05" / "Default: 1e-5";  momentum 0.9: "momentum=0.9" / "Default: 0.9"
DOCUMENTED = Profile(momentum_dir="old", running_var="biased", stats=None, eps=1e-5, momentum=0.9)
PROFILE = DOCUMENTED
EXTRA_OUTPUTS: dict[str, str] = {}

available = _paddle.available
version = _paddle.version
devices = _paddle.devices


def open(device_key):  # noqa: A001 - the contract's name
    _paddle.paddle()
    return None


def supports(session, case):
    return _paddle.common_supports(API, case)


def run(session, case, inputs, policy, use_defaults=False):
    p = _paddle.paddle()
    kwargs = {} if use_defaults else {"momentum": PROFILE.translate_momentum(case.momentum), "epsilon": case.eps}
    try:
        layer = p.nn.BatchNorm(case.channels, act=None, dtype=case.param_dtype, data_layout=_paddle.layout(case),
                               use_global_stats=False, trainable_statistics=False, **kwargs)
    except Exception as exc:
        if _paddle.rejected(exc):
            raise Unsupported(_paddle.first_line(exc)) from None
        raise
    layer.weight.set_value(inputs.gamma)
    layer.bias.set_value(inputs.beta)
    layer._mean.set_value(inputs.running_mean)
    layer._variance.set_value(inputs.running_var)
    if case.mode == "train":
        layer.train()
    else:
        layer.eval()

    def params():
        return layer.weight, layer.bias, layer._mean, layer._variance

    return _paddle.execute(case, inputs, policy, layer, params)
