"""Regression comparison: steps planted in noisy synthetic series are found, clean noisy series raise nothing.
(tests/test_compare_runs.py does the same on real back-to-back runs of the suite.)"""

import numpy as np
import pandas as pd
import pytest

from conformance import regress, regress_cross, regress_report

OUTPUTS = ("y", "mean", "var", "dx")
TARGETS = ("opencl@dev-a", "numpy")


def _cases(rng, n=30, lo=0.1, hi=1.3):
    """(id, time in ms, norm_err): times 10^lo..10^hi ms, by default 1.3-20 ms, above the 1 ms judging floor."""
    return [(f"case-{i}", float(10 ** rng.uniform(lo, hi)), float(10 ** rng.uniform(-2, 0.7))) for i in range(n)]


def make_run(
    rng, cases, *, noise=0.05, repeats=20, time_step=None, err_step=None, status=None, targets=TARGETS, outputs=OUTPUTS
):
    """One run's rows: per (case, target), `repeats` timings with relative noise `noise` summarised as
    median/p10/p90 like the runner does, and per output a norm_err within +-20% of the case's own value.
    time_step / err_step: {case_id: factor}; status: {(case_id, target, output): status}."""
    rows = []
    for cid, t_ms, err in cases:
        for target in targets:
            scale = (time_step or {}).get(cid, 1.0)
            samples = t_ms * scale * (1 + noise * rng.standard_normal(repeats))
            timing = dict(
                time_ms_median=float(np.median(samples)),
                time_ms_p10=float(np.percentile(samples, 10)),
                time_ms_p90=float(np.percentile(samples, 90)),
                time_ms_min=float(samples.min()),
                repeats=repeats,
            )
            for out in outputs:
                e = err * (err_step or {}).get(cid, 1.0) * (1 + 0.2 * rng.uniform(-1, 1))
                rows.append(
                    dict(
                        case_id=cid,
                        backend=target.split("@")[0],
                        target=target,
                        vs="oracle",
                        output=out,
                        status=(status or {}).get((cid, target, out), "pass"),
                        norm_err=e,
                        ulp_at_max=e * 3,
                        reason="",
                        **timing,
                    )
                )
    return pd.DataFrame(rows)


FLOORS = {"targets": [{"target": t, "floor_ms": 0.02} for t in TARGETS + ("opencl@dev-b",)]}


def _cmp(base, new, **kw):
    """regress.compare with each run's measured launch floor (20 us, as conformance run records it), for pairs
    whose recorded run-to-run drift is below min_time_ratio (unrecorded_ratio 1: min_time_ratio governs)."""
    return regress.compare(base, new, **{"base_meta": FLOORS, "new_meta": FLOORS, "unrecorded_ratio": 1.0, **kw})


def _flagged_cases(result):
    return (
        set(result["new_failures"]["case_id"])
        | set(result["error_growth"]["case_id"])
        | set(result["timing"]["case_id"])
    )


@pytest.mark.parametrize("seed", range(3))
def test_series_with_planted_steps(seed):
    """20 clean runs (5% timing noise, +-20% error noise), then a +50% time step, then a x10 error step."""
    rng = np.random.default_rng(seed)
    cases = _cases(rng)
    cases[7] = (cases[7][0], cases[7][1], 2.0)  # an error above the floor of 1, so x10 shows in both metrics
    series = [make_run(rng, cases) for _ in range(20)]
    slow, worse = cases[3][0], cases[7][0]
    series.append(make_run(rng, cases, time_step={slow: 1.5}))
    series.append(make_run(rng, cases, err_step={worse: 10.0}))
    for base, new in zip(series[:19], series[1:20]):
        r = _cmp(base, new)
        assert not regress.regression_flag(r), regress_report.markdown(r, "base", "new")
    r = _cmp(series[19], series[20])
    assert regress.regression_flag(r)
    assert set(r["timing"]["case_id"]) == {slow} and set(r["timing"]["target"]) == set(TARGETS)
    assert not len(r["error_growth"]) and not len(r["new_failures"])
    assert (r["timing"]["ratio"] > 1.25).all() and (r["timing"]["min_ratio"] > 1.25).all()
    # back to the old speed in run 21 is a speed-up, not a regression; the x10 error is the regression
    r = _cmp(series[20], series[21])
    assert set(r["speedups"]["case_id"]) == {slow} and not len(r["timing"])
    assert set(r["error_growth"]["case_id"]) == {worse}
    grown = r["error_growth"]
    assert set(grown["metric"]) == {"norm_err", "ulp_at_max"} and len(grown) == 2 * len(OUTPUTS) * len(TARGETS)


