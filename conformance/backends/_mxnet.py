"""Shared helpers of the three MXNet 1.9.1 backends (mxnet, mxnet_v1, mxnet_v1_sym).

MXNet is imported lazily, only inside a backend's worker process. MXNet 1.9.1 still uses the alias
`numpy.bool`, removed in numpy 1.24: it is restored (np.bool = bool) just before the import, which touches
only that worker process. Import warnings are silenced, and so is the executor's "Subgraph backend MKLDNN
is activated" log line (MXNET_SUBGRAPH_VERBOSE=0).

MXNet runs operators asynchronously: a rejected case often raises only when a result is read, so every
call is followed by mx.nd.waitall() inside the same try, and an MXNetError becomes Unsupported with the
line of MXNet's message that says what failed.

Both nd backends run through run_imperative(): training under mx.autograd.record(train_mode=True), inference
under record(train_mode=False) with use_global_stats=True (the docs: "If use_global_stats is set to be true,
then moving_mean and moving_var are used instead of data_mean and data_var ... It is often used during
inference"), and backward(dy, train_mode=...) on the output.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .base import DeviceInfo, Result, Unsupported, time_repeats

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
        except Exception as exc:  # noqa: BLE001 - any import failure makes the backend unavailable
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            _STATE["error"] = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return _STATE.get("mx")


def available():
    return None if load() is not None else _STATE["error"]


def version() -> str:
    mx = load()
    return mx.__version__ if mx is not None else ""


def devices():
    return [DeviceInfo(key=None, name="CPU", vendor="mxnet", driver=version())]


def message(exc: BaseException) -> str:
    """The informative line of an MXNetError (its text starts with a C++ traceback)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("MXNetError:"):
            return ln
    return lines[-1] if lines else type(exc).__name__


def to_nd(a: np.ndarray):
    mx = load()
    return mx.nd.array(a, dtype=a.dtype, ctx=mx.cpu())


def params(case, profile, use_defaults: bool) -> dict:
    """The operator attributes for a case; without eps and momentum when use_defaults."""
    p = {} if use_defaults else {"eps": case.eps, "momentum": profile.translate_momentum(case.momentum)}
    p.update(fix_gamma=case.fix_gamma, use_global_stats=case.mode == "infer", output_mean_var=True)
    return p


def collect(case, stats: str, outs, rm, rv, grads) -> dict:
    """numpy outputs, as MXNet produced them: y, the two statistic outputs, the aux states, the gradients.

    The statistic outputs are returned in inference too (MXNet fills them with the moving mean and the
    moving statistic in use); there they are rows beyond case.outputs, held against the running values.
    """
    out = {"y": outs[0].asnumpy(), "mean": outs[1].asnumpy(), stats: outs[2].asnumpy(),
           "running_mean": rm.asnumpy(), "running_var": rv.asnumpy()}
    if case.backward:
        out.update(dx=grads[0].asnumpy(), dgamma=grads[1].asnumpy(), dbeta=grads[2].asnumpy())
    return out


def run_imperative(case, inputs, policy, op, attrs: dict, stats: str, notes: list[str]) -> Result:
    """op(data, gamma, beta, moving_mean, moving_var, **attrs) -> [out, mean, stat], through autograd."""
    mx = load()
    train = case.mode == "train"
    x, g, b = to_nd(inputs.x), to_nd(inputs.gamma), to_nd(inputs.beta)
    rm, rv = to_nd(inputs.running_mean), to_nd(inputs.running_var)
    dy = to_nd(inputs.dy) if case.backward else None
    for a in (x, g, b):
        a.attach_grad()

    def call():
        with mx.autograd.record(train_mode=train):
            outs = op(x, g, b, rm, rv, **attrs)
        if case.backward:
            outs[0].backward(dy, train_mode=train)
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
