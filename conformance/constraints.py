"""`conformance constraints`: each argument constraint a seed API's page states, called just inside and just outside
(one change from a base call inside every other constraint), in one worker process per framework (MindSpore and
Paddle never share a process). A row is enforced (rejected: the error's first line), accepted (and what came out),
crash, timeout or skip (not installed). A stated constraint not enforced, or an inside value refused, is a finding."""

from __future__ import annotations

import importlib
import math
import multiprocessing as mp
import sys
from dataclasses import dataclass, field

import numpy as np

from .errors import ReportError, UserError, first_line
from .preflight import path_arg, writable_dir

_CTX = mp.get_context("spawn")  # a fresh process per framework, as the workers (worker.py)

FIRST_CALL_S, CALL_S = 180.0, 30.0  # the first call of a worker imports its framework
FRAMEWORK = {
    "mindspore": "mindspore",
    "paddle": "paddle",
    "paddle_functional": "paddle",
    "mxnet": "mxnet",
    "mxnet_v1": "mxnet",
}
API = {
    "mindspore": "mindspore.ops.BatchNorm",
    "paddle": "paddle.nn.BatchNorm",
    "paddle_functional": "paddle.nn.functional.batch_norm",
    "mxnet": "mxnet.nd.BatchNorm",
    "mxnet_v1": "mxnet BatchNorm_v1 (nd)",
}


@dataclass(frozen=True)
class Constraint:
    backend: str
    name: str
    quote: str  # the page's words
    inside: dict  # changes to the base call (shape, dtype, kw, c = gamma length, axis, pdtype = param dtype)
    outside: dict
    scope: str = ""  # set when the page limits the constraint to something absent here: no finding then
    base: dict = field(default_factory=dict)  # the base call: (4, 3) for MindSpore (its page: (N, C)), else 4D


