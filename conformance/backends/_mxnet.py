"""Shared helpers of the three MXNet 1.9.1 backends (mxnet, mxnet_v1, mxnet_v1_sym).

MXNet is imported lazily, only inside a backend's worker process. MXNet 1.9.1 still uses the alias
`numpy.bool`, removed in numpy 1.24: it is restored (np.bool = bool) just before the import, which touches
only that worker process. Import warnings are silenced, and so is the executor's "Subgraph backend MKLDNN
is activated" log line (MXNET_SUBGRAPH_VERBOSE=0).

MXNet runs operators asynchronously: a rejected case often raises only when a result is read, so every
call is followed by mx.nd.waitall() inside the same try, and an MXNetError becomes Unsupported with the
line of MXNet's message that says what failed.

Both nd backends run through run_imperative(): the call is recorded under mx.autograd.record(train_mode=...)
and differentiated with backward(dy, train_mode=...), with output_mean_var=True and use_global_stats as
attributes; train_mode and use_global_stats come from the case's flag combination (flag_table(): each
combination with the page's words). The symbol backend takes the same table with executor.forward(is_train=...)
in place of train_mode.

Devices (devices(), shared by the three backends): the CPU (key None: the targets stay `mxnet`, ...), then, in a
build with CUDA (mx.runtime.Features().is_enabled('CUDA')), each GPU mx.context.num_gpus() counts, as key `gpu:N`
(MXNet's own spelling, gpu(N), would need quoting in a shell; `gpu:N` is Paddle's, so `--device gpu:0` picks GPU 0
of both). Where there is none, the CPU device's extra["devices_note"] says why in one line. pin(key) (each
backend's open()) checks the key (an unknown one is Skip) and keeps its Context, ctx(): to_nd() and the symbol
executor put every array there; results come back with NDArray.asnumpy(); each call already ends with
mx.nd.waitall(), which waits for the GPU too.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .base import Combo, DeviceInfo, Result, Skip, Unsupported, time_repeats

_STATE: dict = {}


def load():
    """The mxnet module, or None when it cannot be imported (see available())."""
    if "mx" not in _STATE and "error" not in _STATE:
        os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy's FutureWarning on np.bool, mxnet's import warnings
                if not hasattr(np, "bool"):
                    np.bool = bool  # removed from numpy 1.24; mxnet 1.9.1 still uses it
                import mxnet
            _STATE["mx"] = mxnet
        except Exception as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            _STATE["error"] = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return _STATE.get("mx")


def available():
    return None if load() is not None else _STATE["error"]


def version() -> str:
    mx = load()
    return mx.__version__ if mx is not None else ""


def _gpus():
    """([DeviceInfo] of each GPU this MXNet build can use here, why there is none: '' when there is one)."""
    mx = load()
    if not mx.runtime.Features().is_enabled("CUDA"):
        return [], f"no accelerator: mxnet {version()} built without CUDA"
    try:
        n = mx.context.num_gpus()
    except mx.base.MXNetError as exc:  # e.g. a driver older than the build's CUDA
        return [], f"no accelerator: mxnet {version()} built with CUDA, mx.context.num_gpus(): {message(exc)}"
    if n == 0:
        return [], f"no accelerator: mxnet {version()} built with CUDA, mx.context.num_gpus() 0"
    return [
        DeviceInfo(key=f"gpu:{i}", name=f"CUDA GPU {i}", vendor="CUDA", platform="mxnet gpu", driver=version())
        for i in range(n)
    ], ""


def devices():
    gpus, note = _gpus()
    return [
        DeviceInfo(key=None, name="CPU", vendor="mxnet", driver=version(), extra={"devices_note": note} if note else {})
    ] + gpus


def pin(device_key):
    """Make device_key (None: the CPU; 'gpu:N') this process's MXNet Context (ctx()). An unknown key is Skip."""
    mx = load()
    if device_key is None:
        _STATE["ctx"] = mx.cpu()
        return _STATE["ctx"]
    keys = [d.key for d in devices() if d.key]
    if device_key not in keys:
        raise Skip(
            f"mxnet has no device {device_key!r} here (found: the CPU, key None{''.join(', ' + k for k in keys)})"
        )
    _STATE["ctx"] = mx.gpu(int(device_key.split(":")[1]))
    return _STATE["ctx"]


def ctx():
    """The Context pin() chose (the CPU before any pin)."""
    return _STATE.get("ctx") or load().cpu()


