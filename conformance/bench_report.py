"""bench.csv and bench.md for `conformance bench`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .files import atomic_write
from .meta import RunMeta
from .report import md_code, md_table, md_text

BIG_BYTES = 16e6  # the roofline target applies to problems of 16 MB and more


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per OpenCL target and phase: the worst speedup over the best framework and the worst copy and traffic
    fractions."""
    ocl = df[df["backend"] == "opencl"]
    rows = []
    for (target, phase), g in ocl.groupby(["target", "phase"], sort=True):
        big = g[g["bytes"] / (3 if phase == "backward" else 2) >= BIG_BYTES]
        ranked = g.dropna(subset=["speedup_vs_best_framework"]).sort_values("speedup_vs_best_framework")
        worst = ranked.iloc[0] if len(ranked) else None
        rows.append(
            {
                "target": target,
                "phase": phase,
                "min_speedup_vs_best_framework": g["speedup_vs_best_framework"].min(),
                "worst_problem": f"{worst['case']} {worst['dtype']}" if worst is not None else "",
                "its_floor_share": worst["floor_share"] if worst is not None and "floor_share" in worst else np.nan,
                "below_1": int((g["speedup_vs_best_framework"] < 1).sum()),
                "min_frac_of_copy_16MB+": big["frac_of_copy"].min() if len(big) else np.nan,
                "min_frac_of_traffic_16MB+": big["frac_of_traffic"].min()
                if len(big) and "frac_of_traffic" in big
                else np.nan,
                "problems": g["case_id"].nunique(),
            }
        )
    return pd.DataFrame(rows)


INTRO = (
    "Wall time is enqueue (or call) to finish; `kernel` is the OpenCL profiling-event time. backward = "
    "(forward + backward) - forward_train, medians. frac = memory-copy time on the same bytes / time "
    "(x1.5 for backward). traffic = the reads of x (and dy) the row's kernels make from memory (y, dx written "
    "once): once, or twice where what a pass reduces is gone from the cache before the next pass reads it again "
    "(OpenCL: the chosen kernels and the device's cache; other backends: x, dy against the host's last-level "
    "cache); frac of traffic = frac of copy x traffic bytes / minimal bytes, the fraction of the roofline this "
    "row's own algorithm allows. speedup = best framework's median / this median. floor = a copy of one float, "
    "enqueue to finish (what one command costs whatever it does); floor share = floor / median."
)
CASE_COLUMNS = [
    "phase",
    "target",
    "median ms",
    "p10-p90 ms",
    "kernel ms",
    "GB/s",
    "frac of copy",
    "reads",
    "frac of traffic",
    "speedup",
    "floor share",
    "note",
]


def _header(df: pd.DataFrame, meta: dict, rss: dict) -> list[str]:
    """The title, the run (command, commit, host, rounds), how to read the tables, the OpenCL targets' summary
    (when there are OpenCL rows) and each worker's peak memory."""
    lines = [
        f"# BatchNorm bench: suite {md_code(meta['suite'])}",
        "",
        f"{md_code(meta['command'])} at {md_text(meta['started'])}, git {md_code(meta['git_commit'])}; "
        f"host {md_text(meta['host']['cpu'])}, {meta['host']['cores']} cores; "
        f"{meta['rounds']} interleaved rounds x {meta['repeats']} repeats per target and phase.",
        "",
        INTRO,
        "",
    ]
    s = summary(df)
    if len(s):
        lines += ["## Targets of the OpenCL kernels", md_table(list(s.columns), s.values.tolist()), ""]
    rss_rows = [[k, v if v is not None else np.nan] for k, v in sorted(rss.items())]
    return lines + ["## Peak resident memory per worker (MiB)", md_table(["target", "peak RSS MiB"], rss_rows), ""]


def _case_heading(g: pd.DataFrame) -> list[str]:
    """A problem's title, each target's copy of x (time and bandwidth) and, when measured, its floor of one
    command."""
    first = g.iloc[0]
    copies = g.drop_duplicates("target")[["target", "copy_ms_median"]]
    n = first["bytes"] / (3 if first["phase"] == "backward" else 2)
    lines = [
        f"## {md_text(first['case'])} {md_text(first['shape'])} axis {first['axis']} {md_text(first['dtype'])}",
        "copy of x: "
        + ", ".join(
            f"{md_text(r.target)} {r.copy_ms_median:.3g} ms ({2 * n / r.copy_ms_median / 1e6:.1f} GB/s)"
            for r in copies.itertuples()
            if r.copy_ms_median == r.copy_ms_median
        ),
    ]
    if "floor_ms_median" in g:
        floors = g.drop_duplicates("target")[["target", "floor_ms_median"]].dropna()
        lines.append(
            "floor of one command: "
            + ", ".join(f"{md_text(r.target)} {r.floor_ms_median * 1e3:.3g} us" for r in floors.itertuples())
        )
    return lines


def _case_rows(g: pd.DataFrame) -> tuple[list[list], list[str]]:
    """A problem's table rows (CASE_COLUMNS), by phase and fastest first, and the traffic model of each row that
    states one."""
    table, models = [], []
    for r in g.sort_values(["phase", "time_ms_median"]).itertuples():
        rx, rdy = getattr(r, "reads_x", np.nan), getattr(r, "reads_dy", np.nan)
        reads = "" if pd.isna(rx) else f"x{int(rx)}" + (f" dy{int(rdy)}" if not pd.isna(rdy) and rdy else "")
        table.append(
            [
                r.phase,
                r.target,
                r.time_ms_median,
                f"{r.time_ms_p10:.3g}-{r.time_ms_p90:.3g}",
                r.kernel_ms_median,
                r.gbps,
                r.frac_of_copy,
                reads,
                getattr(r, "frac_of_traffic", np.nan),
                r.speedup_vs_best_framework,
                getattr(r, "floor_share", np.nan),
                r.reason,
            ]
        )
        if isinstance(getattr(r, "traffic_model", None), str) and r.traffic_model:
            models.append(f"- {md_text(r.phase)} {md_text(r.target)}: {md_text(r.traffic_model)}")
    return table, models


def _case_section(g: pd.DataFrame) -> list[str]:
    """One problem: its heading, its table and the traffic model of its rows."""
    table, models = _case_rows(g)
    lines = _case_heading(g) + ["", md_table(CASE_COLUMNS, table), ""]
    if models:
        lines += ["traffic per row:", "", "\n".join(models), ""]
    return lines


def markdown(df: pd.DataFrame, meta: dict, rss: dict) -> str:
    lines = _header(df, meta, rss)
    for _, g in df.groupby("case_id", sort=False):
        lines += _case_section(g)
    return "".join(f"{line}\n" for line in lines)


def write(out_dir: Path, rows: list[dict], meta: RunMeta) -> pd.DataFrame:
    """bench.csv, bench.md and bench.json (the record, with each target's peak memory in peak_rss_mib)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rss = meta.peak_rss_mib or {}
    df = pd.DataFrame(rows)
    df["peak_rss_mib"] = df["target"].map(rss)
    atomic_write(out_dir / "bench.csv", df.to_csv(index=False).encode())
    atomic_write(out_dir / "bench.md", markdown(df, meta.as_dict(), rss).encode())
    atomic_write(out_dir / "bench.json", meta.to_json())
    return df
