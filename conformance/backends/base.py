"""What every backend module provides, and the small types they share.

A backend is one module in this package with the same few module-level names:

    NAME                                   the backend's name, as in reports ("opencl", "numpy", ...)
    available() -> str | None              None when usable here, else the reason it is not
    devices() -> list[DeviceInfo]          what it can run on; [] when none; one DeviceInfo with key None
                                           for a backend without devices
    open(device_key) -> session            ready to run (context, compiled programs, ...); raises Skip(reason)
                                           when the device cannot be used at all (e.g. its compiler fails)
    supports(session, case) -> str | None  None, or why this case cannot run there ('unsupported' rows)
    run(session, case, inputs, policy) -> Result

Each backend runs in its own worker process (see conformance.worker): a framework or an OpenCL driver is
imported only there, so one that crashes or hangs costs the rows of one case, never the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


class Skip(Exception):
    """The device cannot be used at all (for example its OpenCL compiler fails); the message is the reason."""


class Unsupported(Exception):
    """Raised by run() when the implementation rejects a case it was thought to support."""


@dataclass(frozen=True)
class DeviceInfo:
    key: str | None  # short label, unique within the backend; None for a backend without devices
    name: str = ""
    vendor: str = ""
    platform: str = ""
    driver: str = ""
    version: str = ""
    fp16: bool = True
    fp64: bool = True
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("key", "name", "vendor", "platform", "driver", "version", "fp16", "fp64", "extra")}


@dataclass(frozen=True)
class TimingPolicy:
    warmup: int = 1
    min_repeats: int = 3
    max_repeats: int = 20
    budget_s: float = 0.2  # stop repeating once this much time is spent (after min_repeats)


@dataclass
class Result:
    outputs: dict[str, np.ndarray]  # keyed by Case.outputs
    wall_ms: list[float] = field(default_factory=list)  # one per timed repeat, enqueue (or call) to finish
    kernel_ms: list[float] | None = None  # device time from profiling events, where the backend has it


def time_repeats(fn, policy: TimingPolicy) -> tuple[list[float], list]:
    """Call fn() warmup times, then repeatedly within the policy; returns wall times in ms and fn's returns."""
    for _ in range(policy.warmup):
        fn()
    walls, extras = [], []
    start = time.perf_counter()
    while len(walls) < policy.max_repeats:
        t0 = time.perf_counter()
        extras.append(fn())
        walls.append((time.perf_counter() - t0) * 1e3)
        if len(walls) >= policy.min_repeats and time.perf_counter() - start > policy.budget_s:
            break
    return walls, extras
