"""report.html's result sections: what ran where (run header and targets), the pass matrix (case x target, worst
status per cell) and the table of every row that did not pass, with its re-run command."""

from __future__ import annotations

import math

import pandas as pd

from .html_page import COLORS, chip, chips, cut, e, rank, svg
from .report import kernel_header, rerun_command
from .status import SEVERITY

MAX_LISTED = 300  # non-passing rows in the table
JS = """document.getElementById('np-filter').addEventListener('input', function () {
  var q = this.value.toLowerCase();
  document.querySelectorAll('#notpass tbody tr').forEach(function (tr) {
    tr.style.display = tr.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none'; }); });"""


def status_matrix(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """(cases x targets of the worst status, None where nothing ran; {(case_id, target): {status: count}})."""
    worst = df.assign(_r=df["status"].map(rank)).groupby(["case_id", "target"], sort=False)["_r"].min()
    mat = worst.map(lambda r: SEVERITY[int(r)]).unstack("target")
    mat = mat.reindex(index=list(pd.unique(df["case_id"])), columns=list(pd.unique(df["target"])))
    mat = mat.astype(object).where(mat.notna(), None)
    counts: dict = {}
    for (cid, target, status), n in df.groupby(["case_id", "target", "status"], sort=False).size().items():
        counts.setdefault((cid, target), {})[status] = int(n)
    return mat, counts


def _meta_rows(meta: dict) -> list:
    """(label, value) lines of the run's header: suite, command, host, packages, kernels, time and memory."""
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
    return rows


def header(df: pd.DataFrame, meta: dict, targets: list) -> str:
    """What ran where: the run's header, a row per target with its device and status counts, what was missing."""
    out = (
        ['<table class="meta">']
        + [f"<tr><td>{e(k)}</td><td><code>{e(v)}</code></td></tr>" for k, v in _meta_rows(meta)]
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
            f"<td>{chips(df[df['target'] == target]['status'].value_counts().to_dict())}</td></tr>"
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


def heatmap(df: pd.DataFrame, targets: list, labels: dict) -> str:
    """The pass matrix: one cell per (case, target) coloured by its worst status, in panels side by side."""
    mat, counts = status_matrix(df)
    mat, n, cases = mat.reindex(columns=targets), len(mat), list(mat.index)
    ch = 15 if n <= 60 else 12 if n <= 300 else 11 if n <= 1200 else 6  # row height; no labels below 9 px
    cw = 26 if len(targets) <= 4 else 16 if len(targets) <= 8 else 12
    font = min(ch - 2.5, 11)
    lab_w = 12 + 0.56 * font * max((len(v) for v in labels.values()), default=0) if ch >= 9 else 0
    longest = max((len(cut(t, 28)) for t in targets), default=1)
    top, right = 20 + 4.6 * longest, 4 + 3.3 * longest  # room for the rotated target names
    cap = 150 if ch >= 9 else 400  # rows per panel at most; panels side by side, as many per line as fit in 1350 px
    fit = max(1, int(1350 // (lab_w + len(targets) * cw + right + 18)))
    per_panel = n if n <= cap else math.ceil(n / (fit * math.ceil(math.ceil(n / cap) / fit)))
    panels = []
    for start in range(0, n, per_panel):
        body = [
            f'<text x="{x:.1f}" y="{top - 6:.1f}" font-size="10" transform="rotate(-55 {x:.1f} {top - 6:.1f})">'
            f"<title>{e(t)}</title>{e(cut(t, 28))}</text>"
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
                    c = sorted(counts.get((cid, target), {}).items(), key=lambda kv: rank(kv[0]))
                    tip = f"{cid}\n{target}: {status}\n" + ", ".join(f"{s} {k}" for s, k in c)
                    body.append(
                        f'<rect class="cell" data-status="{e(status)}" x="{lab_w + j * cw + 1:.1f}" '
                        f'y="{y + 0.5}" width="{cw - 2}" height="{ch - 1}" fill="{COLORS.get(status, "#6b7280")}">'
                        f"<title>{e(tip)}</title></rect>"
                    )
        panels.append(svg(lab_w + len(targets) * cw + right, top + min(per_panel, n - start) * ch + 4, body, "heatmap"))
    legend = chips({s: int((mat == s).sum().sum()) for s in SEVERITY if (mat == s).any().any()})
    return (
        f'<p class="muted">{n} cases x {len(targets)} targets; each cell is coloured by the worst status of its rows '
        "(crash &gt; timeout &gt; error &gt; fail &gt; xpass &gt; xfail &gt; unsupported &gt; skip &gt; pass); "
        f"hover a cell for the case id and the counts. Cells: {legend}</p>"
        f'<div class="panels" id="matrix-panels">{"".join(panels)}</div>'
    )


def not_passing(df: pd.DataFrame, labels: dict) -> str:
    """Every row that did not pass, worst first (at most MAX_LISTED), with a filter box and its re-run command."""
    bad = df[df["status"] != "pass"]
    if not len(bad):
        return '<p class="ok">Every row passed.</p>'
    bad = bad.assign(_r=bad["status"].map(rank)).sort_values("_r", kind="stable")
    more = (
        f", the first {MAX_LISTED} shown, {len(bad) - MAX_LISTED} more in results.csv" if len(bad) > MAX_LISTED else ""
    )
    out = [
        '<p><input id="np-filter" placeholder="filter these rows" size="40"> '
        f'<span class="muted">{len(bad)} rows{more}</span></p>'
        '<table id="notpass"><thead><tr><th style="width:105px">status</th><th style="width:170px">target</th>'
        '<th style="width:95px">output</th><th style="width:190px">case</th><th>reason</th>'
        '<th style="width:30%">re-run</th></tr></thead><tbody>'
    ]
    for _, r in bad.head(MAX_LISTED).iterrows():
        vs = "" if r["vs"] == "oracle" else f'<br><span class="muted">vs {e(r["vs"])}</span>'
        out.append(
            f"<tr><td>{chip(r['status'], r['status'])}</td><td><code>{e(r['target'])}</code>{vs}</td>"
            f'<td>{e(r["output"])}</td><td title="{e(r["case_id"])}">{e(labels.get(r["case_id"], r["case_id"]))}</td>'
            f"<td>{e(r['reason'])}</td><td><code>{e(rerun_command(r))}</code></td></tr>"
        )
    return "".join(out) + f"</tbody></table><script>{JS}</script>"
