"""Checks of a framework backend's flag table (FLAGS) through its real worker, shared by the backend test files:
each defined combination against the float64 oracle, and each combination's label round-tripping through
runner.variants(), the case id and the rows."""

import numpy as np

from conformance.backends.base import TimingPolicy
from conformance.case import Case
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype

ONCE = TimingPolicy(warmup=0, min_repeats=1, max_repeats=1, budget_s=0.0)  # one call: values, not time, are checked


def flag_case(w, combo, **fields):
    """A case meaning what the page says the combination does, naming it, under the worker's profile."""
    from conformance.case import profiled as as_profiled

    case = Case(
        "flags",
        mode="train" if combo.normalize_with == "batch" else "infer",
        update_running=combo.update_running,
        flags=combo.label,
        **fields,
    )
    return as_profiled(case, w.meta.profile)


def flag_run(w, case, excused=()):
    """The worker's reply to a flagged case: its Result and {output: reason} of every row that does not pass
    (outputs in `excused`, registered deviations, left out); x, gamma, beta must come back bitwise unchanged."""
    inputs = generate(case)
    reply = w.run(case, inputs, ONCE, 120)
    assert reply.ok, (case.flags, reply)
    res, ref = reply.result, reference(case, inputs)
    bad = {}
    for name, got in res.outputs.items():
        q = w.meta.extra_outputs.get(name, name)
        row = compare(name, got, ref.values[q], ref.scales[q], case, expected_dtype(case, q))
        if row["status"] != "pass" and name not in excused:
            bad[name] = row["reason"]
    for name in ("x", "gamma", "beta"):
        before, after = getattr(inputs, name), np.asarray(res.untouched[name])
        if not (case.inplace and name == "x") and not (after.dtype == before.dtype and np.array_equal(after, before)):
            bad[f"input:{name}"] = "modified by the call"
    return inputs, res, bad


def flag_round_trip(w):
    """runner.variants() runs a case under each combination meaning its behaviour; each variant's id names the
    combination (a flags= token), Case.from_id gives it back, and naming it selects exactly it; the rows carry
    the label in their flags column and the id in case_id; an unknown label is unsupported before run()."""
    from urllib.parse import quote

    from conformance.case import profiled as as_profiled
    from conformance.lifecycle import Target
    from conformance.runner import rows_for, variants

    t = Target(w.backend, None, "ready", meta=w.meta)
    seen = []
    for mode, update in (("train", True), ("infer", False), ("train", False), ("infer", True)):
        base = Case("rt", shape=(4, 3, 2, 2), mode=mode, update_running=update, backward=True)
        runs = [r for g in variants(base, [t]) for r in g.runs.get(t.label, ())]
        want = [c.label for c in w.meta.flags if c.means(as_profiled(base, w.meta.profile))]
        if not want:  # no combination means it: the backend's default run (no flags), judged unsupported there
            assert [r.flags for r in runs] == [""]
            continue
        assert [r.flags for r in runs] == want
        seen += want
        for r in runs:
            assert f"flags={quote(r.flags, safe='=')}" in r.id.split(",")
            named = Case.from_id(r.id)
            assert named == r
            assert [x for g in variants(named, [t]) for x in g.runs.get(t.label, ())] == [r]
        r = runs[-1]
        inputs = generate(r)
        rows = rows_for(r, t, w.run(r, inputs, ONCE, 120), reference(r, inputs), inputs)
        assert rows and {row["flags"] for row in rows} == {r.flags} and {row["case_id"] for row in rows} == {r.id}
    assert sorted(seen) == sorted(c.label for c in w.meta.flags if c.defined)  # every defined one
    bad = Case("rt", shape=(4, 3, 2, 2), flags="nosuch=1")
    reply = w.run(bad, generate(bad), ONCE, 60)
    assert reply.status == "unsupported" and "has no flag combination 'nosuch=1'" in reply.reason, reply
