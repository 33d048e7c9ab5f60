"""The one exception a user mistake raises; the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """A mistake in what the user gave us (a case file, an id, an option).

    The message names the file, the field and the value, so it can stand alone on one line.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(_one_line(f"{where}: {message}" if where else message))


# Every character str.splitlines() breaks a line at: a value echoed into a message (a case name of "\x1e", say)
# must not split it, so these are written escaped.
_LINE_BREAKS = {c: repr(chr(c))[1:-1] for c in (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}


def _one_line(text: str) -> str:
    return text.translate(_LINE_BREAKS)


class ReportError(Exception):
    """The run's output could not be written (a full disk, a folder made read-only mid-run): one line naming the
    path and the system's reason; the CLI exits 4. Rows already in the journal stay there for --resume."""

    @classmethod
    def of(cls, path, exc: OSError, note: str = "") -> "ReportError":
        why = exc.strerror or type(exc).__name__
        return cls(_one_line(f"cannot write {str(path)!r}: {why}" + (f"; {note}" if note else "")))


def first_line(exc: BaseException) -> str:
    """An exception as one line for a row's reason: its type and the first non-blank line of its message
    (frameworks raise messages of many lines, C++ stack traces included)."""
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
