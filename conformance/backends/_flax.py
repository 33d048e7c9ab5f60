"""What the two Flax backends (flax_linen, flax_nnx) share: JAX on the CPU, float64 on, the call and its gradient.

JAX and Flax are imported only inside these functions (the backend modules are imported in their own worker
process). open() enables float64 in JAX (jax_enable_x64) before any array exists: the float64 cases need it
(without it JAX makes float64 arrays float32), and float32 / float16 arrays keep their dtype under it (Python
scalars are weakly typed). XLA's CPU client sizes its intra-op thread pool to the host's CPUs itself; no JAX API
sets it, so it is left at that default and recorded in each result's notes.

The call is eager (op by op), as both pages' examples call it; no jax.jit. Backward is jax.vjp of a pure function
(x, params) -> y, with the running statistics after the call as its auxiliary output, so y, the running
statistics and the gradients come from one call; a forward-only case calls the same function without vjp.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import first_line
from .base import DeviceInfo, Result, Unsupported, time_repeats

_DTYPES = ("float16", "float32", "float64")
FAST_VARIANCE_QUOTE = (
    "use_fast_variance: If true, use a faster, but less numerically stable, calculation for the variance."
)


def available(submodule: str):
    try:
        import importlib

        import jax  # noqa: F401

        importlib.import_module(submodule)
    except Exception as exc:  # missing or broken install
        return first_line(exc)
    return None


def version() -> str:
    import flax

    return flax.__version__


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def devices():
    import jax

    return [
        DeviceInfo(
            key=None,
            name="CPU",
            vendor="flax",
            driver=f"jax {jax.__version__}",
            extra={"jax": jax.__version__, "xla_cpu_threads": f"XLA default (host CPUs: {cpus()})"},
        )
    ]


def open_session():
    import jax

    jax.config.update("jax_enable_x64", True)
    return {
        "notes": [f"jax_enable_x64 = True; XLA CPU intra-op pool: XLA's default (host CPUs: {cpus()}); eager calls"]
    }


def supports(api: str, case):
    if case.dtype not in _DTYPES:
        return f"no {api} dtype for {case.dtype}"
    return None


def dtypes(case):
    import jax.numpy as jnp

    return jnp.dtype(case.dtype), jnp.dtype(case.param_dtype)


def params_of(case, inputs) -> dict:
    """The layer's parameters (scale is gamma, bias is beta); fix_gamma is use_scale=False: no scale at all."""
    import jax.numpy as jnp

    out = {"bias": jnp.asarray(inputs.beta)}
    if not case.fix_gamma:
        out["scale"] = jnp.asarray(inputs.gamma)
    return out


def leaf(v):
    """An array from a Flax variable (nnx Variable / VariableState) or an array."""
    while hasattr(v, "value"):
        v = v.value
    return v


def to_numpy(v) -> np.ndarray:
    return np.array(leaf(v), copy=True)


def execute(case, inputs, policy, fn, notes):
    """Run fn(x, params) -> (y, {'mean': ..., 'var': ...}) once for the outputs (under jax.vjp with dy when the case
    has backward), read everything back, then time it."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(inputs.x)
    params = params_of(case, inputs)
    dy = jnp.asarray(inputs.dy) if case.backward else None

    def call():
        if not case.backward:
            y, stats = fn(x, params)
            return jax.block_until_ready((y, stats)), None
        y, vjp, stats = jax.vjp(fn, x, params, has_aux=True)
        dx, dparams = vjp(dy)
        return jax.block_until_ready((y, stats)), jax.block_until_ready((dx, dparams))

    try:
        (y, stats), grads = call()
    except (ValueError, TypeError, NotImplementedError) as exc:  # the layer refusing the input
        raise Unsupported(first_line(exc)) from None
    outputs = {"y": to_numpy(y), "running_mean": to_numpy(stats["mean"]), "running_var": to_numpy(stats["var"])}
    if grads is not None:
        dx, dparams = grads
        outputs["dx"], outputs["dbeta"] = to_numpy(dx), to_numpy(dparams["bias"])
        if "scale" in dparams:
            outputs["dgamma"] = to_numpy(dparams["scale"])
    untouched = {"x": to_numpy(x), "beta": to_numpy(params["bias"])}
    if "scale" in params:
        untouched["gamma"] = to_numpy(params["scale"])
    walls, _ = time_repeats(call, policy)
    if case.fix_gamma:
        notes = notes + ["fix_gamma as use_scale=False: no scale parameter, so no dgamma"]
    return Result(outputs=outputs, wall_ms=walls, untouched=untouched, notes=notes)
