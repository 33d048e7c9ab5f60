"""How the OpenCL backend runs a case with the `gpu` kernel family (kernels_cl/gpu_base.cl, gpu_fwd.cl,
gpu_bwd.cl, after bn_common.h): `choose`, a pure function of the shape, the device and its tuning, and `plan`,
the buffers and launches, in the structure of opencl_plan.plan (opencl.py builds, binds and times them).

Work-groups of `wg` work-items (tuning; a power of two within the device's limit) take a tile of TW channels
(1 channel-first; channel-last the next power of two of C, at most `lanes`) and a chunk of L of its positions:
neighbouring work-items read neighbouring addresses in both layouts. A channel is cut into K chunks until the
device has `chunks_per_cu` work-groups per compute unit (each work-item keeping at least `min_per_item`
positions), so few channels still fill it. Launches:
  forward, batch statistics: fused (one launch: a work-group per tile over every position, statistics then y)
      where the problem has at most `single_launch_max` elements (K is then 1), or K is 1 anyway (the tiles
      fill the device) and a tile's data (x, plus dy) is at most `tile_max` values; else partial (tiles x K) -> final (one work-item per channel, records merged in order)
      -> apply (tiles x K)
  forward, running statistics only: apply, one launch
  backward: fused likewise (one launch), else partial -> final -> dx; normalised with the running statistics,
      dx needs no sum and the partial (or fused) kernel writes it: 2 launches (1 fused)
No floating-point atomics anywhere: every reduction is a fixed tree or a fixed order, so the same device gives
the same bits on every run. In place as in opencl_plan: y over x, dx over dy, backward reads a copy of x taken by
the call's first command."""

from __future__ import annotations

import math

import numpy as np

from .opencl_plan import (  # noqa: F401 - the same program switches as the cpu family
    COPY,
    _mib,
    _times,
    backward_buffers,
    defines,
    device_cache,
    inplace_note,
    reread,
    summed,
)  # shared with the cpu family

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


def choose(tune: dict, compute_units: int, max_wg: int, case) -> dict:
    """{"wg", "TW" (channels per tile), "tiles", "K" (chunks per channel), "L" (positions per chunk), "fused"}
    for a case on a device of compute_units units whose work-groups may have max_wg work-items."""
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
    return {"wg": wg, "TW": tw, "tiles": tiles, "K": K, "L": L, "fused": fused}


def notes(case) -> list[str]:
    """What a reader of the results should know about how plan() ran the case."""
    out = inplace_note(case)
    if case.act != "none" and case.backward:
        out.append(f"act={case.act}: act' of z recomputed from x in the backward sums and dx")
    return out


