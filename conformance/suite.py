"""Suites: TOML data files in cases/, expanded into Cases.

Format (a contract: suites written elsewhere must keep working)::

    [suite]
    name = "smoke"
    [defaults]            # for every [[case]] that does not set the field itself
    dtype = "float32"
    [[case]]
    name = "small-nchw"
    shape = [8, 16, 7, 7]
    mode = ["train", "infer"]     # a list in any field expands into the cartesian product

`shape` is itself a list, so several shapes are a list of lists; `fill` is a table, several fills a list of
tables. `inputs = "file.npz"` is relative to the suite file; the case names it by that path ('/' separated; a file
outside the suite's folder by its name alone) and the digest of its content, and keeps the folder it resolves
against as `inputs_root` (see case.py). Every mistake is a UserError naming the file, the field and the value.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import tomllib

from .case import SUITE_FIELDS, Case, Fill, content_digest
from .errors import UserError

CASES_DIR = Path(os.environ.get("CONFORMANCE_CASES_DIR", Path(__file__).resolve().parents[1] / "cases"))
# What a [[case]] may set: the id's fields (inputs_root is where the file is, not part of the case), and
# normalize_with, mode's other spelling ("batch" is train, "running" is infer).
_MODE_OF = {"batch": "train", "running": "infer"}
MAX_CASES = 100_000
NOT_SUITES = {"known_deviations"}  # data files in cases/ that are not suites


@dataclass
class Suite:
    name: str
    path: str
    cases: list[Case]
    warnings: list[str] = field(default_factory=list)


def suite_names() -> list[str]:
    return sorted(p.stem for p in CASES_DIR.glob("*.toml") if p.stem not in NOT_SUITES)


def resolve(name_or_path: str) -> Path:
    """A suite name (a file in cases/) or a path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path:
        if not p.is_file():
            raise UserError(f"no such suite file {name_or_path!r}", source="--suite")
        return p
    candidate = CASES_DIR / f"{name_or_path}.toml"
    if not candidate.is_file():
        raise UserError(
            f"unknown suite {name_or_path!r} (known: {', '.join(suite_names())}; or give a path to a .toml file)",
            source="--suite",
        )
    return candidate


def load(name_or_path: str) -> Suite:
    path = resolve(name_or_path)
    src = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"invalid TOML: {exc}", source=src) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"cannot read: {exc}", source=src) from None
    return parse(data, src)


def parse(data: dict, src: str) -> Suite:
    extra = set(data) - {"suite", "defaults", "case"}
    if extra:
        raise UserError(
            f"unknown table {sorted(extra)[0]!r} (expected [suite], [defaults], [[case]])",
            source=src,
            field=sorted(extra)[0],
        )
    meta = data.get("suite")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise UserError(f'needs [suite] with name = "...", got {meta!r}', source=src, field="suite.name")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UserError(f"must be a table, got {defaults!r}", source=src, field="defaults")
    _check_keys(defaults, src, "defaults", allow_name=False)
    entries = data.get("case")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise UserError("needs at least one [[case]] table", source=src, field="case")

    cases: list[Case] = []
    seen: set[str] = set()
    warnings: list[str] = []
    for i, entry in enumerate(entries):
        where = f"case[{i}]" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
        _check_keys(entry, src, where, allow_name=True)
        if not isinstance(entry.get("name"), str):
            raise UserError(f'needs name = "...", got {entry.get("name")!r}', source=src, field=f"{where}.name")
        merged = {**defaults, **entry}
        for case in _expand(merged, src, where, Path(src).parent):
            if case.id in seen:
                warnings.append(f"{src}: {where}: duplicate case {case.id} dropped")
                continue
            seen.add(case.id)
            cases.append(case)
            if len(cases) > MAX_CASES:
                raise UserError(f"expands to more than {MAX_CASES} cases", source=src, field=where)
    return Suite(name=meta["name"], path=src, cases=cases, warnings=warnings)


def _check_keys(table: dict, src: str, where: str, *, allow_name: bool) -> None:
    for key in table:
        if key not in SUITE_FIELDS or (key == "name" and not allow_name):
            raise UserError(
                f"unknown field {key!r} (known: {', '.join(f for f in SUITE_FIELDS if allow_name or f != 'name')})",
                source=src,
                field=f"{where}.{key}",
            )


