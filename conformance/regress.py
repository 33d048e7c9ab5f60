"""Compare two runs (regressions, fixes, added/removed cases): the rules and `compare`.

The markdown of a comparison is regress_report.py; the same suite side by side across devices, regress_cross.py.

Rows are matched on (case_id, target, vs, output). The rules, exactly:

- **New failure**: the base status is one of pass, xfail, unsupported, skip and the new one is unexpected
  (fail, error, crash, timeout, xpass). **Fix**: unexpected before, `pass` now.
- **No longer checked**: a row that ran in the base (any status but skip and unsupported) is skip or
  unsupported now: coverage lost (a device that stopped building, a framework that went missing) is a
  regression, whatever the base row said.
- **Removed**: a (case, target) pair of the base that the new run lacks, and whole targets gone, are
  regressions: a row that vanished was not checked. Added pairs and targets are listed, not flagged.
- Every other change of status (fail -> crash, skip -> pass, ...) is listed as a status change.
- **Error growth**, for norm_err and for ulp_at_max separately: `max(new, 1) > error_factor * max(base, 1)`
  (default factor 4). The floor of 1 (one unit of roundoff scale / one ulp) keeps tiny values near 0 from
  making huge ratios out of noise. NaN on either side is not compared; +Inf new against a finite base grows.
  Judged on rows that pass in the new run: growth within the threshold is the early warning (a failing row
  is a failure already, and a known deviation's error is whatever the framework's stale memory held).
  Numeric regressions always gate.
- **Timing regression**, per (case_id, target), on its `vs = oracle` row (timing columns repeat across
  outputs). Back-to-back runs of the same code on a shared machine differ by far more than the repeats of one
  run spread (measured here on quiet 2-core VMs: medians of 1-20 ms cases 1.5x apart for Intel's OpenCL
  runtime, 2.2x for the numpy peer, 3.2x for PoCL, over 21 runs; 5 us-0.2 ms cases up to 2.3x), and a
  launch-bound case measures the scheduler, not the code. So a pair is *judged* only when
  1. neither run was on a busy machine: a task of the machine waited for a CPU more than `busy` (default
     50 %) of the run's time (Linux pressure stall information, run.json `machine_load`; seen here: a run alone
     3-8 %, beside a pip install 20-40 %, beside three test jobs 75 %);
  2. both runs have median, min, p10, p90 and at least 3 repeats, and both medians are at least
     `max(min_time_ms, floor_factor x floor)` (defaults 1 ms and 20): `floor` is the target's launch floor,
     the median time of a 2-value call that `conformance run` measures on every target (run.json
     `targets[].floor_ms`; for runs without it, the target's smallest time_ms_min in that run stands in);
  and a judged pair is *slower* when all of
  3. `new.p10 - w_new > base.p90 + w_base`: the new run's fast tail lies above the base run's slow tail
     (bands widened by `w = tail_widen x (p90 - p10) / (n - 1)^2`, default tail_widen 4, for few repeats);
     for a pair with a record (5), also `new.p10 - w_new > centre`: above its usual time too;
  4. the median and the minimum of the repeats both grew by more than `min_time_ratio` (default 1.3) against
     the base: the minimum is what interference cannot lower, so a slowdown its fastest repeat does not show
     is a noisy run, not slower code;
  5. beyond the drift the pair is known for. With a *record* (the history store holds the pair in at least 5
     of the last 20 runs of the suite on the same machine that were not busy: `centre`, the median of their
     medians, `spread`, the robust standard deviation of their logarithms, and `worst`, the slowest of them over
     the centre), the new median must exceed `centre x max(min_time_ratio, exp(drift_z x spread), worst^tail)`
     (drift_z 4, tail 2.5): against the pair's usual time, by more than it moves between identical runs, and
     beyond the slowest quiet run the record holds by as much again in log (of n exchangeable runs, the next
     is the slowest with chance 1/(n+1): the record's maximum alone, over 20 comparisons, cries wolf).
     Without a record, one pair of runs cannot tell a slowdown from drift, and 4 uses
     `max(min_time_ratio, unrecorded_ratio)` (default 2) instead.
  The mirror rule lists speed-ups. min_time_ratio 1.3 and tail 2 were chosen on 21 back-to-back runs of the
  smoke suite plus a 32 MB case on every target (1.25 and 1.5 gave 2 false alarms in 20 pairs); tail 2 then
  gave one false alarm in a later CI-style series (PoCL 1.41x its usual time, allowed 1.40x): 2.5; measured
  false alarms and planted-step catches: README, "compare".
- **Added / removed**: (case_id, target) pairs present in only one of the two runs; removed ones gate.

`regression_flag` is True on any new failure, lost check, removed row, error growth or timing regression.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# re-exported: the CLI (cli_history) and the tests call them as regress.*
from .status import EXPECTED, UNCHECKED, UNEXPECTED

KEY = ["case_id", "target", "vs", "output"]
ERROR_METRICS = ("norm_err", "ulp_at_max")
ERROR_FLOOR = 1.0
TIMING = ("time_ms_median", "time_ms_min", "time_ms_p10", "time_ms_p90", "repeats")
# the columns of a timing regression or speed-up, after its (case_id, target)
TIMING_VERDICT_COLS = [
    "time_ms_median_base",
    "time_ms_median_new",
    "ratio",
    "min_ratio",
    "record_ms",
    "vs_record",
    "allowed",
    "time_ms_p90_base",
    "time_ms_p10_new",
    "time_ms_p10_base",
    "time_ms_p90_new",
]
DEFAULTS = {
    "error_factor": 4.0,
    "min_time_ratio": 1.3,
    "unrecorded_ratio": 2.0,
    "drift_z": 4.0,
    "min_time_ms": 1.0,
    "floor_factor": 20.0,
    "tail_widen": 4.0,
    "busy": 0.5,
    "tail": 2.5,
}


def stalled_share(meta: dict | None) -> float | None:
    """The share of a run's wall time in which some task of its machine waited for a CPU (run.json machine_load)."""
    share = ((meta or {}).get("machine_load") or {}).get("cpu_stalled_share")
    return float(share) if isinstance(share, (int, float)) and math.isfinite(share) else None


