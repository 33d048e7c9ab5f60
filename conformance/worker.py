"""One worker process per (backend, device): a backend is imported only there.

The parent talks to it over a pipe. A worker that dies (segfault, abort) or does not answer in time costs
the rows of the case in flight, which get status `crash` or `timeout`; the worker is started again for the
next case and the run goes on.

A probe (`Worker(backend, probe=True)`) imports its backend, reports the devices and then waits: told to open
one of them (adopt()), it becomes the worker of that device, so a run imports each framework once, not once to
find the devices and again to run (the smoke suite: about 7 s of 23).

What crosses the pipe is named: the handshake (Handshake: state, reason, devices, BackendMeta) and the answer to
one case (Reply: status, result, reason, detail).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import traceback
from dataclasses import dataclass, field

from .backends.base import Profile, Result, Skip, Unsupported, unimplemented
from .errors import first_line

_CTX = mp.get_context("spawn")
STARTUP_TIMEOUT_S = 300.0  # first program build on a cold cache can take a while


@dataclass(frozen=True)
class BackendMeta:
    """What the parent knows of a backend without importing it: its module's declarations (base.py's contract)."""

    documented: Profile | None = None  # DOCUMENTED: the conventions its pages state
    profile: Profile | None = None  # PROFILE: what it runs under (a framework has one; the SUT and numpy do not)
    extra_outputs: dict = field(default_factory=dict)  # output name -> the canonical quantity it holds
    version: str = ""
    flags: tuple = ()  # Combos: the documented flag combinations
    notes: tuple = ()  # one-line notes for the report (e.g. where caches went)

    @property
    def framework(self) -> bool:
        return self.profile is not None

    @classmethod
    def of(cls, mod) -> BackendMeta:
        version = getattr(mod, "version", None)
        return cls(
            documented=getattr(mod, "DOCUMENTED", None),
            profile=getattr(mod, "PROFILE", None),
            extra_outputs=dict(getattr(mod, "EXTRA_OUTPUTS", {})),
            version=version() if callable(version) else "",
            flags=tuple(getattr(mod, "FLAGS", ())),
            notes=tuple(getattr(mod, "NOTES", ())),
        )


@dataclass(frozen=True)
class Handshake:
    """A worker's first message: 'ready' (a worker), 'devices' (a probe), or 'skip' / 'unavailable' and why."""

    state: str
    reason: str | None = None
    devices: list = field(default_factory=list)  # DeviceInfo
    meta: BackendMeta = field(default_factory=BackendMeta)


