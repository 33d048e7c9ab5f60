"""Regression comparison: steps planted in noisy synthetic series are found, clean noisy series raise nothing."""

import numpy as np
import pandas as pd
import pytest

from conformance import regress

OUTPUTS = ("y", "mean", "var", "dx")
TARGETS = ("opencl@dev-a", "numpy")


def _cases(rng, n=30):
    return [(f"case-{i}", float(10 ** rng.uniform(-1.5, 1.0)), float(10 ** rng.uniform(-2, 0.7))) for i in range(n)]


def make_run(rng, cases, *, noise=0.05, repeats=20, time_step=None, err_step=None, status=None, targets=TARGETS,
             outputs=OUTPUTS):
    """One run's rows: per (case, target), `repeats` timings with relative noise `noise` summarised as
    median/p10/p90 like the runner does, and per output a norm_err within +-20% of the case's own value.
    time_step / err_step: {case_id: factor}; status: {(case_id, target, output): status}."""
    rows = []
    for cid, t_ms, err in cases:
        for target in targets:
            scale = (time_step or {}).get(cid, 1.0)
            samples = t_ms * scale * (1 + noise * rng.standard_normal(repeats))
            timing = dict(time_ms_median=float(np.median(samples)), time_ms_p10=float(np.percentile(samples, 10)),
                          time_ms_p90=float(np.percentile(samples, 90)), repeats=repeats)
            for out in outputs:
                e = err * (err_step or {}).get(cid, 1.0) * (1 + 0.2 * rng.uniform(-1, 1))
                rows.append(dict(case_id=cid, backend=target.split("@")[0], target=target, vs="oracle", output=out,
                                 status=(status or {}).get((cid, target, out), "pass"), norm_err=e, ulp_at_max=e * 3,
                                 reason="", **timing))
    return pd.DataFrame(rows)


def _flagged_cases(result):
    return (set(result["new_failures"]["case_id"]) | set(result["error_growth"]["case_id"]) |
            set(result["timing"]["case_id"]))


@pytest.mark.parametrize("seed", range(3))
def test_series_with_planted_steps(seed):
    """20 clean runs (5% timing noise, +-20% error noise), then a +30% time step, then a x10 error step."""
    rng = np.random.default_rng(seed)
    cases = _cases(rng)
    cases[7] = (cases[7][0], cases[7][1], 2.0)  # an error above the floor of 1, so x10 shows in both metrics
    series = [make_run(rng, cases) for _ in range(20)]
    slow, worse = cases[3][0], cases[7][0]
    series.append(make_run(rng, cases, time_step={slow: 1.3}))
    series.append(make_run(rng, cases, err_step={worse: 10.0}))
    for base, new in zip(series[:19], series[1:20]):
        r = regress.compare(base, new)
        assert not regress.regression_flag(r), regress.markdown(r, "base", "new")
    r = regress.compare(series[19], series[20])
    assert regress.regression_flag(r)
    assert set(r["timing"]["case_id"]) == {slow} and set(r["timing"]["target"]) == set(TARGETS)
    assert not len(r["error_growth"]) and not len(r["new_failures"])
    assert (r["timing"]["ratio"] > 1.2).all()
    # back to the old speed in run 21 is a speed-up, not a regression; the x10 error is the regression
    r = regress.compare(series[20], series[21])
    assert set(r["speedups"]["case_id"]) == {slow} and not len(r["timing"])
    assert set(r["error_growth"]["case_id"]) == {worse}
    grown = r["error_growth"]
    assert set(grown["metric"]) == {"norm_err", "ulp_at_max"} and len(grown) == 2 * len(OUTPUTS) * len(TARGETS)


def test_no_false_alarms_across_many_seeds():
    """Clean noisy runs compared pairwise over many seeds: not one flag in thousands of judgements
    (5% noise with 5 to 20 repeats; 2% noise, as long cases have, with 3 repeats)."""
    judged = 0
    for seed in range(24):
        rng = np.random.default_rng(1000 + seed)
        cases = _cases(rng, 40)
        few = seed % 4 == 0
        runs = [make_run(rng, cases, noise=0.02 if few else 0.05, repeats=3 if few else int(rng.choice([5, 10, 20])))
                for _ in range(6)]
        for base, new in zip(runs[:-1], runs[1:]):
            r = regress.compare(base, new)
            assert not _flagged_cases(r), (seed, r["timing"], r["error_growth"])
            judged += r["timing_judged"]
    assert judged == 24 * 5 * 40 * len(TARGETS)


