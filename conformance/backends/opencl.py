"""The system under test: BatchNorm in OpenCL C (kernels_cl/) driven through pyopencl.

Two kernel families over one shared header (kernels_cl/bn_common.h: types, loads and stores, act, compensated
sums, the per-channel finishing): `cpu` (kernels_cl/cpu_*.cl, planned by opencl_plan.py: one work-item per
work-group walking long runs 8 values at a time) and `gpu` (kernels_cl/gpu_*.cl, planned by opencl_gpu.py:
work-groups of many work-items, coalesced, two-level reductions). A device gets one family for the whole run,
chosen with its parameters by opencl_tuning.params() from the device's properties (props(): device type,
compute units, work-group and local-memory limits, extensions) and the tuning table, and `--tune KEY=VALUE`
overrides (environment variable CONFORMANCE_OPENCL_TUNE in the worker); session.family says which. A case
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
(data type, switches), built when a case first needs it (opencl_shared.defines): a case with the defaults builds
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

This module is the backend's contract (conformance/backends/base.py); the work is done by
  opencl_session.py  the devices (keys, properties, tuning) and the Session open() makes for one of them
  opencl_program.py  the program source of a family, its build options, the build (cached in the session)
  opencl_run.py      one case: plan bound to kernels, run, outputs read back, timed; the memory-copy roofline
"""

from __future__ import annotations

import math

import numpy as np

from ..opencl_env import NOTES, register_runtimes
from . import opencl_run, opencl_shared
from .opencl_program import KERNELS, build_options, family_files, kernels_dir, program_source
from .opencl_run import bind, enqueue_all
from .opencl_session import Session, enumerate_devices, family_reason, open_session, props

# before pyopencl is first imported (it decides which OpenCL platforms exist): the modules above import it only
# inside their functions
register_runtimes()

__all__ = [  # the contract (base.py), then what the worker and the tests use from here
    "NAME",
    "IMPLEMENTS",
    "available",
    "devices",
    "open",
    "supports",
    "run",
    "measure_copy",
    "NOTES",
    "KERNELS",
    "Session",
    "bind",
    "build_options",
    "enqueue_all",
    "enumerate_devices",
    "family_files",
    "kernels_dir",
    "program_source",
    "props",
]

NAME = "opencl"
IMPLEMENTS = frozenset({"update_running=0", "update_running=1", "act=relu", "act=sigmoid", "act=tanh", "inplace=1"})


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


def devices():
    if available() is not None:
        return []
    return [info for info, _ in enumerate_devices()]


def open(device_key) -> Session:
    return open_session(device_key)


def supports(session: Session, case):
    info, dev = session.info, session.device
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
    total = data_bytes * opencl_shared.data_buffers(case) + param_bytes * 12
    if total > dev.global_mem_size:
        return (
            f"the case needs {total} bytes of buffers, "
            f"more than the device's {dev.global_mem_size} bytes of global memory"
        )
    own = getattr(session.planner, "supports", None) if session.family != "cpu" else None
    return own(session, case) if own is not None else None


def run(session: Session, case, inputs, policy):
    return opencl_run.run_case(session, case, inputs, policy)


def measure_copy(session: Session, nbytes, policy):
    """The device's memory-copy roofline on nbytes (opencl_run.measure_copy)."""
    return opencl_run.measure_copy(session, nbytes, policy)
