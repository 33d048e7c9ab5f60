"""Every kernel runs clean under Oclgrind (no invalid access, no data race, no uninitialised read), and a
planted out-of-bounds write is reported, so the check can fail. Oclgrind 21.10 flags false uninitialised reads
once a process has freed buffers and allocates new ones (each case alone is clean), so every case runs in a
process of its own: the kernels of one case, run once by the OpenCL backend (CHECK, the least work that runs
them all: `conformance run --repeats 1` runs each four times, a warm-up and the timed and profiled repeats
included), and their outputs held against the oracle. The planted bug is found through the README's command,
`oclgrind ... conformance run --backend opencl --case ID`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.case import Case

if shutil.which("oclgrind") is None:
    pytest.skip("oclgrind is not installed (Debian: apt-get install oclgrind)", allow_module_level=True)

KERNELS = Path(__file__).resolve().parents[1] / "kernels_cl"
TAIL = "eps=1e-05,momentum=0.9,seed=0,fill=normal:mean=0.0:std=1.0"
# Every kernel and branch: train (shift, partial, final, apply, backward), infer (prep, apply, backward),
# fused per-channel kernels (9 channels: enough for one work-item each), fix_gamma, channel last (with a full
# block of 16 channels and a tail), rows long enough for the 8-wide vector loops and their tails (100, 21), and
# the profile arguments.
VARIANTS = [
    "v,dtype={d},shape=2x3x4,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=3x2x100,axis=1,mode=train,backward=1,fix_gamma=1,running_var=unbiased,stats=invstd,momentum_dir=new,",
    "v,dtype={d},shape=3x100x2,axis=-1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=2x5x3,axis=1,mode=infer,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=2x3x21,axis=1,mode=infer,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=3x5x20,axis=-1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=2x9x10,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=2x9x10,axis=1,mode=infer,backward=1,fix_gamma=1,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=2x5x3,axis=-1,mode=infer,backward=1,fix_gamma=1,running_var=biased,stats=var,momentum_dir=old,",
    # fused channel-last tiles (2D, 8 channels per tile), fused channel-first groups of 3 channels, and a fused
    # tile of 256 channels (the 32- and 16-channel register slabs) with a last tile of 6 (the table path)
    "v,dtype={d},shape=4x40,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=2x12x5,axis=1,mode=train,backward=1,fix_gamma=0,running_var=unbiased,stats=invstd,momentum_dir=new,",
    "v,dtype={d},shape=3x1030,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    # fused channel-first rows longer than SUM_BLOCK (1024): a full block, then 8-value steps, then a scalar tail;
    # 5 rows: one step of ROW_STREAMS (4) rows read side by side, then a row alone
    "v,dtype={d},shape=5x9x1050,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    # short rows of a fused group, 4 rows side by side then two alone
    "v,dtype={d},shape=6x12x5,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    # streaming stores (Oclgrind's tuning takes them from 4 KiB on): fused channel-first, staged channel-first
    # (train and infer), channel-last tiles in stages and fused
    "v,dtype={d},shape=5x8x256,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=2x3x256,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=2x3x256,axis=1,mode=infer,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=8x24x16,axis=-1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=64x64,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    # channel-first groups of short rows as tiles of positions (7x7: groups of 16 channels and a last one of 8;
    # 14x14: groups of 2), streaming; 10 and 9 rows: steps of 8 rows side by side, then the last rows one by one
    "v,dtype={d},shape=10x72x7x7,axis=1,mode=train,backward=1,fix_gamma=0,running_var=unbiased,stats=invstd,momentum_dir=new,",
    "v,dtype={d},shape=9x8x14x14,axis=1,mode=train,backward=1,fix_gamma=1,running_var=biased,stats=var,momentum_dir=old,",
    # the fused channel-first training kernel, groups one after the other (tuning "ahead"): 17 channels, groups of 2
    # (float32; float64: 1), the last work-item's last step past C
    "v,dtype={d},shape=4x17x2752,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    # the elementwise kernels streaming in aligned 8-value blocks across row ends: staged training (two segments,
    # the second starting inside a row) and inference with a scalar tail (1275 values)
    "v,dtype={d},shape=4x3x500,axis=1,mode=train,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
    "v,dtype={d},shape=5x5x51,axis=1,mode=infer,backward=1,fix_gamma=0,running_var=biased,stats=var,momentum_dir=old,",
]


# The case fields beyond mode's two (programs built with -DACT_*, -DKEEP_RUNNING, -DNORM_RUNNING; in place: one
# buffer in and out), on shapes like those above (on Oclgrind's one compute unit): act through every forward
# kernel (staged and fused, channel-first and -last, tiles of 7x7 rows, the elementwise kernel's streaming
# blocks) and the staged backward an act program runs (channel-first partial sums and row-by-row dx; channel-last
# tiles of 256, 24 and 2 channels: the 16- and 8-channel slabs and the one-by-one tail), inference that updates
# the running statistics (the training kernels, fused and staged), training that leaves them, and in place (fused
# and staged, with the copy of x for backward, and without backward).
FLAGGED = [
    dict(shape=(2, 3, 4), axis=1, mode="train", act="relu"),
    dict(shape=(3, 100, 2), axis=-1, mode="train", act="sigmoid", fix_gamma=True),
    dict(shape=(2, 12, 5), axis=1, mode="train", act="tanh", running_var="unbiased", stats="invstd"),
    dict(shape=(3, 1030), axis=1, mode="train", act="relu"),
    dict(shape=(10, 72, 7, 7), axis=1, mode="train", act="sigmoid"),
    dict(shape=(5, 5, 51), axis=1, mode="infer", act="tanh"),
    dict(shape=(8, 16, 24), axis=-1, mode="infer", act="relu"),
    dict(shape=(2, 12, 5), axis=1, mode="infer", update_running=True),
    dict(shape=(3, 100, 2), axis=-1, mode="infer", update_running=True, act="relu", inplace=True),
    dict(shape=(9, 8, 14, 14), axis=1, mode="infer", update_running=True, act="tanh", inplace=True),
    dict(shape=(5, 8, 256), axis=1, mode="train", update_running=False),
    dict(shape=(2, 9, 10), axis=1, mode="train", inplace=True),
    dict(shape=(64, 64), axis=1, mode="train", act="sigmoid", inplace=True),
    dict(shape=(2, 3, 256), axis=1, mode="infer", inplace=True),
    dict(shape=(4, 3, 500), axis=1, mode="train", update_running=False, act="relu", inplace=True, backward=False),
]


def flagged_id(dtype: str, kw: dict) -> str:
    return Case(name="f", dtype=dtype, **{"backward": True, **kw}).id


OCLGRIND = ["oclgrind", "--data-races", "--uninitialized"]
# One case on the only OpenCL device there is under Oclgrind, its kernels run once; prints the device and, per
# output, the comparison with the oracle as JSON.
CHECK = """
import json, sys
from conformance.backends import opencl
from conformance.backends.base import TimingPolicy
from conformance.case import Case
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype

case = Case.from_id(sys.argv[1])
keys = [d.key for d in opencl.devices()]
session = opencl.open(keys[0])
inputs = generate(case)
result = opencl.run(session, case, inputs, TimingPolicy(warmup=0, min_repeats=1, max_repeats=1, budget_s=0.0))
ref = reference(case, inputs)
rows = {out: compare(out, result.outputs[out], ref.values[out], ref.scales[out], case, expected_dtype(case, out))
        for out in case.outputs}
print(json.dumps({"devices": keys, "status": {o: r["status"] for o, r in rows.items()},
                  "reason": {o: r["reason"] for o, r in rows.items()}}))
"""


def _env(kernels):
    return {**os.environ, **({"CONFORMANCE_KERNELS_DIR": str(kernels)} if kernels else {})}


def check_under_oclgrind(case_id, kernels=None):
    return subprocess.run(
        [*OCLGRIND, sys.executable, "-c", CHECK, case_id],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(kernels),
    )


def run_under_oclgrind(tmp_path, case_id, kernels=None):
    """The README's command under Oclgrind, on one case."""
    return subprocess.run(
        [
            *OCLGRIND,
            sys.executable,
            "-m",
            "conformance",
            "run",
            "--backend",
            "opencl",
            "--case",
            case_id,
            "--out",
            str(tmp_path / "out"),
            "--repeats",
            "1",
            "--history",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(kernels),
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", VARIANTS, ids=range(len(VARIANTS)))
def test_kernels_are_clean(dtype, variant):
    _clean(variant.format(d=dtype) + TAIL)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", FLAGGED, ids=range(len(FLAGGED)))
def test_flagged_kernels_are_clean(dtype, kw):
    _clean(flagged_id(dtype, kw))


def _clean(case_id):
    r = check_under_oclgrind(case_id)
    text = r.stdout + r.stderr
    assert "Kernel:" not in text, text[:3000]
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(got["devices"]) == 1 and "oclgrind" in got["devices"][0], got["devices"]
    assert set(got["status"].values()) == {"pass"}, got["reason"]


def test_planted_out_of_bounds_write_is_reported(tmp_path):
    bad = tmp_path / "kernels"
    shutil.copytree(KERNELS, bad)
    src = (bad / "cpu_fwd.cl").read_text()  # cf_apply_run's scalar tail
    planted = src.replace(
        "STORE(ACT1((LOAD(xs, w) - mu) * a + b), ys, w);", "STORE(ACT1((LOAD(xs, w) - mu) * a + b), ys, w + 1);"
    )
    assert planted != src, "the line to plant the bug in has moved: update this test"
    (bad / "cpu_fwd.cl").write_text(planted)
    case_id = VARIANTS[0].format(d="float32") + TAIL
    for r in (check_under_oclgrind(case_id, kernels=bad), run_under_oclgrind(tmp_path, case_id, kernels=bad)):
        text = r.stdout + r.stderr
        assert "Invalid write" in text and "Kernel:" in text, text[-3000:]
