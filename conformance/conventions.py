"""`conformance conventions`: each installed framework's BatchNorm conventions, measured from its behaviour.

Every probe calls the framework through its backend (in its worker) on small inputs built so that the
hypotheses give visibly different answers, and reads the convention off the result:

- momentum direction: the running mean after one training step, solved for the weight w of the old value;
  w equal to the momentum handed over means it weighs the old value, 1 - momentum the new one;
- running-variance estimator: the batch variance the running variance moved towards, over the biased one
  (1, or m / (m - 1) for the unbiased estimator);
- normalising variance: y against both estimators;
- batch statistic returned, and what each extra output holds (mean, var or invstd, biased or not);
- default eps: inference with the framework's default eps on a tiny running variance (1e-3), solved from y;
- default momentum: one training step with the framework's default momentum from a zero running mean;
- a training call without backward updates the running statistics (or only backward does);
- inference leaves the running statistics alone.

Documented values come from the backend's DOCUMENTED profile (the framework's own pages: README.md, Sources).

Each target is probed on its own: a framework's CPU target (`torch`) and each of its accelerators (`torch@cuda:0`,
`paddle@gpu:0`, ...) are a column each, keyed by the target label.

Flag combinations: each combination a backend's FLAGS table lists (documented or not) is called once on the
training probe's inputs with running statistics far from the batch's, and read off: which statistics y was
normalised with (batch, running, or neither), and whether the running statistics moved. Beside each, what the
page says; a combination the page leaves undefined is shown as observed, never judged.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .backends.base import TimingPolicy
from .case import Case, Fill, profiled
from .generate import generate
from .report import md_text
from .worker import Worker

ONCE = TimingPolicy(warmup=0, min_repeats=1, max_repeats=1, budget_s=0.0)
PROBE = Case(
    name="probe",
    shape=(4, 3, 2, 2),
    axis=1,
    mode="train",
    backward=True,
    eps=1e-5,
    momentum=0.7,
    seed=5,
    fill=Fill.make("normal", {"mean": 2.0, "std": 1.5}),
)
ROWS = (
    "momentum direction",
    "running-variance estimator",
    "normalising variance",
    "batch statistic returned",
    "extra outputs",
    "default eps",
    "default momentum",
    "forward-only training updates running stats",
    "inference leaves running stats",
)


def _close(a, b, rtol=2e-3) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rtol * np.maximum(np.abs(b), 1e-6)))


def _stats(x: np.ndarray, case: Case):
    x3 = x.astype(np.float64).reshape(case.outer, case.channels, case.inner)
    mean = x3.mean(axis=(0, 2))
    var_b = x3.var(axis=(0, 2))
    return x3, mean, var_b, var_b * case.count / (case.count - 1)


def _what(value, mean, var_b, var_u, eps) -> str:
    for name, ref in (
        ("mean", mean),
        ("var (biased)", var_b),
        ("var (unbiased)", var_u),
        ("invstd", 1 / np.sqrt(var_b + eps)),
        ("invstd (unbiased)", 1 / np.sqrt(var_u + eps)),
    ):
        if _close(value, ref):
            return name
    return "something else"


def _call(worker, case, inputs, use_defaults=False):
    reply = worker.run(case, inputs, ONCE, timeout=120, use_defaults=use_defaults)
    return reply.outputs if reply.ok else f"{reply.status}: {reply.reason}"


def probe(name: str, device_key: str | None = None) -> dict:
    """{convention: observed} for one framework backend on one of its devices (None: its CPU target), plus
    'documented' and 'version'."""
    w = Worker(name, device_key).start()
    if w.state != "ready":
        return {"error": w.reason or w.state}
    try:
        meta = w.meta
        prof = meta.profile
        obs = {"version": meta.version, "documented": _documented(meta.documented)}
        obs.update(_train_probe(w, prof, meta.extra_outputs))
        obs.update(_infer_probes(w, prof))
        if meta.flags:
            obs["flags"] = [_flag_probe(w, prof, c) for c in meta.flags]
        return obs
    finally:
        w.stop()


def _documented(doc) -> dict:
    if doc is None:
        return {}
    return {
        "momentum direction": doc.momentum_dir,
        "running-variance estimator": doc.running_var,
        "batch statistic returned": doc.stats,
        "default eps": doc.eps,
        "default momentum": doc.momentum,
    }


def _train_probe(w, prof, extra_outputs) -> dict:
    case = profiled(PROBE, prof)
    inp = generate(case)
    inp = dataclasses.replace(
        inp, running_mean=np.full(3, 0.5, inp.running_mean.dtype), running_var=np.full(3, 2.0, inp.running_var.dtype)
    )
    out = _call(w, case, inp)
    if isinstance(out, str):
        return {r: out for r in ROWS[:5]}
    x3, mean, var_b, var_u = _stats(inp.x, case)
    p = prof.translate_momentum(case.momentum)
    res = {}
    with np.errstate(all="ignore"):
        wgt = float(np.median((np.asarray(out["running_mean"], np.float64) - mean) / (0.5 - mean)))
    if abs(wgt - p) < 1e-3:
        res["momentum direction"], w_old = "old", p
    elif abs(wgt - (1 - p)) < 1e-3:
        res["momentum direction"], w_old = "new", 1 - p
    else:
        res["momentum direction"], w_old = f"neither (old value weighed {wgt:.4g})", wgt
    moved = (np.asarray(out["running_var"], np.float64) - w_old * 2.0) / (1 - w_old)
    ratio = float(np.median(moved / var_b))
    m = PROBE.count
    res["running-variance estimator"] = (
        "biased"
        if abs(ratio - 1) < 2e-3
        else "unbiased"
        if abs(ratio - m / (m - 1)) < 2e-3
        else f"neither (x{ratio:.4g})"
    )
    gamma, beta = inp.gamma.astype(np.float64), inp.beta.astype(np.float64)
    y = np.asarray(out["y"], np.float64).reshape(x3.shape)
    for label, v in (("biased", var_b), ("unbiased", var_u)):
        if _close(
            y,
            (x3 - mean[None, :, None]) / np.sqrt(v + case.eps)[None, :, None] * gamma[None, :, None]
            + beta[None, :, None],
        ):
            res["normalising variance"] = label
            break
    else:
        res["normalising variance"] = "neither"
    stat = out.get(case.stats) if "mean" in out else None
    res["batch statistic returned"] = "none" if stat is None else _what(stat, mean, var_b, var_u, case.eps)

    def held(k, q):  # what extra output k holds; q is what the backend documents it to hold
        if q == "y":
            return "y" if _close(out[k], out["y"]) else "something else"
        return _what(out[k], mean, var_b, var_u, case.eps)

    extras = [f"{k}: {held(k, q)} (documented {q})" for k, q in sorted(extra_outputs.items()) if k in out]
    res["extra outputs"] = "; ".join(extras) or "none"
    return res


def _infer_probes(w, prof) -> dict:
    res = {}
    case = profiled(dataclasses.replace(PROBE, mode="infer"), prof)
    inp = generate(case)
    out = _call(w, case, inp)
    if isinstance(out, str):
        res["inference leaves running stats"] = out
    else:
        same = np.array_equal(out["running_mean"], inp.running_mean) and np.array_equal(
            out["running_var"], inp.running_var
        )
        res["inference leaves running stats"] = "yes" if same else "no"
    fwd = profiled(dataclasses.replace(PROBE, backward=False), prof)
    fin = generate(fwd)
    out = _call(w, fwd, fin)
    if isinstance(out, str):
        res["forward-only training updates running stats"] = out
    else:
        moved = not np.array_equal(out["running_mean"], fin.running_mean)
        res["forward-only training updates running stats"] = "yes" if moved else "no"
    # default eps: gamma 1, beta 0, running mean 0, running variance 1e-3: y = x / sqrt(1e-3 + eps)
    c = case.channels
    tiny = dataclasses.replace(
        inp,
        gamma=np.ones(c, inp.gamma.dtype),
        beta=np.zeros(c, inp.beta.dtype),
        running_mean=np.zeros(c, inp.running_mean.dtype),
        running_var=np.full(c, 1e-3, inp.running_var.dtype),
    )
    out = _call(w, case, tiny, use_defaults=True)
    if isinstance(out, str):
        res["default eps"] = out
    else:
        with np.errstate(all="ignore"):
            ratio = inp.x.astype(np.float64) / np.asarray(out["y"], np.float64)
        res["default eps"] = float(f"{float(np.median(ratio**2)) - float(np.float32(1e-3)):.3g}")
    # default momentum: one training step from a zero running mean moves it by (1 - w_old) * mean
    tcase = profiled(PROBE, prof)
    tin = dataclasses.replace(generate(tcase), running_mean=np.zeros(c, inp.running_mean.dtype))
    out = _call(w, tcase, tin, use_defaults=True)
    if isinstance(out, str):
        res["default momentum"] = out
    else:
        _, mean, _, _ = _stats(tin.x, tcase)
        w_old = 1 - float(np.median(np.asarray(out["running_mean"], np.float64) / mean))
        res["default momentum"] = float(f"{(w_old if (prof.momentum_dir or 'old') == 'old' else 1 - w_old):.3g}")
    return res


def _flag_probe(w, prof, combo) -> dict:
    """What one flag combination was seen to do: normalise with which statistics, update the running ones or not."""
    case = dataclasses.replace(profiled(dataclasses.replace(PROBE, backward=False), prof), flags=combo.label)
    inp = generate(case)
    c = case.channels
    inp = dataclasses.replace(
        inp, running_mean=np.full(c, 0.5, inp.running_mean.dtype), running_var=np.full(c, 2.0, inp.running_var.dtype)
    )
    doc = {"normalize_with": combo.normalize_with, "update_running": combo.update_running}
    row = {"flags": combo.label, "documented": doc, "quote": combo.quote}
    out = _call(w, case, inp)
    if isinstance(out, str):
        return {**row, "seen": out, "verdict": "error" if combo.defined else "observed"}
    x3, mean, var_b, var_u = _stats(inp.x, case)
    g, b = (v.astype(np.float64)[None, :, None] for v in (inp.gamma, inp.beta))
    y = np.asarray(out["y"], np.float64).reshape(x3.shape)
    candidates = {"batch": [(mean, var_b), (mean, var_u)], "running": [(np.full(c, 0.5), np.full(c, 2.0))]}
    normalize = next(
        (
            name
            for name, pairs in candidates.items()
            if any(_close(y, (x3 - m[None, :, None]) / np.sqrt(v + case.eps)[None, :, None] * g + b) for m, v in pairs)
        ),
        "neither",
    )
    moved = _moved(out)
    if not moved:  # some frameworks move the running statistics in the backward pass only: say so
        bcase = dataclasses.replace(case, backward=True)
        binp = dataclasses.replace(generate(bcase), running_mean=inp.running_mean, running_var=inp.running_var)
        again = _call(w, bcase, binp)
        moved = "only with backward" if not isinstance(again, str) and _moved(again) else False
    seen = {"normalize_with": normalize, "update_running": moved}
    judged = [k for k, v in doc.items() if v is not None]
    loose = [k.replace("_", " ") for k, v in doc.items() if v is None]
    verdict = (
        "observed"
        if not judged
        else ("agrees" if all(seen[k] == doc[k] for k in judged) else "MISMATCH")
        + (f" ({', '.join(loose)} observed)" if loose else "")
    )
    return {**row, "seen": seen, "verdict": verdict}


def _moved(out) -> bool:
    return not (
        np.allclose(np.asarray(out["running_mean"], np.float64), 0.5, rtol=0, atol=1e-7)
        and np.allclose(np.asarray(out["running_var"], np.float64), 2.0, rtol=0, atol=1e-7)
    )


def behaviour(d) -> str:
    """A flag combination's behaviour (documented or seen) in words: which statistics y is normalised with and
    what happens to the running statistics; anything not a dict (an error) as it is."""
    if not isinstance(d, dict):
        return str(d)
    nw = d.get("normalize_with")
    up = d.get("update_running")
    if up is None:
        running = "undefined"
    elif up is False:
        running = "left alone"
    else:
        running = "updated " + up if isinstance(up, str) else "updated"
    return f"normalise with {nw or 'undefined'}; running stats {running}"


def flag_matrix(results: dict[str, dict]) -> tuple[str, int]:
    """Markdown: per framework, each flag combination with its documented and seen behaviour. Returns (text,
    mismatches); undefined combinations are 'observed' and never counted."""
    lines, bad = [], 0
    for name, r in results.items():
        if not r.get("flags"):
            continue
        lines += [
            "",
            f"### {md_text(name)} {md_text(r.get('version', ''))}",
            "",
            "| flags | documented | seen | verdict |",
            "|---|---|---|---|",
        ]
        for f in r["flags"]:
            miss = f["verdict"].startswith(("MISMATCH", "error"))
            bad += miss
            mark = f"**{f['verdict']}**" if miss else f["verdict"]
            documented, seen = md_text(behaviour(f["documented"])), md_text(behaviour(f["seen"]))
            lines.append(f"| `{md_text(f['flags'])}` | {documented} | {seen} | {mark} |")
    return "\n".join(lines).lstrip("\n"), bad


def matrix(results: dict[str, dict]) -> tuple[str, int]:
    """Markdown: convention x framework, 'documented / observed', mismatches marked. Returns (text, mismatches)."""
    names = list(results)
    head = "| convention | " + " | ".join(md_text(f"{n} {results[n].get('version', '')}".strip()) for n in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    mismatches = 0
    for row in ROWS:
        cells = []
        for n in names:
            r = results[n]
            if "error" in r:
                cells.append(f"unavailable: {md_text(r['error'])}")
                continue
            doc, obs = r["documented"].get(row), r.get(row, "")
            doc_s = "not documented" if doc is None and row in _DOC_ROWS else ("-" if doc is None else _fmt(doc))
            bad = doc is not None and not agrees(row, doc, obs)
            mismatches += bad
            cells.append(f"{'**MISMATCH** ' if bad else ''}doc: {md_text(doc_s)} / seen: {md_text(_fmt(obs))}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines), mismatches


_DOC_ROWS = {
    "momentum direction",
    "running-variance estimator",
    "batch statistic returned",
    "default eps",
    "default momentum",
}


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def agrees(row: str, documented, seen) -> bool:
    """Whether the value seen for a convention row agrees with the documented one (conventions.md and report.html
    both judge by this).

    - a documented float (default eps, default momentum) agrees with a number within 1e-3 of it, relative; an int
      counts as a number (1 for 1.0), a bool does not, nor does a string (an error message) or None;
    - "batch statistic returned": the first word of what was seen is the statistic ("var (biased)" agrees with
      "var"); documented None means the framework returns none (Profile.stats), so it agrees with "none" only;
    - anything else must be equal.
    """
    if isinstance(documented, float):
        number = isinstance(seen, (int, float)) and not isinstance(seen, bool)
        return number and abs(seen - documented) <= 1e-3 * abs(documented)
    if row == "batch statistic returned":
        if documented is None:
            return seen == "none"
        return str(seen).split(" ")[0] == documented
    return seen == documented
