"""report.html's errors against the oracle: per output, a log-scale strip plot of norm_err and one of ulp@max, a row
per target and a dot per result row (histogram strips past MAX_DOTS), the pass threshold dashed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .html_page import COLORS, cut, e, svg, worst_status

OUTPUTS = ("y", "mean", "var", "invstd", "running_mean", "running_var", "dx", "dgamma", "dbeta", "x_after", "dy_after")
MAX_DOTS = 3000  # per error plot; beyond it each target's values are drawn as a histogram strip


def strip_panel(
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
        f'<text x="{x0 + w / 2:.0f}" y="{y0 - 8:.0f}" font-size="12" text-anchor="middle" font-weight="600">'
        f"{e(metric)} (log scale)</text>"
    ]
    for k in range(lo - 1, hi + 1, max(1, math.ceil(span / 6))):
        x, lab = x0 + w * (k - lo + 1) / span, "0" if k == lo - 1 else {0: "1", 1: "10"}.get(k, f"1e{k}")
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{bottom}" stroke="#e5e7eb"/>'
            f'<text x="{x:.1f}" y="{bottom + 13:.0f}" font-size="10" text-anchor="middle">{lab}</text>'
        )
    for t in thresholds:
        body.append(
            f'<line class="threshold" x1="{xpos(t):.1f}" x2="{xpos(t):.1f}" y1="{y0 - 4}" y2="{bottom}" '
            f'stroke="#dc2626" stroke-dasharray="4 3"><title>threshold {t:g}</title></line>'
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
                worst = worst_status([s for s, k in zip(st, sel, strict=True) if k])
                body.append(
                    f'<rect x="{x0 + b * bin_w:.1f}" y="{yc - hgt / 2:.1f}" width="{bin_w:.1f}" height="{hgt:.1f}" '
                    f'opacity="0.8" fill="{COLORS.get(worst, "#6b7280")}">'
                    f"<title>{e(target)}: {int(sel.sum())} rows</title></rect>"
                )
        else:
            body += [
                f'<circle class="dot s-{e(s)}" cx="{x:.1f}" '
                f'cy="{yc + ((k * 0.618034) % 1 - 0.5) * (rh - 6):.1f}" r="2.6"/>'
                for k, (x, s) in enumerate(zip(xs, st, strict=True))
            ]
        if len(v):
            k = int(np.argmax(v))
            body.append(
                f'<circle cx="{xs[k]:.1f}" cy="{yc:.1f}" r="4.5" fill="none" stroke="#111827" stroke-width="1.3">'
                f"<title>worst {metric} {v[k]:.4g} ({e(st[k])}): {e(ids[k])}</title></circle>"
            )
    return body


def error_plots(df: pd.DataFrame, targets: list) -> str:
    """A card per output compared with the oracle: its norm_err and ulp@max strip plots side by side."""
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
            f'<text x="{lab_w - 8}" y="{top + rh * (i + 0.5) + 4:.0f}" font-size="10" text-anchor="end">'
            f"<title>{e(t)}</title>{e(cut(t, 28))}</text>"
            for i, t in enumerate(rows)
        ]
        body += strip_panel(
            sub, "norm_err", rows, lab_w, pw, top, rh, sorted(set(sub["threshold"].dropna().astype(float)))
        )
        body += strip_panel(sub, "ulp_at_max", rows, lab_w + pw + gap, pw, top, rh, ())
        plot = svg(lab_w + 2 * pw + gap + 20, top + rh * len(rows) + 22, body, "errplot")
        cards.append(
            f'<div class="card" id="err-{e(out)}"><h3>{e(out)} <span class="muted">{len(sub)} rows</span></h3>'
            f"{plot}</div>"
        )
    return (
        '<p class="muted">Against the float64 oracle, one dot per row (coloured by status), the circled dot is each '
        "target's worst (hover it for the case); the left-most column holds exact results (0); the dashed line is the "
        f'pass threshold on norm_err.</p><div class="panels">{"".join(cards)}</div>'
    )
