"""Write a run's report: results.csv, summary.md, run.json, and arrays/<case_id>.npz with --keep-arrays.

Every file is written to a temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .case import file_stem
from .errors import ReportError
from .files import atomic_write
from .meta import RunMeta
from .status import STATUSES, UNEXPECTED
from .verdict import judge

COLUMNS = [
    "case_id",
    "backend",
    "device",
    "target",
    "vs",
    "dtype",
    "mode",
    "output",
    "status",
    "max_abs_err",
    "max_rel_err",
    "max_ulp",
    "ulp_at_max",
    "norm_err",
    "threshold",
    "time_ms_median",
    "time_ms_min",
    "time_ms_p10",
    "time_ms_p90",
    "kernel_ms_median",
    "kernel_ms_min",
    "bytes",
    "gbps",
    "repeats",
    "rounds",
    "reason",
    "got_dtype",
    "case",
    "shape",
    "axis",
    "backward",
    "fix_gamma",
    "running_var",
    "stats",
    "momentum_dir",
    "fill",
]


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if "vs" not in df.columns:
        df["vs"] = "oracle"
    df["vs"] = df["vs"].fillna("oracle")
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


@dataclass(frozen=True)
class Code:
    """A table cell shown as code (md_table)."""

    text: str


def rerun_command(row) -> str:
    cmd = ["conformance", "run", "--case", row["case_id"], "--backend", row["backend"]]
    if isinstance(row["device"], str) and row["device"]:
        cmd += ["--device", row["device"]]
    root = row.get("inputs_root") if hasattr(row, "get") else None
    if isinstance(root, str) and root:  # the folder the case's inputs file is relative to, on this machine
        cmd += ["--inputs-root", root]
    return " ".join(shlex.quote(c) for c in cmd)


_MD_SPECIAL = re.compile(r"[\\`*\[\]|!]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")


def md_text(value) -> str:
    """Any value as inert Markdown text: shown as written, never markup. CI systems render summaries (GitHub step
    summaries, GitLab, Jenkins), some with raw HTML allowed: <, > and & become entities (no tag, no autolink),
    and the characters that open code, emphasis, links, images and table cells are backslash-escaped."""
    text = _LINE_BREAKS.sub(" ", str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def md_code(value, table: bool = False) -> str:
    """A value as a Markdown code span (literal, markup inert), fenced by more backticks than it holds; in a table
    cell `|` is escaped as GFM requires even inside code."""
    text = _LINE_BREAKS.sub(" ", str(value))
    if table:
        text = text.replace("|", "\\|")
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or runs else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_table(headers: list[str], rows: list[list]) -> str:
    """A GFM table; every cell is escaped (md_text) unless it is a Code(...) value, shown as a code span."""

    def cell(v):
        if isinstance(v, Code):
            return md_code(v.text, table=True)
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return md_text(v)

    lines = ["| " + " | ".join(md_text(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def counts_table(df: pd.DataFrame, by: str = "target") -> str:
    present = [s for s in STATUSES if s in set(df["status"])]
    rows = []
    for target, group in df.groupby(by, sort=True):
        vc = group["status"].value_counts()
        rows.append([target] + [int(vc.get(s, 0)) for s in present] + [len(group)])
    return md_table([by if isinstance(by, str) else " / ".join(by)] + present + ["rows"], rows)


def kernel_header(meta: dict) -> list[tuple[str, str]]:
    """The report header's lines on the OpenCL kernels: each OpenCL target's kernel family and parameters (as its
    rows' family and tuning columns), and the run's tuning overrides (--tune; run.json `tune`)."""
    out = []
    chosen = [
        f"{t['target']}: {(t['device'] or {}).get('extra', {}).get('family') or '?'} "
        f"({(t['device'] or {}).get('extra', {}).get('tuning', '')})"
        for t in meta.get("targets") or []
        if t.get("backend") == "opencl" and t.get("device")
    ]
    if chosen:
        out.append(("OpenCL kernel family and tuning", "; ".join(chosen)))
    tune = meta.get("tune") or {}
    if tune or chosen:
        out.append(("Tuning overrides (--tune)", ", ".join(f"{k}={v}" for k, v in tune.items()) or "none"))
    return out


def _summary_head(df: pd.DataFrame, meta: dict) -> list[str]:
    """The title with the verdict and its notes, the interruption notice, the command, the host and the kernels."""
    verdict = judge(df, meta, allow_empty=bool(meta.get("allow_empty")))
    lines = [f"# BatchNorm conformance: suite {md_code(meta['suite'])}: {verdict.line(bool(meta.get('partial')))}", ""]
    lines += [f"**{md_text(note[0].upper() + note[1:])}.**  " for note in verdict.notes]
    if verdict.notes:
        lines.append("")
    if meta.get("partial"):
        resume = shlex.join(["conformance", "run", "--resume", str(meta.get("out_dir", "DIR"))])
        lines += [
            f"**Interrupted**: {len(meta.get('done_cases', []))} cases finished; every row of them is here. "
            f"Complete it with {md_code(resume)}.",
            "",
        ]
    h = meta["host"]
    lines += [
        f"{md_code(meta['command'])} at {md_text(meta['started'])}, git {md_code(meta['git_commit'])}, "
        f"{meta.get('elapsed_s', 0):.1f} s",
        "",
        f"Host {md_code(h['name'])}: {md_text(h['cpu'])}, {h['cores']} cores, {md_text(h['os'])}",
        "",
    ]
    kernels = kernel_header(meta)
    lines += [f"{label}: {md_text(text)}  " for label, text in kernels]
    if kernels:
        lines.append("")
    return lines


def _summary_targets(meta: dict) -> list[str]:
    """## Targets: a row per target and its device, the unavailable backends, the packages, the peak memory."""
    trows = []
    for t in meta["targets"]:
        d = t["device"] or {}
        trows.append(
            [
                t["target"],
                t["state"],
                d.get("name", ""),
                d.get("vendor", ""),
                d.get("platform", ""),
                d.get("driver", ""),
                d.get("version", ""),
                t["reason"] or "",
            ]
        )
    lines = [
        "## Targets",
        md_table(["target", "state", "device", "vendor", "platform", "driver", "OpenCL", "reason"], trows),
    ]
    missing = [b for b in meta["backends"] if not b["available"]]
    if missing:
        lines += [
            "",
            "Unavailable backends: " + "; ".join(f"{md_code(b['name'])} ({md_text(b['reason'])})" for b in missing),
        ]
    lines += ["", "Packages: " + md_text(", ".join(f"{k} {v}" for k, v in meta["packages"].items()))]
    rss = meta.get("peak_rss_mib")
    if rss:
        lines += [
            "",
            f"Peak resident memory: main process {rss['main']:.0f} MiB; workers "
            + md_text(", ".join(f"{k} {v:.0f}" for k, v in sorted(rss["workers"].items())))
            + f" MiB; at most {rss['upper_bound_total']:.0f} MiB together (sum of peaks)",
        ]
    lines.append("")
    return lines


def _summary_results(df: pd.DataFrame, meta: dict) -> list[str]:
    """Status counts per target against the oracle and per framework against the OpenCL SUT, the run's warnings,
    and the thresholds a row is judged by."""
    lines = [
        "## Results per target, against the oracle",
        counts_table(df[df["vs"] == "oracle"]) if len(df) else "No rows.",
        "",
    ]
    vs_sut = df[df["vs"] != "oracle"]
    if len(vs_sut):
        pairs = vs_sut.assign(pair=vs_sut["target"] + " vs " + vs_sut["vs"])
        lines += ["## Frameworks against the OpenCL SUT (same profiled case)", counts_table(pairs, by="pair"), ""]
    if meta.get("warnings"):
        lines += ["## Warnings"] + [f"- {md_text(warning)}" for warning in meta["warnings"]] + [""]
    lines += [
        "## Thresholds",
        "A row passes when `norm_err` (max abs error per channel in units of u x the oracle's error scale; "
        "u = unit roundoff of the output dtype) is at most the threshold and NaN/Inf patterns agree.",
        "",
        md_table(["output dtype", "threshold (norm_err)"], [[k, v] for k, v in meta["thresholds"].items()]),
        "",
    ]
    return lines


def _summary_not_passing(df: pd.DataFrame, max_listed: int) -> list[str]:
    """Every row that did not pass, the unexpected ones first (at most max_listed), each with its re-run command."""
    notpass = df[~df["status"].isin(["pass"])]
    if not len(notpass):
        return []
    lines = [f"## Rows that did not pass ({len(notpass)})"]
    unexpected_first = lambda s: s.map(lambda v: (v not in UNEXPECTED, v))
    for _, r in notpass.sort_values(by="status", key=unexpected_first).head(max_listed).iterrows():
        vs = "" if r["vs"] == "oracle" else f" vs {md_code(r['vs'])}"
        lines += [
            f"- **{md_text(r['status'])}** {md_code(r['target'])}{vs} {md_text(r['output'])}: {md_text(r['reason'])}  ",
            f"  re-run: {md_code(rerun_command(r))}",
        ]
    if len(notpass) > max_listed:
        lines.append(f"- ... {len(notpass) - max_listed} more in results.csv")
    return lines


def summary_markdown(df: pd.DataFrame, meta: dict, max_listed: int = 200) -> str:
    """summary.md: the verdict and the run's header, the targets, the status counts and thresholds, and the rows
    that did not pass (at most max_listed)."""
    lines = _summary_head(df, meta) + _summary_targets(meta) + _summary_results(df, meta)
    lines += _summary_not_passing(df, max_listed)
    return "".join(f"{line}\n" for line in lines)


def write(out_dir: Path, rows: list[dict], meta: RunMeta) -> tuple[pd.DataFrame, RunMeta]:
    """results.csv, run.json and summary.md of a run; returns the rows' frame and the record as written (with
    out_dir and the counts against the oracle)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    df = frame(rows)
    atomic_write(out_dir / "results.csv", df.to_csv(index=False).encode())
    oracle_rows = df[df["vs"] == "oracle"]
    counts = {t: g["status"].value_counts().to_dict() for t, g in oracle_rows.groupby("target")}
    meta = dataclasses.replace(meta, out_dir=str(out_dir), counts=counts)
    atomic_write(out_dir / "run.json", meta.to_json())
    atomic_write(out_dir / "summary.md", summary_markdown(df, meta.as_dict()).encode())
    return df, meta


class ArraysWriter:
    """on_arrays callback for --keep-arrays: arrays/<file_stem(case_id)>.npz, keys input/<name>, <target>/<output>
    and case_id; arrays/index.csv maps each file to its case id. File names stay short whatever the id (a case name
    of 50 characters, an inputs file path): a readable prefix and a digest of the whole id."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / "arrays"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index = self.dir / "index.csv"

    def __call__(self, case, inputs, outputs_by_target: dict) -> None:
        data = {f"input/{k}": v for k, v in inputs.as_dict().items()}
        for label, outputs in outputs_by_target.items():
            data.update({f"{label}/{k}": np.asarray(v) for k, v in outputs.items()})
        data["case_id"] = np.array(case.id)
        buf = io.BytesIO()
        np.savez_compressed(buf, **data)
        name = f"{file_stem(case.id)}.npz"
        atomic_write(self.dir / name, buf.getvalue())
        line = pd.DataFrame([{"file": name, "case_id": case.id}]).to_csv(index=False, header=not self.index.exists())
        try:
            with open(self.index, "a") as fh:
                fh.write(line)
        except OSError as exc:
            raise ReportError.of(self.index, exc) from None
