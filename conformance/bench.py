"""`conformance bench`: forward training, forward inference and backward, every backend side by side.

Each target (a backend on a device) runs in its own worker process and keeps its inputs there (sent once per
problem). Rounds are interleaved: round r times every target on every phase before round r + 1 starts, so
drift on a shared machine hits every backend alike. Each round's figures are the wall times (enqueue or call
to finish) of a few repeats; median, p10 and p90 are over all rounds.

Phases of a problem (shape, axis, dtype):
    forward_train   mode train, no backward
    forward_infer   mode infer, no backward
    backward        (forward + backward) - forward_train, medians: no API here times a backward alone the same
                    way, so every backend gets the same derivation
Minimal bytes: x read and y written for forward phases; x and dy read and dx written for backward.
In every round each device's memory-copy bandwidth is measured on the bytes of x (the best of clEnqueueCopyBuffer
and plain and streaming copy kernels per OpenCL device, np.copyto on the host), so every figure is also a fraction
of that roofline: copy_time / time for forward (2N bytes either way), 1.5 copy_time / time for backward. Each round
also times a copy of one float: the floor one command costs from enqueue to finish (floor_ms_median; floor_share =
floor / time says how much of a small problem's time is that floor rather than the kernels: launches on PoCL's
thread pool cost tens of us).

Traffic-aware roofline: the minimal bytes above are more than a training kernel can reach once what it reduces
no longer fits the cache (x must then be read twice). traffic_bytes are the bytes of x's size the row's calls
move: y (dx) written once, x (and dy in backward) read once or twice, reads_x / reads_dy, in words in
traffic_model; frac_of_traffic = copy_time x traffic_bytes / (2 n) / time, frac_of_copy with these bytes (so
>= frac_of_copy). An OpenCL call reports its own (Result.traffic, from the plan it chose and the device's
CL_DEVICE_GLOBAL_MEM_CACHE_SIZE: opencl_traffic.traffic, opencl_gpu.traffic); any other backend gets the generic
model (generic_traffic): x read once where it fits the host's last-level cache (sysfs, else sysconf), else twice,
and backward's x and dy once where both fit, else twice each. backward's traffic is the train step's less
forward_train's, like its time.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np

from . import lifecycle
from .backends.base import TimingPolicy
from .backends.opencl_traffic import host_llc, reread, summed
from .case import Case, profiled
from .generate import generate
from .lifecycle import Target
from .runner import kernel_columns
from .status import WORKER_LOST

PHASES = ("forward_train", "forward_infer", "backward")
FLOOR_BYTES = 4  # a copy of one float: what one command costs from enqueue to finish, whatever it does


def problems(cases: list[Case]) -> list[Case]:
    """One case per (shape, axis, dtype, fill, seed): the suite's modes and flags do not matter here."""
    seen, out = set(), []
    for c in cases:
        base = dataclasses.replace(c, mode="train", backward=True)
        key = (base.shape, base.axis, base.dtype, base.fill, base.seed)
        if key not in seen:
            seen.add(key)
            out.append(base)
    return out


def generic_traffic(case: Case, llc: tuple[int, str] | None = None) -> dict:
    """The traffic of a backend that does not report its own (Result.traffic None): y (dx) written once;
    inference reads x once; training reads x once where x fits the host's last-level cache (llc: (bytes, where
    from), default host_llc()), else twice; backward reads x and dy once each where both fit, else twice each."""
    cache, where = llc or host_llc()
    n = math.prod(case.shape) * np.dtype(case.dtype).itemsize
    parts = []
    if not case.batch_stats:
        parts.append(("generic forward apply:", 1, 0, 1, "x read once"))
    else:
        r, words = reread(n, cache, "x")
        parts.append(("generic forward,", r, 0, 1, f"{words} ({where}): x read {'once' if r == 1 else 'twice'}"))
    if case.backward:
        r, words = reread(2 * n, cache, "x + dy")
        parts.append(("generic backward,", r, r, 1, f"{words} ({where}): x, dy read {'once' if r == 1 else 'twice'}"))
    return summed(case, parts)


