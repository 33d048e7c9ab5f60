"""What both OpenCL kernel families share: the program switches of a case (defines), the buffers every plan
starts from and the backward's, the statistics kernels' profile arguments, and the in-place note. The planners
(opencl_plan: `cpu`, opencl_gpu: `gpu`) build their launches from these."""

from __future__ import annotations

import numpy as np

COPY = "copy"  # a launch that copies a buffer: (COPY, None, None, (source, destination))


def defines(case) -> tuple[str, ...]:
    """The program switches (build options) a case needs beyond the device's and its dtype's: () for a case with
    the defaults (no act, update_running as mode says), so it runs the program it always ran."""
    out = []
    if case.act != "none":
        out.append(f"-DACT_{case.act.upper()}")
    if case.mode == "train" and not case.updates_running:
        out.append("-DKEEP_RUNNING")
    elif case.mode != "train" and case.updates_running:
        out.append("-DNORM_RUNNING")
    return tuple(out)


def data_buffers(case) -> int:
    """Buffers of x's size plan() allocates: x and y, with backward dy and dx too; in place y is x's buffer and dx
    dy's, and backward reads a copy of x."""
    if not case.backward:
        return 1 if case.inplace else 2
    return 3 if case.inplace else 4


def inplace_note(case) -> list[str]:
    """The note of an in-place case, the same for every family."""
    if not case.inplace:
        return []
    return [
        "in place: y written over x's buffer"
        + (
            ", dx over dy's; backward read a copy of x made on the device at the start of the call"
            if case.backward
            else ""
        )
    ]


def backward_buffers(ctx, b: dict, launches: list, dy_buffer, inplace: bool, data_bytes: int, param_bytes: int):
    """The backward's buffers in b (dy, dx: dy's own buffer in place, dbeta, dgamma_sum, dgamma), for either family;
    returns the buffer backward reads x from: in place the forward overwrites x, so a copy taken first thing in
    the call."""
    import pyopencl as cl

    mf = cl.mem_flags
    b["dy"] = dy_buffer
    b["dx"] = b["dy"] if inplace else cl.Buffer(ctx, mf.WRITE_ONLY, data_bytes)
    x_bwd = b["x"]
    if inplace:
        b["x_saved"] = x_bwd = cl.Buffer(ctx, mf.READ_WRITE, data_bytes)
        launches.insert(0, (COPY, None, None, (b["x"], x_bwd)))
    for name in ("dbeta", "dgamma_sum", "dgamma"):
        b[name] = cl.Buffer(ctx, mf.READ_WRITE, param_bytes)
    return x_bwd


def upload(ctx, arr, flags=None):
    """A buffer initialised with arr (flags: read-only unless given), for either family."""
    import pyopencl as cl

    mf = cl.mem_flags
    flags = mf.READ_ONLY if flags is None else flags
    return cl.Buffer(ctx, flags | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(arr))


def input_buffers(ctx, inputs, data_in, param_bytes: int) -> dict:
    """The buffers every plan starts from, for either family: x (data_in: read-write in place, where it is y's
    buffer too), gamma, beta, the running statistics, and mean_w / invstd_w: the batch mean and invstd the
    statistics kernels leave for the elementwise kernels."""
    import pyopencl as cl

    mf = cl.mem_flags
    return {
        "x": upload(ctx, inputs.x, data_in),
        "gamma": upload(ctx, inputs.gamma),
        "beta": upload(ctx, inputs.beta),
        "running_mean": upload(ctx, inputs.running_mean, mf.READ_WRITE),
        "running_var": upload(ctx, inputs.running_var, mf.READ_WRITE),
        "mean_w": cl.Buffer(ctx, mf.READ_WRITE, param_bytes),
        "invstd_w": cl.Buffer(ctx, mf.READ_WRITE, param_bytes),
    }


def running_args(case, b: dict) -> tuple:
    """The profile's arguments of the statistics kernels, for either family: eps, the framework-style momentum,
    its direction, the running-variance estimator, the extra statistic; then the running statistics' buffers."""
    acc, i32 = np.dtype(case.param_dtype).type, np.int32
    p = case.momentum if case.momentum_dir == "old" else 1.0 - case.momentum  # framework-style parameter
    return (
        acc(case.eps),
        acc(p),
        i32(case.momentum_dir == "new"),
        i32(case.running_var == "unbiased"),
        i32(case.stats == "invstd"),
        b["running_mean"],
        b["running_var"],
    )
