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

from . import opencl_tuning  # noqa: E402
from .base import DeviceInfo, Result, Skip, time_repeats  # noqa: E402

NAME = "opencl"
KERNEL_FILE = "batchnorm.cl"
KERNELS = ("bn_fused_train_cf", "bn_fused_bwd_cf", "bn_stats_partial_cf", "bn_stats_partial_cl", "bn_stats_final", "bn_apply",
           "bn_bwd_partial_cf", "bn_bwd_partial_cl", "bn_bwd_final", "bn_bwd_apply")
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
        tune = session["tuning"]
        options = [f"-DAPPLY_LS={tune['apply_ls']}", *_DTYPE_DEFINES[dtype]]
        if dtype != "float64" and session["device"].single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
            options.append("-cl-fp32-correctly-rounded-divide-sqrt")
        try:
            with warnings.catch_warnings():  # Intel's compiler always logs remarks; they are no news
                warnings.simplefilter("ignore", cl.CompilerWarning)
                program = cl.Program(session["context"], source).build(options=options)
        except cl.Error as exc:
            raise RuntimeError(f"OpenCL build of {path.name} for {dtype} failed: {_first_log_line(exc)}") from exc
        programs[dtype] = {name: getattr(program, name) for name in KERNELS}
    return programs[dtype]


