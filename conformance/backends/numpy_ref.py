"""numpy in the data's own precision (float32 for float16 data): the simplest peer of the OpenCL kernels.

It follows the textbook two-pass algorithm with numpy's own sums: pairwise along a contiguous axis, one
sequential chain along a strided one (channel-last data), as numpy documents. It is a peer, not the oracle: it is
held against the float64 oracle like every other backend.
"""

from __future__ import annotations

import numpy as np

from .base import DeviceInfo, Result, time_repeats

NAME = "numpy"
IMPLEMENTS = frozenset({"update_running=0", "update_running=1", "act=relu", "act=sigmoid", "act=tanh", "inplace=1"})


def available():
    return None


def devices():
    return [DeviceInfo(key=None, name="host CPU", vendor="numpy", driver=np.__version__, fp16=True, fp64=True)]


def open(device_key):
    return None


def supports(session, case):
    return None


def _compute(case, inp):
    """The outputs, computed in place where that rounds the same (x * g + b is x * g rounded, then + b rounded,
    either way, in the precision numpy's promotion picks): beyond the outputs, a few temporaries the size of x."""
    work = np.float64 if case.dtype == "float64" else np.float32
    c = case.channels
    v = (case.outer, c, case.inner)
    x = inp.x.astype(work, copy=False).reshape(v)
    gamma = np.ones(c, work) if case.fix_gamma else inp.gamma.astype(work)
    beta = inp.beta.astype(work)
    rm, rv = inp.running_mean.astype(work), inp.running_var.astype(work)
    m = case.count
    out = {}
    with np.errstate(all="ignore"):
        if case.batch_stats:
            mean = x.mean(axis=(0, 2))
            d = x - mean[None, :, None]
            var = (d * d).mean(axis=(0, 2))
            invstd = 1 / np.sqrt(var + work(case.eps))
            out["mean"], out[case.stats] = mean, (var if case.stats == "var" else invstd)
        if case.updates_running:
            mom = work(case.momentum)
            run_v = var * work(m) / work(m - 1) if case.running_var == "unbiased" else var
            out["running_mean"] = mom * rm + (1 - mom) * mean
            out["running_var"] = mom * rv + (1 - mom) * run_v
        else:
            out["running_mean"], out["running_var"] = rm.copy(), rv.copy()
        if case.mode != "train":  # normalise with the running statistics
            mean, invstd = rm, 1 / np.sqrt(rv + work(case.eps))
            d = x - mean[None, :, None]
        xhat = d
        xhat *= invstd[None, :, None]
        y = xhat * gamma[None, :, None]
        y += beta[None, :, None]
        y, slope = _activate(case.act, y, work)
        out["y"] = y.reshape(case.shape)
        if case.backward:
            dy = inp.dy.astype(work, copy=False).reshape(v)
            if case.act != "none":
                dy = dy * slope
            out.update(_backward(case, dy, xhat, gamma * invstd, work))
    if case.inplace:  # what the caller's x and dy hold after an in-place call
        out["x_after"] = out["y"]
        if case.backward:
            out["dy_after"] = out["dx"]
    data_t, param_t = np.dtype(case.dtype), np.dtype(case.param_dtype)
    return {
        k: out[k].astype(data_t if k in ("y", "dx", "x_after", "dy_after") else param_t, copy=False)
        for k in case.outputs
    }


def _activate(act: str, y, work):
    """act(y) and its slope act'(z) (None without an activation); ReLU's slope is NaN where y is."""
    slope = None
    if act == "relu":
        slope = (y > 0).astype(work)
        slope[np.isnan(y)] = np.nan
        y = np.where(y <= 0, work(0), y)
    elif act == "sigmoid":
        y = 1 / (1 + np.exp(-y))
        slope = y * (1 - y)
    elif act == "tanh":
        y = np.tanh(y)
        slope = 1 - y * y
    return y, slope


def _backward(case, dy, xhat, gamma_invstd, work) -> dict:
    """dx, dgamma and dbeta from dy (already through act'), xhat (used up) and gamma * invstd per channel."""
    m = case.count
    dbeta = dy.sum(axis=(0, 2))
    dgamma = (dy * xhat).sum(axis=(0, 2))
    scale = gamma_invstd[None, :, None]
    if case.mode == "train":  # scale * (dy - dbeta / m - xhat * dgamma / m), xhat used up
        dx = dy - dbeta[None, :, None] / m
        xhat *= dgamma[None, :, None]
        dx -= xhat / m  # not in place: numpy 1.x takes float32 / m to float64 for m >= 2^16, and so dx
        dx *= scale
    else:
        dx = scale * dy
    return {
        "dx": dx.reshape(case.shape),
        "dgamma": np.zeros(case.channels, work) if case.fix_gamma else dgamma,
        "dbeta": dbeta,
    }


def run(session, case, inputs, policy):
    """Outputs of the last timed repeat (every repeat computes the same): one set held, not one per repeat."""
    walls, outputs = time_repeats(lambda: _compute(case, inputs), policy)
    return Result(outputs=outputs, wall_ms=walls)


def measure_copy(session, nbytes, policy):
    """The host's memory-copy roofline: np.copyto between two preallocated arrays of nbytes."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    walls, _ = time_repeats(lambda: np.copyto(dst, src), policy)
    return walls
