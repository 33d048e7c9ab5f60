"""report.html's page skeleton and the small pieces every section uses: CSS, the status colours, escaping, chips,
SVG wrappers, short case labels, and page() that puts the sections together."""

from __future__ import annotations

import html as _html
import math
import re

from .status import SEVERITY  # worst first

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

CSS = (
    "\n"
    'body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;margin:0;'
    "background:#f8fafc}\n"
    "main{max-width:1400px;margin:0 auto;padding:16px 24px 48px}h1{font-size:22px;margin:8px 0 4px}"
    "h3{font-size:15px;margin:12px 0 4px}\n"
    "h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}"
    "nav a{margin-right:14px;color:#2563eb;text-decoration:none}\n"
    "table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}th{background:#f1f5f9}\n"
    "th,td{border:1px solid #e5e7eb;padding:3px 7px;text-align:left;vertical-align:top}\n"
    "code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}.muted{color:#6b7280;font-size:12px}\n"
    ".chip{display:inline-block;white-space:nowrap;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;"
    "margin:1px 3px 1px 0}\n"
    ".light{color:#1f2937}.verdict{font-size:16px;margin:6px 0 10px}.bad{color:#b91c1c;font-weight:600}"
    ".ok{color:#15803d;font-weight:600}\n"
    ".meta td:first-child{font-weight:600;white-space:nowrap}"
    ".panels{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}\n"
    ".card{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:8px}"
    "svg text{font-family:system-ui,sans-serif;fill:#374151}\n"
    "td.mismatch{background:#fee2e2;color:#991b1b;font-weight:600}#notpass{table-layout:fixed;width:100%}"
    "#notpass td{overflow-wrap:anywhere}\n"
    "circle.dot{fill-opacity:.55}"
) + "".join(f".s-{s}{{fill:{c}}}" for s, c in COLORS.items())


def e(v) -> str:
    """Escaped text; None and NaN are empty."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return _html.escape(f"{v:.4g}" if isinstance(v, float) else str(v), quote=True)


def rank(status) -> int:
    """A status's place in SEVERITY (0 is the worst); an unknown status ranks as error."""
    return SEVERITY.index(status) if status in SEVERITY else SEVERITY.index("error")


def worst_status(statuses) -> str:
    return min(statuses, key=rank)


def cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def svg(w, h, body, cls) -> str:
    return f'<svg class="{cls}" width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}">{"".join(body)}</svg>'


def chip(status: str, text: str) -> str:
    light = " light" if status in ("unsupported", "skip", "xfail") else ""
    return f'<span class="chip{light}" style="background:{COLORS.get(status, "#6b7280")}">{e(text)}</span>'


def chips(counts: dict) -> str:
    return "".join(chip(s, f"{s} {n}") for s, n in sorted(counts.items(), key=lambda kv: rank(kv[0])))


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
        out[cid] = cut(" ".join(bits), 60)
    return out


def page(title: str, verdict: str, n_rows: int, counts: dict, sections: list) -> str:
    """The whole document: title, verdict line, the status chips, a nav bar and sections [(id, title, html)]."""
    nav = " ".join(f'<a href="#{sid}">{e(heading)}</a>' for sid, heading, _ in sections)
    body = "".join(
        f'<section id="sec-{sid}"><h2 id="{sid}">{e(heading)}</h2>{content}</section>'
        for sid, heading, content in sections
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        '<link rel="icon" href="data:,">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body><main>'
        f'<h1>{e(title)}</h1><p class="verdict">{verdict} &middot; {n_rows} rows &middot; '
        f"{chips(counts)}</p><nav>{nav}</nav>{body}</main></body></html>\n"
    )
