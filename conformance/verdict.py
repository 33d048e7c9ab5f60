"""What a run's rows add up to: the verdict line of summary.md and the exit code of `conformance run`.

A green result must mean that something was checked. A row is *judged* when an output was compared (pass,
fail, xfail, xpass); skip and unsupported rows judge nothing, and crash, error and timeout rows are failures.
The verdicts, first match wins:

    FAILED           an unexpected row (fail, error, crash, timeout, xpass)                          exit 1
    NOTHING CHECKED  no judged row at all (no case selected, or every target skipped), or the system
                     under test was asked for (no --backend, or --backend opencl) and judged nothing
                     on any OpenCL device                                                           exit 3
    passed                                                                                          exit 0

`--allow-empty` turns NOTHING CHECKED into `passed (nothing checked, allowed)`, exit 0. An interrupted or
incomplete run is PARTIAL in front of the verdict of what it holds; the CLI exits 130 after an interrupt.
Targets that judged nothing are named in the verdict's notes either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .status import JUDGED, UNEXPECTED

SUT = "opencl"


@dataclass(frozen=True)
class Verdict:
    word: str  # passed | FAILED | NOTHING CHECKED | passed (nothing checked, allowed)
    code: int  # the exit code of a complete run
    notes: tuple[str, ...] = field(default=())

    def line(self, partial: bool = False) -> str:
        return f"PARTIAL ({self.word} so far)" if partial else self.word


def judge(df: pd.DataFrame, meta: dict, allow_empty: bool = False) -> Verdict:
    """The verdict of a run's rows (results.csv as a frame) and its metadata (run.json)."""
    status = df["status"] if len(df) else pd.Series([], dtype=object)
    judged = df[status.isin(JUDGED)] if len(df) else df
    notes = []
    silent = [t["target"] for t in meta.get("targets", []) if t["target"] not in set(judged.get("target", []))]
    if silent:
        notes.append("judged nothing on " + ", ".join(silent))
    empty = []
    if not len(judged):
        empty.append("no output was compared" + (" (the run selected no case)" if not len(df) else ""))
    if meta.get("sut_requested") and not (len(judged) and (judged["backend"] == SUT).any()):
        empty.append("the system under test (opencl) judged nothing on any device")
    if len(empty) and empty[-1].startswith("the system under test"):  # said once: drop the SUT targets from the list
        silent = [t for t in silent if not t.startswith(SUT)]
        notes = ["judged nothing on " + ", ".join(silent)] if silent else []
    notes[:0] = empty
    if status.isin(UNEXPECTED).any():
        return Verdict("FAILED", 1, tuple(notes))
    if empty:
        return (
            Verdict("passed (nothing checked, allowed)", 0, tuple(notes))
            if allow_empty
            else Verdict("NOTHING CHECKED", 3, tuple(notes))
        )
    return Verdict("passed", 0, tuple(notes))
