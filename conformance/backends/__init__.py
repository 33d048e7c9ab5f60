"""Backends: the OpenCL system under test and its peers. See base.py for the contract each module meets."""

import importlib

# name -> module path; a backend is imported only inside its worker process.
BACKENDS = {
    "opencl": "conformance.backends.opencl",
    "numpy": "conformance.backends.numpy_ref",
    "mxnet": "conformance.backends.mxnet_nd",
    "mxnet_v1": "conformance.backends.mxnet_v1",
    "mxnet_v1_sym": "conformance.backends.mxnet_v1_sym",
    "mindspore": "conformance.backends.mindspore_ops",
    "paddle": "conformance.backends.paddle_nn",
    "paddle_functional": "conformance.backends.paddle_functional",
    "paddle_static": "conformance.backends.paddle_static",
    "torch": "conformance.backends.torch_fn",
    "onnxruntime": "conformance.backends.onnxruntime_bn",
    "onnx_reference": "conformance.backends.onnx_reference",
    "tensorflow": "conformance.backends.tensorflow_fused",
    "tensorflow_nn": "conformance.backends.tensorflow_nn",
    "openvino": "conformance.backends.openvino_bn",
    "keras": "conformance.backends.keras_bn",
    "flax_linen": "conformance.backends.flax_linen",
    "flax_nnx": "conformance.backends.flax_nnx",
}
FRAMEWORKS = [n for n in BACKENDS if n not in ("opencl", "numpy")]


def load(name: str):
    return importlib.import_module(BACKENDS[name])


def import_failure(exc: BaseException) -> str:
    """One line saying why a backend module could not be imported (its framework is missing or broken)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