def prep(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "vs" not in df.columns:
        df["vs"] = "oracle"
    df["vs"] = df["vs"].fillna("oracle").astype(str)
    df["output"] = df["output"].fillna("").astype(str)
    for c in ("norm_err", "ulp_at_max") + TIMING:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float) if c in df.columns else np.nan
    if "reason" not in df.columns:
        df["reason"] = ""
    return df.drop_duplicates(KEY, keep="first")


def floors(df: pd.DataFrame, meta: dict | None = None) -> dict[str, float]:
    """Each target's launch floor (ms): measured (run.json targets[].floor_ms), else its smallest time_ms_min."""
    measured = {t.get("target"): t.get("floor_ms") for t in (meta or {}).get("targets", [])}
    out = {}
    for target, g in df.groupby("target"):
        f = measured.get(target)
        out[target] = float(f) if isinstance(f, (int, float)) and f > 0 else float(g["time_ms_min"].min())
    return out


def _pair_floors(base: pd.DataFrame, new: pd.DataFrame, base_meta: dict | None, new_meta: dict | None) -> dict:
    """Each target's launch floor for the pair of runs: the higher of the two runs' floors."""
    fb, fn = floors(base, base_meta), floors(new, new_meta)
    return {tg: max(fb.get(tg, 0.0), fn.get(tg, 0.0)) for tg in set(fb) | set(fn)}


def _busy_runs(base_meta: dict | None, new_meta: dict | None, busy: float) -> dict[str, float]:
    """{side: stalled share} of the runs ("base", "new") whose machine waited for a CPU more than `busy` of the time."""
    return {
        side: share
        for side, share in (("base", stalled_share(base_meta)), ("new", stalled_share(new_meta)))
        if share is not None and share > busy
    }


def _timing(df: pd.DataFrame) -> pd.DataFrame:
    t = df[df["vs"] == "oracle"].drop_duplicates(["case_id", "target"], keep="first")
    return t.set_index(["case_id", "target"])[list(TIMING)]


