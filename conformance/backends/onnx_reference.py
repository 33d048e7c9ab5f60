"""onnx's reference evaluator (onnx.reference.ReferenceEvaluator): the ONNX BatchNormalization operator,
opset 15, evaluated in plain numpy by the onnx package itself.

The model, its conventions and the handling of the channel axis are in _onnx.py: ONNX fixes the channel
axis at 1, so a case with its channel elsewhere is moved to axis 1 with numpy before the call and back after.
The evaluator is `ReferenceEvaluator(model).run(None, feeds)`; it has no backward.
"""

from __future__ import annotations

import numpy as np

from ..errors import first_line
from . import _onnx
from .base import DeviceInfo

NAME = "onnx_reference"
DOCUMENTED = _onnx.DOCUMENTED
PROFILE = _onnx.PROFILE
EXTRA_OUTPUTS = _onnx.EXTRA_OUTPUTS


def available():
    try:
        import onnx.reference  # noqa: F401
    except Exception as exc:
        return first_line(exc)
    return None


def version() -> str:
    import onnx

    return onnx.__version__


def devices():
    return [
        DeviceInfo(
            key=None,
            name="CPU",
            vendor="onnx",
            driver=version(),
            extra={"evaluator": "onnx.reference.ReferenceEvaluator", "opset": _onnx.OPSET},
        )
    ]


def open(device_key):
    return None


def supports(session, case):
    return _onnx.supports(case)


def _runner(model):
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)

    def call(feeds):
        # float16 statistics are summed in float16 there: a long channel overflows to Inf, which the comparison
        # reports; numpy's console warning about it would only be noise
        with np.errstate(over="ignore", invalid="ignore"):
            return evaluator.run(None, feeds)

    return call


def run(session, case, inputs, policy, use_defaults=False):
    return _onnx.run(case, inputs, policy, use_defaults, _runner, "onnx_reference")
