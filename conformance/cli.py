"""`conformance run` and `conformance list`. A user mistake is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
from pathlib import Path

import pandas as pd

from . import deviations
from . import suite as suites
from .backends.base import TimingPolicy
from .case import Case
from .compare import THRESHOLDS, UNEXPECTED
from .errors import UserError
from .generate import load_npz
from .progress import Progress
from .report import ArraysWriter, write
from .runner import DEFAULT_TIMEOUT_S, discover, select_targets, run_cases
from .worker import peak_rss_mib
from . import meta as metadata


REPORTS = Path(__file__).resolve().parents[1] / "reports"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other user error
        raise UserError(message, source=self.prog)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="conformance", description="BatchNorm conformance: OpenCL kernels and frameworks against a float64 oracle.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run a suite (or single cases) on every backend and device, write a report")
    r.add_argument("--suite", default="smoke", help="suite name in cases/ or a path to a .toml file (default: smoke)")
    r.add_argument("--case", action="append", metavar="ID", help="run only this case id (repeatable); ignores --suite")
    r.add_argument("--backend", action="append", metavar="NAME", help="only this backend (repeatable; default: every available one)")
    r.add_argument("--device", metavar="SUBSTRING", help="only OpenCL devices whose key, name, platform or vendor contains this")
    r.add_argument("--out", default="reports/latest", type=Path, help="report directory (default: reports/latest)")
    r.add_argument("--keep-arrays", action="store_true", help="also write arrays/<case_id>.npz with inputs and every output")
    r.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds one case may take on one target before it is killed")
    r.add_argument("--repeats", type=int, default=TimingPolicy.max_repeats, help="at most this many timed repeats per case and target")
    r.add_argument("--time-budget", type=float, default=TimingPolicy.budget_s, help="seconds of timed repeats per case and target (after 3)")
    r.add_argument("--deviations", default=str(deviations.DEFAULT_PATH), help="known-deviations file (default: cases/known_deviations.toml)")
    r.add_argument("--resume", metavar="DIR", help="complete an interrupted run in DIR: run only the cases it lacks")
    r.add_argument("--format", choices=["text", "json"], default="text", help="what to print at the end (json: for machines)")
    r.add_argument("--history", default=None, metavar="URL",
                   help="history store: an SQLAlchemy URL (default: reports/history.sqlite); 'none' to record nothing")
    r.add_argument("--conventions", default=str(REPORTS / "conventions" / "conventions.json"),
                   help="conventions.json to show in report.html (from conformance conventions --out)")
    r.add_argument("--bench", default=str(REPORTS / "bench" / "bench.csv"),
                   help="bench.csv whose copy-bandwidth fractions report.html shows (from conformance bench)")
    b = sub.add_parser("bench", help="time forward/backward on every backend side by side, against the memory-copy roofline")
    b.add_argument("--suite", default="perf", help="suite name or path (default: perf)")
    b.add_argument("--case", action="append", metavar="ID", help="only this case id (repeatable)")
    b.add_argument("--backend", action="append", metavar="NAME", help="only this backend (repeatable)")
    b.add_argument("--device", metavar="SUBSTRING", help="only OpenCL devices matching this")
    b.add_argument("--out", default="reports/bench", type=Path, help="output directory (default: reports/bench)")
    b.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    b.add_argument("--repeats", type=int, default=5, help="timed repeats per round (default 5)")
    b.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    cv = sub.add_parser("conventions", help="measure each installed framework's conventions; print documented vs observed")
    cv.add_argument("--backend", action="append", metavar="NAME", help="only this framework backend (repeatable)")
    cv.add_argument("--out", type=Path, help="also write conventions.md and conventions.json here")
    ls = sub.add_parser("list", help="list cases, backends or devices")
    ls.add_argument("what", choices=["cases", "backends", "devices", "suites"])
    ls.add_argument("--suite", default="smoke")
    for module in EXTRA_COMMANDS:  # each adds its sub-parsers with set_defaults(func=handler)
        try:
            importlib.import_module(module).add_commands(sub)
        except ImportError:
            pass
    return p


# Modules that add sub-commands: add_commands(subparsers); each handler takes args and returns an exit code.
EXTRA_COMMANDS = ("conformance.cli_history",)


def _cases(args) -> tuple[str, list[Case], list[str]]:
    if args.case:
        cases = [Case.from_id(cid) for cid in args.case]
        label, warnings = "--case", []
    else:
        s = suites.load(args.suite)
        label, cases, warnings = s.name, s.cases, s.warnings
    for c in cases:
        if c.inputs is not None:
            load_npz(c)  # a bad file is a user error before anything runs
    return label, cases, warnings


def _resume(args) -> tuple[list[str], list[dict], list[str]]:
    """For --resume DIR: the original argv (out forced to DIR), the rows already there, the finished case ids."""
    run_dir = Path(args.resume)
    try:
        meta = json.loads((run_dir / "run.json").read_text())
        old = pd.read_csv(run_dir / "results.csv", keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise UserError(f"not a run directory ({exc})".splitlines()[0], source="--resume", field=str(run_dir)) from None
    if not meta.get("partial"):
        raise UserError("this run is complete: nothing to resume", source="--resume", field=str(run_dir))
    argv = [a for a in meta["argv"]]
    if "--out" in argv:
        argv[argv.index("--out") + 1] = str(run_dir)
    else:
        argv += ["--out", str(run_dir)]
    return argv, old.to_dict("records"), meta.get("done_cases", [])


def cmd_run(args, argv) -> int:
    prior_rows, done = [], []
    if args.resume:
        argv, prior_rows, done = _resume(args)
        args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.timeout <= 0 or args.time_budget < 0:
        raise UserError("--repeats must be >= 1, --timeout > 0 and --time-budget >= 0", source="conformance run")
    suite_label, cases, warnings = _cases(args)
    all_ids = [c.id for c in cases]
    cases = [c for c in cases if c.id not in set(done)]
    if args.deviations != str(deviations.DEFAULT_PATH) and not Path(args.deviations).is_file():
        raise UserError(f"no such file {args.deviations!r}", source="--deviations")
    known = deviations.load(args.deviations)
    infos = discover(args.backend, keep=True)
    targets = select_targets(infos, args.device, explicit=bool(args.backend))
    if not targets:
        raise UserError("no backend is available: " + "; ".join(f"{i.name}: {i.reason}" for i in infos), source="conformance run")
    policy = TimingPolicy(max_repeats=args.repeats, min_repeats=min(3, args.repeats), budget_s=args.time_budget)
    print(f"suite {suite_label}: {len(cases)} cases on " + ", ".join(t.label for t in targets)
          + (f" (resuming: {len(done)} done)" if done else ""), file=sys.stderr)
    t0 = time.monotonic()
    out = args.out
    on_arrays = ArraysWriter(out) if args.keep_arrays else None
    seen: dict = {}
    state: dict = {}

    def versions():  # known once the workers have started
        return {t.backend: t.meta.get("version") or getattr(t.device, "driver", "") for t in targets}

    def classify(case_rows, case_seen):
        deviations.apply(case_rows, case_seen, versions(), known)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        rows = run_cases(cases, targets, policy=policy, timeout_s=args.timeout, on_arrays=on_arrays,
                         progress=Progress(len(cases)), seen=seen, state=state, classify=classify)
    finally:
        signal.signal(signal.SIGTERM, previous)
    # again over every row: a row already classified stays as it is; this pass finds the entries that match none
    warnings += deviations.apply(rows, seen, versions(), known)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    meta = metadata.collect(argv, suite_label, infos, targets, THRESHOLDS)
    meta.update(elapsed_s=time.monotonic() - t0, warnings=warnings, argv=argv,
                done_cases=[i for i in all_ids if i in set(done) | set(state["done"])])
    meta["partial"] = len(meta["done_cases"]) < len(all_ids)
    workers = {t.label: t.meta.get("peak_rss_mib") for t in targets if t.meta.get("peak_rss_mib")}
    own = peak_rss_mib()
    meta["peak_rss_mib"] = {"main": own, "workers": workers, "upper_bound_total": own + sum(workers.values())}
    df = write(out, prior_rows + rows, meta)
    _after_report(args, out, df, meta)
    bad = df[df["status"].isin(UNEXPECTED)]
    counts = df["status"].value_counts().to_dict()
    code = 130 if state["interrupted"] else (1 if len(bad) else 0)
    if args.format == "json":
        print(json.dumps({"exit_code": code, "partial": meta["partial"], "report_dir": str(out), "rows": len(df),
                          "counts": counts, "unexpected": bad[["case_id", "target", "vs", "output", "status", "reason"]].to_dict("records")},
                         default=str))
    else:
        note = f" (INTERRUPTED after {len(meta['done_cases'])} of {len(all_ids)} cases: conformance run --resume {out})" if meta["partial"] else ""
        print(f"{len(df)} rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; report in {out}/summary.md{note}")
    return code


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a run like Ctrl-C: every finished row is written, marked partial


def _after_report(args, out: Path, df, meta) -> None:
    """report.html and the history store, where those modules are present."""
    try:
        from . import html_report
    except ImportError:
        html_report = None
    if html_report is not None:
        conv = Path(args.conventions) if args.conventions else None
        bench = Path(args.bench) if args.bench else None
        html_report.write(out, df, meta, conventions=json.loads(conv.read_text()) if conv and conv.is_file() else None,
                          bench=pd.read_csv(bench) if bench and bench.is_file() else None)
    if args.history != "none":
        try:
            from . import history
        except ImportError:
            return
        run_id = history.record(df, meta, str(out), url=args.history)
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
                state = "available" if info.reason is None else f"unavailable: {info.reason}"
                devs = ", ".join(d.key for d in info.devices if d.key)
                print(f"{info.name:10s} {state}" + (f" [{devs}]" if devs else ""))
            else:
                for d in info.devices:
                    if d.key:
                        print(f"{info.name}@{d.key}: {d.name} | {d.platform} | {d.vendor} | driver {d.driver} | "
                              f"{d.version} | fp16 {'yes' if d.fp16 else 'no'} | fp64 {'yes' if d.fp64 else 'no'}")
    return 0


def cmd_bench(args, argv) -> int:
    from . import bench, bench_report

    if args.rounds < 1 or args.repeats < 1:
        raise UserError("--rounds and --repeats must be >= 1", source="conformance bench")
    label, cases, _ = _cases(args)
    infos = discover(args.backend, keep=True)
    targets = select_targets(infos, args.device, explicit=bool(args.backend))
    if not targets:
        raise UserError("no backend is available", source="conformance bench")
    print(f"bench {label}: {len(bench.problems(cases))} problems on " + ", ".join(t.label for t in targets), file=sys.stderr)
    rows, rss = bench.run_bench(cases, targets, args.rounds, args.repeats, args.timeout, Progress(len(bench.problems(cases))))
    meta = metadata.collect(argv, label, infos, targets, THRESHOLDS)
    meta.update(rounds=args.rounds, repeats=args.repeats)
    df = bench_report.write(args.out, rows, meta, rss)
    print(bench_report.summary(df).to_string(index=False))
    print(f"{len(df)} rows; report in {args.out}/bench.md")
    return 0


def cmd_conventions(args) -> int:
    from . import conventions
    from .backends import FRAMEWORKS

    names = args.backend or FRAMEWORKS
    for n in names:
        if n not in FRAMEWORKS:
            raise UserError(f"{n!r} is not a framework backend (known: {', '.join(FRAMEWORKS)})", source="--backend")
    infos = discover(names)
    results = {}
    for info in infos:
        if info.reason is not None:
            print(f"{info.name}: unavailable ({info.reason})", file=sys.stderr)
            continue
        print(f"probing {info.name} ...", file=sys.stderr)
        results[info.name] = conventions.probe(info.name)
    if not results:
        raise UserError("no framework backend is available: " + "; ".join(f"{i.name}: {i.reason}" for i in infos), source="conformance conventions")
    text, mismatches = conventions.matrix(results)
    print(text)
    print(f"\n{mismatches} documented convention(s) not matching behaviour")
    if args.out:
        import json
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "conventions.md").write_text(text + "\n")
        (args.out / "conventions.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
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
    except BrokenPipeError:  # `conformance list cases | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
