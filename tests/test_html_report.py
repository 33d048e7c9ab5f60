"""report.html: built from a real run directory and opened in a real headless Chromium.

The page must load without console messages or uncaught errors, contain the pass matrix, the error plots and
the timing chart, and load nothing from the network. A screenshot is kept in reports/screenshots/ to look at.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conformance import html_report, html_timing

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "reports" / "screenshots"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:  # as the brief of the suite says: install it when missing
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run(
            ["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, env=env, timeout=900
        )
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
            r = subprocess.run(
                ["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, env=env, timeout=900
            )
        found = shutil.which("chromium")
        if found:
            return found
        pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed: {r.stderr.strip()[-300:]}")
    pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")


def browse(page: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        _chromium(),
        "--no-sandbox",
        "--headless=new",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--backend", "numpy", "--backend", "opencl", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert (out / "results.csv").is_file() and (out / "run.json").is_file(), r.stderr[-3000:]
    df = pd.read_csv(out / "results.csv")
    meta = json.loads((out / "run.json").read_text())
    return out, df, meta, html_report.write(out, df, meta)


def test_the_report_is_one_self_contained_file(run_dir):
    out, df, meta, path = run_dir
    assert path == out / "report.html"
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"\ssrc\s*=", text) and "url(" not in text and "@import" not in text
    assert not [p.name for p in out.iterdir() if p.name.startswith(".report.html")]  # no temp file left behind
    assert meta["suite"] in text and meta["git_commit"] in text and html_report.e(meta["command"]) in text


def test_the_page_loads_in_chromium_with_its_plots(run_dir):
    out, df, meta, path = run_dir
    # the check is not vacuous: a script error and a console message on a broken page are seen
    bad = out / "broken.html"
    bad.write_text('<!doctype html><p>x</p><script>console.error("boom"); no_such_function();</script>')
    seen = console_lines(browse(bad, "--dump-dom").stderr)
    assert any("Uncaught" in line for line in seen) and any("boom" in line for line in seen), seen

    r = browse(path, "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    assert console_lines(r.stderr) == [], console_lines(r.stderr)
    dom = r.stdout
    pairs = df.drop_duplicates(["case_id", "target"])
    assert dom.count('<svg class="heatmap"') >= 1
    assert dom.count('<rect class="cell"') == len(pairs)
    oracle = df[(df["vs"] == "oracle") & df["norm_err"].notna()]
    outputs = [o for o in html_report.OUTPUTS if o in set(oracle["output"])]
    assert dom.count('<svg class="errplot"') == len(outputs) >= 6
    for o in outputs:
        assert f'id="err-{o}"' in dom
    # one dot per row in each panel (norm_err, ulp@max), coloured by status
    assert (
        dom.count('<circle class="dot ') == oracle["norm_err"].notna().sum() + oracle["ulp_at_max"].notna().sum() > 100
    )
    assert dom.count('class="threshold"') >= len(outputs)
    assert '<svg class="timing"' in dom and "GB/s" in dom
    notpass = df[df["status"] != "pass"]
    if len(notpass):
        assert dom.count("<tr>", dom.index('id="notpass"')) == min(len(notpass), html_report.MAX_LISTED) + 1
        assert html_report.e(html_report.rerun_command(notpass.iloc[0])) in dom

    shot = out / "report.png"
    r = browse(path, f"--screenshot={shot}", "--window-size=1400,2400")
    assert r.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SHOTS / "report.png")


def test_with_bench_and_conventions(run_dir, tmp_path):
    out, df, meta, _ = run_dir
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "bench",
            "--suite",
            "smoke",
            "--backend",
            "numpy",
            "--backend",
            "opencl",
            "--rounds",
            "1",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    bench = pd.read_csv(tmp_path / "bench.csv")
    conventions = {  # the shape of conventions.json
        "torch": {
            "version": "2.x",
            "documented": {"momentum direction": "new", "default eps": 1e-5},
            "momentum direction": "new",
            "default eps": 1e-5,
            "running-variance estimator": "unbiased",
        },
        "lib<x>": {
            "version": "1.0",
            "documented": {"momentum direction": "old", "default eps": 1e-3, "batch statistic returned": "var"},
            "momentum direction": "new",
            "default eps": 1e-3,
            "batch statistic returned": "var (biased)",
        },
        "broken": {"error": "import failed"},
    }
    path = html_report.write(tmp_path, df, meta, conventions=conventions, bench=bench)
    text = path.read_text()
    assert "lib&lt;x&gt;" in text and "lib<x>" not in text
    assert text.count('class="mismatch"') == 1  # lib<x>'s momentum direction; 'var (biased)' agrees with 'var'
    assert "unavailable: import failed" in text
    for phase in set(bench["phase"]):
        assert f"<h3>{phase}</h3>" in text
    assert "of copy" in text
    r = browse(path, "--dump-dom")
    assert r.returncode == 0 and console_lines(r.stderr) == [], console_lines(r.stderr)
    assert r.stdout.count('<svg class="timing"') == bench["phase"].nunique()
    shot = tmp_path / "bench.png"
    browse(path, f"--screenshot={shot}", "--window-size=1400,2400")
    if shot.is_file():
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SHOTS / "report_bench_conventions.png")


def _tiny() -> pd.DataFrame:
    rows = []
    for case, target, status in [
        ("a", "numpy", "pass"),
        ("a", "numpy", "fail"),
        ("a", "numpy", "xfail"),
        ("a", "opencl@d1", "unsupported"),
        ("a", "opencl@d1", "skip"),
        ("b&<c>", "numpy", "xpass"),
        ("b&<c>", "numpy", "error"),
        ("b&<c>", "numpy", "timeout"),
    ]:
        rows.append(
            {
                "case_id": case,
                "target": target,
                "status": status,
                "output": "y",
                "norm_err": 1.0,
                "ulp_at_max": 0.0,
                "threshold": 64.0,
                "reason": "<script>alert(1)</script>",
            }
        )
    return pd.DataFrame(rows)


def test_worst_status_follows_the_severity_order():
    order = ["crash", "timeout", "error", "fail", "xpass", "xfail", "unsupported", "skip", "pass"]
    assert list(html_report.SEVERITY) == order
    for i, worse in enumerate(order):
        for better in order[i:]:
            assert html_report.worst_status([better, worse, better]) == worse
    mat, counts = html_report.status_matrix(_tiny())
    assert mat.at["a", "numpy"] == "fail" and mat.at["a", "opencl@d1"] == "unsupported"
    assert mat.at["b&<c>", "numpy"] == "timeout" and mat.at["b&<c>", "opencl@d1"] is None
    assert counts[("a", "numpy")] == {"pass": 1, "fail": 1, "xfail": 1}


def test_cells_are_coloured_by_their_worst_status_and_text_is_escaped():
    page = html_report.html(_tiny(), {"suite": "tiny <suite>", "targets": []})
    cells = re.findall(r'<rect class="cell" data-status="(\w+)"[^>]* fill="(#\w+)"><title>([^<]*)</title>', page)
    assert sorted((s, f) for s, f, _ in cells) == sorted(
        [
            ("fail", html_report.COLORS["fail"]),
            ("unsupported", html_report.COLORS["unsupported"]),
            ("timeout", html_report.COLORS["timeout"]),
        ]
    )
    tip = next(t for s, _, t in cells if s == "timeout")
    assert "b&amp;&lt;c&gt;" in tip and "numpy" in tip and "error 1" in tip and "xpass 1" in tip
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "tiny &lt;suite&gt;" in page and "FAILED" in page
    assert page.count('<tr><td><span class="chip') == 7  # every row but the pass, each with its re-run command
    assert "conformance run --case" in page


def test_case_labels_keep_only_what_varies():
    ids = [
        "n,dtype=float32,shape=2x3,axis=1,mode=train,backward=1,seed=0",
        "n,dtype=float16,shape=2x3,axis=1,mode=infer,backward=0,seed=0",
    ]
    labels = html_report.case_labels(ids)
    assert labels[ids[0]] == "n f32 train bwd" and labels[ids[1]] == "n f16 infer fwd"
    assert np.all(
        [len(v) <= 60 for v in html_report.case_labels(["x," + ",".join(f"k{i}={i}" for i in range(40))]).values()]
    )


def test_bench_labels_give_the_traffic_bound_where_it_differs():
    assert html_timing.of_traffic({"frac_of_copy": 0.24, "frac_of_traffic": 0.4}) == ", 0.40 of its traffic"
    assert html_timing.of_traffic({"frac_of_copy": 0.7, "frac_of_traffic": 0.7}) == ""  # x read once: same bound
    assert html_timing.of_traffic({"frac_of_copy": 0.7, "frac_of_traffic": float("nan")}) == ""
    assert html_timing.of_traffic({"frac_of_copy": 0.7}) == ""  # a bench.csv from before the column
