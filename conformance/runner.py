"""Run cases on targets (a backend on a device), compare with the oracle, produce result rows."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from . import backends
from .backends.base import TimingPolicy
from .case import Case
from .compare import compare
from .errors import UserError
from .generate import generate
from .oracle import reference
from .progress import Progress
from .worker import Worker, probe

DEFAULT_TIMEOUT_S = 300.0


@dataclass
class Target:
    backend: str
    device: object  # DeviceInfo or None
    state: str  # 'ready' | 'skip' | 'unavailable'
    reason: str | None = None
    worker: Worker | None = None

    @property
    def label(self) -> str:
        key = getattr(self.device, "key", None)
        return f"{self.backend}@{key}" if key else self.backend


@dataclass
class BackendInfo:
    name: str
    reason: str | None  # None: available
    devices: list = field(default_factory=list)


def discover(names: list[str] | None = None) -> list[BackendInfo]:
    """Every (or the named) backend, probed in its own process."""
    for n in names or []:
        if n not in backends.BACKENDS:
            raise UserError(f"unknown backend {n!r} (known: {', '.join(backends.BACKENDS)})", source="--backend")
    out = []
    for name in names or list(backends.BACKENDS):
        reason, devices = probe(name)
        if reason is None and not devices:
            reason = "no device found"
        out.append(BackendInfo(name, reason, devices))
    return out


def select_targets(infos: list[BackendInfo], device_filter: str | None, explicit: bool) -> list[Target]:
    targets = []
    for info in infos:
        if info.reason is not None:
            if explicit:
                targets.append(Target(info.name, None, "unavailable", info.reason))
            continue
        for dev in info.devices:
            if device_filter and dev.key is not None and not _matches(dev, device_filter):
                continue
            targets.append(Target(info.name, dev, "ready"))
    if device_filter and not any(t.device is not None and t.device.key is not None for t in targets):
        found = [d.key for i in infos for d in i.devices if d.key]
        raise UserError(f"{device_filter!r} matches no device (found: {', '.join(found) or 'none'})", source="--device")
    return targets


def _matches(dev, text: str) -> bool:
    text = text.lower()
    return any(text in str(v).lower() for v in (dev.key, dev.name, dev.platform, dev.vendor))


def expected_dtype(case: Case, output: str) -> str:
    return case.dtype if output in ("y", "dx") else case.param_dtype


def bytes_moved(case: Case) -> int:
    """Minimal traffic of what is timed: x read and y written, plus x, dy read and dx written for backward."""
    n = int(np.prod(case.shape)) * np.dtype(case.dtype).itemsize
    return n * (2 + (3 if case.backward else 0))


def _case_columns(case: Case) -> dict:
    return {
        "case_id": case.id, "case": case.name, "dtype": case.dtype, "shape": "x".join(map(str, case.shape)),
        "axis": case.axis, "mode": case.mode, "backward": case.backward, "fix_gamma": case.fix_gamma,
        "running_var": case.running_var, "stats": case.stats, "momentum_dir": case.momentum_dir,
        "fill": case.fill.kind,
    }


def _timing_columns(result, case: Case) -> dict:
    cols = {"time_ms_median": np.nan, "time_ms_min": np.nan, "kernel_ms_median": np.nan, "kernel_ms_min": np.nan,
            "bytes": bytes_moved(case), "gbps": np.nan, "repeats": 0}
    if result is not None and result.wall_ms:
        med = statistics.median(result.wall_ms)
        cols.update(time_ms_median=med, time_ms_min=min(result.wall_ms), repeats=len(result.wall_ms),
                    gbps=cols["bytes"] / (med * 1e-3) / 1e9 if med > 0 else np.nan)
        if result.kernel_ms:
            cols.update(kernel_ms_median=statistics.median(result.kernel_ms), kernel_ms_min=min(result.kernel_ms))
    return cols


def rows_for(case: Case, target: Target, reply, ref) -> list[dict]:
    base = {**_case_columns(case), "backend": target.backend, "device": getattr(target.device, "key", None) or "",
            "target": target.label}
    status, payload = reply[0], reply[1]
    if status != "ok":
        timing = _timing_columns(None, case)
        return [{**base, "output": out, "status": status, "reason": f"{payload} [{case.id}]", **timing} for out in case.outputs]
    result = payload
    timing = _timing_columns(result, case)
    rows = []
    for out in case.outputs:
        r = compare(out, result.outputs.get(out), ref.values[out], ref.scales[out], case, expected_dtype(case, out))
        if r["reason"]:
            r["reason"] += f" [{case.id}]"
        rows.append({**base, **r, **timing})
    return rows


def run_cases(cases: list[Case], targets: list[Target], *, policy: TimingPolicy, timeout_s: float = DEFAULT_TIMEOUT_S,
              on_arrays=None, progress: Progress | None = None) -> list[dict]:
    """All rows for cases x targets. on_arrays(case, inputs, {label: outputs}) receives each case's arrays."""
    rows: list[dict] = []
    counts: dict[str, int] = {}
    try:
        for t in targets:
            if t.state == "ready":
                t.worker = Worker(t.backend, t.device.key).start()
                t.state, t.reason = t.worker.state, t.worker.reason
                if t.state == "unavailable":
                    t.state = "error"
        for case in cases:
            inputs = generate(case)
            ref = reference(case, inputs)
            arrays = {}
            for t in targets:
                if t.state == "ready":
                    reply = t.worker.run(case, inputs, policy, timeout_s)
                elif t.state == "unavailable":
                    reply = ("skip", f"{t.backend} unavailable: {t.reason}")
                else:
                    reply = (t.state, t.reason)
                new = rows_for(case, t, reply, ref)
                rows.extend(new)
                for r in new:
                    counts[r["status"]] = counts.get(r["status"], 0) + 1
                if reply[0] == "ok":
                    arrays[t.label] = reply[1].outputs
            if on_arrays is not None:
                on_arrays(case, inputs, arrays)
            if progress is not None:
                progress.step(case.name, counts)
    finally:
        for t in targets:
            if t.worker is not None:
                t.worker.stop()
        if progress is not None:
            progress.close()
    return rows
