"""History store and its commands, on real runs: SQLite (two writers at once), a real PostgreSQL server,
`conformance compare / history / devices-table` end to end on run directories made by `conformance run`."""

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from xml.dom import minidom

import pandas as pd
import pytest

sa = pytest.importorskip("sqlalchemy", reason="the history store needs SQLAlchemy (pip install sqlalchemy)")

from conformance import history  # noqa: E402
from conformance.errors import UserError  # noqa: E402


def conformance(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "conformance", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """Two real numpy runs of the smoke suite; B gets a planted failure and a planted 3x slowdown; A2 = copy of A."""
    root = tmp_path_factory.mktemp("runs")
    for name in ("A", "B"):  # each recorded by `conformance run` itself in a store of our own
        r = conformance("run", "--backend", "numpy", "--out", root / name, "--history", root / "run-history.sqlite")
        assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(root / "B" / "results.csv")
    cases = sorted(df["case_id"].unique())
    failed, slowed = cases[0], cases[1]
    # the slowed case is made a 5 ms one in A (smoke's cases are below the 1 ms judging floor), 3x that in B
    a = pd.read_csv(root / "A" / "results.csv")
    timing = ["time_ms_median", "time_ms_min", "time_ms_p10", "time_ms_p90"]
    sel = a["case_id"] == slowed
    a.loc[sel, timing] *= 5.0 / a.loc[sel, "time_ms_median"].iloc[0]
    a.to_csv(root / "A" / "results.csv", index=False)
    for name in ("A", "B"):  # the planted step is what is tested, not this machine's load at the time
        meta = json.loads((root / name / "run.json").read_text())
        meta["machine_load"] = {**(meta.get("machine_load") or {}), "cpu_stalled_share": 0.0}
        (root / name / "run.json").write_text(json.dumps(meta))
    shutil.copytree(root / "A", root / "A2")
    df["reason"] = df["reason"].astype(object)
    df.loc[(df["case_id"] == failed) & (df["output"] == "y"), ["status", "reason"]] = ["fail", "planted"]
    df.loc[df["case_id"] == slowed, timing] = a.loc[sel, timing].to_numpy() * 3
    df.to_csv(root / "B" / "results.csv", index=False)
    return root, failed, slowed


def _record_dir(path, url):
    df, meta = history.read_dir(Path(path))
    return history.record(df, meta, str(path), url)


def test_conformance_run_records_each_run(runs_dir):
    root, _, _ = runs_dir
    listed = history.runs(str(root / "run-history.sqlite"))
    assert len(listed) == 2 and set(listed["run_dir"]) == {str((root / n).resolve()) for n in ("A", "B")}
    df, meta = history.load_run(listed["run_id"].iloc[0], str(root / "run-history.sqlite"))
    assert len(df) == len(pd.read_csv(root / "A" / "results.csv")) and meta["suite"] == "smoke"


def test_compare_run_directories_end_to_end(runs_dir, tmp_path):
    root, failed, slowed = runs_dir
    r = conformance("compare", root / "A", root / "B", "--out", tmp_path / "cmp.md")
    assert r.returncode == 1, r.stderr + r.stdout[-2000:]
    assert "# Regression check: REGRESSION" in r.stdout
    new_failures = r.stdout.split("## New failures (1)")[1].split("##")[0]
    assert failed in new_failures and "planted" in new_failures
    timing = r.stdout.split("## Timing regressions")[1].split("\n## ")[0]
    assert slowed in timing
    assert (tmp_path / "cmp.md").read_text() == r.stdout
    same = conformance("compare", root / "A", root / "A2")
    assert same.returncode == 0 and "no regression" in same.stdout and "| New failures | 0 |" in same.stdout
    bad = conformance("compare", root / "A", tmp_path / "nowhere", "--history", tmp_path / "h.sqlite")
    assert bad.returncode == 2 and "nowhere" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_record_resolve_and_history_commands(runs_dir, tmp_path):
    root, failed, _ = runs_dir
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    ids = [_record_dir(root / n, url) for n in ("A", "B")]
    listed = history.runs(url)
    assert list(listed["run_id"]) == ids[::-1] and listed["targets"].iloc[0] == ["numpy"]
    df, meta = history.load_run(ids[1], url)
    orig = pd.read_csv(root / "B" / "results.csv")
    assert len(df) == len(orig) and meta["suite"] == "smoke" and meta["run_dir"] == str((root / "B").resolve())
    assert df.loc[(df["case_id"] == failed) & (df["output"] == "y"), "status"].item() == "fail"
    assert listed["counts"].iloc[0]["fail"] == 1
    for ref, want in (("latest", ids[1]), ("previous", ids[0]), (ids[0][:-3], ids[0])):
        assert history.resolve(ref, url)[1]["run_id"] == want
    with pytest.raises(UserError, match="no-such-run"):
        history.resolve("no-such-run", url)
    with pytest.raises(UserError, match="'previous'"):
        history.resolve("previous", url, device="opencl@nothing")
    # commands on the store
    r = conformance("compare", "previous", "latest", "--history", url)
    assert r.returncode == 1 and f"previous = {ids[0]}" in r.stdout
    assert conformance("compare", "latest", "latest", "--history", url).returncode == 0
    r = conformance("history", "--history", url)
    assert (
        r.returncode == 0
        and ids[0] in r.stdout
        and f"fail 1 pass {len(pd.read_csv(root / 'B' / 'results.csv')) - 1}" in r.stdout
    )
    for plot in ("trend.png", "trend.svg"):
        r = conformance("history", "--history", url, "--case", failed, "--backend", "numpy", "--plot", tmp_path / plot)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / plot).stat().st_size > 1000
    assert r.stdout.count("| numpy |") == 2 and "norm_err y" in r.stdout
    r = conformance("history", "--history", url, "--case", "nope", "--backend", "numpy")
    assert r.returncode == 2 and "'nope'" in r.stderr
    # a newer run of another suite: `previous` follows the suite of `latest` unless --suite says otherwise
    small = df.head(8).assign(case_id="other-case")
    history.record(small, {**meta, "suite": "other", "started": "2999-01-01T00:00:00+00:00"}, None, url)
    r = conformance("compare", "previous", "latest", "--history", url)
    assert r.returncode == 2 and "suite 'other'" in r.stderr
    assert conformance("compare", "previous", "latest", "--history", url, "--suite", "smoke").returncode == 1
    r = conformance("devices-table", "--history", url, "--suite", "smoke", "--out", tmp_path / "dev.md")
    assert r.returncode == 0 and ids[1] in r.stdout and "fail" in (tmp_path / "dev.md").read_text()


