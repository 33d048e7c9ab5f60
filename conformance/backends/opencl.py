"""The system under test: BatchNorm in OpenCL C (kernels_cl/batchnorm.cl) driven through pyopencl.

One program per data type (built lazily, cached in the session). `choose()` picks the kernels from the
shape and the device's tuning (opencl_tuning.py), in opencl_plan.py:
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

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..opencl_env import NOTES, register_runtimes  # noqa: F401 - NOTES: the worker reports them

register_runtimes()  # before pyopencl is first imported: it decides which OpenCL platforms exist

from . import opencl_plan, opencl_tuning  # noqa: E402
from .base import DeviceInfo, Result, Skip, time_repeats  # noqa: E402

NAME = "opencl"
IMPLEMENTS = frozenset({"update_running=0", "update_running=1", "act=relu", "act=sigmoid", "act=tanh", "inplace=1"})
KERNEL_FILE = "batchnorm.cl"
KERNELS = ("bn_fused_train_cf", "bn_fused_train_cl", "bn_fused_train_cft", "bn_fused_bwd_cf", "bn_fused_bwd_cl",
           "bn_fused_bwd_cft", "bn_stats_partial_cf",
           "bn_stats_partial_cl", "bn_stats_final", "bn_apply", "bn_apply_cl", "bn_bwd_partial_cf", "bn_bwd_partial_cl",
           "bn_bwd_final", "bn_bwd_apply", "bn_bwd_apply_cl")
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
            info = DeviceInfo(
                key=key, name=dev.name.strip(), vendor=dev.vendor.strip(), platform=platform.name.strip(),
                driver=dev.driver_version.strip(), version=dev.version.strip(),
                fp16="cl_khr_fp16" in ext, fp64="cl_khr_fp64" in ext,
                extra={"max_work_group_size": int(dev.max_work_group_size),
                       "global_mem_size": int(dev.global_mem_size),
                       "compute_units": int(dev.max_compute_units),
                       "local_mem_size": int(dev.local_mem_size)},
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
    """The program for dtype and the case switches, built once per session; raises RuntimeError(first build-log
    line) on failure."""
    import pyopencl as cl

    programs = session["programs"]
    key = (dtype, *switches)
    if key not in programs:
        path = kernels_dir() / KERNEL_FILE
        source = path.read_text()
        options = build_options(session, dtype, switches)
        try:
            with warnings.catch_warnings():  # Intel's compiler always logs remarks; they are no news
                warnings.simplefilter("ignore", cl.CompilerWarning)
                program = cl.Program(session["context"], source).build(options=options)
        except cl.Error as exc:
            what = " ".join((dtype, *switches))
            raise RuntimeError(f"OpenCL build of {path.name} for {what} failed: {_first_log_line(exc)}") from exc
        act = any(d.startswith("-DACT_") for d in switches)
        missing = [name for name in KERNELS if name not in program.kernel_names.split(";")
                   and not (act and name in FUSED_BWD)]
        if missing:
            raise RuntimeError(f"{path.name} has no kernel {missing[0]}")
        programs[key] = program
    return programs[key]


def open(device_key):  # noqa: A001 - the contract's name
    import pyopencl as cl

    match = [(info, dev) for info, dev in _enumerate() if info.key == device_key]
    if not match:
        raise Skip(f"no OpenCL device with key {device_key!r}")
    info, dev = match[0]
    tune = opencl_tuning.params(info.key)
    limit = min(int(dev.max_work_group_size), int(dev.max_work_item_sizes[0]))
    tune["apply_ls"] = 1 << (min(tune["apply_ls"], limit).bit_length() - 1)
    if dev.mem_base_addr_align < 8 * 64:  # bits: a buffer must start on a 64-byte line for 8-value streaming stores
        tune["nt_bytes"] = None
    context = cl.Context([dev])
    queue = cl.CommandQueue(context, dev, properties=cl.command_queue_properties.PROFILING_ENABLE)
    session = {"info": info, "device": dev, "context": context, "queue": queue,
               "fast_queue": cl.CommandQueue(context, dev),
               "tuning": tune, "programs": {}}
    try:
        _build(session, "float32")
    except RuntimeError as exc:
        raise Skip(str(exc)) from None
    return session


def supports(session, case):
    info, dev = session["info"], session["device"]
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
    return None


# ---- run -----------------------------------------------------------------------------------------------------
def _bind(session, case, launches):
    """[(cl.Kernel, global, local)] with the arguments set once: a kernel object of its own per launch, so the
    timed repeats only enqueue. A buffer copy (opencl_plan.COPY) is bound as (None, source, destination)."""
    import pyopencl as cl

    program = _build(session, case.dtype, opencl_plan.defines(case))
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

    events = [cl.enqueue_nd_range_kernel(queue, kernel, gsize, lsize) if kernel is not None
              else cl.enqueue_copy(queue, lsize, gsize) for kernel, gsize, lsize in launches]
    queue.finish()
    return events


def _kernel_ms(events) -> float:
    return sum(ev.profile.end - ev.profile.start for ev in events) * 1e-6


def run(session, case, inputs, policy):
    import pyopencl as cl

    where = f"OpenCL on {session['info'].key}, case {case.name}"
    try:
        buffers, launches = opencl_plan.plan(session, case, inputs)
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
    return Result(outputs=outputs, wall_ms=walls, kernel_ms=kernel_ms, notes=opencl_plan.notes(case))


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
                options=["-DNT_STORES"] if streaming else [])
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
