"""Inputs of a case, expanded deterministically from its seed (or read from its .npz file).

Every backend gets these same arrays. Master values are drawn in float64 and then cast: x and dy to the
case dtype, gamma, beta and the running statistics to the parameter dtype (float32 for float16 data).
The draw order is fixed (x, gamma, beta, running_mean, running_var, dy), so a given seed always gives the
same tensors, whatever backend or machine asks. x and dy are drawn CHUNK values at a time and cast chunk by
chunk: numpy's Generator gives the same sequence drawn in pieces as drawn whole (tests/test_inputs_file.py
checks it), so the values are those of one float64 master array, which is never held.

An inputs file (.npz) is checked before any of its arrays is decompressed: its content digest against the one
the case id names, then each member's .npy header (key, shape, numeric dtype) and its uncompressed size against
what that header says, so a member that inflates to more than its header claims is refused unread.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from numpy.lib import format as npy

from .case import Case, content_digest
from .errors import UserError

INPUT_NAMES = ("x", "gamma", "beta", "running_mean", "running_var", "dy")
CHUNK = 1 << 20  # values of x and dy drawn at a time (8 MiB of float64)


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


def _drawn(draw, shape, dtype) -> np.ndarray:
    """draw(n) -> n float64 values, called on consecutive chunks in order and cast into one array of dtype: the
    values of draw(prod(shape)) cast, without that float64 master."""
    out = np.empty(math.prod(shape), dtype)
    for i in range(0, out.size, CHUNK):
        out[i : i + CHUNK] = draw(min(CHUNK, out.size - i))
    return out.reshape(shape)


def _special(case: Case, rng: np.random.Generator, dtype) -> np.ndarray:
    """normal(0, 1) with NaN, +Inf, -Inf at `fraction` of the elements: which elements (uniform draws, one per
    element) and then which of the three (integers 0..2, one per element)."""
    x = _drawn(lambda n: rng.normal(0.0, 1.0, size=n), case.shape, dtype).reshape(-1)
    hits = np.empty(x.size, bool)
    for i in range(0, x.size, CHUNK):
        hits[i : i + CHUNK] = rng.random(min(CHUNK, x.size - i)) < case.fill.get("fraction")
    for i in range(0, x.size, CHUNK):
        kinds, hit, part = rng.integers(0, 3, size=min(CHUNK, x.size - i)), hits[i : i + CHUNK], x[i : i + CHUNK]
        part[hit & (kinds == 0)] = np.nan
        part[hit & (kinds == 1)] = np.inf
        part[hit & (kinds == 2)] = -np.inf
    return x.reshape(case.shape)


def _master_x(case: Case, rng: np.random.Generator, dtype) -> np.ndarray:
    """x of the case's fill in dtype: the float64 values drawn from rng, cast."""
    f = case.fill
    if f.kind in ("normal", "offset"):
        return _drawn(lambda n: rng.normal(f.get("mean"), f.get("std"), size=n), case.shape, dtype)
    if f.kind == "uniform":
        return _drawn(lambda n: rng.uniform(f.get("low"), f.get("high"), size=n), case.shape, dtype)
    out = np.empty((case.outer, case.channels, case.inner), dtype)
    if f.kind == "constant":
        out[...] = rng.normal(f.get("mean"), f.get("std"), size=case.channels)[None, :, None]
        return out.reshape(case.shape)
    if f.kind == "exact":
        # Channel c holds centre_c + a_c and centre_c - a_c, half each, in shuffled positions: its mean is
        # centre_c and its biased variance a_c^2, both exact in every dtype, and every partial sum is exact.
        centre = rng.integers(-8, 9, size=case.channels) / 4.0
        half = 2.0 ** rng.integers(-2, 2, size=case.channels)
        signs = np.tile(np.array([1.0, -1.0]), case.count // 2)
        for c in range(case.channels):
            out[:, c, :] = (centre[c] + half[c] * rng.permutation(signs)).reshape(case.outer, case.inner)
        return out.reshape(case.shape)
    if f.kind == "special":
        return _special(case, rng, dtype)
    raise AssertionError(f"unhandled fill kind {f.kind}")  # Fill.make rejects unknown kinds


def _fill_centre(case: Case) -> float:
    params = dict(case.fill.params)
    return params.get("mean", 0.0)


def _cast(arr: np.ndarray, dtype) -> np.ndarray:
    """An array of a file in dtype, as if through float64 (a float goes there exactly; an integer is rounded there
    first, as before)."""
    return np.ascontiguousarray(arr.astype(np.float64) if arr.dtype.kind in "iu" else arr, dtype=dtype)


def generate(case: Case) -> Inputs:
    """The case's inputs: drawn from its seed, those its .npz file has taken from there (the draws happen all the
    same, so the others do not move). dy is drawn last, and only for a backward case."""
    given = load_npz(case) if case.inputs is not None else {}
    rng = np.random.default_rng(case.seed)
    data_t, param_t = np.dtype(case.dtype), np.dtype(case.param_dtype)
    c = case.channels
    with np.errstate(over="ignore", invalid="ignore"):
        x = _master_x(case, rng, data_t)
        x = _cast(given.pop("x"), data_t) if "x" in given else x
        gamma = rng.uniform(0.5, 1.5, size=c) * rng.choice([-1.0, 1.0], size=c)
        beta = rng.normal(0.0, 0.5, size=c)
        running_mean = _fill_centre(case) + rng.normal(0.0, 1.0, size=c)
        running_var = rng.uniform(0.5, 2.0, size=c)
        dy = None
        if case.backward:
            dy = (
                _cast(given.pop("dy"), data_t)
                if "dy" in given
                else _drawn(lambda n: rng.normal(0.0, 1.0, size=n), case.shape, data_t)
            )
        params = {"gamma": gamma, "beta": beta, "running_mean": running_mean, "running_var": running_var}
        params = {k: _cast(given.get(k, v), param_t) for k, v in params.items()}
    return Inputs(x=x, dy=dy, **params)


# ---- inputs files --------------------------------------------------------------------------------------------
def _wanted(case: Case) -> dict[str, tuple[int, ...]]:
    c = (case.channels,)
    return {"x": case.shape, "dy": case.shape, "gamma": c, "beta": c, "running_mean": c, "running_var": c}


def _open_checked(case: Case) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The case's .npz, open, and its members by key, every check passed (see check_npz); the caller closes it."""
    path = case.inputs_path
    if not path.is_file():
        raise UserError(
            f"no such file {str(path)!r} ({case.inputs_file!r} in the folder {str(path.parent)!r}); pass the "
            f"folder that holds it with --inputs-root DIR",
            source=f"case {case.name}",
            field="inputs",
        )
    src = str(path)
    try:
        found = content_digest(path)
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror or exc}", source=src, field="inputs") from None
    if found != case.inputs_digest:
        raise UserError(
            f"content digest {found} differs from {case.inputs_digest}, the one the case id names: the file "
            f"changed since the id was made",
            source=src,
            field="inputs",
        )
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"cannot read as .npz: {exc}", source=src, field="inputs") from None
    try:
        return zf, _members(zf, case, src)
    except BaseException:
        zf.close()
        raise


