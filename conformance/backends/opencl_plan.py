"""How the OpenCL backend runs a case with the `cpu` kernel family: which kernels, on what work split (`choose`, a
pure function of the shape and the device's tuning: a KernelChoice), and the buffers and launches for them
(`plan`). The kernels are in kernels_cl/cpu_*.cl (the `cpu` family, after bn_common.h); opencl_run.py binds and
times them. `traffic`: the bytes those kernels move from memory (conformance bench's traffic-aware roofline;
Result.traffic)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .opencl_shared import (
    backward_buffers,
    inplace_note,
    input_buffers,
    running_args,
    upload,
)
from .opencl_traffic import device_cache, traffic

if TYPE_CHECKING:
    from .opencl_session import Session


def _split(n_items: int, per_group: int, groups_other: int, want_groups: int) -> tuple[int, int]:
    """(chunk, K): n_items cut into K chunks of `chunk`, at most per_group each, and smaller while fewer
    than want_groups work-groups (K x groups_other) would run."""
    chunk = max(1, min(per_group, n_items))
    while chunk > 1 and groups_other * -(-n_items // chunk) < want_groups:
        chunk = max(1, chunk // 2)
    return chunk, -(-n_items // chunk)


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


def choose_for(session: Session, case) -> KernelChoice:
    """choose() for a case on the session's device (its compute units and local memory as devices() lists them)."""
    extra = session.info.extra
    return choose(session.tuning, extra.get("compute_units", 1), extra.get("local_mem_size", 32 * 1024), case)


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


def traffic_for(session: Session, case) -> dict:
    """traffic() of the kernels plan() chooses for the case on the session's device (device_cache())."""
    how = choose_for(session, case)
    return traffic(how, case, device_cache(session), session.info.extra.get("compute_units", 1))