def _rate(seed, repeats, noise, step=1.0, **kw):
    """Fraction of 4000 (case, target) pairs flagged slower between two runs, the new one scaled by step."""
    rng = np.random.default_rng(seed)
    cases = _cases(rng, 4000)
    kw_run = dict(repeats=repeats, noise=noise, targets=("numpy",), outputs=("y",))
    base = make_run(rng, cases, **kw_run)
    new = make_run(rng, cases, time_step={c[0]: step for c in cases}, **kw_run)
    return len(regress.compare(base, new, **kw)["timing"]) / len(cases)


def test_false_alarm_and_detection_rates():
    """Measured rates of the rule on 5% noise (see the regress module docstring)."""
    assert _rate(1, 20, 0.05) == 0 and _rate(2, 20, 0.05, step=1.3) > 0.999
    widened, plain = _rate(3, 3, 0.05), _rate(3, 3, 0.05, tail_widen=0.0)
    assert widened < 0.003 and plain > 0.005 and plain > 4 * widened, (widened, plain)
    assert _rate(4, 3, 0.05, step=1.3) > 0.6 and _rate(5, 3, 0.02, step=1.3) > 0.99


def test_timing_is_judged_against_the_spread_not_a_fixed_percentage():
    rng = np.random.default_rng(5)
    cases = _cases(rng, 10)
    cid = cases[0][0]
    # the same +30% step, but repeats so noisy (25%) that the tails overlap: not a regression
    noisy = regress.compare(make_run(rng, cases, noise=0.25), make_run(rng, cases, noise=0.25, time_step={cid: 1.3}))
    assert cid not in set(noisy["timing"]["case_id"])
    # very quiet repeats (0.1%): a +5% shift is outside the spread but under min_time_ratio: not flagged
    quiet = regress.compare(make_run(rng, cases, noise=0.001), make_run(rng, cases, noise=0.001, time_step={cid: 1.05}))
    assert not len(quiet["timing"])
    # ... and flagged once the ratio threshold is lowered below it
    quiet = regress.compare(make_run(rng, cases, noise=0.001), make_run(rng, cases, noise=0.001, time_step={cid: 1.05}),
                            min_time_ratio=1.02)
    assert set(quiet["timing"]["case_id"]) == {cid}


def test_error_floor_ignores_growth_near_zero_and_factor_applies():
    base = make_run(np.random.default_rng(0), [("tiny", 1.0, 1e-4), ("big", 1.0, 5.0)])
    new = base.copy()
    new.loc[new["case_id"] == "tiny", ["norm_err", "ulp_at_max"]] *= 500  # 1e-4 -> 0.05: still under the floor
    new.loc[new["case_id"] == "big", "norm_err"] *= 3  # under the factor 4
    r = regress.compare(base, new)
    assert not len(r["error_growth"]) and not regress.regression_flag(r)
    assert set(regress.compare(base, new, error_factor=2.0)["error_growth"]["case_id"]) == {"big"}
    new.loc[new["case_id"] == "tiny", "norm_err"] = np.inf
    assert set(regress.compare(base, new)["error_growth"]["case_id"]) == {"tiny"}


