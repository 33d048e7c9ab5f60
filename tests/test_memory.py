"""Memory estimates bound what real runs take; a case that does not fit is refused in one line."""

import json
import subprocess
import sys

import pytest

from conformance import memory
from conformance.case import Case, Fill
from conformance.errors import UserError

MiB = 1 << 20


def measured_peak(case, backends, tmp_path) -> dict:
    """Peak resident bytes of a real `conformance run` of one case, per process, as run.json reports them."""
    out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    argv = [sys.executable, "-m", "conformance", "run", "--case", case.id, "--history", "none", "--out", str(out)]
    for b in backends:
        argv += ["--backend", b]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1, 3), run.stderr  # 3: no SUT compared (numpy alone); still a full run
    rss = json.loads((out / "run.json").read_text())["peak_rss_mib"]
    assert set(rss["workers"]) and all(rss["workers"].values()), rss
    return {"main": rss["main"] * MiB, "worker": max(rss["workers"].values()) * MiB, "targets": len(rss["workers"])}


CASES = [
    Case(name="f32-backward", dtype="float32", shape=(2048, 2048), backward=True),
    Case(name="f64-infer-backward", dtype="float64", shape=(1024, 2048), mode="infer", backward=True),
    Case(name="f16-special", dtype="float16", shape=(2048, 2048), fill=Fill.make("special")),
]


def test_estimates_bound_measured_peaks_of_the_numpy_peer(tmp_path):
    """On a tiny case a run is the processes' own footprint; what a case adds to it must stay under the estimate
    less its allowance for that footprint, and the whole run under the whole estimate."""
    tiny = measured_peak(Case(name="tiny", shape=(2, 3)), ["numpy"], tmp_path)
    footprint = tiny["main"] + tiny["worker"]
    for case in CASES:
        peak = measured_peak(case, ["numpy"], tmp_path)
        total = peak["main"] + peak["worker"]
        estimate = memory.estimate_bytes(case)
        assert total <= estimate, (case.name, total / MiB, estimate / MiB)
        assert total - footprint <= estimate - memory.BASE_MAIN - memory.BASE_WORKER, (
            case.name,
            (total - footprint) / MiB,
        )


def test_estimate_bounds_a_run_on_every_opencl_device(tmp_path):
    case = Case(name="f64-backward", dtype="float64", shape=(1024, 2048), backward=True)
    peak = measured_peak(case, ["opencl"], tmp_path)  # as many targets as this machine has OpenCL devices
    assert peak["main"] + peak["worker"] <= memory.estimate_bytes(case, peak["targets"])


def test_estimates_grow_with_what_a_case_holds():
    small, big = Case(name="s", shape=(1024, 1024)), Case(name="b", shape=(4096, 4096))
    assert memory.estimate_bytes(big) > memory.estimate_bytes(small)
    assert memory.estimate_bytes(Case(name="b", shape=(4096, 4096), backward=True)) > memory.estimate_bytes(big)
    assert memory.estimate_bytes(Case(name="d", shape=(4096, 4096), dtype="float64")) > memory.estimate_bytes(big)
    assert memory.estimate_bytes(big, targets=3) > memory.estimate_bytes(big)
    assert memory.estimate_bytes(big, targets=3, frameworks=1) > memory.estimate_bytes(big, targets=3)
    # one channel longer than the oracle's block: its temporaries are the channel's, not a block's
    assert memory.estimate_bytes(Case(name="l", shape=(1 << 24, 1))) > memory.estimate_bytes(
        Case(name="w", shape=(1, 1 << 24))
    )


def test_check_refuses_the_first_case_that_does_not_fit_in_one_line():
    small = Case(name="small", shape=(64, 64))
    big = Case(name="big-one", shape=(16384, 16384), dtype="float64", backward=True)
    limit = memory.estimate_bytes(small, targets=2)
    memory.check([small], limit_bytes=limit, targets=2)  # fits: nothing raised
    with pytest.raises(UserError) as exc:
        memory.check(
            [small, big, Case(name="bigger", shape=(16384, 16384))], limit_bytes=limit, source="--suite x", targets=2
        )
    text = str(exc.value)
    assert len(text.splitlines()) == 1 and text.startswith(
        "--suite x: case big-one (shape 16384x16384, float64, backward)"
    )
    assert f"{memory.estimate_bytes(big, 2) / (1 << 30):.1f} GiB" in text and f"{limit / MiB:.0f} MiB available" in text


def test_available_memory_is_the_smaller_of_the_machine_and_its_cgroup(tmp_path):
    assert 0 < memory.available_bytes() <= memory._meminfo_available() + (1 << 30)  # read twice: it moves meanwhile
    v2 = tmp_path / "sys" / "a" / "b"
    v2.mkdir(parents=True)
    for folder, limit, used in (
        (tmp_path / "sys", "max", "1"),
        (tmp_path / "sys" / "a", str(900 * MiB), str(600 * MiB)),
        (v2, str(2000 * MiB), str(100 * MiB)),
    ):
        (folder / "memory.max").write_text(limit + "\n")
        (folder / "memory.current").write_text(used + "\n")
        (folder / "memory.stat").write_text(f"anon 1\ninactive_file {50 * MiB}\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/a/b\n")
    dirs = memory._cgroup_dirs(tmp_path / "sys", str(proc))
    assert dirs[0] == (v2, "v2") and dirs[-1] == (tmp_path / "sys", "v2")
    assert memory._cgroup_available(dirs) == 900 * MiB - (600 - 50) * MiB  # the tighter ancestor, its cache reclaimable
    meminfo = tmp_path / "meminfo"
    for machine in (200 * MiB, 4000 * MiB):
        meminfo.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {machine // 1024} kB\n")
        assert memory.available_bytes(str(meminfo), dirs) == min(machine, 350 * MiB)
    assert memory.available_bytes(str(tmp_path / "none"), []) is None
    assert (
        memory.default_limit(10 << 30) == (10 << 30) - (1 << 30)
        and memory.default_limit(2 << 30) == (2 << 30) - 512 * MiB
    )


@pytest.mark.parametrize(
    "text, value",
    [
        ("12G", 12 << 30),
        ("12GiB", 12 << 30),
        ("800m", 800 * MiB),
        ("1.5G", 3 << 29),
        ("123456", 123456),
        (" 2 TB ", 2 << 40),
        ("64K", 65536),
    ],
)
def test_sizes_parse(text, value):
    assert memory.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "G", "12X", "-1G", "1e9", "twelve", "12 G G"])
def test_bad_sizes_are_one_line_user_errors(text):
    with pytest.raises(UserError) as exc:
        memory.parse_size(text, source="--memory-limit")
    assert (
        str(exc.value).startswith("--memory-limit: ")
        and len(str(exc.value).splitlines()) == 1
        and repr(text) in str(exc.value)
    )
