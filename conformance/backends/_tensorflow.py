"""What the two TensorFlow backends (tensorflow_fused, tensorflow_nn) share: the import, the thread counts, the
eager CPU context.

TensorFlow is imported lazily, on first use, in the backend's own worker process. Its intra-op thread count is
TensorFlow's own default made explicit: 0 in tf.config means "the runtime picks", and on the CPU it picks the
number of CPUs this process may run on (os.sched_getaffinity); the same number is set with
tf.config.threading.set_intra_op_parallelism_threads before the runtime starts, and recorded. The inter-op
count is left at TensorFlow's default (0) and recorded as such. Everything runs eagerly on the CPU.

TF_ENABLE_ONEDNN_OPTS is left as found (unset: TensorFlow's x86 Linux default, oneDNN on); whether oneDNN
kernels are in use is recorded in the notes, since with it FusedBatchNormV3 runs as _MklNativeFusedBatchNormV3.
TF_CPP_MIN_LOG_LEVEL is set to 2 (errors only) unless the caller set it: the C++ log is noise in a worker.
"""

from __future__ import annotations

import contextlib
import os

from ..errors import first_line
from .base import DeviceInfo

_tf = None
_threads: dict = {}


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def tf():
    """The tensorflow module, imported on first use, its intra-op thread count set to its own default."""
    global _tf
    if _tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow

        intra = _cpus()
        # RuntimeError: the runtime already started in this process: keep what it has
        with contextlib.suppress(RuntimeError):
            tensorflow.config.threading.set_intra_op_parallelism_threads(intra)
        _threads.update(
            intra_op=tensorflow.config.threading.get_intra_op_parallelism_threads(),
            inter_op=tensorflow.config.threading.get_inter_op_parallelism_threads(),
        )
        _tf = tensorflow
    return _tf


def available() -> str | None:
    try:
        tf()
    except Exception as exc:  # missing or broken install
        return f"tensorflow import failed: {first_line(exc)}"
    return None


def version() -> str:
    try:
        return tf().__version__
    except Exception:
        return ""


def onednn() -> str:
    """Whether TensorFlow's oneDNN kernels are in use, and why."""
    flag = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    try:
        from tensorflow.python.util import _pywrap_util_port

        on = bool(_pywrap_util_port.IsMklEnabled())
    except Exception:
        return f"TF_ENABLE_ONEDNN_OPTS={flag!r}"
    return f"oneDNN {'on' if on else 'off'} (TF_ENABLE_ONEDNN_OPTS={'unset, the default' if flag is None else flag})"


def threads() -> dict:
    tf()
    return dict(_threads)


def thread_note() -> str:
    t = threads()
    return (
        f"intra-op threads {t['intra_op']} (TensorFlow's default, the CPUs this process may use, set explicitly); "
        f"inter-op threads {t['inter_op'] or 'default (0)'}; {onednn()}"
    )


def cpu_devices(fp64: bool) -> list:
    """The one device of either TensorFlow backend: the CPU, with its thread counts and oneDNN state; fp64 as the
    backend's API takes float64 (the fused op does not)."""
    return [
        DeviceInfo(
            key=None,
            name="CPU",
            vendor="TensorFlow",
            driver=version(),
            fp16=True,
            fp64=fp64,
            extra={**threads(), "onednn": onednn()},
        )
    ]
