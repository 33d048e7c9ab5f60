"""The history store: every run recorded, so runs can be compared and trends drawn.

SQLite at `reports/history.sqlite` by default, or any SQLAlchemy URL (PostgreSQL for a fleet of CI runners:
`postgresql+psycopg2://user@host/db` or `postgresql+psycopg://...`); a plain file path means SQLite there.
The `CONFORMANCE_HISTORY` environment variable, when set, replaces the default.

Tables: `schema_version`, `runs` (one row per run), `run_devices` (one per target), `results` (one per
results.csv row). A store whose schema version is newer than this code's is refused. A run is inserted in
one transaction; SQLite writers take the write lock up front (BEGIN IMMEDIATE) and wait for each other
(busy timeout, then retries), so concurrent runs all land.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import time
import uuid
from pathlib import Path

import pandas as pd
import sqlalchemy as sa  # an ImportError here tells `conformance run` to record nothing

from .errors import ReportError, UserError

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


def _t(name: str):
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
        raise UserError(f"not a history store URL: {_why(exc)}", source="--history") from None
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        path = Path(u.database)
        if path.exists() and not path.is_file():
            raise UserError(f"{str(path)!r} is not a file", source="--history")
        if not path.exists():
            from .preflight import writable_dir

            writable_dir(path.parent, "--history")
            return
    _open(url).dispose()


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


def _why(exc: BaseException) -> str:
    """The first line of a driver's message, without SQLAlchemy's '(Background on this error ...)' tail."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _shown(eng) -> str:
    return eng.url.render_as_string(hide_password=True)


def _ensure(eng) -> None:
    """Create the tables when absent; refuse a store written by newer code."""
    for attempt in range(3):
        try:
            with eng.begin() as conn:
                if not sa.inspect(conn).has_table("schema_version"):
                    _schema().create_all(conn)
                    conn.execute(_t("schema_version").insert(), [{"version": SCHEMA_VERSION}])
                    return
                version = conn.execute(sa.select(sa.func.max(_t("schema_version").c.version))).scalar()
            break
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:  # another process created the tables first
            if attempt == 2:
                raise UserError(f"cannot set up history store {_shown(eng)}: {_why(exc)}", source="--history") from None
        except (sa.exc.SQLAlchemyError, OSError) as exc:  # not a database, no server, no such driver, locked ...
            if attempt == 2 or "locked" not in str(exc):
                raise UserError(f"cannot open history store {_shown(eng)}: {_why(exc)}", source="--history") from None
        time.sleep(0.2 * (attempt + 1))
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(
            f"history store {_shown(eng)} has schema version {version}, newer than this code's "
            f"{SCHEMA_VERSION}; upgrade the conformance package to use it",
            source="--history",
        )


def _open(url):
    eng = _engine(url)
    try:
        _ensure(eng)
    except BaseException:
        eng.dispose()
        raise
    return eng


def _clean(v):
    if v is None:
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else v
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v.item() if hasattr(v, "item") else v


def _result_rows(df: pd.DataFrame, run_id: str) -> list[dict]:
    out = []
    cols = [c for c in RESULT_TEXT + RESULT_FLOAT if c in df.columns]
    for rec in df[cols].to_dict("records"):
        row = {"run_id": run_id}
        for c in RESULT_TEXT:
            v = _clean(rec.get(c))
            row[c] = None if v is None else str(v)
        for c in RESULT_FLOAT:
            v = _clean(rec.get(c))
            row[c] = None if v is None else float(v)
        out.append(row)
    return out


