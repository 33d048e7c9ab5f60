"""The system under test: BatchNorm in OpenCL C (kernels_cl/) driven through pyopencl.

Two kernel families over one shared header (kernels_cl/bn_common.h: types, loads and stores, act, compensated
sums, the per-channel finishing): `cpu` (kernels_cl/cpu_*.cl, planned by opencl_plan.py: one work-item per
work-group walking long runs 8 values at a time) and `gpu` (kernels_cl/gpu_*.cl, planned by opencl_gpu.py:
work-groups of many work-items, coalesced, two-level reductions). A device gets one family for the whole run,
chosen with its parameters by opencl_tuning.params() from the device's properties (props(): device type,
compute units, work-group and local-memory limits, extensions) and the tuning table, and `--tune KEY=VALUE`
overrides (environment variable CONFORMANCE_OPENCL_TUNE in the worker); session["family"] says which. A case
the family cannot run (its planner missing, or raising NotImplementedError) is `unsupported` with the reason,
never run by the other family. Each row records the family and its parameters (DeviceInfo.extra: `family`,
`tuning`; results.csv and bench.csv columns of the same names).

One program per (data type, switches) of the device's family (program_source(): bn_common.h followed by the
family's files in name order; built lazily, cached in the session; pyopencl caches the binaries on disk by
source and options). For the `cpu` family `choose()` picks the kernels from the shape and the device's tuning,
in opencl_plan.py:
  forward train   fused (one launch), or partial sums -> final (per channel) -> apply (per element)
  forward infer   apply, one launch, from the running statistics
  backward        fused (one launch), or partial sums -> final -> dx
each in a channel-first (cf) and a channel-last (cl, tiles of channels x rows) variant. Every kernel has a
fixed work-group size, so a driver that compiles per launch shape (PoCL) compiles once per program. The
kernel takes the profile itself: momentum direction, running-variance estimator and the extra statistic are
kernel arguments.

The behaviours beyond mode's two (IMPLEMENTS; see Case.features) are switches of the program, one program per
(data type, switches), built when a case first needs it (opencl_plan.defines): a case with the defaults builds
with exactly the options it always had, and its kernels preprocess to the same code as before the switches.
  act             -DACT_RELU / ACT_SIGMOID / ACT_TANH: the forward kernels write act(z); backward takes
                  dy act'(z), z recomputed from x in the accumulator type, and runs in stages (partial sums ->
                  final -> dx, no fused backward kernel, no streaming stores in the channel-first dx)
  update_running  train with update_running=0: -DKEEP_RUNNING (the statistics kernels leave the running
                  statistics alone); infer with update_running=1: the training kernels (batch statistics,
                  returned, and the running update) with -DNORM_RUNNING, which hands the elementwise kernels the
                  running statistics as they were before the update; backward is then the scale-shift one with
                  those (mean_w / invstd_w)
  inplace         no define: x's buffer is bound as both x and y of the forward kernels, dy's as both dy and dx
                  of the backward ones (each element is read before it is written, by the same work-item, and
                  never read again), and x_after / dy_after are read back from those buffers. Backward needs the
                  original x: when a case has both, the call first copies x on the device (clEnqueueCopyBuffer,
                  the first command of the call, timed with it) into a buffer of its own that backward reads;
                  the forward then overwrites x's buffer in place. So an in-place training step costs one extra
                  copy of x, which is what a framework that saves its input for backward pays too.
The timed repeats run on the buffers as the previous repeat left them (in place: x holds y by then; the
running statistics move each repeat): the outputs are read after the first run, the repeats only time.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..opencl_env import NOTES, register_runtimes  # noqa: F401 - NOTES: the worker reports them

register_runtimes()  # before pyopencl is first imported: it decides which OpenCL platforms exist

from . import opencl_plan, opencl_tuning  # noqa: E402
from .base import DeviceInfo, Result, Skip, Unsupported, time_repeats  # noqa: E402

NAME = "opencl"
IMPLEMENTS = frozenset({"update_running=0", "update_running=1", "act=relu", "act=sigmoid", "act=tanh", "inplace=1"})
HEADER = "bn_common.h"  # first in every program; then the family's files, <family>_*.cl in name order
KERNELS = (
    "bn_fused_train_cf",
    "bn_fused_train_cl",
    "bn_fused_train_cft",
    "bn_fused_bwd_cf",
    "bn_fused_bwd_cl",
    "bn_fused_bwd_cft",
    "bn_stats_partial_cf",
    "bn_stats_partial_cl",
    "bn_stats_final",
    "bn_apply",
    "bn_apply_cl",
    "bn_bwd_partial_cf",
    "bn_bwd_partial_cl",
    "bn_bwd_final",
    "bn_bwd_apply",
    "bn_bwd_apply_cl",
)
FUSED_BWD = ("bn_fused_bwd_cf", "bn_fused_bwd_cl", "bn_fused_bwd_cft")  # not in a program with an act
_DTYPE_DEFINES = {"float16": ["-DDATA_HALF"], "float32": [], "float64": ["-DDATA_DOUBLE"]}
_PLATFORM_SHORT = {  # platform-name prefix -> short name
    "portable computing language": "pocl",
    "intel": "intel",
    "nvidia": "nvidia",
    "amd accelerated parallel processing": "amd",
    "oclgrind": "oclgrind",
    "rusticl": "rusticl",
    "clover": "clover",
    "apple": "apple",
}


def kernels_dir() -> Path:
    override = os.environ.get("CONFORMANCE_KERNELS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "kernels_cl"


def family_files(family: str, folder: Path | None = None) -> list[Path]:
    """The family's source files after the header: <family>_*.cl in kernels_cl, in name order."""
    return sorted((folder or kernels_dir()).glob(f"{family}_*.cl"))


