"""Text outputs carry no markup: suite names, reasons and paths are shown as written, whatever renders the Markdown.

Hostile values go through a real run (suite name, output folder, a known-deviation reason that lands in rows) and
through `compare`, `history` and `devices-table`; each output is rendered by markdown-it-py with raw HTML
allowed (the worst renderer a CI system may use) and must hold no element or link the values asked for."""

import re

import pytest
from fs_helpers import conformance

from conformance.report import md_code, md_table, md_text

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py (the test extra) renders the Markdown")

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    '<a href="javascript:alert(3)">a</a>',
    "[link](javascript:alert(4))",
    "![img](javascript:alert(5))",
    "`code` | cell | **bold**",
]


def render(text: str) -> str:
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def assert_inert(text: str) -> None:
    html = render(text).lower()
    assert "<script" not in html and "<img" not in html, html[:3000]
    assert not re.search(r"<a [^>]*href=\"javascript:", html), html[:3000]
    assert "<strong>bold</strong>" not in html


def test_helpers_render_values_as_written():
    for v in HOSTILE:
        html = render(f"before {md_text(v)} after\n\n{md_code(v)}\n\n" + md_table(["h"], [[v]]))
        assert_inert(html)
        assert v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") in html


def test_run_compare_history_devices_table_escape_what_they_print(tmp_path):
    name = "".join(HOSTILE)
    suite = tmp_path / "s.toml"
    suite.write_text(
        f"[suite]\nname = '''{name}'''\n[[case]]\nname = \"overflow\"\nshape = [8, 4]\n"
        'fill = {kind = "normal", mean = 0.0, std = 1e20}\n'
    )
    devs = tmp_path / "dev.toml"
    devs.write_text(f"[[deviation]]\nbackend = \"numpy\"\nstrict = false\nreason = '''{name}'''\n")
    store = tmp_path / "h.sqlite"
    outs = [tmp_path / "<img src=x onerror=alert(6)>", tmp_path / "[x](javascript:alert(7))"]
    for out in outs:
        r = conformance(
            "run", "--suite", suite, "--backend", "numpy", "--out", out, "--deviations", devs, "--history", store
        )
        assert r.returncode == 0, r.stderr[-2000:]
        summary = (out / "summary.md").read_text()
        assert "xfail" in summary and "alert(1)" in summary  # the reason is there, as text
        assert_inert(summary)
    for args in (["compare", *outs], ["compare", "previous", "latest"], ["history"], ["devices-table"]):
        r = conformance(*args, "--history", store)
        assert r.returncode in (0, 1) and r.stdout.strip(), r.stderr[-2000:]
        assert_inert(r.stdout)
    assert "alert(6)" in conformance("compare", *outs, "--history", store).stdout
