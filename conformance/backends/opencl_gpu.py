"""How the OpenCL backend runs a case with the `gpu` kernel family (kernels_cl/gpu_base.cl, gpu_fwd.cl,
gpu_bwd.cl, after bn_common.h): `choose`, a pure function of the shape, the device and its tuning (a GpuChoice),
and `plan`, the buffers and launches, in the structure of opencl_plan.plan (opencl_run.py binds and times them).

Work-groups of `wg` work-items (tuning; a power of two within the device's limit) take a tile of TW channels
(1 channel-first; channel-last the next power of two of C, at most `lanes`) and a chunk of L of its positions:
neighbouring work-items read neighbouring addresses in both layouts. A channel is cut into K chunks until the
device has `chunks_per_cu` work-groups per compute unit (each work-item keeping at least `min_per_item`
positions), so few channels still fill it. Launches:
  forward, batch statistics: fused (one launch: a work-group per tile over every position, statistics then y)
      where the problem has at most `single_launch_max` elements (K is then 1), or K is 1 anyway (the tiles
      fill the device) and a tile's data (x, plus dy) is at most `tile_max` values; else partial (tiles x K)
      -> final (one work-item per channel, records merged in order) -> apply (tiles x K)
  forward, running statistics only: apply, one launch
  backward: fused likewise (one launch), else partial -> final -> dx; normalised with the running statistics,
      dx needs no sum and the partial (or fused) kernel writes it: 2 launches (1 fused)
No floating-point atomics anywhere: every reduction is a fixed tree or a fixed order, so the same device gives
the same bits on every run. In place as in opencl_plan: y over x, dx over dy, backward reads a copy of x taken by
the call's first command."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .opencl_shared import backward_buffers, inplace_note, input_buffers, running_args, upload
from .opencl_traffic import device_cache, mib, reread, summed, times

if TYPE_CHECKING:
    from .opencl_session import Session

SOURCES = ("gpu_base.cl", "gpu_fwd.cl", "gpu_bwd.cl")  # after bn_common.h, in this order
KERNELS = (
    "gbn_fwd_fused",
    "gbn_fwd_partial",
    "gbn_fwd_final",
    "gbn_apply",
    "gbn_bwd_fused",
    "gbn_bwd_partial",
    "gbn_bwd_final",
    "gbn_bwd_dx",
)
# the gpu entries of opencl_tuning (GPU_DEFAULT there); what a session's tuning lacks is taken from here
DEFAULTS = {
    "wg": 256,
    "chunks_per_cu": 4,
    "single_launch_max": 65536,
    "lanes": 64,
    "min_per_item": 8,
    "tile_max": 1 << 18,
}
FINAL_LS = 64  # work-group size of the per-channel merge kernels


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, int(n)).bit_length() - 1)


def _pow2_ceil(n: int) -> int:
    return 1 << (max(1, int(n)) - 1).bit_length()


def tuning(session_tune: dict | None) -> dict:
    """The gpu family's parameters: the session's (tuning table and the run's overrides), else DEFAULTS."""
    got = dict(DEFAULTS)
    got.update({k: v for k, v in (session_tune or {}).items() if k in DEFAULTS and v is not None})
    return got


@dataclass(frozen=True)
class GpuChoice:
    """The `gpu` kernels' work split for a case (choose())."""

    work_group_size: int  # work-items per work-group (tuning `wg`, within the device's limit; a power of two)
    tile_width: int  # channels side by side in a work-group's tile (TW): 1 channel-first
    tiles: int  # tiles across the channels
    chunks: int  # chunks each channel is cut into (K)
    chunk_len: int  # positions of a channel per chunk (L)
    fused: bool  # statistics and y (backward: sums and dx) in one launch, a work-group per tile


def choose(tune: dict | None, compute_units: int, max_wg: int, case) -> GpuChoice:
    """The work split of a case on a device of compute_units units whose work-groups may have max_wg
    work-items."""
    tune = tuning(tune)
    wg = _pow2_floor(min(int(tune["wg"]), int(max_wg)))
    C, m = case.channels, case.count
    tw = min(_pow2_ceil(C), _pow2_floor(tune["lanes"]), wg) if case.inner == 1 else 1
    rg = wg // tw
    tiles = -(-C // tw)
    want = max(1, int(tune["chunks_per_cu"]) * max(1, int(compute_units)))
    k_fill = -(-want // tiles)
    k_max = max(1, m // (rg * max(1, int(tune["min_per_item"]))))
    streams = 2 if case.backward else 1
    small = math.prod(case.shape) <= tune["single_launch_max"]  # the whole problem: one launch, one chunk
    K = 1 if small else max(1, min(k_fill, k_max))
    L = -(-m // K)
    K = -(-m // L)
    fused = small or (K == 1 and m * tw * streams <= tune["tile_max"])
    return GpuChoice(work_group_size=wg, tile_width=tw, tiles=tiles, chunks=K, chunk_len=L, fused=fused)


def max_work_group(session: Session) -> int:
    """The most work-items a work-group may have on the session's device (in its first dimension too)."""
    return min(int(session.device.max_work_group_size), int(session.device.max_work_item_sizes[0]))


def notes(case) -> list[str]:
    """What a reader of the results should know about how plan() ran the case."""
    out = inplace_note(case)
    if case.act != "none" and case.backward:
        out.append(f"act={case.act}: act' of z recomputed from x in the backward sums and dx")
    return out


def plan(session: Session, case, inputs):
    """Buffers (name -> cl.Buffer) and launches [(kernel name, global, local, args)] for the whole operation."""
    import pyopencl as cl

    ctx, mf = session.context, cl.mem_flags
    work = _work(session, case)
    data_bytes = math.prod(case.shape) * np.dtype(case.dtype).itemsize
    data_in = mf.READ_WRITE if case.inplace else mf.READ_ONLY
    b = input_buffers(ctx, inputs, data_in, work.param_bytes)
    b["y"] = b["x"] if case.inplace else cl.Buffer(ctx, mf.WRITE_ONLY, data_bytes)
    if not work.how.fused:
        b["part"] = cl.Buffer(ctx, mf.READ_WRITE, work.how.chunks * work.param_bytes * 2)
    launches = []
    stats = _forward(ctx, case, work, b, launches)
    if case.backward:
        dy = upload(ctx, inputs.dy, data_in)
        x_bwd = backward_buffers(ctx, b, launches, dy, case.inplace, data_bytes, work.param_bytes)
        launches += _backward(case, work, b, stats, x_bwd)
    return b, launches


@dataclass(frozen=True)
class _Work:
    """What the launches of one case share (plan()): the kernels chosen and their work splits."""

    how: GpuChoice
    grid: tuple  # (global, local): work-groups of work_group_size work-items over (tile, chunk)
    per_channel: tuple  # the per-channel merge kernels: one work-item per channel
    tree: object  # cl.LocalMemory: the reductions' tree of two values per work-item
    shape: tuple  # the kernels' shape arguments: channels, inner, count, tile width, chunk length (uint32)
    param_bytes: int  # bytes of a per-channel buffer


def _work(session: Session, case) -> _Work:
    import pyopencl as cl

    max_wg = max_work_group(session)
    how = choose(session.tuning, session.info.extra.get("compute_units", 1), max_wg, case)
    wg, u32 = how.work_group_size, np.uint32
    psize = np.dtype(case.param_dtype).itemsize
    fls = _pow2_floor(min(FINAL_LS, max_wg))
    return _Work(
        how=how,
        grid=((how.tiles * wg, how.chunks), (wg, 1)),  # work-group (tile, chunk)
        per_channel=((-(-case.channels // fls) * fls,), (fls,)),
        tree=cl.LocalMemory(2 * wg * psize),
        shape=(u32(case.channels), u32(case.inner), u32(case.count), u32(how.tile_width), u32(how.chunk_len)),
        param_bytes=case.channels * psize,
    )


def _forward(ctx, case, work: _Work, b: dict, launches: list) -> tuple:
    """Appends the forward's launches: the statistics (fused with y, or partial -> final) where the case takes
    batch statistics, then apply unless fused. Returns what apply and backward normalise with: (mean, invstd or
    var, running?, eps)."""
    import pyopencl as cl

    u32, i32 = np.uint32, np.int32
    eps = np.dtype(case.param_dtype).type(case.eps)
    affine = (b["gamma"], b["beta"], i32(case.fix_gamma))
    if case.batch_stats:
        b["mean"] = cl.Buffer(ctx, cl.mem_flags.WRITE_ONLY, work.param_bytes)
        b["stat"] = cl.Buffer(ctx, cl.mem_flags.WRITE_ONLY, work.param_bytes)
        stats_args = (*running_args(case, b), b["mean"], b["stat"], b["mean_w"], b["invstd_w"])
        if work.how.fused:
            args = (b["x"], b["y"], *work.shape, *affine, *stats_args, work.tree)
            launches.append(("gbn_fwd_fused", *work.grid, args))
        else:
            b["shift"] = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, work.param_bytes)
            launches.append(("gbn_fwd_partial", *work.grid, (b["x"], *work.shape, b["part"], b["shift"], work.tree)))
            sizes = (u32(case.channels), u32(case.inner), u32(work.how.chunks), u32(case.count))
            launches.append(("gbn_fwd_final", *work.per_channel, (b["part"], b["shift"], b["x"], *sizes, *stats_args)))
        stats = (b["mean_w"], b["invstd_w"], i32(0), eps)  # batch mean and invstd (NORM_RUNNING: the running ones)
    else:  # inference reads the running statistics directly: one launch
        stats = (b["running_mean"], b["running_var"], i32(1), eps)
    if not (case.batch_stats and work.how.fused):
        launches.append(("gbn_apply", *work.grid, (b["x"], b["y"], *work.shape, *stats, *affine)))
    return stats


def _backward(case, work: _Work, b: dict, stats: tuple, x_bwd) -> list:
    """The backward's launches: fused (one launch), else partial -> final -> dx (no dx launch where the case is
    normalised with the running statistics: the partial kernel writes dx)."""
    u32, i32 = np.uint32, np.int32
    train = case.normalize_with == "batch"
    affine = (b["gamma"], b["beta"], i32(case.fix_gamma))
    bwd = (x_bwd, b["dy"], b["dx"], *work.shape, *stats, *affine, i32(train))
    if work.how.fused:
        return [("gbn_bwd_fused", *work.grid, (*bwd, b["dbeta"], b["dgamma_sum"], b["dgamma"], work.tree))]
    sums = (b["dbeta"], b["dgamma_sum"], b["dgamma"])
    final = (b["part"], u32(case.channels), u32(work.how.chunks), *stats[1:], i32(case.fix_gamma), *sums)
    launches = [
        ("gbn_bwd_partial", *work.grid, (*bwd, b["part"], work.tree)),
        ("gbn_bwd_final", *work.per_channel, final),
    ]
    if train:
        launches.append(("gbn_bwd_dx", *work.grid, (*bwd, b["dbeta"], b["dgamma_sum"])))
    return launches


# ---- traffic: the bytes the chosen kernels move (conformance bench's traffic-aware roofline) -----------------
RESIDENT_ITEMS = 2048  # work-items resident per compute unit of a GPU (a common limit; OpenCL does not report it)


def traffic(how: GpuChoice, case, cache_bytes: int, in_flight_groups: int) -> dict:
    """What the `gpu` kernels `how` (choose()) move from memory in one call of the case: {"bytes", "reads_x",
    "reads_dy", "writes", "why", "parts"} (pure; the cpu family's rules, opencl_traffic.traffic). y (and dx)
    written once; inference reads x once; a training pass reads x (backward: x and dy) once where it is still in cache
    (cache_bytes: opencl_traffic.device_cache()) when read again, else twice:
      fused (one launch, a work-group per tile over every position): the work-groups in flight (at most
          in_flight_groups) hold their tiles (L x TW values; backward x and dy) between the two reads;
      staged (partial -> final -> apply or dx): the whole of x (backward: x and dy) is read between; backward
          normalised with the running statistics reads x and dy once (the partial kernel writes dx).
    In place with backward: one more read and write of x (the copy the call takes first)."""
    item = np.dtype(case.dtype).itemsize
    n = math.prod(case.shape) * item
    tile = how.chunk_len * how.tile_width * item
    live = min(how.tiles * how.chunks, max(1, in_flight_groups))

    def fused(what: str, nbytes: int) -> tuple[int, str]:
        return reread(live * nbytes, cache_bytes, f"{live} work-groups x {mib(nbytes)} of {what} =")

    parts = []
    if case.inplace and case.backward:
        parts.append(("copy of x:", 1, 0, 1, "x read once, written once"))
    if not case.batch_stats:
        parts.append(("forward apply:", 1, 0, 1, "x read once"))
    else:
        r, words = fused("x", tile) if how.fused else reread(n, cache_bytes, "x")
        parts.append((f"forward {'fused' if how.fused else 'staged'},", r, 0, 1, f"{words}: x read {times(r)}"))
    if case.backward:
        if case.normalize_with != "batch":  # dx needs no sums: the partial (or fused) kernel writes it
            r, words = 1, "dx without sums"
        elif how.fused:
            r, words = fused("x + dy", 2 * tile)
        else:
            r, words = reread(2 * n, cache_bytes, "x + dy")
        kind = "fused" if how.fused else "staged"
        parts.append((f"backward {kind},", r, r, 1, f"{words}: x, dy read {times(r)}"))
    return summed(case, parts)


def traffic_for(session: Session, case) -> dict:
    """traffic() of the kernels plan() chooses for the case on the session's device (its cache:
    opencl_traffic.device_cache): work-groups in flight are RESIDENT_ITEMS / wg per compute unit on a GPU, one per
    compute unit on any other device."""
    units = session.info.extra.get("compute_units", 1)
    how = choose(session.tuning, units, max_work_group(session), case)
    per_unit = max(1, RESIDENT_ITEMS // how.work_group_size) if session.properties.get("device_type") == "gpu" else 1
    return traffic(how, case, device_cache(session), units * per_unit)
