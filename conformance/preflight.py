"""Everything a run needs from the user, checked before its first case: nothing is lost to a late mistake.

The README promises exit 2 = nothing written. So the output folder, the history store and every optional
input file are checked here, before any case runs and before anything is written; a mistake is one UserError
line naming the option and the value.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pandas as pd

from .errors import UserError

# report.html shows a bench.csv with these columns; one without them is stale (from an older bench)
BENCH_COLUMNS = ("case_id", "phase", "target", "time_ms_median", "frac_of_copy", "gbps")
# the files a run writes in its folder: a fresh run into an old folder removes the old ones first, so the folder
# never mixes two runs
RUN_FILES = ("results.csv", "summary.md", "report.html", "run.json", "journal.jsonl")


def number(kind=float, *, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: a finite number (nan and inf refused) within [low, high] (low excluded if low_open)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def path_arg(text: str) -> Path:
    """An argparse type for a folder or file option: an empty value is refused (Path('') is the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable_dir(path: Path, option: str = "--out") -> None:
    """The folder exists and is writable, or can be made: its nearest existing ancestor is a writable folder."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{str(path)!r} exists and is not a folder", source=option)
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{str(path)!r} cannot be made: {str(base)!r} is not a folder", source=option)
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{str(path)!r} is not writable ({str(base)!r} is not writable by this user)", source=option)


def conventions_file(value: str | None, default: str) -> tuple[dict | None, str | None]:
    """conventions.json for report.html: (data, warning). A file the user named must be right (UserError); the
    default one, when absent or unreadable, is left out with a warning."""
    if not value:
        return None, None
    path, explicit = Path(value), value != default
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError("expected an object of one object per framework")
        return data, None
    except FileNotFoundError:
        if explicit:
            raise UserError(f"no such file {value!r}", source="--conventions") from None
        return None, None
    except (OSError, ValueError) as exc:
        why = f"{value!r} is not a conventions.json from `conformance conventions --out`: {str(exc).splitlines()[0]}"
        if explicit:
            raise UserError(why, source="--conventions") from None
        return None, f"--conventions: {why}; left out of report.html"


def bench_file(value: str | None, default: str) -> tuple[pd.DataFrame | None, str | None]:
    """bench.csv for report.html: (frame, warning); like conventions_file."""
    if not value:
        return None, None
    path, explicit = Path(value), value != default
    try:
        df = pd.read_csv(path)
        missing = [c for c in BENCH_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"no column {missing[0]!r} (stale: from an older `conformance bench`?)")
        return df, None
    except FileNotFoundError:
        if explicit:
            raise UserError(f"no such file {value!r}", source="--bench") from None
        return None, None
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        why = (
            f"{value!r} is not a bench.csv of `conformance bench`: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        )
        if explicit:
            raise UserError(why, source="--bench") from None
        return None, f"--bench: {why}; left out of report.html"


def clear_run_files(out: Path) -> None:
    """A fresh run into a folder that holds an older run: its report files go first (arrays included)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    arrays = out / "arrays"
    if arrays.is_dir():
        for f in arrays.glob("*.npz"):
            f.unlink(missing_ok=True)
        (arrays / "index.csv").unlink(missing_ok=True)
