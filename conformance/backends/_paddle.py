"""What the two PaddlePaddle backends (paddle_nn, paddle_functional) share.

Paddle is imported lazily, inside these functions: the backend modules are only ever imported in their own
worker process, and Paddle must never share a process with MindSpore (their bundled oneDNN builds clash).
Everything runs in dygraph (eager) mode (paddle_static: in a static program) on the device open() pins.

Devices (devices(), shared by the three backends): the CPU (key None: the targets stay `paddle`, ...), then every
device this build can use, each a target: `gpu:N` (CUDA or ROCm builds: paddle.device.is_compiled_with_cuda() /
is_compiled_with_rocm(), paddle.device.cuda.device_count(), get_device_name(i)), `xpu:N`
(is_compiled_with_xpu(), paddle.device.xpu.device_count()), and the registered custom devices as Paddle names
them (paddle.device.get_available_custom_device(), e.g. `npu:0`). Where there is none, the CPU device's
extra["devices_note"] says why in one line. pin(key) (each backend's open()) checks the key against devices() (an
unknown one is Skip) and calls paddle.set_device(key), whose Place place() returns for the static Executor;
tensors are then created there (paddle.to_tensor) and read back with Tensor.numpy(); on a device other than the
CPU each timed call ends with paddle.device.synchronize().

Layouts: Paddle's BatchNorm has no axis parameter, only a layout string whose channel axis is 1 ('NCHW'
style) or the last one ('NHWC' style). A case with its channel axis there runs as is; any other channel
axis cannot be expressed and supports() says so. Paddle's batch_norm kernel accepts ranks 2 to 5; other
ranks are tried and the kernel's own message becomes the 'unsupported' reason.
"""

from __future__ import annotations

import numpy as np

from ..errors import first_line
from .base import DeviceInfo, Result, Skip, Unsupported, time_repeats

_paddle = None
_PINNED: dict = {}  # "key": the device key open() pinned (None: the CPU), "place": its Place


def paddle():
    """The paddle module, imported on first use and set to the CPU (until pin() chooses a device)."""
    global _paddle
    if _paddle is None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No ccache found" on import: noise
            import paddle as p
        p.set_device("cpu")
        p.disable_static()
        _paddle = p
    return _paddle


def available():
    try:
        paddle()
    except Exception as exc:  # missing or broken install
        return f"paddle import failed: {first_line(exc)}"
    return None


def version() -> str:
    try:
        return paddle().__version__
    except Exception:
        return ""


def _accelerators():
    """([DeviceInfo] of every non-CPU device this Paddle build can use here, why there is none: '' when there is)."""
    dev = paddle().device
    found, lacking, unseen = [], [], []
    gpu = "ROCm" if dev.is_compiled_with_rocm() else "CUDA"
    if not (dev.is_compiled_with_cuda() or dev.is_compiled_with_rocm()):
        lacking.append("CUDA/ROCm")
    elif dev.cuda.device_count() == 0:
        unseen.append(f"{gpu} compiled in, paddle.device.cuda.device_count() 0")
    else:
        found += [
            DeviceInfo(
                key=f"gpu:{i}", name=dev.cuda.get_device_name(i), vendor=gpu, platform="paddle gpu", driver=version()
            )
            for i in range(dev.cuda.device_count())
        ]
    if not dev.is_compiled_with_xpu():
        lacking.append("XPU")
    elif dev.xpu.device_count() == 0:
        unseen.append("XPU compiled in, paddle.device.xpu.device_count() 0")
    else:
        found += [
            DeviceInfo(key=f"xpu:{i}", name=f"XPU {i}", vendor="Kunlun", platform="paddle xpu", driver=version())
            for i in range(dev.xpu.device_count())
        ]
    custom = list(dev.get_available_custom_device() or [])
    found += [
        DeviceInfo(key=k, name=k, vendor="custom device", platform="paddle custom device", driver=version())
        for k in custom
    ]
    if found:
        return found, ""
    why = ([f"compiled without {'/'.join(lacking)}"] if lacking else []) + unseen + ["no custom device registered"]
    return [], f"no accelerator: paddle {version()} " + "; ".join(why)


