"""Interrupted runs lose nothing: SIGTERM or Ctrl-C leaves a report of every finished case, marked partial,
and `conformance run --resume DIR` completes it with the same rows as an uninterrupted run."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conformance.retime import TIMING_COLUMNS

SUITE = """[suite]
name = "resumable"
[defaults]
backward = true
[[case]]
name = "r"
shape = [[8, 6, 5, 5], [16, 12], [4, 3, 7]]
mode = ["train", "infer"]
seed = [1, 2]
"""
SLOW = ["--backend", "numpy", "--repeats", "100000", "--time-budget", "0.25", "--history", "none"]
TIMING = list(TIMING_COLUMNS)  # what differs between two runs of the same cases: the timings


def conformance(*args):
    return subprocess.run([sys.executable, "-m", "conformance", *args], capture_output=True, text=True, timeout=600)


def interrupted_run(suite, out, sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance", "run", "--suite", str(suite), "--out", str(out), *SLOW],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        if line.startswith("[4/12]"):
            time.sleep(0.1)  # land inside the next case, while the worker is busy and owes a reply
            proc.send_signal(sig)
            break
    proc.communicate(timeout=300)
    return proc.returncode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, sig):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    full, part = tmp_path / "full", tmp_path / "part"
    r = conformance("run", "--suite", str(suite), "--out", str(full), *SLOW[:1], "numpy", "--history", "none")
    assert r.returncode == 0, r.stderr

    assert interrupted_run(suite, part, sig) == 130
    meta = json.loads((part / "run.json").read_text())
    assert meta["partial"] is True and 4 <= len(meta["done_cases"]) < 12
    partial = pd.read_csv(part / "results.csv")
    assert set(partial["case_id"]) == set(meta["done_cases"])  # finished cases only, each whole
    assert partial.groupby("case_id").size().isin([6, 8]).all()
    assert "Interrupted" in (part / "summary.md").read_text()

    r = conformance("run", "--resume", str(part))
    assert r.returncode == 0, r.stderr
    done = pd.read_csv(part / "results.csv").drop(columns=TIMING)
    want = pd.read_csv(full / "results.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(done.reset_index(drop=True), want.reset_index(drop=True))
    assert json.loads((part / "run.json").read_text())["partial"] is False


def test_resume_of_a_complete_run_is_a_user_error(tmp_path):
    out = tmp_path / "o"
    assert conformance("run", "--backend", "numpy", "--out", str(out), "--history", "none").returncode == 0
    r = conformance("run", "--resume", str(out))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nothing to resume" in r.stderr


def test_kill_9_loses_no_finished_case(tmp_path):
    """kill -9 leaves no chance to write anything: the journal already holds every finished case, and --resume
    completes the run with the rows an uninterrupted run has."""
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    full, part = tmp_path / "full", tmp_path / "part"
    assert (
        conformance(
            "run", "--suite", str(suite), "--out", str(full), "--backend", "numpy", "--history", "none"
        ).returncode
        == 0
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance", "run", "--suite", str(suite), "--out", str(part), *SLOW],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        if line.startswith("[5/12]"):
            proc.kill()
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    lines = (part / "journal.jsonl").read_text().splitlines()
    assert len(lines) >= 5 and json.loads((part / "run.json").read_text())["partial"] is True
    assert not (part / "results.csv").exists()  # the reports come at the end; the rows were safe before
    r = conformance("run", "--resume", str(part))
    assert r.returncode == 0, r.stderr
    assert f"resuming: {len(lines)} done" in r.stderr
    done = pd.read_csv(part / "results.csv").drop(columns=TIMING)
    want = pd.read_csv(full / "results.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(done.reset_index(drop=True), want.reset_index(drop=True))


def test_resume_goes_by_the_journal_not_by_run_json_or_results_csv(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    out = tmp_path / "o"
    assert (
        conformance(
            "run", "--suite", str(suite), "--out", str(out), "--backend", "numpy", "--history", "none"
        ).returncode
        == 0
    )
    want = pd.read_csv(out / "results.csv").drop(columns=TIMING)
    # results.csv cut short (run.json still says complete): the report is rewritten from the journal, nothing re-run
    text = (out / "results.csv").read_text().splitlines()
    (out / "results.csv").write_text("\n".join(text[:4]) + "\n")
    r = conformance("run", "--resume", str(out))
    assert r.returncode == 0 and "0 cases" in r.stderr, r.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv").drop(columns=TIMING), want)
    # the journal cut in the middle of its 11th line (a torn write): cases 11 and 12 run again, the rest is kept
    journal = (out / "journal.jsonl").read_bytes()
    cut = journal.index(b"\n", len(journal) - len(journal.splitlines()[-1]) - 2 - len(journal.splitlines()[-2]) // 2)
    (out / "journal.jsonl").write_bytes(journal[: cut - 100])
    r = conformance("run", "--resume", str(out))
    assert r.returncode == 0 and "2 cases" in r.stderr and "resuming: 10 done" in r.stderr, r.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv").drop(columns=TIMING), want)
    assert len((out / "journal.jsonl").read_text().splitlines()) == 12
