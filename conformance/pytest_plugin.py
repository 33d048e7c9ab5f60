"""pytest plugin: a conformance suite as test items, one per (case, backend@device).

    pytest --conformance-suite smoke [--conformance-backend NAME ...] [--conformance-device SUBSTRING]
           [--conformance-case ID ...] [--conformance-deviations PATH] [--conformance-timeout S]

Each item is named `test_conformance[<case_id>-<target>]`, where a framework's case id is the profiled case
it runs (as in `conformance run`), so `-k`, `-x`, `-m conformance`, `--junitxml` and `--lf` work as usual.
An item passes when every row of its case on its target passes; it fails on any fail/error/crash/timeout row
(the message lists each one and the command that re-runs it) and on a strict xpass (`[XPASS(strict)]`); it
is xfail when the known-deviations registry covers every failing row, and skipped when nothing ran
(unsupported/skip). Each target's worker process starts once, when the first selected item is set up, and
stops at the end of the session; a case runs when its item runs.

Without --conformance-suite (or --conformance-case) the plugin does nothing, and it imports none of the
suite's machinery, so an ordinary pytest run pays nothing for it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from .status import FAILING, UNCHECKED

_STATE = pytest.StashKey["_State"]()


def pytest_addoption(parser) -> None:
    g = parser.getgroup("conformance", "BatchNorm conformance suite")
    g.addoption(
        "--conformance-suite",
        metavar="NAME|PATH",
        help="run this suite (a name in cases/ or a .toml file) as test items, one per case and target",
    )
    g.addoption(
        "--conformance-case",
        action="append",
        metavar="ID",
        help="run only this case id (repeatable; like `conformance run --case`, it replaces the suite)",
    )
    g.addoption(
        "--conformance-backend",
        action="append",
        metavar="NAME",
        help="only this backend (repeatable; default: every available one)",
    )
    g.addoption(
        "--conformance-device",
        metavar="SUBSTRING",
        help="only OpenCL devices whose key, name, platform or vendor contains this",
    )
    g.addoption(
        "--conformance-deviations", metavar="PATH", help="known-deviations file (default: cases/known_deviations.toml)"
    )
    g.addoption(
        "--conformance-inputs-root",
        metavar="DIR",
        help="the folder a --conformance-case id's inputs file is relative to (default: here)",
    )
    g.addoption(
        "--conformance-timeout",
        type=_timeout,
        metavar="S",
        help="seconds one case may take on one target before its worker is killed (default 300)",
    )
    g.addoption(
        "--conformance-tune",
        action="append",
        metavar="KEY=VALUE",
        help="override an OpenCL tuning entry (repeatable; like `conformance run --tune`, e.g. family=gpu)",
    )


def _timeout(text: str) -> float:
    """--conformance-timeout: a finite number of seconds > 0 (nan and inf would disable the timer)."""
    from .preflight import number

    return number(low=0, low_open=True, high=7 * 24 * 3600.0)(text)


def _active(config) -> bool:
    return bool(config.getoption("conformance_suite") or config.getoption("conformance_case"))


def pytest_configure(config) -> None:
    if not _active(config):
        return
    from .errors import UserError

    try:
        config.stash[_STATE] = _State(config)
    except UserError as exc:
        raise _usage(exc) from None
    config.addinivalue_line("markers", "conformance: a conformance case on one backend@device (the pytest plugin)")


def pytest_collection(session) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is not None:
        from .errors import UserError

        try:
            state.discover()  # the backends and devices there are decide the items
        except UserError as exc:
            raise _usage(exc) from None


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The suite joins the session's top-level collectors, so its items are collected like any others."""
    outcome = yield
    state = collector.config.stash.get(_STATE, None)
    if state is not None and isinstance(collector, pytest.Session) and outcome.get_result().passed:
        outcome.get_result().result.append(
            ConformanceSuite.from_parent(
                collector, name=state.label, path=state.path, nodeid=f"conformance/{state.label}"
            )
        )


def pytest_report_collectionfinish(config, start_path, items):
    state = config.stash.get(_STATE, None)
    if state is None or state.targets is None:
        return None
    lines = [
        f"conformance: suite {state.label}, {len(state.cases)} cases on "
        + (", ".join(t.label for t in state.targets) or "no target")
    ]
    lines += [f"conformance: {i.name} unavailable ({i.reason})" for i in state.infos if i.reason is not None]
    return lines


