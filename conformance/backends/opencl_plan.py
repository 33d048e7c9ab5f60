"""How the OpenCL backend runs a case with the `cpu` kernel family: which kernels, on what work split (`choose`, a
pure function of the shape and the device's tuning: a KernelChoice), and the buffers and launches for them
(`plan`). The kernels are in kernels_cl/cpu_*.cl (the `cpu` family, after bn_common.h); opencl_run.py binds and
times them. `traffic`: the bytes those kernels move from memory (conformance bench's traffic-aware roofline;
Result.traffic)."""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .opencl_session import Session


def _split(n_items: int, per_group: int, groups_other: int, want_groups: int) -> tuple[int, int]:
    """(chunk, K): n_items cut into K chunks of `chunk`, at most per_group each, and smaller while fewer
    than want_groups work-groups (K x groups_other) would run."""
    chunk = max(1, min(per_group, n_items))
    while chunk > 1 and groups_other * -(-n_items // chunk) < want_groups:
        chunk = max(1, chunk // 2)
    return chunk, -(-n_items // chunk)


COPY = "copy"  # a launch that copies a buffer: (COPY, None, None, (source, destination))
FUSED_TAB = 56  # table values per channel of the fused channel-first kernels (FUSED_TAB in cpu_base.cl)
TILE_TAB = 5  # table values per channel of a channel-last tile (shift or mean, two sums, two compensations)


@dataclass(frozen=True)
class KernelChoice:
    """The `cpu` kernels for a case and their work split (choose()).

    layout: "cf" (channel-first), "cl" (channel-last: tiles of channels x rows) or "cft" (channel-first training
    on rows off the 8-value grid, 7x7 maps, done by the fused kernels that treat a group of channels as a
    channel-last tile of channel_group x inner positions, so that large outputs can stream; its inference is the
    elementwise kernel of "cf")."""

    layout: str
    fused: bool  # statistics and elementwise (training), or the whole backward, in one launch
    channel_group: int | None  # cf, cft: whole channels one work-item of the fused kernels takes (cf unfused: 1)
    tile_width: int | None  # cl: channels side by side in a work-item's tile (W)
    chunk: int  # how a channel is cut: cf values per reduction work-item, cl rows per tile (fused: all of them)
    chunks: int  # chunks per channel (K; fused: 1)
    steps: int  # groups a work-item of the fused cf training kernel takes one after the other (tuning "ahead")
    nt: bool  # streaming stores for y and dx in the layout's kernels (see _streaming)
    nt_flat: bool  # streaming stores in the elementwise kernels bn_apply / bn_bwd_apply (rows of >= 8 values)


def choose(tune: dict, compute_units: int, local_bytes: int, case) -> KernelChoice:
    """The kernels for a case, from its shape and the device's tuning (pure: no OpenCL here).
    local_bytes: the device's local memory; the per-channel table of a work-group (TILE_TAB values per channel of a
    channel-last tile, FUSED_TAB per channel of a fused channel-first group) gets at most half of it. steps: while
    the fused channel-first training kernel writes one group's y it prefetches the next group's x; nt_flat: aligned
    8-value blocks across row ends."""
    item = np.dtype(case.dtype).itemsize
    table = (local_bytes // 2) // np.dtype(case.param_dtype).itemsize  # table values that fit
    want = tune["min_groups"] * compute_units
    if case.inner == 1:  # channel-last: tiles of W channels x chunk rows
        return _choose_cl(tune, case, item, table, want)
    C, m = case.channels, case.count
    chan_bytes = m * item * (2 if case.backward else 1)  # x, or x and dy, stay in cache between the two passes
    fused = want <= C and chan_bytes <= tune["fused_bytes"] and table >= FUSED_TAB
    inner = case.inner
    if fused and case.batch_stats and inner % 8:
        # rows of 7x7 or 14x14 values: runs off the 8-value grid, so the per-channel form cannot stream its
        # stores, while a tile of k channels (k inner a multiple of 8) can. Only then: where the data stays in
        # cache, or the rows are a multiple of 8 (28x28), the per-channel form is the faster one (measured side
        # by side).
        k = 8 // math.gcd(inner, 8)
        group = min(tune["group_bytes"] // chan_bytes, C // want, (table // TILE_TAB - 7) // inner) // k * k
        if group and _streaming(tune, case, (C * inner) % 8 == 0):
            nt_flat = _streaming(tune, case, tune["seg"] % 8 == 0)
            return KernelChoice(
                "cft", True, channel_group=group, tile_width=None, chunk=m, chunks=1, steps=1, nt=True, nt_flat=nt_flat
            )
    group = max(1, min(tune["group_bytes"] // chan_bytes, C // want, table // FUSED_TAB)) if fused else 1
    steps = max(1, min(tune["ahead"], -(-C // group) // want)) if fused and _large(tune, case) else 1
    chunk, K = _split(m, tune["chunk"], C, want)
    nt = _streaming(tune, case, case.inner % 8 == 0 and tune["seg"] % 8 == 0)
    nt_flat = _streaming(tune, case, case.inner >= 8 and tune["seg"] % 8 == 0)
    return KernelChoice(
        "cf", fused, channel_group=group, tile_width=None, chunk=chunk, chunks=K, steps=steps, nt=nt, nt_flat=nt_flat
    )


def _choose_cl(tune: dict, case, item: int, table: int, want: int) -> KernelChoice:
    """choose() for a channel-last case: tiles of W channels x chunk rows."""
    C, outer = case.channels, case.outer
    streams = 2 if case.backward else 1  # x, or x and dy, stay in cache between the two passes
    w_max = max(8, min(tune["tile_bytes"] // item, table // TILE_TAB // 8 * 8))
    w_fused = min(w_max, (C // want) // 8 * 8)  # at least `want` tiles of a multiple of 8 channels
    # pure inference has no reduction to fuse: whole rows (or the widest tiles) cut by rows, one sequential
    # run per work-item (256x1024 on PoCL: 73 vs 106 us, tiles of 128 channels over all rows)
    training = case.batch_stats or case.backward
    if training and w_fused >= 8 and outer * w_fused * item * streams <= tune["fused_bytes_cl"]:
        nt = _streaming(tune, case, C % 8 == 0)
        return KernelChoice(
            "cl", True, channel_group=None, tile_width=w_fused, chunk=outer, chunks=1, steps=1, nt=nt, nt_flat=False
        )
    W = min(C, w_max)
    chunk, K = _split(outer, max(1, tune["chunk_bytes"] // (W * item)), -(-C // W), want)
    nt = _streaming(tune, case, C % 8 == 0 and W % 8 == 0)
    return KernelChoice(
        "cl", False, channel_group=None, tile_width=W, chunk=chunk, chunks=K, steps=1, nt=nt, nt_flat=False
    )


def defines(case) -> tuple[str, ...]:
    """The program switches (build options) a case needs beyond the device's and its dtype's: () for a case with
    the defaults (no act, update_running as mode says), so it runs the program it always ran."""
    out = []
    if case.act != "none":
        out.append(f"-DACT_{case.act.upper()}")
    if case.mode == "train" and not case.updates_running:
        out.append("-DKEEP_RUNNING")
    elif case.mode != "train" and case.updates_running:
        out.append("-DNORM_RUNNING")
    return tuple(out)


def data_buffers(case) -> int:
    """Buffers of x's size plan() allocates: x and y, with backward dy and dx too; in place y is x's buffer and dx
    dy's, and backward reads a copy of x."""
    if not case.backward:
        return 1 if case.inplace else 2
    return 3 if case.inplace else 4


def inplace_note(case) -> list[str]:
    """The note of an in-place case, the same for every family."""
    if not case.inplace:
        return []
    return [
        "in place: y written over x's buffer"
        + (
            ", dx over dy's; backward read a copy of x made on the device at the start of the call"
            if case.backward
            else ""
        )
    ]


def notes(case) -> list[str]:
    """What a reader of the results should know about how plan() ran the case."""
    out = inplace_note(case)
    if case.act != "none" and case.backward:
        out.append(f"act={case.act}: backward in stages (partial sums, final, dx), act' of z recomputed from x")
    return out


def table_values(how: KernelChoice, case) -> int:
    """Values of the per-work-group table in local memory for the kernels `how` chose: TILE_TAB arrays of the
    tile's width (cl) or of the group's positions (cft), each padded to a multiple of 8, or FUSED_TAB per channel
    of a fused channel-first group (cf)."""
    if how.layout == "cl":
        return TILE_TAB * (-(-how.tile_width // 8) * 8)
    if how.layout == "cft":
        return TILE_TAB * (-(-how.channel_group * case.inner // 8) * 8)
    return FUSED_TAB * how.channel_group


def _streaming(tune: dict, case, aligned: bool) -> bool:
    """Streaming (non-temporal) stores for y and dx: where the device's tuning has them (nt_bytes), for data of
    at least nt_bytes (smaller outputs are better left in cache for whoever reads them next), and only where
    every 8-value store lands on a multiple of 8 values (rows, or tile columns, of a multiple of 8), since the
    instruction demands an address aligned to its size (the buffer's base is checked when the device opens)."""
    return aligned and _large(tune, case)


def _large(tune: dict, case) -> bool:
    """x has at least the tuning's nt_bytes (None: no size is): data well past the caches."""
    limit = tune.get("nt_bytes")
    return limit is not None and math.prod(case.shape) * np.dtype(case.dtype).itemsize >= limit


def backward_buffers(ctx, b: dict, launches: list, dy_buffer, inplace: bool, data_bytes: int, param_bytes: int):
    """The backward's buffers in b (dy, dx: dy's own buffer in place, dbeta, dgamma_sum, dgamma), for either family;
    returns the buffer backward reads x from: in place the forward overwrites x, so a copy taken first thing in
    the call."""
    import pyopencl as cl

    mf = cl.mem_flags
    b["dy"] = dy_buffer
    b["dx"] = b["dy"] if inplace else cl.Buffer(ctx, mf.WRITE_ONLY, data_bytes)
    x_bwd = b["x"]
    if inplace:
        b["x_saved"] = x_bwd = cl.Buffer(ctx, mf.READ_WRITE, data_bytes)
        launches.insert(0, (COPY, None, None, (b["x"], x_bwd)))
    for name in ("dbeta", "dgamma_sum", "dgamma"):
        b[name] = cl.Buffer(ctx, mf.READ_WRITE, param_bytes)
    return x_bwd


def choose_for(session: Session, case) -> KernelChoice:
    """choose() for a case on the session's device (its compute units and local memory as devices() lists them)."""
    extra = session.info.extra
    return choose(session.tuning, extra.get("compute_units", 1), extra.get("local_mem_size", 32 * 1024), case)


def upload(ctx, arr, flags=None):
    """A buffer initialised with arr (flags: read-only unless given), for either family."""
    import pyopencl as cl

    mf = cl.mem_flags
    flags = mf.READ_ONLY if flags is None else flags
    return cl.Buffer(ctx, flags | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(arr))


def input_buffers(ctx, inputs, data_in, param_bytes: int) -> dict:
    """The buffers every plan starts from, for either family: x (data_in: read-write in place, where it is y's
    buffer too), gamma, beta, the running statistics, and mean_w / invstd_w: the batch mean and invstd the
    statistics kernels leave for the elementwise kernels."""
    import pyopencl as cl

    mf = cl.mem_flags
    return {
        "x": upload(ctx, inputs.x, data_in),
        "gamma": upload(ctx, inputs.gamma),
        "beta": upload(ctx, inputs.beta),
        "running_mean": upload(ctx, inputs.running_mean, mf.READ_WRITE),
        "running_var": upload(ctx, inputs.running_var, mf.READ_WRITE),
        "mean_w": cl.Buffer(ctx, mf.READ_WRITE, param_bytes),
        "invstd_w": cl.Buffer(ctx, mf.READ_WRITE, param_bytes),
    }


def running_args(case, b: dict) -> tuple:
    """The profile's arguments of the statistics kernels, for either family: eps, the framework-style momentum,
    its direction, the running-variance estimator, the extra statistic; then the running statistics' buffers."""
    acc, i32 = np.dtype(case.param_dtype).type, np.int32
    p = case.momentum if case.momentum_dir == "old" else 1.0 - case.momentum  # framework-style parameter
    return (
        acc(case.eps),
        acc(p),
        i32(case.momentum_dir == "new"),
        i32(case.running_var == "unbiased"),
        i32(case.stats == "invstd"),
        b["running_mean"],
        b["running_var"],
    )


@dataclass(frozen=True)
class _Work:
    """What the launches of one case share (plan()): the kernels chosen, its sizes, the (global, local) work
    splits, and the work-group's table in local memory."""

    how: KernelChoice
    n: int  # values of x
    seg: int  # values of a row one elementwise work-item handles (tuning)
    param_bytes: int  # bytes of a per-channel buffer
    elementwise: tuple  # channel-first: flat segments of seg values
    reduce_cf: tuple  # channel-first reductions: (chunk, channel)
    per_channel: tuple  # one work-item per channel, work-groups of apply_ls
    tiles: tuple | None  # channel-last: (tile of W channels, chunk of rows)
    groups: tuple | None  # fused channel-first: a group of channels per work-item
    stepped: tuple | None  # fused channel-first training: `steps` groups per work-item
    table: object  # cl.LocalMemory: the work-group's table (table_values)


def _work(case, how: KernelChoice, tune: dict) -> _Work:
    import pyopencl as cl

    C, n, als, seg = case.channels, math.prod(case.shape), tune["apply_ls"], tune["seg"]
    if how.layout == "cl":
        tiles, groups, stepped = ((-(-C // how.tile_width), how.chunks), (1, 1)), None, None
    else:
        G = how.channel_group
        tiles, groups, stepped = None, ((-(-C // G),), (1,)), ((-(-C // (G * how.steps)),), (1,))
    return _Work(
        how=how,
        n=n,
        seg=seg,
        param_bytes=C * np.dtype(case.param_dtype).itemsize,
        elementwise=((-(-n // seg),), (1,)),
        reduce_cf=((how.chunks, C), (1, 1)),
        per_channel=((-(-C // als) * als,), (als,)),
        tiles=tiles,
        groups=groups,
        stepped=stepped,
        table=cl.LocalMemory(table_values(how, case) * np.dtype(case.param_dtype).itemsize),
    )


def plan(session: Session, case, inputs):
    """Buffers (name -> cl.Buffer) and launches [(kernel name, global, local, args)] for the whole operation."""
    import pyopencl as cl

    ctx, mf = session.context, cl.mem_flags
    how = choose_for(session, case)
    work = _work(case, how, session.tuning)
    data_bytes = work.n * np.dtype(case.dtype).itemsize
    data_in = mf.READ_WRITE if case.inplace else mf.READ_ONLY  # in place, x's buffer is y's too (dy's dx's)
    b = input_buffers(ctx, inputs, data_in, work.param_bytes)
    b["part"] = cl.Buffer(ctx, mf.READ_WRITE, how.chunks * work.param_bytes * 2)
    b["y"] = b["x"] if case.inplace else cl.Buffer(ctx, mf.WRITE_ONLY, data_bytes)
    launches = []
    stats = _forward(ctx, case, work, b, launches)
    if case.backward:
        dy = upload(ctx, inputs.dy, data_in)
        x_bwd = backward_buffers(ctx, b, launches, dy, case.inplace, data_bytes, work.param_bytes)
        launches += _backward(case, work, b, stats, x_bwd)
    return b, launches


def _forward(ctx, case, work: _Work, b: dict, launches: list) -> tuple:
    """Appends the forward's launches: the statistics kernels where the case takes batch statistics (training;
    inference that updates the running statistics, whose program then hands the elementwise kernels the running
    statistics as they were: see defines()), then the elementwise kernel unless one fused launch did it all.
    Returns what the elementwise and backward kernels normalise with: (mean, invstd or var, running?, eps)."""
    import pyopencl as cl

    eps = np.dtype(case.param_dtype).type(case.eps)
    if case.batch_stats:
        b["mean"] = cl.Buffer(ctx, cl.mem_flags.WRITE_ONLY, work.param_bytes)
        b["stat"] = cl.Buffer(ctx, cl.mem_flags.WRITE_ONLY, work.param_bytes)
        launches += _statistics(case, work, b)
        stats = (b["mean_w"], b["invstd_w"], np.int32(0), eps)  # the batch mean and invstd (NORM_RUNNING: running)
    else:  # inference reads the running statistics directly: one launch
        stats = (b["running_mean"], b["running_var"], np.int32(1), eps)
    if not (case.batch_stats and work.how.fused):
        launches.append(_apply(case, work, b, stats))
    return stats


def _statistics(case, work: _Work, b: dict) -> list:
    """The statistics launches: one fused kernel (statistics, then y), or partial sums -> final (per channel)."""
    u32, how, tab = np.uint32, work.how, work.table
    C, inner, outer, m = u32(case.channels), u32(case.inner), u32(case.outer), u32(case.count)
    stats_args = running_args(case, b)
    outs = (b["mean"], b["stat"], b["mean_w"], b["invstd_w"])
    fused_args = (b["gamma"], b["beta"], np.int32(case.fix_gamma), *stats_args, *outs, np.int32(how.nt), tab)
    xy = (b["x"], b["y"])
    if how.layout == "cft":
        return [("bn_fused_train_cft", *work.groups, (*xy, C, inner, outer, u32(how.channel_group), *fused_args))]
    if how.fused and how.layout == "cl":
        tile = (u32(how.tile_width), u32(how.chunk))
        return [("bn_fused_train_cl", *work.tiles, (*xy, C, outer, *tile, *fused_args))]
    if how.fused:
        group = (u32(how.channel_group), u32(how.steps))
        return [("bn_fused_train_cf", *work.stepped, (*xy, C, inner, m, *group, *fused_args))]
    if how.layout == "cl":
        tile = (u32(how.tile_width), u32(how.chunk))
        partial = ("bn_stats_partial_cl", *work.tiles, (b["x"], C, outer, *tile, b["part"], tab))
    else:
        partial = ("bn_stats_partial_cf", *work.reduce_cf, (b["x"], C, inner, m, u32(how.chunk), b["part"]))
    final_args = (b["part"], b["x"], C, inner, u32(how.chunks), m, *stats_args, *outs)
    return [partial, ("bn_stats_final", *work.per_channel, final_args)]


def _apply(case, work: _Work, b: dict, stats: tuple):
    """The elementwise forward launch: y from x and the statistics."""
    u32, how = np.uint32, work.how
    C = u32(case.channels)
    tail = (*stats, b["gamma"], b["beta"], np.int32(case.fix_gamma))
    if how.layout == "cl":
        tile = (u32(how.tile_width), u32(how.chunk))
        return (
            "bn_apply_cl",
            *work.tiles,
            (b["x"], b["y"], C, u32(case.outer), *tile, *tail, np.int32(how.nt), work.table),
        )
    flat = (np.uint64(work.n), u32(case.inner), C, u32(work.seg))
    return ("bn_apply", *work.elementwise, (b["x"], b["y"], *flat, *tail, np.int32(how.nt_flat)))


def _backward(case, work: _Work, b: dict, stats: tuple, x_bwd) -> list:
    """The backward's launches: one fused kernel, or partial sums -> final -> dx; x read from x_bwd (in place: the
    copy taken first thing in the call)."""
    u32, i32, how = np.uint32, np.int32, work.how
    act = case.act != "none"
    train = case.normalize_with == "batch"  # normalised with the batch statistics: the full training backward
    # an act program: beta for z in the dx kernels
    dx_args = (
        u32(case.count),
        *stats,
        b["gamma"],
        i32(case.fix_gamma),
        b["dbeta"],
        b["dgamma_sum"],
        i32(train),
        *((b["beta"],) if act else ()),
    )
    xs = (x_bwd, b["dy"], b["dx"])
    if how.fused and not act:  # an act program has no fused backward kernels
        C, inner, nt, tab = u32(case.channels), u32(case.inner), i32(how.nt), work.table
        if how.layout == "cft":
            shape = (C, inner, u32(case.outer), u32(how.channel_group))
            return [("bn_fused_bwd_cft", *work.groups, (*xs, *shape, *dx_args, b["dgamma"], nt, tab))]
        if how.layout == "cl":
            shape = (C, u32(how.tile_width), u32(how.chunk))
            return [("bn_fused_bwd_cl", *work.tiles, (*xs, *shape, *dx_args, b["dgamma"], nt, tab))]
        shape = (C, inner, u32(how.channel_group))
        return [("bn_fused_bwd_cf", *work.groups, (*xs, *shape, *dx_args, b["dgamma"], nt, tab))]
    return _staged_backward(case, work, b, stats, xs, dx_args)


def _staged_backward(case, work: _Work, b: dict, stats: tuple, xs: tuple, dx_args: tuple) -> list:
    """partial sums -> final (per channel) -> dx; an act program's partial sums kernels get what makes z."""
    u32, i32, how, tab = np.uint32, np.int32, work.how, work.table
    C, inner, outer, m = u32(case.channels), u32(case.inner), u32(case.outer), u32(case.count)
    act = case.act != "none"
    x_bwd, dy = xs[0], xs[1]
    zf = (*stats[1:], b["gamma"], b["beta"], i32(case.fix_gamma)) if act else ()
    sums = (b["dbeta"], b["dgamma_sum"], b["dgamma"])
    final = ("bn_bwd_final", *work.per_channel, (b["part"], C, u32(how.chunks), *stats[1:], i32(case.fix_gamma), *sums))
    if how.layout == "cl":
        tile = (u32(how.tile_width), u32(how.chunk))
        partial_args = (x_bwd, dy, C, outer, *tile, stats[0], b["part"], tab, *zf)
        dx = ("bn_bwd_apply_cl", *work.tiles, (*xs, C, outer, *tile, *dx_args, i32(how.nt), tab))
        return [("bn_bwd_partial_cl", *work.tiles, partial_args), final, dx]
    partial_args = (x_bwd, dy, C, inner, m, u32(how.chunk), stats[0], b["part"], *zf)
    flat = (np.uint64(work.n), inner, C, u32(work.seg))
    dx = ("bn_bwd_apply", *work.elementwise, (*xs, *flat, *dx_args, i32(0) if act else i32(how.nt_flat)))
    return [("bn_bwd_partial_cf", *work.reduce_cf, partial_args), final, dx]


# ---- traffic: the bytes the chosen kernels move (conformance bench's traffic-aware roofline) -----------------
def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.3g} MiB"


def reread(held: float, cache_bytes: int, what: str) -> tuple[int, str]:
    """(reads, words) of data a launch reduces and a later pass reads again: once where `held` bytes (what is read
    between the first read of a value and its second) fit the cache, else twice (the second pass finds it gone:
    data walked in the same order evicts itself under LRU)."""
    if cache_bytes and held <= cache_bytes:
        return 1, f"{what} {_mib(held)} <= {_mib(cache_bytes)} cache"
    return 2, f"{what} {_mib(held)} > {_mib(cache_bytes)} cache" if cache_bytes else f"{what}, no cache reported"


def summed(case, parts: list[tuple[str, int, int, int, str]]) -> dict:
    """The traffic dict from passes (name, reads of x, reads of dy, writes of x's size, words): bytes = every read
    and write of an array of x's size (parameter-sized arrays, C values, are left out); "parts": the passes'
    [name, reads of x, reads of dy, writes]."""
    n = math.prod(case.shape) * np.dtype(case.dtype).itemsize
    rx, rdy, wr = (sum(p[k] for p in parts) for k in (1, 2, 3))
    return {
        "bytes": (rx + rdy + wr) * n,
        "reads_x": rx,
        "reads_dy": rdy,
        "writes": wr,
        "why": "; ".join(f"{p[0]} {p[4]}" for p in parts),
        "parts": [list(p[:4]) for p in parts],
    }


def _times(r: int) -> str:
    return "once" if r == 1 else "twice"


def traffic(how: KernelChoice, case, cache_bytes: int, in_flight: int) -> dict:
    """What the `cpu` kernels `how` (choose()) move from memory in one call of the case: {"bytes", "reads_x",
    "reads_dy", "writes", "why", "parts"} (pure; see summed()). y (and dx) are written once; inference reads x
    once. A training pass that reduces data and then reads it again reads it once where it is still in the cache
    (cache_bytes: device_cache(), from CL_DEVICE_GLOBAL_MEM_CACHE_SIZE) when read again, else twice:
      fused (one launch): the work-items in flight (at most in_flight, the compute units: one work-item per
          work-group) hold their groups of channels (x, plus dy for backward; two groups where a work-item
          prefetches its next one, `steps` > 1) between the two reads;
      staged (statistics launch, then the elementwise one): the whole of x (backward: x and dy) is read between.
    In place with backward: one more read and write of x (the copy the call takes first)."""
    item = np.dtype(case.dtype).itemsize
    n = math.prod(case.shape) * item
    C = case.channels
    if how.layout == "cl":  # a tile: W channels x all rows (fused: one chunk)
        W = how.tile_width
        per_item, items = case.outer * W * item, -(-C // W) * how.chunks
    else:  # cf, cft: a group of G channels
        G = how.channel_group
        per_item, items = G * case.count * item, -(-C // G)
    live = min(items, max(1, in_flight))

    def fused(what: str, nbytes: int) -> tuple[int, str]:
        return reread(live * nbytes, cache_bytes, f"{live} work-items x {_mib(nbytes)} of {what} =")

    parts = []
    if case.inplace and case.backward:
        parts.append(("copy of x:", 1, 0, 1, "x read once, written once"))
    if not case.batch_stats:
        parts.append(("forward apply:", 1, 0, 1, "x read once"))
    else:
        r, words = fused("x", per_item * (2 if how.steps > 1 else 1)) if how.fused else reread(n, cache_bytes, "x")
        parts.append((f"forward {'fused' if how.fused else 'staged'},", r, 0, 1, f"{words}: x read {_times(r)}"))
    if case.backward:
        one = how.fused and case.act == "none"  # an act program has no fused backward
        r, words = fused("x + dy", 2 * per_item) if one else reread(2 * n, cache_bytes, "x + dy")
        parts.append((f"backward {'fused' if one else 'staged'},", r, r, 1, f"{words}: x, dy read {_times(r)}"))
    return summed(case, parts)


def device_cache(session: Session) -> int:
    """The cache a second pass may find its data in: CL_DEVICE_GLOBAL_MEM_CACHE_SIZE; on a CPU device the larger
    of it and the host's last-level cache (Intel's CPU runtime reports one core's L2, 1 MiB here; PoCL the L3)."""
    cache = int(getattr(session.device, "global_mem_cache_size", 0) or 0)
    if session.properties.get("device_type") == "cpu":
        cache = max(cache, host_llc()[0])
    return cache


@lru_cache(maxsize=1)
def host_llc() -> tuple[int, str]:
    """(bytes, where from) of the host's last-level cache: the highest-level data or unified cache of cpu0 in
    sysfs, else sysconf's LEVEL3 (then LEVEL2) cache size; (0, "unknown") where neither says."""
    best = (0, 0)
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            level, kind, size = (Path(d, f).read_text().strip() for f in ("level", "type", "size"))
            level = int(level)
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:].upper(), 1)
        nbytes = int(size.rstrip("KMGkmg") or 0) * scale
        best = max(best, (level, nbytes))
    if best[1]:
        return best[1], f"host L{best[0]}, sysfs"
    for level in (3, 2):
        try:
            nbytes = os.sysconf(f"SC_LEVEL{level}_CACHE_SIZE")
        except (ValueError, OSError):
            continue
        if nbytes and nbytes > 0:
            return int(nbytes), f"host L{level}, sysconf"
    return 0, "unknown"


def traffic_for(session: Session, case) -> dict:
    """traffic() of the kernels plan() chooses for the case on the session's device (device_cache())."""
    how = choose_for(session, case)
    return traffic(how, case, device_cache(session), session.info.extra.get("compute_units", 1))
