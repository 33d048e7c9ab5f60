"""Known deviations are data: cases/known_deviations.toml.

    [[deviation]]
    backend = "mxnet_v1"                  # required: a backend name, or a list of them
    versions = ">=1.9,<2"                 # optional, PEP 440 specifier on the backend's version
    case = { mode = "train", dtype = ["float16"] }   # optional: case fields, a value or a list of values
    case_id = "small-nchw,*"              # optional: glob on the case id
    output = ["var", "running_var"]       # optional: output name(s); default every output
    vs = "oracle"                         # optional: "oracle" or a glob such as "opencl@*"; default both
    devices = ["cuda:*", "gpu:0"]         # optional: glob(s) on the device of the row's target; default any
    reason = "what the framework does and why it differs"   # required
    link = "where it is documented or reported"             # optional
    strict = true                         # optional (default true): a matching pass is an unexpected xpass

A failing row (fail, error, crash, timeout) that an entry matches becomes `xfail` with the entry's reason; a
passing row it matches becomes `xpass` (flagged: the deviation may be gone), unless the entry says
strict = false (for deviations that show on some inputs only, such as outputs holding stale memory). An
entry that selects cases of the run, for a backend that ran (on a device it names), but matches none of their
rows (a misspelt output, a wrong version range) is warned about.

`devices` is matched (fnmatch, case-sensitive, like `vs`) against the device key of the target the row is from:
`cuda:0` for `torch@cuda:0`, `gpu:0` for `paddle@gpu:0`, an OpenCL device's key, and `cpu` for a target without
one (a framework's CPU target, `torch`; numpy). Absent: every device.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import tomllib
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .case import SUITE_FIELDS, Case
from .errors import UserError
from .status import FAILING
from .suite import CASES_DIR

DEFAULT_PATH = CASES_DIR / "known_deviations.toml"
_KEYS = {"backend", "versions", "case", "case_id", "output", "vs", "devices", "reason", "link", "strict"}
_CASE_FIELDS = set(SUITE_FIELDS) - {"inputs"}  # what a [case] selector may name


@dataclass(frozen=True)
class Deviation:
    index: int
    backends: tuple[str, ...]
    versions: SpecifierSet | None
    case: dict
    case_id: str | None
    outputs: tuple[str, ...] | None
    vs: str | None
    reason: str
    link: str
    strict: bool = True
    devices: tuple[str, ...] | None = None  # globs on device_of(row); None: any device

    def on_device(self, device: str) -> bool:
        return self.devices is None or any(fnmatch.fnmatchcase(device, d) for d in self.devices)

    def describe(self) -> str:
        return f"deviation #{self.index} ({'/'.join(self.backends)}: {self.reason[:60]})"

    def matches(self, row: dict, case: Case, version: str) -> bool:
        if row["backend"] not in self.backends:
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
        if not self.on_device(device_of(row)):
            return False
        return self.selects(case)

    def selects(self, case: Case) -> bool:
        """Whether the entry's case selectors (case_id, case) take this case."""
        if self.case_id is not None and not fnmatch.fnmatchcase(case.id, self.case_id):
            return False
        for key, want in self.case.items():
            have = getattr(case, "updates_running" if key == "update_running" else key)  # None: as mode says
            have = have.kind if key == "fill" else (list(have) if key == "shape" else have)
            options = want if isinstance(want, list) and key != "shape" else [want]
            if have not in options:
                return False
        return True


def device_of(row: dict) -> str:
    """The device key of the target a row is from (the part of `target` after '@', else the `device` column), 'cpu'
    for a target without one."""
    target = str(row.get("target") or "")
    return (target.partition("@")[2] if "@" in target else "") or str(row.get("device") or "") or "cpu"


def load(path: Path | str = DEFAULT_PATH) -> list[Deviation]:
    """The entries of a known-deviations file, in file order; none where there is no such file."""
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
    return [_entry(i, e, src) for i, e in enumerate(entries)]


