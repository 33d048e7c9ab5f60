"""The float64 oracle: BatchNorm written from the formulas, in plain numpy, on the dtype-rounded inputs.

It shares no code with the kernels or the backends. Canonical semantics (README.md, Semantics and the oracle):

    mean_c   = 1/m * sum_i x_ic                      (m = values per channel, every axis but the channel's)
    var_c    = 1/m * sum_i (x_ic - mean_c)^2         (biased: this is what normalises)
    invstd_c = 1 / sqrt(var_c + eps)
    y_ic     = (x_ic - mean_c) * invstd_c * gamma_c + beta_c
    running  <- momentum * running + (1 - momentum) * batch      (momentum weighs the old value)
               with batch variance var_c * m / (m - 1) under the 'unbiased' profile

Inference (use_global_stats) normalises with the running statistics and leaves them alone. The two halves are
independent fields of a case: normalize_with (batch in train, running in infer) and update_running (whether the
running statistics move, as above; the batch statistics are then computed whichever normalise). An activation
(act) applies after the affine step, y = act(z) with z the affine output, and its derivative multiplies dy
before the formulas below: relu(z) = z for z > 0, else 0 (NaN stays NaN; relu'(z) = 1 for z > 0, 0 for
z <= 0); sigmoid and tanh as usual. In place (inplace), x holds y after the call and dy holds dx. Backward:

    dbeta_c  = sum_i dy_ic
    dgamma_c = sum_i dy_ic * xhat_ic                 (xhat = normalised x)
    dx_ic    = gamma_c * invstd_c * (dy_ic - dbeta_c / m - xhat_ic * dgamma_c / m)     (train)
    dx_ic    = gamma_c * invstd_c * dy_ic                          (normalised with the running statistics)

fix_gamma takes gamma as 1 and reports dgamma as 0. The momentum direction of a profile changes only the
parameter an implementation is handed, never these values.

Next to every value the oracle gives its error *scale*: the magnitude of the quantities that a correct
finite-precision computation of it has to round along the way (|x| for a mean, |gamma| |x| / sigma for y,
sums of |dy| for the gradients ...). An implementation's error is judged in units of u * scale (u the unit
roundoff), so a badly conditioned case (x = 1e4 + 0.1 randn) gets the slack it needs and no more. With ReLU,
an element whose z lies within rounding of 0 may fall on either side of the kink in a correct implementation:
its whole gradient contribution is added to the scales of dx, dgamma and dbeta (so that one flip passes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF = {"float16": 2.0**-11, "float32": 2.0**-24, "float64": 2.0**-53}
MEAN_SLACK = 64.0  # the float32/float64 pass threshold, in units of u * max|x|, on a batch mean
KINK_SLACK = 64.0  # |z| <= KINK_SLACK * u * scale(z): a ReLU input that rounding may put on either side of 0
LEAST_THRESHOLD = 8.0  # a slack A is added to a scale as A / (u * LEAST_THRESHOLD): allowed in every dtype


@dataclass
class Reference:
    values: dict[str, np.ndarray]  # float64: every output of Case.outputs, and in training both var and invstd
    scales: dict[str, np.ndarray]  # per channel, float64: the error scale of each output


BLOCK = 1 << 20  # values per block of channels (whole channels, at least one): the size of the temporaries


def _as3(a: np.ndarray, case) -> np.ndarray:
    """[outer, C, inner] view of an input, in its own dtype: blocks are taken to float64 one at a time."""
    return np.asarray(a).reshape(case.outer, case.channels, case.inner)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _chan(v: np.ndarray) -> np.ndarray:
    """Per-channel vector broadcast against a [outer, C, inner] array."""
    return v[None, :, None]


def _blocks(case) -> list[slice]:
    """Slices of whole channels, about BLOCK values each: every quantity is per channel, so a block is computed
    on its own, element for element as on the whole array, and the float64 temporaries stay a few blocks big."""
    k = max(1, BLOCK // case.count)
    return [slice(c, min(c + k, case.channels)) for c in range(0, case.channels, k)]


_EXTENDED = np.finfo(np.longdouble).nmant >= 63  # x87 80-bit long double (x86 Linux); not on every platform


def _csum(a3: np.ndarray) -> np.ndarray:
    """Per-channel sum of a [outer, C, inner] array, accurate to float64 rounding.

    A strided float64 numpy sum runs sequentially and can be off by ~m ulps, which would blame a float64
    implementation for the oracle's own error. Here each channel is laid out contiguously (numpy then sums
    pairwise) in 64-bit-mantissa long double, or summed exactly with math.fsum where long double is plain double.
    """
    c = a3.shape[1]
    if _EXTENDED:
        rows = np.empty((c, a3.shape[0], a3.shape[2]), np.longdouble)
        rows[...] = a3.transpose(1, 0, 2)  # exact: float64 into long double, no float64 copy in between
        return rows.reshape(c, -1).sum(axis=1).astype(np.float64)
    rows = np.ascontiguousarray(a3.transpose(1, 0, 2)).reshape(c, -1)
    return np.array([math.fsum(r) if np.isfinite(r).all() else r.sum() for r in rows])


def _amax(a3: np.ndarray) -> np.ndarray:
    """Max |a| per channel over finite entries (0 where none)."""
    finite = np.where(np.isfinite(a3), np.abs(a3), 0.0)
    return finite.max(axis=(0, 2)) if finite.size else np.zeros(a3.shape[1])


def _per_channel(case, fn) -> np.ndarray:
    """fn(s) -> the values of the channels of block s, gathered over every block."""
    out = np.empty(case.channels)
    for s in _blocks(case):
        out[s] = fn(s)
    return out


def _batch_stats(x: np.ndarray, case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """max |x|, mean and biased variance (two passes) per channel, a block of channels at a time."""
    m = case.count
    xmax, mean, var = np.empty(case.channels), np.empty(case.channels), np.empty(case.channels)
    for s in _blocks(case):
        xb = _f64(x[:, s])
        xmax[s] = _amax(xb)
        mean[s] = _csum(xb) / m
        var[s] = _csum((xb - _chan(mean[s])) ** 2) / m
    return xmax, mean, var


def _normalised(xb, centre, scale, gamma, beta, y_out) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y = (x - centre) * scale * gamma + beta of a block, written into y_out; returns (max |x - centre|, xhat,
    max |y|). Each product and sum is rounded to float64 as in the whole-array expression."""
    xhat = xb - _chan(centre)
    devmax = _amax(xhat)
    xhat *= _chan(scale)
    np.multiply(xhat, _chan(gamma), out=y_out)
    y_out += _chan(beta)
    return devmax, xhat, _amax(y_out)


