"""PaddlePaddle paddle.nn.BatchNorm in a static graph (paddle.static program run by an Executor), on the CPU
or the device open() pins (gpu:N, ...: see _paddle; the Executor and the scope tensors take its Place).

Per run: a fresh main and startup Program, Scope and Executor (names from a fresh unique_name generator).
Inside program_guard: x = paddle.static.data('x', shape, dtype) and one layer BatchNorm(num_channels,
act=<case act or None>, is_test=..., momentum=..., epsilon=..., dtype=<parameter dtype>, data_layout='NCHW' |
'NHWC', in_place=<case inplace>, use_global_stats=..., trainable_statistics=...). is_test, use_global_stats and
trainable_statistics come from the case's flag combination (FLAGS, the page's words beside each): the page says
"is_test ... only has effect on static graph mode", which is this path (the dygraph backend 'paddle' uses
train()/eval() instead). With in_place, what the fed x and dy variables hold after the run is fetched as
x_after (dy_after). After the startup program, the layer's weight, bias, mean
and variance are set in the scope from the inputs; the main program is run with x (and dy) fed; the running
statistics are read back from the scope after the run. Backward: paddle.static.gradients of y against x,
weight and bias with dy fed as the target gradient, fetched with y. The inputs the call must leave alone are
read back after the run: x by fetching the fed variable, gamma and beta from the scope.

Paddle is switched to static mode around each open()/run() only, and back to dygraph afterwards: this module
is imported only in its own worker process, and even there nothing else sees static mode. The layer returns
y only (no batch statistics). Layout: as the dygraph layer (channel axis 1 -> 'NCHW', last -> 'NHWC', ranks
2 to 5); float16 data is refused by the CPU kernel at run time, which becomes the 'unsupported' reason.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np

from ..errors import first_line
from . import _paddle, paddle_nn
from .base import Combo, Result, Unsupported, combo_for, time_repeats

# The executor logs "New Executor is Running ..." (glog INFO) on every program; set before Paddle loads.
os.environ.setdefault("GLOG_minloglevel", "1")

NAME = "paddle_static"
API = "paddle.nn.BatchNorm (static graph, Executor)"

# The same page and layer as the dygraph backend 'paddle' (paddle_nn.py; README.md, Sources: paddle.nn.BatchNorm):
# its documented conventions, quoted there, hold here. The page on this path's own flag:
#   is_test: "A flag indicating whether it is in test phrase or not. This flag only has effect on static graph
#       mode." Inference: "set use_global_stats to true or is_test to true, and the behavior is equivalent."
DOCUMENTED = paddle_nn.DOCUMENTED
PROFILE = DOCUMENTED
EXTRA_OUTPUTS: dict[str, str] = {}
IMPLEMENTS = frozenset({"act=relu", "act=sigmoid", "act=tanh", "inplace=1"})  # act= and in_place= take them as is

# The page's flag combinations (paddle.nn.BatchNorm), as for the dygraph layer (paddle_nn.FLAGS) with is_test
# for train()/eval(). None: the page leaves it undefined.
_IS_TEST = (
    "is_test (bool, optional) - A flag indicating whether it is in test phrase or not. This flag only has "
    "effect on static graph mode."
)
_UGS = paddle_nn._UGS
_TS = paddle_nn._TS
FLAGS = (
    Combo(
        (("is_test", False), ("use_global_stats", False), ("trainable_statistics", False)),
        "batch",
        True,
        "When use_global_stats = False, the mu_beta and sigma_beta^2 are the statistics of one mini-batch ... "
        "moving_mean = moving_mean * momentum + mu_beta * (1. - momentum)",
    ),
    Combo(
        (("is_test", True), ("use_global_stats", False), ("trainable_statistics", False)),
        "running",
        False,
        _IS_TEST + " " + _UGS[:140],
    ),
    Combo((("is_test", True), ("use_global_stats", True), ("trainable_statistics", False)), "running", False, _UGS),
    Combo((("is_test", False), ("use_global_stats", True), ("trainable_statistics", False)), "running", None, _UGS),
    Combo((("is_test", True), ("use_global_stats", False), ("trainable_statistics", True)), "batch", None, _TS),
    Combo(
        (("is_test", False), ("use_global_stats", False), ("trainable_statistics", True)),
        None,
        None,
        "(the page describes trainable_statistics in eval mode only)",
    ),
    Combo(
        (("is_test", True), ("use_global_stats", True), ("trainable_statistics", True)),
        None,
        None,
        "(the page gives both flags opposite meanings in eval mode)",
    ),
    Combo(
        (("is_test", False), ("use_global_stats", True), ("trainable_statistics", True)),
        None,
        None,
        "(the page describes trainable_statistics in eval mode only)",
    ),
)

available = _paddle.available
version = _paddle.version
devices = _paddle.devices


@contextlib.contextmanager
def static_mode():
    """Paddle in static-graph mode for the block, back in dygraph mode after it if it was there before."""
    p = _paddle.paddle()
    dynamic = p.in_dynamic_mode()
    if dynamic:
        p.enable_static()
    try:
        yield p
    finally:
        if dynamic:
            p.disable_static()


def open(device_key):
    _paddle.pin(device_key)
    with static_mode() as p:
        p.static.Program()  # static mode works here
    return None


def supports(session, case):
    return _paddle.common_supports(API, case)


def _reject(exc):
    """Paddle refusing the input becomes Unsupported; anything else propagates. Besides the dygraph categories
    (_paddle.rejected), static mode checks dtypes while the program is built: "(InvalidType) Check data type
    error for op: batch_norm_, input: x, x.dtype: float16, and expected_dtype: float32, float64"."""
    if _paddle.rejected(exc) or str(exc).strip().startswith("(InvalidType)"):
        raise Unsupported(first_line(exc)) from None
    raise exc