def test_own_svg_writer_is_wellformed():
    from conformance.cli_history import svg_trend

    text = svg_trend(
        ["r1", "r2", "r3"],
        {"numpy y": [0.5, float("nan"), 2.0], "numpy <dx>": [1, 1, 1]},
        {"numpy": [0.1, 0.12, 0.3]},
        title="a & b",
    )
    doc = minidom.parseString(text)
    assert len(doc.getElementsByTagName("polyline")) == 3 and len(doc.getElementsByTagName("circle")) == 8


def test_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    assert len(history.runs(url)) == 0  # creates the tables
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": history.SCHEMA_VERSION + 1})
    eng.dispose()
    with pytest.raises(UserError, match="newer than this code"):
        history.runs(url)
    r = conformance("history", "--history", url)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "schema version" in r.stderr


WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np, pandas as pd
    from conformance import history
    url, tag, n_runs, n_rows, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    df = pd.DataFrame({"case_id": [f"{tag}-case-{i // 4}" for i in range(n_rows)], "backend": "numpy",
                       "target": "numpy", "vs": "oracle", "output": ["y", "mean", "var", "dx"] * (n_rows // 4),
                       "status": "pass", "norm_err": np.linspace(0, 1, n_rows), "time_ms_median": 1.0,
                       "time_ms_p10": 0.9, "time_ms_p90": 1.1})
    meta = {"suite": "concurrency", "host": {"name": tag}, "targets": [{"target": "numpy", "backend": "numpy",
            "state": "ready", "device": {"name": "host CPU"}}], "packages": {"numpy": np.__version__}}
    time.sleep(max(0.0, start - time.time()))
    for _ in range(n_runs):
        print(history.record(df, meta, None, url), flush=True)
""")


def _concurrent_writers(url, n_procs=2, n_runs=4, n_rows=2000):
    start = time.time() + 2.0  # both processes are importing by then, so their inserts overlap
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"w{k}", str(n_runs), str(n_rows), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(n_procs)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    ids = [line for out, _ in outs for line in out.split()]
    listed = history.runs(url, suite="concurrency")
    assert sorted(listed["run_id"]) == sorted(ids) and len(ids) == n_procs * n_runs
    for run_id in ids:
        df, meta = history.load_run(run_id, url)
        assert len(df) == n_rows and meta["suite"] == "concurrency"
        assert df["norm_err"].max() == 1.0 and set(df["output"]) == {"y", "mean", "var", "dx"}


def test_two_processes_recording_at_once_to_sqlite_lose_nothing(tmp_path):
    _concurrent_writers(f"sqlite:///{tmp_path / 'h.sqlite'}")


def test_default_store_and_file_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("CONFORMANCE_HISTORY", raising=False)
    assert history.url_of(None) == f"sqlite:///{history.DEFAULT_PATH}"
    assert Path(__file__).resolve().parents[1] / "reports" / "history.sqlite" == history.DEFAULT_PATH
    assert history.url_of(str(tmp_path / "x" / "h.db")) == f"sqlite:///{tmp_path / 'x' / 'h.db'}"
    monkeypatch.setenv("CONFORMANCE_HISTORY", str(tmp_path / "env.sqlite"))
    assert history.url_of(None).endswith("env.sqlite")
    with pytest.raises(UserError, match="cannot open history store"):
        history.runs("nosuchdialect://x/y")


# ---------------------------------------------------------------- PostgreSQL, a real private server


def _pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name.split(".")[0]))
    if dirs:
        return Path(dirs[-1])
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _pg_driver():
    for module, dialect in (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg")):
        try:
            __import__(module)
            return dialect
        except ImportError:
            pass
    return None


@pytest.fixture(scope="module")
def pg_url():
    bindir = _pg_bindir()
    if bindir is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "postgresql"], capture_output=True, timeout=600)
        bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found and could not be installed (apt-get install -y postgresql)")
    dialect = _pg_driver()
    if dialect is None:
        pytest.skip("no PostgreSQL driver (python3 -m pip install psycopg2-binary)")
    base = Path(tempfile.mkdtemp(prefix="conformance-pg-"))
    as_user = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = base / "data", base / "server.log"
    subprocess.run(
        as_user + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    r = subprocess.run(
        as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", opts, "start"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr + (log.read_text() if log.exists() else "")
    try:
        yield f"{dialect}://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_store(pg_url, runs_dir):
    root, failed, slowed = runs_dir
    _concurrent_writers(pg_url, n_runs=3, n_rows=1000)  # also creates the tables from two processes at once
    ids = [_record_dir(root / n, pg_url) for n in ("A", "B")]
    df, meta = history.load_run(ids[1], pg_url)
    assert (
        len(df) == len(pd.read_csv(root / "B" / "results.csv"))
        and meta["host"] == json.loads((root / "B" / "run.json").read_text())["host"]
    )
    assert history.resolve("latest", pg_url, device="numpy", suite="smoke")[1]["run_id"] == ids[1]
    assert history.resolve("latest", pg_url)[1]["suite"] == "concurrency"  # started now, A and B earlier
    r = conformance("compare", "previous", "latest", "--history", pg_url, "--suite", "smoke")
    assert r.returncode == 1 and failed in r.stdout and slowed in r.stdout
    nan_meta = {
        "suite": "nan",
        "elapsed_s": float("nan"),
        "peak_rss_mib": {"main": float("inf")},
        "host": {"name": "x"},
    }
    nan_id = history.record(df.head(8), nan_meta, None, pg_url)  # json columns get null, not NaN
    assert history.load_run(nan_id, pg_url)[1]["peak_rss_mib"] == {"main": None}
    r = conformance("history", "--history", pg_url, "--suite", "smoke")
    assert r.returncode == 0 and ids[0] in r.stdout and ids[1] in r.stdout
