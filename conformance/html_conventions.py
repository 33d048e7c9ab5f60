"""report.html's conventions section, from conventions.json: convention x framework, what was observed with the
documented value under it (mismatches in red), then each flag combination's documented and seen behaviour."""

from __future__ import annotations

from .conventions import agrees, behaviour
from .html_page import e


def _matrix(conv: dict) -> tuple[str, int]:
    """(the convention x framework table, its mismatches); a row is compared only where a value is documented."""
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
            miss = doc is not None and not agrees(row, doc, seen)
            bad += miss
            docs = "" if doc is None else f'<br><span class="muted">documented: {e(doc)}</span>'
            cls, mark = ("mismatch", "MISMATCH: ") if miss else ("", "")
            cells.append(f'<td class="{cls}">{mark}{e(seen)}{docs}</td>')
        out.append(f"<tr><td>{e(row)}</td>{''.join(cells)}</tr>")
    return "".join(out) + "</table>", bad


def _flags(conv: dict) -> tuple[str, int]:
    """(the flag combinations table, or '' when no framework has one; its mismatches and errors)."""
    flags, bad = [], 0
    for n, r in conv.items():
        for f in r.get("flags") or []:
            miss = f["verdict"].startswith(("MISMATCH", "error"))
            bad += miss
            flags.append(
                f"<tr><td>{e(n)}</td><td><code>{e(f['flags'])}</code></td><td>{e(behaviour(f['documented']))}"
                f'<br><span class="muted">{e(f.get("quote", ""))}</span></td><td class="{"mismatch" if miss else ""}">'
                f"{e(behaviour(f['seen']))}</td><td>{e(f['verdict'])}</td></tr>"
            )
    if not flags:
        return "", bad
    head = (
        "<h3>Flag combinations</h3><table><tr><th>framework</th><th>flags</th><th>documented (the page)</th>"
        "<th>seen</th><th>verdict</th></tr>"
    )
    return head + "".join(flags) + "</table>", bad


def conventions_section(conv: dict) -> str:
    matrix, bad_rows = _matrix(conv)
    flags, bad_flags = _flags(conv)
    return (
        f'<p class="muted">Observed behaviour; the documented value under it. {bad_rows + bad_flags} mismatch(es), '
        f"in red.</p>{matrix}{flags}"
    )
