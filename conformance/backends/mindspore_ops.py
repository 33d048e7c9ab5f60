"""MindSpore `mindspore.ops.BatchNorm` (the primitive), in PyNative mode on the CPU.

The primitive is called as op(x, scale, bias, mean, variance) and returns five tensors: output_x,
batch_mean, batch_variance, reserve_space_1, reserve_space_2. The running statistics are handed in as
`mindspore.Parameter`s; the op updates them in place when is_training=True (it does so for plain Tensors
too), and they are read back after the call. is_training comes from the case's flag combination (FLAGS, the
page's words beside each): True computes the batch statistics and updates the moving ones, False normalises
with the mean and variance handed in ("loaded from checkpoint during inference").

The op has no axis parameter, only data_format: channel axis 1 runs as 'NCHW' (2D (N, C) included) and the
last axis of a 3D/4D input as 'NHWC' (documented as GPU only; the CPU kernel either fails or, when
shape[1] == shape[-1], accepts it: the adapter passes it on and reports what comes back). Other axes cannot
be expressed. Backward goes through mindspore.value_and_grad of sum(y * dy) with respect to x, scale and
bias, in the same call as the forward, so the running statistics are updated once.

The framework's exceptions (a dtype, rank, eps or layout it rejects; the CPU runs asynchronously, so some
surface only when results are read) become Unsupported with their first line.
"""

from __future__ import annotations

import os

import numpy as np

from .base import Combo, DeviceInfo, Profile, Result, Unsupported, combo_for, time_repeats

NAME = "mindspore"

# Doc: "momentum ... (e.g. new_running_mean = (1 - momentum) * running_mean + momentum * current_mean)",
# "epsilon ... Default: 1e-5", "momentum ... Default: 0.1"; batch_variance is "The variance calculated
# per-dimension over the mini-batches"; which variance updates the running one is not stated.
DOCUMENTED = Profile(momentum_dir="new", running_var=None, stats="var", eps=1e-5, momentum=0.1)
PROFILE = Profile(momentum_dir="new", running_var="biased", stats="var", eps=1e-5, momentum=0.1)
# reserve_space_1: "The mean that needs to be reused when calculating gradients"; reserve_space_2: "The
# variance ..."; in inference they have "the same value as" mean and variance.
EXTRA_OUTPUTS = {"reserve_space_1": "mean", "reserve_space_2": "var"}
IMPLEMENTS: frozenset[str] = frozenset()  # no act, no in-place; is_training ties the statistics to the update

# The page (mindspore-ops-BatchNorm.txt): is_training is the one flag that chooses the statistics.
_MOMENTUM = ("momentum (float) - The hyper parameter to compute moving average for running_mean and running_var (e.g. "
             "new_running_mean = (1 - momentum) * running_mean + momentum * current_mean)")
FLAGS = (
    Combo((("is_training", True),), "batch", True,
          "is_training (bool) - If is_training is True, mean and variance are computed during training. ... "
          + _MOMENTUM + "; Outputs: Tuple of 5 Tensors, the normalized inputs and the updated parameters."),
    Combo((("is_training", False),), "running", False,
          "If is_training is False, they're loaded from checkpoint during inference. Default: False."),
)

_ms = None


def _import():
    global _ms
    if _ms is None:
        os.environ.setdefault("GLOG_v", "3")  # MindSpore logs at INFO/WARNING otherwise
        import mindspore

        if hasattr(mindspore, "set_device"):
            mindspore.set_device("CPU")
            mindspore.set_context(mode=mindspore.PYNATIVE_MODE)
        else:
            mindspore.set_context(mode=mindspore.PYNATIVE_MODE, device_target="CPU")
        _ms = mindspore
    return _ms


def available():
    try:
        _import()
    except Exception as exc:  # missing or broken install
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return None


def version():
    return _import().__version__


def devices():
    return [DeviceInfo(key=None, name="CPU", vendor="mindspore", driver=version())]


def open(device_key):  # noqa: A001 - the contract's name
    return _import()


def _layout(case):
    ax, nd = case.channel_axis, len(case.shape)
    if ax == 1:
        return "NCHW"
    if ax == nd - 1:
        return "NHWC"
    return None


def supports(session, case):
    if case.fix_gamma:
        return "mindspore.ops.BatchNorm has no fix_gamma"
    if _layout(case) is None:
        return (f"mindspore.ops.BatchNorm has no axis parameter; data_format NCHW (axis 1) or NHWC (last axis) "
                f"cannot express axis {case.axis} of shape {list(case.shape)}")
    return None


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _make(ms, case, inputs, use_defaults, combo):
    """The op and a callable running it on fresh running-stat Parameters; the callable returns numpy outputs."""
    kw = {"is_training": bool(combo.get("is_training")), "data_format": _layout(case)}
    if not use_defaults:
        kw.update(epsilon=float(case.eps), momentum=float(PROFILE.translate_momentum(case.momentum)))
    op = ms.ops.BatchNorm(**kw)
    T = ms.Tensor
    x, gamma, beta = T(inputs.x.copy()), T(inputs.gamma.copy()), T(inputs.beta.copy())
    dy = T(inputs.dy.copy()) if case.backward else None

    def call():
        rm = ms.Parameter(T(inputs.running_mean.copy()), name="running_mean", requires_grad=False)
        rv = ms.Parameter(T(inputs.running_var.copy()), name="running_var", requires_grad=False)
        if case.backward:
            def loss(a, s, b):
                outs = op(a, s, b, rm, rv)
                return (outs[0] * dy).sum(), outs

            (_, outs), grads = ms.value_and_grad(loss, grad_position=(0, 1, 2), has_aux=True)(x, gamma, beta)
        else:
            outs, grads = op(x, gamma, beta, rm, rv), ()
        got = [o.asnumpy() for o in outs] + [g.asnumpy() for g in grads]
        return got, rm.asnumpy(), rv.asnumpy()

    return call, (x, gamma, beta)


def run(session, case, inputs, policy, use_defaults=False):
    ms = session
    combo = combo_for(FLAGS, case)
    try:
        call, passed = _make(ms, case, inputs, use_defaults, combo)
        got, rm, rv = call()
    except (RuntimeError, TypeError, ValueError) as exc:
        raise Unsupported(f"mindspore.ops.BatchNorm: {_first_line(exc)}") from None
    y, batch_mean, batch_var, reserve1, reserve2 = got[:5]
    outputs = {"y": y, "running_mean": rm, "running_var": rv, "reserve_space_1": reserve1, "reserve_space_2": reserve2}
    if combo.get("is_training"):
        outputs["mean"], outputs["var"] = batch_mean, batch_var
    if case.backward:
        outputs["dx"], outputs["dgamma"], outputs["dbeta"] = got[5:8]
    untouched = {k: t.asnumpy().copy() for k, t in zip(("x", "gamma", "beta"), passed)}
    walls, _ = time_repeats(lambda: call() and None, policy)  # values of timing runs are discarded
    notes = []
    if _layout(case) == "NHWC":
        notes.append("data_format='NHWC' (documented for GPU only) on the CPU")
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)
