"""`conformance run` and `conformance list`. A user mistake is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd

from . import deviations, html_report, journal, memory, preflight
from . import meta as metadata
from . import suite as suites
from .backends.base import TimingPolicy
from .case import Case
from .compare import THRESHOLDS
from .errors import ReportError, UserError
from .generate import check_npz
from .lifecycle import DEFAULT_TIMEOUT_S, discover, release_probes, select_targets, tuned
from .preflight import number, path_arg
from .progress import Progress
from .report import ArraysWriter, atomic_write, write
from .runner import run_cases
from .status import UNEXPECTED
from .verdict import judge
from .worker import peak_rss_mib

REPORTS = Path(__file__).resolve().parents[1] / "reports"
DEFAULT_CONVENTIONS = str(REPORTS / "conventions" / "conventions.json")
DEFAULT_BENCH = str(REPORTS / "bench" / "bench.csv")
TIMEOUT = number(low=0, low_open=True, high=7 * 24 * 3600.0)  # a week: a finite number a timer can take


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other user error
        raise UserError(message, source=self.prog)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="conformance", description="BatchNorm conformance: OpenCL kernels and frameworks against a float64 oracle."
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run a suite (or single cases) on every backend and device, write a report")
    r.add_argument("--suite", default="smoke", help="suite name in cases/ or a path to a .toml file (default: smoke)")
    r.add_argument("--case", action="append", metavar="ID", help="run only this case id (repeatable); ignores --suite")
    r.add_argument(
        "--inputs-root",
        type=path_arg,
        metavar="DIR",
        help="the folder a --case id's inputs file is relative to (the suite's folder; default: here)",
    )
    r.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help="only this backend (repeatable; default: every available one)",
    )
    r.add_argument(
        "--device", metavar="SUBSTRING", help="only OpenCL devices whose key, name, platform or vendor contains this"
    )
    r.add_argument("--out", default="reports/latest", type=path_arg, help="report directory (default: reports/latest)")
    r.add_argument(
        "--keep-arrays", action="store_true", help="also write arrays/<case_id>.npz with inputs and every output"
    )
    r.add_argument(
        "--timeout",
        type=TIMEOUT,
        default=DEFAULT_TIMEOUT_S,
        help="seconds one case may take on one target before it is killed",
    )
    r.add_argument(
        "--repeats",
        type=number(int, low=1),
        default=TimingPolicy.max_repeats,
        help="at most this many timed repeats per case and target",
    )
    r.add_argument(
        "--rounds",
        type=number(int, low=1),
        default=3,
        help="timing rounds of the pairs compare may judge (a median of 0.5 ms or more): the best round "
        "is kept, the rounds spread over the run (1: one round only)",
    )
    r.add_argument(
        "--time-budget",
        type=number(low=0),
        default=TimingPolicy.budget_s,
        help="seconds of timed repeats per case and target (after 3)",
    )
    r.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="refuse cases estimated to need more (e.g. 12G; default: the memory available less 10 %%)",
    )
    r.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 even when nothing was checked (no case selected, or the system under test ran on no device)",
    )
    r.add_argument(
        "--deviations",
        default=str(deviations.DEFAULT_PATH),
        help="known-deviations file (default: cases/known_deviations.toml)",
    )
    r.add_argument(
        "--resume", metavar="DIR", type=path_arg, help="complete an interrupted run in DIR: run only the cases it lacks"
    )
    r.add_argument(
        "--format", choices=["text", "json"], default="text", help="what to print at the end (json: for machines)"
    )
    r.add_argument(
        "--history",
        default=None,
        metavar="URL",
        help="history store: an SQLAlchemy URL (default: reports/history.sqlite); 'none' to record nothing",
    )
    r.add_argument(
        "--conventions",
        default=DEFAULT_CONVENTIONS,
        help="conventions.json to show in report.html (from conformance conventions --out)",
    )
    r.add_argument(
        "--bench",
        default=DEFAULT_BENCH,
        help="bench.csv whose copy-bandwidth fractions report.html shows (from conformance bench)",
    )
    r.add_argument("--tune", action="append", metavar="KEY=VALUE", help=TUNE_HELP)
    b = sub.add_parser(
        "bench", help="time forward/backward on every backend side by side, against the memory-copy roofline"
    )
    b.add_argument("--suite", default="perf", help="suite name or path (default: perf)")
    b.add_argument("--case", action="append", metavar="ID", help="only this case id (repeatable)")
    b.add_argument(
        "--inputs-root", type=path_arg, metavar="DIR", help="the folder a --case id's inputs file is relative to"
    )
    b.add_argument("--backend", action="append", metavar="NAME", help="only this backend (repeatable)")
    b.add_argument("--device", metavar="SUBSTRING", help="only OpenCL devices matching this")
    b.add_argument("--out", default="reports/bench", type=path_arg, help="output directory (default: reports/bench)")
    b.add_argument("--rounds", type=number(int, low=1), default=5, help="interleaved rounds (default 5)")
    b.add_argument("--repeats", type=number(int, low=1), default=5, help="timed repeats per round (default 5)")
    b.add_argument("--timeout", type=TIMEOUT, default=DEFAULT_TIMEOUT_S)
    b.add_argument("--tune", action="append", metavar="KEY=VALUE", help=TUNE_HELP)
    cv = sub.add_parser(
        "conventions", help="measure each installed framework's conventions; print documented vs observed"
    )
    cv.add_argument("--backend", action="append", metavar="NAME", help="only this framework backend (repeatable)")
    cv.add_argument("--out", type=path_arg, help="also write conventions.md and conventions.json here")
    ls = sub.add_parser("list", help="list cases, backends or devices")
    ls.add_argument("what", choices=["cases", "backends", "devices", "suites"])
    ls.add_argument("--suite", default="smoke")
    for module in EXTRA_COMMANDS:  # each adds its sub-parsers with set_defaults(func=handler)
        importlib.import_module(module).add_commands(sub)
    return p


TUNE_HELP = (
    "override an OpenCL tuning entry for this run (repeatable), e.g. family=gpu, wg=64, nt_bytes=none: "
    "keys of conformance/backends/opencl_tuning.py; values int, float, true/false, none or text"
)


def _tune(args) -> dict:
    """The run's --tune overrides, checked before anything runs (a bad one: one line, exit 2), and handed to every
    worker started after this (lifecycle.tuned: an environment variable; main() restores it when the command ends)."""
    from .backends import opencl_tuning

    try:
        overrides = opencl_tuning.parse_overrides(getattr(args, "tune", None))
    except ValueError as exc:
        raise UserError(str(exc), source="--tune") from None
    os.environ.pop(opencl_tuning.ENV, None)
    os.environ.update(opencl_tuning.env_for(overrides))
    return overrides


# Modules that add sub-commands: add_commands(subparsers); each handler takes args and returns an exit code.
EXTRA_COMMANDS = ("conformance.cli_history", "conformance.constraints")


def _cases(args) -> tuple[str, list[Case], list[str]]:
    if args.case:
        root = str(args.inputs_root) if args.inputs_root is not None else None
        cases = [Case.from_id(cid, inputs_root=root) for cid in args.case]
        label, warnings = "--case", []
    else:
        s = suites.load(args.suite)
        label, cases, warnings = s.name, s.cases, s.warnings
    for c in cases:
        if c.inputs is not None:
            check_npz(c)  # a bad file is a user error before anything runs (headers only: nothing decompressed)
    return label, cases, warnings


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


def cmd_run(args, argv) -> int:
    done: list[str] = []
    resuming = args.resume is not None
    if resuming:
        argv, done, whole = _resume(args)
        args = build_parser().parse_args(argv)
    # Everything the user gave is checked before the first case and before anything is written (exit 2).
    overrides = _tune(args)
    suite_label, cases, warnings = _cases(args)
    all_ids = [c.id for c in cases]
    cases = [c for c in cases if c.id not in set(done)]
    if resuming and not cases and whole:
        raise UserError("this run is complete: nothing to resume", source="--resume", field=str(args.out))
    out = args.out
    preflight.writable_dir(out)
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
        raise UserError(
            "no backend is available: " + "; ".join(f"{i.name}: {i.reason}" for i in infos), source="conformance run"
        )
    warnings += list(dict.fromkeys(n for i in infos for n in i.meta.notes))
    _check_memory(args, cases, targets)
    policy = TimingPolicy(max_repeats=args.repeats, min_repeats=min(3, args.repeats), budget_s=args.time_budget)
    print(
        f"suite {suite_label}: {len(cases)} cases on "
        + ", ".join(t.label for t in targets)
        + (f" (resuming: {len(done)} done)" if done else "")
        + _tune_note(overrides),
        file=sys.stderr,
    )
    t0 = time.monotonic()
    meta = metadata.collect(argv, suite_label, infos, targets, THRESHOLDS)
    meta.update(
        argv=argv,
        partial=True,
        sut_requested=not args.backend or "opencl" in args.backend,
        allow_empty=args.allow_empty,
        tune=overrides,
    )
    # From here on the run writes: its folder, run.json (partial until the end) and the journal, case by case.
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not resuming:
            preflight.clear_run_files(out)
            atomic_write(out / "run.json", json.dumps(meta, indent=2, default=str).encode())
    except OSError as exc:
        release_probes(targets)
        raise ReportError.of(out, exc) from None
    except ReportError:
        release_probes(targets)
        raise
    log = journal.Journal(out, fresh=not resuming)
    on_arrays = ArraysWriter(out) if args.keep_arrays else None
    seen: dict = {}
    state: dict = {}

    def versions():  # known once the workers have started
        return {t.backend: t.version for t in targets}

    def classify(case_rows, case_seen):
        deviations.apply(case_rows, case_seen, versions(), known)

    previous = signal.signal(signal.SIGTERM, _terminate)
    busy_from = (time.monotonic(), metadata.cpu_stall_s())
    try:
        rows = run_cases(
            cases,
            targets,
            policy=policy,
            timeout_s=args.timeout,
            on_arrays=on_arrays,
            progress=Progress(len(cases)),
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
    # again over this session's rows: a row already classified stays as it is; this pass finds the entries that match none
    warnings += deviations.apply(rows, seen, versions(), known)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    every_row, finished, _ = journal.read(out)  # the report is what is on disk
    meta = metadata.collect(argv, suite_label, infos, targets, THRESHOLDS) | {
        k: meta[k] for k in ("argv", "sut_requested", "allow_empty", "tune")
    }
    meta.update(
        elapsed_s=time.monotonic() - t0,
        warnings=warnings,
        done_cases=[i for i in all_ids if i in set(finished)],
        machine_load=metadata.busy_measure(busy_from),
    )
    meta["partial"] = len(meta["done_cases"]) < len(all_ids)
    workers = {t.label: t.peak_rss_mib for t in targets if t.peak_rss_mib}
    own = peak_rss_mib()
    meta["peak_rss_mib"] = {"main": own, "workers": workers, "upper_bound_total": own + sum(workers.values())}
    df = write(out, every_row, meta)
    _after_report(args, out, df, meta, conventions, bench, record_history)
    verdict = judge(df, meta, allow_empty=args.allow_empty)
    code = 130 if state["interrupted"] else (verdict.code if not meta["partial"] else max(verdict.code, 1))
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    bad = df[df["status"].isin(UNEXPECTED)] if len(df) else df
    if args.format == "json":
        print(
            json.dumps(
                {
                    "exit_code": code,
                    "verdict": verdict.line(meta["partial"]),
                    "notes": list(verdict.notes),
                    "partial": meta["partial"],
                    "report_dir": str(out),
                    "rows": len(df),
                    "counts": counts,
                    "unexpected": bad[["case_id", "target", "vs", "output", "status", "reason"]].to_dict("records")
                    if len(bad)
                    else [],
                },
                default=str,
            )
        )
    else:
        note = (
            f" (INCOMPLETE: {len(meta['done_cases'])} of {len(all_ids)} cases finished: conformance run --resume {out})"
            if meta["partial"]
            else ""
        )
        print(
            f"{verdict.line(meta['partial'])}: {len(df)} rows"
            + "".join(f", {k} {v}" for k, v in sorted(counts.items()))
            + "".join(f"; {n}" for n in verdict.notes)
            + f"; report in {out}/summary.md{note}"
        )
    return code


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


def _after_report(args, out: Path, df, meta, conventions, bench, record_history: bool) -> None:
    """report.html, then the run in the history store. A store that fails now (a full disk, a lost server) costs
    a warning line, not the verdict: the rows are safe in the run folder and can be recorded later."""
    html_report.write(out, df, meta, conventions=conventions, bench=bench)
    if not record_history:
        return
    try:
        run_id = _history().record(df, meta, str(out), url=args.history)
    except (ReportError, UserError) as exc:
        print(
            f"warning: {exc}; the run's rows are in {out} (record them later: conformance history --record {out})",
            file=sys.stderr,
        )
        return
    print(f"recorded as run {run_id} in the history store", file=sys.stderr)


def cmd_list(args) -> int:
    if args.what == "suites":
        for name in suites.suite_names():
            print(name)
    elif args.what == "cases":
        for c in suites.load(args.suite).cases:
            print(c.id)
    else:
        infos = discover()
        for info in infos:
            if args.what == "backends":
                print(backend_line(info))
            else:
                for d in info.devices:
                    if d.key:
                        print(
                            f"{info.name}@{d.key}: {d.name} | {d.platform} | {d.vendor} | driver {d.driver} | "
                            f"{d.version} | fp16 {'yes' if d.fp16 else 'no'} | fp64 {'yes' if d.fp64 else 'no'}"
                        )
    return 0


def backend_line(info) -> str:
    """One line of `conformance list backends`: available or why not, the devices of its targets, and for a framework
    without an accelerator the one-line reason its CPU device records (extra["devices_note"]). A framework's CPU
    target (key None, labelled by the backend's name alone) shows as 'cpu' where the backend says anything about
    accelerators: `torch      available [cpu, cuda:0]`, `torch      available [cpu]; no accelerator: ...`."""
    if info.reason is not None:
        return f"{info.name:10s} unavailable: {info.reason}"
    note = next((d.extra["devices_note"] for d in info.devices if d.extra.get("devices_note")), "")
    keys = [d.key for d in info.devices if d.key]
    if note or (keys and any(d.key is None for d in info.devices)):
        keys = ["cpu" if d.key is None else d.key for d in info.devices]
    return f"{info.name:10s} available" + (f" [{', '.join(keys)}]" if keys else "") + (f"; {note}" if note else "")


def cmd_bench(args, argv) -> int:
    from . import bench, bench_report

    overrides = _tune(args)
    label, cases, _ = _cases(args)
    preflight.writable_dir(args.out)
    infos = discover(args.backend, keep=True)
    targets = select_targets(infos, args.device, explicit=bool(args.backend))
    if not targets:
        raise UserError("no backend is available", source="conformance bench")
    print(
        f"bench {label}: {len(bench.problems(cases))} problems on "
        + ", ".join(t.label for t in targets)
        + _tune_note(overrides),
        file=sys.stderr,
    )
    rows, rss = bench.run_bench(
        cases, targets, args.rounds, args.repeats, args.timeout, Progress(len(bench.problems(cases)))
    )
    meta = metadata.collect(argv, label, infos, targets, THRESHOLDS)
    meta.update(rounds=args.rounds, repeats=args.repeats, tune=overrides)
    df = bench_report.write(args.out, rows, meta, rss)
    print(bench_report.summary(df).to_string(index=False))
    print(f"{len(df)} rows; report in {args.out}/bench.md" + _tune_note(overrides))
    return 0


def _tune_note(overrides: dict) -> str:
    return (" with --tune " + " ".join(f"{k}={v}" for k, v in overrides.items())) if overrides else ""


def cmd_conventions(args) -> int:
    from . import conventions
    from .backends import FRAMEWORKS

    names = args.backend or FRAMEWORKS
    if args.out is not None:
        preflight.writable_dir(args.out)
    for n in names:
        if n not in FRAMEWORKS:
            raise UserError(f"{n!r} is not a framework backend (known: {', '.join(FRAMEWORKS)})", source="--backend")
    infos = discover(names)
    results = {}
    for info in infos:
        if info.reason is not None:
            print(f"{info.name}: unavailable ({info.reason})", file=sys.stderr)
            continue
        for dev in info.devices:  # each target its own column: the CPU one keeps the backend's name
            label = f"{info.name}@{dev.key}" if dev.key else info.name
            print(f"probing {label} ...", file=sys.stderr)
            results[label] = conventions.probe(info.name, dev.key)
    if not results:
        raise UserError(
            "no framework backend is available: " + "; ".join(f"{i.name}: {i.reason}" for i in infos),
            source="conformance conventions",
        )
    text, mismatches = conventions.matrix(results)
    flags_text, flag_bad = conventions.flag_matrix(results)
    if flags_text:
        text += "\n\n## Flag combinations: documented vs seen\n\n" + flags_text
    print(text)
    print(
        f"\n{mismatches} documented convention(s) not matching behaviour; {flag_bad} documented flag combination(s) "
        "doing something else"
    )
    if args.out:
        import json

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "conventions.md").write_text(text + "\n")
        (args.out / "conventions.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with tuned(None):  # a command's --tune (set by _tune for its workers) ends with it
            args = build_parser().parse_args(argv)
            if args.command == "run":
                return cmd_run(args, argv)
            if args.command == "bench":
                return cmd_bench(args, argv)
            if args.command == "conventions":
                return cmd_conventions(args)
            if args.command == "list":
                return cmd_list(args)
            return args.func(args)  # commands registered by other modules (see build_parser)
    except UserError as exc:
        print(f"conformance: error: {exc}", file=sys.stderr)
        return 2
    except ReportError as exc:  # the output could not be written (a full disk ...): what is safe is said
        print(f"conformance: error: {exc}", file=sys.stderr)
        return 4
    except BrokenPipeError:  # `conformance list cases | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
