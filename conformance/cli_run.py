"""`conformance run`: check everything the user gave, run the cases, write the report, give the verdict.

Everything the user gave is checked before the first case and before anything is written (a mistake: one line,
exit 2). Then the run writes its folder: run.json (partial until the end) and the journal, case by case, so an
interrupted run keeps every finished case and `--resume DIR` completes it.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import deviations, html_report, journal, memory, preflight
from . import meta as metadata
from .backends.base import TimingPolicy
from .cli import DEFAULT_BENCH, DEFAULT_CONVENTIONS, build_parser, cases_of, tune_note, tune_of
from .compare import THRESHOLDS
from .errors import ReportError, UserError
from .files import atomic_write
from .lifecycle import discover, release_probes, select_targets
from .progress import Progress
from .report import ArraysWriter, write
from .runner import run_cases
from .status import UNEXPECTED
from .verdict import judge
from .worker import peak_rss_mib


@dataclass(frozen=True)
class Plan:
    """A run, checked and ready: what to run on what, and where its report goes."""

    args: object  # the parsed options (of the original command, for --resume)
    argv: list
    suite: str  # the suite's name, or "--case"
    all_ids: list  # every case of the suite, finished ones included
    cases: list  # the cases left to run
    done: list  # ids of the cases a resumed run already has
    known: list  # the known deviations
    conventions: object
    bench: object
    record_history: bool
    infos: list
    targets: list
    warnings: list
    tune: dict
    resuming: bool  # --resume: the folder, its run.json and journal are kept

    @property
    def out(self) -> Path:
        return self.args.out


def _check_memory(args, cases, targets) -> None:
    """Refuse, before the first case, a case that would not fit in the memory available (memory.py)."""
    ready = [t for t in targets if t.state == "ready"]
    limit = None if args.memory_limit is None else memory.parse_size(args.memory_limit)
    try:
        memory.check(
            cases,
            limit_bytes=limit,
            source="conformance run",
            targets=max(len(ready), 1),
            frameworks=sum(t.is_framework for t in ready),
        )
    except UserError:
        release_probes(targets)
        raise


def _resume(args) -> tuple[list[str], list[str], bool]:
    """For --resume DIR: the original argv (out forced to DIR), the ids of the cases its journal holds, and
    whether its report is whole (run.json says complete and results.csv holds every journal row). What is done
    is what is on disk (journal.jsonl), never what run.json or results.csv say."""
    run_dir = args.resume
    try:
        meta = json.loads((run_dir / "run.json").read_text())
        argv = list(meta["argv"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"not a run directory ({exc})".splitlines()[0], source="--resume", field=str(run_dir)) from None
    if not (run_dir / journal.NAME).is_file():
        raise UserError(
            f"no {journal.NAME} (the rows of a run, written as its cases finish): nothing to resume from",
            source="--resume",
            field=str(run_dir),
        )
    rows, done, _ = journal.read(run_dir)
    try:
        whole = meta.get("partial") is False and len(pd.read_csv(run_dir / "results.csv")) == len(rows)
    except (OSError, ValueError, pd.errors.ParserError):
        whole = False
    if "--out" in argv:
        argv[argv.index("--out") + 1] = str(run_dir)
    else:
        argv += ["--out", str(run_dir)]
    return argv, done, whole


def _plan(args, argv) -> Plan:
    """Check everything the user gave (a mistake: UserError) and discover the targets; nothing is written."""
    done: list[str] = []
    resuming = args.resume is not None
    if resuming:
        argv, done, whole = _resume(args)
        args = build_parser().parse_args(argv)
    overrides = tune_of(args)
    suite_label, cases, warnings = cases_of(args)
    all_ids = [c.id for c in cases]
    cases = [c for c in cases if c.id not in set(done)]
    if resuming and not cases and whole:
        raise UserError("this run is complete: nothing to resume", source="--resume", field=str(args.out))
    preflight.writable_dir(args.out)
    if args.deviations != str(deviations.DEFAULT_PATH) and not Path(args.deviations).is_file():
        raise UserError(f"no such file {args.deviations!r}", source="--deviations")
    known = deviations.load(args.deviations)
    conventions, note_c = preflight.conventions_file(args.conventions, DEFAULT_CONVENTIONS)
    bench, note_b = preflight.bench_file(args.bench, DEFAULT_BENCH)
    warnings += [n for n in (note_c, note_b) if n]
    record_history = not history_disabled(args.history)
    if record_history:
        _history().check(args.history)
    infos = discover(args.backend, keep=True)
    targets = select_targets(infos, args.device, explicit=bool(args.backend))
    if not targets:
        why = "; ".join(f"{i.name}: {i.reason}" for i in infos)
        raise UserError("no backend is available: " + why, source="conformance run")
    warnings += list(dict.fromkeys(n for i in infos for n in i.meta.notes))
    _check_memory(args, cases, targets)
    return Plan(
        args,
        argv,
        suite_label,
        all_ids,
        cases,
        done,
        known,
        conventions,
        bench,
        record_history,
        infos,
        targets,
        warnings,
        overrides,
        resuming,
    )


def _start_record(plan: Plan) -> metadata.RunMeta:
    """The run's folder and its run.json, partial (a resumed run keeps its own)."""
    args = plan.args
    meta = metadata.collect(
        plan.argv,
        plan.suite,
        plan.infos,
        plan.targets,
        THRESHOLDS,
        argv=plan.argv,
        partial=True,
        sut_requested=not args.backend or "opencl" in args.backend,
        allow_empty=args.allow_empty,
        tune=plan.tune,
    )
    try:
        plan.out.mkdir(parents=True, exist_ok=True)
        if not plan.resuming:
            preflight.clear_run_files(plan.out)
            atomic_write(plan.out / "run.json", meta.to_json())
    except OSError as exc:
        release_probes(plan.targets)
        raise ReportError.of(plan.out, exc) from None
    except ReportError:
        release_probes(plan.targets)
        raise
    return meta


