"""Run cases on targets (a backend on a device), compare with the oracle and with the SUT, produce rows.

A framework runs each case under its own profile (its momentum direction, running-variance estimator and
extra statistic): the harness re-profiles the canonical case, and the oracle and the OpenCL SUT run that same
profiled case, so a framework row is compared with the oracle (`vs = oracle`) and with the SUT on every
OpenCL device (`vs = opencl@<device>`).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field

import numpy as np

from . import lifecycle, retime
from .backends.base import TimingPolicy
from .case import Case, profiled
from .compare import compare
from .generate import generate
from .lifecycle import DEFAULT_TIMEOUT_S, Target
from .oracle import reference
from .progress import Progress
from .worker import Reply

UNTOUCHED = ("x", "gamma", "beta")


def kernel_columns(target) -> dict:
    """results.csv / bench.csv columns family and tuning: the OpenCL kernel family and the parameters the
    target's device runs with (`k=v;k=v`); empty for every other backend."""
    extra = getattr(target.device, "extra", None) or {}
    if target.backend != "opencl":
        return {"family": "", "tuning": ""}
    return {"family": extra.get("family", ""), "tuning": extra.get("tuning", "")}


def expected_dtype(case: Case, output: str) -> str:
    return case.dtype if output in ("y", "dx", "x_after", "dy_after") else case.param_dtype


def bytes_moved(case: Case) -> int:
    """Minimal traffic of what is timed: x read and y written, plus x, dy read and dx written for backward."""
    n = int(np.prod(case.shape)) * np.dtype(case.dtype).itemsize
    return n * (2 + (3 if case.backward else 0))


def _case_columns(case: Case) -> dict:
    return {
        "case_id": case.id,
        "case": case.name,
        "dtype": case.dtype,
        "shape": "x".join(map(str, case.shape)),
        "axis": case.axis,
        "mode": case.mode,
        "backward": case.backward,
        "fix_gamma": case.fix_gamma,
        "running_var": case.running_var,
        "stats": case.stats,
        "momentum_dir": case.momentum_dir,
        "update_running": case.updates_running,
        "act": case.act,
        "inplace": case.inplace,
        "flags": case.flags,
        "fill": case.fill.kind,
        **({"inputs_root": case.inputs_root or "."} if case.inputs is not None else {}),
    }


def timing_columns(result, case: Case) -> dict:
    cols = {
        "time_ms_median": np.nan,
        "time_ms_min": np.nan,
        "time_ms_p10": np.nan,
        "time_ms_p90": np.nan,
        "kernel_ms_median": np.nan,
        "kernel_ms_min": np.nan,
        "bytes": bytes_moved(case),
        "gbps": np.nan,
        "repeats": 0,
        "rounds": 0,
    }
    if result is not None and result.wall_ms:
        med = statistics.median(result.wall_ms)
        cols.update(
            time_ms_median=med,
            time_ms_min=min(result.wall_ms),
            repeats=len(result.wall_ms),
            rounds=1,
            time_ms_p10=float(np.percentile(result.wall_ms, 10)),
            time_ms_p90=float(np.percentile(result.wall_ms, 90)),
            gbps=cols["bytes"] / (med * 1e-3) / 1e9 if med > 0 else np.nan,
        )
        if result.kernel_ms:
            cols.update(kernel_ms_median=statistics.median(result.kernel_ms), kernel_ms_min=min(result.kernel_ms))
    return cols


def _quantity(target: Target, output: str) -> str:
    """The canonical quantity an output holds: itself, or what the docs say an extra output holds."""
    return target.meta.extra_outputs.get(output, output)