def run(session, case, inputs, policy, use_defaults=False):
    with static_mode() as p:
        return _run(p, case, inputs, policy, use_defaults)


def _run(p, case, inputs, policy, use_defaults):
    kwargs = {} if use_defaults else {"momentum": PROFILE.translate_momentum(case.momentum), "epsilon": case.eps}
    combo = combo_for(FLAGS, case)
    main, startup, scope, place = p.static.Program(), p.static.Program(), p.static.Scope(), _paddle.place()
    with p.utils.unique_name.guard(), p.static.scope_guard(scope), p.static.program_guard(main, startup):
        feed = {"x": inputs.x}
        try:
            x = p.static.data("x", list(case.shape), case.dtype)
            x.stop_gradient = not case.backward
            layer = p.nn.BatchNorm(
                case.channels,
                act=None if case.act == "none" else case.act,
                is_test=combo.get("is_test"),
                dtype=case.param_dtype,
                data_layout=_paddle.layout(case),
                in_place=case.inplace,
                use_global_stats=combo.get("use_global_stats"),
                trainable_statistics=combo.get("trainable_statistics"),
                **kwargs,
            )
            y = layer(x)
            fetch = [y, x]
            if case.backward:
                dy = p.static.data("dy", list(case.shape), case.dtype)
                with warnings.catch_warnings():  # the zero gradients it builds for the op's other outputs ask
                    warnings.filterwarnings("ignore", "Tensor do not have 'place'")  # for a place they lack
                    fetch += p.static.gradients([y], [x, layer.weight, layer.bias], target_gradients=[dy])
                feed["dy"] = inputs.dy
                if case.inplace:
                    fetch.append(dy)
        except Exception as exc:
            _reject(exc)
        exe = p.static.Executor(place)
        exe.run(startup)

        def tensor(var):
            return scope.find_var(var.name).get_tensor()

        for var, value in (
            (layer.weight, inputs.gamma),
            (layer.bias, inputs.beta),
            (layer._mean, inputs.running_mean),
            (layer._variance, inputs.running_var),
        ):
            tensor(var).set(np.ascontiguousarray(value), place)

        def call():
            return exe.run(main, feed=feed, fetch_list=fetch)

        try:
            got = [np.array(a, copy=True) for a in call()]
        except Exception as exc:
            _reject(exc)
        outputs = {
            "y": got[0],
            "running_mean": np.array(tensor(layer._mean), copy=True),
            "running_var": np.array(tensor(layer._variance), copy=True),
        }
        if case.backward:
            outputs["dx"], outputs["dgamma"], outputs["dbeta"] = got[2:5]
        untouched = {
            "x": got[1],
            "gamma": np.array(tensor(layer.weight), copy=True),
            "beta": np.array(tensor(layer.bias), copy=True),
        }
        if case.inplace:  # what the fed variables hold after an in-place run
            outputs["x_after"] = got[1]
            if case.backward:
                outputs["dy_after"] = got[5]
        walls, _ = time_repeats(call, policy)  # later runs move the running statistics again: already read
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=[])