_MS_EPS, _MS_MOM = "epsilon ... value must be (0, 1]", "Momentum value must be [0, 1]"
_MS_SCALE = "scale (Union[Parameter, Tensor]) - Tensor or Parameter of shape (C,)"
_PD_NUM = "num_channels (int) - Indicate the number of channels of the input Tensor"
_MX_GAMMA = "Assume the input has size k on axis 1, then both gamma and beta have shape (k,)"
C = Constraint
CONSTRAINTS = [
    C("mindspore", "epsilon > 0", _MS_EPS, {"kw": {"epsilon": 1e-7}}, {"kw": {"epsilon": 0.0}}),
    C("mindspore", "epsilon <= 1", _MS_EPS, {"kw": {"epsilon": 1.0}}, {"kw": {"epsilon": 1.000001}}),
    C("mindspore", "momentum >= 0", _MS_MOM, {"kw": {"momentum": 0.0}}, {"kw": {"momentum": -0.01}}),
    C("mindspore", "momentum <= 1", _MS_MOM, {"kw": {"momentum": 1.0}}, {"kw": {"momentum": 1.01}}),
    C(
        "mindspore",
        "input_x dtype",
        "input_x (Tensor) - Tensor of shape (N, C), with float16 or float32 data type",
        {"dtype": "float16"},
        {"dtype": "float64"},
    ),
    C(
        "mindspore",
        "scale dtype",
        "scale ... with float16 or float32 data type; bias, mean, variance ... has the same data type with scale",
        {"pdtype": "float16"},
        {"pdtype": "float64"},
    ),
    C("mindspore", "input_x shape (N, C)", "input_x (Tensor) - Tensor of shape (N, C)", {}, {"shape": (2, 3, 4, 5)}),
    C("mindspore", "scale shape (C,), longer", _MS_SCALE, {}, {"c": 4}),
    C("mindspore", "scale shape (C,), shorter", _MS_SCALE, {}, {"c": 2}),
    C(
        "mindspore",
        "data_format NHWC only on GPU",
        "the 'NHWC' format is only supported in GPU target",
        {"kw": {"data_format": "NCHW"}},
        {"kw": {"data_format": "NHWC"}, "axis": -1},
        base={"shape": (2, 3, 4, 5)},
    ),
    C("paddle", "num_channels, more", _PD_NUM, {}, {"c": 4}),
    C("paddle", "num_channels, fewer", _PD_NUM, {}, {"c": 2}),
    C(
        "paddle",
        "dtype float32/float64",
        "dtype (str, optional) - Indicate the data type of the input Tensor, which can be float32 or float64",
        {"dtype": "float64"},
        {"dtype": "float16"},
    ),
    C(
        "paddle",
        "data_layout NCHW/NHWC",
        "data_layout (str, optional) - ... the data format can be \u201cNCHW\u201d or \u201cNHWC\u201d",
        {"kw": {"data_layout": "NHWC"}, "axis": -1},
        {"kw": {"data_layout": "nhwc"}, "axis": -1},
    ),
    C(
        "paddle_functional",
        "x dtype float32/float64",
        "x(Tensor): input value. It's data type should be float32, float64.",
        {"dtype": "float64"},
        {"dtype": "float16"},
    ),
    C(
        "paddle_functional",
        "data_format list",
        'data_format(str, optional): ... may be "NC", "NCL", "NCHW", "NCDHW", "NLC", "NHWC" or "NDHWC"',
        {"kw": {"data_format": "NCL"}},
        {"kw": {"data_format": "NCW"}},
        base={"shape": (2, 3, 5)},
    ),
    C(
        "mxnet",
        "eps >= CUDNN_BN_MIN_EPSILON",
        "eps ... Must be no less than CUDNN_BN_MIN_EPSILON defined in cudnn.h when using cudnn (usually 1e-5)",
        {"kw": {"eps": 1e-5}},
        {"kw": {"eps": 1e-6}},
        scope="cudnn only: CPU here",
    ),
    C(
        "mxnet",
        "axis in the input shape",
        "axis (int, optional, default='1') - Specify which shape axis the channel is "
        "specified; Specifying -1 sets the channel axis to be the last item",
        {"kw": {"axis": -1}, "axis": -1},
        {"kw": {"axis": 4}, "axis": -1},
    ),
] + [
    c
    for b in ("mxnet", "mxnet_v1")
    for c in (
        C(
            b,
            "input has more than one dimension",
            "Assume the input has more than one dimension and we normalize along axis 1",
            {"shape": (4, 3)},
            {"shape": (3,), "axis": 0},
        ),
        C(b, "gamma shape (k,), longer", _MX_GAMMA, {}, {"c": 4}),
        C(b, "gamma shape (k,), shorter", _MX_GAMMA, {}, {"c": 2}),
    )
]


_SHOWN = {"c": "gamma/scale length", "pdtype": "param dtype", "shape": "shape", "dtype": "dtype"}  # 'axis' is the ref's


def _settings(c: Constraint, side: str) -> dict:
    s = {
        "shape": (4, 3) if c.backend == "mindspore" else (2, 3, 4, 4),
        "dtype": "float32",
        "kw": {},
        "axis": 1,
        **c.base,
    }
    change = getattr(c, side)
    return {
        **s,
        **change,
        "kw": {**s["kw"], **change.get("kw", {})},
        "eps": 1e-3 if c.backend.startswith("mxnet") else 1e-5,
    }  # the page's default


def _describe(y, x, s) -> str:
    """Shape, dtype, non-finite count, and the distance from y on batch statistics with the eps passed."""
    text, y, xd = f"y {np.shape(y)} {np.asarray(y).dtype}, ", np.asarray(y, dtype=np.float64), x.astype(np.float64)
    text += f"{y.size - np.isfinite(y).sum()} of {y.size} not finite" if not np.isfinite(y).all() else "finite"
    eps = next((s["kw"][k] for k in ("epsilon", "eps") if k in s["kw"]), s["eps"])
    red = tuple(i for i in range(x.ndim) if i != s["axis"] % x.ndim)
    ref = (xd - xd.mean(red, keepdims=True)) / np.sqrt(xd.var(red, keepdims=True) + eps)  # gamma 1, beta 0
    err = float(np.max(np.abs(y - ref))) if y.shape == ref.shape else math.nan
    return text + (f", max|y-ref(eps={eps:g})| {err:.1e}" if math.isfinite(err) else "")