def test_no_false_alarms_across_many_seeds():
    """Clean noisy runs compared pairwise over many seeds: not one flag in thousands of judgements
    (5% noise with 5 to 20 repeats; 2% noise, as long cases have, with 3 repeats)."""
    judged = 0
    for seed in range(12):
        rng = np.random.default_rng(1000 + seed)
        cases = _cases(rng, 40)
        few = seed % 4 == 0
        runs = [
            make_run(rng, cases, noise=0.02 if few else 0.05, repeats=3 if few else int(rng.choice([5, 10, 20])))
            for _ in range(6)
        ]
        for base, new in zip(runs[:-1], runs[1:]):
            r = _cmp(base, new)
            assert not _flagged_cases(r), (seed, r["timing"], r["error_growth"])
            judged += r["timing_judged"]
    assert judged == 12 * 5 * 40 * len(TARGETS)


def _rate(seed, repeats, noise, step=1.0, **kw):
    """Fraction of 2000 (case, target) pairs flagged slower between two runs, the new one scaled by step."""
    rng = np.random.default_rng(seed)
    cases = _cases(rng, 2000)
    kw_run = dict(repeats=repeats, noise=noise, targets=("numpy",), outputs=("y",))
    base = make_run(rng, cases, **kw_run)
    new = make_run(rng, cases, time_step={c[0]: step for c in cases}, **kw_run)
    return len(_cmp(base, new, **kw)["timing"]) / len(cases)


def test_false_alarm_and_detection_rates():
    """Measured rates of the rule on synthetic normal noise (2000 pairs each):
    no false alarm at 5%, whatever the repeats; 2.5e-4 with 3 repeats of 10% (without the widened bands and the
    ratio floor: above 0.5%); a 1.5x step found at 20 repeats of 5% in 99.8% (the minimum ratio must pass 1.3: a
    minimum of 20 draws of 5% noise moves that much), at 5 repeats of 5% or 3 of 2% > 99%."""
    assert _rate(1, 20, 0.05) == 0 and _rate(2, 20, 0.05, step=1.5) >= 0.995 and _rate(11, 3, 0.05) == 0
    assert _rate(3, 3, 0.10) <= 1e-3 and _rate(3, 3, 0.10, tail_widen=0.0, min_time_ratio=1.0) > 0.005
    assert _rate(4, 5, 0.05, step=1.5) > 0.99 and _rate(5, 3, 0.02, step=1.5) > 0.99


def test_timing_is_judged_against_the_spread_not_a_fixed_percentage():
    rng = np.random.default_rng(5)
    cases = _cases(rng, 10)
    cid = cases[0][0]
    # the same +50% step, but repeats so noisy (40%) that the tails overlap: not a regression
    noisy = _cmp(make_run(rng, cases, noise=0.4), make_run(rng, cases, noise=0.4, time_step={cid: 1.5}))
    assert cid not in set(noisy["timing"]["case_id"])
    # very quiet repeats (0.1%): a +10% shift is outside the spread but under min_time_ratio: not flagged
    quiet = _cmp(make_run(rng, cases, noise=0.001), make_run(rng, cases, noise=0.001, time_step={cid: 1.1}))
    assert not len(quiet["timing"])
    # ... and flagged once the ratio threshold is lowered below it
    quiet = _cmp(
        make_run(rng, cases, noise=0.001), make_run(rng, cases, noise=0.001, time_step={cid: 1.1}), min_time_ratio=1.05
    )
    assert set(quiet["timing"]["case_id"]) == {cid}


