"""The one exception a user mistake raises; the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """A mistake in what the user gave us (a case file, an id, an option).

    The message names the file, the field and the value, so it can stand alone on one line.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)
