"""The same suite side by side across devices: each target's status, error and median time per case, from the
results of one or more runs (a target seen in several runs gets the run's label)."""

from __future__ import annotations

import math

import pandas as pd

from .regress import prep
from .report import md_table
from .status import UNCHECKED


def _per_target(dfs: dict[str, pd.DataFrame]):
    """(column name, oracle rows) per target of every frame; a target seen in several frames gets the label."""

    prepped = {label: prep(df) for label, df in dfs.items()}
    seen: dict[str, int] = {}
    for d in prepped.values():
        for t in set(d["target"]):
            seen[t] = seen.get(t, 0) + 1
    for label, d in prepped.items():
        for target, g in d[d["vs"] == "oracle"].groupby("target", sort=True):
            yield (target if seen[target] == 1 else f"{target} ({label})"), g


def cross_device(dfs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows (case_id, output) x columns (target, status|norm_err) over every frame's oracle rows, plus
    ("all", "agree"): whether the targets' judged statuses (unsupported and skip aside) are all the same."""
    parts = []
    for name, g in _per_target(dfs):
        p = g.set_index(["case_id", "output"])[["status", "norm_err"]]
        p.columns = pd.MultiIndex.from_tuples([(name, "status"), (name, "norm_err")])
        parts.append(p)
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, axis=1).sort_index()
    statuses = table.xs("status", axis=1, level=1)
    judged = statuses.where(~statuses.isin(UNCHECKED) & statuses.notna())
    table[("all", "agree")] = judged.nunique(axis=1, dropna=True) <= 1
    return table


def cross_device_timing(dfs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows case_id x columns target: the median time (ms) against the oracle."""
    cols = {name: g.drop_duplicates("case_id").set_index("case_id")["time_ms_median"] for name, g in _per_target(dfs)}
    return pd.DataFrame(cols).sort_index()


def cross_device_markdown(dfs: dict[str, pd.DataFrame], title: str = "Cross-device results") -> str:
    table, timing = cross_device(dfs), cross_device_timing(dfs)
    if not len(table):
        return f"# {title}\n\nNo rows.\n"
    targets = [t for t in table.columns.get_level_values(0).unique() if t != "all"]

    def cell(row, t):
        s, e = row[(t, "status")], row[(t, "norm_err")]
        if not isinstance(s, str):
            return ""
        return s if isinstance(e, float) and math.isnan(e) else f"{s} {e:.3g}"

    rows = [
        [cid, out] + [cell(r, t) for t in targets] + ["" if r[("all", "agree")] else "DIFFERS"]
        for (cid, out), r in table.iterrows()
    ]
    n_diff = int((~table[("all", "agree")]).sum())
    lines = [
        f"# {title}",
        "",
        f"{len(table)} (case, output) rows on {len(targets)} targets; {n_diff} where the targets' "
        "statuses differ (unsupported and skip ignored). Cells: status and norm_err.",
        "",
        md_table(["case_id", "output"] + targets + ["agree"], rows),
        "",
        "## Median time (ms)",
        "",
        md_table(["case_id"] + list(timing.columns), [[cid] + list(r) for cid, r in timing.iterrows()]),
    ]
    return "\n".join(lines) + "\n"
