"""Keras 3: keras.layers.BatchNormalization on each Keras backend installed (TensorFlow, JAX, PyTorch).

One backend, one target per Keras backend, as its devices: keras@tensorflow, keras@jax, keras@torch. Keras picks
its backend once, at import, from the KERAS_BACKEND environment variable, so each target is its own worker
process and keras is imported only in open(device_key), after KERAS_BACKEND is set to the device key.
available(), devices() and version() never import keras nor a backend (importlib.util.find_spec and
importlib.metadata only): the probe worker that lists the devices may be adopted as the first target's worker
(worker.py), and then imports keras for the first time in open(). open(None) (`conformance conventions`, whose
probe asks for no device) takes KERAS_BACKEND from the environment if set, else the first backend installed,
so `KERAS_BACKEND=jax conformance conventions --backend keras` measures the JAX column.

One layer per run: BatchNormalization(axis=<case axis>, momentum=..., epsilon=..., center=True,
scale=not fix_gamma, dtype=<policy>), built for the case's shape; gamma, beta, moving_mean and
moving_variance are assigned from the inputs; layer.trainable and the call's training= argument come from the
flag combination (FLAGS). The dtype policy is the case's dtype, and "mixed_float16" for float16 data (float16
compute, float32 variables: the case's float32 parameters). The layer returns y only; moving_mean and
moving_variance are read back from the layer's variables after the call. fix_gamma is scale=False ("If False,
gamma is not used"): y and dx are those of gamma = 1, and there is no gamma variable, so no dgamma is returned
(that row is 'unsupported') and no gamma is read back.

Backward, each backend's own autodiff on the same call that gives y and the moving statistics:
  tensorflow  tf.GradientTape watching x; tape.gradient(y, [x, gamma, beta], output_gradients=dy)
  jax         layer.stateless_call(trainable, non_trainable, x, training=...) under jax.vjp (has_aux: the new
              non-trainable values are the moving statistics after the call); vjp(dy)
  torch       x.requires_grad_(); y.backward(dy); x.grad, gamma.value.grad, beta.value.grad
A forward-only case is the plain call layer(x, training=...). The call is eager on every backend (no
tf.function, jax.jit or torch.compile).

Conventions, from https://keras.io/api/layers/normalization_layers/batch_normalization/ (Keras 3; the same text is
the docstring of keras 3.15.1's BatchNormalization):
  "moving_mean = moving_mean * momentum + mean(batch) * (1 - momentum)"
  "moving_var = moving_var * momentum + var(batch) * (1 - momentum)"     -> momentum weighs the OLD value
  "the layer returns gamma * (batch - mean(batch)) / sqrt(var(batch) + epsilon) + beta"
                                       -> which estimator var(batch) is, is not stated: running_var None
                                          (PROFILE: the canonical biased)
  defaults: "momentum=0.99", "epsilon=0.001" (the signature on the page)
  the layer returns the normalised tensor only (stats None; no EXTRA_OUTPUTS).
  "training=True: The layer will normalize its inputs using the mean and variance of the current batch of
   inputs." / "training=False: The layer will normalize its inputs using the mean and variance of its moving
   statistics, learned during training." / "setting trainable = False on the layer means that the layer will be
   subsequently run in inference mode" ... "its state updates will not be run": the four combinations in FLAGS.

Threads: keras@torch sets torch's own default (torch.get_num_threads()) explicitly; keras@tensorflow sets TF's
intra- and inter-op pools to what TF's default (0) resolves to, the CPUs this process may run on
(os.sched_getaffinity), before its first op; keras@jax runs on XLA's CPU client, whose intra-op pool XLA sizes
to the host's CPUs itself (no API sets it): recorded, not set. keras@jax enables float64 in JAX
(jax_enable_x64) in open(), before keras is imported: without it Keras silently makes float64 variables float32.
TensorFlow's oneDNN is left at its default (on); TF_CPP_MIN_LOG_LEVEL defaults to 2 here (log noise only).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import numpy as np

from ..errors import first_line
from .base import Combo, DeviceInfo, Profile, Result, Skip, Unsupported, combo_for, time_repeats

NAME = "keras"
PAGE = "https://keras.io/api/layers/normalization_layers/batch_normalization/"
KERAS_BACKENDS = ("tensorflow", "jax", "torch")  # the order targets are listed in

DOCUMENTED = Profile(momentum_dir="old", running_var=None, stats=None, eps=1e-3, momentum=0.99)
PROFILE = Profile(momentum_dir="old", running_var="biased", stats=None, eps=1e-3, momentum=0.99)
EXTRA_OUTPUTS: dict[str, str] = {}
IMPLEMENTS = frozenset()  # no activation, no in-place, no flag that updates without normalising with the batch

_TRAIN = (
    "training=True: The layer will normalize its inputs using the mean and variance of the current batch of "
    "inputs. ... self.moving_mean and self.moving_var are non-trainable variables that are updated each time "
    "the layer in called in training mode"
)
_INFER = (
    "training=False: The layer will normalize its inputs using the mean and variance of its moving "
    "statistics, learned during training."
)
_FROZEN = (
    "setting trainable = False on the layer means that the layer will be subsequently run in inference mode "
    "(meaning that it will use the moving mean and the moving variance to normalize the current batch ...); "
    "its state updates will not be run"
)
FLAGS = (
    Combo((("training", True), ("trainable", True)), "batch", True, _TRAIN),
    Combo((("training", False), ("trainable", True)), "running", False, _INFER),
    Combo((("training", True), ("trainable", False)), "running", False, _FROZEN),
    Combo((("training", False), ("trainable", False)), "running", False, _INFER + " / " + _FROZEN[:60] + " ..."),
)

_DTYPES = ("float16", "float32", "float64")
_DIST = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "jax": ("jax",),
    "torch": ("torch",),
}

_session = None  # one per process: Keras's backend is fixed at import


def _installed() -> list[str]:
    """The Keras backends importable here, found without importing them."""
    return [b for b in KERAS_BACKENDS if importlib.util.find_spec(b) is not None]


def _dist_version(names) -> str:
    for n in names:
        try:
            return importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def available():
    if importlib.util.find_spec("keras") is None:
        return "keras is not installed"
    if not _dist_version(("keras",)).startswith("3"):
        return f"keras {_dist_version(('keras',)) or '?'} is not Keras 3"
    if not _installed():
        return "no Keras backend installed (tensorflow, jax or torch)"
    return None


def version() -> str:
    return _dist_version(("keras",))


def devices():
    return [
        DeviceInfo(
            key=b,
            name=f"Keras on {b} (CPU)",
            vendor="keras",
            platform=b,
            driver=f"{b} {_dist_version(_DIST[b])}".strip(),
            extra={"keras": version()},
        )
        for b in _installed()
    ]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def open(device_key):
    global _session
    import sys

    want = device_key or os.environ.get("KERAS_BACKEND") or (_installed() or ["tensorflow"])[0]
    if want not in KERAS_BACKENDS:
        raise Skip(f"unknown Keras backend {want!r}")
    if "keras" in sys.modules:
        got = sys.modules["keras"].backend.backend()
        if got != want:
            raise Skip(f"keras is already imported in this process with backend {got}, not {want}")
    os.environ["KERAS_BACKEND"] = want
    notes = []
    if want == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        n = _cpus()  # what TF's default of 0 resolves to
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
            notes.append(
                f"tensorflow intra/inter-op threads = {n} (TF's default 0 resolved: schedulable CPUs), "
                f"oneDNN {os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default (on)')}"
            )
        except RuntimeError as exc:  # the runtime already started: its pools are fixed
            notes.append(f"tensorflow threads left at its default ({exc})")
    elif want == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 cases; float32 ones stay float32 (weak Python scalars)
        notes.append(f"jax_enable_x64 = True; XLA CPU intra-op pool: XLA's default (host CPUs: {_cpus()})")
    else:
        import torch

        threads = torch.get_num_threads()  # torch's default for this machine, made explicit
        torch.set_num_threads(threads)
        notes.append(f"torch.get_num_threads() = {threads}")
    import keras

    if keras.backend.backend() != want:
        raise Skip(f"KERAS_BACKEND={want} was set, yet keras runs on {keras.backend.backend()}")
    _session = {"backend": want, "notes": notes}
    return _session


def supports(session, case):
    if case.dtype not in _DTYPES:
        return f"no Keras dtype policy for {case.dtype}"
    return None


def _np(t) -> np.ndarray:
    """A numpy copy of a backend tensor or a Keras variable."""
    import keras

    return np.array(keras.ops.convert_to_numpy(getattr(t, "value", t)), copy=True)


def _layer(case, combo, inputs, use_defaults):
    import keras

    kwargs = (
        {}
        if use_defaults
        else {"momentum": float(PROFILE.translate_momentum(case.momentum)), "epsilon": float(case.eps)}
    )
    policy = "mixed_float16" if case.dtype == "float16" else case.dtype
    layer = keras.layers.BatchNormalization(
        axis=case.axis, center=True, scale=not case.fix_gamma, dtype=policy, **kwargs
    )
    layer.build(case.shape)
    if not case.fix_gamma:
        layer.gamma.assign(inputs.gamma)
    layer.beta.assign(inputs.beta)
    layer.moving_mean.assign(inputs.running_mean)
    layer.moving_variance.assign(inputs.running_var)
    layer.trainable = bool(combo.get("trainable", True))
    return layer


def run(session, case, inputs, policy, use_defaults=False):
    combo = combo_for(FLAGS, case)
    training = bool(combo.get("training"))
    backend = session["backend"]
    try:
        layer = _layer(case, combo, inputs, use_defaults)
        call = {"tensorflow": _tf_call, "jax": _jax_call, "torch": _torch_call}[backend](layer, case, inputs, training)
        y, grads, x_after = call()
    except (ValueError, TypeError, NotImplementedError) as exc:  # the layer refusing the input
        raise Unsupported(first_line(exc)) from None
    outputs = {"y": _np(y), "running_mean": _np(layer.moving_mean), "running_var": _np(layer.moving_variance)}
    if grads is not None:
        outputs["dx"], outputs["dbeta"] = _np(grads["x"]), _np(grads["beta"])
        if not case.fix_gamma:
            outputs["dgamma"] = _np(grads["gamma"])
    untouched = {"x": _np(x_after), "beta": _np(layer.beta)}
    if not case.fix_gamma:
        untouched["gamma"] = _np(layer.gamma)
    walls, _ = time_repeats(call, policy)  # later calls move the moving statistics again: already read
    notes = list(session["notes"]) + [f"flags {combo.label}"]
    if case.fix_gamma:
        notes.append("fix_gamma as scale=False: no gamma variable, so no dgamma")
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)


def _tf_call(layer, case, inputs, training):
    import tensorflow as tf

    x = tf.constant(inputs.x)
    dy = tf.constant(inputs.dy) if case.backward else None

    def call():
        if not case.backward:
            return layer(x, training=training), None, x
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
        names = ["x", "beta"] + ([] if case.fix_gamma else ["gamma"])
        sources = [x, layer.beta.value] + ([] if case.fix_gamma else [layer.gamma.value])
        got = tape.gradient(y, sources, output_gradients=dy)
        return y, dict(zip(names, got)), x

    return call


def _jax_call(layer, case, inputs, training):
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(inputs.x)
    dy = jnp.asarray(inputs.dy) if case.backward else None
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    names = [v.path.rsplit("/", 1)[-1] for v in layer.trainable_variables]  # 'gamma', 'beta' (none when frozen)

    def call():
        if not case.backward:
            return layer(x, training=training), None, x

        def f(x_, tv):
            y_, ntv = layer.stateless_call(tv, non_trainable, x_, training=training)
            return y_, ntv

        y, vjp, new_ntv = jax.vjp(f, x, trainable, has_aux=True)
        dx, dtv = vjp(dy)
        for var, value in zip(layer.non_trainable_variables, new_ntv):  # what the stateful call would have kept
            var.assign(value)
        grads = {"x": dx, **dict(zip(names, dtv))}
        for name in ("gamma", "beta"):  # a frozen layer (trainable=False) differentiates nothing but x
            if name not in grads and getattr(layer, name) is not None:
                grads[name] = _jax_param_grad(layer, name, x, non_trainable, training, dy)
        return y, grads, x

    return call


def _jax_param_grad(layer, name, x, non_trainable, training, dy):
    """The gradient of y against a variable a frozen layer lists as non-trainable: vjp over that variable's slot."""
    import jax

    idx = [v.path.rsplit("/", 1)[-1] for v in layer.non_trainable_variables].index(name)

    def f(value):
        ntv = list(non_trainable)
        ntv[idx] = value
        return layer.stateless_call([], ntv, x, training=training)[0]

    _, vjp = jax.vjp(f, non_trainable[idx])
    return vjp(dy)[0]


def _torch_call(layer, case, inputs, training):
    import torch

    x = torch.from_numpy(inputs.x.copy())
    dy = torch.from_numpy(inputs.dy.copy()) if case.backward else None
    params = {"beta": layer.beta.value}
    if not case.fix_gamma:
        params["gamma"] = layer.gamma.value

    def call():
        if not case.backward:
            with torch.no_grad():
                return layer(x, training=training), None, x
        x.grad = None
        x.requires_grad_(True)
        for p in params.values():
            p.grad = None
            p.requires_grad_(True)  # a frozen layer (trainable=False) turns it off; the gradient is still asked for
        y = layer(x, training=training)
        y.backward(dy)
        grads = {"x": x.grad, **{k: p.grad for k, p in params.items()}}
        return y.detach(), grads, x.detach()

    return call
