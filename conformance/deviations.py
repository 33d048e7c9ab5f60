"""Known deviations are data: cases/known_deviations.toml.

    [[deviation]]
    backend = "mxnet_v1"                  # required
    versions = ">=1.9,<2"                 # optional, PEP 440 specifier on the backend's version
    case = { mode = "train", dtype = ["float16"] }   # optional: case fields, a value or a list of values
    case_id = "small-nchw,*"              # optional: glob on the case id
    output = ["var", "running_var"]       # optional: output name(s); default every output
    vs = "oracle"                         # optional: "oracle" or a glob such as "opencl@*"; default both
    reason = "what the framework does and why it differs"   # required
    link = "where it is documented or reported"             # optional

A failing row that an entry matches becomes `xfail` with the entry's reason; a passing row it matches becomes
`xpass` (flagged: the deviation may be gone). An entry that matches no row of a backend that ran is warned about.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .case import Case
from .errors import UserError
from .suite import CASES_DIR

DEFAULT_PATH = CASES_DIR / "known_deviations.toml"
_KEYS = {"backend", "versions", "case", "case_id", "output", "vs", "reason", "link"}
_CASE_FIELDS = {"name", "dtype", "shape", "axis", "mode", "backward", "fix_gamma", "running_var", "stats",
                "momentum_dir", "eps", "momentum", "seed", "fill"}


@dataclass(frozen=True)
class Deviation:
    index: int
    backend: str
    versions: SpecifierSet | None
    case: dict
    case_id: str | None
    outputs: tuple[str, ...] | None
    vs: str | None
    reason: str
    link: str

    def describe(self) -> str:
        return f"deviation #{self.index} ({self.backend}: {self.reason[:60]})"

    def matches(self, row: dict, case: Case, version: str) -> bool:
        if row["backend"] != self.backend:
            return False
        if self.versions is not None:
            try:
                if Version(version.split("+")[0]) not in self.versions:
                    return False
            except InvalidVersion:
                return False
        if self.outputs is not None and row["output"] not in self.outputs:
            return False
        if self.vs is not None and not fnmatch.fnmatchcase(row.get("vs", "oracle"), self.vs):
            return False
        if self.case_id is not None and not fnmatch.fnmatchcase(case.id, self.case_id):
            return False
        for key, want in self.case.items():
            have = getattr(case, key)
            have = have.kind if key == "fill" else (list(have) if key == "shape" else have)
            options = want if isinstance(want, list) and key != "shape" else [want]
            if have not in options:
                return False
        return True


def load(path: Path | str = DEFAULT_PATH) -> list[Deviation]:
    path = Path(path)
    if not path.is_file():
        return []
    src = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"invalid TOML: {exc}", source=src) from None
    entries = data.get("deviation", [])
    if set(data) - {"deviation"} or not isinstance(entries, list):
        raise UserError("expected only [[deviation]] tables", source=src)
    out = []
    for i, e in enumerate(entries):
        where = f"deviation[{i}]"
        if not isinstance(e, dict):
            raise UserError("must be a table", source=src, field=where)
        unknown = set(e) - _KEYS
        if unknown:
            raise UserError(f"unknown field {sorted(unknown)[0]!r}", source=src, field=f"{where}.{sorted(unknown)[0]}")
        for key in ("backend", "reason"):
            if not isinstance(e.get(key), str) or not e[key]:
                raise UserError(f"needs {key} = \"...\"", source=src, field=f"{where}.{key}")
        versions = None
        if "versions" in e:
            try:
                versions = SpecifierSet(str(e["versions"]))
            except InvalidSpecifier:
                raise UserError(f"not a version specifier: {e['versions']!r}", source=src, field=f"{where}.versions") from None
        case = e.get("case", {})
        if not isinstance(case, dict) or set(case) - _CASE_FIELDS:
            raise UserError(f"must be a table of case fields, got {case!r}", source=src, field=f"{where}.case")
        outputs = e.get("output")
        if isinstance(outputs, str):
            outputs = (outputs,)
        elif isinstance(outputs, list) and all(isinstance(o, str) for o in outputs):
            outputs = tuple(outputs)
        elif outputs is not None:
            raise UserError(f"must be a string or a list of strings, got {outputs!r}", source=src, field=f"{where}.output")
        out.append(Deviation(i, e["backend"], versions, case, e.get("case_id"), outputs, e.get("vs"),
                             e["reason"], e.get("link", "")))
    return out


def apply(rows: list[dict], cases: dict[str, Case], versions: dict[str, str], deviations: list[Deviation]) -> list[str]:
    """Turn matching fail rows into xfail and pass rows into xpass, in place; return warnings."""
    used = set()
    for row in rows:
        if row["status"] not in ("pass", "fail"):
            continue
        case = cases[row["case_id"]]
        for dev in deviations:
            if dev.matches(row, case, versions.get(row["backend"], "")):
                used.add(dev.index)
                note = f"known deviation: {dev.reason}" + (f" ({dev.link})" if dev.link else "")
                if row["status"] == "fail":
                    row["status"], row["reason"] = "xfail", f"{note}; {row['reason']}"
                else:
                    row["status"], row["reason"] = "xpass", f"passes although listed as a {note}"
                break
    ran = {row["backend"] for row in rows}
    return [f"{DEFAULT_PATH.name}: {d.describe()} matches no row" for d in deviations
            if d.backend in ran and d.index not in used]