_INCLUDE = re.compile(r'[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$')


def _expand(path: Path, seen: set) -> list[str]:
    """path's lines, each `#include "NAME"` of a file in its folder replaced by that file's lines the first time
    (later times by nothing), with #line markers so that a build log names the file and line it means."""
    seen.add(path.name)
    out = [f'#line 1 "{path.name}"']
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = _INCLUDE.match(line)
        if m and (path.parent / m.group(1)).is_file():
            if m.group(1) not in seen:
                out += _expand(path.parent / m.group(1), seen)
            out.append(f'#line {n + 1} "{path.name}"')
            continue
        out.append(line)
    return out


def program_source(family: str, order: tuple[str, ...] = ()) -> str:
    """The source of the family's program: bn_common.h, then kernels_cl/<family>_*.cl in name order, or those of
    them named in `order` first in that order (a planner's SOURCES); a file's `#include "bn_common.h"` is the
    header already there. Raises RuntimeError when the family has no files."""
    folder = kernels_dir()
    found = family_files(family, folder)
    files = [folder / n for n in order if (folder / n) in found] + [p for p in found if p.name not in order]
    if not files:
        raise RuntimeError(f"no kernel files {family}_*.cl in {folder}")
    seen: set = set()
    lines = []
    for path in (folder / HEADER, *files):
        if path.name not in seen:
            lines += _expand(path, seen)
    return "\n".join(lines) + "\n"


