"""A pair's timing record: how its median time sits and moves across earlier runs in the history store.

compare (regress.py) holds a new time against it: the record, not one base run, says what a pair's time is.
"""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa

from .history_store import frame_of, open_store, table


def timing_drift(
    url: str | None,
    suite: str | None,
    machine: str | None,
    until: str | None = None,
    window: int = 20,
    min_runs: int = 5,
    busy: float = 0.5,
) -> dict[tuple[str, str], tuple[float, float, float]]:
    """How each (case, target)'s median time sits and moves across runs of the same suite on the same machine:
    from the last `window` complete runs started before `until`, on a machine that was not busy (run.json
    machine_load), for pairs seen in at least `min_runs` of them, (centre, spread, worst): the median of those
    runs' medians (ms), the robust standard deviation of their logarithms (1.4826 x the median absolute
    deviation) and the slowest of them over the centre (a shared machine's drift has a tail the deviation does
    not see: a run in 7 at 1.3-1.4x, numpy here). compare() holds a new time against these when they exist."""
    if not suite or not machine:
        return {}
    r, res = table("runs"), table("results")
    q = sa.select(r.c.run_id, r.c.meta).where(r.c.suite == suite, r.c.machine == machine, r.c.partial.is_(False))
    if until:
        q = q.where(r.c.started < until)
    q = q.order_by(r.c.started.desc(), r.c.recorded.desc())
    eng = open_store(url)
    try:
        with eng.connect() as conn:
            ids = []
            for run_id, meta in conn.execute(q):  # newest first; runs on a busy machine say nothing of drift
                meta = meta if isinstance(meta, dict) else json.loads(meta or "{}")
                share = (meta.get("machine_load") or {}).get("cpu_stalled_share")
                if not (isinstance(share, (int, float)) and share > busy):
                    ids.append(run_id)
                if len(ids) == window:
                    break
            if len(ids) < min_runs:
                return {}
            times = frame_of(
                conn.execute(
                    sa.select(res.c.run_id, res.c.case_id, res.c.target, sa.func.min(res.c.time_ms_median).label("t"))
                    .where(res.c.run_id.in_(ids), sa.or_(res.c.vs == "oracle", res.c.vs.is_(None)))
                    .group_by(res.c.run_id, res.c.case_id, res.c.target)
                )
            )
    finally:
        eng.dispose()
    out = {}
    for (case_id, target), g in times.dropna().groupby(["case_id", "target"]):
        t = g["t"].to_numpy(dtype=float)
        if len(t) >= min_runs and (t > 0).all():
            logs = np.log(t)
            centre = float(np.exp(np.median(logs)))
            out[(case_id, target)] = (
                centre,
                float(1.4826 * np.median(np.abs(logs - np.median(logs)))),
                float(t.max() / centre),
            )
    return out