def _gradients(dyb, xhat, gs, m, train, dx_out) -> dict[str, np.ndarray]:
    """dbeta, dgamma, sum |dy|, max |dy|, max |xhat| of a block, and dx written into dx_out:
    gs * (dy - dbeta / m - xhat * dgamma / m) in training (xhat is overwritten), gs * dy in inference."""
    got = {
        "dbeta": _csum(dyb),
        "dgamma": _csum(dyb * xhat),
        "abs_dy_sum": _csum(np.where(np.isfinite(dyb), np.abs(dyb), 0.0)),
        "dymax": _amax(dyb),
        "xhatmax": _amax(xhat),
    }
    if train:
        np.subtract(dyb, _chan(got["dbeta"]) / m, out=dx_out)
        xhat *= _chan(got["dgamma"])
        xhat /= m
        dx_out -= xhat
        dx_out *= _chan(gs)
    else:
        np.multiply(dyb, _chan(gs), out=dx_out)
    return got


def _activate(act: str, z: np.ndarray, want_derivative: bool) -> np.ndarray | None:
    """Apply act to z in place; return act'(z) (before z is overwritten) when asked."""
    if act == "none":
        return np.ones_like(z) if want_derivative else None
    if act == "relu":
        d = np.where(z > 0, 1.0, np.where(np.isnan(z), np.nan, 0.0)) if want_derivative else None
        z[z <= 0] = 0.0
        return d
    if act == "sigmoid":
        z[...] = 1.0 / (1.0 + np.exp(-z))
        return z * (1.0 - z) if want_derivative else None
    if act == "tanh":
        np.tanh(z, out=z)
        return 1.0 - z * z if want_derivative else None
    raise ValueError(f"unknown act {act!r}")