def devices():
    accel, note = _accelerators()
    return [
        DeviceInfo(
            key=None,
            name="CPU",
            vendor="PaddlePaddle",
            driver=version(),
            fp16=True,
            fp64=True,
            extra={"devices_note": note} if note else {},
        )
    ] + accel


def pin(device_key):
    """Make device_key (None: the CPU) Paddle's device for this process; its Place. An unknown key is Skip."""
    p = paddle()
    if device_key is not None:
        keys = [d.key for d in devices() if d.key]
        if device_key not in keys:
            raise Skip(
                f"paddle has no device {device_key!r} here (found: the CPU, key None{''.join(', ' + k for k in keys)})"
            )
    _PINNED.update(key=device_key, place=p.set_device(device_key or "cpu"))
    return _PINNED["place"]


def place():
    """The Place pin() chose (the CPU before any pin)."""
    return _PINNED.get("place") or paddle().CPUPlace()


def sync() -> None:
    """Wait for the pinned device (nothing to wait for on the CPU)."""
    if _PINNED.get("key") is not None:
        paddle().device.synchronize()


def layout(case) -> str | None:
    """'NCHW' when the channel axis is 1, 'NHWC' when it is the last axis, else None."""
    ax = case.channel_axis
    if ax == 1:
        return "NCHW"
    if ax == len(case.shape) - 1:
        return "NHWC"
    return None


def common_supports(api: str, case) -> str | None:
    if case.fix_gamma:
        return f"{api} has no fix_gamma parameter"
    if layout(case) is None:
        return (
            f"{api} has no axis parameter: its layouts put the channels on axis 1 (NCHW) or last (NHWC), "
            f"not on axis {case.channel_axis} of a rank-{len(case.shape)} input"
        )
    return None


# Paddle's error categories for "this input is not accepted" (phi::errors::InvalidArgument, NotFound, ...).
_REJECT_TAGS = ("(InvalidArgument)", "(NotFound)", "(Unimplemented)", "(OutOfRange)")


def rejected(exc: BaseException) -> bool:
    """Whether exc is Paddle refusing the input (argument checks, kernel not registered), not a failure."""
    msg = str(exc).strip()
    return isinstance(exc, (ValueError, NotImplementedError)) or msg.startswith(_REJECT_TAGS)


def to_numpy(t) -> np.ndarray:
    return np.array(t.numpy(), copy=True)


def execute(case, inputs, policy, make_call, params):
    """Run the call, read its outputs back, then time it.

    make_call(x) -> y runs the forward pass (it may update the running statistics in place); params() ->
    (weight, bias, running_mean, running_var) are the Paddle tensors the call used, read back afterwards.
    """
    p = paddle()
    x = p.to_tensor(inputs.x, stop_gradient=not case.backward)
    dy = p.to_tensor(inputs.dy) if case.backward else None

    def call():
        y = make_call(x)
        if not case.backward:
            sync()
            return y, None
        weight, bias = params()[:2]
        grads = p.grad([y], [x, weight, bias], grad_outputs=[dy])
        sync()
        return y, grads

    try:
        y, grads = call()
    except Exception as exc:
        if rejected(exc):
            raise Unsupported(first_line(exc)) from None
        raise
    weight, bias, rmean, rvar = params()
    outputs = {"y": to_numpy(y), "running_mean": to_numpy(rmean), "running_var": to_numpy(rvar)}
    if grads is not None:
        outputs["dx"], outputs["dgamma"], outputs["dbeta"] = (to_numpy(g) for g in grads)
    untouched = {"x": to_numpy(x), "gamma": to_numpy(weight), "beta": to_numpy(bias)}
    if case.inplace:  # what the caller's tensors hold after an in-place call
        outputs["x_after"] = untouched["x"]
        if dy is not None:
            outputs["dy_after"] = to_numpy(dy)
    walls, _ = time_repeats(call, policy)  # later calls move the running statistics again: already read
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=[])