def pytest_sessionfinish(session) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is not None:
        state.stop()


class _State:
    """The session's cases, targets and workers, and a one-entry memo of inputs, oracle and SUT outputs."""

    def __init__(self, config):
        from . import deviations
        from . import suite as suites
        from .backends.base import TimingPolicy
        from .case import Case
        from .errors import UserError
        from .generate import check_npz
        from .lifecycle import DEFAULT_TIMEOUT_S, check_backends

        opt = config.getoption
        ids = opt("conformance_case")
        if ids:
            root = opt("conformance_inputs_root")
            self.cases = [Case.from_id(cid, source="--conformance-case", inputs_root=root) for cid in ids]
            self.label, self.path = "case", config.rootpath
        else:
            s = suites.load(opt("conformance_suite"))
            self.cases, self.path = s.cases, Path(s.path).resolve()
            self.label = re.sub(r"[^\w.+-]", "_", s.name) or "suite"
        for c in self.cases:
            if c.inputs is not None:
                check_npz(c)  # a bad inputs file is a usage error before anything runs
        check_backends(opt("conformance_backend"), "--conformance-backend")
        dev_path = opt("conformance_deviations")
        if dev_path is not None and not Path(dev_path).is_file():
            raise UserError(f"no such file {dev_path!r}", source="--conformance-deviations")
        self.known = deviations.load(dev_path or deviations.DEFAULT_PATH)
        from .backends import opencl_tuning

        try:
            self.tune = opencl_tuning.parse_overrides(opt("conformance_tune"))
        except ValueError as exc:
            raise UserError(str(exc), source="--conformance-tune") from None
        self.timeout = opt("conformance_timeout") or DEFAULT_TIMEOUT_S
        if self.timeout <= 0:
            raise UserError("must be > 0", source="--conformance-timeout")
        self.policy = TimingPolicy()
        self.backends, self.device = opt("conformance_backend"), opt("conformance_device")
        self.infos = []
        self.targets = None
        self.started = False
        self._memo = {}

    def discover(self) -> None:
        from .errors import UserError
        from .lifecycle import discover, select_targets, tuned

        self._tuned = tuned(self.tune)  # for the session's workers, all started after this; stop() ends it
        self._tuned.__enter__()
        self.infos = discover(self.backends, keep=True)
        self.targets = select_targets(self.infos, self.device, explicit=bool(self.backends))
        if not self.targets:
            raise UserError(
                "no backend is available: " + "; ".join(f"{i.name}: {i.reason}" for i in self.infos),
                source="--conformance-suite",
            )

    def plan(self):
        """(canonical case, the case a target runs, target) in the order of `conformance run`: per case, the
        canonical variant and then each framework profile (under each of its flag combinations); on each, the
        SUT first. The variants and their schedules are runner.variants() and Group.schedule(), as run's."""
        from .runner import variants

        for case in self.cases:
            for group in variants(case, self.targets):
                for t, run_case in group.schedule(self.targets):
                    yield case, run_case, t

    def start(self, session) -> None:
        """Start, side by side, the worker of every target a selected item runs on (and the SUT's, which the
        frameworks are compared with)."""
        if self.started:
            return
        self.started = True
        wanted = {id(i.target) for i in session.items if isinstance(i, ConformanceItem)}
        if any(t.is_framework for t in self.targets if id(t) in wanted):
            wanted |= {id(t) for t in self.targets if t.is_sut}
        self._launch([t for t in self.targets if id(t) in wanted])
        from .lifecycle import release_probes

        release_probes(self.targets)  # the probes of targets no selected item runs on

    @staticmethod
    def _launch(targets) -> None:
        from .lifecycle import start

        start(targets)

    def _cached(self, slot: str, key, make):
        if self._memo.get(slot, (None,))[0] != key:
            self._memo[slot] = (key, make())
        return self._memo[slot][1]

    def rows(self, case, variant, target) -> list[dict]:
        """Every row of `variant` on `target`, known deviations applied, as `conformance run` makes them."""
        from . import deviations
        from .generate import generate
        from .lifecycle import ask
        from .oracle import reference
        from .runner import rows_for, vs_sut_rows

        inputs = self._cached("inputs", case.id, lambda: generate(case))  # one draw serves every profile
        base = dataclasses.replace(variant, flags="") if variant.flags else variant  # flags change no value
        ref = self._cached("ref", base.id, lambda: reference(base, inputs))
        replies = self._cached("sut", base.id, dict)  # SUT outputs of this variant, for the frameworks

        def reply(t):
            if t.is_sut and t.label in replies:
                return replies[t.label]
            self._launch([t])
            r = ask(t, variant if t is target else base, inputs, self.policy, self.timeout)
            if t.is_sut:
                replies[t.label] = r
            return r

        got = reply(target)
        rows = rows_for(variant, target, got, ref, inputs)
        if target.is_framework and got.ok:
            sut = {t.label: r.outputs for t in self.targets if t.is_sut for r in [reply(t)] if r.ok}
            rows += vs_sut_rows(variant, target, got.result, ref, sut)
        for r in rows:
            r["_before"] = (r["status"], r["reason"])
        deviations.apply(rows, {variant.id: variant}, {target.backend: target.version}, self.known)
        return rows

    def stop(self) -> None:
        from .lifecycle import stop

        stop(self.targets or [])
        tuned_ctx, self._tuned = getattr(self, "_tuned", None), None
        if tuned_ctx is not None:  # the environment as it was before the session's --conformance-tune
            tuned_ctx.__exit__(None, None, None)