def _elementwise(case, x, dy, centre, scale, gamma, beta) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """y, dx (backward) and the per-channel maxima and sums the scales need, a block of channels at a time."""
    shape3 = (case.outer, case.channels, case.inner)
    y = np.empty(shape3)
    dx = np.empty(shape3) if case.backward else None
    per = {}  # name -> per-channel float64
    gs = gamma * scale
    for s in _blocks(case):
        got = dict(
            zip(("devmax", "xhat", "ymax"), _normalised(_f64(x[:, s]), centre[s], scale[s], gamma[s], beta[s], y[:, s]))
        )
        deriv = _activate(case.act, y[:, s], case.backward and case.act != "none")
        if case.backward:
            dyb = _f64(dy[:, s])
            if deriv is not None:  # what act' multiplies: its error scales with |dy|, not |dy act'|
                got.update(dy_raw_sum=_csum(np.where(np.isfinite(dyb), np.abs(dyb), 0.0)), dy_raw_max=_amax(dyb))
                dyb = dyb * deriv  # not in place: for float64 data dyb is the caller's dy itself
            got.update(_gradients(dyb, got["xhat"], gs[s], case.count, case.mode == "train", dx[:, s]))
        del got["xhat"]
        for k, v in got.items():
            per.setdefault(k, np.empty(case.channels))[s] = v
    return y, dx, per


def _kink_slack(case, x, dy, centre, scale, gamma, beta, s_z) -> dict[str, np.ndarray]:
    """Per channel, over the elements whose z is within KINK_SLACK * u * s_z of 0 (u of the precision z is
    computed in): sum |dy|, sum |dy * xhat| and max |dy|, what one ReLU flip there can change."""
    u = UNIT_ROUNDOFF[case.param_dtype]
    out = {k: np.zeros(case.channels) for k in ("dbeta", "dgamma", "dymax")}
    for s in _blocks(case):
        xhat = (_f64(x[:, s]) - _chan(centre[s])) * _chan(scale[s])
        z = xhat * _chan(gamma[s]) + _chan(beta[s])
        near = np.abs(z) <= _chan(KINK_SLACK * u * s_z[s])
        ady = np.where(near & np.isfinite(z), np.abs(_f64(dy[:, s])), 0.0)
        out["dbeta"][s] = ady.sum(axis=(0, 2))
        out["dgamma"][s] = (ady * np.where(np.isfinite(xhat), np.abs(xhat), 0.0)).sum(axis=(0, 2))
        out["dymax"][s] = _amax(ady)
    return out


def reference(case, inputs) -> Reference:
    """Expected outputs of `case` on `inputs` (an Inputs), with their error scales; all float64."""
    x = _as3(inputs.x, case)
    gamma = np.ones(case.channels) if case.fix_gamma else np.asarray(inputs.gamma, dtype=np.float64)
    beta = np.asarray(inputs.beta, dtype=np.float64)
    rm = np.asarray(inputs.running_mean, dtype=np.float64)
    rv = np.asarray(inputs.running_var, dtype=np.float64)
    vals: dict[str, np.ndarray] = {}
    scl: dict[str, np.ndarray] = {}

    with np.errstate(all="ignore"):
        st = _batch_statistics(case, x) if case.batch_stats else None
        if st is not None:
            vals["mean"], scl["mean"] = st["mean"], st["s_mean"]
            stat = "var" if case.stats == "var" else "invstd"
            vals[stat], scl[stat] = st[stat], st["s_" + stat]
        _running_after(case, st, rm, rv, vals, scl)
        if case.mode == "train":  # normalise with the batch statistics
            centre, scale, s_centre, s_scale = st["mean"], st["invstd"], st["s_mean"], st["s_invstd"]
        else:  # with the running ones
            centre, scale = rm, 1.0 / np.sqrt(rv + case.eps)
            s_scale = scale
            s_centre = _per_channel(case, lambda s: _amax(_f64(x[:, s]))) + np.abs(rm)

        dy = _as3(inputs.dy, case) if case.backward else None
        y, dx, per = _elementwise(case, x, dy, centre, scale, gamma, beta)
        # error scale of xhat: the centre's error times the scale, plus the scale's relative error times |dev|
        s_xhat = s_centre * scale + per["devmax"] * s_scale
        vals["y"] = y.reshape(case.shape)
        s_z = np.abs(gamma) * s_xhat + np.abs(beta) + per["ymax"]  # the affine output, before act
        scl["y"] = s_z + (1.0 if case.act == "sigmoid" else 0.0)  # act is 1-Lipschitz; sigmoid's |y| <= 1

        if case.backward:
            kink = _kink_slack(case, x, dy, centre, scale, gamma, beta, s_z) if case.act == "relu" else None
            s_dx, s_dgamma, s_dbeta = _backward_scales(case, per, gamma, scale, s_scale, s_xhat, s_z, kink)
            vals["dx"], scl["dx"] = dx.reshape(case.shape), s_dx
            vals["dgamma"] = np.zeros(case.channels) if case.fix_gamma else per["dgamma"]
            scl["dgamma"] = s_dgamma
            vals["dbeta"], scl["dbeta"] = per["dbeta"], s_dbeta
        if case.inplace:  # the caller's x holds y, its dy holds dx
            vals["x_after"], scl["x_after"] = vals["y"], scl["y"]
            if case.backward:
                vals["dy_after"], scl["dy_after"] = vals["dx"], scl["dx"]

    if st is not None:  # both batch statistics, whichever the case's profile reports
        for other in ("var", "invstd"):
            vals.setdefault(other, st[other])
            scl.setdefault(other, st["s_" + other])
    else:  # in inference the statistics in use are the running ones (what saved/reserve outputs hold then)
        vals["mean"], scl["mean"] = rm.copy(), np.abs(rm)
        vals["var"], scl["var"] = rv.copy(), np.abs(rv)
        vals["invstd"], scl["invstd"] = scale, s_scale
    return Reference(values=vals, scales=scl)