def test_only_cases_well_above_the_launch_floor_are_judged():
    rng = np.random.default_rng(6)
    cases = _cases(rng, 20, lo=-1.5, hi=1.3)  # 0.03 to 20 ms
    base = make_run(rng, cases, noise=0.001)
    new = make_run(rng, cases, noise=0.001, time_step={c[0]: 2.0 for c in cases})
    r = regress.compare(base, new, unrecorded_ratio=1.0)  # no measured floor: the smallest time_ms_min stands in
    bar = max(1.0, 20 * new["time_ms_min"].min())  # the larger of the two runs' floors
    big = {c[0] for c in cases if c[1] > bar * 1.01}
    assert set(r["timing"]["case_id"]) == big and r["timing_below_floor"] == (len(cases) - len(big)) * len(TARGETS)
    # a measured floor (run.json targets[].floor_ms) of 0.5 ms raises the bar to 10 ms
    meta = {"targets": [{"target": t, "floor_ms": 0.5} for t in TARGETS]}
    r = _cmp(base, new, base_meta=meta, new_meta=meta)
    assert set(r["timing"]["case_id"]) == {c[0] for c in cases if c[1] >= 10.1}
    # a slowdown that the fastest repeat does not show is interference, not slower code
    masked = new.assign(time_ms_min=base["time_ms_min"])
    assert not len(_cmp(base, masked)["timing"])


def test_history_drift_raises_the_bar_of_its_pair():
    rng = np.random.default_rng(7)
    cases = _cases(rng, 4)
    base = make_run(rng, cases, noise=0.001)
    new = make_run(rng, cases, noise=0.001, time_step={c[0]: 1.5 for c in cases})
    centre = base.drop_duplicates(["case_id", "target"]).set_index(["case_id", "target"])["time_ms_median"]
    steady = {k: (v, 0.01) for k, v in centre.items()}  # medians that moved about 1 % between recorded runs
    wobbly = (cases[0][0], TARGETS[0])
    r = _cmp(base, new, drift={**steady, wobbly: (centre[wobbly], np.log(1.6) / 4)})  # 4 deviations: 1.6x
    flagged = set(zip(r["timing"]["case_id"], r["timing"]["target"]))
    assert wobbly not in flagged and len(flagged) == len(cases) * len(TARGETS) - 1
    # the new time is held against the record's centre: a base that was itself slow hides nothing
    slow_record = {k: (v / 1.5, 0.01) for k, v in centre.items()}  # usually 1.5x faster than this base run
    r = _cmp(base, new.assign(time_ms_median=new["time_ms_median"], time_ms_min=new["time_ms_min"]), drift=slow_record)
    assert len(r["timing"]) == len(cases) * len(TARGETS) and (r["timing"]["vs_record"] > 2.2).all()


def test_error_floor_ignores_growth_near_zero_and_factor_applies():
    base = make_run(np.random.default_rng(0), [("tiny", 1.0, 1e-4), ("big", 1.0, 5.0)])
    new = base.copy()
    new.loc[new["case_id"] == "tiny", ["norm_err", "ulp_at_max"]] *= 500  # 1e-4 -> 0.05: still under the floor
    new.loc[new["case_id"] == "big", "norm_err"] *= 3  # under the factor 4
    r = _cmp(base, new)
    assert not len(r["error_growth"]) and not regress.regression_flag(r)
    assert set(_cmp(base, new, error_factor=2.0)["error_growth"]["case_id"]) == {"big"}
    new.loc[new["case_id"] == "tiny", "norm_err"] = np.inf
    assert set(_cmp(base, new)["error_growth"]["case_id"]) == {"tiny"}


