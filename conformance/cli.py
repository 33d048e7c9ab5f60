"""`conformance run` and `conformance list`. A user mistake is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from . import deviations, preflight
from . import meta as metadata
from . import suite as suites
from .backends.base import TimingPolicy
from .case import Case
from .compare import THRESHOLDS
from .errors import ReportError, UserError
from .files import atomic_write
from .generate import check_npz
from .lifecycle import DEFAULT_TIMEOUT_S, discover, select_targets, tuned
from .preflight import number, path_arg
from .progress import Progress

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


def tune_of(args) -> dict:
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


def cases_of(args) -> tuple[str, list[Case], list[str]]:
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

    overrides = tune_of(args)
    label, cases, _ = cases_of(args)
    preflight.writable_dir(args.out)
    infos = discover(args.backend, keep=True)
    targets = select_targets(infos, args.device, explicit=bool(args.backend))
    if not targets:
        raise UserError("no backend is available", source="conformance bench")
    print(
        f"bench {label}: {len(bench.problems(cases))} problems on "
        + ", ".join(t.label for t in targets)
        + tune_note(overrides),
        file=sys.stderr,
    )
    rows, rss = bench.run_bench(
        cases, targets, args.rounds, args.repeats, args.timeout, Progress(len(bench.problems(cases)))
    )
    meta = metadata.collect(
        argv,
        label,
        infos,
        targets,
        THRESHOLDS,
        rounds=args.rounds,
        repeats=args.repeats,
        tune=overrides,
        peak_rss_mib=rss,
    )
    df = bench_report.write(args.out, rows, meta)
    print(bench_report.summary(df).to_string(index=False))
    print(f"{len(df)} rows; report in {args.out}/bench.md" + tune_note(overrides))
    return 0


def tune_note(overrides: dict) -> str:
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
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out / "conventions.md", text + "\n")
        atomic_write(args.out / "conventions.json", json.dumps(results, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with tuned(None):  # a command's --tune (set by _tune for its workers) ends with it
            args = build_parser().parse_args(argv)
            if args.command == "run":
                from .cli_run import cmd_run

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
