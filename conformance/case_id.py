"""A case id: the case's canonical name, as text, and back.

The id holds every field, in a fixed order, as comma-separated tokens: the case name first, then ``key=value``
pairs, for example::

    small-nchw,dtype=float32,shape=8x16x7x7,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,
    stats=var,momentum_dir=old,eps=1e-05,momentum=0.9,seed=0,fill=normal:mean=0.0:std=1.0

(on one line). A field in QUIET_DEFAULTS is named only when it differs from that value. ``format_id`` writes
the id of a case, ``parse_id`` reads one back (``Case.id`` and ``Case.from_id`` call them); ``file_stem`` turns an
id into a file name, ``content_digest`` gives the digest an id names an inputs file by.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import fields
from urllib.parse import quote, unquote

from .case_fill import Fill, parse_float
from .errors import UserError

# Fields an id names only when they differ from this value: every id written before they existed stays valid.
QUIET_DEFAULTS = {"update_running": None, "act": "none", "inplace": False, "flags": "", "inputs": None}
DIGEST_HEX = 16
STEM_PREFIX = 60  # readable characters of a case id in file_stem()
_STEM_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+-]")


def content_digest(path) -> str:
    """The first 16 hex digits of the sha256 of a file's content, as a case id names its inputs file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:DIGEST_HEX]


def file_stem(case_id: str) -> str:
    """A file name for a case id, unique and at most 77 characters whatever the id: its first STEM_PREFIX
    characters (others than [A-Za-z0-9_.,=+-] written as _, no leading symbol), '-', and 16 hex digits of the
    sha256 of the whole id."""
    prefix = _STEM_UNSAFE.sub("_", case_id[:STEM_PREFIX]).lstrip("_.,=+-")
    digest = hashlib.sha256(case_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{prefix}-{digest}" if prefix else digest


def format_id(case) -> str:
    """The id of a case: its name, then key=value for every compared field not at its quiet default."""
    tokens = [case.name]
    for f in fields(case):
        if f.name == "name" or not f.compare:  # inputs_root: where this machine keeps the file
            continue
        value = getattr(case, f.name)
        if f.name in QUIET_DEFAULTS and value == QUIET_DEFAULTS[f.name] and type(value) is type(QUIET_DEFAULTS[f.name]):
            continue
        tokens.append(f"{f.name}={format_value(f.name, value)}")
    return ",".join(tokens)


def parse_id(case_cls, case_id: str, *, source: str, inputs_root: str | None):
    """The case_cls (Case) an id names; an inputs file named in it is resolved against inputs_root (a folder),
    else the current folder (taken now)."""
    if not isinstance(case_id, str) or not case_id:
        raise UserError("empty case id", source=source)
    name, *pairs = case_id.split(",")
    values: dict[str, object] = {}
    known = {f.name for f in fields(case_cls) if f.compare} - {"name"}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in known:
            raise UserError(
                f"bad token {pair!r} in case id {case_id!r} "
                f"(expected key=value with key in {', '.join(sorted(known))})",
                source=source,
            )
        if key in values:
            raise UserError(f"token {key!r} appears twice in case id {case_id!r}", source=source)
        values[key] = parse_value(key, text, source)
    if "inputs" in values:
        values["inputs_root"] = os.path.abspath(inputs_root or os.curdir)
    try:
        return case_cls(name=name, **values)
    except UserError as exc:
        raise UserError(f"{exc} (in case id {case_id!r})", source=source) from None


def format_value(name: str, value) -> str:
    """A field's value as its id token writes it."""
    if name == "shape":
        return "x".join(str(d) for d in value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Fill):
        return value.token()
    if name == "inputs":
        return quote(value, safe="@")  # '/' and ',' quoted: a file name, a shell word, one token
    if name == "flags":
        return quote(value, safe="=")  # ',' quoted: one token
    return str(value)


def parse_int(text: str, source, fieldname) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"not an integer: {text!r}", source=source, field=fieldname) from None


def parse_value(key: str, text: str, source):
    """A field's value from its id token (checked as a case's field only when the case is made)."""
    if key == "shape":
        return tuple(parse_int(t, source, "shape") for t in text.split("x"))
    if key in ("axis", "seed"):
        return parse_int(text, source, key)
    if key in ("backward", "fix_gamma", "update_running", "inplace"):
        if text not in ("0", "1"):
            raise UserError(f"must be 0 or 1, got {text!r}", source=source, field=key)
        return text == "1"
    if key in ("eps", "momentum"):
        return parse_float(text, source, key)
    if key == "fill":
        return Fill.from_token(text, source=source)
    if key in ("inputs", "flags"):
        return unquote(text)
    return text
