"""Frameworks on their devices: each framework backend lists its CPU target (key None: the label stays the backend's
name) and every accelerator its build can use (torch cuda:N / xpu:N / mps, paddle gpu:N / xpu:N, mxnet gpu:N,
mindspore GPU:N / Ascend:N); without one, a one-line reason naming what the build lacks. Found by the real
frameworks in their own worker processes (one probe each, side by side), on whatever this machine has."""

import importlib.util
import re

import pytest

from conformance.cli import backend_line
from conformance.lifecycle import discover, release_probes

# backend -> (its framework's module, the pattern of an accelerator key, what a CPU-only build's note names, a key
# no machine has)
FRAMEWORKS = {
    "torch": (
        "torch",
        r"(cuda|xpu):\d+|mps",
        r"no accelerator: torch \S+ (built without \S*CUDA|.*CUDA built in)",
        "cuda:99",
    ),
    "paddle": (
        "paddle",
        r"(gpu|xpu):\d+|\w+:\d+",
        r"no accelerator: paddle \S+ (compiled without \S*CUDA|.*CUDA)",
        "gpu:99",
    ),
    "mxnet": ("mxnet", r"gpu:\d+", r"no accelerator: mxnet \S+ built with(out)? CUDA", "gpu:99"),
    "mindspore": (
        "mindspore",
        r"(GPU|Ascend):\d+",
        r"no accelerator: mindspore \S+ (package without \S*GPU|.*GPU)",
        "GPU:99",
    ),
}
INSTALLED = [n for n, (module, *_) in FRAMEWORKS.items() if importlib.util.find_spec(module) is not None]
if not INSTALLED:
    pytest.skip("no framework with devices is installed", allow_module_level=True)


@pytest.fixture(scope="module")
def infos():
    """{backend: BackendInfo}, each probe kept alive (its framework imported) for the open() checks."""
    found = {i.name: i for i in discover(INSTALLED, keep=True)}
    yield found
    release_probes(found.values())


@pytest.mark.parametrize("name", INSTALLED)
def test_cpu_target_first_then_accelerators_or_the_reason(infos, name):
    info = infos[name]
    assert info.reason is None, info.reason
    _, key_pattern, note_pattern, _ = FRAMEWORKS[name]
    cpu, *accel = info.devices
    assert cpu.key is None and cpu.name == "CPU"  # the CPU target keeps the label `name`
    note = cpu.extra.get("devices_note", "")
    for d in accel:
        assert re.fullmatch(key_pattern, d.key), d.key
    assert len({d.key for d in accel}) == len(accel)
    if accel:
        assert not note
    else:  # this machine: a CPU build (or no device visible), said in one line naming what is missing
        assert re.match(note_pattern, note) and "\n" not in note, note
    line = backend_line(info)
    assert line.startswith(f"{name:10s} available [cpu") and line.endswith(f"; {note}" if note else "]"), line


@pytest.mark.parametrize("name", INSTALLED)
def test_unknown_device_key_is_a_skip_naming_it(infos, name):
    """open() of a key the framework does not have: the worker answers skip with one line naming the key and what
    there is, the framework already imported by the probe it adopts."""
    bad = FRAMEWORKS[name][3]
    w = infos[name].probe.adopt(bad).await_ready()
    infos[name].probe = None
    try:
        assert w.state == "skip", (w.state, w.reason)
        assert f"{name} has no device {bad!r} here (found: the CPU, key None" in w.reason
        assert "\n" not in w.reason
    finally:
        w.stop()


def test_a_backend_without_device_support_is_listed_as_before():
    from conformance.backends.base import DeviceInfo
    from conformance.lifecycle import BackendInfo

    assert backend_line(BackendInfo("numpy", None, [DeviceInfo(key=None, name="CPU")])) == "numpy      available"
    assert (
        backend_line(BackendInfo("opencl", None, [DeviceInfo(key="a"), DeviceInfo(key="b")]))
        == "opencl     available [a, b]"
    )
    assert backend_line(BackendInfo("fw", "ImportError: no fw")) == "fw         unavailable: ImportError: no fw"
    gpu = [DeviceInfo(key=None, name="CPU"), DeviceInfo(key="cuda:0")]
    assert backend_line(BackendInfo("torch", None, gpu)) == "torch      available [cpu, cuda:0]"