def _jsonable(v):
    """JSON-safe copy: NaN and +-Inf become None (PostgreSQL's json type rejects them)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def record(df: pd.DataFrame, meta: dict, run_dir: str | None, url: str | None = None) -> str:
    """Insert one run (its metadata, targets and every row of df) in one transaction; returns its run id."""
    run_id = new_run_id()
    host = meta.get("host") or {}
    oracle = df[df["vs"].fillna("oracle") == "oracle"] if "vs" in df.columns else df
    run = {
        "run_id": run_id,
        "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
        "started": meta.get("started") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "suite": meta.get("suite"),
        "machine": host.get("name"),
        "os": host.get("os"),
        "cpu": host.get("cpu"),
        "cores": host.get("cores"),
        "git_commit": meta.get("git_commit"),
        "command": meta.get("command"),
        "run_dir": str(Path(run_dir).resolve()) if run_dir else None,
        "partial": bool(meta.get("partial", False)),
        "elapsed_s": _clean(meta.get("elapsed_s")),
        "packages": _jsonable(meta.get("packages") or {}),
        "counts": {str(k): int(v) for k, v in oracle["status"].value_counts().items()},
        "meta": _jsonable(json.loads(json.dumps(meta, default=str))),
    }
    devices = []
    for t in meta.get("targets") or []:
        d = t.get("device") or {}
        devices.append(
            {
                "run_id": run_id,
                "target": t.get("target"),
                "backend": t.get("backend"),
                "state": t.get("state"),
                **{
                    f"device_{f}" if f == "key" else f: (None if d.get(f) is None else str(d.get(f)))
                    for f in DEVICE_FIELDS
                },
            }
        )
    known = {d["target"] for d in devices}
    if "target" in df.columns:  # targets with rows but not in meta (hand-made frames)
        for target in sorted(set(df["target"].dropna()) - known):
            devices.append({"run_id": run_id, "target": target, "backend": target.split("@")[0]})
    rows = _result_rows(df, run_id)
    eng = _open(url)
    try:
        for attempt in range(8):
            try:
                with eng.begin() as conn:
                    conn.execute(_t("runs").insert(), [run])
                    if devices:
                        conn.execute(_t("run_devices").insert(), devices)
                    if rows:
                        conn.execute(_t("results").insert(), rows)
                return run_id
            except (sa.exc.SQLAlchemyError, OSError) as exc:  # SQLite busy past its timeout: try again
                if attempt == 7 or "locked" not in str(exc):  # a full disk, a lost server: one line (rolled back)
                    raise ReportError(f"cannot record the run in history store {_shown(eng)}: {_why(exc)}") from None
                time.sleep(0.5 * (attempt + 1))
    finally:
        eng.dispose()
    return run_id


def _frame(result) -> pd.DataFrame:
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def runs(url: str | None = None, suite: str | None = None, target: str | None = None) -> pd.DataFrame:
    """Runs newest first: run_id, started, suite, machine, cpu, git_commit, command, run_dir, partial, targets, counts.

    `target` keeps runs with a target (or device key or name) containing that substring."""
    r, d = _t("runs"), _t("run_devices")
    q = sa.select(
        r.c.run_id,
        r.c.recorded,
        r.c.started,
        r.c.suite,
        r.c.machine,
        r.c.cpu,
        r.c.git_commit,
        r.c.command,
        r.c.run_dir,
        r.c.partial,
        r.c.counts,
    )
    if suite:
        q = q.where(r.c.suite == suite)
    if target:
        pat = f"%{target.lower()}%"
        match = sa.or_(
            sa.func.lower(d.c.target).like(pat),
            sa.func.lower(d.c.device_key).like(pat),
            sa.func.lower(d.c.name).like(pat),
        )
        q = q.where(r.c.run_id.in_(sa.select(d.c.run_id).where(match)))
    q = q.order_by(r.c.started.desc(), r.c.recorded.desc())
    eng = _open(url)
    try:
        with eng.connect() as conn:
            df = _frame(conn.execute(q))
            devs = (
                _frame(
                    conn.execute(
                        sa.select(d.c.run_id, d.c.target).where(d.c.run_id.in_(list(df["run_id"]))).order_by(d.c.target)
                    )
                )
                if len(df)
                else None
            )
    finally:
        eng.dispose()
    by_run = devs.groupby("run_id")["target"].apply(list).to_dict() if devs is not None and len(devs) else {}
    df["targets"] = [by_run.get(i, []) for i in df["run_id"]]
    df["counts"] = [c if isinstance(c, dict) else json.loads(c or "{}") for c in df["counts"]]
    return df.drop(columns=["recorded"]).reset_index(drop=True)


def load_run(run_id: str, url: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The rows of one run (results.csv columns) and its run.json metadata (plus run_id, run_dir)."""
    r, res = _t("runs"), _t("results")
    eng = _open(url)
    try:
        with eng.connect() as conn:
            row = conn.execute(sa.select(r).where(r.c.run_id == run_id)).mappings().first()
            if row is None:
                raise UserError(f"no run {run_id!r} in history {_shown(eng)}", source="history")
            df = _frame(
                conn.execute(sa.select(*[c for c in res.c if c.name != "run_id"]).where(res.c.run_id == run_id))
            )
    finally:
        eng.dispose()
    meta = row["meta"] if isinstance(row["meta"], dict) else json.loads(row["meta"] or "{}")
    meta = {**meta, "run_id": run_id, "run_dir": row["run_dir"], "partial": bool(row["partial"])}
    for c in RESULT_FLOAT:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df, meta


