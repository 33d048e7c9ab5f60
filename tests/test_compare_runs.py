"""`compare` on real back-to-back runs: identical runs raise no alarm, a planted 1.5x slowdown is caught.

21 runs of the smoke suite plus a case of a few milliseconds (so that something is above the 1 ms judging
floor on every target), on the system under test (every OpenCL device) and the numpy peer, recorded in a history
store as a CI runner would. Each run is compared with the one before it, through the CLI, with the drift the
history holds of the runs before the new one. The README gives the same count measured on every target.
"""

import json
import math
import shutil

import pandas as pd
import pytest

from conformance import history, regress
from fs_helpers import conformance

RUNS = 21
EXTRA = """
[[case]]
name = "ms-nchw"
shape = [32, 64, 32, 32]
dtype = "float32"
backward = true
"""
TIMING = ["time_ms_median", "time_ms_min", "time_ms_p10", "time_ms_p90"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("b2b")
    smoke = (regress.__file__.rsplit("/conformance/", 1)[0] + "/cases/smoke.toml")
    suite = base / "smoke-plus.toml"
    suite.write_text(open(smoke).read().replace('name = "smoke"', 'name = "smoke-plus"', 1) + EXTRA)
    store = base / "history.sqlite"
    dirs = []
    for i in range(RUNS):
        out = base / f"run{i:02d}"
        r = conformance("run", "--suite", suite, "--backend", "opencl", "--backend", "numpy", "--out", out,
                        "--history", store)
        assert r.returncode == 0, r.stderr[-2000:]
        dirs.append(out)
    return dirs, store


def _quiet(run_dir) -> bool:
    meta = json.loads((run_dir / "run.json").read_text())
    share = regress.stalled_share(meta)
    return share is None or share <= regress.DEFAULTS["busy"]


def test_identical_back_to_back_runs_raise_no_alarm(runs):
    dirs, store = runs
    alarms, judged = [], 0
    listed = history.runs(str(store))["run_id"].tolist()[::-1]  # oldest first, one per run directory
    assert len(listed) == RUNS
    for a, b in zip(listed[:-1], listed[1:]):
        r = conformance("compare", a, b, "--history", store)
        assert r.returncode == 0, r.stdout[-3000:]
        judged += int(r.stdout.split(" (case, target) pairs judged")[0].rsplit(" ", 1)[1])
        alarms += [f"{b}: {line}" for line in r.stdout.splitlines() if line.startswith("## Timing regressions")]
    assert not alarms, alarms
    quiet_pairs = sum(_quiet(x) and _quiet(y) for x, y in zip(dirs[:-1], dirs[1:]))
    assert judged >= 2 * quiet_pairs  # the millisecond case is judged at least on the SUT's devices of quiet pairs


def test_a_planted_slowdown_of_a_millisecond_case_is_caught(runs, tmp_path):
    """The last two quiet runs; in a copy of the newer one, the steadiest case of 1 ms or more (the smallest spread of
    its medians in the history before it) is made to take 1.5x its usual time (the history's centre; the new run's
    own spread kept): caught, and only it. On a case whose record spreads more, 1.5x is within what it does between
    identical runs (PoCL's and numpy's here: README), and is not flagged."""
    dirs, store = runs
    pairs = [(x, y) for x, y in zip(dirs[:-1], dirs[1:]) if _quiet(x) and _quiet(y)]
    if not pairs:
        pytest.skip("no two consecutive runs had a CPU to themselves (a task waited for one more than half of each "
                    "run's time): such runs' times are not judged, so no slowdown can be shown on them")
    base_dir, new_dir = pairs[-1]
    base = pd.read_csv(base_dir / "results.csv")
    meta = json.loads((new_dir / "run.json").read_text())
    record = history.timing_drift(str(store), meta["suite"], meta["host"]["name"], until=meta["started"])
    floor = regress.floors(regress._prep(base), json.loads((base_dir / "run.json").read_text()))
    bar = base["target"].map(lambda t: max(regress.DEFAULTS["min_time_ms"], regress.DEFAULTS["floor_factor"] * floor[t]))
    timed = base[(base["vs"] == "oracle") & (base["time_ms_median"] >= 1.5 * bar)].drop_duplicates(["case_id", "target"])
    keys = list(zip(timed["case_id"], timed["target"]))
    timed = timed.assign(spread=[record[k][1] if k in record else float("inf") for k in keys],
                         centre=[record[k][0] if k in record else float("nan") for k in keys])
    pick = timed.sort_values("spread").iloc[0]
    allowed = max(regress.DEFAULTS["min_time_ratio"], math.exp(regress.DEFAULTS["drift_z"] * pick["spread"]))
    assert allowed < 1.45, f"the steadiest millisecond case spreads so that {allowed:.2f}x is within its drift here"
    planted = tmp_path / "planted"
    shutil.copytree(new_dir, planted)
    df = pd.read_csv(planted / "results.csv")
    sel = (df["case_id"] == pick["case_id"]) & (df["target"] == pick["target"])
    own = df.loc[sel, TIMING].iloc[0].to_numpy(dtype=float)
    df.loc[sel, TIMING] = own / own[0] * pick["centre"] * 1.5  # TIMING[0] is the median
    df.to_csv(planted / "results.csv", index=False)
    clean = conformance("compare", base_dir, new_dir, "--history", store)
    assert clean.returncode == 0, clean.stdout[-3000:]
    r = conformance("compare", base_dir, planted, "--history", store)
    assert r.returncode == 1 and "## Timing regressions (1)" in r.stdout, r.stdout[-3000:]
    assert pick["case_id"] in r.stdout and pick["target"] in r.stdout