def rows_for(case: Case, target: Target, reply: Reply, ref, inputs=None) -> list[dict]:
    """Rows of one target on one case against the oracle: every output, every extra output, the inputs."""
    base = {
        **_case_columns(case),
        "backend": target.backend,
        "device": getattr(target.device, "key", None) or "",
        "target": target.label,
        "vs": "oracle",
        **kernel_columns(target),
    }
    if not reply.ok:
        timing = timing_columns(None, case)
        return [
            {**base, "output": out, "status": reply.status, "reason": f"{reply.reason} [{case.id}]", **timing}
            for out in case.outputs
        ]
    result = reply.result
    timing = timing_columns(result, case)
    rows = []
    for out in list(case.outputs) + [k for k in result.outputs if k not in case.outputs]:
        q = _quantity(target, out)
        if out not in result.outputs:
            r = {"output": out, "status": "unsupported", "reason": f"{target.backend} returns no {out}"}
        elif q not in ref.values:
            r = {
                "output": out,
                "status": "error",
                "reason": f"{target.backend} returned {out!r}, which maps to no known quantity",
            }
        else:
            r = compare(out, result.outputs[out], ref.values[q], ref.scales[q], case, expected_dtype(case, q))
            r["got_dtype"] = str(np.asarray(result.outputs[out]).dtype)
        if r["reason"]:
            r["reason"] += f" [{case.id}]"
        rows.append({**base, **r, **timing})
    for name in UNTOUCHED:
        if inputs is not None and name in result.untouched and not (case.inplace and name == "x"):  # x_after instead
            rows.append({**base, **_untouched_row(name, result.untouched[name], getattr(inputs, name), case), **timing})
    return rows


def _untouched_row(name: str, after, before: np.ndarray, case: Case) -> dict:
    after = np.asarray(after)
    same = after.shape == before.shape and np.array_equal(
        after.astype(np.float64), before.astype(np.float64), equal_nan=True
    )
    if same:
        return {"output": f"input:{name}", "status": "pass", "reason": ""}
    changed = (
        int(np.count_nonzero(after.reshape(-1) != before.reshape(-1))) if after.shape == before.shape else after.size
    )
    return {
        "output": f"input:{name}",
        "status": "fail",
        "reason": f"input:{name}: modified by the call, {changed} of {before.size} elements changed [{case.id}]",
    }


def vs_sut_rows(case: Case, target: Target, result, ref, sut_outputs: dict[str, dict]) -> list[dict]:
    """A framework's outputs against each OpenCL device's outputs for the same profiled case."""
    rows = []
    base = {
        **_case_columns(case),
        "backend": target.backend,
        "device": "",
        "target": target.label,
        **kernel_columns(target),
    }
    timing = timing_columns(result, case)
    for sut_label, sut in sut_outputs.items():
        for out, got in result.outputs.items():
            q = _quantity(target, out)
            if q not in sut or q not in ref.scales:
                continue
            r = compare(
                out, got, sut[q], ref.scales[q], case, expected_dtype(case, q)
            )  # taken to float64 a box at a time
            if r["reason"]:
                r["reason"] += f" [{case.id}]"
            rows.append({**base, "vs": sut_label, **r, **timing})
    return rows


def run_cases(
    cases: list[Case],
    targets: list[Target],
    *,
    policy: TimingPolicy,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_arrays=None,
    progress: Progress | None = None,
    seen: dict | None = None,
    state: dict | None = None,
    classify=None,
    record=None,
    rounds: int = 1,
    retimed=None,
) -> list[dict]:
    """All rows for cases x targets. on_arrays(case, inputs, {label: outputs}) receives each case's arrays;
    `seen` (case id -> Case) collects every profiled case that produced rows; classify(rows, cases) may change
    a finished case's rows in place before they are counted (the known deviations: so the progress line counts
    xfail where the report will); record(case_id, rows) puts a finished case's rows on disk (the journal) before
    the next case starts, and an exception it raises ends the run. A KeyboardInterrupt (Ctrl-C, or SIGTERM turned
    into one by the CLI) stops the run between two rows: the rows of every finished case are returned, the case
    in flight is dropped, and `state` gets done = [ids of finished cases] and interrupted = True. After the last
    case, the pairs compare may judge are timed in rounds 2..rounds (retime.py), each new best passed to
    retimed(case_id, target, columns)."""
    rows: list[dict] = []
    counts: dict[str, int] = {}
    seen = {} if seen is None else seen
    state = {} if state is None else state
    state.update(done=[], interrupted=False)
    try:
        lifecycle.start(targets)
        lifecycle.measure_floors(targets, policy, timeout_s)
        for case in cases:
            case_rows, case_seen = _run_case(case, targets, policy, timeout_s, on_arrays)
            if classify is not None:
                classify(case_rows, case_seen)
            if record is not None:
                record(case.id, case_rows)
            rows.extend(case_rows)  # only a finished case lands
            seen.update(case_seen)
            state["done"].append(case.id)
            for r in case_rows:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            if progress is not None:
                progress.step(case.name, counts)
        retime.run_rounds(
            rows,
            targets,
            seen,
            policy,
            timeout_s,
            rounds,
            timing_columns,
            record=retimed,
            progress=None if progress is None else progress.note,
        )
    except KeyboardInterrupt:
        state["interrupted"] = True
    finally:
        lifecycle.stop(targets, interrupted=state["interrupted"])
        if progress is not None:
            progress.close()
    return rows


