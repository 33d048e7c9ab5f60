"""A real framework worker killed mid-case (SIGKILL, as a segfault would end it) costs that case's rows on
that framework, which come out as `crash`; the worker restarts and no other row is lost."""

import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from conformance.worker import probe

psutil = pytest.importorskip("psutil", reason="psutil is not installed")

SUITE = """[suite]
name = "isolation"
[defaults]
backward = true
[[case]]
name = "before"
shape = [8, 4, 3, 3]
[[case]]
name = "victim"
shape = [32, 32, 32, 32]
[[case]]
name = "after"
shape = [8, 4, 3, 3]
"""


def _torch_worker(parent: int):
    for child in psutil.Process(parent).children(recursive=True):
        try:
            if any("libtorch_cpu" in m.path for m in child.memory_maps()):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_killed_framework_worker(tmp_path):
    reason, _, _ = probe("torch")
    if reason is not None:
        pytest.skip(f"the torch backend is unavailable here: {reason}")
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conformance",
            "run",
            "--suite",
            str(suite),
            "--backend",
            "numpy",
            "--backend",
            "torch",
            "--out",
            str(out),
            "--repeats",
            "1000000",
            "--time-budget",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed, lines = [], []

    # every target spends 2 s on every case (time budget), numpy first: on the victim the torch worker waits idle
    # (a kill then would only be noticed as a dead worker, started afresh), then computes for 2 s
    def killer():  # once the first case is done, wait for the torch worker to be busy on the victim, kill it
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("[1/3]"):
                break
        w = _torch_worker(proc.pid)
        time.sleep(0.5)  # numpy has 2 s of the victim first: whatever torch's threads did after the first case is over
        deadline = time.monotonic() + 240
        while w is not None and time.monotonic() < deadline and proc.poll() is None:
            if w.cpu_percent(interval=0.1) > 10:  # idle, it blocks on its pipe: 0 %; busy, well above on any load
                os.kill(w.pid, signal.SIGKILL)
                killed.append(w.pid)
                break
        lines.extend(proc.stderr)

    t = threading.Thread(target=killer)
    t.start()
    proc.wait(timeout=600)
    t.join()
    assert killed, "the torch worker was never seen busy"
    df = pd.read_csv(out / "results.csv")
    crashed = df[df["status"] == "crash"]
    assert set(crashed["backend"]) == {"torch"} and crashed["case"].nunique() == 1
    assert "SIGKILL" in crashed["reason"].iloc[0]
    # every case has rows from every target, and everything outside the crashed case passed or is listed
    assert df.groupby("case")["target"].nunique().eq(2).all()
    rest = df[df["status"] != "crash"]
    assert rest["status"].isin(["pass", "xfail", "unsupported"]).all(), rest[
        ~rest["status"].isin(["pass", "xfail", "unsupported"])
    ]
    assert set(crashed["case"]) == {"victim"}, "".join(lines)
    others = {"before", "after"}
    assert others <= set(rest[rest["backend"] == "torch"]["case"])  # the worker came back for the next cases
    assert proc.returncode == 1  # a crash is unexpected
