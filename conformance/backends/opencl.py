"""The system under test: BatchNorm in OpenCL C (kernels_cl/batchnorm.cl) driven through pyopencl.

One program per data type (built lazily, cached in the session), five kernels:
  forward train   bn_stats (per channel) -> bn_apply (per element)
  forward infer   bn_infer_prep (per channel) -> bn_apply
  backward        bn_bwd_reduce (per channel) -> bn_bwd_apply (per element)
Every kernel runs with the same fixed local size, so a driver that compiles per launch shape (PoCL) compiles
once per program. The kernel takes the profile itself: momentum direction, running-variance estimator and
the extra statistic are kernel arguments.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..opencl_env import register_runtimes

register_runtimes()  # before pyopencl is first imported: it decides which OpenCL platforms exist

from .base import DeviceInfo, Result, Skip, time_repeats  # noqa: E402

NAME = "opencl"
KERNEL_FILE = "batchnorm.cl"
MAX_LOCAL_SIZE = 256
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
                       "compute_units": int(dev.max_compute_units)},
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


def _build(session, dtype: str):
    """The program for dtype, built once per session; raises RuntimeError(first build-log line) on failure."""
    import pyopencl as cl

    programs = session["programs"]
    if dtype not in programs:
        path = kernels_dir() / KERNEL_FILE
        source = path.read_text()
        options = [f"-DLOCAL_SIZE={session['local_size']}", *_DTYPE_DEFINES[dtype]]
        if dtype != "float64" and session["device"].single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
            options.append("-cl-fp32-correctly-rounded-divide-sqrt")
        try:
            with warnings.catch_warnings():  # Intel's compiler always logs remarks; they are no news
                warnings.simplefilter("ignore", cl.CompilerWarning)
                program = cl.Program(session["context"], source).build(options=options)
        except cl.Error as exc:
            raise RuntimeError(f"OpenCL build of {path.name} for {dtype} failed: {_first_log_line(exc)}") from exc
        programs[dtype] = {name: getattr(program, name) for name in
                           ("bn_stats", "bn_infer_prep", "bn_apply", "bn_bwd_reduce", "bn_bwd_apply")}
    return programs[dtype]


def open(device_key):  # noqa: A001 - the contract's name
    import pyopencl as cl

    match = [(info, dev) for info, dev in _enumerate() if info.key == device_key]
    if not match:
        raise Skip(f"no OpenCL device with key {device_key!r}")
    info, dev = match[0]
    limit = min(MAX_LOCAL_SIZE, int(dev.max_work_group_size), int(dev.max_work_item_sizes[0]))
    local_size = 1 << (limit.bit_length() - 1)  # the tree reduction wants a power of two
    context = cl.Context([dev])
    queue = cl.CommandQueue(context, dev, properties=cl.command_queue_properties.PROFILING_ENABLE)
    session = {"info": info, "device": dev, "context": context, "queue": queue,
               "local_size": local_size, "programs": {}}
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
    total = data_bytes * (4 if case.backward else 2) + param_bytes * 12
    if total > dev.global_mem_size:
        return f"the case needs {total} bytes of buffers, more than the device's {dev.global_mem_size} bytes of global memory"
    return None


# ---- run -----------------------------------------------------------------------------------------------------
def _round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


def _plan(session, case, inputs):
    """Buffers (name -> cl.Buffer) and launches [(kernel, global_size, args)] for the whole operation."""
    import pyopencl as cl

    ctx, ls = session["context"], session["local_size"]
    kernels = _build(session, case.dtype)
    mf = cl.mem_flags
    acc = np.dtype(case.param_dtype).type
    u32, i32 = np.uint32, np.int32
    n, C, inner, m = math.prod(case.shape), case.channels, case.inner, case.count
    data_bytes = n * np.dtype(case.dtype).itemsize
    param_bytes = C * np.dtype(case.param_dtype).itemsize

    def upload(arr, flags=mf.READ_ONLY):
        return cl.Buffer(ctx, flags | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(arr))

    b = {"x": upload(inputs.x), "gamma": upload(inputs.gamma), "beta": upload(inputs.beta),
         "running_mean": upload(inputs.running_mean, mf.READ_WRITE),
         "running_var": upload(inputs.running_var, mf.READ_WRITE),
         "y": cl.Buffer(ctx, mf.WRITE_ONLY, data_bytes)}
    for name in ("centre_w", "shift_w", "invstd_w"):  # per-channel work buffers shared by the kernels
        b[name] = cl.Buffer(ctx, mf.READ_WRITE, param_bytes)
    work = (b["centre_w"], b["shift_w"], b["invstd_w"])
    eps = acc(case.eps)
    channel_groups, element_items = C * ls, _round_up(n, ls)
    launches = []
    if case.mode == "train":
        b["mean"] = cl.Buffer(ctx, mf.WRITE_ONLY, param_bytes)
        b["stat"] = cl.Buffer(ctx, mf.WRITE_ONLY, param_bytes)
        p = case.momentum if case.momentum_dir == "old" else 1.0 - case.momentum  # framework-style parameter
        launches.append((kernels["bn_stats"], channel_groups, (
            b["x"], u32(C), u32(inner), u32(m), eps, acc(p), i32(case.momentum_dir == "new"),
            i32(case.running_var == "unbiased"), i32(case.stats == "invstd"),
            b["running_mean"], b["running_var"], b["mean"], b["stat"], *work)))
    else:
        launches.append((kernels["bn_infer_prep"], _round_up(C, ls), (
            b["running_mean"], b["running_var"], eps, u32(C), *work)))
    launches.append((kernels["bn_apply"], element_items, (
        b["x"], b["y"], u32(n), u32(C), u32(inner), *work, b["gamma"], b["beta"],
        i32(case.fix_gamma))))
    if case.backward:
        b["dy"] = upload(inputs.dy)
        b["dx"] = cl.Buffer(ctx, mf.WRITE_ONLY, data_bytes)
        for name in ("dbeta", "dgamma_sum", "dgamma"):
            b[name] = cl.Buffer(ctx, mf.READ_WRITE, param_bytes)
        launches.append((kernels["bn_bwd_reduce"], channel_groups, (
            b["x"], b["dy"], u32(C), u32(inner), u32(m), *work, i32(case.fix_gamma),
            b["dbeta"], b["dgamma_sum"], b["dgamma"])))
        launches.append((kernels["bn_bwd_apply"], element_items, (
            b["x"], b["dy"], b["dx"], u32(n), u32(C), u32(inner), u32(m), *work, b["gamma"],
            i32(case.fix_gamma), b["dbeta"], b["dgamma_sum"], i32(case.mode == "train"))))
    return b, launches


def _enqueue_all(session, launches) -> float:
    """Run every launch, wait, and return the summed kernel time in ms (profiling events)."""
    queue, ls = session["queue"], session["local_size"]
    events = [kernel(queue, (gsize,), (ls,), *args) for kernel, gsize, args in launches]
    queue.finish()
    return sum(ev.profile.end - ev.profile.start for ev in events) * 1e-6


def run(session, case, inputs, policy):
    import pyopencl as cl

    where = f"OpenCL on {session['info'].key}, case {case.name}"
    try:
        buffers, launches = _plan(session, case, inputs)
        _enqueue_all(session, launches)
        data_t, param_t = np.dtype(case.dtype), np.dtype(case.param_dtype)
        source = {case.stats: "stat"}
        outputs = {}
        for name in case.outputs:
            if name in ("y", "dx"):
                host = np.empty(case.shape, data_t)
            else:
                host = np.empty(case.channels, param_t)
            cl.enqueue_copy(session["queue"], host, buffers[source.get(name, name)], is_blocking=True)
            outputs[name] = host
        walls, kernel_ms = time_repeats(lambda: _enqueue_all(session, launches), policy)
    except cl.Error as exc:
        raise RuntimeError(f"{where}: {exc}".splitlines()[0]) from exc
    except RuntimeError as exc:  # a build failure of a lazily built program
        raise RuntimeError(f"{where}: {exc}") from exc
    return Result(outputs=outputs, wall_ms=walls, kernel_ms=kernel_ms)
