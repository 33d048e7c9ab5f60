"""Recording a run into the history store: its metadata, its targets and every row of its results, in one
transaction, retried while another SQLite writer holds the lock."""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
import uuid
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from .errors import ReportError
from .history_store import DEVICE_FIELDS, RESULT_FLOAT, RESULT_TEXT, open_store, shown_url, table, why_failed


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


def _run_row(run_id: str, df: pd.DataFrame, meta: dict, run_dir: str | None) -> dict:
    """The `runs` row: run.json's fields, and the status counts over the rows against the oracle."""
    host = meta.get("host") or {}
    oracle = df[df["vs"].fillna("oracle") == "oracle"] if "vs" in df.columns else df
    return {
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


def _device_rows(run_id: str, df: pd.DataFrame, meta: dict) -> list[dict]:
    """The `run_devices` rows: each target of run.json, then any target with rows that run.json lacks."""
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
    return devices


def _insert(eng, run: dict, devices: list[dict], rows: list[dict]) -> None:
    """All three tables in one transaction; a SQLite store busy past its timeout is tried again."""
    for attempt in range(8):
        try:
            with eng.begin() as conn:
                conn.execute(table("runs").insert(), [run])
                if devices:
                    conn.execute(table("run_devices").insert(), devices)
                if rows:
                    conn.execute(table("results").insert(), rows)
            return
        except (sa.exc.SQLAlchemyError, OSError) as exc:  # SQLite busy past its timeout: try again
            if attempt == 7 or "locked" not in str(exc):  # a full disk, a lost server: one line (rolled back)
                raise ReportError(
                    f"cannot record the run in history store {shown_url(eng)}: {why_failed(exc)}"
                ) from None
            time.sleep(0.5 * (attempt + 1))


def record(df: pd.DataFrame, meta: dict, run_dir: str | None, url: str | None = None) -> str:
    """Insert one run (its metadata, targets and every row of df) in one transaction; returns its run id."""
    run_id = new_run_id()
    run = _run_row(run_id, df, meta, run_dir)
    devices = _device_rows(run_id, df, meta)
    rows = _result_rows(df, run_id)
    eng = open_store(url)
    try:
        _insert(eng, run, devices, rows)
    finally:
        eng.dispose()
    return run_id
