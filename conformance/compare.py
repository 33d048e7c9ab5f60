"""Compare one output of an implementation with the oracle: error metrics, thresholds, a status.

Metrics, all over the elements where both sides are finite:
    max_abs_err   max |got - expected|
    max_rel_err   max |got - expected| / |expected|           (elements with expected != 0)
    max_ulp       max |got - expected| / ulp(expected)         (ulp in the output's dtype)
    ulp_at_max    max_abs_err / ulp(max |expected|)
    norm_err      max over channels of  abs err / (u * scale)  (u: unit roundoff of the output's dtype,
                  scale: the oracle's error scale for that channel, see oracle.py)
A row passes when norm_err <= the dtype's threshold and the NaN/+Inf/-Inf pattern is the same on both
sides. The thresholds are printed in every report.
"""

from __future__ import annotations

import numpy as np

from .oracle import UNIT_ROUNDOFF

# Closed set of outcomes, like benchdnn's.
STATUSES = ("pass", "fail", "unsupported", "skip", "error", "crash", "timeout", "xfail", "xpass")
UNEXPECTED = ("fail", "error", "crash", "timeout", "xpass")

# Pass threshold on norm_err, per output dtype.
THRESHOLDS = {"float16": 8.0, "float32": 64.0, "float64": 64.0}

METRICS = ("max_abs_err", "max_rel_err", "max_ulp", "ulp_at_max", "norm_err", "threshold")


def _ulp(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.spacing(np.abs(values).astype(dtype)).astype(np.float64)


def _pattern(a: np.ndarray) -> np.ndarray:
    """0 finite, 1 NaN, 2 +Inf, 3 -Inf."""
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [1, 2, 3], 0)


def _fmt_index(flat: int, shape) -> str:
    return "[" + ",".join(str(i) for i in np.unravel_index(flat, shape)) + "]" if shape else "[]"


def compare(name: str, got, expected: np.ndarray, scale: np.ndarray, case, expected_dtype: str) -> dict:
    """One row's numbers for output `name`: metrics, status ('pass' or 'fail') and reason."""
    row = {"output": name, **{k: np.nan for k in METRICS}, "status": "fail", "reason": ""}
    threshold = THRESHOLDS[expected_dtype]
    row["threshold"] = threshold
    if got is None:
        row["reason"] = f"{name}: missing from the backend's outputs"
        return row
    got = np.asarray(got)
    if got.shape != expected.shape:
        row["reason"] = f"{name}: got shape {list(got.shape)}, expected {list(expected.shape)}"
        return row
    if got.dtype != np.dtype(expected_dtype):
        row["reason"] = f"{name}: got dtype {got.dtype}, expected {expected_dtype}"
        return row
    dtype = np.dtype(expected_dtype)
    g = got.astype(np.float64)
    pat_g, pat_e = _pattern(g), _pattern(expected)
    both = (pat_g == 0) & (pat_e == 0)
    mismatch = int(np.count_nonzero(pat_g != pat_e))
    with np.errstate(all="ignore"):
        err = np.where(both, np.abs(g - expected), 0.0)
        ref_abs = np.where(both, np.abs(expected), 0.0)
        row["max_abs_err"] = float(err.max()) if err.size else 0.0
        nz = both & (ref_abs > 0)
        row["max_rel_err"] = float((err[nz] / ref_abs[nz]).max()) if nz.any() else 0.0
        row["max_ulp"] = float((err / _ulp(expected, dtype))[both].max()) if both.any() else 0.0
        top = ref_abs.max() if ref_abs.size else 0.0
        row["ulp_at_max"] = float(row["max_abs_err"] / _ulp(np.array(top), dtype))
        # norm_err per channel
        u = UNIT_ROUNDOFF[expected_dtype]
        if expected.ndim == 1:  # per-channel outputs
            per_c = err
        else:
            per_c = err.reshape(case.outer, case.channels, case.inner).max(axis=(0, 2))
        denom = u * np.where(np.isfinite(scale), scale, np.inf)
        ratio = np.where(per_c > 0, per_c / np.where(denom > 0, denom, np.finfo(float).tiny), 0.0)
        row["norm_err"] = float(ratio.max()) if ratio.size else 0.0

    problems = []
    if mismatch:
        i = int(np.argmax((pat_g != pat_e).reshape(-1)))
        problems.append(f"NaN/Inf pattern differs at {mismatch} elements, first {_fmt_index(i, expected.shape)}: "
                        f"got {float(g.reshape(-1)[i])!r}, expected {float(expected.reshape(-1)[i])!r}")
    if not row["norm_err"] <= threshold:
        i = int(np.argmax(err.reshape(-1)))
        problems.append(f"norm_err {row['norm_err']:.3g} > {threshold:g} at {_fmt_index(i, expected.shape)}: "
                        f"got {float(g.reshape(-1)[i])!r}, expected {float(expected.reshape(-1)[i])!r}")
    if problems:
        row["reason"] = f"{name}: " + "; ".join(problems)
    else:
        row["status"] = "pass"
    return row