def _execute(plan: Plan) -> tuple[list, dict, dict, tuple]:
    """Run the cases, each finished case's rows in the journal before the next starts (known deviations applied);
    SIGTERM stops it like Ctrl-C. Returns the rows, the cases that ran, run_cases' state and when it started."""
    args, targets = plan.args, plan.targets
    policy = TimingPolicy(max_repeats=args.repeats, min_repeats=min(3, args.repeats), budget_s=args.time_budget)
    log = journal.Journal(plan.out, fresh=not plan.resuming)
    seen: dict = {}
    state: dict = {}

    def classify(case_rows, case_seen):  # versions are known once the workers have started
        deviations.apply(case_rows, case_seen, {t.backend: t.version for t in targets}, plan.known)

    previous = signal.signal(signal.SIGTERM, _terminate)
    started = (time.monotonic(), metadata.cpu_stall_s())
    try:
        rows = run_cases(
            plan.cases,
            targets,
            policy=policy,
            timeout_s=args.timeout,
            on_arrays=ArraysWriter(plan.out) if args.keep_arrays else None,
            progress=Progress(len(plan.cases)),
            seen=seen,
            state=state,
            classify=classify,
            record=log.append,
            rounds=args.rounds,
            retimed=log.retime,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.close()
    return rows, seen, state, started


def _finish_record(plan: Plan, meta: metadata.RunMeta, started: tuple, finished: list) -> metadata.RunMeta:
    """The record at the end: what ran on what now (the workers' versions, floors), how long, what finished."""
    done = [i for i in plan.all_ids if i in set(finished)]
    workers = {t.label: t.peak_rss_mib for t in plan.targets if t.peak_rss_mib}
    own = peak_rss_mib()
    now = metadata.collect(plan.argv, plan.suite, plan.infos, plan.targets, THRESHOLDS)
    return dataclasses.replace(
        now,
        argv=meta.argv,
        sut_requested=meta.sut_requested,
        allow_empty=meta.allow_empty,
        tune=meta.tune,
        elapsed_s=time.monotonic() - started[0],
        warnings=plan.warnings,
        done_cases=done,
        machine_load=metadata.busy_measure(started),
        partial=len(done) < len(plan.all_ids),
        peak_rss_mib={"main": own, "workers": workers, "upper_bound_total": own + sum(workers.values())},
    )


def cmd_run(args, argv) -> int:
    plan = _plan(args, argv)
    print(
        f"suite {plan.suite}: {len(plan.cases)} cases on "
        + ", ".join(t.label for t in plan.targets)
        + (f" (resuming: {len(plan.done)} done)" if plan.done else "")
        + tune_note(plan.tune),
        file=sys.stderr,
    )
    meta = _start_record(plan)
    rows, seen, state, started = _execute(plan)
    # again over this session's rows: a row already classified stays; this pass finds entries that match none
    plan.warnings.extend(deviations.apply(rows, seen, {t.backend: t.version for t in plan.targets}, plan.known))
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)
    every_row, finished, _ = journal.read(plan.out)  # the report is what is on disk
    df, meta = write(plan.out, every_row, _finish_record(plan, meta, started, finished))
    record = meta.as_dict()
    _after_report(plan, df, record)
    verdict = judge(df, record, allow_empty=plan.args.allow_empty)
    code = 130 if state["interrupted"] else (verdict.code if not meta.partial else max(verdict.code, 1))
    _print_outcome(plan, df, meta, verdict, code)
    return code


