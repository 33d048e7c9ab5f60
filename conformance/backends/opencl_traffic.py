"""The bytes the OpenCL kernels of a case move from memory, for conformance bench's traffic-aware roofline: how
often x (and dy) are read, from the cpu family's plan (traffic) and the device's cache (device_cache), and the
host's last-level cache for backends that report nothing (host_llc, used by bench's generic model)."""

from __future__ import annotations

import glob
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .opencl_plan import KernelChoice
    from .opencl_session import Session


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.3g} MiB"


def reread(held: float, cache_bytes: int, what: str) -> tuple[int, str]:
    """(reads, words) of data a launch reduces and a later pass reads again: once where `held` bytes (what is read
    between the first read of a value and its second) fit the cache, else twice (the second pass finds it gone:
    data walked in the same order evicts itself under LRU)."""
    if cache_bytes and held <= cache_bytes:
        return 1, f"{what} {mib(held)} <= {mib(cache_bytes)} cache"
    return 2, f"{what} {mib(held)} > {mib(cache_bytes)} cache" if cache_bytes else f"{what}, no cache reported"


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


def times(r: int) -> str:
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
        return reread(live * nbytes, cache_bytes, f"{live} work-items x {mib(nbytes)} of {what} =")

    parts = []
    if case.inplace and case.backward:
        parts.append(("copy of x:", 1, 0, 1, "x read once, written once"))
    if not case.batch_stats:
        parts.append(("forward apply:", 1, 0, 1, "x read once"))
    else:
        r, words = fused("x", per_item * (2 if how.steps > 1 else 1)) if how.fused else reread(n, cache_bytes, "x")
        parts.append((f"forward {'fused' if how.fused else 'staged'},", r, 0, 1, f"{words}: x read {times(r)}"))
    if case.backward:
        one = how.fused and case.act == "none"  # an act program has no fused backward
        r, words = fused("x + dy", 2 * per_item) if one else reread(2 * n, cache_bytes, "x + dy")
        parts.append((f"backward {'fused' if one else 'staged'},", r, r, 1, f"{words}: x, dy read {times(r)}"))
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
