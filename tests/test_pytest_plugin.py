"""The pytest plugin, run for real in a pytest subprocess (pytester): items, -k, -x, --junitxml, deviations."""

import importlib.metadata
import xml.etree.ElementTree as ET

import pytest

from conformance import suite
from conformance.worker import probe

pytest_plugins = ["pytester"]

SMOKE_IDS = [c.id for c in suite.load("smoke").cases]
MINI = """
[suite]
name = "mini"
[defaults]
shape = [4, 3, 2, 2]
[[case]]
name = "huge"   # numpy's float32 (x - mean)^2 overflows: var is inf, y wrong
fill = { kind = "normal", mean = 0.0, std = 1e20 }
[[case]]
name = "calm-a"
[[case]]
name = "calm-b"
"""


def _plugin() -> list[str]:
    """Load the plugin: by its entry point where the package declares one (loading the module under a second
    name would then be refused), else by module name."""
    eps = importlib.metadata.entry_points(group="pytest11")
    return (
        ["-p", "conformance"]
        if any(e.value == "conformance.pytest_plugin" for e in eps)
        else ["-p", "conformance.pytest_plugin"]
    )


def _run(pytester, *args, autoload=False):
    """pytest in a subprocess with the plugin. autoload: every installed plugin loads, as for a user; else only
    this one (hypothesis's alone takes about a second to import, in each of the many runs here)."""
    if autoload:
        return pytester.runpytest_subprocess(*_plugin(), *args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        return pytester.runpytest_subprocess("-p", "conformance.pytest_plugin", *args)


def _smoke(pytester, *args):
    return _run(pytester, "--conformance-suite", "smoke", "--conformance-backend", "numpy", *args)


def _ids(result) -> list[str]:
    return [ln for ln in result.outlines if ln.startswith("conformance/")]


def test_without_the_option_nothing_is_added_or_imported(pytester):
    pytester.makepyfile(
        test_plain="""
        import sys
        def test_plain():
            assert not any(m in sys.modules for m in ("conformance.runner", "conformance.worker", "conformance.suite"))
    """
    )
    result = _run(pytester, "-q", autoload=True)
    result.assert_outcomes(passed=1)
    assert _ids(_run(pytester, "--collect-only", "-q", autoload=True)) == []
    assert "--conformance-suite" in _run(pytester, "--help", autoload=True).stdout.str()


def test_one_item_per_case_and_target(pytester):
    result = _smoke(pytester, "--collect-only", "-q")
    assert _ids(result) == [f"conformance/smoke::test_conformance[{cid}-numpy]" for cid in SMOKE_IDS]
    reason, devices, _ = probe("opencl")
    if reason is None:
        result = _smoke(pytester, "--conformance-backend", "opencl", "--collect-only", "-q")
        ids = _ids(result)
        assert len(ids) == len(SMOKE_IDS) * (1 + len(devices))
        for d in devices:
            assert sum(i.endswith(f"-opencl@{d.key}]") for i in ids) == len(SMOKE_IDS)


def test_k_selects_by_case_name_and_id_token(pytester):
    _smoke(pytester, "-k", "forward-only").assert_outcomes(passed=2, deselected=len(SMOKE_IDS) - 2)
    _smoke(pytester, "-k", "small-nchw and float16").assert_outcomes(passed=2, deselected=len(SMOKE_IDS) - 2)


def test_junitxml_names_carry_case_ids(pytester):
    xml = pytester.path / "junit.xml"
    _smoke(pytester, f"--junitxml={xml}").assert_outcomes(passed=len(SMOKE_IDS))
    cases = ET.parse(xml).getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == [f"test_conformance[{cid}-numpy]" for cid in SMOKE_IDS]
    assert {c.get("classname") for c in cases} == {"conformance.smoke"}
    props = {p.get("name"): p.get("value") for p in cases[0].iter("property")}
    assert props["case_id"] == SMOKE_IDS[0] and props["target"] == "numpy"


def test_failure_lists_rows_and_rerun_command_and_x_stops(pytester):
    mini = pytester.makefile(".toml", mini=MINI)
    result = _run(pytester, "--conformance-suite", str(mini), "--conformance-backend", "numpy")
    result.assert_outcomes(failed=1, passed=2)
    out = result.stdout.str()
    assert "numpy: 3 of" in out and "fail: var: NaN/Inf pattern differs" in out and "got inf, expected" in out
    assert "re-run: conformance run --case huge,dtype=float32," in out and "--backend numpy" in out
    _run(pytester, "--conformance-suite", str(mini), "--conformance-backend", "numpy", "-x").assert_outcomes(failed=1)


def test_deviations_give_xfail_and_strict_xpass(pytester):
    mini = pytester.makefile(".toml", mini=MINI)
    devs = pytester.makefile(
        ".toml",
        devs="""
        [[deviation]]
        backend = "numpy"
        case_id = "huge,*"
        output = ["y", "var", "running_var"]   # mean and running_mean pass: listed, they would be xpass
        reason = "float32 (x - mean)^2 overflows"
        [[deviation]]
        backend = "numpy"
        case_id = "calm-a,*"
        reason = "said to fail, but passes"
    """,
    )
    result = _run(
        pytester,
        "--conformance-suite",
        str(mini),
        "--conformance-backend",
        "numpy",
        "--conformance-deviations",
        str(devs),
        "-rxf",
    )
    result.assert_outcomes(xfailed=1, failed=1, passed=1)
    result.stdout.re_match_lines(
        [r"XFAIL .*test_conformance\[huge,.*-numpy\] - known deviation: float32 \(x - mean\)\^2 overflows"]
    )
    result.stdout.re_match_lines(
        [
            r"\[XPASS\(strict\)\] numpy: 5 rows pass although listed as known deviations",
            r"  xpass: passes although listed as a known deviation: said to fail, but passes",
        ]
    )
    devs.write_text(devs.read_text().replace('"said to fail, but passes"', '"flaky"\nstrict = false'))
    _run(
        pytester,
        "--conformance-suite",
        str(mini),
        "--conformance-backend",
        "numpy",
        "--conformance-deviations",
        str(devs),
    ).assert_outcomes(xfailed=1, passed=2)


def test_framework_runs_its_profiled_case_and_registry_xfails(pytester):
    reason, _, _ = probe("mxnet")
    if reason is not None:
        pytest.skip(f"mxnet unavailable: {reason}")
    cid = next(i for i in SMOKE_IDS if i.startswith("2d,") and "fix_gamma=1" in i and "mode=train" in i)
    result = _run(pytester, "--conformance-case", cid, "--conformance-backend", "mxnet", "-rx")
    result.assert_outcomes(xfailed=1)  # mxnet writes 1 into the gamma input (cases/known_deviations.toml)
    result.stdout.re_match_lines(
        [r"XFAIL .*stats=invstd.*-mxnet\] - known deviation: fix_gamma=True writes 1 into the gamma input"]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--conformance-suite", "nope"], "ERROR: --conformance-suite: unknown suite 'nope'"),
        (
            ["--conformance-suite", "smoke", "--conformance-backend", "nope"],
            "ERROR: --conformance-backend: unknown backend 'nope'",
        ),
        (["--conformance-case", "bad,id"], "ERROR: --conformance-case: bad token 'id'"),
        (
            ["--conformance-suite", "smoke", "--conformance-deviations", "none.toml"],
            "ERROR: --conformance-deviations: no such file",
        ),
    ],
)
def test_mistakes_are_usage_errors(pytester, args, message):
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert any(ln.startswith(message) for ln in result.errlines), result.errlines
