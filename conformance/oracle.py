"""The float64 oracle: BatchNorm written from the formulas, in plain numpy, on the dtype-rounded inputs.

It shares no code with the kernels or the backends. Canonical semantics (see DESIGN.md):

    mean_c   = 1/m * sum_i x_ic                      (m = values per channel, every axis but the channel's)
    var_c    = 1/m * sum_i (x_ic - mean_c)^2         (biased: this is what normalises)
    invstd_c = 1 / sqrt(var_c + eps)
    y_ic     = (x_ic - mean_c) * invstd_c * gamma_c + beta_c
    running  <- momentum * running + (1 - momentum) * batch      (momentum weighs the old value)
               with batch variance var_c * m / (m - 1) under the 'unbiased' profile

Inference (use_global_stats) normalises with the running statistics and leaves them alone. Backward:

    dbeta_c  = sum_i dy_ic
    dgamma_c = sum_i dy_ic * xhat_ic                 (xhat = normalised x)
    dx_ic    = gamma_c * invstd_c * (dy_ic - dbeta_c / m - xhat_ic * dgamma_c / m)     (train)
    dx_ic    = gamma_c * invstd_c * dy_ic                                              (infer)

fix_gamma takes gamma as 1 and reports dgamma as 0. The momentum direction of a profile changes only the
parameter an implementation is handed, never these values.

Next to every value the oracle gives its error *scale*: the magnitude of the quantities that a correct
finite-precision computation of it has to round along the way (|x| for a mean, |gamma| |x| / sigma for y,
sums of |dy| for the gradients ...). An implementation's error is judged in units of u * scale (u the unit
roundoff), so a badly conditioned case (x = 1e4 + 0.1 randn) gets the slack it needs and no more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF = {"float16": 2.0**-11, "float32": 2.0**-24, "float64": 2.0**-53}
MEAN_SLACK = 64.0  # the float32/float64 pass threshold, in units of u * max|x|, on a batch mean


@dataclass
class Reference:
    values: dict[str, np.ndarray]  # float64: every output of Case.outputs, and in training both var and invstd
    scales: dict[str, np.ndarray]  # per channel, float64: the error scale of each output


def _as3(a: np.ndarray, case) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(case.outer, case.channels, case.inner)


def _chan(v: np.ndarray) -> np.ndarray:
    """Per-channel vector broadcast against a [outer, C, inner] array."""
    return v[None, :, None]


_EXTENDED = np.finfo(np.longdouble).nmant >= 63  # x87 80-bit long double (x86 Linux); not on every platform


def _csum(a3: np.ndarray) -> np.ndarray:
    """Per-channel sum of a [outer, C, inner] array, accurate to float64 rounding.

    A strided float64 numpy sum runs sequentially and can be off by ~m ulps, which would blame a float64
    implementation for the oracle's own error. Here each channel is laid out contiguously (numpy then sums
    pairwise) in 64-bit-mantissa long double, or summed exactly with math.fsum where long double is plain double.
    """
    rows = np.ascontiguousarray(a3.transpose(1, 0, 2)).reshape(a3.shape[1], -1)
    if _EXTENDED:
        return rows.astype(np.longdouble).sum(axis=1).astype(np.float64)
    return np.array([math.fsum(r) if np.isfinite(r).all() else r.sum() for r in rows])


def _amax(a3: np.ndarray) -> np.ndarray:
    """Max |a| per channel over finite entries (0 where none)."""
    finite = np.where(np.isfinite(a3), np.abs(a3), 0.0)
    return finite.max(axis=(0, 2)) if finite.size else np.zeros(a3.shape[1])


def reference(case, inputs) -> Reference:
    """Expected outputs of `case` on `inputs` (an Inputs), with their error scales; all float64."""
    m = case.count
    x = _as3(inputs.x, case)
    gamma = np.ones(case.channels) if case.fix_gamma else np.asarray(inputs.gamma, dtype=np.float64)
    beta = np.asarray(inputs.beta, dtype=np.float64)
    rm = np.asarray(inputs.running_mean, dtype=np.float64)
    rv = np.asarray(inputs.running_var, dtype=np.float64)
    eps, mom = case.eps, case.momentum
    u = UNIT_ROUNDOFF[case.param_dtype]
    vals: dict[str, np.ndarray] = {}
    scl: dict[str, np.ndarray] = {}
    xmax = _amax(x)

    with np.errstate(all="ignore"):
        if case.mode == "train":
            mean = _csum(x) / m
            dev = x - _chan(mean)
            var = _csum(dev**2) / m
            invstd = 1.0 / np.sqrt(var + eps)
            batch_var_for_running = var * m / (m - 1) if case.running_var == "unbiased" else var
            s_mean = xmax
            # A robust variance is off by a few u * var. A two-pass variance also carries the square of the
            # mean's error, and a mean may be off by up to MEAN_SLACK * u * max|x| and still pass.
            s_var = np.abs(var) + MEAN_SLACK * u * xmax**2
            s_invstd = invstd * (1.0 + s_var / (var + eps))
            vals["mean"], scl["mean"] = mean, s_mean
            if case.stats == "var":
                vals["var"], scl["var"] = var, s_var
            else:
                vals["invstd"], scl["invstd"] = invstd, s_invstd
            vals["running_mean"] = mom * rm + (1 - mom) * mean
            scl["running_mean"] = mom * np.abs(rm) + (1 - mom) * s_mean
            vals["running_var"] = mom * rv + (1 - mom) * batch_var_for_running
            scl["running_var"] = mom * np.abs(rv) + (1 - mom) * s_var * (m / max(m - 1, 1))
            centre, scale = mean, invstd
            s_scale = s_invstd
            s_centre = s_mean
        else:
            centre, scale = rm, 1.0 / np.sqrt(rv + eps)
            vals["running_mean"], scl["running_mean"] = rm.copy(), np.abs(rm)
            vals["running_var"], scl["running_var"] = rv.copy(), np.abs(rv)
            s_scale = scale
            s_centre = xmax + np.abs(rm)

        dev = x - _chan(centre)
        xhat = dev * _chan(scale)
        y = xhat * _chan(gamma) + _chan(beta)
        devmax = _amax(dev)
        # error scale of xhat: the centre's error times the scale, plus the scale's relative error times |dev|
        s_xhat = s_centre * scale + devmax * s_scale
        vals["y"] = y.reshape(case.shape)
        scl["y"] = np.abs(gamma) * s_xhat + np.abs(beta) + _amax(y)

        if case.backward:
            dy = _as3(inputs.dy, case)
            dbeta = _csum(dy)
            dgamma = _csum(dy * xhat)
            abs_dy_sum = _csum(np.where(np.isfinite(dy), np.abs(dy), 0.0))
            dymax = _amax(dy)
            xhatmax = _amax(xhat)
            s_dbeta = abs_dy_sum
            s_dgamma = abs_dy_sum * (xhatmax + s_xhat)
            if case.mode == "train":
                dx = _chan(gamma * scale) * (dy - _chan(dbeta) / m - xhat * _chan(dgamma) / m)
                s_dx = np.abs(gamma) * (scale + s_scale) * (dymax + (s_dbeta + s_dgamma * xhatmax + np.abs(dgamma) * s_xhat) / m)
            else:
                dx = _chan(gamma * scale) * dy
                s_dx = np.abs(gamma) * s_scale * dymax
            vals["dx"], scl["dx"] = dx.reshape(case.shape), s_dx
            vals["dgamma"] = np.zeros(case.channels) if case.fix_gamma else dgamma
            scl["dgamma"] = s_dgamma
            vals["dbeta"], scl["dbeta"] = dbeta, s_dbeta

    if case.mode == "train":  # both batch statistics, whichever the case's profile reports
        for other in ("var", "invstd"):
            vals.setdefault(other, var if other == "var" else invstd)
            scl.setdefault(other, s_var if other == "var" else s_invstd)
    else:  # in inference the statistics in use are the running ones (what saved/reserve outputs hold then)
        vals["mean"], scl["mean"] = rm.copy(), np.abs(rm)
        vals["var"], scl["var"] = rv.copy(), np.abs(rv)
        vals["invstd"], scl["invstd"] = scale, s_scale
    return Reference(values=vals, scales=scl)
