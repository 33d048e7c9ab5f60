"""The known-deviations registry: matching, xfail/xpass, warnings for entries that match nothing."""

import pytest

from conformance import deviations
from conformance.case import Case
from conformance.errors import UserError

CASE = Case(name="c", shape=(4, 3), mode="train")
INFER = Case(name="c", shape=(4, 3), mode="infer")


def load(tmp_path, text):
    p = tmp_path / "dev.toml"
    p.write_text(text)
    return deviations.load(p)


def row(status, backend="fw", output="running_var", case=CASE, vs="oracle", device=None):
    """A result row as runner.rows_for writes it: device is the target's key ('' for the CPU target, labelled
    backend alone), target the label backend@key."""
    return {
        "backend": backend,
        "output": output,
        "status": status,
        "case_id": case.id,
        "reason": "why",
        "vs": vs,
        "device": device or "",
        "target": f"{backend}@{device}" if device else backend,
    }


def test_fail_becomes_xfail_pass_becomes_xpass_and_versions_count(tmp_path):
    devs = load(
        tmp_path,
        '[[deviation]]\nbackend="fw"\nversions=">=2,<3"\ncase={mode="train"}\noutput="running_var"\n'
        'reason="updates with the unbiased variance"\nlink="https://example.org/doc"\n',
    )
    rows = [row("fail"), row("pass"), row("fail", output="y"), row("fail", case=INFER), row("fail", backend="other")]
    cases = {CASE.id: CASE, INFER.id: INFER}
    warnings = deviations.apply(rows, cases, {"fw": "2.4.1", "other": "1"}, devs)
    assert [r["status"] for r in rows] == ["xfail", "xpass", "fail", "fail", "fail"]
    assert rows[0]["reason"].startswith(
        "known deviation: updates with the unbiased variance (https://example.org/doc); fail: why"
    )
    assert warnings == []
    rows = [row("fail")]
    deviations.apply(rows, cases, {"fw": "3.0"}, devs)  # outside the version range
    assert rows[0]["status"] == "fail"


def test_entry_matching_nothing_is_warned_about_only_when_it_could_apply(tmp_path):
    devs = load(
        tmp_path,
        '[[deviation]]\nbackend="fw"\noutput="runing_var"\nreason="misspelt output"\n'
        '[[deviation]]\nbackend="fw"\ncase_id="other-suite*"\nreason="a case not in this run"\n'
        '[[deviation]]\nbackend="absent"\nreason="a backend that did not run"\n',
    )
    warnings = deviations.apply([row("fail")], {CASE.id: CASE}, {"fw": "1"}, devs)
    assert len(warnings) == 1 and "deviation #0" in warnings[0] and "matches no row" in warnings[0]


def test_vs_selector(tmp_path):
    devs = load(tmp_path, '[[deviation]]\nbackend="fw"\nvs="opencl@*"\nreason="r"\n')
    rows = [row("fail"), row("fail", vs="opencl@pocl-cpu")]
    deviations.apply(rows, {CASE.id: CASE}, {"fw": "1"}, devs)
    assert [r["status"] for r in rows] == ["fail", "xfail"]


@pytest.mark.parametrize(
    "text, field",
    [
        ('[[deviation]]\nreason="r"\n', "backend"),
        ('[[deviation]]\nbackend=[]\nreason="r"\n', "backend"),
        ('[[deviation]]\nbackend="fw"\nreason="r"\nstrict="no"\n', "strict"),
        ('[[deviation]]\nbackend="fw"\n', "reason"),
        ('[[deviation]]\nbackend="fw"\nreason="r"\nversions="not a spec"\n', "versions"),
        ('[[deviation]]\nbackend="fw"\nreason="r"\ncase={colour="red"}\n', "case"),
        ('[[deviation]]\nbackend="fw"\nreason="r"\nbogus=1\n', "bogus"),
        ("[deviation\n", "invalid TOML"),
        ('[[deviation]]\nbackend="fw"\nreason="r"\ndevices=[]\n', r"deviation\[0\]\.devices: .*got \[\]"),
        ('[[deviation]]\nbackend="fw"\nreason="r"\ndevices=0\n', r"deviation\[0\]\.devices: .*got 0"),
        (
            '[[deviation]]\nbackend="fw"\nreason="r"\ndevices=["cuda:0", 1]\n',
            r"deviation\[0\]\.devices: .*got \['cuda:0', 1\]",
        ),
        ('[[deviation]]\nbackend="fw"\nreason="r"\ndevices=[""]\n', r"deviation\[0\]\.devices"),
    ],
)
def test_bad_registry_is_a_user_error(tmp_path, text, field):
    with pytest.raises(UserError, match=field):
        load(tmp_path, text)