def _entry(i: int, e, src: str) -> Deviation:
    """The i-th [[deviation]] table, checked field by field."""
    where = f"deviation[{i}]"
    if not isinstance(e, dict):
        raise UserError("must be a table", source=src, field=where)
    unknown = set(e) - _KEYS
    if unknown:
        raise UserError(f"unknown field {sorted(unknown)[0]!r}", source=src, field=f"{where}.{sorted(unknown)[0]}")
    if not isinstance(e.get("reason"), str) or not e["reason"]:
        raise UserError('needs reason = "..."', source=src, field=f"{where}.reason")
    backends = _backends(e, src, where)
    if not isinstance(e.get("strict", True), bool):
        raise UserError(f"must be true or false, got {e['strict']!r}", source=src, field=f"{where}.strict")
    versions = None
    if "versions" in e:
        try:
            versions = SpecifierSet(str(e["versions"]))
        except InvalidSpecifier:
            raise UserError(
                f"not a version specifier: {e['versions']!r}", source=src, field=f"{where}.versions"
            ) from None
    case = e.get("case", {})
    if not isinstance(case, dict) or set(case) - _CASE_FIELDS:
        raise UserError(f"must be a table of case fields, got {case!r}", source=src, field=f"{where}.case")
    outputs = _outputs(e, src, where)
    devices = _devices(e, src, where)
    return Deviation(
        i,
        backends,
        versions,
        case,
        e.get("case_id"),
        outputs,
        e.get("vs"),
        e["reason"],
        e.get("link", ""),
        e.get("strict", True),
        devices,
    )


def _backends(e: dict, src: str, where: str) -> tuple[str, ...]:
    """backend: a name or a non-empty list of names."""
    backend = e.get("backend")
    backend = [backend] if isinstance(backend, str) else backend
    if not isinstance(backend, list) or not backend or not all(isinstance(b, str) and b for b in backend):
        raise UserError(
            f'needs backend = "name" or a list of names, got {e.get("backend")!r}',
            source=src,
            field=f"{where}.backend",
        )
    return tuple(backend)


def _outputs(e: dict, src: str, where: str) -> tuple[str, ...] | None:
    """output: a name or a list of names; None (every output) where absent."""
    outputs = e.get("output")
    if isinstance(outputs, str):
        return (outputs,)
    if isinstance(outputs, list) and all(isinstance(o, str) for o in outputs):
        return tuple(outputs)
    if outputs is not None:
        raise UserError(f"must be a string or a list of strings, got {outputs!r}", source=src, field=f"{where}.output")
    return None


def _devices(e: dict, src: str, where: str) -> tuple[str, ...] | None:
    """devices: a glob or a non-empty list of globs; None (any device) where absent."""
    devices = e.get("devices")
    if isinstance(devices, str):
        devices = [devices]
    if devices is not None and (
        not isinstance(devices, list) or not devices or not all(isinstance(d, str) and d.strip() for d in devices)
    ):
        raise UserError(
            f'needs devices = "glob" or a non-empty list of device globs (such as "cuda:*"), got {e["devices"]!r}',
            source=src,
            field=f"{where}.devices",
        )
    return None if devices is None else tuple(devices)


def apply(rows: list[dict], cases: dict[str, Case], versions: dict[str, str], deviations: list[Deviation]) -> list[str]:
    """Turn matching fail rows into xfail and pass rows into xpass, in place; return warnings."""
    used = set()
    for row in rows:
        case = cases[row["case_id"]]
        for dev in deviations:
            if dev.matches(row, case, versions.get(row["backend"], "")):
                used.add(dev.index)
                if row["status"] not in ("pass",) + FAILING:
                    break
                note = f"known deviation: {dev.reason}" + (f" ({dev.link})" if dev.link else "")
                if row["status"] in FAILING:
                    row["status"], row["reason"] = "xfail", f"{note}; {row['status']}: {row['reason']}"
                elif dev.strict:
                    row["status"], row["reason"] = "xpass", f"passes although listed as a {note}"
                break
    ran = {(row["backend"], device_of(row)) for row in rows}
    return [
        f"{DEFAULT_PATH.name}: {d.describe()} matches no row"
        for d in deviations
        if any(b in d.backends and d.on_device(dev) for b, dev in ran)
        and d.index not in used
        and any(d.selects(c) for c in cases.values())
    ]
