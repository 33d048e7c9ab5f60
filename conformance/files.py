"""Files written whole or not at all: a reader (another process, a later --resume) never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ReportError


def replace_atomically(path: Path, data: bytes | str) -> None:
    """Write data to a fresh temporary file beside path, then rename it over path (atomic on POSIX); several
    processes may write the same path at once. On failure the temporary file is removed and the OSError raised."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes | str) -> None:
    """replace_atomically() for a report file: a failure (a full disk, a folder made read-only) is a one-line
    ReportError naming the path."""
    try:
        replace_atomically(path, data)
    except OSError as exc:
        raise ReportError.of(path, exc) from None