def _judge_timing(base: pd.DataFrame, new: pd.DataFrame, floor: dict, drift: dict, o: dict):
    """(judged pairs with their ratios and the verdict columns, count without timings, count below the floor)."""
    t = _timing(base).merge(_timing(new), left_index=True, right_index=True, suffixes=("_base", "_new"))
    timed = (
        t[[f"{c}_{s}" for s in ("base", "new") for c in TIMING]].notna().all(axis=1)
        & (t["time_ms_min_base"] > 0)
        & (t["time_ms_min_new"] > 0)
        & (t["repeats_base"] >= 3)
        & (t["repeats_new"] >= 3)
    )
    targets = t.index.get_level_values("target")
    bar = np.array([max(o["min_time_ms"], o["floor_factor"] * floor.get(tg, math.inf)) for tg in targets])
    above = np.minimum(t["time_ms_median_base"], t["time_ms_median_new"]) >= bar
    judged = t[timed & above].assign(bar_ms=bar[timed & above])
    judged = judged.assign(
        ratio=judged["time_ms_median_new"] / judged["time_ms_median_base"],
        min_ratio=judged["time_ms_min_new"] / judged["time_ms_min_base"],
    )
    return _timing_verdicts(judged, drift, o), int((~timed).sum()), int((timed & ~above).sum())


def _allowed_ratio(centre: np.ndarray, spread: np.ndarray, worst: np.ndarray, o: dict) -> np.ndarray:
    """The new median's allowed ratio over its reference (rule 5): over the record's centre, drift_z robust
    deviations of it, the record's worst run to the power tail and at least min_time_ratio; without a record
    (centre NaN), over the base run alone, max(min_time_ratio, unrecorded_ratio)."""
    alone = max(o["min_time_ratio"], o["unrecorded_ratio"])
    return np.where(
        np.isnan(centre),
        alone,
        np.maximum.reduce(
            [
                np.full(len(centre), o["min_time_ratio"]),
                np.exp(o["drift_z"] * np.nan_to_num(spread)),
                worst ** o["tail"],
            ]
        ),
    )


def _timing_verdicts(judged: pd.DataFrame, drift: dict, o: dict) -> pd.DataFrame:
    """The judged pairs with record_ms, vs_record and allowed added, and the verdicts `slower` and `faster`
    (rules 3-5 of the module docstring)."""
    rec = [drift.get(k) for k in judged.index]
    centre = np.array([r[0] if r else np.nan for r in rec], dtype=float)
    spread = np.array([r[1] if r else np.nan for r in rec], dtype=float)
    worst = np.array([r[2] if r and len(r) > 2 else 1.0 for r in rec], dtype=float)
    allowed = _allowed_ratio(centre, spread, worst, o)
    pairwise = np.where(np.isnan(centre), max(o["min_time_ratio"], o["unrecorded_ratio"]), o["min_time_ratio"])
    vs_record = np.where(np.isnan(centre), judged["ratio"], judged["time_ms_median_new"] / centre)
    judged = judged.assign(allowed=allowed, record_ms=centre, vs_record=vs_record)
    w = {
        s: o["tail_widen"]
        * (judged[f"time_ms_p90_{s}"] - judged[f"time_ms_p10_{s}"])
        / (judged[f"repeats_{s}"] - 1) ** 2
        for s in ("base", "new")
    }
    # apart: the new run's fast tail above the base run's slow tail and, with a record, above the record's centre
    recorded = ~np.isnan(centre)
    low_new, high_new = judged["time_ms_p10_new"] - w["new"], judged["time_ms_p90_new"] + w["new"]
    apart_up = (low_new > judged["time_ms_p90_base"] + w["base"]) & np.where(recorded, low_new > centre, True)
    apart_down = (high_new < judged["time_ms_p10_base"] - w["base"]) & np.where(recorded, high_new < centre, True)
    judged["slower"] = (
        apart_up & (judged["ratio"] > pairwise) & (judged["min_ratio"] > pairwise) & (vs_record > allowed)
    )
    judged["faster"] = (
        apart_down & (1 / judged["ratio"] > pairwise) & (1 / judged["min_ratio"] > pairwise) & (1 / vs_record > allowed)
    )
    return judged