def _batch_statistics(case, x) -> dict:
    """The batch mean, variance and inverse std, with their error scales (s_*), and the variance the running
    variance is updated with (var_running: unbiased where the profile says so)."""
    m, u = case.count, UNIT_ROUNDOFF[case.param_dtype]
    xmax, mean, var = _batch_stats(x, case)
    invstd = 1.0 / np.sqrt(var + case.eps)
    # A robust variance is off by a few u * var. A two-pass variance also carries the square of the
    # mean's error, and a mean may be off by up to MEAN_SLACK * u * max|x| and still pass.
    s_var = np.abs(var) + MEAN_SLACK * u * xmax**2
    return {
        "mean": mean,
        "var": var,
        "invstd": invstd,
        "s_mean": xmax,
        "s_var": s_var,
        "s_invstd": invstd * (1.0 + s_var / (var + case.eps)),
        "var_running": var * m / (m - 1) if case.running_var == "unbiased" else var,
    }


def _running_after(case, st, rm, rv, vals: dict, scl: dict) -> None:
    """running_mean and running_var after the call: updated with the batch statistics, or left as they were."""
    m, mom = case.count, case.momentum
    if case.updates_running:
        vals["running_mean"] = mom * rm + (1 - mom) * st["mean"]
        scl["running_mean"] = mom * np.abs(rm) + (1 - mom) * st["s_mean"]
        vals["running_var"] = mom * rv + (1 - mom) * st["var_running"]
        scl["running_var"] = mom * np.abs(rv) + (1 - mom) * st["s_var"] * (m / max(m - 1, 1))
    else:
        vals["running_mean"], scl["running_mean"] = rm.copy(), np.abs(rm)
        vals["running_var"], scl["running_var"] = rv.copy(), np.abs(rv)


def _backward_scales(case, per, gamma, scale, s_scale, s_xhat, s_z, kink):
    """The error scales of dx, dgamma and dbeta (per channel)."""
    m = case.count
    # act' computed from an z off by u * s_z is off by at most |act''| u s_z <= u s_z (sigmoid, tanh)
    smooth = s_z if case.act in ("sigmoid", "tanh") else 0.0
    dgamma, dymax, xhatmax = per["dgamma"], per["dymax"], per["xhatmax"]
    s_dbeta = per["abs_dy_sum"] + (per["dy_raw_sum"] * smooth if case.act in ("sigmoid", "tanh") else 0.0)
    dymax = dymax + (per["dy_raw_max"] * smooth if case.act in ("sigmoid", "tanh") else 0.0)
    s_dgamma = s_dbeta * (xhatmax + s_xhat)
    if case.mode == "train":
        s_dx = (
            np.abs(gamma) * (scale + s_scale) * (dymax + (s_dbeta + s_dgamma * xhatmax + np.abs(dgamma) * s_xhat) / m)
        )
    else:
        s_dx = np.abs(gamma) * s_scale * dymax
    if kink is not None:  # one flip at the kink moves dbeta by |dy|, dgamma by |dy xhat|, dx as below
        u_data, u_param = UNIT_ROUNDOFF[case.dtype], UNIT_ROUNDOFF[case.param_dtype]
        s_dbeta = s_dbeta + kink["dbeta"] / (u_param * LEAST_THRESHOLD)
        s_dgamma = s_dgamma + kink["dgamma"] / (u_param * LEAST_THRESHOLD)
        moved = kink["dymax"] + ((kink["dbeta"] + xhatmax * kink["dgamma"]) / m if case.mode == "train" else 0.0)
        s_dx = s_dx + np.abs(gamma * scale) * moved / (u_data * LEAST_THRESHOLD)
    return s_dx, s_dgamma, s_dbeta
