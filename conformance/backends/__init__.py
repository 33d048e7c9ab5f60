"""Backends: the OpenCL system under test and its peers. See base.py for the contract each module meets."""

import importlib

# name -> module path; a backend is imported only inside its worker process.
BACKENDS = {
    "opencl": "conformance.backends.opencl",
    "numpy": "conformance.backends.numpy_ref",
}


def load(name: str):
    return importlib.import_module(BACKENDS[name])
