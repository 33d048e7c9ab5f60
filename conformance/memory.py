"""How much memory a case takes, and refusing what does not fit before anything runs.

estimate_bytes(case) is the peak resident memory of the main process plus the worker running the case, built
from what each one holds (n values, data itemsize s, b = 1 for backward; A = s n one data array, I = A (1 + b)
the inputs x and dy, O = A (1 + b) the outputs y and dx, R = 8 n (1 + b) the oracle's float64 y and dx):

    main    max(generate:  I + the draws' chunks (+ n for a 'special' fill, + the file's arrays for inputs = file)
                oracle:    I + R + its block temporaries (BLOCK values, or one channel if longer: 64 bytes each)
                targets:   I + R + held * O + the largest of: sending the inputs (pickled: 1.125 I, plus one array
                           the pickler copies), receiving outputs (1.125 O), comparing (a few boxes, plus one
                           output taken to float64 for a framework's row against the SUT))
    worker  I + max(receiving: 1.125 I;  numpy: xhat and y in its working precision w (float32 for float16
                    data, whose copies of x and dy and casts back count too), dx and xhat / m, float64 for m >= 2^16
                    in numpy 1.x, 16 n b;  OpenCL: its buffers 2 A (1 + b) and the outputs read back O;
                    sending: O + 1.25 O + A;  a framework: 8 O)
    idle    every other worker keeps the last inputs sent to it (worker.py holds the message): I each

with held = targets output sets (runner.py keeps each target's outputs until the case ends) or twice that with
frameworks (a profiled variant's outputs are kept while the next variant runs). Each term is a RATIO above the
model and the processes' own footprint (BASE_MAIN, BASE_WORKER) is added.

Calibration (tests/test_memory.py measures it again on small cases): VmHWM of real runs, `conformance run
--backend numpy --backend opencl` (3 targets) on this 2-core 24 GiB host, in bytes per value above the tiny-case
footprint (main 78, numpy 38, OpenCL 224 MiB), measured / model (without RATIO):

    float32 backward 4096x4096 (m 4096)   main 57 / 61    numpy 32 / 32   OpenCL 32 / 32
    float32 backward 65536x128 (m 65536)  main 62 / 61    numpy 32 / 32   OpenCL 32 / 32
    float32 backward 4194304x2 (m 4 Mi)   main 59 / 61    numpy 33 / 32   OpenCL 32 / 32
    float64 backward 4096x2048            main 99 / 106   numpy 64 / 64   OpenCL 65 / 64
    float16 backward 65536x128            main 37 / 44    numpy 36 / 40   Intel  16 / 16
    float32 forward 4096x2048             main 31 / 36    numpy 16 / 17   OpenCL 16 / 16

so RATIO = 1.1 puts every estimate above what was measured: by 8 to 25 % for float32 and float64, up to 60 %
for float16 (whose numpy model allows for channels of 2^16 values and more). Frameworks were measured at 4 Mi
values float32 backward only (torch 60, mindspore 64, mxnet_v1_sym 68 bytes per value, constants included): 8 O
bounds them. Every term is linear in n: larger cases are extrapolated from these (kept under ~2 GiB per run).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from . import compare, generate, oracle
from .errors import UserError

MiB = 1 << 20
GiB = 1 << 30
RATIO = 1.1  # the estimate's margin over the model (the model fits the measured peaks within a few %)
BASE_MAIN = 320 * MiB  # the main process: python, numpy, pandas, the backends' metadata (78-261 MiB measured)
BASE_WORKER = 512 * MiB  # a worker: its framework or OpenCL runtime and compiled programs (38-411 MiB measured)
MARGIN_FRACTION = 0.10  # of the memory available, left free: see default_limit()
MARGIN_MIN = 512 * MiB


# ---- what is available ---------------------------------------------------------------------------------------
def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _inactive_file(stat: Path, key: str) -> int:
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_dirs(root: Path = Path("/sys/fs/cgroup"), proc: str = "/proc/self/cgroup") -> list[tuple[Path, str]]:
    """(folder, version) of this process's memory cgroup and each of its ancestors, deepest first: a limit set
    on any of them applies. Inside a container the path /proc names may be the container's own root."""
    try:
        lines = Path(proc).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            base, version = root, "v2"
        elif "memory" in controllers.split(","):
            base, version = root / "memory", "v1"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        out += [(base.joinpath(*parts[:k]), version) for k in range(len(parts), -1, -1)]
    return out


def _cgroup_available(dirs: list[tuple[Path, str]]) -> int | None:
    """The tightest cgroup memory limit minus the memory charged there (less its inactive page cache, which
    the kernel reclaims before it would kill): None where no limit is set."""
    best = None
    for folder, version in dirs:
        if version == "v2":
            limit, usage = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
            cache = _inactive_file(folder / "memory.stat", "inactive_file")
        else:
            limit, usage = _read_int(folder / "memory.limit_in_bytes"), _read_int(folder / "memory.usage_in_bytes")
            cache = _inactive_file(folder / "memory.stat", "total_inactive_file")
        if limit is None or usage is None or limit >= 1 << 60:  # v1 writes a huge number for no limit
            continue
        left = max(0, limit - max(0, usage - cache))
        best = left if best is None else min(best, left)
    return best