def _status_changes(m: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The merged rows that failed, were no longer checked, were fixed or changed status otherwise, each listed
    with its key, both statuses and the new run's reason."""
    sb, sn = m["status_base"], m["status_new"]
    failing = sb.isin(EXPECTED) & sn.isin(UNEXPECTED)
    fixed = sb.isin(UNEXPECTED) & (sn == "pass")
    lost = ~sb.isin(UNCHECKED) & sn.isin(UNCHECKED)
    other = (sb != sn) & ~failing & ~fixed & ~lost

    def listed(mask: pd.Series) -> pd.DataFrame:
        return (
            m[KEY][mask]
            .assign(base_status=sb[mask], new_status=sn[mask], reason=m.loc[mask, "reason_new"].fillna(""))
            .reset_index(drop=True)
        )

    return {
        "new_failures": listed(failing),
        "lost": listed(lost),
        "fixes": listed(fixed),
        "status_changes": listed(other),
    }


def _error_growth(m: pd.DataFrame, factor: float) -> pd.DataFrame:
    """The merged rows passing in the new run whose norm_err or ulp_at_max (one row per metric) grew by more than
    `factor`, both sides floored at ERROR_FLOOR."""
    sn = m["status_new"]
    growth = []
    for metric in ERROR_METRICS:
        b, n = m[f"{metric}_base"], m[f"{metric}_new"]
        grew = (
            b.notna() & n.notna() & (sn == "pass") & (np.maximum(n, ERROR_FLOOR) > factor * np.maximum(b, ERROR_FLOOR))
        )
        if grew.any():
            growth.append(
                m[KEY][grew].assign(
                    metric=metric,
                    base=b[grew],
                    new=n[grew],
                    ratio=np.maximum(n[grew], ERROR_FLOOR) / np.maximum(b[grew], ERROR_FLOOR),
                    status=sn[grew],
                )
            )
    if not growth:
        return pd.DataFrame(columns=KEY + ["metric", "base", "new", "ratio", "status"])
    return pd.concat(growth, ignore_index=True)


def _pair_statuses(df: pd.DataFrame, pairs: set) -> pd.DataFrame:
    """The (case_id, target) pairs of df that are in `pairs`, each with its distinct statuses, sorted and joined."""
    return (
        df[[p in pairs for p in zip(df["case_id"], df["target"])]]
        .groupby(["case_id", "target"], sort=True)["status"]
        .agg(lambda s: ",".join(sorted(set(s))))
        .reset_index()
    )


def compare(
    base_df: pd.DataFrame,
    new_df: pd.DataFrame,
    *,
    base_meta: dict | None = None,
    new_meta: dict | None = None,
    drift: dict | None = None,
    **options,
) -> dict:
    """Everything that changed from base to new (see the module docstring for the rules); values are DataFrames.
    options: error_factor, min_time_ratio, min_time_ms, floor_factor, tail_widen (DEFAULTS); drift: allowed
    median ratio per (case_id, target), from the history (drift.timing_drift)."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown option {sorted(unknown)[0]!r}")
    o = {**DEFAULTS, **options}
    base, new = prep(base_df), prep(new_df)
    m = base.merge(new, on=KEY, suffixes=("_base", "_new"))
    floor = _pair_floors(base, new, base_meta, new_meta)
    judged, untimed, below = _judge_timing(base, new, floor, drift or {}, o)
    busy = _busy_runs(base_meta, new_meta, o["busy"])
    if busy:  # a run whose tasks waited for a CPU most of the time measured the machine's load, not the code
        judged = judged.assign(slower=False, faster=False)
    pairs_b = set(zip(base["case_id"], base["target"]))
    pairs_n = set(zip(new["case_id"], new["target"]))
    return {
        **_status_changes(m),
        "error_growth": _error_growth(m, o["error_factor"]),
        "timing": judged[judged["slower"]][TIMING_VERDICT_COLS].reset_index(),
        "speedups": judged[judged["faster"]][TIMING_VERDICT_COLS].reset_index(),
        "added": _pair_statuses(new, pairs_n - pairs_b),
        "removed": _pair_statuses(base, pairs_b - pairs_n),
        "targets_added": sorted(set(new["target"]) - set(base["target"])),
        "targets_removed": sorted(set(base["target"]) - set(new["target"])),
        "compared_rows": int(len(m)),
        "timing_judged": 0 if busy else int(len(judged)),
        "timing_recorded": 0 if busy else int(judged["record_ms"].notna().sum()),
        "timing_busy": busy,
        "timing_below_floor": below,
        "timing_unjudged": untimed,
        "floors": floor,
        **o,
    }


def regression_flag(result: dict) -> bool:
    return bool(
        len(result["new_failures"])
        or len(result["lost"])
        or len(result["removed"])
        or len(result["error_growth"])
        or len(result["timing"])
    )
