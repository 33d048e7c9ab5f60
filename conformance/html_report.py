"""report.html: one self-contained page per run (inline CSS and SVG, a few lines of plain JS; loads nothing).

html(df, meta, *, conventions=None, bench=None) -> str; write(out_dir, df, meta, conventions=None, bench=None) ->
out_dir/report.html, written atomically. df: results.csv; meta: run.json; conventions: conventions.json; bench:
bench.csv. Sections: what ran where; the pass matrix (case x target, worst status per cell); errors against the
oracle per output (norm_err, ulp@max, log scales, one dot per row); timings (GB/s; with bench.csv the fraction of
the memory-copy bandwidth); the conventions matrix; every row that did not pass, with its re-run command.
"""

from __future__ import annotations

import html as _html
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .compare import UNEXPECTED
from .report import atomic_write, kernel_header, rerun_command

SEVERITY = ("crash", "timeout", "error", "fail", "xpass", "xfail", "unsupported", "skip", "pass")  # worst first
COLORS = {
    "crash": "#111827",
    "timeout": "#7c3aed",
    "error": "#ea580c",
    "fail": "#dc2626",
    "xpass": "#db2777",
    "xfail": "#f59e0b",
    "unsupported": "#cbd5e1",
    "skip": "#94a3b8",
    "pass": "#16a34a",
}
OUTPUTS = ("y", "mean", "var", "invstd", "running_mean", "running_var", "dx", "dgamma", "dbeta", "x_after", "dy_after")
PALETTE = (
    "#2563eb",
    "#ea580c",
    "#059669",
    "#9333ea",
    "#dc2626",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
    "#7c2d12",
    "#1e3a8a",
)
MAX_LISTED = 300  # non-passing rows in the table
MAX_TIMED = 40  # cases in the timing chart of a run (the ones with the most bytes)
MAX_DOTS = 3000  # per error plot; beyond it each target's values are drawn as a histogram strip
_KEYS = {
    "dtype": "",
    "shape": "",
    "mode": "",
    "stats": "",
    "fill": "",
    "axis": "ax",
    "backward": "bwd",
    "fix_gamma": "fixg",
    "running_var": "",
    "momentum_dir": "mdir",
    "momentum": "mom",
    "seed": "s",
}
_VALS = {"float16": "f16", "float32": "f32", "float64": "f64", "unbiased": "unb", "biased": "bias"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;margin:0;background:#f8fafc}
main{max-width:1400px;margin:0 auto;padding:16px 24px 48px}h1{font-size:22px;margin:8px 0 4px}h3{font-size:15px;margin:12px 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}nav a{margin-right:14px;color:#2563eb;text-decoration:none}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}th{background:#f1f5f9}
th,td{border:1px solid #e5e7eb;padding:3px 7px;text-align:left;vertical-align:top}
code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}.muted{color:#6b7280;font-size:12px}
.chip{display:inline-block;white-space:nowrap;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;margin:1px 3px 1px 0}
.light{color:#1f2937}.verdict{font-size:16px;margin:6px 0 10px}.bad{color:#b91c1c;font-weight:600}.ok{color:#15803d;font-weight:600}
.meta td:first-child{font-weight:600;white-space:nowrap}.panels{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:8px}svg text{font-family:system-ui,sans-serif;fill:#374151}
td.mismatch{background:#fee2e2;color:#991b1b;font-weight:600}#notpass{table-layout:fixed;width:100%}#notpass td{overflow-wrap:anywhere}
circle.dot{fill-opacity:.55}""" + "".join(f".s-{s}{{fill:{c}}}" for s, c in COLORS.items())
JS = """document.getElementById('np-filter').addEventListener('input', function () {
  var q = this.value.toLowerCase();
  document.querySelectorAll('#notpass tbody tr').forEach(function (tr) {
    tr.style.display = tr.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none'; }); });"""


def e(v) -> str:
    """Escaped text; None and NaN are empty."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return _html.escape(f"{v:.4g}" if isinstance(v, float) else str(v), quote=True)


def _rank(status) -> int:
    return SEVERITY.index(status) if status in SEVERITY else SEVERITY.index("error")


def worst_status(statuses) -> str:
    return min(statuses, key=_rank)


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _svg(w, h, body, cls) -> str:
    return f'<svg class="{cls}" width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}">{"".join(body)}</svg>'


def _chip(status: str, text: str) -> str:
    light = " light" if status in ("unsupported", "skip", "xfail") else ""
    return f'<span class="chip{light}" style="background:{COLORS.get(status, "#6b7280")}">{e(text)}</span>'


def _chips(counts: dict) -> str:
    return "".join(_chip(s, f"{s} {n}") for s, n in sorted(counts.items(), key=lambda kv: _rank(kv[0])))


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in (
        "case_id",
        "target",
        "status",
        "output",
        "reason",
        "backend",
        "device",
        "vs",
        "threshold",
        "norm_err",
        "ulp_at_max",
        "time_ms_median",
        "gbps",
        "bytes",
    ):
        if col not in df.columns:
            df[col] = np.nan
    df["vs"] = df["vs"].where(df["vs"].notna(), "oracle")
    split = df["target"].astype(str).str.partition("@")  # rerun_command needs backend and device
    df["backend"] = df["backend"].where(df["backend"].notna(), split[0])
    df["device"] = df["device"].where(df["device"].notna() | (split[2] == ""), split[2])
    return df


def status_matrix(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """(cases x targets of the worst status, None where nothing ran; {(case_id, target): {status: count}})."""
    worst = df.assign(_r=df["status"].map(_rank)).groupby(["case_id", "target"], sort=False)["_r"].min()
    mat = worst.map(lambda r: SEVERITY[int(r)]).unstack("target")
    mat = mat.reindex(index=list(pd.unique(df["case_id"])), columns=list(pd.unique(df["target"])))
    mat = mat.astype(object).where(mat.notna(), None)
    counts: dict = {}
    for (cid, target, status), n in df.groupby(["case_id", "target", "status"], sort=False).size().items():
        counts.setdefault((cid, target), {})[status] = int(n)
    return mat, counts


def case_labels(ids) -> dict:
    """Short labels: the case name and only the fields that vary between the ids, abbreviated."""
    parsed = {
        cid: (str(cid).split(",")[0], dict(p.partition("=")[::2] for p in str(cid).split(",")[1:])) for cid in ids
    }
    keys = {k for _, fields in parsed.values() for k in fields}
    varying = {k for k in keys if len({fields.get(k) for _, fields in parsed.values()}) > 1}
    out = {}
    for cid, (name, fields) in parsed.items():
        bits = [name]
        for k, v in fields.items():
            if k in varying and not (k == "fix_gamma" and v == "0"):
                v, short = re.sub(r"[a-z_]+=", "", _VALS.get(v, v)), _KEYS.get(k, k)
                bits.append(
                    ("bwd" if v == "1" else "fwd")
                    if k == "backward"
                    else "fixg"
                    if k == "fix_gamma"
                    else f"{short}={v}"
                    if short
                    else v
                )
        out[cid] = _cut(" ".join(bits), 60)
    return out


def _header(df: pd.DataFrame, meta: dict, targets: list) -> str:
    host, rss = meta.get("host") or {}, meta.get("peak_rss_mib") or {}
    rows = [
        ("suite", meta.get("suite")),
        ("command", meta.get("command")),
        ("started", meta.get("started")),
        ("git commit", meta.get("git_commit")),
        ("host", f"{host.get('name', '')}: {host.get('cpu', '')}, {host.get('cores', '')} cores, {host.get('os', '')}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in (meta.get("packages") or {}).items())),
        ("thresholds (norm_err)", ", ".join(f"{k} {v}" for k, v in (meta.get("thresholds") or {}).items())),
    ]
    rows += kernel_header(meta)  # the OpenCL targets' kernel family and tuning, the run's --tune
    if meta.get("elapsed_s") is not None:
        rows.append(("elapsed", f"{meta['elapsed_s']:.1f} s"))
    if rss.get("upper_bound_total"):
        rows.append(
            (
                "peak memory",
                f"main {rss.get('main', 0):.0f} MiB, at most {rss['upper_bound_total']:.0f} MiB with workers",
            )
        )
    out = (
        ['<table class="meta">']
        + [f"<tr><td>{e(k)}</td><td><code>{e(v)}</code></td></tr>" for k, v in rows]
        + ["</table>"]
    )
    out.append(
        "<h3>Targets</h3><table><tr><th>target</th><th>device</th><th>vendor</th><th>platform</th><th>driver</th>"
        "<th>OpenCL</th><th>state / reason</th><th>results</th></tr>"
    )
    by_target = {t.get("target"): t for t in meta.get("targets") or []}
    for target in targets:
        t = by_target.get(target, {})
        d, state = t.get("device") or {}, " / ".join(str(x) for x in (t.get("state"), t.get("reason")) if x)
        cells = "".join(f"<td>{e(d.get(k))}</td>" for k in ("name", "vendor", "platform", "driver", "version"))
        out.append(
            f"<tr><td><code>{e(target)}</code></td>{cells}<td>{e(state)}</td>"
            f"<td>{_chips(df[df['target'] == target]['status'].value_counts().to_dict())}</td></tr>"
        )
    out.append("</table>")
    missing = [b for b in meta.get("backends") or [] if not b.get("available")]
    if missing:
        out.append(
            '<p class="muted">Unavailable backends: '
            + "; ".join(f"{e(b.get('name'))} ({e(b.get('reason'))})" for b in missing)
            + "</p>"
        )
    out += [f'<p class="muted">warning: {e(w)}</p>' for w in meta.get("warnings") or []]
    return "\n".join(out)


def _heatmap(df: pd.DataFrame, targets: list, labels: dict) -> str:
    mat, counts = status_matrix(df)
    mat, n, cases = mat.reindex(columns=targets), len(mat), list(mat.index)
    ch = 15 if n <= 60 else 12 if n <= 300 else 11 if n <= 1200 else 6  # row height; no labels below 9 px
    cw = 26 if len(targets) <= 4 else 16 if len(targets) <= 8 else 12
    font = min(ch - 2.5, 11)
    lab_w = 12 + 0.56 * font * max((len(v) for v in labels.values()), default=0) if ch >= 9 else 0
    longest = max((len(_cut(t, 28)) for t in targets), default=1)
    top, right = 20 + 4.6 * longest, 4 + 3.3 * longest  # room for the rotated target names
    cap = 150 if ch >= 9 else 400  # rows per panel at most; panels side by side, as many per line as fit in 1350 px
    fit = max(1, int(1350 // (lab_w + len(targets) * cw + right + 18)))
    per_panel = n if n <= cap else math.ceil(n / (fit * math.ceil(math.ceil(n / cap) / fit)))
    panels = []
    for start in range(0, n, per_panel):
        body = [
            f'<text x="{x:.1f}" y="{top - 6:.1f}" font-size="10" transform="rotate(-55 {x:.1f} {top - 6:.1f})"><title>{e(t)}</title>'
            f"{e(_cut(t, 28))}</text>"
            for t, x in ((t, lab_w + j * cw + cw / 2) for j, t in enumerate(targets))
        ]
        for i, cid in enumerate(cases[start : start + per_panel]):
            y = top + i * ch
            if lab_w:
                body.append(
                    f'<text x="{lab_w - 6:.0f}" y="{y + ch - 3:.1f}" font-size="{font:.1f}" text-anchor="end">'
                    f"<title>{e(cid)}</title>{e(labels[cid])}</text>"
                )
            for j, target in enumerate(targets):
                status = mat.at[cid, target]
                if status is not None:
                    c = sorted(counts.get((cid, target), {}).items(), key=lambda kv: _rank(kv[0]))
                    tip = f"{cid}\n{target}: {status}\n" + ", ".join(f"{s} {k}" for s, k in c)
                    body.append(
                        f'<rect class="cell" data-status="{e(status)}" x="{lab_w + j * cw + 1:.1f}" y="{y + 0.5}" width="{cw - 2}" '
                        f'height="{ch - 1}" fill="{COLORS.get(status, "#6b7280")}"><title>{e(tip)}</title></rect>'
                    )
        panels.append(
            _svg(lab_w + len(targets) * cw + right, top + min(per_panel, n - start) * ch + 4, body, "heatmap")
        )
    legend = _chips({s: int((mat == s).sum().sum()) for s in SEVERITY if (mat == s).any().any()})
    return (
        f'<p class="muted">{n} cases x {len(targets)} targets; each cell is coloured by the worst status of its rows '
        f"(crash &gt; timeout &gt; error &gt; fail &gt; xpass &gt; xfail &gt; unsupported &gt; skip &gt; pass); hover a cell "
        f'for the case id and the counts. Cells: {legend}</p><div class="panels" id="matrix-panels">{"".join(panels)}</div>'
    )


def _strip_panel(
    sub: pd.DataFrame, metric: str, rows: list, x0: float, w: float, y0: float, rh: float, thresholds
) -> list:
    """One log-scale strip plot: a row per target, a dot per result row (histogram strips when there are many)."""
    sub = sub[sub[metric].notna()]
    vals = sub[metric].to_numpy(float)
    pos = np.concatenate([vals[np.isfinite(vals) & (vals > 0)], np.asarray(thresholds, float)])
    lo, hi = (math.floor(math.log10(pos.min())), math.ceil(math.log10(pos.max()))) if len(pos) else (-1, 1)
    hi = max(hi, lo + 1)
    span, bottom = hi - lo + 1, y0 + rh * len(rows)  # one extra decade on the left holds the zeros

    def xpos(v):  # +Inf at the right edge
        return x0 + w * ((min(math.log10(v), hi) - lo + 1) / span if v > 0 else 0.0)

    body = [
        f'<text x="{x0 + w / 2:.0f}" y="{y0 - 8:.0f}" font-size="12" text-anchor="middle" font-weight="600">{e(metric)} (log scale)</text>'
    ]
    for k in range(lo - 1, hi + 1, max(1, math.ceil(span / 6))):
        x, lab = x0 + w * (k - lo + 1) / span, "0" if k == lo - 1 else {0: "1", 1: "10"}.get(k, f"1e{k}")
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{bottom}" stroke="#e5e7eb"/>'
            f'<text x="{x:.1f}" y="{bottom + 13:.0f}" font-size="10" text-anchor="middle">{lab}</text>'
        )
    for t in thresholds:
        body.append(
            f'<line class="threshold" x1="{xpos(t):.1f}" x2="{xpos(t):.1f}" y1="{y0 - 4}" y2="{bottom}" stroke="#dc2626" '
            f'stroke-dasharray="4 3"><title>threshold {t:g}</title></line>'
            f'<text x="{xpos(t) + 2:.1f}" y="{y0 + 6:.0f}" font-size="9" style="fill:#dc2626">{t:g}</text>'
        )
    bin_w = w / (span * 10)  # histogram strips: bins of 0.1 decade, height by sqrt(count), colour by the worst status
    for i, target in enumerate(rows):
        g = sub[sub["target"] == target]
        v, st, ids = g[metric].to_numpy(float), g["status"].tolist(), g["case_id"].tolist()
        xs, yc = [xpos(a) for a in v], y0 + rh * (i + 0.5)
        if len(sub) > MAX_DOTS:
            bins = np.floor((np.array(xs) - x0) / bin_w).astype(int)
            cmax = max(np.bincount(bins).max(), 1)
            for b in np.unique(bins):
                sel = bins == b
                hgt = (rh - 3) * math.sqrt(sel.sum() / cmax)
                body.append(
                    f'<rect x="{x0 + b * bin_w:.1f}" y="{yc - hgt / 2:.1f}" width="{bin_w:.1f}" height="{hgt:.1f}" opacity="0.8" '
                    f'fill="{COLORS.get(worst_status([s for s, k in zip(st, sel) if k]), "#6b7280")}">'
                    f"<title>{e(target)}: {int(sel.sum())} rows</title></rect>"
                )
        else:
            body += [
                f'<circle class="dot s-{e(s)}" cx="{x:.1f}" cy="{yc + ((k * 0.618034) % 1 - 0.5) * (rh - 6):.1f}" r="2.6"/>'
                for k, (x, s) in enumerate(zip(xs, st))
            ]
        if len(v):
            k = int(np.argmax(v))
            body.append(
                f'<circle cx="{xs[k]:.1f}" cy="{yc:.1f}" r="4.5" fill="none" stroke="#111827" stroke-width="1.3">'
                f"<title>worst {metric} {v[k]:.4g} ({e(st[k])}): {e(ids[k])}</title></circle>"
            )
    return body


def _error_plots(df: pd.DataFrame, targets: list) -> str:
    ora = df[(df["vs"] == "oracle") & df["norm_err"].notna()]
    present = set(ora["output"].dropna())
    outputs = [o for o in OUTPUTS if o in present] + sorted(
        o for o in present if o not in OUTPUTS and not str(o).startswith("input:")
    )
    cards = []
    lab_w, pw, gap, rh, top = 175, 205, 30, 20, 30
    for out in outputs:
        sub = ora[ora["output"] == out]
        rows = [t for t in targets if t in set(sub["target"])]
        body = [
            f'<text x="{lab_w - 8}" y="{top + rh * (i + 0.5) + 4:.0f}" font-size="10" text-anchor="end"><title>{e(t)}</title>'
            f"{e(_cut(t, 28))}</text>"
            for i, t in enumerate(rows)
        ]
        body += _strip_panel(
            sub, "norm_err", rows, lab_w, pw, top, rh, sorted(set(sub["threshold"].dropna().astype(float)))
        )
        body += _strip_panel(sub, "ulp_at_max", rows, lab_w + pw + gap, pw, top, rh, ())
        svg = _svg(lab_w + 2 * pw + gap + 20, top + rh * len(rows) + 22, body, "errplot")
        cards.append(
            f'<div class="card" id="err-{e(out)}"><h3>{e(out)} <span class="muted">{len(sub)} rows</span></h3>{svg}</div>'
        )
    return (
        '<p class="muted">Against the float64 oracle, one dot per row (coloured by status), the circled dot is each '
        "target's worst (hover it for the case); the left-most column holds exact results (0); the dashed line is the "
        f'pass threshold on norm_err.</p><div class="panels">{"".join(cards)}</div>'
    )


def _bars(groups: list, legend: list, ref: float | None, scale_max: float) -> str:
    """groups: [(label, title, [(target, value, text)])]; bar length is value / scale_max."""
    lab_w, bw, rh = 260, 560, 13
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(legend)}
    body, y = [], 6
    for label, title, bars in groups:
        body.append(
            f'<text x="0" y="{y + 11}" font-size="12" font-weight="600"><title>{e(title)}</title>{e(label)}</text>'
        )
        y += 16
        for target, value, text in bars:
            length = bw * min(value / scale_max, 1.0) if value == value and scale_max > 0 else 0
            body.append(
                f'<text x="{lab_w - 6}" y="{y + 10}" font-size="10" text-anchor="end">{e(_cut(target, 40))}</text>'
                f'<rect class="bar" x="{lab_w}" y="{y + 1}" width="{max(length, 1):.1f}" height="{rh - 3}" '
                f'fill="{colors.get(target, "#6b7280")}"><title>{e(target)}: {e(text)}</title></rect>'
                f'<text x="{lab_w + length + 5:.1f}" y="{y + 10}" font-size="10">{e(text)}</text>'
            )
            y += rh
        y += 8
    if ref is not None:
        x = lab_w + bw * ref / scale_max
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{y}" stroke="#111827" stroke-dasharray="4 3"/>'
            f'<text x="{x + 4:.1f}" y="12" font-size="10">memory copy</text>'
        )
    return _svg(lab_w + bw + 190, y, body, "timing")


def _of_traffic(r) -> str:
    """', 0.40 of its traffic' where the row's traffic-aware roofline differs from the minimal one (bench.csv)."""
    frac, copy = r.get("frac_of_traffic", np.nan), r.get("frac_of_copy", np.nan)
    try:
        frac, copy = float(frac), float(copy)
    except (TypeError, ValueError):
        return ""
    return f", {frac:.2f} of its traffic" if np.isfinite(frac) and not np.isclose(frac, copy) else ""


def _bench(bench: pd.DataFrame) -> str:
    out = [
        '<p class="muted">From bench.csv: bar length is the fraction of the device\'s measured memory-copy bandwidth '
        "on the same bytes (the dashed line, 1.0, is as fast as a copy); where the chosen kernels must move more "
        "(x read twice), the label also gives the fraction of that traffic-aware bound.</p>"
    ]
    legend, labels = list(pd.unique(bench["target"])), case_labels(pd.unique(bench["case_id"]))
    for phase, g in bench.groupby("phase", sort=False):
        groups = []
        for cid, gc in g.groupby("case_id", sort=False):
            bars = [
                (
                    r["target"],
                    float(r.get("frac_of_copy", np.nan)),
                    f"{r['time_ms_median']:.3g} ms, {r.get('gbps', np.nan):.3g} GB/s, {r.get('frac_of_copy', np.nan):.2f} of copy"
                    + _of_traffic(r)
                    if r["time_ms_median"] == r["time_ms_median"]
                    else _cut(f"no time: {r.get('reason', '')}", 90),
                )
                for _, r in gc.iterrows()
            ]
            groups.append((labels[cid], cid, bars))
        top = max(1.2, float(g["frac_of_copy"].max()) if g["frac_of_copy"].notna().any() else 0)
        out.append(f'<h3>{e(phase)}</h3><div class="card">{_bars(groups, legend, 1.0, top)}</div>')
    return "".join(out)


def _timing(df: pd.DataFrame, targets: list, labels: dict) -> str:
    t = df[(df["vs"] == "oracle") & df["time_ms_median"].notna()].drop_duplicates(["case_id", "target"])
    if not len(t):
        return '<p class="muted">No timings in this run.</p>'
    cases, note = list(pd.unique(t["case_id"])), ""
    if len(cases) > MAX_TIMED:
        keep = set(t.groupby("case_id")["bytes"].max().sort_values(ascending=False, kind="stable").index[:MAX_TIMED])
        cases, note = (
            [c for c in cases if c in keep],
            f" Showing the {MAX_TIMED} of {len(cases)} cases with the most bytes.",
        )
    metric = "gbps" if t["gbps"].notna().any() else "time_ms_median"
    groups = []
    for cid in cases:
        g = t[t["case_id"] == cid].set_index("target")
        groups.append(
            (
                labels.get(cid, cid),
                cid,
                [
                    (tg, float(g.at[tg, metric]), f"{g.at[tg, 'gbps']:.3g} GB/s, {g.at[tg, 'time_ms_median']:.3g} ms")
                    for tg in targets
                    if tg in g.index
                ],
            )
        )
    return (
        f'<p class="muted">From results.csv (the wall time of each timed call, median; GB/s on the minimal bytes). '
        f"Bar length: {'GB/s' if metric == 'gbps' else 'median ms'}. These are small conformance shapes; "
        f"<code>conformance bench</code> measures speed properly.{e(note)}</p>"
        f'<div class="card">{_bars(groups, targets, None, float(t[metric].max()))}</div>'
    )


def _agrees(row: str, doc, seen) -> bool:
    if isinstance(doc, float):
        return isinstance(seen, (int, float)) and abs(seen - doc) <= 1e-3 * abs(doc)
    return str(seen).split(" ")[0] == doc if row == "batch statistic returned" else seen == doc


def _behaviour(d) -> str:
    if not isinstance(d, dict):
        return str(d)
    up = d.get("update_running")
    return (
        f"normalise with {d.get('normalize_with') or 'undefined'}; running stats "
        f"{'undefined' if up is None else 'left alone' if up is False else 'updated ' + up if isinstance(up, str) else 'updated'}"
    )


def _conventions(conv: dict) -> str:
    rows: list = []
    for r in conv.values():
        rows += [k for k in r if k not in ("version", "documented", "error", "flags") and k not in rows]
    out = [
        "<table><tr><th>convention</th>"
        + "".join(f"<th>{e(n)} {e(r.get('version', ''))}</th>" for n, r in conv.items())
        + "</tr>"
    ]
    bad = 0
    for row in rows:
        cells = []
        for r in conv.values():
            if "error" in r:
                cells.append(f'<td class="muted">unavailable: {e(r["error"])}</td>')
                continue
            doc, seen = (r.get("documented") or {}).get(row), r.get(row, "")
            miss = doc is not None and not _agrees(row, doc, seen)
            bad += miss
            docs = "" if doc is None else f'<br><span class="muted">documented: {e(doc)}</span>'
            cells.append(f'<td class="{"mismatch" if miss else ""}">{"MISMATCH: " if miss else ""}{e(seen)}{docs}</td>')
        out.append(f"<tr><td>{e(row)}</td>{''.join(cells)}</tr>")
    flags = []
    for n, r in conv.items():
        for f in r.get("flags") or []:
            miss = f["verdict"].startswith(("MISMATCH", "error"))
            bad += miss
            flags.append(
                f"<tr><td>{e(n)}</td><td><code>{e(f['flags'])}</code></td><td>{e(_behaviour(f['documented']))}"
                f'<br><span class="muted">{e(f.get("quote", ""))}</span></td><td class="{"mismatch" if miss else ""}">'
                f"{e(_behaviour(f['seen']))}</td><td>{e(f['verdict'])}</td></tr>"
            )
    table = (
        (
            "<h3>Flag combinations</h3><table><tr><th>framework</th><th>flags</th><th>documented (the page)</th><th>seen</th>"
            "<th>verdict</th></tr>" + "".join(flags) + "</table>"
        )
        if flags
        else ""
    )
    return (
        f'<p class="muted">Observed behaviour; the documented value under it. {bad} mismatch(es), in red.</p>'
        + "".join(out)
        + "</table>"
        + table
    )


def _not_passing(df: pd.DataFrame, labels: dict) -> str:
    bad = df[df["status"] != "pass"]
    if not len(bad):
        return '<p class="ok">Every row passed.</p>'
    bad = bad.assign(_r=bad["status"].map(_rank)).sort_values("_r", kind="stable")
    more = (
        f", the first {MAX_LISTED} shown, {len(bad) - MAX_LISTED} more in results.csv" if len(bad) > MAX_LISTED else ""
    )
    out = [
        f'<p><input id="np-filter" placeholder="filter these rows" size="40"> <span class="muted">{len(bad)} rows{more}</span></p>'
        '<table id="notpass"><thead><tr><th style="width:105px">status</th><th style="width:170px">target</th><th style="width:95px">'
        'output</th><th style="width:190px">case</th><th>reason</th><th style="width:30%">re-run</th></tr></thead><tbody>'
    ]
    for _, r in bad.head(MAX_LISTED).iterrows():
        vs = "" if r["vs"] == "oracle" else f'<br><span class="muted">vs {e(r["vs"])}</span>'
        out.append(
            f"<tr><td>{_chip(r['status'], r['status'])}</td><td><code>{e(r['target'])}</code>{vs}</td>"
            f'<td>{e(r["output"])}</td><td title="{e(r["case_id"])}">{e(labels.get(r["case_id"], r["case_id"]))}</td>'
            f"<td>{e(r['reason'])}</td><td><code>{e(rerun_command(r))}</code></td></tr>"
        )
    return "".join(out) + f"</tbody></table><script>{JS}</script>"


def html(df: pd.DataFrame, meta: dict, *, conventions: dict | None = None, bench: pd.DataFrame | None = None) -> str:
    df = _prepare(df)
    targets = [t["target"] for t in meta.get("targets") or [] if t.get("target") in set(df["target"])]
    targets += [t for t in pd.unique(df["target"]) if t not in targets]
    labels = case_labels(pd.unique(df["case_id"]))
    n_bad = int(df["status"].isin(UNEXPECTED).sum())
    verdict = f'<span class="bad">FAILED: {n_bad} unexpected rows</span>' if n_bad else '<span class="ok">passed</span>'
    sections = [
        ("devices", "What ran where", _header(df, meta, targets)),
        ("matrix", "Pass matrix", _heatmap(df, targets, labels) if len(df) else "<p>No rows.</p>"),
        ("errors", "Errors against the oracle, per output", _error_plots(df, targets)),
        ("timing", "Timing", _bench(bench) if bench is not None and len(bench) else _timing(df, targets, labels)),
    ]
    if conventions:
        sections.append(("conventions", "Framework conventions: observed vs documented", _conventions(conventions)))
    sections.append(("notpass", "Rows that did not pass", _not_passing(df, labels)))
    nav = " ".join(f'<a href="#{sid}">{e(title)}</a>' for sid, title, _ in sections)
    body = "".join(
        f'<section id="sec-{sid}"><h2 id="{sid}">{e(title)}</h2>{content}</section>' for sid, title, content in sections
    )
    title = f"BatchNorm conformance: {meta.get('suite', '')}"
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><link rel="icon" href="data:,">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body><main>'
        f'<h1>{e(title)}</h1><p class="verdict">{verdict} &middot; {len(df)} rows &middot; '
        f"{_chips(df['status'].value_counts().to_dict())}</p><nav>{nav}</nav>{body}</main></body></html>\n"
    )


def write(
    out_dir: Path, df: pd.DataFrame, meta: dict, conventions: dict | None = None, bench: pd.DataFrame | None = None
) -> Path:
    """Write out_dir/report.html atomically (a temporary file renamed into place); returns its path."""
    path = Path(out_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, html(df, meta, conventions=conventions, bench=bench).encode("utf-8"))
    return path
