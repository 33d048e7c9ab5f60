"""The run journal: each finished case's rows reach disk as the case finishes, so a killed run loses nothing.

`DIR/journal.jsonl` holds one line per finished case, ``{"case": id, "n": number of rows, "rows": [...]}``,
and, after the last case, one per re-timed pair (retime.py), ``{"retime": case id, "target": label, "cols":
{...}}`` (the columns it changes in that pair's rows), each written with one write() and an fsync. A run
killed at any moment (kill -9, an OOM kill, a power cut) leaves
every case before the one in flight on disk; the line in flight, if torn, is dropped on reading and cut off
before anything is appended after it. `conformance run --resume DIR` takes what is done from here, never from
run.json or results.csv (the reports are derived from the journal, at the end of the run).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import ReportError

NAME = "journal.jsonl"


def _plain(v):
    """What json cannot write itself: numpy scalars become Python ones, anything else its text. (NaN and +-Inf
    are written as NaN / Infinity and read back as floats.)"""
    return v.item() if isinstance(v, np.generic) else str(v)


def read(out_dir: Path) -> tuple[list[dict], list[str], int]:
    """(rows, ids of the finished cases in order, byte length of the intact part). A line that does not parse
    or whose row count is wrong (a torn write) ends the intact part; nothing after it is trusted."""
    path = Path(out_dir) / NAME
    rows: list[dict] = []
    done: list[str] = []
    pair_rows: dict[tuple, list[dict]] = {}  # (case_id, target) -> its rows, for retime lines
    good = 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return rows, done, 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
            retimed = isinstance(rec, dict) and "retime" in rec and isinstance(rec.get("cols"), dict)
            ok = retimed or (
                isinstance(rec, dict) and isinstance(rec.get("rows"), list) and rec.get("n") == len(rec["rows"])
            )
        except ValueError:
            ok = False
        if not ok:
            break
        if retimed:
            for r in pair_rows.get((rec["retime"], rec.get("target")), ()):
                r.update(rec["cols"])
        else:
            rows.extend(rec["rows"])
            done.append(rec["case"])
            for r in rec["rows"]:
                pair_rows.setdefault((r.get("case_id"), r.get("target")), []).append(r)
        good += len(line)
    return rows, done, good


class Journal:
    """Append-only writer of DIR/journal.jsonl. fresh: start a new one; else continue an existing one after
    its intact part (read() tells how long that is)."""

    def __init__(self, out_dir: Path, fresh: bool):
        self.path = Path(out_dir) / NAME
        try:
            if fresh:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            else:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
                os.ftruncate(self.fd, read(out_dir)[2])  # a torn last line goes before anything is appended
            self.offset = os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as exc:
            raise ReportError.of(self.path, exc) from None
        self.cases = 0

    def append(self, case_id: str, rows: list[dict]) -> None:
        self._write({"case": case_id, "n": len(rows), "rows": rows})
        self.cases += 1

    def retime(self, case_id: str, target: str, cols: dict) -> None:
        self._write({"retime": case_id, "target": target, "cols": cols})

    def _write(self, rec: dict) -> None:
        line = (json.dumps(rec, default=_plain) + "\n").encode()
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self.fd, view) :]
            os.fsync(self.fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.offset)  # leave no torn line behind (truncating frees space)
            raise ReportError.of(
                self.path,
                exc,
                f"{self.cases} finished cases are safe in it (make room, then "
                f"conformance run --resume {self.path.parent})",
            ) from None
        self.offset += len(line)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