def _print_outcome(plan: Plan, df: pd.DataFrame, meta: metadata.RunMeta, verdict, code: int) -> None:
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    if plan.args.format == "json":
        bad = df[df["status"].isin(UNEXPECTED)] if len(df) else df
        columns = ["case_id", "target", "vs", "output", "status", "reason"]
        print(
            json.dumps(
                {
                    "exit_code": code,
                    "verdict": verdict.line(meta.partial),
                    "notes": list(verdict.notes),
                    "partial": meta.partial,
                    "report_dir": str(plan.out),
                    "rows": len(df),
                    "counts": counts,
                    "unexpected": bad[columns].to_dict("records") if len(bad) else [],
                },
                default=str,
            )
        )
        return
    note = ""
    if meta.partial:
        note = (
            f" (INCOMPLETE: {len(meta.done_cases)} of {len(plan.all_ids)} cases finished: "
            f"conformance run --resume {plan.out})"
        )
    print(
        f"{verdict.line(meta.partial)}: {len(df)} rows"
        + "".join(f", {k} {v}" for k, v in sorted(counts.items()))
        + "".join(f"; {n}" for n in verdict.notes)
        + f"; report in {plan.out}/summary.md{note}"
    )


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a run like Ctrl-C: every finished row is written, marked partial


def history_disabled(url) -> bool:
    try:
        from .history import disabled
    except ImportError:  # no SQLAlchemy: nothing can be recorded
        return True
    return disabled(url)


def _history():
    from . import history

    return history


def _after_report(plan: Plan, df, meta: dict) -> None:
    """report.html, then the run in the history store. A store that fails now (a full disk, a lost server) costs
    a warning line, not the verdict: the rows are safe in the run folder and can be recorded later."""
    out = plan.out
    html_report.write(out, df, meta, conventions=plan.conventions, bench=plan.bench)
    if not plan.record_history:
        return
    try:
        run_id = _history().record(df, meta, str(out), url=plan.args.history)
    except (ReportError, UserError) as exc:
        print(
            f"warning: {exc}; the run's rows are in {out} (record them later: conformance history --record {out})",
            file=sys.stderr,
        )
        return
    print(f"recorded as run {run_id} in the history store", file=sys.stderr)
