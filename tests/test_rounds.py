"""Timing rounds (conformance/retime.py): the pairs compare may judge are timed again after the last case, the
round with the lowest median is kept, and what a round changed reaches the journal."""

import json

import pandas as pd
from fs_helpers import conformance

from conformance import journal, retime
from conformance.backends.base import Result, TimingPolicy
from conformance.case import Case
from conformance.runner import timing_columns
from conformance.worker import Reply

SUITE = """
[suite]
name = "rounds"

[[case]]
name = "tiny"
shape = [4, 3]

[[case]]
name = "ms"
shape = [32, 64, 32, 32]
dtype = "float32"
backward = true
"""


class _Worker:
    """Replies with the wall times it is given, one list per call: the harness logic alone, no backend."""

    def __init__(self, walls):
        self.walls = list(walls)
        self.calls = 0

    def run(self, case, inputs, policy, timeout):
        self.calls += 1
        return Reply("ok", Result(outputs={}, wall_ms=self.walls.pop(0)))


class _Target:
    def __init__(self, label, walls, floor_ms=0.01):
        self.label, self.state, self.floor_ms, self.worker = label, "ready", floor_ms, _Worker(walls)


def _rows(case, label, walls):
    cols = timing_columns(Result(outputs={}, wall_ms=walls), case)
    return [{"case_id": case.id, "target": label, "vs": "oracle", "output": o, **cols} for o in ("y", "mean")]


def test_the_fastest_round_is_kept_and_journaled():
    ms, tiny = Case(name="ms", shape=(8, 4)), Case(name="tiny", shape=(4, 2))
    rows = _rows(ms, "a", [10.0, 11.0, 12.0]) + _rows(tiny, "a", [0.1, 0.1, 0.1])  # tiny: below half the bar
    t = _Target("a", [[14.0, 15.0, 16.0], [6.0, 7.0, 9.0]])
    got = []
    n = retime.run_rounds(
        rows,
        [t],
        {ms.id: ms, tiny.id: tiny},
        TimingPolicy(),
        10.0,
        3,
        timing_columns,
        record=lambda c, tg, cols: got.append((c, tg, cols)),
    )
    assert n == 1 and t.worker.calls == 2  # only the millisecond pair, twice
    ms_rows = [r for r in rows if r["case_id"] == ms.id]
    assert all(r["time_ms_median"] == 7.0 and r["time_ms_min"] == 6.0 and r["rounds"] == 3 for r in ms_rows)
    assert all(r["rounds"] == 1 and r["time_ms_median"] == 0.1 for r in rows if r["case_id"] == tiny.id)
    assert got[0] == (ms.id, "a", {"rounds": 2})  # round 2 was slower: only its count changes
    assert got[1][2]["time_ms_median"] == 7.0 and got[1][2]["rounds"] == 3


def test_journal_applies_retime_lines(tmp_path):
    case = Case(name="ms", shape=(8, 4))
    log = journal.Journal(tmp_path, fresh=True)
    log.append(case.id, _rows(case, "a", [10.0, 11.0, 12.0]))
    log.retime(case.id, "a", {"time_ms_median": 5.0, "rounds": 2})
    log.close()
    rows, done, _ = journal.read(tmp_path)
    assert done == [case.id] and [r["time_ms_median"] for r in rows] == [5.0, 5.0] and rows[0]["rounds"] == 2
    with open(tmp_path / journal.NAME, "ab") as fh:  # a torn retime line is dropped, the rest kept
        fh.write(json.dumps({"retime": case.id, "target": "a", "cols": {"time_ms_median": 1.0}}).encode()[:-3])
    rows, done, _ = journal.read(tmp_path)
    assert done == [case.id] and rows[0]["time_ms_median"] == 5.0


def test_a_run_times_its_millisecond_pairs_in_rounds(tmp_path):
    suite = tmp_path / "rounds.toml"
    suite.write_text(SUITE)
    for rounds in (3, 1):
        out = tmp_path / f"r{rounds}"
        r = conformance(
            "run", "--suite", suite, "--backend", "numpy", "--out", out, "--history", "none", "--rounds", rounds
        )
        assert r.returncode == 0, r.stderr[-2000:]
        df = pd.read_csv(out / "results.csv")
        per_case = df[df["vs"] == "oracle"].groupby(df["case_id"].str.split(",").str[0])["rounds"].max()
        assert per_case["tiny"] == 1 and per_case["ms"] == rounds, per_case
        lines = (out / journal.NAME).read_text().splitlines()
        assert sum('"retime"' in line for line in lines) == rounds - 1
        assert ("timing round 2 of 3" in r.stderr) == (rounds == 3)