def _backward_traffic(step: dict, fwd: dict) -> dict:
    """backward's traffic: the train step's less forward_train's (as its time), its words the step's passes
    other than the forward, and a note where the step's forward reads x more often than forward_train does."""
    out = {k: step[k] - fwd[k] for k in ("bytes", "reads_x", "reads_dy", "writes")}
    words = [w for w in step["why"].split("; ") if "forward" not in w.split(",")[0].split(":")[0]]
    in_step = sum(p[1] for p in step.get("parts", []) if "forward" in p[0])
    if step.get("parts") and in_step != fwd["reads_x"]:
        words.append(f"the step's forward reads x {in_step}x, forward_train {fwd['reads_x']}x: the difference is here")
    out["why"] = "; ".join(words)
    return out


def _phases(problem: Case, target: Target) -> dict[str, Case]:
    p = profiled(problem, target.meta.profile) if target.is_framework else problem
    return {
        "forward_train": dataclasses.replace(p, backward=False),
        "forward_infer": dataclasses.replace(p, mode="infer", backward=False),
        "train_step": p,
    }


def _pct(values, q):
    return float(np.percentile(values, q)) if values else np.nan


def run_bench(
    cases: list[Case], targets: list[Target], rounds: int, repeats: int, timeout_s: float, progress=None
) -> tuple[list[dict], dict]:
    """Rows of bench.csv and {target label: peak RSS MiB}."""
    policy = TimingPolicy(warmup=1, min_repeats=repeats, max_repeats=repeats, budget_s=0.0)
    rows: list[dict] = []
    try:
        lifecycle.start(targets)
        live = [t for t in targets if t.state == "ready"]
        for problem in problems(cases):
            rows.extend(_bench_problem(problem, live, rounds, policy, timeout_s))
            if progress is not None:
                progress.step(problem.name, {})
    finally:
        lifecycle.stop(targets)  # each worker's peak memory recorded first
        if progress is not None:
            progress.close()
    return rows, {t.label: t.peak_rss_mib for t in live}


def _bench_problem(
    problem: Case, targets: list[Target], rounds: int, policy: TimingPolicy, timeout_s: float
) -> list[dict]:
    inputs = generate(problem)
    key = problem.id
    walls = {(t.label, ph): [] for t in targets for ph in ("forward_train", "forward_infer", "train_step")}
    kernel = {k: [] for k in walls}
    traffic = {k: None for k in walls}  # the call's Result.traffic (None: the generic model)
    status = {}
    copy = {t.label: [] for t in targets}  # copy of x's bytes: the roofline, in every round like the phases
    floor = {t.label: [] for t in targets}  # copy of FLOOR_BYTES: one command's enqueue-to-finish floor
    for t in targets:
        t.worker.keep(key, inputs)
    for _ in range(rounds):
        for t in targets:
            for store, nbytes in ((copy, inputs.x.nbytes), (floor, FLOOR_BYTES)):
                store[t.label].extend(t.worker.measure_copy(nbytes, policy) or [])  # none where the backend cannot
            for ph, case in _phases(problem, t).items():
                if status.get((t.label, ph), "ok") != "ok":
                    continue
                reply = t.worker.run(case, key, policy, timeout_s)
                if not reply.ok:
                    status[(t.label, ph)] = f"{reply.status}: {reply.reason}"
                    if reply.status in WORKER_LOST:
                        t.worker.start()
                        t.worker.keep(key, inputs)
                    continue
                if ph == "train_step" and "dx" not in reply.outputs:
                    status[(t.label, ph)] = f"{t.backend} has no backward"
                    continue
                walls[(t.label, ph)].extend(reply.result.wall_ms)
                traffic[(t.label, ph)] = traffic[(t.label, ph)] or reply.result.traffic or generic_traffic(case)
                kernel[(t.label, ph)].extend(reply.result.kernel_ms or [])
    for t in targets:  # a phase that gave no result: the generic model, for its columns
        for ph, case in _phases(problem, t).items():
            traffic[(t.label, ph)] = traffic[(t.label, ph)] or generic_traffic(case)
    return _rows(problem, targets, walls, kernel, status, copy, floor, traffic)


