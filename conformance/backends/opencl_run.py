"""Running one case with the OpenCL backend: the family's plan (buffers and launches) bound to kernel objects of
the session's program, one run whose outputs are read back, then the timed repeats (wall time on the plain queue,
kernel time from profiling events); and the device's memory-copy roofline (measure_copy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import opencl_plan, opencl_program, opencl_shared
from .base import Result, Unsupported, time_repeats
from .opencl_session import family_reason

if TYPE_CHECKING:
    from .opencl_session import Session

BIG_OUTPUTS = ("y", "dx", "x_after", "dy_after")  # outputs of x's shape; the others have one value per channel


def bind(session: Session, case, launches):
    """[(cl.Kernel, global, local)] with the arguments set once: a kernel object of its own per launch, so the
    timed repeats only enqueue. A buffer copy (opencl_shared.COPY) is bound as (None, source, destination)."""
    import pyopencl as cl

    program = opencl_program.build(session, case.dtype, opencl_program.case_switches(session, case))
    bound = []
    for name, gsize, lsize, args in launches:
        if name == opencl_shared.COPY:
            bound.append((None, *args))
            continue
        kernel = cl.Kernel(program, name)
        kernel.set_args(*args)
        bound.append((kernel, gsize, lsize))
    return bound


def enqueue_all(queue, launches) -> list:
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


def kernel_ms(events) -> float:
    return sum(ev.profile.end - ev.profile.start for ev in events) * 1e-6


def _plan(session: Session, case, inputs):
    """The family planner's (buffers, launches); Unsupported where the family cannot run the case (the planner
    raises NotImplementedError): never run by the other family."""
    try:
        return session.planner.plan(session, case, inputs)
    except NotImplementedError as exc:
        raise Unsupported(
            f"the {session.family} kernel family does not run this case" + (f": {exc}" if str(exc) else "")
        ) from None


def read_outputs(session: Session, case, buffers) -> dict:
    """The case's outputs read back from their buffers (in place: y is x's buffer, dx dy's)."""
    import pyopencl as cl

    data_t, param_t = np.dtype(case.dtype), np.dtype(case.param_dtype)
    source = {case.stats: "stat", "x_after": "x", "dy_after": "dy"}
    outputs = {}
    for name in case.outputs:
        host = np.empty(case.shape, data_t) if name in BIG_OUTPUTS else np.empty(case.channels, param_t)
        cl.enqueue_copy(session.profiling_queue, host, buffers[source.get(name, name)], is_blocking=True)
        outputs[name] = host
    return outputs


def run_case(session: Session, case, inputs, policy) -> Result:
    """The contract's run(): the outputs of the first run, the wall times of the repeats and the kernel times of
    as many of them, at most five."""
    import pyopencl as cl

    where = f"OpenCL on {session.info.key}, case {case.name}"
    planner = session.planner
    if planner is None or family_reason(session):
        raise Unsupported(family_reason(session))
    try:
        buffers, launches = _plan(session, case, inputs)
        launches = bind(session, case, launches)
        enqueue_all(session.plain_queue, launches)
        outputs = read_outputs(session, case, buffers)
        # wall time on a queue without profiling (it costs a few microseconds per launch on PoCL); kernel time
        # from profiling events in as many repeats, at most five, on a second queue
        walls, _ = time_repeats(lambda: enqueue_all(session.plain_queue, launches), policy)
        kernel = [kernel_ms(enqueue_all(session.profiling_queue, launches)) for _ in range(min(len(walls), 5))]
    except cl.Error as exc:
        raise RuntimeError(f"{where}: {exc}".splitlines()[0]) from exc
    except RuntimeError as exc:  # a build failure of a lazily built program
        raise RuntimeError(f"{where}: {exc}") from exc
    notes = getattr(planner, "notes", opencl_plan.notes)
    traffic = getattr(planner, "traffic_for", None)  # the bytes the chosen kernels move (bench's roofline)
    return Result(
        outputs=outputs,
        wall_ms=walls,
        kernel_ms=kernel,
        notes=notes(case),
        traffic=traffic(session, case) if traffic is not None else None,
    )


# ---- the memory-copy roofline --------------------------------------------------------------------------------
def _copy_buffers(session: Session, nbytes: int, streaming: bool):
    """(source, destination, copy kernels with their arguments bound, global size) for nbytes, allocated once per
    size; the previous problem's size is freed when a third size comes."""
    import pyopencl as cl

    cache = session.cache.copy_buffers
    if nbytes not in cache:
        while len(cache) >= 2:  # the previous problem's size: free it
            cache.pop(next(iter(cache)))
        n = nbytes // 4
        mf = cl.mem_flags
        src = cl.Buffer(session.context, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=np.ones(n, np.float32))
        dst = cl.Buffer(session.context, mf.READ_WRITE, n * 4)
        seg = session.tuning["seg"]
        kernels = []
        for name in ("copy_seg", "copy_seg_nt") if streaming and seg % 8 == 0 else ("copy_seg",):
            kernel = cl.Kernel(session.cache.copy_program, name)
            kernel.set_args(src, dst, np.uint64(n), np.uint32(seg))
            kernels.append(kernel)
        cache[nbytes] = (src, dst, kernels, (-(-n // seg),))
    return cache[nbytes]


def measure_copy(session: Session, nbytes, policy):
    """The device's memory-copy roofline on nbytes: per repeat, the fastest of clEnqueueCopyBuffer, the segment
    copy kernel of kernels_cl/copy.cl (the same work split as the BatchNorm kernels, its arguments bound once
    like theirs) and, where the device's tuning has streaming stores, the same kernel with them, on two buffers
    allocated once per size (the bench asks every round for the same two sizes: x's bytes and one float)."""
    import pyopencl as cl

    streaming = session.tuning["nt_bytes"] is not None
    opencl_program.build_copy(session, streaming)
    src, dst, kernels, gsize = _copy_buffers(session, nbytes, streaming)
    queue = session.plain_queue

    def by_kernel(kernel):
        def go():
            cl.enqueue_nd_range_kernel(queue, kernel, gsize, (1,))
            queue.finish()

        return go

    def by_copy():
        cl.enqueue_copy(queue, dst, src)
        queue.finish()

    walls = [time_repeats(fn, policy)[0] for fn in (*map(by_kernel, kernels), by_copy)]
    return [min(w) for w in zip(*walls, strict=False)]