def available_bytes(meminfo: str = "/proc/meminfo", cgroups: list[tuple[Path, str]] | None = None) -> int | None:
    """Memory this process can still use: MemAvailable of /proc/meminfo, or the cgroup (v2 or v1) limit minus
    its usage where that is smaller. None where neither is known (not Linux)."""
    cgroups = _cgroup_dirs() if cgroups is None else cgroups
    found = [v for v in (_meminfo_available(meminfo), _cgroup_available(cgroups)) if v is not None]
    return min(found) if found else None


def default_limit(available: int | None = None) -> int | None:
    """What a run may take: the memory available less max(10 %, 512 MiB). MemAvailable counts page cache the
    kernel *could* drop, but dropping the working set of running programs (the interpreter, the OpenCL
    runtimes, the other agents' files) means thrashing before the OOM killer acts; the 512 MiB covers what the
    model leaves out (allocator fragmentation, an OpenCL compiler's peak) and other processes growing meanwhile."""
    available = available_bytes() if available is None else available
    if available is None:
        return None
    return max(0, available - max(MARGIN_MIN, int(available * MARGIN_FRACTION)))


# ---- what a case takes ---------------------------------------------------------------------------------------
def _sizes(case) -> dict[str, int]:
    n = math.prod(case.shape)
    arrays = 2 if case.backward else 1
    a = n * (2 if case.dtype == "float16" else 4 if case.dtype == "float32" else 8)
    return {
        "n": n,
        "A": a,
        "I": a * arrays,
        "O": a * arrays,
        "R": 8 * n * arrays,
        "work": 8 if case.dtype == "float64" else 4,
    }


def _main_bytes(case, sz: dict, held: int, frameworks: int) -> int:
    n, a, i, o, r = sz["n"], sz["A"], sz["I"], sz["O"], sz["R"]
    chunks = 2 * 8 * generate.CHUNK
    gen = i + chunks + (n if case.fill.kind == "special" else 0) + (r if case.inputs is not None else 0)
    blocks = 64 * max(oracle.BLOCK, case.count)
    boxes = 96 * compare.BLOCK
    versus_sut = 8 * n if frameworks else 0  # runner.vs_sut_rows takes the SUT's output to float64
    targets = i + r + held * o + max(1.125 * i + a, 1.125 * o, boxes + versus_sut)
    return int(max(gen, i + r + blocks, targets))


def _worker_bytes(case, sz: dict, frameworks: int) -> int:
    n, a, i, o, w, b = sz["n"], sz["A"], sz["I"], sz["O"], sz["work"], int(case.backward)
    half = case.dtype == "float16"  # the numpy peer works on float32 copies and casts its outputs back
    numpy = (
        (w * n * (1 + b) + o if half else 0) + 2 * w * n + 16 * n * b
    )  # xhat, y; dx and xhat / m (float64 for m >= 2^16)
    opencl = 2 * i + o  # buffers x, y (dy, dx) and the outputs read back
    send = o + 1.25 * o + a  # the outputs, pickled, and one array the pickler copies
    during = max(1.125 * i, numpy, opencl, send, 8 * o if frameworks else 0)
    return int(i + during)


def estimate_bytes(case, targets: int = 1, frameworks: int = 0) -> int:
    """Peak resident bytes of a run of `case` (see the module's docstring): the main process, the worker
    running it, and `targets` - 1 idle workers each holding the case's inputs. targets: how many targets run
    the case (an OpenCL device, a framework ...); frameworks: how many of them are frameworks. With the
    defaults: the main process and one worker."""
    sz = _sizes(case)
    held = targets * (2 if frameworks else 1)
    model = _main_bytes(case, sz, held, frameworks) + _worker_bytes(case, sz, frameworks) + (targets - 1) * sz["I"]
    return int(RATIO * model) + BASE_MAIN + BASE_WORKER


_UNITS = {"": 1, "K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}


def parse_size(text: str, source: str = "--memory-limit") -> int:
    """Bytes from '12G', '12GiB', '800M', '1.5g', '123456' (K, M, G, T are powers of 1024); a UserError else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text or "")
    if not match:
        raise UserError(f"not a size such as 12G, 800M or 123456 (bytes): {text!r}", source=source)
    return int(float(match[1]) * _UNITS[match[2].upper()])


def _fmt(nbytes: int) -> str:
    return f"{nbytes / GiB:.1f} GiB" if nbytes >= GiB else f"{nbytes / MiB:.0f} MiB"


def check(cases, limit_bytes: int | None = None, source: str = "memory", targets: int = 1, frameworks: int = 0) -> None:
    """Raise a one-line UserError for the first case whose estimate_bytes() exceeds limit_bytes (default:
    default_limit(), from what is available now; nothing is checked where that is unknown)."""
    limit = default_limit() if limit_bytes is None else limit_bytes
    if limit is None:
        return
    for case in cases:
        need = estimate_bytes(case, targets, frameworks)
        if need > limit:
            raise UserError(
                f"case {case.name} (shape {'x'.join(map(str, case.shape))}, {case.dtype}"
                f"{', backward' if case.backward else ''}) needs about {_fmt(need)} of memory on {targets} "
                f"target(s), more than the {_fmt(limit)} available ({case.id})",
                source=source,
            )
