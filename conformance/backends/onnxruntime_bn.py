"""onnxruntime (CPU execution provider): the ONNX BatchNormalization operator, opset 15.

The model, its conventions and the handling of the channel axis are in _onnx.py: ONNX fixes the channel
axis at 1, so a case with its channel elsewhere is moved to axis 1 with numpy before the call and back after.
onnxruntime 1.31 runs training_mode=1 on CPU and returns Y, running_mean and running_var; it has no
backward. A model or input the engine rejects is reported as unsupported with the engine's message.
"""

from __future__ import annotations

from ..errors import first_line
from . import _onnx
from .base import DeviceInfo

NAME = "onnxruntime"
DOCUMENTED = _onnx.DOCUMENTED
PROFILE = _onnx.PROFILE
EXTRA_OUTPUTS = _onnx.EXTRA_OUTPUTS


def available():
    try:
        import onnx  # noqa: F401 - builds the model
        import onnxruntime  # noqa: F401
    except Exception as exc:
        return first_line(exc)
    return None


def version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def devices():
    return [
        DeviceInfo(
            key=None,
            name="CPU",
            vendor="onnxruntime",
            driver=version(),
            extra={"provider": "CPUExecutionProvider", "opset": _onnx.OPSET},
        )
    ]


def open(device_key):
    return None


def supports(session, case):
    return _onnx.supports(case)


def _runner(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds)


def run(session, case, inputs, policy, use_defaults=False):
    return _onnx.run(case, inputs, policy, use_defaults, _runner, "onnxruntime")
