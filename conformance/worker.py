"""One worker process per (backend, device): a backend is imported only there.

The parent talks to it over a pipe. A worker that dies (segfault, abort) or does not answer in time costs
the rows of the case in flight, which get status `crash` or `timeout`; the worker is started again for the
next case and the run goes on.

A probe (device key "__probe__") imports its backend, reports the devices and then waits: told to ("open",
key) it becomes the worker of that device, so a run imports each framework once, not once to find the
devices and again to run (the smoke suite: about 7 s of 23).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import traceback

from .backends.base import Skip, Unsupported, unimplemented

_CTX = mp.get_context("spawn")
STARTUP_TIMEOUT_S = 300.0  # first program build on a cold cache can take a while


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


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


def _meta(mod) -> dict:
    """What the parent needs to know of a backend without importing it: its conventions and extra outputs."""
    version = getattr(mod, "version", None)
    return {
        "documented": getattr(mod, "DOCUMENTED", None),
        "profile": getattr(mod, "PROFILE", None),
        "extra_outputs": dict(getattr(mod, "EXTRA_OUTPUTS", {})),
        "version": version() if callable(version) else "",
        "framework": hasattr(mod, "PROFILE"),
        "flags": tuple(getattr(mod, "FLAGS", ())),  # Combos: the documented flag combinations
        "notes": list(getattr(mod, "NOTES", [])),  # one-line notes for the report (e.g. where caches went)
    }


def _main(conn, backend: str, device_key) -> None:  # runs in the child
    from . import backends

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us cleanly

    try:
        mod = backends.load(backend)
        reason = mod.available()
        if reason is not None:
            conn.send(("unavailable", reason, [], {}))
            return
        devices = mod.devices()
        if device_key == "__probe__":
            conn.send(("devices", None, devices, _meta(mod)))
            try:
                msg = conn.recv()
            except (EOFError, KeyboardInterrupt):
                return
            if msg[0] != "open":
                return
            device_key = msg[1]
        session = mod.open(device_key)
    except Skip as exc:
        conn.send(("skip", str(exc).strip().splitlines()[0] if str(exc).strip() else "device unusable", [], {}))
        return
    except Exception as exc:  # a framework that is missing or broken: its import fails here, in the worker
        conn.send(("unavailable", backends.import_failure(exc), [], {}))
        return
    conn.send(("ready", None, devices, _meta(mod)))
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
            continue
        if msg[0] == "copy":  # ("copy", nbytes, policy): the memory-copy roofline of this device
            try:
                conn.send(("ok", mod.measure_copy(session, msg[1], msg[2])))
            except Exception as exc:
                conn.send(("error", _first_line(exc), ""))
            continue
        if msg[0] == "rss":
            conn.send(("rss", peak_rss_mib()))
            continue
        _, case, inputs, policy, use_defaults = msg
        if isinstance(inputs, str):
            inputs = cached[inputs]
        try:
            reason = unimplemented(mod, case) or mod.supports(session, case)
            if reason:
                conn.send(("unsupported", reason))
                continue
            extra = {"use_defaults": True} if use_defaults else {}
            conn.send(("ok", mod.run(session, case, inputs, policy, **extra)))
        except Unsupported as exc:
            conn.send(("unsupported", str(exc)))
        except Exception as exc:
            conn.send(("error", _first_line(exc), traceback.format_exc(limit=4)))
        finally:
            msg = inputs = None  # an idle worker holds no case's arrays (memory.py counts on it)


class WorkerDied(Exception):
    pass


class Worker:
    """A backend on one device, in its own process. run() returns the child's reply tuple."""

    def __init__(self, backend: str, device_key, env: dict | None = None):
        self.backend, self.device_key, self.env = backend, device_key, env or {}
        self.proc = None
        self.conn = None
        self.state = None  # 'ready' | 'skip' | 'unavailable'
        self.reason = None
        self.devices = []
        self.meta = {}

    def launch(self):
        """Start the process; await() waits for its handshake. Several workers can launch at once."""
        parent, child = _CTX.Pipe()
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            self.proc = _CTX.Process(target=_main, args=(child, self.backend, self.device_key), daemon=True)
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
            self.state, self.reason, self.devices, self.meta = self._recv(STARTUP_TIMEOUT_S)
        except (WorkerDied, TimeoutError) as exc:
            self.state, self.reason = "unavailable", f"worker failed to start: {exc}"
            self.kill()
        if not (self.state == "ready" or (keep_probe and self.state == "devices")):
            self.stop()
        return self

    def adopt(self, device_key):
        """A kept probe becomes the worker of one of its devices, its backend already imported (a dead one is
        started afresh); await_ready() then waits for it like for a launched worker."""
        self.device_key = device_key
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

    def run(self, case, inputs, policy, timeout: float, use_defaults: bool = False):
        """('ok', Result) | ('unsupported', reason) | ('error', reason, tb) | ('crash', reason) | ('timeout', reason)."""
        if self.proc is None or not self.proc.is_alive():
            self.start()
            if self.state != "ready":
                return (self.state if self.state == "skip" else "error", self.reason)
        try:
            self.conn.send(("run", case, inputs, policy, use_defaults))
            return self._recv(timeout)
        except TimeoutError as exc:
            self.kill()
            return ("timeout", f"{self.backend}: {exc}; worker killed and restarted")
        except (WorkerDied, BrokenPipeError, ConnectionResetError):
            self.proc.join(5)
            how = _describe_exit(self.proc.exitcode)
            self.kill()
            return ("crash", f"{self.backend}: worker died ({how}); restarted")

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
            reply = self._recv(timeout)
            return reply[1] if reply[0] == "ok" else None
        except Exception:  # noqa: BLE001
            return None

    def peak_rss_mib(self) -> float | None:
        try:
            self.conn.send(("rss",))
            reply = self._recv(30)
        except Exception:  # noqa: BLE001 - a dead worker has no answer; the figure is then unknown
            return None
        return reply[1] if reply[0] == "rss" else None

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
    """(reason or None, [DeviceInfo], meta) for a backend, found in a throwaway worker process."""
    w = Worker(backend, "__probe__", env)
    w.start()
    if w.state == "devices":
        return None, w.devices, w.meta
    return w.reason or "unavailable", [], {}
