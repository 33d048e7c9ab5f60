"""The markdown of a comparison of two runs (regress.compare): the verdict, the rules applied with their
thresholds, a count of each kind of change, then a table of each (at most MAX_LISTED rows)."""

from __future__ import annotations

import pandas as pd

from .regress import ERROR_FLOOR, TIMING_VERDICT_COLS, regression_flag
from .report import md_code, md_table, md_text

MAX_LISTED = 200
# the kinds of change in the order they are counted and listed: (key of the comparison, title)
SECTIONS = [
    ("new_failures", "New failures"),
    ("lost", "No longer checked"),
    ("removed", "Removed (case, target)"),
    ("error_growth", "Error growth"),
    ("timing", "Timing regressions"),
    ("fixes", "Fixes"),
    ("status_changes", "Other status changes"),
    ("speedups", "Speed-ups"),
    ("added", "Added (case, target)"),
]
STATUS_COLS = ["case_id", "target", "vs", "output", "base_status", "new_status", "reason"]
TIME_COLS = ["case_id", "target", *TIMING_VERDICT_COLS]
# the columns of each section's table
COLUMNS = {
    "new_failures": STATUS_COLS,
    "lost": STATUS_COLS,
    "fixes": STATUS_COLS,
    "status_changes": STATUS_COLS,
    "error_growth": ["case_id", "target", "vs", "output", "metric", "base", "new", "ratio", "status"],
    "timing": TIME_COLS,
    "speedups": TIME_COLS[:9] + ["time_ms_p10_base", "time_ms_p90_new"],
    "added": ["case_id", "target", "status"],
    "removed": ["case_id", "target", "status"],
}


def _rows(df: pd.DataFrame, cols: list[str]) -> list[list]:
    return [[r[c] for c in cols] for r in df.head(MAX_LISTED).to_dict("records")]


def _more(df: pd.DataFrame) -> str:
    return f"\n\n... {len(df) - MAX_LISTED} more" if len(df) > MAX_LISTED else ""


def _header(result: dict, base_label: str, new_label: str) -> list[str]:
    """The verdict, the two runs, and the rules applied with their thresholds and what the timing judged."""

    verdict = "REGRESSION" if regression_flag(result) else "no regression"
    return [
        f"# Regression check: {verdict}",
        "",
        f"- base: {md_text(base_label)}",
        f"- new: {md_text(new_label)}",
        "",
        f"{result['compared_rows']} rows compared. "
        f"Error growth: max(new, {ERROR_FLOOR:g}) > {result['error_factor']:g} x "
        f"max(base, {ERROR_FLOOR:g}) for norm_err or ulp_at_max. Timing, judged where both medians are at least "
        f"max({result['min_time_ms']:g} ms, {result['floor_factor']:g} x the target's launch floor): slower when new "
        f"p10 > base p90 (bands widened by {result['tail_widen']:g} x width / (repeats - 1)^2), both the median "
        f"and the minimum grew by more than {result['min_time_ratio']:g}x, and the new median exceeds the pair's "
        f"usual time in the history by more than {result['drift_z']:g} robust deviations of it (or, for a pair "
        f"without a record, the base by {max(result['min_time_ratio'], result['unrecorded_ratio']):g}x): "
        f"{result['timing_judged']} (case, target) pairs judged, {result['timing_recorded']} of them against a "
        f"record, {result['timing_below_floor']} below the floor, {result['timing_unjudged']} without timings.",
        "",
    ]


def _busy_note(result: dict) -> list[str]:
    """Why no time was judged: the runs whose machine was busy (none: no lines)."""
    if not result["timing_busy"]:
        return []
    return [
        "**Times not judged**: "
        + ", ".join(
            f"the {side} run's machine had a task waiting for a CPU {share:.0%} of the time"
            for side, share in result["timing_busy"].items()
        )
        + f" (more than {result['busy']:.0%}): its times measured the load, not the code.",
        "",
    ]


def _section(result: dict, key: str, title: str) -> list[str]:
    """The listing of one kind of change (none when there is none): for added and removed pairs, the targets
    added or removed whole first, then a table of the rest."""
    df = result[key]
    if not len(df):
        return []
    out = []
    if key in ("added", "removed"):
        whole = df[df["target"].isin(result["targets_" + key])].groupby("target").size().to_dict()
        if whole:
            out += ["", f"## {title}: whole targets", ""] + [f"- {md_code(t)}: {n} cases" for t, n in whole.items()]
            df = df[~df["target"].isin(whole)]
            if not len(df):
                return out
    return out + ["", f"## {title} ({len(df)})", "", md_table(COLUMNS[key], _rows(df, COLUMNS[key])) + _more(df)]


def markdown(result: dict, base_label: str, new_label: str) -> str:
    out = _header(result, base_label, new_label) + _busy_note(result)
    if not result["compared_rows"]:
        out += [
            "**Nothing in common**: no (case, target, vs, output) row is in both runs (different suites or targets?).",
            "",
        ]
    out.append(md_table(["what", "count"], [[title, len(result[k])] for k, title in SECTIONS]))
    for key, title in SECTIONS:
        out += _section(result, key, title)
    return "\n".join(out) + "\n"