def family_module(family: str):
    """The planner of a family: opencl_plan for `cpu`, opencl_gpu for `gpu`; None where it does not exist yet."""
    if family == "cpu":
        return opencl_plan
    try:
        return importlib.import_module(f"{__package__}.opencl_{family}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith(f"opencl_{family}"):
            return None
        raise


def props(dev) -> dict:
    """What the family choice and its parameters may depend on (opencl_tuning.params), from a cl.Device."""
    import pyopencl as cl

    ext = dev.extensions.split()
    dtype = int(dev.type)
    kind = (
        "gpu"
        if dtype & cl.device_type.GPU
        else "accelerator"
        if dtype & cl.device_type.ACCELERATOR
        else "cpu"
        if dtype & cl.device_type.CPU
        else "other"
    )
    return {
        "device_type": kind,
        "compute_units": int(dev.max_compute_units),
        "max_work_group_size": min(int(dev.max_work_group_size), int(dev.max_work_item_sizes[0])),
        "local_mem_size": int(dev.local_mem_size),
        "mem_base_addr_align": int(dev.mem_base_addr_align),
        "subgroups": [e for e in ext if e in ("cl_khr_subgroups", "cl_intel_subgroups")],
        "fp16": "cl_khr_fp16" in ext,
        "fp64": "cl_khr_fp64" in ext,
    }


def device_tuning(key: str, dev) -> dict:
    """The family and parameters a device runs with: opencl_tuning.params() with the run's overrides (raises
    ValueError for a malformed CONFORMANCE_OPENCL_TUNE)."""
    return opencl_tuning.params(key, props(dev), opencl_tuning.env_overrides())


# ---- devices -------------------------------------------------------------------------------------------------
def available():
    try:
        import pyopencl as cl
    except Exception as exc:  # ImportError, or a broken ICD loader
        return f"cannot import pyopencl: {exc}".splitlines()[0]
    try:
        platforms = cl.get_platforms()
    except Exception as exc:  # PLATFORM_NOT_FOUND_KHR when no ICD is registered
        return f"no OpenCL platform found: {exc}".splitlines()[0]
    if not platforms:
        return "no OpenCL platform found"
    return None


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _platform_short(platform) -> str:
    name = platform.name.strip().lower()
    for prefix, short in _PLATFORM_SHORT.items():
        if name.startswith(prefix):
            return short
    vendor = _slug(platform.vendor).split("-")
    return vendor[0] if vendor and vendor[0] else (_slug(name).split("-")[0] or "opencl")


def _enumerate():
    """[(DeviceInfo, cl.Device)] for every device of every platform, with stable unique keys."""
    import pyopencl as cl

    found, used = [], set()
    for platform in cl.get_platforms():
        try:
            devs = platform.get_devices()
        except cl.Error:  # DEVICE_NOT_FOUND: a platform without devices
            continue
        for dev in devs:
            base = f"{_platform_short(platform)}-{_slug(dev.name) or 'device'}"
            key, n = base, 1
            while key in used:
                n += 1
                key = f"{base}-{n}"
            used.add(key)
            ext = dev.extensions.split()
            try:
                tune = device_tuning(key, dev)
                chosen = {"family": tune["family"], "tuning": opencl_tuning.compact(tune)}
            except ValueError as exc:  # open() says it, as the device's skip reason
                chosen = {"family": "", "tuning": f"invalid: {exc}"}
            info = DeviceInfo(
                key=key,
                name=dev.name.strip(),
                vendor=dev.vendor.strip(),
                platform=platform.name.strip(),
                driver=dev.driver_version.strip(),
                version=dev.version.strip(),
                fp16="cl_khr_fp16" in ext,
                fp64="cl_khr_fp64" in ext,
                extra={
                    "max_work_group_size": int(dev.max_work_group_size),
                    "global_mem_size": int(dev.global_mem_size),
                    "compute_units": int(dev.max_compute_units),
                    "local_mem_size": int(dev.local_mem_size),
                    **chosen,
                },
            )
            found.append((info, dev))
    return found


def devices():
    if available() is not None:
        return []
    return [info for info, _ in _enumerate()]


# ---- session -------------------------------------------------------------------------------------------------
def _first_log_line(exc: Exception) -> str:
    """The first error line of the build log in a pyopencl build error: the first line that says 'error',
    else its first non-empty line (Intel's log opens with progress chatter: 'Compilation started')."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    start = next((k + 1 for k, ln in enumerate(lines) if ln.startswith("Build on")), 0)
    log = [ln for ln in lines[start:] if ln and not ln.startswith("(options:") and not ln.startswith("(source saved")]
    for line in log:
        if re.search(r"\berror\b", line, re.IGNORECASE):
            return line
    return log[0] if log else type(exc).__name__


def build_options(session, dtype: str, switches: tuple[str, ...] = ()) -> list[str]:
    """The build options of the program for dtype and the case switches (opencl_plan.defines: () for a case with
    the defaults, whose options are the device's and the dtype's alone)."""
    import pyopencl as cl

    tune = session["tuning"]
    options = [f"-DAPPLY_LS={tune['apply_ls']}", *_DTYPE_DEFINES[dtype]]
    if tune["nt_bytes"] is not None:
        options.append("-DNT_STORES")
    if tune["prefetch"]:
        options.append("-DPREFETCH")
    if dtype != "float64" and session["device"].single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
        options.append("-cl-fp32-correctly-rounded-divide-sqrt")
    return options + list(switches)


def _build(session, dtype: str, switches: tuple[str, ...] = ()):
    """The program of the session's family for dtype and the case switches, built once per session (keyed by
    (dtype, *switches): a session has one family); raises RuntimeError(first build-log line) on failure."""
    import pyopencl as cl

    programs, family = session["programs"], session["family"]
    key = (dtype, *switches)
    if key not in programs:
        files = f"{family}_*.cl"
        source = program_source(family, tuple(getattr(session["planner"], "SOURCES", ())))
        options = build_options(session, dtype, switches)
        try:
            with warnings.catch_warnings():  # Intel's compiler always logs remarks; they are no news
                warnings.simplefilter("ignore", cl.CompilerWarning)
                program = cl.Program(session["context"], source).build(options=options)
        except cl.Error as exc:
            what = " ".join((dtype, *switches))
            raise RuntimeError(f"OpenCL build of {HEADER} + {files} for {what} failed: {_first_log_line(exc)}") from exc
        act = any(d.startswith("-DACT_") for d in switches)
        wanted = KERNELS if family == "cpu" else tuple(getattr(session["planner"], "KERNELS", ()))
        missing = [
            name
            for name in wanted
            if name not in program.kernel_names.split(";") and not (family == "cpu" and act and name in FUSED_BWD)
        ]
        if missing:
            raise RuntimeError(f"{files} has no kernel {missing[0]}")
        programs[key] = program
    return programs[key]


def family_reason(session) -> str | None:
    """Why the session's family cannot run any case here (its planner or its kernel files missing), or None."""
    family = session["family"]
    if session["planner"] is None:
        return f"the {family} kernel family has no planner yet (conformance/backends/opencl_{family}.py)"
    if not family_files(family):
        return f"the {family} kernel family has no kernel files yet ({kernels_dir()}/{family}_*.cl)"
    return None


