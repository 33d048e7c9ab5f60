"""Conformance suite for Batch Normalization: an OpenCL BatchNorm and every framework, against one float64 oracle."""

__version__ = "0.1.0"
