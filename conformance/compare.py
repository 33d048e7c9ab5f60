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

# Pass threshold on norm_err, per output dtype.
THRESHOLDS = {"float16": 8.0, "float32": 64.0, "float64": 64.0}

METRICS = ("max_abs_err", "max_rel_err", "max_ulp", "ulp_at_max", "norm_err", "threshold")


BLOCK = 1 << 20  # elements compared at a time: the temporaries are a few blocks, whatever the output's size


def _ulp(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.spacing(np.abs(values).astype(dtype)).astype(np.float64)


def _pattern(a: np.ndarray) -> np.ndarray:
    """0 finite, 1 NaN, 2 +Inf, 3 -Inf (int8)."""
    out = np.zeros(a.shape, np.int8)
    out[np.isnan(a)] = 1
    out[np.isposinf(a)] = 2
    out[np.isneginf(a)] = 3
    return out


def _fmt_index(flat: int, shape) -> str:
    return "[" + ",".join(str(i) for i in np.unravel_index(flat, shape)) + "]" if shape else "[]"


def _boxes(shape3):
    """Index tuples of boxes of at most BLOCK elements tiling an [outer, C, inner] array."""
    o, c, i = shape3
    bi = min(i, BLOCK)
    bc = min(c, max(1, BLOCK // bi))
    bo = min(o, max(1, BLOCK // (bi * bc)))
    for o0 in range(0, o, bo):
        for c0 in range(0, c, bc):
            for i0 in range(0, i, bi):
                yield (slice(o0, o0 + bo), slice(c0, c0 + bc), slice(i0, i0 + bi))


class _Tally:
    """The metrics of compare(), gathered box by box; every one a max (or a count, or the first index of a
    max) over the elements, so the result is that of the whole array at once."""

    def __init__(self, shape3, dtype):
        self.shape3, self.dtype = shape3, dtype
        self.per_c = np.zeros(shape3[1])  # max abs error per channel (errors are >= 0, never NaN)
        self.abs, self.rel, self.ulp, self.top = [], [], [], []  # per-box maxima
        self.mismatch, self.first_mismatch = 0, None
        self.worst = (-1.0, 0)  # (max error, first flat index holding it)

    def flat(self, box, local: int, block_shape) -> int:
        return int(
            np.ravel_multi_index(
                tuple(s.start + k for s, k in zip(box, np.unravel_index(local, block_shape))), self.shape3
            )
        )

    def add(self, box, g_box, e_box) -> None:
        g, e = g_box.astype(np.float64), e_box.astype(np.float64)
        pat_g, pat_e = _pattern(g), _pattern(e)
        both = (pat_g == 0) & (pat_e == 0)
        differ = pat_g != pat_e
        n = int(np.count_nonzero(differ))
        if n:
            first = self.flat(box, int(np.argmax(differ)), e.shape)
            self.mismatch += n
            self.first_mismatch = first if self.first_mismatch is None else min(first, self.first_mismatch)
        err = np.where(both, np.abs(g - e), 0.0)
        ref_abs = np.where(both, np.abs(e), 0.0)
        i = int(np.argmax(err))
        if (
            err.flat[i] > self.worst[0]
        ):  # boxes come in flat order along each axis, not overall: compare indices on ties
            self.worst = (float(err.flat[i]), self.flat(box, i, e.shape))
        elif err.flat[i] == self.worst[0]:
            self.worst = (self.worst[0], min(self.worst[1], self.flat(box, i, e.shape)))
        self.abs.append(err.max())
        self.top.append(ref_abs.max())
        nz = both & (ref_abs > 0)
        if nz.any():
            self.rel.append((err[nz] / ref_abs[nz]).max())
        if both.any():
            self.ulp.append((err / _ulp(e, self.dtype))[both].max())
        np.maximum(self.per_c[box[1]], err.max(axis=(0, 2)), out=self.per_c[box[1]])


def _max(values: list) -> float:
    """The max of per-box maxima, NaN if any is (as numpy's max over all elements), 0 if there are none."""
    return float(np.max(values)) if values else 0.0


def compare(name: str, got, expected: np.ndarray, scale: np.ndarray, case, expected_dtype: str) -> dict:
    """One row's numbers for output `name`: metrics, status ('pass' or 'fail') and reason. Computed a box of
    elements at a time: the temporaries are a few BLOCKs, whatever the output's size."""
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
    shape3 = (1, expected.size, 1) if expected.ndim == 1 else (case.outer, case.channels, case.inner)
    g3, e3 = got.reshape(shape3), np.asarray(expected).reshape(shape3)  # each box is taken to float64 on its own
    tally = _Tally(shape3, dtype)
    with np.errstate(all="ignore"):
        for box in _boxes(shape3):
            tally.add(box, g3[box], e3[box])
        row["max_abs_err"] = _max(tally.abs)
        row["max_rel_err"] = _max(tally.rel)
        row["max_ulp"] = _max(tally.ulp)
        row["ulp_at_max"] = float(row["max_abs_err"] / _ulp(np.array(_max(tally.top)), dtype))
        # norm_err per channel
        u = UNIT_ROUNDOFF[expected_dtype]
        denom = u * np.where(np.isfinite(scale), scale, np.inf)
        per_c = tally.per_c
        ratio = np.where(per_c > 0, per_c / np.where(denom > 0, denom, np.finfo(float).tiny), 0.0)
        row["norm_err"] = float(ratio.max()) if ratio.size else 0.0

    problems = []
    if tally.mismatch:
        i = tally.first_mismatch
        problems.append(
            f"NaN/Inf pattern differs at {tally.mismatch} elements, first {_fmt_index(i, expected.shape)}: "
            f"got {float(got.flat[i])!r}, expected {float(expected.flat[i])!r}"
        )
    if not row["norm_err"] <= threshold:
        i = tally.worst[1]
        problems.append(
            f"norm_err {row['norm_err']:.3g} > {threshold:g} at {_fmt_index(i, expected.shape)}: "
            f"got {float(got.flat[i])!r}, expected {float(expected.flat[i])!r}"
        )
    if problems:
        row["reason"] = f"{name}: " + "; ".join(problems)
    else:
        row["status"] = "pass"
    return row