def _call(backend: str, s: dict) -> tuple[str, str]:
    x = np.random.default_rng(0).standard_normal(s["shape"]).astype(s["dtype"])
    c = s.get("c", x.shape[s["axis"]])
    pdt = s.get("pdtype", "float64" if s["dtype"] == "float64" and backend.startswith("paddle") else "float32")
    g, b, rm, rv = (np.full(c, v, dtype=pdt) for v in (1.0, 0.0, 0.0, 1.0))
    if backend == "mindspore":
        from .backends.mindspore_ops import _import

        ms = _import()
        stat = [ms.Parameter(ms.Tensor(a), name=n, requires_grad=False) for a, n in ((rm, "rm"), (rv, "rv"))]
        y = ms.ops.BatchNorm(is_training=True, **s["kw"])(ms.Tensor(x), ms.Tensor(g), ms.Tensor(b), *stat)[0].asnumpy()
    elif backend == "paddle":
        from .backends._paddle import paddle

        y = paddle().nn.BatchNorm(c, dtype=s["dtype"], **s["kw"])(paddle().to_tensor(x)).numpy()  # new: in train mode
    elif backend == "paddle_functional":
        from .backends._paddle import paddle

        t = [paddle().to_tensor(a) for a in (x, rm, rv, g, b)]
        y = paddle().nn.functional.batch_norm(*t, training=True, **s["kw"]).numpy()
    else:
        from .backends import _mxnet

        mx, kw = _mxnet.load(), {"fix_gamma": False, **s["kw"]}
        args = [_mxnet.to_nd(a) for a in (x, g, b, rm, rv)]
        try:
            with mx.autograd.record(train_mode=True):
                if backend == "mxnet":
                    out = mx.nd.BatchNorm(*args, **kw)
                else:  # as the mxnet_v1 backend does: the nd wrapper passes only data, gamma, beta
                    from mxnet.ndarray._internal import _imperative_invoke

                    from .backends.mxnet_v1 import open as handle

                    out = _imperative_invoke(handle(None), args, list(kw), list(kw.values()), None, False, False)
            y = (out[0] if isinstance(out, (list, tuple)) else out).asnumpy()
            mx.nd.waitall()
        except mx.base.MXNetError as exc:
            return "enforced", _mxnet.message(exc)  # the line under MXNet's C++ traceback that says what failed
    return "accepted", _describe(y, x, s)


def _child(conn, framework: str, todo: list) -> None:
    # the suite's own import helpers: MindSpore and Paddle on the CPU, MXNet with np.bool back
    mod = importlib.import_module(
        {"mindspore": ".backends.mindspore_ops", "paddle": ".backends._paddle", "mxnet": ".backends._mxnet"}[framework],
        __package__,
    )
    reason = mod.available()  # None, or why the framework cannot be imported: every row is a skip
    conn.send(("skip", f"{framework} not importable: {reason}") if reason else ("version", mod.version()))
    for backend, s in [] if reason else todo:
        try:
            conn.send(_call(backend, s))
        except Exception as exc:
            conn.send(("enforced", first_line(exc)))


def _run_framework(framework: str, rest: list, results: dict) -> None:
    """results[(i, side)] = (status, message) for each (i, constraint, side), results[framework] = its version."""
    while rest:
        parent, child = _CTX.Pipe()
        todo = [(c.backend, _settings(c, side)) for _, c, side in rest]
        proc = _CTX.Process(target=_child, args=(child, framework, todo), daemon=True)
        proc.start()
        child.close()
        wait = FIRST_CALL_S
        while rest:
            key = rest[0][0], rest[0][2]
            try:
                got = parent.recv() if parent.poll(wait) else ("timeout", f"no answer in {wait:g} s")
            except (EOFError, OSError):
                proc.join(5)
                got = ("crash", f"worker died (exit code {proc.exitcode})")
            if got[0] == "version":
                results[framework] = got[1]
                continue
            if got[0] == "skip":
                results.update({(i, side): got for i, _, side in rest})
                rest = []
                break
            results[key], wait = got, CALL_S
            rest = rest[1:]
            if got[0] in ("timeout", "crash"):
                break
        proc.kill()
        proc.join(5)