class ConformanceSuite(pytest.Collector):
    """The suite: its items, one per (case, target), in the order `conformance run` runs them."""

    def collect(self):
        state, seen = self.config.stash[_STATE], set()
        for case, variant, target in state.plan():
            name = f"test_conformance[{variant.id}-{target.label}]"
            if name not in seen:
                seen.add(name)
                yield ConformanceItem.from_parent(self, name=name, case=case, variant=variant, target=target)


class ConformanceItem(pytest.Item):
    def __init__(self, *, case, variant, target, **kw):
        super().__init__(**kw)
        self.case, self.variant, self.target = case, variant, target
        self.add_marker("conformance")
        self.user_properties += [("case_id", variant.id), ("target", target.label)]

    def setup(self) -> None:
        self.config.stash[_STATE].start(self.session)

    def runtest(self) -> None:
        from .report import rerun_command

        rows = self.config.stash[_STATE].rows(self.case, self.variant, self.target)
        norm = [r["norm_err"] for r in rows if isinstance(r.get("norm_err"), float) and r["norm_err"] == r["norm_err"]]
        if norm:
            self.user_properties.append(("max_norm_err", f"{max(norm):.4g}"))
        counts = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        self.user_properties.append(("rows", ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))))
        bad = [r for r in rows if r["status"] in FAILING]
        xpass = [r for r in rows if r["status"] == "xpass"]
        if bad or xpass:
            head = (
                f"{self.target.label}: {len(bad)} of {len(rows)} rows failed"
                if bad
                else f"[XPASS(strict)] {self.target.label}: {len(xpass)} rows pass although listed as known deviations"
            )
            lines = [head, *dict.fromkeys(f"  {r['status']}{_vs(r)}: {r['reason']}" for r in bad or xpass)]
            lines.append(f"re-run: {rerun_command(rows[0])}")
            pytest.fail("\n".join(lines), pytrace=False)
        xfail = [r for r in rows if r["status"] == "xfail"]
        if xfail:
            pytest.xfail(" | ".join(dict.fromkeys(_deviation_note(r) for r in xfail)))
        if not any(r["status"] == "pass" for r in rows):
            reasons = dict.fromkeys(f"{self.target.label}: {r['reason']}" for r in rows if r["status"] in UNCHECKED)
            raise pytest.skip.Exception(" | ".join(reasons) or "nothing ran", _use_item_location=True)

    def reportinfo(self):
        return self.path, 0, self.name


def _usage(exc) -> pytest.UsageError:
    """A UserError as a usage error, naming this plugin's option where the message names the CLI's."""
    msg = str(exc)
    for opt in ("--suite:", "--device:", "--backend:", "--case:"):
        if msg.startswith(opt):
            msg = "--conformance-" + msg[2:]
    return pytest.UsageError(msg)


def _vs(row) -> str:
    vs = row.get("vs", "oracle")
    return "" if vs == "oracle" else f" vs {vs}"


def _deviation_note(row) -> str:
    """The deviation's own words: apply() wrote '<note>; <old status>: <old reason>'."""
    status, reason = row["_before"]
    tail = f"; {status}: {reason}"
    return row["reason"][: -len(tail)] if row["reason"].endswith(tail) else row["reason"]