def _defines(session, case) -> tuple[str, ...]:
    """The case's program switches: the planner's defines(case) or defines(session, case) (the cpu family's:
    opencl_plan.defines)."""
    fn = getattr(session["planner"], "defines", None) or opencl_plan.defines
    takes = len(inspect.signature(fn).parameters)
    return tuple(fn(session, case) if takes >= 2 else fn(case))


def open(device_key):  # noqa: A001 - the contract's name
    import pyopencl as cl

    match = [(info, dev) for info, dev in _enumerate() if info.key == device_key]
    if not match:
        raise Skip(f"no OpenCL device with key {device_key!r}")
    info, dev = match[0]
    try:
        tune = device_tuning(info.key, dev)  # apply_ls and nt_bytes fitted to the device (opencl_tuning.fit)
    except ValueError as exc:
        raise Skip(f"tuning overrides: {exc}") from None
    context = cl.Context([dev])
    queue = cl.CommandQueue(context, dev, properties=cl.command_queue_properties.PROFILING_ENABLE)
    session = {
        "info": info,
        "device": dev,
        "context": context,
        "queue": queue,
        "fast_queue": cl.CommandQueue(context, dev),
        "props": props(dev),
        "family": tune["family"],
        "planner": family_module(tune["family"]),
        "tuning": tune,
        "programs": {},
    }
    if family_reason(session) is None:  # else every case is unsupported, with the reason (supports())
        try:
            _build(session, "float32")
        except RuntimeError as exc:
            raise Skip(str(exc)) from None
    return session


def supports(session, case):
    info, dev = session["info"], session["device"]
    missing = family_reason(session)
    if missing:
        return missing
    if case.dtype == "float64" and not info.fp64:
        return "device lacks cl_khr_fp64"
    if case.dtype == "float16" and not info.fp16:
        return "device lacks cl_khr_fp16"
    n = math.prod(case.shape)
    if n >= 2**31:
        return f"{n} elements: the kernels index with 32-bit integers (limit 2^31 - 1)"
    data_bytes = n * np.dtype(case.dtype).itemsize
    if data_bytes > dev.max_mem_alloc_size:
        return f"x needs {data_bytes} bytes, more than the device's max allocation of {dev.max_mem_alloc_size} bytes"
    param_bytes = case.channels * np.dtype(case.param_dtype).itemsize
    total = data_bytes * opencl_plan.data_buffers(case) + param_bytes * 12
    if total > dev.global_mem_size:
        return f"the case needs {total} bytes of buffers, more than the device's {dev.global_mem_size} bytes of global memory"
    own = getattr(session["planner"], "supports", None) if session["family"] != "cpu" else None
    return own(session, case) if own is not None else None


# ---- run -----------------------------------------------------------------------------------------------------
def _bind(session, case, launches):
    """[(cl.Kernel, global, local)] with the arguments set once: a kernel object of its own per launch, so the
    timed repeats only enqueue. A buffer copy (opencl_plan.COPY) is bound as (None, source, destination)."""
    import pyopencl as cl

    program = _build(session, case.dtype, _defines(session, case))
    bound = []
    for name, gsize, lsize, args in launches:
        if name == opencl_plan.COPY:
            bound.append((None, *args))
            continue
        kernel = cl.Kernel(program, name)
        kernel.set_args(*args)
        bound.append((kernel, gsize, lsize))
    return bound


def _enqueue_all(queue, launches) -> list:
    """Run every launch (and copy) and wait; returns the events."""
    import pyopencl as cl

    events = [
        cl.enqueue_nd_range_kernel(queue, kernel, gsize, lsize)
        if kernel is not None
        else cl.enqueue_copy(queue, lsize, gsize)
        for kernel, gsize, lsize in launches
    ]
    queue.finish()
    return events


