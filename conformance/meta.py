"""What ran on what: host, packages, git commit, devices. Goes into summary.md and run.json."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("numpy", "pandas", "pyopencl", "intel-opencl-rt")


def cpu_stall_s() -> float | None:
    """Seconds during which some runnable task of this machine waited for a CPU, since boot (Linux pressure
    stall information, /proc/pressure/cpu); None where the kernel does not keep it."""
    try:
        with open("/proc/pressure/cpu") as f:
            first = f.readline().split()
        return int(dict(p.split("=") for p in first[1:])["total"]) / 1e6
    except (OSError, ValueError, KeyError, IndexError):
        return None


def busy_measure(start: tuple[float, float | None]) -> dict:
    """How busy the machine was since start = (time.monotonic(), cpu_stall_s()): the share of that wall time in
    which some task waited for a CPU, and the load averages now (compare judges no time of a busy run)."""
    import time

    t0, s0 = start
    s1, wall = cpu_stall_s(), time.monotonic() - t0
    share = (s1 - s0) / wall if s0 is not None and s1 is not None and wall > 0 else None
    return {"cpu_stalled_share": share, "loadavg": list(os.getloadavg()), "cores": os.cpu_count()}


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class RunMeta:
    """One run's record: run.json (bench.json for a bench). Made by collect() when the run starts and completed
    with dataclasses.replace(); report.write() adds where it was written and the counts. Readers (the reports,
    history, compare, --resume) read run.json back as a dict: each field here is a key there, and a field left
    None does not apply to the command and is left out."""

    # what ran on what (collect)
    started: str
    command: str
    suite: str
    host: dict
    git_commit: str
    packages: dict
    ocl_icd_vendors: str
    backends: list
    targets: list
    thresholds: dict
    python_executable: str
    # the command's settings
    argv: list | None = None
    tune: dict | None = None  # the --tune overrides
    sut_requested: bool | None = None  # run: the OpenCL SUT was asked for (no --backend, or opencl among them)
    allow_empty: bool | None = None
    rounds: int | None = None  # bench
    repeats: int | None = None  # bench
    # how it went
    partial: bool | None = None  # run: True until every case finished
    elapsed_s: float | None = None
    warnings: list | None = None
    done_cases: list | None = None
    machine_load: dict | None = None  # busy_measure()
    peak_rss_mib: dict | None = None  # run: main, workers, upper_bound_total; bench: per target
    # added by report.write
    out_dir: str | None = None
    counts: dict | None = None  # target -> status -> rows, against the oracle

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), indent=2, default=str).encode()


def collect(words: list[str], suite: str, infos, targets, thresholds: dict, **settings) -> RunMeta:
    """What ran on what, now, for the command `conformance <words>`; settings: the command's fields of RunMeta
    (argv, tune, ...)."""
    return RunMeta(
        started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command="conformance " + " ".join(words),
        suite=suite,
        host={"name": platform.node(), "os": platform.platform(), "cpu": cpu_name(), "cores": os.cpu_count()},
        git_commit=git_commit(),
        packages=package_versions(),
        ocl_icd_vendors=os.environ.get("OCL_ICD_VENDORS", ""),
        backends=[{"name": i.name, "available": i.reason is None, "reason": i.reason} for i in infos],
        targets=[
            {
                "target": t.label,
                "backend": t.backend,
                "state": t.state,
                "reason": t.reason,
                "device": t.device.as_dict() if t.device is not None else None,
                "floor_ms": t.floor_ms,
            }
            for t in targets
        ],
        thresholds=thresholds,
        python_executable=sys.executable,
        **settings,
    )
