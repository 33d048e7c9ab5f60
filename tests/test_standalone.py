"""The repository stands alone: nothing in it points at files a clone does not have.

Every file git knows here (tracked, plus new files not ignored) is searched for references to notes kept outside
the repository: a design-notes file, a folder of saved framework pages, a sibling `shared` folder, an absolute
path of one machine, or a saved page file named after an operator. The official pages the suite relies on are
cited by their addresses in README.md's Sources section instead, and those addresses are checked for form (not
fetched: the tests run offline).

The patterns are assembled from pieces below, so this file's own text never matches them and it is searched like
any other file. Each checker is first run on planted examples, so a checker that finds nothing cannot pass.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent

_DESIGN = "DESIGN" + ".md"
_PAGES_DIR = "framework" + "-docs"
_SHARED = ".." + "/shared"
# An absolute path into /work: a slash that does not continue a word, a URL or a relative path.
_ABS_WORK = re.compile(r"(?<![\w.:/~-])/" + "work" + r"/")
# A saved page such as <framework>-<api>-BatchNorm<...>.txt
_PAGE_FILE = re.compile(r"[\w.-]*-" + "Batch" + r"Norm[\w.-]*\." + "txt" + r"\b")


def outside_references(text: str) -> list[str]:
    """What in `text` points outside the repository, one short description per hit."""
    hits = []
    for needle in (_DESIGN, _PAGES_DIR, _SHARED):
        if needle in text:
            hits.append(needle)
    hits += [f"absolute path at {m.start()}" for m in _ABS_WORK.finditer(text)]
    hits += [m.group(0) for m in _PAGE_FILE.finditer(text)]
    return hits


def repository_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the list of the repository's files comes from git")
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    names = [n for n in out.decode().split("\0") if n]
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def read_text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None  # binary
    return data.decode("utf-8", errors="replace")


def sources_section(readme: str) -> str:
    """The text of README.md's `## Sources` section, heading excluded ('' when there is none)."""
    m = re.search(r"^## Sources[ \t]*\n(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    return m.group(1) if m else ""


_ADDRESS = re.compile(r"https://[^\s|`<>]+")
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$")
_URL_CHARS = re.compile(r"^[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+$")


def bad_address(url: str) -> str | None:
    """Why `url` is not a well-formed https address, or None when it is."""
    if not _URL_CHARS.match(url):
        return "characters outside a URL"
    if url[-1] in ".,;:)":
        return "trailing punctuation"
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "not https"
    if not _HOST.match(parts.netloc):
        return f"host {parts.netloc!r}"
    if "//" in parts.path or "/../" in parts.path + "/":
        return "path with an empty or parent segment"
    return None


def sources_problems(readme: str) -> list[str]:
    """Everything wrong with the addresses of README.md's Sources table."""
    section = sources_section(readme)
    if not section:
        return ["no '## Sources' section"]
    rows = [r for r in section.splitlines() if r.startswith("|") and not re.match(r"^\|[-| ]+\|$", r)]
    problems = []
    for row in rows[1:]:  # rows[0] is the header
        cells = [c.strip() for c in row.strip("|").split("|")]
        addresses = _ADDRESS.findall(row)
        if len(addresses) != 1:
            problems.append(f"{cells[0]}: {len(addresses)} addresses")
            continue
        if cells.count(addresses[0]) != 1:
            problems.append(f"{cells[0]}: the address is not a cell of its own")
        why = bad_address(addresses[0])
        if why:
            problems.append(f"{cells[0]}: {addresses[0]} ({why})")
    for url in _ADDRESS.findall(section):
        why = bad_address(url)
        if why and not any(url in p for p in problems):
            problems.append(f"{url} ({why})")
    if len(rows) < 2:
        problems.append("the Sources table has no rows")
    return problems


# ---- the checkers catch what they are for --------------------------------------------------------------------


@pytest.mark.parametrize(
    "planted",
    [
        "Canonical semantics (see " + _DESIGN + "):",
        "# From " + "/work" + "/shared/" + _PAGES_DIR + "/paddle-nn-BatchNorm." + "txt" + ":",
        "the notes in " + _SHARED + "/notes.md",
        "quoted in mindspore-ops-Batch" + "Norm.txt",
        "Conventions (mxnet-R-nd-Batch" + "Norm.v1.txt):",
        "cd " + "/work" + "/main && make",
    ],
)
def test_planted_references_are_caught(planted):
    assert outside_references(planted), planted


@pytest.mark.parametrize(
    "clean",
    [
        "Canonical semantics (README.md, Semantics and the oracle):",
        "see https://example.org/work/guide.html and docs/work/notes.md",
        "https://mindspore.cn/docs/en/r2.4.0/_sources/api_python/ops/mindspore.ops.BatchNorm.rst.txt",
        "reports/latest/summary.md, cases/smoke.toml",
    ],
)
def test_clean_text_is_not_flagged(clean):
    assert outside_references(clean) == []


def test_planted_bad_sources_are_caught():
    good = "| `a.B` | a page | 1.0 | https://docs.example.org/a/B.html | momentum |\n"
    head = "## Sources\n\nText.\n\n| API | page | version | address | takes |\n|---|---|---|---|---|\n"
    assert sources_problems(head + good + "\n## Next\n") == []
    for bad_row in (
        "| `a.C` | a page | 1.0 | https://docs.example.org/a/C.html. | momentum |\n",  # trailing dot
        "| `a.C` | a page | 1.0 | https://localhost/a/C.html | momentum |\n",  # no domain
        "| `a.C` | a page | 1.0 | https://docs.example.org//C.html | momentum |\n",  # empty segment
        "| `a.C` | a page | 1.0 | https://docs.example.org/a/C\u00e9.html | momentum |\n",  # not a URL character
        "| `a.C` | a page | 1.0 | docs.example.org/a/C.html | momentum |\n",  # no address at all
        "| `a.C` | a page | 1.0 | see https://docs.example.org/a/C.html | momentum |\n",  # not a cell of its own
    ):
        assert sources_problems(head + good + bad_row + "\n## Next\n"), bad_row
    assert sources_problems("# Title\n\n## Layout\n") == ["no '## Sources' section"]


# ---- the repository ------------------------------------------------------------------------------------------


def test_repository_points_nowhere_outside_it():
    files = repository_files()
    assert any(p.name == "README.md" for p in files)
    found = []
    for path in files:
        text = read_text(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for hit in outside_references(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {hit}")
    assert found == [], "\n".join(found)


def test_readme_sources_addresses_are_well_formed():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sources_problems(readme) == []
    addresses = _ADDRESS.findall(sources_section(readme))
    assert len(addresses) >= 10  # one per framework API the backends check


def unlisted_modules(readme: str, package: Path) -> list[str]:
    """The package's modules (conformance/*.py, not __init__ or __main__) the README's Layout section does not
    name in backticks: the module map must follow the code."""
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0] if "## Layout" in readme else ""
    named = set(re.findall(r"`([a-z_]+)`", layout))
    return sorted(p.stem for p in package.glob("*.py") if not p.stem.startswith("__") and p.stem not in named)


def test_readme_layout_names_every_module(tmp_path):
    assert unlisted_modules((ROOT / "README.md").read_text(encoding="utf-8"), ROOT / "conformance") == []
    (tmp_path / "known.py").write_text("")
    (tmp_path / "planted.py").write_text("")
    assert unlisted_modules("## Layout\n`known`\n## Next\n`planted`\n", tmp_path) == ["planted"]


def missing_files(readme: str, root: Path) -> list[str]:
    """Files the README names in backticks (a path such as conformance/x.py, or a bare x.py / x.cl / x.h / x.toml)
    that the repository does not have: a renamed or split module must not leave the README pointing at nothing."""
    names = set(re.findall(r"`([\w./-]+\.(?:py|cl|h|toml))(?:::\w+)?`", readme))
    have = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}
    basenames = {h.rsplit("/", 1)[-1] for h in have}
    return sorted(n for n in names if n not in have and ("/" in n or n not in basenames))


def test_readme_names_only_files_that_exist(tmp_path):
    assert missing_files((ROOT / "README.md").read_text(encoding="utf-8"), ROOT) == []
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "here.py").write_text("")
    text = "`pkg/here.py`, `here.py`, `pkg/gone.py`, `gone.cl`, `tests/x.py::test_y`"
    assert missing_files(text, tmp_path) == ["gone.cl", "pkg/gone.py", "tests/x.py"]
