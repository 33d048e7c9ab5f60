"""`conformance compare`, `conformance history` and `conformance devices-table`: the history store's commands.

Registered by cli.py through add_commands(subparsers); each handler takes the parsed args and returns an
exit code. The history module (and so SQLAlchemy) is imported only when a command runs, so the commands exist (and
say what to install) even where SQLAlchemy is missing.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from .errors import UserError
from .preflight import number, path_arg
from .regress import DEFAULTS
from .report import md_code, md_table

HISTORY_HELP = "history store: SQLAlchemy URL or SQLite file (default: $CONFORMANCE_HISTORY or reports/history.sqlite)"


def add_commands(sub) -> None:
    c = sub.add_parser(
        "compare",
        help="compare two runs: new failures, fixes, error growth, timing regressions; exit 1 on a regression",
    )
    c.add_argument("base", metavar="BASE", help="run id, run directory, 'latest' or 'previous'")
    c.add_argument("new", metavar="NEW", help="run id, run directory, 'latest' or 'previous'")
    c.add_argument("--history", metavar="URL", help=HISTORY_HELP)
    c.add_argument(
        "--device",
        metavar="SUBSTRING",
        help="latest/previous among runs with such a target; compare only those targets",
    )
    c.add_argument("--suite", help="latest/previous among runs of this suite (default for BASE: NEW's suite)")
    c.add_argument(
        "--error-factor",
        type=number(low=1, low_open=True),
        default=DEFAULTS["error_factor"],
        help="error growth factor that flags (default 4)",
    )
    c.add_argument(
        "--min-time-ratio",
        type=number(low=1),
        default=DEFAULTS["min_time_ratio"],
        help="median and minimum time ratio a timing regression must exceed (default 1.3)",
    )
    c.add_argument(
        "--unrecorded-ratio",
        type=number(low=1),
        default=DEFAULTS["unrecorded_ratio"],
        help="... and, for a pair the history holds no drift of, this ratio (default 2)",
    )
    c.add_argument(
        "--min-time-ms",
        type=number(low=0),
        default=DEFAULTS["min_time_ms"],
        help="times are judged only from this many ms (default 1) ...",
    )
    c.add_argument(
        "--floor-factor",
        type=number(low=0),
        default=DEFAULTS["floor_factor"],
        help="... and from this many times the target's launch floor (default 20)",
    )
    c.add_argument(
        "--busy",
        type=number(low=0, high=1),
        default=DEFAULTS["busy"],
        help="judge no time when a run's machine had a task waiting for a CPU more than this share of the run "
        "(default 0.5)",
    )
    c.add_argument("--out", type=path_arg, metavar="FILE.md", help="also write the markdown here")
    c.set_defaults(func=cmd_compare)
    h = sub.add_parser("history", help="list recorded runs, or the trend of one case on one backend")
    h.add_argument("--history", metavar="URL", help=HISTORY_HELP)
    h.add_argument("--suite", help="only runs of this suite")
    h.add_argument("--case", metavar="ID", help="trend of this case id (needs --backend)")
    h.add_argument("--backend", metavar="B", help="backend of the trend")
    h.add_argument("--device", metavar="D", help="only targets containing this")
    h.add_argument("--plot", type=path_arg, metavar="FILE.png|svg", help="write the trend plot")
    h.add_argument(
        "--record",
        type=path_arg,
        metavar="DIR",
        help="record the run in DIR (a `conformance run --out` folder) in the store, e.g. after the store failed",
    )
    h.set_defaults(func=cmd_history)
    d = sub.add_parser("devices-table", help="the newest run of a suite on every device recorded, side by side")
    d.add_argument("--history", metavar="URL", help=HISTORY_HELP)
    d.add_argument("--suite", help="suite (default: the newest run's)")
    d.add_argument("--out", type=path_arg, metavar="FILE.md", help="also write the markdown here")
    d.set_defaults(func=cmd_devices_table)


def _history():
    try:
        from . import history
    except ImportError as exc:
        raise UserError(
            f"the history store needs SQLAlchemy ({exc}): python3 -m pip install sqlalchemy", source="history"
        ) from None
    return history


def _write(path: Path | None, text: str) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror}", source="--out") from None


def _only_device(df: pd.DataFrame, device: str | None) -> pd.DataFrame:
    return df if not device else df[df["target"].astype(str).str.lower().str.contains(device.lower(), regex=False)]


def cmd_compare(args) -> int:
    from . import regress, regress_report

    history = _history()
    new_df, new_meta, new_label = history.resolve(args.new, args.history, args.device, suite=args.suite)
    # `previous latest`: the run before the newest one *of the same suite*, unless --suite says otherwise
    suite = args.suite or (new_meta.get("suite") if args.base in ("latest", "previous") else None)
    base_df, base_meta, base_label = history.resolve(args.base, args.history, args.device, suite=suite)
    drift = _drift(history, args.history, new_meta, args.busy)
    result = regress.compare(
        _only_device(base_df, args.device),
        _only_device(new_df, args.device),
        base_meta=base_meta,
        new_meta=new_meta,
        drift=drift,
        error_factor=args.error_factor,
        min_time_ratio=args.min_time_ratio,
        min_time_ms=args.min_time_ms,
        floor_factor=args.floor_factor,
        busy=args.busy,
        unrecorded_ratio=args.unrecorded_ratio,
    )
    text = regress_report.markdown(result, base_label, new_label)
    print(text, end="")
    _write(args.out, text)
    return 1 if regress.regression_flag(result) else 0


def _drift(history, url, new_meta: dict, busy: float) -> dict:
    """Run-to-run drift of each (case, target) in the history before the new run (same suite, same machine)."""
    host = new_meta.get("host") or {}
    try:
        where = history.url_of(url)
    except UserError:  # --history none: no store
        return {}
    if where.startswith("sqlite:///") and not Path(where[len("sqlite:///") :]).is_file():
        return {}  # no store yet: a comparison of two run folders creates none
    from .drift import timing_drift

    return timing_drift(url, new_meta.get("suite"), host.get("name"), until=new_meta.get("started"), busy=busy)


def cmd_history(args) -> int:
    history = _history()
    if args.record is not None:
        df, meta = history.read_dir(args.record)
        if meta.get("partial"):
            raise UserError(
                f"{str(args.record)!r} holds an incomplete run: complete it with conformance run --resume",
                source="--record",
            )
        run_id = history.record(df, meta, str(args.record), url=args.history)
        print(f"recorded {md_code(args.record)} as run {md_code(run_id)} in {md_code(history.url_of(args.history))}")
        return 0
    if args.case is None:
        if args.backend or args.plot:
            raise UserError("--backend and --plot go with --case ID", source="conformance history")
        listed = history.runs(args.history, suite=args.suite, target=args.device)
        rows = [
            [
                r.run_id,
                r.started,
                r.suite,
                r.machine,
                str(r.git_commit or "")[:12] + (" partial" if r.partial else ""),
                ", ".join(r.targets),
                " ".join(f"{k} {v}" for k, v in sorted(r.counts.items())),
            ]
            for r in listed.itertuples()
        ]
        print(md_table(["run", "started", "suite", "machine", "commit", "targets", "counts (vs oracle)"], rows))
        print(f"\n{len(listed)} run(s) in {md_code(history.url_of(args.history))}")
        return 0
    if not args.backend:
        raise UserError("--case needs --backend", source="conformance history")
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".svg"):
        raise UserError(f"--plot must end in .png or .svg, not {str(args.plot)!r}", source="--plot")
    df = history.trend(args.case, args.backend, args.device, args.history)
    wide = trend_table(df)
    print(
        f"case {md_code(args.case)} on {md_code(args.backend)}: "
        "norm_err per output and median time per run, oldest first\n"
    )
    print(md_table(list(wide.columns), wide.values.tolist()))
    if args.plot is not None:
        plot_trend(df, args.plot, title=f"{args.case[:80]} on {args.backend}")
        print(f"\nplot written to {md_code(args.plot)}")
    return 0


def trend_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, target): started, commit, then norm_err per output, then time_ms_median."""
    keys = ["started", "run_id", "target"]
    norm = df.pivot_table(index=keys, columns="output", values="norm_err", aggfunc="first", sort=False)
    norm.columns = [f"norm_err {c}" for c in norm.columns]
    rest = df.groupby(keys, sort=False).agg(
        commit=("git_commit", "first"),
        time_ms_median=("time_ms_median", "first"),
        status=("status", lambda s: ",".join(sorted(set(s)))),
    )
    wide = rest.join(norm).reset_index()
    wide["commit"] = wide["commit"].astype(str).str[:12]
    return wide


