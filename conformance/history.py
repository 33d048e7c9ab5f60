"""The history store: every run recorded, so runs can be compared and trends drawn.

This module is the store's public face and its reading side: listing runs, loading one back, resolving a
reference ('latest', 'previous', a run id or its prefix, a run directory) and one case's trend. The schema and
opening the store are in `history_store`, recording a run in `history_record`; their public names are
re-exported here, so `from conformance import history` is all a caller needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import sqlalchemy as sa  # an ImportError here tells `conformance run` to record nothing

from .errors import UserError
from .history_record import new_run_id, record
from .history_store import (
    DEFAULT_PATH,
    DEVICE_FIELDS,
    RESULT_FLOAT,
    RESULT_TEXT,
    SCHEMA_VERSION,
    check,
    disabled,
    frame_of,
    open_store,
    shown_url,
    table,
    url_of,
)

__all__ = [
    "DEFAULT_PATH",
    "DEVICE_FIELDS",
    "RESULT_FLOAT",
    "RESULT_TEXT",
    "SCHEMA_VERSION",
    "check",
    "disabled",
    "load_run",
    "new_run_id",
    "read_dir",
    "record",
    "resolve",
    "runs",
    "trend",
    "url_of",
]


def runs(url: str | None = None, suite: str | None = None, target: str | None = None) -> pd.DataFrame:
    """Runs newest first: run_id, started, suite, machine, cpu, git_commit, command, run_dir, partial, targets, counts.

    `target` keeps runs with a target (or device key or name) containing that substring."""
    r, d = table("runs"), table("run_devices")
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
    eng = open_store(url)
    try:
        with eng.connect() as conn:
            df = frame_of(conn.execute(q))
            devs = (
                frame_of(
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
    r, res = table("runs"), table("results")
    eng = open_store(url)
    try:
        with eng.connect() as conn:
            row = conn.execute(sa.select(r).where(r.c.run_id == run_id)).mappings().first()
            if row is None:
                raise UserError(f"no run {run_id!r} in history {shown_url(eng)}", source="history")
            df = frame_of(
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
    r, res = table("runs"), table("results")
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
    eng = open_store(url)
    try:
        with eng.connect() as conn:
            df = frame_of(conn.execute(q))
    finally:
        eng.dispose()
    if not len(df):
        dev = f" on a device matching {device!r}" if device else ""
        raise UserError(
            f"no results for case {case_id!r} on backend {backend!r}{dev} in history {url_of(url)}", source="history"
        )
    return df
