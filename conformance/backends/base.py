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

A backend that implements behaviours beyond mode's two (update_running against mode, act, inplace: see
Case.features) lists them as IMPLEMENTS, a set of 'field=value' strings; a case using any other is
'unsupported' there before run() is called (default-deny: a backend never runs a case it does not know it
cannot express).

Framework backends add:

    DOCUMENTED: Profile                    the conventions as the framework's documentation states them
                                           (None where it is silent)
    PROFILE: Profile                       the conventions the adapter translates the canonical case with:
                                           DOCUMENTED, with the canonical choice where the docs are silent
    EXTRA_OUTPUTS: dict[str, str]          further outputs the API returns, each mapped to the canonical
                                           quantity its documentation says it holds ("mean", "var", "invstd")
    version() -> str                       the framework's version
    FLAGS: tuple[Combo, ...]               (seed APIs) each documented combination of the flags that choose
                                           the statistics, with the canonical behaviour its page gives it
                                           (None where the page leaves it undefined) and the page's words

and their run() also takes use_defaults=False: when True, the adapter passes no eps and no momentum, so the
framework's own defaults apply (the conventions probe measures them). A framework's Result also carries
`untouched`: the inputs the call must leave alone (x, gamma, beta), read back after the call.

Each backend runs in its own worker process (see conformance.worker): a framework or an OpenCL driver is
imported only there, so one that crashes or hangs costs the rows of one case, never the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


def unimplemented(module, case) -> str | None:
    """Why the backend module cannot run this case's behaviours (those it does not list in IMPLEMENTS, or a flag
    combination not in its FLAGS), or None."""
    name = getattr(module, "NAME", module.__name__)
    if case.flags and case.flags not in {c.label for c in getattr(module, "FLAGS", ())}:
        return f"{name} has no flag combination {case.flags!r}"
    missing = [f for f in case.features if f not in getattr(module, "IMPLEMENTS", ())]
    return f"{name} does not implement {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class Combo:
    """One documented combination of a framework's flags, and the canonical behaviour its page gives it.

    flags: the framework's own argument values, in call order (a label such as
    'training=False,use_global_stats=True' names it in results.csv and in a case id); normalize_with
    ('batch' | 'running') and update_running (bool): what the page says the combination does, None where it
    leaves that undefined (then the combination is run and reported as observed, never judged); quote: the
    page's words that say so."""

    flags: tuple[tuple[str, object], ...]
    normalize_with: str | None
    update_running: bool | None
    quote: str = ""

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.flags)

    @property
    def defined(self) -> bool:
        return self.normalize_with is not None and self.update_running is not None

    def means(self, case) -> bool:
        """Whether the page says this combination does what the case asks (which statistics, update or not)."""
        return self.defined and (self.normalize_with, self.update_running) == (
            case.normalize_with,
            case.updates_running,
        )

    def get(self, key: str, default=None):
        return dict(self.flags).get(key, default)

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "normalize_with": self.normalize_with,
            "update_running": self.update_running,
            "quote": self.quote,
        }


def combo_for(flags: tuple[Combo, ...], case) -> Combo:
    """The combination a framework runs a case with: the one the case names (case.flags), else the first whose
    documented meaning is the case's; Unsupported when the page gives no combination that meaning."""
    if case.flags:
        for c in flags:
            if c.label == case.flags:
                return c
        raise Unsupported(f"no flag combination {case.flags!r}")
    for c in flags:
        if c.means(case):
            return c
    raise Unsupported(
        f"no documented flag combination normalises with the {case.normalize_with} statistics and "
        f"{'updates' if case.updates_running else 'leaves'} the running ones"
    )


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
        return {
            k: getattr(self, k)
            for k in ("key", "name", "vendor", "platform", "driver", "version", "fp16", "fp64", "extra")
        }


@dataclass(frozen=True)
class Profile:
    """A framework's BatchNorm conventions (README.md, Semantics and the oracle: profiles). None: not stated."""

    momentum_dir: str | None  # "old": the momentum parameter weighs the old running value; "new": the batch value
    running_var: str | None  # "biased" | "unbiased": the batch variance the running variance is updated with
    stats: str | None  # "var" | "invstd": the batch statistic returned next to the mean; None if none is returned
    eps: float | None  # default eps
    momentum: float | None  # default momentum, in the framework's own direction

    def translate_momentum(self, canonical: float) -> float:
        """The momentum parameter to hand the framework for a canonical momentum (weight of the old value)."""
        return canonical if (self.momentum_dir or "old") == "old" else 1.0 - canonical


@dataclass(frozen=True)
class TimingPolicy:
    warmup: int = 1
    min_repeats: int = 3
    max_repeats: int = 20
    budget_s: float = 0.05  # stop repeating once this much time is spent (after min_repeats)


@dataclass
class Result:
    outputs: dict[str, np.ndarray]  # keyed by Case.outputs
    wall_ms: list[float] = field(default_factory=list)  # one per timed repeat, enqueue (or call) to finish
    kernel_ms: list[float] | None = None  # device time from profiling events, where the backend has it
    untouched: dict[str, np.ndarray] = field(default_factory=dict)  # inputs as read back after the call
    notes: list[str] = field(default_factory=list)  # anything the adapter had to do that a reader should know
    # bytes of x's size the chosen kernels move from memory in this call, where the backend knows its plan
    # (OpenCL: {"bytes", "reads_x", "reads_dy", "writes", "why"}); None: bench applies its generic model
    traffic: dict | None = None


def time_repeats(fn, policy: TimingPolicy) -> tuple[list[float], object]:
    """Call fn() warmup times, then repeatedly within the policy; returns the wall times in ms and the last call's
    return value. Each return is dropped before the next call starts: a backend whose call returns its outputs
    holds one set of them, not one per repeat."""
    for _ in range(policy.warmup):
        fn()
    walls, last = [], None
    start = time.perf_counter()
    while len(walls) < policy.max_repeats:
        last = None
        t0 = time.perf_counter()
        last = fn()
        walls.append((time.perf_counter() - t0) * 1e3)
        if len(walls) >= policy.min_repeats and time.perf_counter() - start > policy.budget_s:
            break
    return walls, last