def test_every_shipped_entry_selects_a_shipped_case():
    import dataclasses

    from conformance import backends
    from conformance.backends import BACKENDS
    from conformance.suite import load as load_suite
    from conformance.suite import suite_names

    cases = [c for name in suite_names() for c in load_suite(name).cases]
    for d in deviations.load():
        assert d.reason and set(d.backends) <= set(BACKENDS), d
        pool = cases
        if "flags" in d.case:  # a flag combination is given to a case by the runner: each its backends have
            labels = {c.label for b in d.backends for c in getattr(backends.load(b), "FLAGS", ())}
            pool = [dataclasses.replace(c, flags=lab) for c in cases for lab in labels]
        assert any(d.selects(c) for c in pool), f"{d.describe()} selects no case of any shipped suite"


def test_crash_is_a_known_failure_and_non_strict_pass_stays_pass(tmp_path):
    devs = load(tmp_path, '[[deviation]]\nbackend=["fw", "fw2"]\nstrict=false\nreason="stale memory"\n')
    rows = [row("crash"), row("pass", backend="fw2"), row("unsupported")]
    deviations.apply(rows, {CASE.id: CASE}, {}, devs)
    assert [r["status"] for r in rows] == ["xfail", "pass", "unsupported"]
    assert rows[0]["reason"] == "known deviation: stale memory; crash: why"


def test_applying_twice_changes_nothing_and_still_finds_unused_entries(tmp_path):
    """`conformance run` classifies each case's rows as the case finishes (so the progress line counts xfail where
    the report will) and then the whole run once more (for the entries that match nothing): the second pass
    must leave every row as the first left it."""
    devs = load(
        tmp_path,
        '[[deviation]]\nbackend="fw"\noutput="running_var"\nreason="unbiased"\n'
        '[[deviation]]\nbackend="fw"\noutput="y"\nreason="another"\n'
        '[[deviation]]\nbackend="fw"\noutput="mean"\nreason="never matches"\n',
    )
    rows = [row("fail"), row("pass"), row("pass", output="y"), row("crash", output="y")]
    cases = {CASE.id: CASE}
    deviations.apply(rows, cases, {"fw": "1"}, devs)
    first = [dict(r) for r in rows]
    assert [r["status"] for r in first] == ["xfail", "xpass", "xpass", "xfail"]
    warnings = deviations.apply(rows, cases, {"fw": "1"}, devs)
    assert rows == first
    assert len(warnings) == 1 and "deviation #2" in warnings[0]


def test_progress_line_counts_what_the_report_counts(tmp_path):
    """A known deviation in a --deviations file: the live progress line already shows the xpass the summary
    line shows, not the raw pass."""
    import subprocess
    import sys

    from conformance.suite import load as load_suite

    case = load_suite("smoke").cases[0]
    (tmp_path / "dev.toml").write_text('[[deviation]]\nbackend="numpy"\noutput="y"\nstrict=true\nreason="planted"\n')
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "run",
            "--backend",
            "numpy",
            "--case",
            case.id,
            "--deviations",
            str(tmp_path / "dev.toml"),
            "--out",
            str(tmp_path / "out"),
            "--history",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    progress = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.startswith("[1/1]")]
    assert progress and "xpass=1" in progress[-1], r.stderr
    assert "xpass 1" in r.stdout and r.returncode == 1, r.stdout  # xpass is unexpected: exit 1


def test_devices_selector_matches_the_rows_target_device(tmp_path):
    """devices: globs on the device of the row's target; 'cpu' names a target without one (torch, not torch@...);
    a vs-SUT row of a device target (its device column empty) is matched by its target label."""
    devs = load(
        tmp_path,
        '[[deviation]]\nbackend="fw"\ndevices=["cuda:*", "gpu:0"]\nreason="on the GPU"\n'
        '[[deviation]]\nbackend="fw"\ndevices="cpu"\noutput="y"\nreason="on the CPU only"\n',
    )
    assert devs[0].devices == ("cuda:*", "gpu:0") and devs[1].devices == ("cpu",)
    vs_gpu = {**row("fail", vs="opencl@pocl-cpu"), "target": "fw@cuda:1"}
    rows = [
        row("fail"),
        row("fail", device="cuda:0"),
        row("fail", device="gpu:0"),
        row("fail", device="gpu:1"),
        vs_gpu,
        row("fail", output="y"),
        row("fail", output="y", device="gpu:1"),
    ]
    deviations.apply(rows, {CASE.id: CASE}, {"fw": "1"}, devs)
    assert [r["status"] for r in rows] == ["fail", "xfail", "xfail", "fail", "xfail", "xfail", "fail"]
    assert "on the GPU" in rows[1]["reason"] and "on the CPU only" in rows[5]["reason"]


def test_device_entry_is_not_warned_about_where_its_device_did_not_run(tmp_path):
    devs = load(tmp_path, '[[deviation]]\nbackend="fw"\ndevices="cuda:*"\noutput="mean"\nreason="gpu only"\n')
    assert deviations.apply([row("pass")], {CASE.id: CASE}, {"fw": "1"}, devs) == []  # the CPU target only ran
    warnings = deviations.apply([row("pass", device="cuda:0")], {CASE.id: CASE}, {"fw": "1"}, devs)
    assert len(warnings) == 1 and "deviation #0" in warnings[0]