def _series(df: pd.DataFrame) -> tuple[list[str], dict, dict]:
    """Run labels (x) and {label: [y per run]} for norm_err per (target, output) and time per target."""
    runs = list(dict.fromkeys(df["run_id"]))
    xs = {r: i for i, r in enumerate(runs)}
    started = df.drop_duplicates("run_id").set_index("run_id")["started"].astype(str)
    labels = [f"{started[r][:16]}" for r in runs]
    err, tim = {}, {}
    for (target, output), g in df.groupby(["target", "output"], sort=True):
        ys = [math.nan] * len(runs)
        for r, v in zip(g["run_id"], g["norm_err"]):
            ys[xs[r]] = v
        err[f"{target} {output}"] = ys
    for target, g in df.drop_duplicates(["run_id", "target"]).groupby("target", sort=True):
        ys = [math.nan] * len(runs)
        for r, v in zip(g["run_id"], g["time_ms_median"]):
            ys[xs[r]] = v
        tim[target] = ys
    return labels, err, tim


def plot_trend(df: pd.DataFrame, path: Path, title: str = "") -> None:
    labels, err, tim = _series(df)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if path.suffix.lower() == ".png":
            raise UserError(
                "a .png plot needs matplotlib (python3 -m pip install matplotlib); .svg works without it",
                source="--plot",
            ) from None
        path.write_text(svg_trend(labels, err, tim, title))
        return
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name, ys in err.items():
        a.plot(range(len(labels)), ys, marker="o", label=name)
    for name, ys in tim.items():
        b.plot(range(len(labels)), ys, marker="o", label=name)
    finite = [v for ys in err.values() for v in ys if math.isfinite(v)]
    if finite and max(finite) > 100:  # a failure dwarfs the passing values: log above 1
        a.set_yscale("symlog", linthresh=1.0)
    a.set_ylabel("norm_err")
    b.set_ylabel("median time (ms)")
    a.set_title(title, fontsize=9)
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    b.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def svg_trend(labels: list[str], err: dict, tim: dict, title: str = "") -> str:
    """The trend plot as a plain SVG: two panels (norm_err, median time), one polyline per series."""
    w, ph, left, top = 900, 260, 70, 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{2 * ph + 120}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="20">{html.escape(title)}</text>',
    ]
    n = max(len(labels), 1)
    x_of = lambda i: left + (w - left - 230) * (i / (n - 1) if n > 1 else 0.5)
    for k, (name, series) in enumerate((("norm_err", err), ("median time (ms)", tim))):
        y0 = top + k * (ph + 30)
        vals = [v for ys in series.values() for v in ys if isinstance(v, (int, float)) and math.isfinite(v)]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        # called only within this iteration; the defaults bind this panel's y0, lo and hi explicitly
        y_of = lambda v, y0=y0, lo=lo, hi=hi: y0 + ph - (v - lo) / (hi - lo) * ph
        out.append(f'<rect x="{left}" y="{y0}" width="{w - left - 230}" height="{ph}" fill="none" stroke="#999"/>')
        out.append(f'<text x="5" y="{y0 + 12}">{html.escape(name)}</text>')
        out.append(f'<text x="5" y="{y0 + 28}">{hi:.3g}</text><text x="5" y="{y0 + ph}">{lo:.3g}</text>')
        for j, (label, ys) in enumerate(series.items()):
            color = COLORS[j % len(COLORS)]
            pts = [(x_of(i), y_of(v)) for i, v in enumerate(ys) if isinstance(v, (int, float)) and math.isfinite(v)]
            if pts:
                out.append(
                    f'<polyline fill="none" stroke="{color}" points="'
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                    + '"/>'
                )
                out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in pts]
            out.append(f'<text x="{w - 220}" y="{y0 + 12 + 13 * j}" fill="{color}">{html.escape(label[-40:])}</text>')
    for i, label in enumerate(labels):
        out.append(
            f'<text x="{x_of(i):.1f}" y="{2 * ph + 90}" font-size="9" text-anchor="end" '
            f'transform="rotate(-45 {x_of(i):.1f} {2 * ph + 90})">{html.escape(label)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def cmd_devices_table(args) -> int:
    from . import regress_cross

    history = _history()

    listed = history.runs(args.history, suite=args.suite)
    if not len(listed):
        raise UserError(
            f"no runs{f' of suite {args.suite!r}' if args.suite else ''} in history {history.url_of(args.history)}",
            source="conformance devices-table",
        )
    suite = args.suite or listed["suite"].iloc[0]
    listed = listed[listed["suite"] == suite]
    newest: dict[str, str] = {}  # target -> newest run that has it (listed is newest first)
    for r in listed.itertuples():
        for t in r.targets:
            newest.setdefault(t, r.run_id)
    dfs, sources = {}, []
    loaded: dict[str, tuple] = {}
    for target, run_id in sorted(newest.items()):
        if run_id not in loaded:
            loaded[run_id] = history.load_run(run_id, args.history)
        df, meta = loaded[run_id]
        rows = df[df["target"] == target]
        if len(rows):
            dfs[target] = rows
            sources.append([target, run_id, meta.get("started", ""), (meta.get("host") or {}).get("name", "")])
    text = regress_cross.cross_device_markdown(dfs, title=f"Suite {md_code(suite)} on every device recorded")
    text += (
        "\n## Sources (newest run per target)\n\n" + md_table(["target", "run", "started", "machine"], sources) + "\n"
    )
    print(text, end="")
    _write(args.out, text)
    return 0
