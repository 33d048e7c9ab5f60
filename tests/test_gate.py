"""A green result means something was checked; every mistake is caught before the first case; a full disk or a
failing store costs one line, never a row that was finished."""

import json
import os

import pandas as pd
import pytest
from fs_helpers import conformance, read_only, tmpfs

from conformance.verdict import judge

SUITE = (
    '[suite]\nname = "tiny"\n[defaults]\nbackward = true\n'
    '[[case]]\nname = "t"\nshape = [[8, 3], [4, 3, 5]]\nmode = ["train", "infer"]\n'
)
QUICK = ["--repeats", "3", "--time-budget", "0", "--history", "none"]


def one_line_error(r, code=2):
    """The one error line (exit 2: the only line; exit 4, mid-run: the last, after the progress lines)."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == code, r.stderr[-2000:]
    errors = [ln for ln in lines if ln.startswith("conformance: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in r.stderr, r.stderr
    assert code != 2 or len(lines) == 1, r.stderr
    return errors[0]


@pytest.fixture
def suite(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(SUITE)
    return p


# ---- 1. a run in which the system under test did not run is not a pass ----------------------------------------
def test_no_opencl_device_is_nothing_checked_and_compare_sees_the_loss(tmp_path, suite):
    good, empty = tmp_path / "good", tmp_path / "empty"
    r = conformance("run", "--suite", suite, "--backend", "opencl", "--out", good, *QUICK)
    assert r.returncode == 0, r.stderr[-2000:]
    vendors = tmp_path / "no-vendors"
    vendors.mkdir()
    r = conformance(
        "run", "--suite", suite, "--backend", "opencl", "--out", empty, *QUICK, env={"OCL_ICD_VENDORS": vendors}
    )
    assert r.returncode == 3, r.stdout + r.stderr[-2000:]
    assert r.stdout.startswith("NOTHING CHECKED") and "system under test" in r.stdout
    summary = (empty / "summary.md").read_text()
    assert summary.startswith("# BatchNorm conformance: suite `tiny`: NOTHING CHECKED")
    df = pd.read_csv(empty / "results.csv")
    assert set(df["status"]) == {"skip"} and df["reason"].str.contains("no OpenCL platform").all()
    allowed = conformance(
        "run",
        "--suite",
        suite,
        "--backend",
        "opencl",
        "--out",
        tmp_path / "e2",
        *QUICK,
        "--allow-empty",
        env={"OCL_ICD_VENDORS": vendors},
    )
    assert allowed.returncode == 0 and "nothing checked, allowed" in allowed.stdout
    cmp = conformance("compare", good, empty, "--history", tmp_path / "h.sqlite")
    assert cmp.returncode == 1 and "# Regression check: REGRESSION" in cmp.stdout
    assert "## Removed (case, target): whole targets" in cmp.stdout  # the devices' targets vanished


def test_verdicts_of_row_sets():
    meta = {"targets": [{"target": "opencl@a"}, {"target": "numpy"}], "sut_requested": True}
    row = lambda target, status: {"target": target, "backend": target.split("@")[0], "status": status}
    assert judge(pd.DataFrame([row("opencl@a", "pass"), row("numpy", "pass")]), meta).code == 0
    only_peer = judge(pd.DataFrame([row("opencl@a", "skip"), row("numpy", "pass")]), meta)
    assert only_peer.word == "NOTHING CHECKED" and only_peer.code == 3
    assert only_peer.notes == ("the system under test (opencl) judged nothing on any device",)
    two = {**meta, "targets": meta["targets"] + [{"target": "torch"}]}
    assert (
        judge(pd.DataFrame([row("opencl@a", "skip"), row("numpy", "pass"), row("torch", "skip")]), two).notes[1]
        == "judged nothing on torch"
    )  # the SUT's devices are said once, the others by name
    assert (
        judge(pd.DataFrame([row("opencl@a", "skip"), row("numpy", "pass")]), {**meta, "sut_requested": False}).code == 0
    )
    assert judge(pd.DataFrame([row("opencl@a", "unsupported")]), meta).code == 3
    no_rows = judge(pd.DataFrame(columns=["target", "backend", "status"]), meta)
    assert no_rows.code == 3 and "selected no case" in no_rows.notes[0]
    assert judge(pd.DataFrame(columns=["target", "backend", "status"]), meta, allow_empty=True).code == 0
    assert judge(pd.DataFrame([row("opencl@a", "skip"), row("numpy", "fail")]), meta).code == 1  # failures first
    xfail = judge(pd.DataFrame([row("opencl@a", "xfail")]), meta)
    assert xfail.code == 0 and not xfail.notes[1:]  # an xfail was judged: the output was compared


def test_read_only_pyopencl_cache_moves_the_caches(tmp_path, suite):
    """A read-only ~/.cache/pyopencl made every Intel row a KeyError (pyopencl reads an unset variable when its
    cache fails): now the caches go to a private folder, said in one line, and every device conforms."""
    home = tmp_path / "home"
    with read_only(home / ".cache" / "pyopencl"):
        r = conformance(
            "run",
            "--suite",
            suite,
            "--backend",
            "opencl",
            "--out",
            tmp_path / "o",
            *QUICK,
            env={"HOME": home, "XDG_CACHE_HOME": ""},
        )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert set(df["status"]) <= {"pass", "unsupported"} and (df["status"] == "pass").any()
    assert not df["reason"].fillna("").str.contains("KeyError").any()
    notes = [ln for ln in r.stderr.splitlines() if "is not writable" in ln]
    assert len(notes) == 1 and "OpenCL caches" in notes[0], r.stderr
    assert "is not writable" in (tmp_path / "o" / "summary.md").read_text()


# ---- 3. checked before the first case: exit 2 and nothing written ----------------------------------------------
@pytest.mark.parametrize(
    "make_args, expect",
    [
        (lambda t: ["--out", t / "file"], "exists and is not a folder"),
        (lambda t: ["--out", ""], "must not be empty"),
        (lambda t: ["--history", "foo://bar"], "foo"),
        (lambda t: ["--history", t / "not-a-db.sqlite"], "not a database"),
        (lambda t: ["--bench", t / "stale.csv"], "frac_of_copy"),
        (lambda t: ["--bench", t / "missing.csv"], "no such file"),
        (lambda t: ["--conventions", t / "stale.csv"], "not a conventions.json"),
        (lambda t: ["--timeout", "nan"], "finite"),
        (lambda t: ["--timeout", "inf"], "finite"),
        (lambda t: ["--time-budget", "nan"], "finite"),
        (lambda t: ["--repeats", "0"], ">= 1"),
    ],
)
def test_mistakes_are_caught_before_the_first_case(tmp_path, suite, make_args, expect):
    (tmp_path / "file").write_text("x")
    (tmp_path / "not-a-db.sqlite").write_text("this is not a database, it is a text file with some length to it")
    (tmp_path / "stale.csv").write_text("case_id,phase,target,time_ms_median\nc,forward_train,numpy,1.0\n")
    args = make_args(tmp_path)
    out = ["--out", tmp_path / "out"] if "--out" not in args else []
    history = [] if "--history" in args else ["--history", "none"]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = conformance("run", "--suite", suite, "--backend", "numpy", *out, *history, *args)
    assert expect in one_line_error(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, not even the out folder


def test_unwritable_out_is_refused_before_the_first_case(tmp_path, suite):
    with read_only(tmp_path / "ro"):
        r = conformance("run", "--suite", suite, "--backend", "numpy", "--out", tmp_path / "ro" / "out", *QUICK)
    assert "not writable" in one_line_error(r)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_history_none_on_compare_and_history_is_refused(tmp_path, how):
    args, env = (["--history", "none"], None) if how == "option" else ([], {"CONFORMANCE_HISTORY": "none"})
    for cmd in (["history"], ["compare", "latest", "previous"], ["devices-table"]):
        r = subprocess_in(tmp_path, cmd + args, env)
        assert "'none' records nothing" in one_line_error(r)
    assert not (tmp_path / "none").exists()


def subprocess_in(folder, args, env):
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "conformance", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "option, value",
    [("--error-factor", "nan"), ("--error-factor", "inf"), ("--min-time-ratio", "nan"), ("--min-time-ms", "-1")],
)
def test_compare_refuses_numbers_that_switch_a_gate_off(tmp_path, option, value):
    r = conformance("compare", tmp_path, tmp_path, option, value, "--history", tmp_path / "h.sqlite")
    assert option in one_line_error(r)


# ---- 3. a full disk: one line, what is finished stays safe ------------------------------------------------------
def test_full_disk_under_out_is_one_line_and_keeps_the_finished_cases(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(
        '[suite]\nname = "s"\n[[case]]\nname = "c"\nshape = [64, 3]\nseed = [' + ", ".join(map(str, range(400))) + "]\n"
    )
    with tmpfs(tmp_path / "disk", "160k") as disk:
        r = conformance("run", "--suite", suite, "--backend", "numpy", "--out", disk / "out", *QUICK)
        line = one_line_error(r, code=4)
        assert "No space left on device" in line and "journal.jsonl" in line and "finished cases are safe" in line
        assert f"conformance run --resume {disk / 'out'}" in line
        leftovers = [p.name for p in (disk / "out").iterdir() if ".tmp" in p.name]
        assert not leftovers
        saved = (disk / "out" / "journal.jsonl").read_bytes()
        assert saved.endswith(b"\n")  # no torn line left behind
        n_saved = len(saved.splitlines())
        assert 0 < n_saved < 400 and int(line.split(" finished cases")[0].rsplit(" ", 1)[1]) == n_saved
        copy = tmp_path / "moved"
        copy.mkdir()
        for p in (disk / "out").iterdir():
            (copy / p.name).write_bytes(p.read_bytes())
    r = conformance("run", "--resume", copy)  # moved where there is room: the run completes
    assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(copy / "results.csv")
    assert df["case_id"].nunique() == 400 and json.loads((copy / "run.json").read_text())["partial"] is False


def test_full_disk_under_the_history_store_is_a_warning_not_a_failure(tmp_path, suite):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        store = disk / "h.sqlite"
        first = conformance(
            "run", "--suite", suite, "--backend", "numpy", "--out", tmp_path / "o1", *QUICK[:4], "--history", store
        )
        assert first.returncode == 0 and "recorded as run" in first.stderr, first.stderr[-2000:]
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # now the disk is full
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        r = conformance(
            "run", "--suite", suite, "--backend", "numpy", "--out", tmp_path / "o2", *QUICK[:4], "--history", store
        )
        assert [p.name for p in disk.iterdir() if p.name not in ("h.sqlite", "filler")] in ([], ["h.sqlite-journal"])
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: cannot record the run in history store")]
    assert len(warnings) == 1 and "conformance history --record" in warnings[0] and "Traceback" not in r.stderr
    assert pd.read_csv(tmp_path / "o2" / "results.csv")["status"].eq("pass").all()
