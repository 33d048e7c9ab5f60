"""Every kernel of the `gpu` family runs clean under Oclgrind (--data-races --uninitialized: out-of-bounds
accesses, reads of uninitialised memory, data races in local and global memory, barriers not reached by every
work-item of a group), on tiny shapes with work-groups of 16 work-items, tiles of 4 channels channel-last (so a
last tile has idle lanes), chunks shorter than a work-group (idle rows), and several chunks per channel; and
every output still matches the oracle. A planted race (a tree step without its barrier) is reported, so the
check can fail.

Oclgrind 21.10 reports false uninitialised reads once a process has freed buffers and allocates new ones
(tests/test_oclgrind.py), so each process keeps every buffer it allocated until it exits and runs a batch of
cases, each case's launches once.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.case import Case, Fill

if shutil.which("oclgrind") is None:
    pytest.skip("oclgrind is not installed (Debian: apt-get install oclgrind)", allow_module_level=True)

KERNELS = Path(__file__).resolve().parents[1] / "kernels_cl"
# Oclgrind has one compute unit: 8 work-groups wanted, each work-item keeping at least one position; problems of
# at most 64 values in one launch, larger ones staged
TUNE = {
    "family": "gpu",
    "wg": 16,
    "lanes": 4,
    "chunks_per_cu": 8,
    "min_per_item": 1,
    "single_launch_max": 64,
    "tile_max": 0,
}
FUSED_CF, STAGED_CF = (2, 3, 5), (3, 2, 21)  # 30 values: one launch, 10 per channel; 126: 3 chunks of 21
FUSED_CL, STAGED_CL = (7, 6), (20, 6)  # channel-last: tiles of 4 channels (the second has 2 idle lanes)
# (kernels each reaches): gbn_fwd_fused, gbn_bwd_fused (train: dx pass; infer: dx in the sums pass),
# gbn_fwd_partial, gbn_fwd_final, gbn_apply (after the statistics and alone), gbn_bwd_partial (with and without dx),
# gbn_bwd_final, gbn_bwd_dx; programs with ACT_*, KEEP_RUNNING, NORM_RUNNING; in place; NaN/Inf channels (the
# textbook-mean path of finish_stats); the profile arguments
BATCHES = [
    [
        dict(shape=FUSED_CF, mode="train"),
        dict(shape=STAGED_CF, mode="train", fix_gamma=True, running_var="unbiased", stats="invstd", momentum_dir="new"),
        dict(shape=FUSED_CL, mode="train"),
        dict(shape=STAGED_CL, mode="train"),
        dict(shape=FUSED_CF, mode="infer"),
        dict(shape=STAGED_CL, mode="infer"),
    ],
    [
        dict(shape=STAGED_CF, mode="train", act="relu"),
        dict(shape=FUSED_CL, mode="train", act="sigmoid"),
        dict(shape=STAGED_CF, mode="infer", update_running=True, inplace=True),
        dict(shape=FUSED_CF, mode="train", update_running=False, inplace=True),
        dict(shape=STAGED_CL, mode="train", fill=Fill.make("special", {"fraction": 0.1})),
        dict(shape=FUSED_CF, mode="train", fill=Fill.make("special", {"fraction": 0.1})),
    ],
]

OCLGRIND = ["oclgrind", "--data-races", "--uninitialized"]
# Cases on the only OpenCL device there is under Oclgrind (gpu family by CONFORMANCE_OPENCL_TUNE), each case's
# launches once, every buffer kept; prints the device, the family and each case's comparisons as JSON.
CHECK = """
import json, sys
from conformance.backends import opencl
from conformance.case import Case
from conformance.compare import compare
from conformance.generate import generate
from conformance.oracle import reference
from conformance.runner import expected_dtype
import numpy as np
import pyopencl as cl

keys = [d.key for d in opencl.devices()]
session = opencl.open(keys[0])
kept, status, launched = [], {}, set()
for case_id in sys.argv[1:]:
    case = Case.from_id(case_id)
    inputs = generate(case)
    buffers, launches = session.planner.plan(session, case, inputs)
    bound = opencl.bind(session, case, launches)
    opencl.enqueue_all(session.profiling_queue, bound)
    launched.update(name for name, *_ in launches)
    kept.append((buffers, bound))
    ref = reference(case, inputs)
    source = {case.stats: "stat", "x_after": "x", "dy_after": "dy"}
    for out in case.outputs:
        big = out in ("y", "dx", "x_after", "dy_after")
        host = np.empty(case.shape if big else case.channels, case.dtype if big else case.param_dtype)
        cl.enqueue_copy(session.profiling_queue, host, buffers[source.get(out, out)], is_blocking=True)
        row = compare(out, host, ref.values[out], ref.scales[out], case, expected_dtype(case, out))
        if row["status"] != "pass":
            status[case_id + " " + out] = row["reason"]
print(json.dumps({"devices": keys, "family": session.family, "launched": sorted(launched), "failed": status}))
"""


def _ids(batch, dtype):
    return [Case(name="g", dtype=dtype, backward=True, **kw).id for kw in batch]


def _run(case_ids, kernels=None):
    env = {
        **os.environ,
        "CONFORMANCE_OPENCL_TUNE": json.dumps(TUNE),
        **({"CONFORMANCE_KERNELS_DIR": str(kernels)} if kernels else {}),
    }
    return subprocess.run(
        [*OCLGRIND, sys.executable, "-c", CHECK, *case_ids], capture_output=True, text=True, timeout=600, env=env
    )


LAUNCHED: set = set()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", range(len(BATCHES)))
def test_gpu_kernels_are_clean(batch, dtype):
    r = _run(_ids(BATCHES[batch], dtype))
    text = r.stdout + r.stderr
    assert "Kernel:" not in text, text[:3000]
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(got["devices"]) == 1 and "oclgrind" in got["devices"][0], got["devices"]
    assert got["family"] == "gpu"
    assert not got["failed"], got["failed"]
    LAUNCHED.update(got["launched"])


def test_every_gpu_kernel_ran_under_oclgrind():
    from conformance.backends import opencl_gpu

    if not LAUNCHED:
        pytest.skip("run with the tests above")
    assert set(opencl_gpu.KERNELS) <= LAUNCHED, set(opencl_gpu.KERNELS) - LAUNCHED


def test_planted_race_is_reported(tmp_path):
    bad = tmp_path / "kernels"
    shutil.copytree(KERNELS, bad)
    src = (bad / "gpu_base.cl").read_text()
    step = "            red[wg + lid] += red[wg + lid + s * TW];\n        }\n        barrier(CLK_LOCAL_MEM_FENCE);\n"
    planted = src.replace(step, step.replace("        barrier(CLK_LOCAL_MEM_FENCE);\n", ""))
    assert planted != src, "the line to plant the bug in has moved: update this test"
    (bad / "gpu_base.cl").write_text(planted)
    r = _run(_ids(BATCHES[0][:1], "float32"), kernels=bad)
    text = r.stdout + r.stderr
    assert "data race" in text.lower() and "Kernel:" in text, text[-3000:]