def _members(zf: zipfile.ZipFile, case: Case, src: str) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    want = _wanted(case)
    for info in zf.infolist():
        key = info.filename.removesuffix(".npy")
        if key not in want:
            raise UserError(f"unknown key {key!r} (known: {', '.join(INPUT_NAMES)})", source=src, field=key)
        if key in members:
            raise UserError(f"key {key!r} appears twice", source=src, field=key)
        shape, dtype, header_bytes = _header(zf, info, src, key)
        if dtype.kind not in "fiu" or dtype.hasobject:
            raise UserError(f"dtype {dtype} is not numeric", source=src, field=key)
        if shape != want[key]:
            raise UserError(
                f"shape {list(shape)} does not match the case, expected {list(want[key])}", source=src, field=key
            )
        claimed = header_bytes + math.prod(shape) * dtype.itemsize
        if info.file_size != claimed:
            raise UserError(
                f"member {info.filename!r} inflates to {info.file_size} bytes, its header says {claimed}",
                source=src,
                field=key,
            )
        members[key] = info
    return members


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, src: str, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) from a member's .npy header; only its first bytes are decompressed."""
    try:
        with zf.open(info) as f:
            version = npy.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npy.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npy.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]} (numeric arrays are 1.0 or 2.0)")
            return tuple(shape), dtype, f.tell()
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        raise UserError(f"not a readable .npy member: {exc}", source=src, field=key) from None


def check_npz(case: Case) -> None:
    """Everything load_npz checks, nothing decompressed but the .npy headers: the file is where the case says
    (else: pass --inputs-root), its content has the digest the case id names, every member is a known key, once,
    with the case's shape, a numeric dtype, and an uncompressed size equal to its header's plus the data that
    header describes. Each failure is a one-line UserError naming the file and the key."""
    zf, _ = _open_checked(case)
    zf.close()


def load_npz(case: Case) -> dict[str, np.ndarray]:
    """The arrays a case's .npz file supplies, as stored (numeric dtypes), after check_npz's checks."""
    zf, members = _open_checked(case)
    with zf:
        out = {}
        for key, info in members.items():
            try:
                with zf.open(info) as f:
                    out[key] = npy.read_array(f, allow_pickle=False)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
                raise UserError(
                    f"cannot read: {exc}".splitlines()[0], source=str(case.inputs_path), field=key
                ) from None
        return out
