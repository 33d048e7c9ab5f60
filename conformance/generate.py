"""Inputs of a case, expanded deterministically from its seed (or read from its .npz file).

Every backend gets these same arrays. Master values are drawn in float64 and then cast: x and dy to the
case dtype, gamma, beta and the running statistics to the parameter dtype (float32 for float16 data).
The draw order is fixed (x, gamma, beta, running_mean, running_var, dy), so a given seed always gives the
same tensors, whatever backend or machine asks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .case import Case
from .errors import UserError

INPUT_NAMES = ("x", "gamma", "beta", "running_mean", "running_var", "dy")


@dataclass(frozen=True)
class Inputs:
    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    dy: np.ndarray | None  # None unless the case runs backward

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in INPUT_NAMES if getattr(self, k) is not None}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.as_dict().values())


def _master_x(case: Case, rng: np.random.Generator) -> np.ndarray:
    f = case.fill
    view = (case.outer, case.channels, case.inner)
    if f.kind in ("normal", "offset"):
        return rng.normal(f.get("mean"), f.get("std"), size=case.shape)
    if f.kind == "uniform":
        return rng.uniform(f.get("low"), f.get("high"), size=case.shape)
    if f.kind == "constant":
        per_channel = rng.normal(f.get("mean"), f.get("std"), size=case.channels)
        return np.broadcast_to(per_channel[None, :, None], view).reshape(case.shape).copy()
    if f.kind == "exact":
        # Channel c holds centre_c + a_c and centre_c - a_c, half each, in shuffled positions: its mean is
        # centre_c and its biased variance a_c^2, both exact in every dtype, and every partial sum is exact.
        centre = rng.integers(-8, 9, size=case.channels) / 4.0
        half = 2.0 ** rng.integers(-2, 2, size=case.channels)
        signs = np.tile(np.array([1.0, -1.0]), case.count // 2)
        out = np.empty((case.channels, case.count))
        for c in range(case.channels):
            out[c] = centre[c] + half[c] * rng.permutation(signs)
        return out.reshape(case.channels, case.outer, case.inner).transpose(1, 0, 2).reshape(case.shape).copy()
    if f.kind == "special":
        x = rng.normal(0.0, 1.0, size=case.shape)
        flat = x.reshape(-1)
        hits = rng.random(flat.size) < f.get("fraction")
        kinds = rng.integers(0, 3, size=flat.size)
        flat[hits & (kinds == 0)] = np.nan
        flat[hits & (kinds == 1)] = np.inf
        flat[hits & (kinds == 2)] = -np.inf
        return x
    raise AssertionError(f"unhandled fill kind {f.kind}")  # Fill.make rejects unknown kinds


def _fill_centre(case: Case) -> float:
    params = dict(case.fill.params)
    return params.get("mean", 0.0)


def generate(case: Case) -> Inputs:
    rng = np.random.default_rng(case.seed)
    x = _master_x(case, rng)
    c = case.channels
    gamma = rng.uniform(0.5, 1.5, size=c) * rng.choice([-1.0, 1.0], size=c)
    beta = rng.normal(0.0, 0.5, size=c)
    running_mean = _fill_centre(case) + rng.normal(0.0, 1.0, size=c)
    running_var = rng.uniform(0.5, 2.0, size=c)
    dy = rng.normal(0.0, 1.0, size=case.shape)
    arrays = {"x": x, "gamma": gamma, "beta": beta, "running_mean": running_mean, "running_var": running_var, "dy": dy}
    if case.inputs is not None:
        arrays.update(load_npz(case))
    data_t, param_t = np.dtype(case.dtype), np.dtype(case.param_dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        return Inputs(
            x=np.ascontiguousarray(arrays["x"], dtype=data_t),
            gamma=np.ascontiguousarray(arrays["gamma"], dtype=param_t),
            beta=np.ascontiguousarray(arrays["beta"], dtype=param_t),
            running_mean=np.ascontiguousarray(arrays["running_mean"], dtype=param_t),
            running_var=np.ascontiguousarray(arrays["running_var"], dtype=param_t),
            dy=np.ascontiguousarray(arrays["dy"], dtype=data_t) if case.backward else None,
        )


def load_npz(case: Case) -> dict[str, np.ndarray]:
    """The arrays a case's .npz file supplies, checked against the case's shape."""
    path = case.inputs
    if not os.path.isfile(path):
        raise UserError(f"no such file {path!r}", source=f"case {case.name}", field="inputs")
    try:
        with np.load(path, allow_pickle=False) as z:
            found = {k: np.array(z[k]) for k in z.files}
    except Exception as exc:  # a corrupt or non-npz file
        raise UserError(f"cannot read {path!r} as .npz: {exc}".splitlines()[0], source=f"case {case.name}", field="inputs") from None
    want = {"x": case.shape, "dy": case.shape, "gamma": (case.channels,), "beta": (case.channels,),
            "running_mean": (case.channels,), "running_var": (case.channels,)}
    for key, arr in found.items():
        if key not in want:
            raise UserError(f"unknown key {key!r} (known: {', '.join(INPUT_NAMES)})", source=path, field=key)
        if tuple(arr.shape) != want[key]:
            raise UserError(f"shape {list(arr.shape)} does not match the case, expected {list(want[key])}", source=path, field=key)
        if arr.dtype.kind not in "fiu":
            raise UserError(f"dtype {arr.dtype} is not numeric", source=path, field=key)
    return {k: v.astype(np.float64) for k, v in found.items()}