def _kernel_ms(events) -> float:
    return sum(ev.profile.end - ev.profile.start for ev in events) * 1e-6


def run(session, case, inputs, policy):
    import pyopencl as cl

    where = f"OpenCL on {session['info'].key}, case {case.name}"
    planner = session["planner"]
    if planner is None or family_reason(session):
        raise Unsupported(family_reason(session))
    try:
        try:
            buffers, launches = planner.plan(session, case, inputs)
        except NotImplementedError as exc:  # the family cannot run this case: unsupported, never the other family
            raise Unsupported(
                f"the {session['family']} kernel family does not run this case" + (f": {exc}" if str(exc) else "")
            ) from None
        launches = _bind(session, case, launches)
        _enqueue_all(session["fast_queue"], launches)
        data_t, param_t = np.dtype(case.dtype), np.dtype(case.param_dtype)
        source = {case.stats: "stat", "x_after": "x", "dy_after": "dy"}  # in place: y is x's buffer, dx dy's
        outputs = {}
        for name in case.outputs:
            if name in ("y", "dx", "x_after", "dy_after"):
                host = np.empty(case.shape, data_t)
            else:
                host = np.empty(case.channels, param_t)
            cl.enqueue_copy(session["queue"], host, buffers[source.get(name, name)], is_blocking=True)
            outputs[name] = host
        # wall time on a queue without profiling (it costs a few microseconds per launch on PoCL); kernel time
        # from profiling events in as many repeats, at most five, on a second queue
        walls, _ = time_repeats(lambda: _enqueue_all(session["fast_queue"], launches), policy)
        kernel_ms = [_kernel_ms(_enqueue_all(session["queue"], launches)) for _ in range(min(len(walls), 5))]
    except cl.Error as exc:
        raise RuntimeError(f"{where}: {exc}".splitlines()[0]) from exc
    except RuntimeError as exc:  # a build failure of a lazily built program
        raise RuntimeError(f"{where}: {exc}") from exc
    notes = getattr(planner, "notes", opencl_plan.notes)
    traffic = getattr(planner, "traffic_for", None)  # the bytes the chosen kernels move (bench's roofline)
    return Result(
        outputs=outputs,
        wall_ms=walls,
        kernel_ms=kernel_ms,
        notes=notes(case),
        traffic=traffic(session, case) if traffic is not None else None,
    )


def measure_copy(session, nbytes, policy):
    """The device's memory-copy roofline on nbytes: per repeat, the fastest of clEnqueueCopyBuffer, the segment
    copy kernel of kernels_cl/copy.cl (the same work split as the BatchNorm kernels, its arguments bound once
    like theirs) and, where the device's tuning has streaming stores, the same kernel with them, on two buffers
    allocated once per size (the bench asks every round for the same two sizes: x's bytes and one float)."""
    import pyopencl as cl

    streaming = session["tuning"]["nt_bytes"] is not None
    if "copy" not in session["programs"]:
        src = (kernels_dir() / "copy.cl").read_text()
        with warnings.catch_warnings():  # as for the BatchNorm program: Intel's remarks are no news
            warnings.simplefilter("ignore", cl.CompilerWarning)
            session["programs"]["copy"] = cl.Program(session["context"], src).build(
                options=["-DNT_STORES"] if streaming else []
            )
    cache = session.setdefault("copy_buffers", {})
    if nbytes not in cache:
        while len(cache) >= 2:  # the previous problem's size: free it
            cache.pop(next(iter(cache)))
        n = nbytes // 4
        mf = cl.mem_flags
        src = cl.Buffer(session["context"], mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=np.ones(n, np.float32))
        dst = cl.Buffer(session["context"], mf.READ_WRITE, n * 4)
        seg = session["tuning"]["seg"]
        kernels = []
        for name in ("copy_seg", "copy_seg_nt") if streaming and seg % 8 == 0 else ("copy_seg",):
            kernel = cl.Kernel(session["programs"]["copy"], name)
            kernel.set_args(src, dst, np.uint64(n), np.uint32(seg))
            kernels.append(kernel)
        cache[nbytes] = (src, dst, kernels, (-(-n // seg),))
    src, dst, kernels, gsize = cache[nbytes]
    queue = session["fast_queue"]

    def by_kernel(kernel):
        def go():
            cl.enqueue_nd_range_kernel(queue, kernel, gsize, (1,))
            queue.finish()

        return go

    def by_copy():
        cl.enqueue_copy(queue, dst, src)
        queue.finish()

    walls = [time_repeats(fn, policy)[0] for fn in (*map(by_kernel, kernels), by_copy)]
    return [min(w) for w in zip(*walls)]
