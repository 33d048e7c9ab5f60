"""MindSpore `mindspore.ops.BatchNorm` (the primitive), in PyNative mode on the CPU, a GPU or an Ascend NPU.

The primitive is called as op(x, scale, bias, mean, variance) and returns five tensors: output_x,
batch_mean, batch_variance, reserve_space_1, reserve_space_2. The running statistics are handed in as
`mindspore.Parameter`s; the op updates them in place when is_training=True (it does so for plain Tensors
too), and they are read back after the call. is_training comes from the case's flag combination (FLAGS, the
page's words beside each): True computes the batch statistics and updates the moving ones, False normalises
with the mean and variance handed in ("loaded from checkpoint during inference").

The op has no axis parameter, only data_format: channel axis 1 runs as 'NCHW' (2D (N, C) included) and the
last axis of a 3D/4D input as 'NHWC' (documented as GPU only; the CPU kernel either fails or, when
shape[1] == shape[-1], accepts it: the adapter passes it on and reports what comes back). Other axes cannot
be expressed. Backward goes through mindspore.value_and_grad of sum(y * dy) with respect to x, scale and
bias, in the same call as the forward, so the running statistics are updated once.

The framework's exceptions (a dtype, rank, eps or layout it rejects; the CPU runs asynchronously, so some
surface only when results are read) become Unsupported with their first line.

Devices (devices()): the CPU (key None: the target stays `mindspore`), then each device of the package's other
targets, `GPU:N` and `Ascend:N` (mindspore.device_context.gpu / .ascend: is_available() says whether the
package supports it, device_count() how many there are). Where there is none, the CPU device's
extra["devices_note"] says why in one line. Importing mindspore (available(), devices()) chooses no device:
MindSpore lets a process set its device once (mindspore.set_device(target, id)), and open(key) does it, after
checking the key (an unknown one is Skip). Tensors are made from numpy and the op runs on that device; results
come back with asnumpy(), which waits for it.
"""

from __future__ import annotations

import os

from ..errors import first_line
from .base import Combo, DeviceInfo, Profile, Result, Skip, Unsupported, combo_for, time_repeats

NAME = "mindspore"

# Doc: "momentum ... (e.g. new_running_mean = (1 - momentum) * running_mean + momentum * current_mean)",
# "epsilon ... Default: 1e-5", "momentum ... Default: 0.1"; batch_variance is "The variance calculated
# per-dimension over the mini-batches"; which variance updates the running one is not stated.
DOCUMENTED = Profile(momentum_dir="new", running_var=None, stats="var", eps=1e-5, momentum=0.1)
PROFILE = Profile(momentum_dir="new", running_var="biased", stats="var", eps=1e-5, momentum=0.1)
# reserve_space_1: "The mean that needs to be reused when calculating gradients"; reserve_space_2: "The
# variance ..."; in inference they have "the same value as" mean and variance.
EXTRA_OUTPUTS = {"reserve_space_1": "mean", "reserve_space_2": "var"}
IMPLEMENTS: frozenset[str] = frozenset()  # no act, no in-place; is_training ties the statistics to the update

# The page (README.md, Sources: mindspore.ops.BatchNorm): is_training is the one flag that chooses the statistics.
_MOMENTUM = (
    "momentum (float) - The hyper parameter to compute moving average for running_mean and running_var (e.g. "
    "new_running_mean = (1 - momentum) * running_mean + momentum * current_mean)"
)
FLAGS = (
    Combo(
        (("is_training", True),),
        "batch",
        True,
        "is_training (bool) - If is_training is True, mean and variance are computed during training. ... "
        + _MOMENTUM
        + "; Outputs: Tuple of 5 Tensors, the normalized inputs and the updated parameters.",
    ),
    Combo(
        (("is_training", False),),
        "running",
        False,
        "If is_training is False, they're loaded from checkpoint during inference. Default: False.",
    ),
)

_ms = None
_PINNED: dict = {}  # "target", "id": the device this process was set to (once: MindSpore allows no change)


def _load():
    """mindspore, imported and in PyNative mode, its device not yet chosen."""
    global _ms
    if _ms is None:
        os.environ.setdefault("GLOG_v", "3")  # MindSpore logs at INFO/WARNING otherwise
        import mindspore

        mindspore.set_context(mode=mindspore.PYNATIVE_MODE)
        _ms = mindspore
    return _ms


def _import(target: str = "CPU", device_id: int | None = None):
    """mindspore with this process's device set to target (default the CPU), once."""
    ms = _load()
    if not _PINNED:
        if hasattr(ms, "set_device"):
            ms.set_device(target, device_id)
        else:
            ms.set_context(device_target=target, **({} if device_id is None else {"device_id": device_id}))
        _PINNED.update(target=target, id=device_id)
    elif (_PINNED["target"], _PINNED["id"]) != (target, device_id):
        raise Skip(f"this process already runs mindspore on {_PINNED['target']}, not {target}")
    return ms


def available():
    try:
        _load()
    except Exception as exc:  # missing or broken install
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return None


