"""PyTorch: torch.nn.functional.batch_norm, with torch.ops.aten.native_batch_norm for the saved statistics.

y and the running statistics come from F.batch_norm(x, running_mean, running_var, weight, bias, training,
momentum, eps), which updates the running tensors it is handed in place; they are read back from those
tensors after the call. F.batch_norm returns y only, so the batch statistics come from a second call,
native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps) -> (y, save_mean,
save_invstd), made on separate copies of the running statistics so that the ones returned are from the
F.batch_norm call alone. In training they are EXTRA_OUTPUTS save_mean (the batch mean) and save_invstd
(1 / sqrt(biased batch var + eps)); in eval mode torch returns them empty, and they are not returned.
Backward is autograd on F.batch_norm: x, weight and bias require grad, y.backward(dy).

Conventions, from the torch.nn.BatchNorm1d/2d/3d pages (F.batch_norm defers to them):
  "the update rule for running statistics here is x_new = (1 - momentum) * x_hat + momentum * x_t"
                                                          -> momentum weighs the NEW value
  "At train time in the forward pass, the standard-deviation is calculated via the biased estimator ...
   However, the value stored in the moving average of the standard-deviation is calculated via the
   unbiased estimator, equivalent to torch.var(input, unbiased=True)."   -> unbiased running variance
  defaults eps=1e-05, momentum=0.1 (the signatures of F.batch_norm and BatchNorm2d).
F.batch_norm returns no batch statistic next to the mean (stats None).

Flag combinations (FLAGS, the page's words beside each): training, and running_stats 'given' (the running tensors
are passed) or None (running_mean=running_var=None, what BatchNorm2d does with track_running_stats=False).
training=True without running statistics normalises with the batch and updates nothing: the one combination
meaning update_running=0 (IMPLEMENTS). There the outputs running_mean and running_var are the caller's running
tensors, never handed to torch, read back after the call (equal to the inputs by construction; a note says
so). training=False without running statistics is undefined on the pages (torch refuses it: "running_mean
must be defined in evaluation mode"), run only by `conformance conventions`.

torch fixes the channel axis at 1: a case with its channel elsewhere is moved to axis 1 with numpy
(np.moveaxis) before the call, and y and dx are moved back after it. There is no fix_gamma. Timing covers
F.batch_norm (and its backward when the case has one), not the native_batch_norm call. The intra-op thread
count is torch's own default for this machine (torch.get_num_threads(), set explicitly in open()).

Devices (devices()): the CPU (key None: the target stays `torch`), then every accelerator this build can use,
each a target of its own: `cuda:N` (torch.cuda.is_available(), device_count(), get_device_name(i); ROCm builds
too, which torch addresses as cuda), `xpu:N` (torch.xpu, the same three calls), `mps` (torch.backends.mps
.is_available()). Where there is none, the CPU device's extra["devices_note"] says why in one line (what the build
lacks: torch.backends.cuda.is_built(), torch.xpu._is_compiled(), torch.backends.mps.is_built(); or that it has
the support but sees no device). open(key) pins that device (torch.device(key), set as the current one); run()
places every tensor there (Tensor.to(device), a no-op on the CPU), reads every result back to host numpy
(Tensor.cpu()) and, on an accelerator, waits for the device after each timed call (torch.<kind>.synchronize()).
An unknown key is Skip.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import first_line
from .base import Combo, DeviceInfo, Profile, Result, Skip, Unsupported, combo_for, time_repeats

NAME = "torch"
DOCUMENTED = Profile(momentum_dir="new", running_var="unbiased", stats=None, eps=1e-5, momentum=0.1)
PROFILE = DOCUMENTED  # the docs state every convention
EXTRA_OUTPUTS = {"save_mean": "mean", "save_invstd": "invstd"}
IMPLEMENTS = frozenset({"update_running=0"})  # training=True, running_stats=None; no act, no in-place

# The pages: https://docs.pytorch.org/docs/stable/generated/torch.nn.functional.batch_norm.html ("Apply Batch
# Normalization for each channel across a batch of data. See BatchNorm1d, BatchNorm2d, BatchNorm3d for details.")
# and https://docs.pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html, whose words these are.
_TRAIN = (
    "Also by default, during training this layer keeps running estimates of its computed mean and variance, "
    "which are then used for normalization during evaluation."
)
_NONE = (
    "track_running_stats: ... when set to False, this module does not track such statistics, and initializes "
    "statistics buffers running_mean and running_var as None. When these buffers are None, this module always "
    "uses batch statistics. in both training and eval modes."
)
FLAGS = (
    Combo((("training", True), ("running_stats", "given")), "batch", True, _TRAIN),
    Combo((("training", False), ("running_stats", "given")), "running", False, _TRAIN),
    Combo(
        (("training", True), ("running_stats", None)),
        "batch",
        False,
        "If track_running_stats is set to False, this layer then does not keep running estimates, and batch "
        "statistics are instead used during evaluation time as well. " + _NONE,
    ),
    Combo(
        (("training", False), ("running_stats", None)),
        None,
        None,
        "(F.batch_norm with training=False and no running statistics: the pages say the module then passes "
        "training=True; the function's own case is not described)",
    ),
)

_DTYPES = ("float16", "float32", "float64")


def available():
    try:
        import torch
        import torch.nn.functional  # noqa: F401
    except Exception as exc:
        return first_line(exc)
    return None


def version() -> str:
    import torch

    return torch.__version__


def _accelerators():
    """([DeviceInfo] of every accelerator torch can use here, why there is none: '' when there is one)."""
    import torch

    found, lacking, unseen = [], [], []
    kinds = (
        ("cuda", "ROCm" if torch.version.hip else "CUDA", torch.backends.cuda.is_built()),
        ("xpu", "XPU", hasattr(torch, "xpu") and getattr(torch.xpu, "_is_compiled", lambda: False)()),
    )
    for kind, label, built in kinds:
        if not built:
            lacking.append(label)
            continue
        api = getattr(torch, kind)
        if not api.is_available() or api.device_count() == 0:
            unseen.append(f"{label} built in, torch.{kind}.is_available() False")
        else:
            found += [
                DeviceInfo(
                    key=f"{kind}:{i}",
                    name=api.get_device_name(i),
                    vendor=label,
                    driver=version(),
                    platform=f"torch.{kind}",
                )
                for i in range(api.device_count())
            ]
    if not torch.backends.mps.is_built():
        lacking.append("MPS")
    elif not torch.backends.mps.is_available():
        unseen.append("MPS built in, torch.backends.mps.is_available() False")
    else:
        found.append(
            DeviceInfo(key="mps", name="Apple MPS", vendor="Apple", driver=version(), platform="torch.mps", fp64=False)
        )  # MPS has no float64
    if found:
        return found, ""
    why = ([f"built without {'/'.join(lacking)}"] if lacking else []) + unseen
    return [], f"no accelerator: torch {version()} " + "; ".join(why)


def devices():
    import torch

    accel, note = _accelerators()
    extra = {"num_threads": torch.get_num_threads(), **({"devices_note": note} if note else {})}
    return [DeviceInfo(key=None, name="CPU", vendor="torch", driver=version(), extra=extra)] + accel


def open(device_key):
    import torch

    threads = torch.get_num_threads()  # torch's default for this machine, made explicit
    torch.set_num_threads(threads)
    if device_key is None:
        return {"num_threads": threads, "device": torch.device("cpu"), "sync": None}
    keys = [d.key for d in devices() if d.key]
    if device_key not in keys:
        raise Skip(
            f"torch has no device {device_key!r} here (found: the CPU, key None{''.join(', ' + k for k in keys)})"
        )
    device = torch.device(device_key)
    api = getattr(torch, device.type)  # torch.cuda, torch.xpu, torch.mps
    if device.index is not None:
        api.set_device(device.index)
    return {"num_threads": threads, "device": device, "sync": api.synchronize}


def supports(session, case):
    if case.fix_gamma:
        return "torch.nn.functional.batch_norm has no fix_gamma"
    if case.dtype not in _DTYPES:
        return f"no torch dtype for {case.dtype}"
    if case.dtype == "float64" and session["device"].type == "mps":
        return "the MPS device has no float64"
    return None


def _to_c1(a: np.ndarray, case) -> np.ndarray:
    """A fresh C-contiguous copy with the channel axis at 1."""
    return np.moveaxis(a, case.channel_axis, 1).copy()


def _back(t, case) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(t.detach().cpu().numpy(), 1, case.channel_axis))


def _vec(t) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def run(session, case, inputs, policy, use_defaults=False):
    import torch
    import torch.nn.functional as F

    combo = combo_for(FLAGS, case)
    train = bool(combo.get("training"))
    given = combo.get("running_stats") is not None
    grad = bool(case.backward)
    dev, sync = session["device"], session["sync"]

    def put(a: np.ndarray):  # a fresh tensor on the session's device (on the CPU: the array's own memory)
        return torch.from_numpy(a).to(dev)

    x = put(_to_c1(inputs.x, case)).requires_grad_(grad)
    w = put(inputs.gamma.copy()).requires_grad_(grad)
    b = put(inputs.beta.copy()).requires_grad_(grad)
    rm = put(inputs.running_mean.copy())  # the caller's running tensors: handed over when given
    rv = put(inputs.running_var.copy())
    prm, prv = (rm, rv) if given else (None, None)
    if use_defaults:
        kwargs = {}
        sig = inspect.signature(F.batch_norm).parameters  # the native call needs values: F.batch_norm's defaults
        momentum, eps = sig["momentum"].default, sig["eps"].default
    else:
        momentum, eps = float(PROFILE.translate_momentum(case.momentum)), float(case.eps)
        kwargs = {"momentum": momentum, "eps": eps}
    dy = put(_to_c1(inputs.dy, case)) if grad else None

    try:
        y = F.batch_norm(x, prm, prv, weight=w, bias=b, training=train, **kwargs)
        if grad:
            y.backward(dy)
    except Exception as exc:
        raise Unsupported(first_line(exc)) from None

    outputs = {"y": _back(y, case).copy(), "running_mean": _vec(rm), "running_var": _vec(rv)}
    if grad:
        outputs.update(dx=_back(x.grad, case).copy(), dgamma=_vec(w.grad), dbeta=_vec(b.grad))
    if train:
        with torch.no_grad():
            _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
                x.detach(),
                w.detach(),
                b.detach(),
                put(inputs.running_mean.copy()) if given else None,
                put(inputs.running_var.copy()) if given else None,
                train,
                momentum,
                eps,
            )
        outputs.update(save_mean=_vec(save_mean), save_invstd=_vec(save_invstd))
    untouched = {"x": _back(x, case).copy(), "gamma": _vec(w), "beta": _vec(b)}

    def once():
        if grad:
            F.batch_norm(x, prm, prv, weight=w, bias=b, training=train, **kwargs).backward(dy)
        else:
            with torch.no_grad():
                F.batch_norm(x, prm, prv, weight=w, bias=b, training=train, **kwargs)
        if sync is not None:  # an accelerator runs asynchronously: the call ends when the device is done
            sync()

    walls, _ = time_repeats(once, policy)
    notes = [f"torch.get_num_threads() = {torch.get_num_threads()}" if sync is None else f"device {dev}"]
    if not given:
        notes.append(
            "running_mean=running_var=None: running_mean and running_var are the caller's tensors, not "
            "handed to torch, read back after the call"
        )
    if case.channel_axis != 1:
        notes.append(f"channel axis {case.axis} moved to 1 with numpy (torch fixes it at 1)")
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)