@dataclass(frozen=True)
class Reply:
    """The answer to one case: status 'ok' with the backend's Result, or 'unsupported' | 'error' | 'crash' |
    'timeout' | 'skip' with a one-line reason (and, for an error, the traceback's tail in detail)."""

    status: str
    result: Result | None = None
    reason: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def outputs(self) -> dict:
        return self.result.outputs if self.result is not None else {}


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: VmHWM (ru_maxrss would count the parent's memory at the
    fork that preceded this worker's exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _open(conn, backend: str, device_key, probe: bool):
    """In the child: import the backend and open its device (a probe first reports the devices and waits to be
    told which). (module, session) once the handshake 'ready' is sent, None when the worker is done."""
    from . import backends

    try:
        mod = backends.load(backend)
        reason = mod.available()
        if reason is not None:
            conn.send(Handshake("unavailable", reason))
            return None
        devices = mod.devices()
        if probe:
            conn.send(Handshake("devices", None, devices, BackendMeta.of(mod)))
            try:
                msg = conn.recv()
            except (EOFError, KeyboardInterrupt):
                return None
            if msg[0] != "open":
                return None
            device_key = msg[1]
        session = mod.open(device_key)
    except Skip as exc:
        conn.send(Handshake("skip", str(exc).strip().splitlines()[0] if str(exc).strip() else "device unusable"))
        return None
    except Exception as exc:  # a framework that is missing or broken: its import fails here, in the worker
        conn.send(Handshake("unavailable", first_line(exc)))
        return None
    conn.send(Handshake("ready", None, devices, BackendMeta.of(mod)))
    return mod, session


def _run(mod, session, case, inputs, policy, use_defaults: bool) -> Reply:
    """In the child: one case, default-deny (unimplemented fields are unsupported before the backend is called)."""
    try:
        reason = unimplemented(mod, case) or mod.supports(session, case)
        if reason:
            return Reply("unsupported", reason=reason)
        extra = {"use_defaults": True} if use_defaults else {}
        return Reply("ok", mod.run(session, case, inputs, policy, **extra))
    except Unsupported as exc:
        return Reply("unsupported", reason=str(exc))
    except Exception as exc:
        return Reply("error", reason=first_line(exc), detail=traceback.format_exc(limit=4))


def _main(conn, backend: str, device_key, probe: bool) -> None:  # runs in the child
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us cleanly
    opened = _open(conn, backend, device_key, probe)
    if opened is None:
        return
    mod, session = opened
    cached = {}  # inputs kept by key, so a benchmark sends big tensors once
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if msg[0] == "quit":
            return
        if msg[0] == "keep":  # ("keep", key, inputs): later runs may pass the key instead of the arrays
            cached.clear()
            cached[msg[1]] = msg[2]
            conn.send(("kept", msg[1]))
        elif msg[0] == "copy":  # ("copy", nbytes, policy): the memory-copy roofline of this device
            try:
                conn.send(("copied", mod.measure_copy(session, msg[1], msg[2])))
            except Exception as exc:
                conn.send(("error", first_line(exc)))
        elif msg[0] == "rss":
            conn.send(("rss", peak_rss_mib()))
        else:  # ("run", case, inputs or a kept key, policy, use_defaults)
            _, case, inputs, policy, use_defaults = msg
            msg = None
            conn.send(
                _run(mod, session, case, cached[inputs] if isinstance(inputs, str) else inputs, policy, use_defaults)
            )
            inputs = None  # an idle worker holds no case's arrays (memory.py counts on it)


class WorkerDied(Exception):
    pass


class Worker:
    """A backend on one device (device_key None: its default one), in its own process; with probe=True, a probe
    of the backend's devices that adopt() can turn into a worker. run() returns a Reply."""

    def __init__(self, backend: str, device_key=None, env: dict | None = None, *, probe: bool = False):
        self.backend, self.device_key, self.env, self.probe = backend, device_key, env or {}, probe
        self.proc = None
        self.conn = None
        self.state = None  # the handshake's: 'ready' | 'devices' | 'skip' | 'unavailable'
        self.reason = None
        self.devices = []
        self.meta = BackendMeta()

    def launch(self):
        """Start the process; await() waits for its handshake. Several workers can launch at once."""
        parent, child = _CTX.Pipe()
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            self.proc = _CTX.Process(target=_main, args=(child, self.backend, self.device_key, self.probe), daemon=True)
            self.proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        self.conn = parent
        return self

    def await_ready(self, keep_probe: bool = False):
        """The handshake: state 'ready' (a worker), 'devices' (a probe) or why not. A probe is ended then,
        unless keep_probe: it waits for adopt()."""
        try:
            hello = self._recv(STARTUP_TIMEOUT_S)
            self.state, self.reason, self.devices, self.meta = hello.state, hello.reason, hello.devices, hello.meta
        except (WorkerDied, TimeoutError) as exc:
            self.state, self.reason = "unavailable", f"worker failed to start: {exc}"
            self.kill()
        if not (self.state == "ready" or (keep_probe and self.state == "devices")):
            self.stop()
        return self

    def adopt(self, device_key):
        """A kept probe becomes the worker of one of its devices, its backend already imported (a dead one is
        started afresh); await_ready() then waits for it like for a launched worker."""
        self.device_key, self.probe = device_key, False
        try:
            self.conn.send(("open", device_key))
        except (AttributeError, BrokenPipeError, OSError):
            self.kill()
            return self.launch()
        return self

    def start(self):
        return self.launch().await_ready()

    def _recv(self, timeout: float):
        if not self.conn.poll(timeout):
            raise TimeoutError(f"no answer within {timeout:g} s")
        try:
            return self.conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            self.proc.join(5)
            raise WorkerDied(_describe_exit(self.proc.exitcode)) from None

    def run(self, case, inputs, policy, timeout: float, use_defaults: bool = False) -> Reply:
        """The Reply of one case; a worker that dies is 'crash', one that does not answer in time 'timeout' (it
        is killed, and started again by the next run)."""
        if self.proc is None or not self.proc.is_alive():
            self.start()
            if self.state != "ready":
                return Reply(self.state if self.state == "skip" else "error", reason=self.reason)
        try:
            self.conn.send(("run", case, inputs, policy, use_defaults))
            return self._recv(timeout)
        except TimeoutError as exc:
            self.kill()
            return Reply("timeout", reason=f"{self.backend}: {exc}; worker killed and restarted")
        except (WorkerDied, BrokenPipeError, ConnectionResetError):
            self.proc.join(5)
            how = _describe_exit(self.proc.exitcode)
            self.kill()
            return Reply("crash", reason=f"{self.backend}: worker died ({how}); restarted")

    def keep(self, key: str, inputs, timeout: float = 600.0) -> bool:
        """Send inputs once; later run() calls may pass `key` in their place. False if the worker is gone."""
        if self.proc is None or not self.proc.is_alive():
            return False
        try:
            self.conn.send(("keep", key, inputs))
            return self._recv(timeout)[0] == "kept"
        except (TimeoutError, WorkerDied, BrokenPipeError):
            self.kill()
            return False

    def measure_copy(self, nbytes: int, policy, timeout: float = 600.0):
        """Wall times (ms) of copying nbytes on this worker's device, or None where it cannot."""
        try:
            self.conn.send(("copy", nbytes, policy))
            kind, value = self._recv(timeout)
        except (TimeoutError, WorkerDied, OSError, AttributeError):  # no worker, or it died: no figure
            return None
        return value if kind == "copied" else None

    def peak_rss_mib(self) -> float | None:
        try:
            self.conn.send(("rss",))
            kind, value = self._recv(30)
        except (TimeoutError, WorkerDied, OSError, AttributeError):  # a dead worker has no answer: unknown
            return None
        return value if kind == "rss" else None

    def kill(self):
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        self.stop()

    def request_stop(self):
        """Ask the process to end, without waiting for it (stop() waits)."""
        if self.conn is not None:
            try:
                if self.proc is not None and self.proc.is_alive():
                    self.conn.send(("quit",))
            except (BrokenPipeError, OSError):
                pass
            self.conn.close()
            self.conn = None

    def stop(self):
        self.request_stop()
        if self.proc is not None:
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
            self.proc = None


def stop_all(workers) -> None:
    """Stop several workers, their processes ending side by side (a framework's exit can take a while)."""
    workers = [w for w in workers if w is not None]
    for w in workers:
        w.request_stop()
    for w in workers:
        w.stop()


def _describe_exit(code) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def probe(backend: str, env: dict | None = None):
    """(reason or None, [DeviceInfo], BackendMeta) for a backend, found in a throwaway worker process."""
    w = Worker(backend, env=env, probe=True)
    w.start()
    if w.state == "devices":
        return None, w.devices, w.meta
    return w.reason or "unavailable", [], BackendMeta()
