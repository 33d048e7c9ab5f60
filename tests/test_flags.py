"""Flag combinations and the behaviours beyond mode, end to end through real worker processes.

Paddle nn (its FLAGS table: layer.train()/eval() x use_global_stats x trainable_statistics) is the framework here;
the conventions probe must be able to say MISMATCH, shown with a combination whose stated meaning is wrong on
purpose. Everything else a backend does not implement is 'unsupported' before it is called (default-deny).
"""

import importlib.util
import subprocess
import sys

import pandas as pd
import pytest

from conformance import conventions
from conformance.backends.base import Combo
from conformance.case import Case
from conformance.worker import Worker

needs_paddle = pytest.mark.skipif(importlib.util.find_spec("paddle") is None, reason="paddle is not installed")


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "conformance", *args], capture_output=True, text=True, timeout=timeout)


@needs_paddle
def test_every_documented_combination_runs_and_its_id_reruns_it(tmp_path):
    case = Case("fl", shape=(4, 3, 2, 2), mode="infer", backward=True)
    got = cli(
        "run",
        "--case",
        case.id,
        "--backend",
        "paddle",
        "--backend",
        "numpy",
        "--out",
        str(tmp_path / "a"),
        "--rounds",
        "1",
        "--history",
        "none",
    )
    assert got.returncode == 0, got.stdout + got.stderr
    rows = pd.read_csv(tmp_path / "a" / "results.csv", keep_default_na=False)
    paddle = rows[rows["backend"] == "paddle"]
    # the page gives two combinations the meaning 'normalise with running statistics, leave them': eval() alone,
    # and eval() with use_global_stats=True
    assert set(paddle["flags"]) == {
        "training=False,use_global_stats=False,trainable_statistics=False",
        "training=False,use_global_stats=True,trainable_statistics=False",
    }
    assert (paddle["status"] == "pass").all()
    assert set(rows[rows["backend"] == "numpy"]["flags"]) == {""}
    one = paddle[paddle["flags"].str.contains("use_global_stats=True")]["case_id"].iloc[0]
    again = cli(
        "run", "--case", one, "--backend", "paddle", "--out", str(tmp_path / "b"), "--rounds", "1", "--history", "none"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    rerun = pd.read_csv(tmp_path / "b" / "results.csv", keep_default_na=False)
    assert set(rerun["flags"]) == {"training=False,use_global_stats=True,trainable_statistics=False"}
    assert set(rerun["case_id"]) == {one}


@needs_paddle
def test_a_stated_meaning_the_framework_does_not_follow_is_a_mismatch():
    w = Worker("paddle", None).start()
    try:
        prof = w.meta.profile
        wrong = Combo(
            (("training", True), ("use_global_stats", False), ("trainable_statistics", False)), "running", False
        )
        right = Combo(wrong.flags, "batch", True)
        undefined = Combo(wrong.flags, None, None)
        assert conventions._flag_probe(w, prof, wrong)["verdict"] == "MISMATCH"
        assert conventions._flag_probe(w, prof, right)["verdict"] == "agrees"
        seen = conventions._flag_probe(w, prof, undefined)
        assert seen["verdict"] == "observed" and seen["seen"] == {"normalize_with": "batch", "update_running": True}
    finally:
        w.stop()


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx is not installed")
def test_features_a_backend_does_not_list_are_unsupported_before_it_runs(tmp_path):
    # onnx_reference implements none of them and has no flag table; numpy implements every feature
    case = Case("feat", shape=(4, 3), act="relu", backward=False)
    got = cli(
        "run",
        "--case",
        case.id,
        "--backend",
        "onnx_reference",
        "--backend",
        "numpy",
        "--out",
        str(tmp_path / "a"),
        "--rounds",
        "1",
        "--history",
        "none",
    )
    assert got.returncode == 0, got.stdout + got.stderr
    rows = pd.read_csv(tmp_path / "a" / "results.csv", keep_default_na=False)
    onnx = rows[rows["backend"] == "onnx_reference"]
    assert len(onnx) and (onnx["status"] == "unsupported").all()
    assert onnx["reason"].str.contains("does not implement act=relu").all()
    assert (rows[rows["backend"] == "numpy"]["status"] == "pass").all()
    # a case naming a flag combination runs it on the targets that have it; the peers run the case without it
    flagged = Case("feat", shape=(4, 3), flags="training=True")
    got = cli(
        "run",
        "--case",
        flagged.id,
        "--backend",
        "onnx_reference",
        "--backend",
        "numpy",
        "--out",
        str(tmp_path / "b"),
        "--rounds",
        "1",
        "--history",
        "none",
    )
    assert got.returncode == 0, got.stdout + got.stderr
    rows = pd.read_csv(tmp_path / "b" / "results.csv", keep_default_na=False)
    assert set(rows["backend"]) == {"numpy"} and set(rows["flags"]) == {""} and (rows["status"] == "pass").all()
