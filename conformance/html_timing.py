"""report.html's timing section: horizontal bars per case and target, from results.csv (GB/s or median ms) or,
given bench.csv, the fraction of the device's memory-copy bandwidth per phase."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .html_page import case_labels, cut, e, svg

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
MAX_TIMED = 40  # cases in the timing chart of a run (the ones with the most bytes)


def bars(groups: list, legend: list, ref: float | None, scale_max: float) -> str:
    """groups: [(label, title, [(target, value, text)])]; bar length is value / scale_max."""
    lab_w, bw, rh = 260, 560, 13
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(legend)}
    body, y = [], 6
    for label, title, group in groups:
        body.append(
            f'<text x="0" y="{y + 11}" font-size="12" font-weight="600"><title>{e(title)}</title>{e(label)}</text>'
        )
        y += 16
        for target, value, text in group:
            length = bw * min(value / scale_max, 1.0) if value == value and scale_max > 0 else 0
            body.append(
                f'<text x="{lab_w - 6}" y="{y + 10}" font-size="10" text-anchor="end">{e(cut(target, 40))}</text>'
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
    return svg(lab_w + bw + 190, y, body, "timing")


def of_traffic(r) -> str:
    """', 0.40 of its traffic' where the row's traffic-aware roofline differs from the minimal one (bench.csv)."""
    frac, copy = r.get("frac_of_traffic", np.nan), r.get("frac_of_copy", np.nan)
    try:
        frac, copy = float(frac), float(copy)
    except (TypeError, ValueError):
        return ""
    return f", {frac:.2f} of its traffic" if np.isfinite(frac) and not np.isclose(frac, copy) else ""


def _bench_text(r) -> str:
    """A bench.csv row's bar label: time, GB/s and fractions of the rooflines, or why it has no time."""
    if r["time_ms_median"] != r["time_ms_median"]:  # NaN
        return cut(f"no time: {r.get('reason', '')}", 90)
    return (
        f"{r['time_ms_median']:.3g} ms, {r.get('gbps', np.nan):.3g} GB/s, "
        f"{r.get('frac_of_copy', np.nan):.2f} of copy" + of_traffic(r)
    )


def bench_bars(bench: pd.DataFrame) -> str:
    """From bench.csv: per phase, a bar per case and target, its length the fraction of the memory-copy bandwidth."""
    out = [
        '<p class="muted">From bench.csv: bar length is the fraction of the device\'s measured memory-copy bandwidth '
        "on the same bytes (the dashed line, 1.0, is as fast as a copy); where the chosen kernels must move more "
        "(x read twice), the label also gives the fraction of that traffic-aware bound.</p>"
    ]
    legend, labels = list(pd.unique(bench["target"])), case_labels(pd.unique(bench["case_id"]))
    for phase, g in bench.groupby("phase", sort=False):
        groups = []
        for cid, gc in g.groupby("case_id", sort=False):
            group = [(r["target"], float(r.get("frac_of_copy", np.nan)), _bench_text(r)) for _, r in gc.iterrows()]
            groups.append((labels[cid], cid, group))
        top = max(1.2, float(g["frac_of_copy"].max()) if g["frac_of_copy"].notna().any() else 0)
        out.append(f'<h3>{e(phase)}</h3><div class="card">{bars(groups, legend, 1.0, top)}</div>')
    return "".join(out)


def timing(df: pd.DataFrame, targets: list, labels: dict) -> str:
    """From results.csv: a bar per case and target (GB/s where known, else median ms), the MAX_TIMED biggest cases."""
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
        f'<div class="card">{bars(groups, targets, None, float(t[metric].max()))}</div>'
    )
