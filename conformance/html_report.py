"""report.html: one self-contained page per run (inline CSS and SVG, a few lines of plain JS; loads nothing).

html(df, meta, *, conventions=None, bench=None) -> str; write(out_dir, df, meta, conventions=None, bench=None) ->
out_dir/report.html, written atomically. df: results.csv; meta: run.json; conventions: conventions.json; bench:
bench.csv. Sections: what ran where; the pass matrix (case x target, worst status per cell); errors against the
oracle per output (norm_err, ulp@max, log scales, one dot per row); timings (GB/s; with bench.csv the fraction of
the memory-copy bandwidth); the conventions matrix; every row that did not pass, with its re-run command.

The sections live in html_results (header, pass matrix, rows that did not pass), html_errors, html_timing and
html_conventions; html_page holds the page skeleton, CSS and the helpers they share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .files import atomic_write
from .html_conventions import conventions_section
from .html_errors import OUTPUTS, error_plots
from .html_page import COLORS, case_labels, e, page, worst_status
from .html_results import MAX_LISTED, header, heatmap, not_passing, status_matrix
from .html_timing import bench_bars, of_traffic, timing
from .report import rerun_command
from .status import SEVERITY, UNEXPECTED

__all__ = [
    "COLORS",
    "MAX_LISTED",
    "OUTPUTS",
    "SEVERITY",
    "case_labels",
    "e",
    "html",
    "of_traffic",
    "rerun_command",
    "status_matrix",
    "worst_status",
    "write",
]

_COLUMNS = (
    "case_id",
    "target",
    "status",
    "output",
    "reason",
    "backend",
    "device",
    "vs",
    "threshold",
    "norm_err",
    "ulp_at_max",
    "time_ms_median",
    "gbps",
    "bytes",
)


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with every column the sections read (NaN where missing), vs 'oracle' by default, and backend and
    device taken from the target label where absent (rerun_command needs them)."""
    df = df.copy()
    for col in _COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df["vs"] = df["vs"].where(df["vs"].notna(), "oracle")
    split = df["target"].astype(str).str.partition("@")
    df["backend"] = df["backend"].where(df["backend"].notna(), split[0])
    df["device"] = df["device"].where(df["device"].notna() | (split[2] == ""), split[2])
    return df


def html(df: pd.DataFrame, meta: dict, *, conventions: dict | None = None, bench: pd.DataFrame | None = None) -> str:
    df = _prepare(df)
    targets = [t["target"] for t in meta.get("targets") or [] if t.get("target") in set(df["target"])]
    targets += [t for t in pd.unique(df["target"]) if t not in targets]
    labels = case_labels(pd.unique(df["case_id"]))
    n_bad = int(df["status"].isin(UNEXPECTED).sum())
    verdict = f'<span class="bad">FAILED: {n_bad} unexpected rows</span>' if n_bad else '<span class="ok">passed</span>'
    sections = [
        ("devices", "What ran where", header(df, meta, targets)),
        ("matrix", "Pass matrix", heatmap(df, targets, labels) if len(df) else "<p>No rows.</p>"),
        ("errors", "Errors against the oracle, per output", error_plots(df, targets)),
        ("timing", "Timing", bench_bars(bench) if bench is not None and len(bench) else timing(df, targets, labels)),
    ]
    if conventions:
        sections.append(
            ("conventions", "Framework conventions: observed vs documented", conventions_section(conventions))
        )
    sections.append(("notpass", "Rows that did not pass", not_passing(df, labels)))
    title = f"BatchNorm conformance: {meta.get('suite', '')}"
    return page(title, verdict, len(df), df["status"].value_counts().to_dict(), sections)


def write(
    out_dir: Path, df: pd.DataFrame, meta: dict, conventions: dict | None = None, bench: pd.DataFrame | None = None
) -> Path:
    """Write out_dir/report.html atomically (a temporary file renamed into place); returns its path."""
    path = Path(out_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, html(df, meta, conventions=conventions, bench=bench).encode("utf-8"))
    return path