def test_status_transitions():
    rng = np.random.default_rng(1)
    cases = _cases(rng, 8)
    c = [x[0] for x in cases]
    t = TARGETS[0]
    base = make_run(
        rng,
        cases,
        status={
            (c[0], t, "y"): "fail",
            (c[1], t, "y"): "xfail",
            (c[2], t, "dx"): "unsupported",
            (c[3], t, "y"): "pass",
            (c[4], t, "y"): "crash",
            (c[5], t, "mean"): "skip",
            (c[7], t, "y"): "fail",
        },
    )
    new = base.copy()
    set_status = {
        (c[0], "y"): "pass",
        (c[1], "y"): "xpass",
        (c[2], "dx"): "error",
        (c[3], "y"): "timeout",
        (c[4], "y"): "fail",
        (c[5], "mean"): "pass",
        (c[6], "y"): "skip",
        (c[7], "y"): "unsupported",
    }
    for (cid, out), s in set_status.items():
        new.loc[(new["case_id"] == cid) & (new["target"] == t) & (new["output"] == out), "status"] = s
    r = _cmp(base, new)
    failures = {(x.case_id, x.base_status, x.new_status) for x in r["new_failures"].itertuples()}
    assert failures == {(c[1], "xfail", "xpass"), (c[2], "unsupported", "error"), (c[3], "pass", "timeout")}
    assert {(x.case_id, x.new_status) for x in r["fixes"].itertuples()} == {(c[0], "pass")}
    assert {(x.case_id, x.base_status, x.new_status) for x in r["status_changes"].itertuples()} == {
        (c[4], "crash", "fail"),
        (c[5], "skip", "pass"),
    }
    # a row that ran and is skipped or unsupported now was lost, whatever it said before: a regression
    assert {(x.case_id, x.base_status, x.new_status) for x in r["lost"].itertuples()} == {
        (c[6], "pass", "skip"),
        (c[7], "fail", "unsupported"),
    }
    lost_only = new.copy()
    lost_only["status"] = base["status"]
    lost_only.loc[(new["case_id"] == c[6]) & (new["target"] == t) & (new["output"] == "y"), "status"] = "skip"
    assert regress.regression_flag(_cmp(base, lost_only))
    assert regress.regression_flag(r)
    only_fix = _cmp(base, base.assign(status=base["status"].replace({"fail": "pass"})))
    assert len(only_fix["fixes"]) == 2 and not regress.regression_flag(only_fix)
    md = regress_report.markdown(r, "run-a", "run-b")
    assert md.startswith("# Regression check: REGRESSION") and "## New failures (3)" in md and "## Fixes (1)" in md


def test_cases_and_targets_added_and_removed():
    rng = np.random.default_rng(2)
    cases = _cases(rng, 6)
    base = make_run(rng, cases[:5])
    new = make_run(rng, cases[1:])
    extra = new[new["target"] == "numpy"].assign(target="opencl@dev-b", backend="opencl")
    new = pd.concat([new, extra], ignore_index=True)
    r = _cmp(base, new)
    assert set(r["added"]["case_id"]) == {c[0] for c in cases[1:]}
    assert set(zip(r["removed"]["case_id"], r["removed"]["target"])) == {(cases[0][0], t) for t in TARGETS}
    assert r["targets_added"] == ["opencl@dev-b"] and r["targets_removed"] == []
    assert {cases[5][0]} == set(r["added"][r["added"]["target"] != "opencl@dev-b"]["case_id"])
    assert regress.regression_flag(r)  # a (case, target) that vanished was not checked
    md = regress_report.markdown(r, "a", "b")
    assert "`opencl@dev-b`: 5 cases" in md and "## Removed (case, target) (2)" in md
    only_added = _cmp(base, pd.concat([base, extra], ignore_index=True))
    assert len(only_added["added"]) and not regress.regression_flag(only_added)
    gone = _cmp(pd.concat([base, extra], ignore_index=True), base)  # a whole target vanished
    assert gone["targets_removed"] == ["opencl@dev-b"] and regress.regression_flag(gone)