def run(backends: list[str] | None = None):
    """The table (a pandas DataFrame), one row per constraint and side, for these backends (default: all)."""
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    chosen = [
        (i, c, side)
        for i, c in enumerate(CONSTRAINTS)
        if backends is None or c.backend in backends
        for side in ("inside", "outside")
    ]
    results: dict = {}
    with ThreadPoolExecutor(3) as pool:  # the three frameworks at once, each in its own process
        list(
            pool.map(
                lambda fw: _run_framework(fw, [t for t in chosen if FRAMEWORK[t[1].backend] == fw], results),
                dict.fromkeys(FRAMEWORK.values()),
            )
        )
    rows = []
    for i, c, side in chosen:
        (status, msg), ch, s = results[(i, side)], getattr(c, side), _settings(c, side)
        # a finding: an outside value not rejected (unless scoped away from here), or an inside value refused
        found = (side == "outside" and status != "enforced" and not c.scope) or (
            side == "inside" and status != "accepted"
        )
        value = [f"{k}={v!r}" for k, v in ch.get("kw", {}).items()] + [
            f"{_SHOWN[k]}={v}" for k, v in ch.items() if k in _SHOWN
        ]
        rows.append(
            {
                "framework": FRAMEWORK[c.backend],
                "version": results.get(FRAMEWORK[c.backend], ""),
                "backend": c.backend,
                "api": API[c.backend],
                "constraint": c.name,
                "page": c.quote,
                "side": side,
                "value": ", ".join(value) or "base call",
                "input": f"{s['shape']} {s['dtype']}",
                "status": status,
                "message": msg,
                "finding": "" if status == "skip" else "yes" if found else "no",
                "scope": c.scope,
            }
        )
    return pd.DataFrame(rows)


def summary(df) -> list[str]:
    """One line per framework."""
    lines = []
    for fw, d in df.groupby("framework", sort=False):
        out, ins, found = d[d["side"] == "outside"], d[d["side"] == "inside"], d[d["finding"] == "yes"]
        n = out["status"].value_counts()
        lines.append(
            f"{fw}: skip ({d['message'].iloc[0]})"
            if (d["status"] == "skip").all()
            else f"{fw} {d['version'].iloc[0]}: {len(out)} stated constraints; outside value enforced "
            f"{n.get('enforced', 0)}, accepted {n.get('accepted', 0)}, crash/timeout "
            f"{n.get('crash', 0) + n.get('timeout', 0)}; inside accepted {(ins['status'] == 'accepted').sum()}"
            f"/{len(ins)}; findings {len(found)}"
            + "".join(f"; {r.backend} {r.constraint} ({r.side}: {r.status})" for r in found.itertuples())
        )
    return lines


def write(out, df) -> None:
    from .files import atomic_write
    from .report import md_table, md_text

    cols = [c for c in df.columns if c != "backend"]
    text = (
        "# Documented constraints, called just inside and just outside\n\n"
        + "".join(f"- {md_text(line)}\n" for line in summary(df))
        + "\n"
        + md_table(cols, df[cols].values.tolist())
        + "\n"
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "constraints.csv", df.to_csv(index=False).encode())
        atomic_write(out / "constraints.md", text.encode())
    except OSError as exc:
        raise ReportError.of(out, exc) from None


def cmd_constraints(args) -> int:
    for n in [n for n in args.backend or [] if n not in FRAMEWORK]:
        raise UserError(f"{n!r} has no constraints table (known: {', '.join(FRAMEWORK)})", source="--backend")
    writable_dir(args.out)
    df = run(args.backend)
    write(args.out, df)
    print("\n".join(summary(df)))
    print(f"{(df['finding'] == 'yes').sum()} finding(s); table in {args.out}/constraints.md", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("constraints", help="call each stated argument constraint just inside and outside: enforced?")
    p.add_argument(
        "--backend", action="append", metavar="NAME", help=f"only this one (repeatable; {', '.join(FRAMEWORK)})"
    )
    p.add_argument("--out", default="reports/constraints", type=path_arg, help="constraints.csv and .md go here")
    p.set_defaults(func=cmd_constraints)