def plan(session, case, inputs):
    """Buffers (name -> cl.Buffer) and launches [(kernel name, global, local, args)] for the whole operation."""
    import pyopencl as cl

    ctx = session["context"]
    mf = cl.mem_flags
    acc = np.dtype(case.param_dtype).type
    u32, i32 = np.uint32, np.int32
    n, C, inner, m = math.prod(case.shape), case.channels, case.inner, case.count
    data_bytes = n * np.dtype(case.dtype).itemsize
    psize = np.dtype(case.param_dtype).itemsize
    param_bytes = C * psize
    extra = session["info"].extra
    max_wg = min(int(session["device"].max_work_group_size), int(session["device"].max_work_item_sizes[0]))
    how = choose(session.get("tuning"), extra.get("compute_units", 1), max_wg, case)
    wg, TW, K, L, fused = how["wg"], how["TW"], how["K"], how["L"], how["fused"]
    grid = ((how["tiles"] * wg, K), (wg, 1))  # work-group (tile, chunk)
    fls = _pow2_floor(min(FINAL_LS, max_wg))
    per_channel = ((-(-C // fls) * fls,), (fls,))
    red = cl.LocalMemory(2 * wg * psize)  # the tree of two values per work-item
    shape_args = (u32(C), u32(inner), u32(m), u32(TW), u32(L))

    def upload(arr, flags=mf.READ_ONLY):
        return cl.Buffer(ctx, flags | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(arr))

    inplace = case.inplace
    data_in = mf.READ_WRITE if inplace else mf.READ_ONLY
    b = {
        "x": upload(inputs.x, data_in),
        "gamma": upload(inputs.gamma),
        "beta": upload(inputs.beta),
        "running_mean": upload(inputs.running_mean, mf.READ_WRITE),
        "running_var": upload(inputs.running_var, mf.READ_WRITE),
        "mean_w": cl.Buffer(ctx, mf.READ_WRITE, param_bytes),
        "invstd_w": cl.Buffer(ctx, mf.READ_WRITE, param_bytes),
    }
    b["y"] = b["x"] if inplace else cl.Buffer(ctx, mf.WRITE_ONLY, data_bytes)
    if not fused:
        b["part"] = cl.Buffer(ctx, mf.READ_WRITE, K * param_bytes * 2)
    eps = acc(case.eps)
    batch, train = case.batch_stats, case.normalize_with == "batch"
    p = case.momentum if case.momentum_dir == "old" else 1.0 - case.momentum  # framework-style parameter
    launches = []
    if batch:
        b["mean"] = cl.Buffer(ctx, mf.WRITE_ONLY, param_bytes)
        b["stat"] = cl.Buffer(ctx, mf.WRITE_ONLY, param_bytes)
        stats_args = (
            eps,
            acc(p),
            i32(case.momentum_dir == "new"),
            i32(case.running_var == "unbiased"),
            i32(case.stats == "invstd"),
            b["running_mean"],
            b["running_var"],
            b["mean"],
            b["stat"],
            b["mean_w"],
            b["invstd_w"],
        )
        if fused:
            launches.append(
                (
                    "gbn_fwd_fused",
                    *grid,
                    (b["x"], b["y"], *shape_args, b["gamma"], b["beta"], i32(case.fix_gamma), *stats_args, red),
                )
            )
        else:
            b["shift"] = cl.Buffer(ctx, mf.READ_WRITE, param_bytes)
            launches.append(("gbn_fwd_partial", *grid, (b["x"], *shape_args, b["part"], b["shift"], red)))
            launches.append(
                (
                    "gbn_fwd_final",
                    *per_channel,
                    (b["part"], b["shift"], b["x"], u32(C), u32(inner), u32(K), u32(m), *stats_args),
                )
            )
        stats = (b["mean_w"], b["invstd_w"], i32(0), eps)  # batch mean and invstd (NORM_RUNNING: the running ones)
    else:  # inference reads the running statistics directly: one launch
        stats = (b["running_mean"], b["running_var"], i32(1), eps)
    if not (batch and fused):
        launches.append(
            ("gbn_apply", *grid, (b["x"], b["y"], *shape_args, *stats, b["gamma"], b["beta"], i32(case.fix_gamma)))
        )
    if case.backward:
        x_bwd = backward_buffers(ctx, b, launches, upload(inputs.dy, data_in), inplace, data_bytes, param_bytes)
        bwd = (x_bwd, b["dy"], b["dx"], *shape_args, *stats, b["gamma"], b["beta"], i32(case.fix_gamma), i32(train))
        if fused:
            launches.append(("gbn_bwd_fused", *grid, (*bwd, b["dbeta"], b["dgamma_sum"], b["dgamma"], red)))
        else:
            launches.append(("gbn_bwd_partial", *grid, (*bwd, b["part"], red)))
            launches.append(
                (
                    "gbn_bwd_final",
                    *per_channel,
                    (
                        b["part"],
                        u32(C),
                        u32(K),
                        *stats[1:],
                        i32(case.fix_gamma),
                        b["dbeta"],
                        b["dgamma_sum"],
                        b["dgamma"],
                    ),
                )
            )
            if train:
                launches.append(("gbn_bwd_dx", *grid, (*bwd, b["dbeta"], b["dgamma_sum"])))
    return b, launches


# ---- traffic: the bytes the chosen kernels move (conformance bench's traffic-aware roofline) -----------------
RESIDENT_ITEMS = 2048  # work-items resident per compute unit of a GPU (a common limit; OpenCL does not report it)


def traffic(how: dict, case, cache_bytes: int, in_flight_groups: int) -> dict:
    """What the `gpu` kernels `how` (choose()) move from memory in one call of the case: {"bytes", "reads_x",
    "reads_dy", "writes", "why", "parts"} (pure; the cpu family's rules, opencl_plan.traffic). y (and dx)
    written once; inference reads x once; a training pass reads x (backward: x and dy) once where it is still in cache
    (cache_bytes: opencl_plan.device_cache()) when read again, else twice:
      fused (one launch, a work-group per tile over every position): the work-groups in flight (at most
          in_flight_groups) hold their tiles (L x TW values; backward x and dy) between the two reads;
      staged (partial -> final -> apply or dx): the whole of x (backward: x and dy) is read between; backward
          normalised with the running statistics reads x and dy once (the partial kernel writes dx).
    In place with backward: one more read and write of x (the copy the call takes first)."""
    item = np.dtype(case.dtype).itemsize
    n = math.prod(case.shape) * item
    tile = how["L"] * how["TW"] * item
    live = min(how["tiles"] * how["K"], max(1, in_flight_groups))

    def fused(what: str, nbytes: int) -> tuple[int, str]:
        return reread(live * nbytes, cache_bytes, f"{live} work-groups x {_mib(nbytes)} of {what} =")

    parts = []
    if case.inplace and case.backward:
        parts.append(("copy of x:", 1, 0, 1, "x read once, written once"))
    if not case.batch_stats:
        parts.append(("forward apply:", 1, 0, 1, "x read once"))
    else:
        r, words = fused("x", tile) if how["fused"] else reread(n, cache_bytes, "x")
        parts.append((f"forward {'fused' if how['fused'] else 'staged'},", r, 0, 1, f"{words}: x read {_times(r)}"))
    if case.backward:
        if case.normalize_with != "batch":  # dx needs no sums: the partial (or fused) kernel writes it
            r, words = 1, "dx without sums"
        elif how["fused"]:
            r, words = fused("x + dy", 2 * tile)
        else:
            r, words = reread(2 * n, cache_bytes, "x + dy")
        kind = "fused" if how["fused"] else "staged"
        parts.append((f"backward {kind},", r, r, 1, f"{words}: x, dy read {_times(r)}"))
    return summed(case, parts)


def traffic_for(session, case) -> dict:
    """traffic() of the kernels plan() chooses for the case on the session's device (its cache:
    opencl_plan.device_cache): work-groups in flight are RESIDENT_ITEMS / wg per compute unit on a GPU, one per
    compute unit on any other device."""
    extra = session["info"].extra
    max_wg = min(int(session["device"].max_work_group_size), int(session["device"].max_work_item_sizes[0]))
    units = extra.get("compute_units", 1)
    how = choose(session.get("tuning"), units, max_wg, case)
    per_unit = max(1, RESIDENT_ITEMS // how["wg"]) if session.get("props", {}).get("device_type") == "gpu" else 1
    return traffic(how, case, device_cache(session), units * per_unit)