def open(device_key):  # noqa: A001 - the contract's name
    import pyopencl as cl

    match = [(info, dev) for info, dev in _enumerate() if info.key == device_key]
    if not match:
        raise Skip(f"no OpenCL device with key {device_key!r}")
    info, dev = match[0]
    tune = opencl_tuning.params(info.key)
    limit = min(int(dev.max_work_group_size), int(dev.max_work_item_sizes[0]))
    tune["apply_ls"] = 1 << (min(tune["apply_ls"], limit).bit_length() - 1)
    context = cl.Context([dev])
    queue = cl.CommandQueue(context, dev, properties=cl.command_queue_properties.PROFILING_ENABLE)
    session = {"info": info, "device": dev, "context": context, "queue": queue,
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
    total = data_bytes * (4 if case.backward else 2) + param_bytes * 12
    if total > dev.global_mem_size:
        return f"the case needs {total} bytes of buffers, more than the device's {dev.global_mem_size} bytes of global memory"
    return None


# ---- run -----------------------------------------------------------------------------------------------------
def _split(n_items: int, per_group: int, groups_other: int, want_groups: int) -> tuple[int, int]:
    """(chunk, K): n_items cut into K chunks of `chunk`, at most per_group each, and smaller while fewer
    than want_groups work-groups (K x groups_other) would run."""
    chunk = max(1, min(per_group, n_items))
    while chunk > 1 and groups_other * -(-n_items // chunk) < want_groups:
        chunk = max(1, chunk // 2)
    return chunk, -(-n_items // chunk)


def _plan(session, case, inputs):
    """Buffers (name -> cl.Buffer) and launches [(kernel, global, local, args)] for the whole operation."""
    import pyopencl as cl

    ctx, tune = session["context"], session["tuning"]
    als, seg = tune["apply_ls"], tune["seg"]
    kernels = _build(session, case.dtype)
    mf = cl.mem_flags
    acc = np.dtype(case.param_dtype).type
    u32, i32 = np.uint32, np.int32
    n, C, inner, outer, m = math.prod(case.shape), case.channels, case.inner, case.outer, case.count
    item = np.dtype(case.dtype).itemsize
    data_bytes = n * item
    param_bytes = C * np.dtype(case.param_dtype).itemsize
    want = tune["min_groups"] * session["info"].extra.get("compute_units", 1)
    chan_last = inner == 1

    def upload(arr, flags=mf.READ_ONLY):
        return cl.Buffer(ctx, flags | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(arr))

    b = {"x": upload(inputs.x), "gamma": upload(inputs.gamma), "beta": upload(inputs.beta),
         "running_mean": upload(inputs.running_mean, mf.READ_WRITE),
         "running_var": upload(inputs.running_var, mf.READ_WRITE),
         "y": cl.Buffer(ctx, mf.WRITE_ONLY, data_bytes),
         "mean_w": cl.Buffer(ctx, mf.READ_WRITE, param_bytes), "invstd_w": cl.Buffer(ctx, mf.READ_WRITE, param_bytes)}
    # mean_w / invstd_w: the batch mean and invstd the statistics kernel leaves for the elementwise kernels
    width = C if chan_last else inner
    elementwise = ((-(-n // seg),), (1,))
    c_groups = -(-C // als)
    if chan_last:  # reductions over chunks of rows, one work-item per (block of 16 channels, chunk)
        blocks = -(-C // 16)
        chunk, K = _split(outer, max(1, tune["chunk_bytes"] // (16 * item)), blocks, want)
        red_shape = ((blocks, K), (1, 1))
    else:  # reductions over chunks of each channel, one work-item per (chunk, channel)
        chunk, K = _split(m, tune["chunk"], C, want)
        red_shape = ((K, C), (1, 1))
    per_channel = ((c_groups * als,), (als,))
    b["part"] = cl.Buffer(ctx, mf.READ_WRITE, K * param_bytes * 3)
    eps = acc(case.eps)
    launches = []
    train = case.mode == "train"
    # channel-first channels small enough to stay in cache, and enough of them: one work-item per channel
    fused = not chan_last and m * item * (2 if case.backward else 1) <= tune["fused_bytes"] and C >= want
    p = case.momentum if case.momentum_dir == "old" else 1.0 - case.momentum  # framework-style parameter
    stats_args = (eps, acc(p), i32(case.momentum_dir == "new"), i32(case.running_var == "unbiased"),
                  i32(case.stats == "invstd"), b["running_mean"], b["running_var"])
    if train and fused:
        b["mean"] = cl.Buffer(ctx, mf.WRITE_ONLY, param_bytes)
        b["stat"] = cl.Buffer(ctx, mf.WRITE_ONLY, param_bytes)
        launches.append((kernels["bn_fused_train_cf"], (C,), (1,), (
            b["x"], b["y"], u32(C), u32(inner), u32(m), b["gamma"], b["beta"], i32(case.fix_gamma), *stats_args,
            b["mean"], b["stat"], b["mean_w"], b["invstd_w"])))
        stats = (b["mean_w"], b["invstd_w"], i32(0), eps)
    elif train:
        b["mean"] = cl.Buffer(ctx, mf.WRITE_ONLY, param_bytes)
        b["stat"] = cl.Buffer(ctx, mf.WRITE_ONLY, param_bytes)
        if chan_last:  # statistics in stages: partial sums per chunk, then per channel
            launches.append((kernels["bn_stats_partial_cl"], *red_shape, (b["x"], u32(C), u32(outer), u32(chunk), b["part"])))
        else:
            launches.append((kernels["bn_stats_partial_cf"], *red_shape,
                             (b["x"], u32(C), u32(inner), u32(m), u32(chunk), b["part"])))
        launches.append((kernels["bn_stats_final"], *per_channel, (
            b["part"], b["x"], u32(C), u32(inner), u32(K), u32(m), *stats_args,
            b["mean"], b["stat"], b["mean_w"], b["invstd_w"])))
        stats = (b["mean_w"], b["invstd_w"], i32(0), eps)  # the batch mean and invstd
    else:  # inference reads the running statistics directly: one launch
        stats = (b["running_mean"], b["running_var"], i32(1), eps)
    if not (train and fused):
        launches.append((kernels["bn_apply"], *elementwise, (
            b["x"], b["y"], np.uint64(n), u32(width), u32(C), u32(seg), i32(chan_last), *stats, b["gamma"],
            b["beta"], i32(case.fix_gamma))))
    if case.backward:
        b["dy"] = upload(inputs.dy)
        b["dx"] = cl.Buffer(ctx, mf.WRITE_ONLY, data_bytes)
        for name in ("dbeta", "dgamma_sum", "dgamma"):
            b[name] = cl.Buffer(ctx, mf.READ_WRITE, param_bytes)
        if fused:
            launches.append((kernels["bn_fused_bwd_cf"], (C,), (1,), (
                b["x"], b["dy"], b["dx"], u32(C), u32(inner), u32(m), *stats, b["gamma"], i32(case.fix_gamma),
                b["dbeta"], b["dgamma_sum"], b["dgamma"], i32(train))))
            return b, launches
        if chan_last:
            launches.append((kernels["bn_bwd_partial_cl"], *red_shape,
                             (b["x"], b["dy"], u32(C), u32(outer), u32(chunk), stats[0], b["part"])))
        else:
            launches.append((kernels["bn_bwd_partial_cf"], *red_shape,
                             (b["x"], b["dy"], u32(C), u32(inner), u32(m), u32(chunk), stats[0], b["part"])))
        launches.append((kernels["bn_bwd_final"], *per_channel, (
            b["part"], u32(C), u32(K), *stats[1:], i32(case.fix_gamma), b["dbeta"], b["dgamma_sum"], b["dgamma"])))
        launches.append((kernels["bn_bwd_apply"], *elementwise, (
            b["x"], b["dy"], b["dx"], np.uint64(n), u32(width), u32(C), u32(seg), i32(chan_last), u32(m), *stats,
            b["gamma"], i32(case.fix_gamma), b["dbeta"], b["dgamma_sum"], i32(train))))
    return b, launches


def _enqueue_all(session, launches) -> float:
    """Run every launch, wait, and return the summed kernel time in ms (profiling events)."""
    queue = session["queue"]
    events = [kernel(queue, gsize, lsize, *args) for kernel, gsize, lsize, args in launches]
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


def measure_copy(session, nbytes, policy):
    """The device's memory-copy roofline on nbytes: per repeat, the faster of clEnqueueCopyBuffer and the
    segment copy kernel of kernels_cl/copy.cl (the same work split as the BatchNorm kernels), on two buffers
    allocated once."""
    import pyopencl as cl

    if "copy" not in session["programs"]:
        src = (kernels_dir() / "copy.cl").read_text()
        session["programs"]["copy"] = cl.Program(session["context"], src).build().copy_seg
    kernel = session["programs"]["copy"]
    n = nbytes // 4
    seg = session["tuning"]["seg"]
    mf = cl.mem_flags
    src = cl.Buffer(session["context"], mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=np.ones(n, np.float32))
    dst = cl.Buffer(session["context"], mf.READ_WRITE, n * 4)
    queue = session["queue"]

    def by_kernel():
        kernel(queue, (-(-n // seg),), (1,), src, dst, np.uint64(n), np.uint32(seg))
        queue.finish()

    def by_copy():
        cl.enqueue_copy(queue, dst, src)
        queue.finish()

    walls_k, _ = time_repeats(by_kernel, policy)
    walls_c, _ = time_repeats(by_copy, policy)
    return [min(a, b) for a, b in zip(walls_k, walls_c)]
