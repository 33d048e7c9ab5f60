"""Compare two runs (regressions, fixes, added/removed cases) and lay the same suite side by side across devices.

Rows are matched on (case_id, target, vs, output). The rules, exactly:

- **New failure**: the base status is one of pass, xfail, unsupported, skip and the new one is unexpected
  (fail, error, crash, timeout, xpass). **Fix**: unexpected before, `pass` now. Every other change of status
  (pass -> skip, fail -> crash, ...) is listed as a status change and does not flag a regression.
- **Error growth**, for norm_err and for ulp_at_max separately: `max(new, 1) > error_factor * max(base, 1)`
  (default factor 4). The floor of 1 (one unit of roundoff scale / one ulp) keeps tiny values near 0 from
  making huge ratios out of noise. NaN on either side is not compared; +Inf new against a finite base grows.
  Rows that are new failures are not listed again here.
- **Timing regression**, per (case_id, target), on its `vs = oracle` rows (timing columns repeat across
  outputs; the first row is taken). Each run's repeats give a band [p10, p90]; with n repeats the band is
  widened on both sides by `w = tail_widen * (p90 - p10) / (n - 1)**2` (default tail_widen 4: the whole
  band width at n = 3, a quarter at n = 5, 1% at n = 20), because a handful of repeats says little about the
  tails. Flagged when BOTH
  1. `new.p10 - w_new > base.p90 + w_base`: the new run's fast tail lies above the base run's slow tail, so
     the shift is larger than the spread of the repeats of either run; and
  2. `new.time_ms_median / base.time_ms_median > min_time_ratio` (default 1.10): the shift also matters.
  A pair without median, p10, p90 on either side, or with fewer than 2 repeats (missing repeats counts as
  3), is not judged (`timing_unjudged`). The mirror rule (`new.p90 + w_new < base.p10 - w_base` and
  `base.median / new.median > min_time_ratio`) lists speed-ups.
  Measured with this code on synthetic normal noise of 5% per repeat, 40000 (case, target) pairs each:
  20 or 10 repeats: no false alarm, +30% always found (+20%: 99% at 20 repeats); 5 repeats: 3.5 false
  alarms in 10^4, +30% found 99%; 3 repeats: 1.1 in 10^3 (1.2 in 10^2 without the widening), +30% found
  76% (with 2% noise: no false alarm, +30% always found). Compare runs with enough repeats and take a
  3-repeat timing flag as a hint.
- **Added / removed**: (case_id, target) pairs present in only one of the two runs.

`regression_flag` is True on any new failure, error growth or timing regression.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .compare import UNEXPECTED
from .report import md_table

OK = ("pass", "xfail", "unsupported", "skip")
KEY = ["case_id", "target", "vs", "output"]
ERROR_METRICS = ("norm_err", "ulp_at_max")
ERROR_FLOOR = 1.0
MAX_LISTED = 200


def _prep(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "vs" not in df.columns:
        df["vs"] = "oracle"
    df["vs"] = df["vs"].fillna("oracle").astype(str)
    df["output"] = df["output"].fillna("").astype(str)
    for c in ("norm_err", "ulp_at_max", "time_ms_median", "time_ms_p10", "time_ms_p90", "repeats"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float) if c in df.columns else np.nan
    if "reason" not in df.columns:
        df["reason"] = ""
    return df.drop_duplicates(KEY, keep="first")


def _timing(df: pd.DataFrame) -> pd.DataFrame:
    t = df[df["vs"] == "oracle"].drop_duplicates(["case_id", "target"], keep="first")
    t = t.set_index(["case_id", "target"])[["time_ms_median", "time_ms_p10", "time_ms_p90", "repeats"]]
    return t.assign(repeats=t["repeats"].fillna(3))


def compare(base_df: pd.DataFrame, new_df: pd.DataFrame, *, error_factor: float = 4.0, min_time_ratio: float = 1.10,
            tail_widen: float = 4.0) -> dict:
    """Everything that changed from base to new (see the module docstring for the rules); values are DataFrames."""
    base, new = _prep(base_df), _prep(new_df)
    m = base.merge(new, on=KEY, suffixes=("_base", "_new"))
    sb, sn = m["status_base"], m["status_new"]
    ident = m[KEY]
    failing = sb.isin(OK) & sn.isin(UNEXPECTED)
    fixed = sb.isin(UNEXPECTED) & (sn == "pass")
    other = (sb != sn) & ~failing & ~fixed
    status_cols = lambda mask: ident[mask].assign(base_status=sb[mask], new_status=sn[mask],  # noqa: E731
                                                  reason=m.loc[mask, "reason_new"].fillna("")).reset_index(drop=True)
    growth = []
    for metric in ERROR_METRICS:
        b, n = m[f"{metric}_base"], m[f"{metric}_new"]
        grew = b.notna() & n.notna() & (np.maximum(n, ERROR_FLOOR) > error_factor * np.maximum(b, ERROR_FLOOR)) & ~failing
        if grew.any():
            growth.append(ident[grew].assign(metric=metric, base=b[grew], new=n[grew],
                                             ratio=np.maximum(n[grew], ERROR_FLOOR) / np.maximum(b[grew], ERROR_FLOOR),
                                             status=sn[grew]))
    growth_df = (pd.concat(growth, ignore_index=True) if growth else
                 pd.DataFrame(columns=KEY + ["metric", "base", "new", "ratio", "status"]))

    tb, tn = _timing(base), _timing(new)
    t = tb.merge(tn, left_index=True, right_index=True, suffixes=("_base", "_new"))
    cols = [f"{c}_{s}" for s in ("base", "new") for c in ("time_ms_median", "time_ms_p10", "time_ms_p90")]
    judged = (t[cols].notna().all(axis=1) & (t["time_ms_median_base"] > 0) & (t["time_ms_median_new"] > 0)
              & (t["repeats_base"] >= 2) & (t["repeats_new"] >= 2))
    t = t[judged].assign(ratio=t["time_ms_median_new"] / t["time_ms_median_base"])
    w = {s: tail_widen * (t[f"time_ms_p90_{s}"] - t[f"time_ms_p10_{s}"]) / (t[f"repeats_{s}"] - 1) ** 2 for s in ("base", "new")}
    slower = (t["time_ms_p10_new"] - w["new"] > t["time_ms_p90_base"] + w["base"]) & (t["ratio"] > min_time_ratio)
    faster = (t["time_ms_p90_new"] + w["new"] < t["time_ms_p10_base"] - w["base"]) & (1.0 / t["ratio"] > min_time_ratio)
    tcols = ["time_ms_median_base", "time_ms_median_new", "ratio", "time_ms_p90_base", "time_ms_p10_new",
             "time_ms_p10_base", "time_ms_p90_new"]

    pairs_b = set(zip(base["case_id"], base["target"]))
    pairs_n = set(zip(new["case_id"], new["target"]))
    pair_frame = lambda pairs, df: (df[[p in pairs for p in zip(df["case_id"], df["target"])]]  # noqa: E731
                                    .groupby(["case_id", "target"], sort=True)["status"]
                                    .agg(lambda s: ",".join(sorted(set(s)))).reset_index())
    return {
        "new_failures": status_cols(failing),
        "fixes": status_cols(fixed),
        "status_changes": status_cols(other),
        "error_growth": growth_df,
        "timing": t[slower][tcols].reset_index(),
        "speedups": t[faster][tcols].reset_index(),
        "added": pair_frame(pairs_n - pairs_b, new),
        "removed": pair_frame(pairs_b - pairs_n, base),
        "targets_added": sorted(set(new["target"]) - set(base["target"])),
        "targets_removed": sorted(set(base["target"]) - set(new["target"])),
        "compared_rows": int(len(m)),
        "timing_judged": int(judged.sum()),
        "timing_unjudged": int((~judged).sum()),
        "error_factor": error_factor,
        "min_time_ratio": min_time_ratio,
        "tail_widen": tail_widen,
    }


def regression_flag(result: dict) -> bool:
    return bool(len(result["new_failures"]) or len(result["error_growth"]) or len(result["timing"]))


def _rows(df: pd.DataFrame, cols: list[str]) -> list[list]:
    return [[r[c] for c in cols] for r in df.head(MAX_LISTED).to_dict("records")]


def _more(df: pd.DataFrame) -> str:
    return f"\n\n... {len(df) - MAX_LISTED} more" if len(df) > MAX_LISTED else ""


def markdown(result: dict, base_label: str, new_label: str) -> str:
    verdict = "REGRESSION" if regression_flag(result) else "no regression"
    out = [f"# Regression check: {verdict}", "", f"- base: {base_label}", f"- new: {new_label}", "",
           f"{result['compared_rows']} rows compared; error growth means max(new, {ERROR_FLOOR:g}) > "
           f"{result['error_factor']:g} x max(base, {ERROR_FLOOR:g}) for norm_err or ulp_at_max; a timing regression "
           f"means new p10 > base p90 (bands widened by {result['tail_widen']:g} x width / (repeats - 1)^2) "
           f"and new/base median > {result['min_time_ratio']:g} "
           f"({result['timing_judged']} (case, target) pairs judged, {result['timing_unjudged']} without timings).", ""]
    names = [("new_failures", "New failures"), ("error_growth", "Error growth"), ("timing", "Timing regressions"),
             ("fixes", "Fixes"), ("status_changes", "Other status changes"), ("speedups", "Speed-ups"),
             ("added", "Added (case, target)"), ("removed", "Removed (case, target)")]
    if not result["compared_rows"]:
        out += ["**Nothing in common**: no (case, target, vs, output) row is in both runs (different suites or targets?).", ""]
    out.append(md_table(["what", "count"], [[title, len(result[k])] for k, title in names]))
    status_cols = ["case_id", "target", "vs", "output", "base_status", "new_status", "reason"]
    time_cols = ["case_id", "target", "time_ms_median_base", "time_ms_median_new", "ratio", "time_ms_p90_base", "time_ms_p10_new"]
    cols = {"new_failures": status_cols, "fixes": status_cols, "status_changes": status_cols,
            "error_growth": ["case_id", "target", "vs", "output", "metric", "base", "new", "ratio", "status"],
            "timing": time_cols, "speedups": ["case_id", "target", "time_ms_median_base", "time_ms_median_new", "ratio",
                                              "time_ms_p10_base", "time_ms_p90_new"],
            "added": ["case_id", "target", "status"], "removed": ["case_id", "target", "status"]}
    for key, title in names:
        df = result[key]
        if not len(df):
            continue
        if key in ("added", "removed"):
            whole = df[df["target"].isin(result["targets_" + key])].groupby("target").size().to_dict()
            if whole:
                out += ["", f"## {title}: whole targets", ""] + [f"- `{t}`: {n} cases" for t, n in whole.items()]
                df = df[~df["target"].isin(whole)]
                if not len(df):
                    continue
        out += ["", f"## {title} ({len(df)})", "", md_table(cols[key], _rows(df, cols[key])) + _more(df)]
    return "\n".join(out) + "\n"


def _per_target(dfs: dict[str, pd.DataFrame]):
    """(column name, oracle rows) per target of every frame; a target seen in several frames gets the label."""
    prepped = {label: _prep(df) for label, df in dfs.items()}
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
    judged = statuses.where(~statuses.isin(["unsupported", "skip"]) & statuses.notna())
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

    rows = [[cid, out] + [cell(r, t) for t in targets] + ["" if r[("all", "agree")] else "**differs**"]
            for (cid, out), r in table.iterrows()]
    n_diff = int((~table[("all", "agree")]).sum())
    lines = [f"# {title}", "", f"{len(table)} (case, output) rows on {len(targets)} targets; {n_diff} where the targets' "
             "statuses differ (unsupported and skip ignored). Cells: status and norm_err.", "",
             md_table(["case_id", "output"] + targets + ["agree"], rows), "", "## Median time (ms)", "",
             md_table(["case_id"] + list(timing.columns), [[cid] + list(r) for cid, r in timing.iterrows()])]
    return "\n".join(lines) + "\n"
