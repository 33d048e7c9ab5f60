"""Progress: a bar on a terminal, plain lines under CI or when output is redirected."""

from __future__ import annotations

import os
import sys
import time


class Progress:
    def __init__(self, total: int, stream=None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() and not os.environ.get("CI")
        self.start = time.monotonic()
        self.last_line = 0.0

    def step(self, label: str, status_counts: dict) -> None:
        self.done += 1
        counts = " ".join(f"{k}={v}" for k, v in sorted(status_counts.items()))
        if self.bar:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            line = f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {counts} {label[:40]}"
            self.stream.write(line[:160].ljust(120))
            self.stream.flush()
        elif self.done == self.total or time.monotonic() - self.last_line > 5 or self.total <= 50:
            self.last_line = time.monotonic()
            print(
                f"[{self.done}/{self.total}] {time.monotonic() - self.start:.1f}s {counts} {label}",
                file=self.stream,
                flush=True,
            )

    def note(self, text: str) -> None:
        """A line of its own (the bar, if any, ends first)."""
        if self.bar:
            self.stream.write("\n")
        print(f"{time.monotonic() - self.start:.1f}s {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()