def test_status_transitions():
    rng = np.random.default_rng(1)
    cases = _cases(rng, 8)
    c = [x[0] for x in cases]
    t = TARGETS[0]
    base = make_run(rng, cases, status={(c[0], t, "y"): "fail", (c[1], t, "y"): "xfail", (c[2], t, "dx"): "unsupported",
                                        (c[3], t, "y"): "pass", (c[4], t, "y"): "crash", (c[5], t, "mean"): "skip"})
    new = base.copy()
    set_status = {(c[0], "y"): "pass", (c[1], "y"): "xpass", (c[2], "dx"): "error", (c[3], "y"): "timeout",
                  (c[4], "y"): "fail", (c[5], "mean"): "pass"}
    for (cid, out), s in set_status.items():
        new.loc[(new["case_id"] == cid) & (new["target"] == t) & (new["output"] == out), "status"] = s
    r = regress.compare(base, new)
    failures = {(x.case_id, x.base_status, x.new_status) for x in r["new_failures"].itertuples()}
    assert failures == {(c[1], "xfail", "xpass"), (c[2], "unsupported", "error"), (c[3], "pass", "timeout")}
    assert {(x.case_id, x.new_status) for x in r["fixes"].itertuples()} == {(c[0], "pass")}
    assert {(x.case_id, x.base_status, x.new_status) for x in r["status_changes"].itertuples()} == {
        (c[4], "crash", "fail"), (c[5], "skip", "pass")}
    assert regress.regression_flag(r)
    only_fix = regress.compare(base, base.assign(status=base["status"].replace({"fail": "pass"})))
    assert len(only_fix["fixes"]) == 1 and not regress.regression_flag(only_fix)
    md = regress.markdown(r, "run-a", "run-b")
    assert md.startswith("# Regression check: REGRESSION") and "## New failures (3)" in md and "## Fixes (1)" in md


def test_cases_and_targets_added_and_removed():
    rng = np.random.default_rng(2)
    cases = _cases(rng, 6)
    base = make_run(rng, cases[:5])
    new = make_run(rng, cases[1:])
    extra = new[new["target"] == "numpy"].assign(target="opencl@dev-b", backend="opencl")
    new = pd.concat([new, extra], ignore_index=True)
    r = regress.compare(base, new)
    assert set(r["added"]["case_id"]) == {c[0] for c in cases[1:]}
    assert set(zip(r["removed"]["case_id"], r["removed"]["target"])) == {(cases[0][0], t) for t in TARGETS}
    assert r["targets_added"] == ["opencl@dev-b"] and r["targets_removed"] == []
    assert {cases[5][0]} == set(r["added"][r["added"]["target"] != "opencl@dev-b"]["case_id"])
    assert not regress.regression_flag(r)
    md = regress.markdown(r, "a", "b")
    assert "`opencl@dev-b`: 5 cases" in md and "## Removed (case, target) (2)" in md


def test_identical_runs_and_missing_timings():
    run = make_run(np.random.default_rng(3), _cases(np.random.default_rng(3), 5))
    r = regress.compare(run, run)
    assert not regress.regression_flag(r) and r["compared_rows"] == len(run)
    old = run.drop(columns=["time_ms_p10", "time_ms_p90"])  # a run from before p10/p90 were recorded
    r = regress.compare(old, run.assign(time_ms_median=run["time_ms_median"] * 3))
    assert not len(r["timing"]) and r["timing_unjudged"] == 5 * len(TARGETS)
    assert "# Regression check: no regression" in regress.markdown(r, "a", "b")


def test_cross_device_side_by_side():
    rng = np.random.default_rng(4)
    cases = _cases(rng, 4)
    a = make_run(rng, cases)
    b = make_run(rng, cases, status={(cases[1][0], "opencl@dev-a", "y"): "fail"})
    b = b.assign(target=b["target"].str.replace("dev-a", "dev-b"))
    b.loc[b["target"] == "opencl@dev-b", "norm_err"] = 2.0
    dfs = {"a": a[a["target"] == "opencl@dev-a"], "b": b[b["target"] == "opencl@dev-b"], "c": b[b["target"] == "numpy"]}
    table = regress.cross_device(dfs)
    assert len(table) == 4 * len(OUTPUTS)
    assert {"opencl@dev-a", "opencl@dev-b", "numpy"} <= set(table.columns.get_level_values(0))
    assert table.loc[(cases[1][0], "y"), ("opencl@dev-b", "status")] == "fail"
    assert table.loc[(cases[1][0], "y"), ("opencl@dev-b", "norm_err")] == 2.0
    assert (~table[("all", "agree")]).sum() == 1
    timing = regress.cross_device_timing(dfs)
    assert timing.shape == (4, 3) and timing.notna().all().all()
    md = regress.cross_device_markdown(dfs)
    assert "fail 2" in md and "**differs**" in md and "## Median time (ms)" in md
    # the same target from two sources gets its label
    both = regress.cross_device({"x": a[a["target"] == "numpy"], "y": b[b["target"] == "numpy"]})
    assert {"numpy (x)", "numpy (y)"} <= set(both.columns.get_level_values(0))
