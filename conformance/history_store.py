"""The history store's schema and connection: where the store is, opening it, creating its tables.

SQLite at `reports/history.sqlite` by default, or any SQLAlchemy URL (PostgreSQL for a fleet of CI runners:
`postgresql+psycopg2://user@host/db` or `postgresql+psycopg://...`); a plain file path means SQLite there.
The `CONFORMANCE_HISTORY` environment variable, when set, replaces the default.

Tables: `schema_version`, `runs` (one row per run), `run_devices` (one per target), `results` (one per
results.csv row). A store whose schema version is newer than this code's is refused. SQLite writers take the
write lock up front (BEGIN IMMEDIATE) and wait for each other (busy timeout, then the caller's retries).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa  # an ImportError here tells `conformance run` to record nothing

from .errors import UserError

SCHEMA_VERSION = 1
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "reports" / "history.sqlite"
RESULT_TEXT = ("case_id", "backend", "device", "target", "vs", "dtype", "mode", "output", "status", "reason")
RESULT_FLOAT = (
    "norm_err",
    "ulp_at_max",
    "max_abs_err",
    "max_rel_err",
    "max_ulp",
    "threshold",
    "time_ms_median",
    "time_ms_min",
    "time_ms_p10",
    "time_ms_p90",
    "kernel_ms_median",
    "bytes",
    "gbps",
    "repeats",
)
DEVICE_FIELDS = ("key", "vendor", "name", "platform", "driver", "version")


@functools.cache
def _schema():
    md = sa.MetaData()
    sa.Table("schema_version", md, sa.Column("version", sa.Integer, nullable=False))
    runs = sa.Table(
        "runs",
        md,
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("recorded", sa.String(40), nullable=False),  # ISO UTC with microseconds: orders runs in a second
        *[
            sa.Column(c, sa.Text)
            for c in ("started", "suite", "machine", "os", "cpu", "git_commit", "command", "run_dir")
        ],
        sa.Column("cores", sa.Integer),
        sa.Column("partial", sa.Boolean, nullable=False, default=False),
        sa.Column("elapsed_s", sa.Float),
        sa.Column("packages", sa.JSON),
        sa.Column("counts", sa.JSON),  # {status: n} over the rows against the oracle
        sa.Column("meta", sa.JSON),  # run.json as given
    )
    sa.Index("runs_started", runs.c.started)
    sa.Table(
        "run_devices",
        md,
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("target", sa.Text, primary_key=True),
        sa.Column("backend", sa.Text),
        sa.Column("state", sa.Text),
        *[sa.Column(f"device_{f}" if f == "key" else f, sa.Text) for f in DEVICE_FIELDS],
    )
    res = sa.Table(
        "results",
        md,
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
        *[sa.Column(c, sa.Text) for c in RESULT_TEXT],
        *[sa.Column(c, sa.Float) for c in RESULT_FLOAT],
    )
    sa.Index("results_run", res.c.run_id)
    sa.Index("results_case", res.c.case_id, res.c.backend)
    return md


def table(name: str):
    return _schema().tables[name]


def disabled(url: str | None) -> bool:
    """`--history none` (or CONFORMANCE_HISTORY=none): record nothing. Never a file named 'none'."""
    return (url or os.environ.get("CONFORMANCE_HISTORY") or "").strip().lower() == "none"


def url_of(url: str | None) -> str:
    """The store's SQLAlchemy URL: the option, else $CONFORMANCE_HISTORY, else reports/history.sqlite; a plain
    path means SQLite there. Resolving writes nothing."""
    if disabled(url):
        raise UserError(
            "'none' records nothing and has nothing to read: name a history store (an SQLAlchemy URL "
            "or an SQLite file), or leave --history and CONFORMANCE_HISTORY unset for the default "
            f"{DEFAULT_PATH}",
            source="--history",
        )
    url = url or os.environ.get("CONFORMANCE_HISTORY") or str(DEFAULT_PATH)
    if "://" not in url:  # a file path
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    return url


def check(url: str | None) -> None:
    """Before a run records into it: the store opens and holds this suite's schema (or none yet). A file that
    is not a database, an unknown scheme, a server that does not answer: one UserError line. A SQLite file
    that does not exist yet is not created here; its folder must be writable."""
    try:
        u = sa.engine.make_url(url_of(url))
    except sa.exc.ArgumentError as exc:
        raise UserError(f"not a history store URL: {why_failed(exc)}", source="--history") from None
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        path = Path(u.database)
        if path.exists() and not path.is_file():
            raise UserError(f"{str(path)!r} is not a file", source="--history")
        if not path.exists():
            from .preflight import writable_dir

            writable_dir(path.parent, "--history")
            return
    open_store(url).dispose()


def _engine(url: str | None):
    full = shown = url_of(url)
    try:
        u = sa.engine.make_url(full)
        shown = u.render_as_string(hide_password=True)
        if u.get_backend_name() == "sqlite":
            if u.database and u.database != ":memory:":
                Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            eng = sa.create_engine(u, connect_args={"timeout": 60})

            @sa.event.listens_for(eng, "connect")
            def _no_implicit_begin(dbapi_conn, _record):
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves

            @sa.event.listens_for(eng, "begin")
            def _begin_immediate(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock first: no lock-upgrade deadlock
        else:
            eng = sa.create_engine(u, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise UserError(
            f"cannot open history store {shown!r}: {str(exc).splitlines()[0]} "
            "(PostgreSQL needs psycopg2-binary or psycopg)",
            source="--history",
        ) from None
    return eng


def why_failed(exc: BaseException) -> str:
    """The first line of a driver's message, without SQLAlchemy's '(Background on this error ...)' tail."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def shown_url(eng) -> str:
    return eng.url.render_as_string(hide_password=True)


def _ensure(eng) -> None:
    """Create the tables when absent; refuse a store written by newer code."""
    for attempt in range(3):
        try:
            with eng.begin() as conn:
                if not sa.inspect(conn).has_table("schema_version"):
                    _schema().create_all(conn)
                    conn.execute(table("schema_version").insert(), [{"version": SCHEMA_VERSION}])
                    return
                version = conn.execute(sa.select(sa.func.max(table("schema_version").c.version))).scalar()
            break
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:  # another process created the tables first
            if attempt == 2:
                raise UserError(
                    f"cannot set up history store {shown_url(eng)}: {why_failed(exc)}", source="--history"
                ) from None
        except (sa.exc.SQLAlchemyError, OSError) as exc:  # not a database, no server, no such driver, locked ...
            if attempt == 2 or "locked" not in str(exc):
                raise UserError(
                    f"cannot open history store {shown_url(eng)}: {why_failed(exc)}", source="--history"
                ) from None
        time.sleep(0.2 * (attempt + 1))
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(
            f"history store {shown_url(eng)} has schema version {version}, newer than this code's "
            f"{SCHEMA_VERSION}; upgrade the conformance package to use it",
            source="--history",
        )


def open_store(url):
    eng = _engine(url)
    try:
        _ensure(eng)
    except BaseException:
        eng.dispose()
        raise
    return eng


def frame_of(result) -> pd.DataFrame:
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