def _choices(key: str, value) -> list:
    """The values a field takes: a list expands, except where one value is itself a list (shape)."""
    if key == "shape":
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            return value
        return [value]
    if key == "fill" and isinstance(value, dict):
        return [value]
    return value if isinstance(value, list) else [value]


def _expand(merged: dict, src: str, where: str, base: Path):
    keys = [k for k in SUITE_FIELDS if k in merged]
    options = []
    for key in keys:
        opts = _choices(key, merged[key])
        if not opts:
            raise UserError("an empty list expands to no cases", source=src, field=f"{where}.{key}")
        options.append([_convert(key, v, src, f"{where}.{key}", base) for v in opts])
    total = 1
    for o in options:
        total *= len(o)
    if total > MAX_CASES:
        raise UserError(f"expands to {total} cases, more than {MAX_CASES}", source=src, field=where)
    for combo in itertools.product(*options):
        values = dict(zip(keys, combo))
        if "inputs" in values:
            values["inputs"], values["inputs_root"] = values["inputs"]
        if "normalize_with" in values:
            nw = values.pop("normalize_with")
            if nw not in _MODE_OF:
                raise UserError(
                    f"must be one of {', '.join(_MODE_OF)}, got {nw!r}", source=src, field=f"{where}.normalize_with"
                )
            if values.setdefault("mode", _MODE_OF[nw]) != _MODE_OF[nw]:
                raise UserError(
                    f"normalize_with={nw!r} contradicts mode={values['mode']!r} (mode train normalises with "
                    "the batch, infer with the running statistics)",
                    source=src,
                    field=f"{where}.normalize_with",
                )
        try:
            yield Case(**values)
        except UserError as exc:
            raise UserError(str(exc), source=src, field=where) from None


def _convert(key: str, value, src: str, fieldname: str, base: Path):
    def bad(expected):
        raise UserError(f"expected {expected}, got {value!r}", source=src, field=fieldname)

    if key == "shape":
        if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
            bad("a list of integers such as [8, 16, 7, 7]")
        return tuple(value)
    if key in ("axis", "seed"):
        if not isinstance(value, int) or isinstance(value, bool):
            bad("an integer")
        return value
    if key in ("backward", "fix_gamma", "update_running", "inplace"):
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if key in ("eps", "momentum"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            bad("a number")
        return float(value)
    if key == "fill":
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            bad('a table such as { kind = "normal", mean = 0.0, std = 1.0 }')
        params = {k: v for k, v in value.items() if k != "kind"}
        return Fill.make(value["kind"], params, source=src, where=fieldname)
    if key == "inputs":
        if not isinstance(value, str) or not value:
            bad("a path to an .npz file")
        return _inputs(value, base, src, fieldname)
    if not isinstance(value, str):
        bad("a string")
    return value


def _inputs(value: str, base: Path, src: str, fieldname: str) -> tuple[str, str]:
    """(the case's inputs: path@digest, the folder the path is relative to) for `inputs = value` in a suite in folder
    base: the path relative to base, '/' separated, for a file in or below it; the file's name alone, relative to
    its own folder, for one elsewhere (an absolute path or one through '..')."""
    path = base / value
    if not path.is_file():
        raise UserError(f"no such file {str(path)!r}", source=src, field=fieldname)
    rel = PurePath(os.path.normpath(value))  # "a/./b", "a/../b": one spelling, one id
    inside = (
        not rel.is_absolute() and rel.parts[0] != ".." and (base / rel).is_file() and os.path.samefile(base / rel, path)
    )
    root = base.absolute()
    if not inside:  # the normalised spelling is another file where a symlinked folder was walked out of with ..
        real = path.resolve()
        root, rel = real.parent, PurePath(real.name)
    try:
        digest = content_digest(path)
    except OSError as exc:
        raise UserError(f"cannot read {str(path)!r}: {exc.strerror or exc}", source=src, field=fieldname) from None
    return f"{rel.as_posix()}@{digest}", str(root)
