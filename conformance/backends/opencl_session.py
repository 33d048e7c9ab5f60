"""The OpenCL backend's devices and sessions: every device of every platform with a stable key (enumerate_devices),
the properties its kernel family and tuning are chosen from (props, device_tuning), and the session open() makes
for one device (Session: context, queues, family, planner, tuning, and the cache of built programs)."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

from . import opencl_plan, opencl_program, opencl_tuning
from .base import DeviceInfo, Skip

if TYPE_CHECKING:
    import pyopencl as cl

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


@dataclass
class SessionCache:
    """What a session builds and allocates when first needed, then keeps (the one mutable part of a Session)."""

    programs: dict[tuple[str, ...], cl.Program] = field(default_factory=dict)  # by (dtype, *switches)
    copy_program: cl.Program | None = None  # kernels_cl/copy.cl, for measure_copy
    copy_buffers: dict[int, tuple] = field(default_factory=dict)  # nbytes -> (src, dst, kernels, global size)


@dataclass(frozen=True)
class Session:
    """One OpenCL device opened for a run (open()): what every case on it runs with."""

    info: DeviceInfo  # the device as devices() lists it
    device: cl.Device
    context: cl.Context
    profiling_queue: cl.CommandQueue  # with profiling: outputs read back, kernel times from its events
    plain_queue: cl.CommandQueue  # without profiling (a few microseconds per launch on PoCL): runs, wall times
    properties: dict  # props(device): what the family and its parameters were chosen from
    family: str  # the kernel family: "cpu" or "gpu"
    planner: ModuleType | None  # the family's planner (family_module); None where it does not exist yet
    tuning: dict  # the family's parameters (opencl_tuning.params, with the run's overrides, fitted to the device)
    cache: SessionCache = field(default_factory=SessionCache)


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


def _device_info(key: str, platform, dev) -> DeviceInfo:
    """The DeviceInfo of a device: its names and versions, and in `extra` its limits and the family and tuning
    it runs with (`family` empty and `tuning` "invalid: ..." where the run's overrides are malformed)."""
    ext = dev.extensions.split()
    try:
        tune = device_tuning(key, dev)
        chosen = {"family": tune["family"], "tuning": opencl_tuning.compact(tune)}
    except ValueError as exc:  # open() says it, as the device's skip reason
        chosen = {"family": "", "tuning": f"invalid: {exc}"}
    return DeviceInfo(
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


def enumerate_devices():
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
            found.append((_device_info(key, platform, dev), dev))
    return found


# ---- session -------------------------------------------------------------------------------------------------
def family_reason(session: Session) -> str | None:
    """Why the session's family cannot run any case here (its planner or its kernel files missing), or None."""
    family = session.family
    if session.planner is None:
        return f"the {family} kernel family has no planner yet (conformance/backends/opencl_{family}.py)"
    if not opencl_program.family_files(family):
        return f"the {family} kernel family has no kernel files yet ({opencl_program.kernels_dir()}/{family}_*.cl)"
    return None


def open_session(device_key) -> Session:
    """The session of the device with this key, its float32 program built (where its family can run at all);
    raises Skip when there is no such device, the run's tuning overrides are malformed, or the build fails."""
    import pyopencl as cl

    match = [(info, dev) for info, dev in enumerate_devices() if info.key == device_key]
    if not match:
        raise Skip(f"no OpenCL device with key {device_key!r}")
    info, dev = match[0]
    try:
        tune = device_tuning(info.key, dev)  # apply_ls and nt_bytes fitted to the device (opencl_tuning.fit)
    except ValueError as exc:
        raise Skip(f"tuning overrides: {exc}") from None
    context = cl.Context([dev])
    session = Session(
        info=info,
        device=dev,
        context=context,
        profiling_queue=cl.CommandQueue(context, dev, properties=cl.command_queue_properties.PROFILING_ENABLE),
        plain_queue=cl.CommandQueue(context, dev),
        properties=props(dev),
        family=tune["family"],
        planner=family_module(tune["family"]),
        tuning=tune,
    )
    if family_reason(session) is None:  # else every case is unsupported, with the reason (supports())
        try:
            opencl_program.build(session, "float32")
        except RuntimeError as exc:
            raise Skip(str(exc)) from None
    return session