def test_identical_runs_and_missing_timings():
    run = make_run(np.random.default_rng(3), _cases(np.random.default_rng(3), 5))
    r = _cmp(run, run)
    assert not regress.regression_flag(r) and r["compared_rows"] == len(run)
    old = run.drop(columns=["time_ms_p10", "time_ms_p90"])  # a run from before p10/p90 were recorded
    r = _cmp(old, run.assign(time_ms_median=run["time_ms_median"] * 3))
    assert not len(r["timing"]) and r["timing_unjudged"] == 5 * len(TARGETS)
    assert "# Regression check: no regression" in regress_report.markdown(r, "a", "b")


def test_cross_device_side_by_side():
    rng = np.random.default_rng(4)
    cases = _cases(rng, 4)
    a = make_run(rng, cases)
    b = make_run(rng, cases, status={(cases[1][0], "opencl@dev-a", "y"): "fail"})
    b = b.assign(target=b["target"].str.replace("dev-a", "dev-b"))
    b.loc[b["target"] == "opencl@dev-b", "norm_err"] = 2.0
    dfs = {"a": a[a["target"] == "opencl@dev-a"], "b": b[b["target"] == "opencl@dev-b"], "c": b[b["target"] == "numpy"]}
    table = regress_cross.cross_device(dfs)
    assert len(table) == 4 * len(OUTPUTS)
    assert {"opencl@dev-a", "opencl@dev-b", "numpy"} <= set(table.columns.get_level_values(0))
    assert table.loc[(cases[1][0], "y"), ("opencl@dev-b", "status")] == "fail"
    assert table.loc[(cases[1][0], "y"), ("opencl@dev-b", "norm_err")] == 2.0
    assert (~table[("all", "agree")]).sum() == 1
    timing = regress_cross.cross_device_timing(dfs)
    assert timing.shape == (4, 3) and timing.notna().all().all()
    md = regress_cross.cross_device_markdown(dfs)
    assert "fail 2" in md and "| DIFFERS |" in md and "## Median time (ms)" in md
    # the same target from two sources gets its label
    both = regress_cross.cross_device({"x": a[a["target"] == "numpy"], "y": b[b["target"] == "numpy"]})
    assert {"numpy (x)", "numpy (y)"} <= set(both.columns.get_level_values(0))


def test_no_time_is_judged_from_a_run_on_a_busy_machine():
    rng = np.random.default_rng(8)
    cases = _cases(rng, 5)
    base = make_run(rng, cases, noise=0.001)
    new = make_run(rng, cases, noise=0.001, time_step={c[0]: 2.0 for c in cases})
    quiet = {**FLOORS, "machine_load": {"cpu_stalled_share": 0.15}}
    busy = {**FLOORS, "machine_load": {"cpu_stalled_share": 0.8}}
    assert len(_cmp(base, new, base_meta=quiet, new_meta=quiet)["timing"]) == len(cases) * len(TARGETS)
    r = _cmp(base, new, base_meta=quiet, new_meta=busy)
    assert not len(r["timing"]) and r["timing_judged"] == 0 and r["timing_busy"] == {"new": 0.8}
    assert not regress.regression_flag(r) and "**Times not judged**: the new run's machine" in regress_report.markdown(
        r, "a", "b"
    )
    assert len(_cmp(base, new, base_meta=quiet, new_meta=busy, busy=0.9)["timing"]) == len(cases) * len(TARGETS)


def test_a_pair_without_history_is_held_to_the_unrecorded_ratio():
    rng = np.random.default_rng(9)
    cases = _cases(rng, 6)
    base = make_run(rng, cases, noise=0.001)
    step = {cases[0][0]: 1.5, cases[1][0]: 2.5}
    new = make_run(rng, cases, noise=0.001, time_step=step)
    alone = regress.compare(base, new, base_meta=FLOORS, new_meta=FLOORS)  # no history: 2x needed
    assert set(alone["timing"]["case_id"]) == {cases[1][0]}
    recorded = {(cases[0][0], t): (cases[0][1], 0.02) for t in TARGETS}  # a steady record: 1.25x needed
    both = regress.compare(base, new, base_meta=FLOORS, new_meta=FLOORS, drift=recorded)
    assert set(both["timing"]["case_id"]) == {cases[0][0], cases[1][0]}
