"""A backend that dies or hangs costs the rows of one case; the worker comes back for the next one."""

import os
import signal
import threading
import time

from conformance.backends.base import TimingPolicy
from conformance.case import Case
from conformance.generate import generate
from conformance.lifecycle import Target
from conformance.oracle import reference
from conformance.runner import rows_for
from conformance.worker import Worker

BUSY = Case(name="busy", shape=(8, 16, 16, 16), backward=True)
SMALL = Case(name="small", shape=(4, 3, 2))
# repeats without end: the worker is busy on it until it is killed, however fast the machine
ENDLESS = TimingPolicy(warmup=0, min_repeats=10**9, max_repeats=10**9, budget_s=1e9)


def test_killed_worker_gives_crash_then_recovers():
    w = Worker("numpy", None).start()
    assert w.state == "ready", w.reason
    try:
        pid = w.proc.pid
        inputs = generate(BUSY)
        threading.Timer(1.0, lambda: os.kill(pid, signal.SIGKILL)).start()
        reply = w.run(BUSY, inputs, ENDLESS, timeout=120)
        assert reply.status == "crash" and "SIGKILL" in reply.reason
        inputs = generate(SMALL)
        rows = rows_for(
            SMALL, Target("numpy", None, "ready"), w.run(SMALL, inputs, TimingPolicy(), 60), reference(SMALL, inputs)
        )
        assert [r["status"] for r in rows] == ["pass"] * len(SMALL.outputs)
        assert w.proc.pid != pid
    finally:
        w.stop()


def test_hanging_case_times_out_and_every_output_gets_a_row():
    w = Worker("numpy", None).start()
    try:
        t0 = time.monotonic()
        inputs = generate(BUSY)
        reply = w.run(BUSY, inputs, ENDLESS, timeout=0.5)
        assert reply.status == "timeout" and time.monotonic() - t0 < 30
        rows = rows_for(BUSY, Target("numpy", None, "ready"), reply, reference(BUSY, inputs))
        assert [r["output"] for r in rows] == list(BUSY.outputs)
        assert {r["status"] for r in rows} == {"timeout"} and all(BUSY.id in r["reason"] for r in rows)
        assert w.run(SMALL, generate(SMALL), TimingPolicy(), 60).ok
    finally:
        w.stop()


def test_a_kept_probe_becomes_the_worker_and_unused_probes_end():
    """discover(keep=True) keeps each backend's probe; start() makes it the worker of its first target (the
    same process: the backend is imported once); release_probes() ends the probe of a target not started."""
    from conformance.lifecycle import discover, release_probes, select_targets, start

    infos = discover(["numpy", "opencl"], keep=True)
    by_name = {i.name: i for i in infos}
    numpy_probe = by_name["numpy"].probe
    assert numpy_probe is not None and numpy_probe.state == "devices"
    pid = numpy_probe.proc.pid
    opencl = by_name["opencl"]
    keys = [d.key for d in opencl.devices]
    targets = select_targets(infos, keys[0] if keys else None, explicit=False)
    assert all(i.probe is None for i in infos)  # handed over
    assert [t.probe is not None for t in targets] == [True] * len(targets)  # numpy, and one OpenCL device
    try:
        start(targets[:1])
        w = targets[0].worker
        assert targets[0].label == "numpy" and targets[0].state == "ready" and targets[0].probe is None
        assert w.proc.pid == pid
        inputs = generate(SMALL)
        rows = rows_for(SMALL, targets[0], w.run(SMALL, inputs, TimingPolicy(), 60), reference(SMALL, inputs))
        assert [r["status"] for r in rows] == ["pass"] * len(SMALL.outputs)
        if keys:  # an OpenCL runtime is installed: its probe, never adopted, ends
            probe = targets[1].probe
            release_probes(targets)
            assert targets[1].probe is None and probe.proc is None
    finally:
        for t in targets:
            if t.worker is not None:
                t.worker.stop()