def version():
    return _load().__version__


def _accelerators():
    """([DeviceInfo] of each GPU / Ascend device the package can use here, why there is none: '' when there is)."""
    ms = _load()
    context = getattr(ms, "device_context", None)
    if context is None:
        return [], f"no accelerator: mindspore {version()} has no mindspore.device_context to ask"
    found, lacking, unseen = [], [], []
    for target in ("GPU", "Ascend"):
        api = getattr(context, target.lower())
        if not api.is_available():
            lacking.append(target)
            continue
        try:
            n = api.device_count()
        except RuntimeError as exc:
            unseen.append(f"{target} supported, device_count(): {first_line(exc)}")
            continue
        if n == 0:
            unseen.append(f"{target} supported, device_count() 0")
        found += [
            DeviceInfo(
                key=f"{target}:{i}",
                name=f"{target} {i}",
                vendor=target,
                platform=f"mindspore {target}",
                driver=version(),
            )
            for i in range(n)
        ]
    if found:
        return found, ""
    why = ([f"package without {'/'.join(lacking)} support"] if lacking else []) + unseen
    return [], f"no accelerator: mindspore {version()} " + "; ".join(why)


def devices():
    accel, note = _accelerators()
    return [
        DeviceInfo(
            key=None, name="CPU", vendor="mindspore", driver=version(), extra={"devices_note": note} if note else {}
        )
    ] + accel


def open(device_key):
    if device_key is None:
        return _import("CPU")
    keys = [d.key for d in devices() if d.key]
    if device_key not in keys:
        raise Skip(
            f"mindspore has no device {device_key!r} here (found: the CPU, key None{''.join(', ' + k for k in keys)})"
        )
    target, index = device_key.split(":")
    return _import(target, int(index))


def _layout(case):
    ax, nd = case.channel_axis, len(case.shape)
    if ax == 1:
        return "NCHW"
    if ax == nd - 1:
        return "NHWC"
    return None


def supports(session, case):
    if case.fix_gamma:
        return "mindspore.ops.BatchNorm has no fix_gamma"
    if _layout(case) is None:
        return (
            f"mindspore.ops.BatchNorm has no axis parameter; data_format NCHW (axis 1) or NHWC (last axis) "
            f"cannot express axis {case.axis} of shape {list(case.shape)}"
        )
    return None


def _make(ms, case, inputs, use_defaults, combo):
    """The op and a callable running it on fresh running-stat Parameters; the callable returns numpy outputs."""
    kw = {"is_training": bool(combo.get("is_training")), "data_format": _layout(case)}
    if not use_defaults:
        kw.update(epsilon=float(case.eps), momentum=float(PROFILE.translate_momentum(case.momentum)))
    op = ms.ops.BatchNorm(**kw)
    T = ms.Tensor
    x, gamma, beta = T(inputs.x.copy()), T(inputs.gamma.copy()), T(inputs.beta.copy())
    dy = T(inputs.dy.copy()) if case.backward else None

    def call():
        rm = ms.Parameter(T(inputs.running_mean.copy()), name="running_mean", requires_grad=False)
        rv = ms.Parameter(T(inputs.running_var.copy()), name="running_var", requires_grad=False)
        if case.backward:

            def loss(a, s, b):
                outs = op(a, s, b, rm, rv)
                return (outs[0] * dy).sum(), outs

            (_, outs), grads = ms.value_and_grad(loss, grad_position=(0, 1, 2), has_aux=True)(x, gamma, beta)
        else:
            outs, grads = op(x, gamma, beta, rm, rv), ()
        got = [o.asnumpy() for o in outs] + [g.asnumpy() for g in grads]
        return got, rm.asnumpy(), rv.asnumpy()

    return call, (x, gamma, beta)


def run(session, case, inputs, policy, use_defaults=False):
    ms = session
    combo = combo_for(FLAGS, case)
    try:
        call, passed = _make(ms, case, inputs, use_defaults, combo)
        got, rm, rv = call()
    except (RuntimeError, TypeError, ValueError) as exc:
        raise Unsupported(f"mindspore.ops.BatchNorm: {first_line(exc)}") from None
    y, batch_mean, batch_var, reserve1, reserve2 = got[:5]
    outputs = {"y": y, "running_mean": rm, "running_var": rv, "reserve_space_1": reserve1, "reserve_space_2": reserve2}
    if combo.get("is_training"):
        outputs["mean"], outputs["var"] = batch_mean, batch_var
    if case.backward:
        outputs["dx"], outputs["dgamma"], outputs["dbeta"] = got[5:8]
    untouched = {k: t.asnumpy().copy() for k, t in zip(("x", "gamma", "beta"), passed)}
    walls, _ = time_repeats(lambda: call() and None, policy)  # values of timing runs are discarded
    notes = []
    if _layout(case) == "NHWC" and _PINNED.get("target") != "GPU":
        notes.append(f"data_format='NHWC' (documented for GPU only) on the {_PINNED.get('target', 'CPU')}")
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)