@dataclass
class Group:
    """One variant of a case as the oracle and the SUT see it (a profile), and the framework runs under it: each
    framework target's flag combinations that mean the case's behaviour (a variant each, told apart by its
    `flags` field only, so one oracle value and one SUT run serve them all)."""

    case: Case
    canonical: bool  # the case itself: the non-framework peers (numpy) run it too
    runs: dict = field(default_factory=dict)  # target label -> [flagged variants of `case`]

    def schedule(self, targets: list[Target]):
        """(target, case it runs) in run order: the SUT first (the frameworks are compared with its outputs), the
        numpy peer on the canonical variant only, each framework under each of its flag combinations here."""
        for t in sorted(targets, key=lambda t: not t.is_sut):
            if t.is_framework:
                for run_case in self.runs.get(t.label, ()):
                    yield t, run_case
            elif t.is_sut or self.canonical:
                yield t, self.case


def variants(case: Case, targets: list[Target]) -> list[Group]:
    """What `run`, `bench`, `conventions` and the pytest plugin run for one case: the canonical variant, then each
    framework profile's, each with the flag combinations of every framework target that mean the case's behaviour
    (every one its page gives that meaning; none named: the backend's default, and its own verdict). A case that
    names a flag combination (case.flags, e.g. from `--case ID`) runs on the targets that have it."""
    base = dataclasses.replace(case, flags="") if case.flags else case
    groups = {base.id: Group(base, canonical=True)}
    for t in targets:
        if not t.is_framework:
            continue
        pc = profiled(base, t.meta.profile)
        combos = t.meta.flags
        if case.flags:
            labels = [c.label for c in combos if c.label == case.flags]
        else:
            labels = [c.label for c in combos if c.means(pc)] or [""]
        runs = [dataclasses.replace(pc, flags=lab) for lab in labels]
        if case.flags and (not runs or runs[0] != case):
            continue  # the named combination is not this target's, or not under its profile
        groups.setdefault(pc.id, Group(pc, canonical=False)).runs[t.label] = runs
    return list(groups.values())


def _run_case(case: Case, targets: list[Target], policy, timeout_s, on_arrays):
    """Rows of one canonical case: its own variant and each framework's profiled one (under each flag
    combination)."""
    inputs = generate(case)  # profiles and flags never change the inputs: one draw serves every variant
    rows, seen = [], {}
    for group in variants(case, targets):
        new, arrays, ran = _run_variant(group, targets, inputs, policy, timeout_s, keep=on_arrays is not None)
        seen.update(ran)
        rows.extend(new)
        if on_arrays is not None:
            on_arrays(group.case, inputs, arrays)
    return rows, seen


def _run_variant(group: Group, targets, inputs, policy, timeout_s, keep: bool = False):
    """Rows and arrays of one (possibly profiled) case on its schedule (Group.schedule). The outputs are held
    beyond their rows only where needed: the SUT's (the frameworks are compared with them), and every target's
    with keep (--keep-arrays, keyed by target, and target[flags] for a flag combination)."""
    ref = reference(group.case, inputs)
    rows, arrays, sut, ran = [], {}, {}, {}
    for t, run_case in group.schedule(targets):
        reply = lifecycle.ask(t, run_case, inputs, policy, timeout_s)
        rows.extend(rows_for(run_case, t, reply, ref, inputs))
        ran[run_case.id] = run_case
        if reply.ok:
            if keep:
                arrays[t.label + (f"[{run_case.flags}]" if run_case.flags else "")] = reply.outputs
            if t.is_sut:
                sut[t.label] = reply.outputs
            elif t.is_framework:
                rows.extend(vs_sut_rows(run_case, t, reply.result, ref, sut))
    return rows, arrays, ran
