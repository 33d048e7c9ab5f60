"""Targets and their workers: what `run`, `bench`, `conventions` and the pytest plugin share.

A target is a backend on one device. Its life: discover() probes every backend side by side (each in a worker
process of its own); select_targets() makes the targets; start() gives each ready one its worker (the backend's
kept probe adopted, or a process launched); ask() is one case's Reply; measure_floors() times each target's
launch floor; stop() records each worker's peak memory and ends them all.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from dataclasses import dataclass, field

from . import backends
from .backends import opencl_tuning
from .backends.base import TimingPolicy
from .case import Case, profiled
from .errors import UserError
from .generate import generate
from .worker import BackendMeta, Reply, Worker, stop_all

DEFAULT_TIMEOUT_S = 300.0


@dataclass
class Target:
    backend: str
    device: object  # DeviceInfo or None
    state: str  # 'ready' | 'skip' | 'unavailable' | 'error'
    reason: str | None = None
    worker: Worker | None = None
    meta: BackendMeta = field(default_factory=BackendMeta)
    probe: Worker | None = None  # its backend's probe, kept by discover(keep=True): start() makes it the worker
    floor_ms: float | None = None  # measure_floors(): the median wall time of a call that does nothing else
    peak_rss_mib: float | None = None  # stop(): the worker's peak resident memory

    @property
    def label(self) -> str:
        key = getattr(self.device, "key", None)
        return f"{self.backend}@{key}" if key else self.backend

    @property
    def is_framework(self) -> bool:
        return self.meta.framework

    @property
    def is_sut(self) -> bool:
        return self.backend == "opencl"

    @property
    def version(self) -> str:
        """The backend's version, or the OpenCL device's driver (the SUT's version is its device's)."""
        return self.meta.version or getattr(self.device, "driver", "")


@dataclass
class BackendInfo:
    name: str
    reason: str | None  # None: available
    devices: list = field(default_factory=list)
    meta: BackendMeta = field(default_factory=BackendMeta)
    probe: Worker | None = None


@contextlib.contextmanager
def tuned(overrides: dict | None):
    """The OpenCL tuning overrides of a run (`--tune KEY=VALUE`, parsed by opencl_tuning.parse_overrides) for
    every worker started inside: the environment variable the OpenCL backend reads (a restarted worker gets it
    too). With none, the variable is unset inside, so one left in the shell cannot change a run unrecorded."""
    name, saved = opencl_tuning.ENV, os.environ.get(opencl_tuning.ENV)
    os.environ.pop(name, None)
    os.environ.update(opencl_tuning.env_for(overrides or {}))
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if saved is not None:
            os.environ[name] = saved


def check_backends(names, source: str) -> None:
    """A user error (one line, exit 2) for a backend name that is not one."""
    for n in names or []:
        if n not in backends.BACKENDS:
            raise UserError(f"unknown backend {n!r} (known: {', '.join(backends.BACKENDS)})", source=source)


def discover(names: list[str] | None = None, keep: bool = False) -> list[BackendInfo]:
    """Every (or the named) backend, probed in its own process; the probes run side by side. keep: the probe of
    an available backend stays alive (BackendInfo.probe) for select_targets() to hand to one of its targets,
    whose worker it becomes in start(), so the backend is not imported twice."""
    check_backends(names, "--backend")
    probes = [Worker(name, probe=True).launch() for name in dict.fromkeys(names or backends.BACKENDS)]
    out = []
    for w in probes:
        w.await_ready(keep_probe=keep)
        reason = None if w.state == "devices" else (w.reason or "unavailable")
        if reason is None and not w.devices:
            reason = "no device found"
            w.stop()
        kept = w if keep and reason is None else None
        out.append(BackendInfo(w.backend, reason, w.devices if reason is None else [], w.meta, probe=kept))
    return out


def release_probes(holders) -> None:
    """End the kept probes of these BackendInfos or Targets that no worker adopted."""
    for h in holders:
        if h.probe is not None:
            h.probe.stop()
            h.probe = None


def select_targets(infos: list[BackendInfo], device_filter: str | None, explicit: bool) -> list[Target]:
    """The targets to run: every device of every available backend, or those matching device_filter. A kept
    probe goes to its backend's first target; the probes of backends with none are ended."""
    targets = []
    for info in infos:
        if info.reason is not None:
            if explicit:
                targets.append(Target(info.name, None, "unavailable", info.reason, meta=info.meta))
            continue
        for dev in info.devices:
            if device_filter and dev.key is not None and not _matches(dev, device_filter):
                continue
            targets.append(Target(info.name, dev, "ready", meta=info.meta, probe=info.probe))
            info.probe = None
    release_probes(infos)
    if device_filter and not any(t.device is not None and t.device.key is not None for t in targets):
        found = [d.key for i in infos for d in i.devices if d.key]
        release_probes(targets)
        raise UserError(f"{device_filter!r} matches no device (found: {', '.join(found) or 'none'})", source="--device")
    return targets


def _matches(dev, text: str) -> bool:
    text = text.lower()
    return any(text in str(v).lower() for v in (dev.key, dev.name, dev.platform, dev.vendor))


def start(targets: list[Target]) -> None:
    """The worker of every ready target without one, side by side: a kept probe adopted, or a process launched."""
    ready = [t for t in targets if t.state == "ready" and t.worker is None]
    for t in ready:
        if t.probe is not None:
            t.worker, t.probe = t.probe.adopt(t.device.key), None
        else:
            t.worker = Worker(t.backend, t.device.key).launch()
    for t in ready:
        t.worker.await_ready()
        t.state, t.reason = t.worker.state, t.worker.reason
        if t.worker.state == "ready":
            t.meta = t.worker.meta
        if t.state == "unavailable":
            t.state = "error"


def ask(t: Target, case: Case, inputs, policy: TimingPolicy, timeout_s: float) -> Reply:
    """One case on one target: its worker's Reply, or the reason the target cannot run (its state)."""
    if t.state == "ready":
        return t.worker.run(case, inputs, policy, timeout_s)
    if t.state == "unavailable":
        return Reply("skip", reason=f"{t.backend} unavailable: {t.reason}")
    return Reply(t.state, reason=t.reason)


FLOOR_CASE = Case(name="floor", shape=(4, 2), mode="infer")  # two channels of two values: a call and nothing else


def measure_floors(targets: list[Target], policy: TimingPolicy, timeout_s: float) -> None:
    """Each ready target's launch floor: the median wall time of FLOOR_CASE (floor_ms; None where the call did
    not run). Timing comparisons judge only cases well above it (regress.py)."""
    inputs = generate(FLOOR_CASE)
    for t in targets:
        if t.state != "ready":
            continue
        case = profiled(FLOOR_CASE, t.meta.profile) if t.is_framework else FLOOR_CASE
        reply = t.worker.run(case, inputs, policy, timeout_s)
        walls = reply.result.wall_ms if reply.ok else None
        t.floor_ms = statistics.median(walls) if walls else None


def stop(targets: list[Target], interrupted: bool = False) -> None:
    """End every target's worker, side by side, after recording its peak memory. interrupted: a worker may be
    mid-case, its reply still on the pipe: it is killed instead."""
    for t in targets:
        if t.worker is None:
            continue
        if interrupted:
            t.worker.kill()
        elif t.worker.proc is not None and t.worker.proc.is_alive():
            t.peak_rss_mib = t.worker.peak_rss_mib()
    stop_all(t.worker for t in targets)
    release_probes(targets)