def _label(meta: dict, fallback: str) -> str:
    commit = str(meta.get("git_commit") or "")[:12]
    what = ", ".join(str(p) for p in (meta.get("suite"), meta.get("started"), commit and f"git {commit}") if p)
    return f"{fallback} ({what})" if what else fallback


def read_dir(path: Path) -> tuple[pd.DataFrame, dict]:
    missing = [n for n in ("results.csv", "run.json") if not (path / n).is_file()]
    if missing:
        raise UserError(f"{str(path)!r} is not a run directory: no {' or '.join(missing)}", source="history")
    try:
        df = pd.read_csv(path / "results.csv")
        meta = json.loads((path / "run.json").read_text())
    except (ValueError, OSError) as exc:
        raise UserError(
            f"cannot read run directory {str(path)!r}: {str(exc).splitlines()[0]}", source="history"
        ) from None
    return df, meta


def resolve(ref: str, url: str | None = None, device: str | None = None, *, suite: str | None = None):
    """A run id (or a unique prefix of one), a run directory, `latest` or `previous` -> (df, meta, label)."""
    if ref in ("latest", "previous"):
        listed = runs(url, suite=suite, target=device)
        k = 0 if ref == "latest" else 1
        if len(listed) <= k:
            where = "".join(
                [f" of suite {suite!r}" if suite else "", f" with a target matching {device!r}" if device else ""]
            )
            raise UserError(f"{ref!r}: the history {url_of(url)} holds {len(listed)} run(s){where}", source="history")
        run_id = listed["run_id"].iloc[k]
        df, meta = load_run(run_id, url)
        return df, meta, _label(meta, f"{ref} = {run_id}")
    path = Path(ref)
    if path.is_dir():
        df, meta = read_dir(path)
        return df, meta, _label(meta, str(path))
    ids = list(runs(url)["run_id"])
    hits = [i for i in ids if i == ref] or ([i for i in ids if i.startswith(ref)] if len(ref) >= 6 else [])
    if len(hits) != 1:
        why = "matches several runs" if hits else "is neither a run id in the history nor a run directory"
        raise UserError(f"{ref!r} {why} (history {url_of(url)})", source="history")
    df, meta = load_run(hits[0], url)
    return df, meta, _label(meta, hits[0])


def trend(case_id: str, backend: str, device: str | None = None, url: str | None = None) -> pd.DataFrame:
    """One row per (run, target, output) of a case on a backend, against the oracle, oldest run first."""
    r, res = _t("runs"), _t("results")
    q = (
        sa.select(
            r.c.run_id,
            r.c.started,
            r.c.git_commit,
            res.c.target,
            res.c.output,
            res.c.status,
            res.c.norm_err,
            res.c.time_ms_median,
            res.c.time_ms_p10,
            res.c.time_ms_p90,
        )
        .join(res, res.c.run_id == r.c.run_id)
        .where(res.c.case_id == case_id, res.c.backend == backend, sa.or_(res.c.vs == "oracle", res.c.vs.is_(None)))
    )
    if device:
        q = q.where(sa.func.lower(res.c.target).like(f"%{device.lower()}%"))
    q = q.order_by(r.c.started, r.c.recorded, res.c.target, res.c.output)
    eng = _open(url)
    try:
        with eng.connect() as conn:
            df = _frame(conn.execute(q))
    finally:
        eng.dispose()
    if not len(df):
        dev = f" on a device matching {device!r}" if device else ""
        raise UserError(
            f"no results for case {case_id!r} on backend {backend!r}{dev} in history {url_of(url)}", source="history"
        )
    return df