def _rows(problem, targets, walls, kernel, status, copy, floor, traffic) -> list[dict]:
    n = int(np.prod(problem.shape)) * np.dtype(problem.dtype).itemsize
    host_copy = next((statistics.median(v) for lbl, v in copy.items() if v and not lbl.startswith("opencl@")), np.nan)
    rows = []
    for t in targets:
        med = {
            ph: statistics.median(walls[(t.label, ph)]) if walls[(t.label, ph)] else np.nan
            for ph in ("forward_train", "forward_infer", "train_step")
        }
        own_copy = statistics.median(copy[t.label]) if copy.get(t.label) else host_copy
        own_floor = statistics.median(floor[t.label]) if floor.get(t.label) else np.nan
        for ph in PHASES:
            if ph == "backward":
                w = walls[(t.label, "train_step")]
                fwd = med["forward_train"]
                times = [x - fwd for x in w] if w and not np.isnan(fwd) else []
                ktimes = _kernel_diff(kernel[(t.label, "train_step")], kernel[(t.label, "forward_train")])
                reason = status.get((t.label, "train_step")) or status.get((t.label, "forward_train")) or ""
                nbytes, factor = 3 * n, 1.5
                moved = _backward_traffic(traffic[(t.label, "train_step")], traffic[(t.label, "forward_train")])
            else:
                times, ktimes = walls[(t.label, ph)], kernel[(t.label, ph)]
                reason = status.get((t.label, ph), "")
                nbytes, factor = 2 * n, 1.0
                moved = traffic[(t.label, ph)]
            m = statistics.median(times) if times else np.nan
            rows.append(
                {
                    "case_id": problem.id,
                    "case": problem.name,
                    "shape": "x".join(map(str, problem.shape)),
                    "axis": problem.axis,
                    "dtype": problem.dtype,
                    "phase": ph,
                    "backend": t.backend,
                    "device": getattr(t.device, "key", None) or "",
                    "target": t.label,
                    **kernel_columns(t),
                    "time_ms_median": m,
                    "time_ms_p10": _pct(times, 10),
                    "time_ms_p90": _pct(times, 90),
                    "kernel_ms_median": statistics.median(ktimes) if ktimes else np.nan,
                    "samples": len(times),
                    "bytes": nbytes,
                    "gbps": nbytes / (m * 1e-3) / 1e9 if m and m > 0 else np.nan,
                    "copy_ms_median": own_copy,
                    "frac_of_copy": factor * own_copy / m if m and m > 0 else np.nan,
                    "traffic_bytes": moved["bytes"],
                    "reads_x": moved["reads_x"],
                    "reads_dy": moved["reads_dy"],
                    "traffic_model": moved["why"],
                    "frac_of_traffic": own_copy * moved["bytes"] / (2 * n) / m if m and m > 0 else np.nan,
                    "floor_ms_median": own_floor,
                    "floor_share": own_floor / m if m and m > 0 else np.nan,
                    "status": "ok" if times else "no result",
                    "reason": reason,
                }
            )
    _speedups(rows, targets)
    return rows


def _kernel_diff(step, fwd):
    if not step or not fwd:
        return []
    f = statistics.median(fwd)
    return [k - f for k in step]


def _speedups(rows: list[dict], targets: list[Target]) -> None:
    frameworks = {t.label for t in targets if t.is_framework}
    for ph in PHASES:
        group = [r for r in rows if r["phase"] == ph]
        fw_times = [
            r["time_ms_median"] for r in group if r["target"] in frameworks and not np.isnan(r["time_ms_median"])
        ]
        best = min(fw_times) if fw_times else np.nan
        best_label = next((r["target"] for r in group if r["time_ms_median"] == best), "")
        for r in group:
            t = r["time_ms_median"]
            r["best_framework"] = best_label
            r["speedup_vs_best_framework"] = best / t if fw_times and t and t > 0 else np.nan