def message(exc: BaseException) -> str:
    """The informative line of an MXNetError (its text starts with a C++ traceback)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("MXNetError:"):
            return ln
    return lines[-1] if lines else type(exc).__name__


def to_nd(a: np.ndarray):
    mx = load()
    return mx.nd.array(a, dtype=a.dtype, ctx=ctx())


# The pages' words (mxnet.ndarray.BatchNorm; BatchNorm_v1's nd and symbol pages say the same: README, Sources). None of
# them mentions autograd's train_mode (nd) or the executor's is_train (symbol). use_global_stats=1 is defined in
# both modes ("force change batch-norm into a scale shift operator"); use_global_stats=0 is the page's batch
# statistics and update, read as training; use_global_stats=0 while predicting is not described: undefined.
_BATCH = (
    "We first compute the mean and variance along this axis: data_mean[i] = mean(data[:,i,:,...]) ... Then "
    "compute the normalized output ... moving_mean and moving_var ... are updated by: moving_mean = moving_mean "
    "* momentum + data_mean * (1 - momentum)"
)
_GLOBAL = (
    "If use_global_stats is set to be true, then moving_mean and moving_var are used instead of data_mean and "
    "data_var to compute the output. It is often used during inference."
)
_FORCE = (
    "use_global_stats ... Whether use global moving statistics instead of local batch-norm. This will force "
    "change batch-norm into a scale shift operator."
)


def flag_table(mode_flag: str) -> tuple[Combo, ...]:
    """The flag combinations of a BatchNorm page: mode_flag is how the caller says train/predict ('train_mode' for
    autograd.record, 'is_train' for executor.forward), crossed with use_global_stats."""

    def combo(train, ugs, nw, up, quote):
        return Combo(((mode_flag, train), ("use_global_stats", ugs)), nw, up, quote)

    return (
        combo(True, False, "batch", True, _BATCH),
        combo(False, True, "running", False, _GLOBAL + " " + _FORCE),
        combo(True, True, "running", False, _FORCE + " " + _GLOBAL),
        combo(
            False,
            False,
            None,
            None,
            f"(the page never mentions {mode_flag}; it gives use_global_stats=0 the batch "
            "statistics and the moving-average update without a mode)",
        ),
    )


def params(combo, case, profile, use_defaults: bool) -> dict:
    """The operator attributes for a case under a flag combination; without eps and momentum when use_defaults."""
    p = {} if use_defaults else {"eps": case.eps, "momentum": profile.translate_momentum(case.momentum)}
    p.update(fix_gamma=case.fix_gamma, use_global_stats=bool(combo.get("use_global_stats")), output_mean_var=True)
    return p


def outputs_list(outs) -> list:
    """MXNet returns one NDArray when output_mean_var is off, a list of three when on."""
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def collect(case, stats: str, outs, rm, rv, grads) -> dict:
    """numpy outputs, as MXNet produced them: y, the two statistic outputs (when returned), the aux states, the
    gradients.

    The statistic outputs are returned in inference too (MXNet fills them with the moving mean and the
    moving statistic in use); there they are rows beyond case.outputs, held against the running values.
    """
    outs = outputs_list(outs)
    out = {"y": outs[0].asnumpy()}
    if len(outs) == 3:
        out.update({"mean": outs[1].asnumpy(), stats: outs[2].asnumpy()})
    out.update(running_mean=rm.asnumpy(), running_var=rv.asnumpy())
    if case.backward:
        out.update(dx=grads[0].asnumpy(), dgamma=grads[1].asnumpy(), dbeta=grads[2].asnumpy())
    return out


def run_imperative(case, inputs, policy, op, attrs: dict, stats: str, notes: list[str], train: bool) -> Result:
    """op(data, gamma, beta, moving_mean, moving_var, **attrs) -> [out, mean, stat] (or out alone), through autograd
    recorded with train_mode=train."""
    mx = load()
    x, g, b = to_nd(inputs.x), to_nd(inputs.gamma), to_nd(inputs.beta)
    rm, rv = to_nd(inputs.running_mean), to_nd(inputs.running_var)
    dy = to_nd(inputs.dy) if case.backward else None
    for a in (x, g, b):
        a.attach_grad()

    def call():
        with mx.autograd.record(train_mode=train):
            outs = op(x, g, b, rm, rv, **attrs)
        if case.backward:
            outputs_list(outs)[0].backward(dy, train_mode=train)
        mx.nd.waitall()
        return outs

    try:
        outs = call()
        outputs = collect(case, stats, outs, rm, rv, (x.grad, g.grad, b.grad))
        untouched = {"x": x.asnumpy(), "gamma": g.asnumpy(), "beta": b.asnumpy()}
        walls, _ = time_repeats(call, policy)
    except mx.base.MXNetError as exc:
        raise Unsupported(message(exc)) from None
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)
