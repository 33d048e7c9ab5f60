"""Cases whose inputs come from an .npz file: ids that are the same wherever the suite is, files checked before
anything is decompressed."""

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy

from conformance import suite
from conformance.case import Case, content_digest
from conformance.cli import main
from conformance.errors import UserError
from conformance.generate import check_npz, generate, load_npz

SUITE = """[suite]
name = "captured"
[[case]]
name = "cap"
shape = [2, 3, 4]
backward = true
inputs = ["data/cap.npz", "../outside.npz"]
"""


@pytest.fixture
def tree(tmp_path):
    """tmp/a/suite/{suite.toml, data/cap.npz} and tmp/a/outside.npz."""
    folder = tmp_path / "a" / "suite"
    (folder / "data").mkdir(parents=True)
    (folder / "suite.toml").write_text(SUITE)
    np.savez(folder / "data" / "cap.npz", x=np.arange(24, dtype=np.float32).reshape(2, 3, 4), gamma=np.full(3, 2.0))
    np.savez(tmp_path / "a" / "outside.npz", dy=np.ones((2, 3, 4)))
    return folder


def ids(path):
    return [c.id for c in suite.load(str(path)).cases]


def one_line(exc) -> str:
    text = str(exc.value)
    assert len(text.splitlines()) == 1, text
    return text


def test_ids_are_the_same_from_any_folder_and_any_copy(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = ids(tree / "suite.toml")
    monkeypatch.chdir(tree / "data")
    assert ids("../suite.toml") == here
    copy = tmp_path / "b" / "c" / "suite"
    shutil.copytree(tree.parent, copy.parent)  # the suite folder and the file beside it, elsewhere
    assert ids(copy / "suite.toml") == here
    digest = content_digest(tree / "data" / "cap.npz")
    assert here[0].endswith(f",inputs=data%2Fcap.npz@{digest}") and here[1].split(",inputs=")[1].startswith(
        "outside.npz@"
    )
    assert all("/" not in i and str(tmp_path) not in i for i in here)
    np.savez(copy / "data" / "cap.npz", x=np.zeros((2, 3, 4), np.float32))  # other content: another case
    changed = ids(copy / "suite.toml")
    assert changed[0] != here[0] and changed[1] == here[1]


def test_case_ids_reload_with_an_inputs_root(tree, tmp_path, monkeypatch):
    case = suite.load(str(tree / "suite.toml")).cases[0]
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tree, elsewhere)
    monkeypatch.chdir(tmp_path)
    again = Case.from_id(case.id, inputs_root=str(elsewhere))
    assert again == case and again.id == case.id and again.inputs_root == str(elsewhere)
    got, want = generate(again), generate(case)
    np.testing.assert_array_equal(got.x, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    np.testing.assert_array_equal(got.gamma, [2.0, 2.0, 2.0])
    for name, value in want.as_dict().items():
        np.testing.assert_array_equal(got.as_dict()[name], value)  # the drawn ones too: the draws never move
    monkeypatch.chdir(elsewhere)  # without inputs_root: the current folder
    assert generate(Case.from_id(case.id)).x[1, 2, 3] == 23


def test_a_missing_file_says_to_pass_the_folder(tree, tmp_path, monkeypatch, capsys):
    case = suite.load(str(tree / "suite.toml")).cases[0]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as exc:
        check_npz(Case.from_id(case.id))
    text = one_line(exc)
    assert "--inputs-root" in text and "data/cap.npz" in text and str(tmp_path) in text
    out = tmp_path / "out"
    assert main(["run", "--case", case.id, "--backend", "numpy", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--inputs-root" in err and not out.exists()


def test_changed_content_is_refused_naming_both_digests(tree):
    case = suite.load(str(tree / "suite.toml")).cases[0]
    path = tree / "data" / "cap.npz"
    np.savez(path, x=np.ones((2, 3, 4), np.float32))
    with pytest.raises(UserError) as exc:
        generate(case)
    text = one_line(exc)
    assert str(path) in text and case.inputs_digest in text and content_digest(path) in text


def npz_with(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def npy_header(shape, dtype="<f4") -> bytes:
    from io import BytesIO

    buf = BytesIO()
    npy.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


HEAD = len(npy_header((2, 3, 4)))  # the header np.save writes, padded to 64 bytes


def refusal(tmp_path, members: dict[str, bytes], shape=(2, 3, 4)) -> str:
    (tmp_path / "s.toml").write_text(
        f'[suite]\nname = "s"\n[[case]]\nname = "c"\nshape = {list(shape)}\ninputs = "f.npz"\n'
    )
    npz_with(tmp_path / "f.npz", members)
    case = suite.load(str(tmp_path / "s.toml")).cases[0]
    with pytest.raises(UserError) as exc:
        load_npz(case)
    return one_line(exc)


@pytest.mark.parametrize(
    "members, expect",
    [
        ({"x.npy": npy_header((2, 3, 5)) + bytes(120)}, "shape [2, 3, 5] does not match the case, expected [2, 3, 4]"),
        ({"x.npy": npy_header((2, 3, 4), "|O") + bytes(192)}, "is not numeric"),
        ({"x.npy": npy_header((2, 3, 4), "<c8") + bytes(192)}, "is not numeric"),
        (
            {"x.npy": npy_header((2, 3, 4)) + bytes(96 + 8)},
            f"inflates to {HEAD + 104} bytes, its header says {HEAD + 96}",
        ),
        ({"x.npy": npy_header((2, 3, 4)) + bytes(90)}, "inflates to"),
        ({"x.npy": b"not an npy file at all"}, "not a readable .npy member"),
        (
            {"gamma.npy": npy_header((3,)) + bytes(12), "x.npy": npy_header((2, 3, 4)) + bytes(96), "weights.npy": b""},
            "unknown key 'weights'",
        ),
        ({"x.npy": npy_header((2, 3, 4)) + bytes(96), "x": npy_header((2, 3, 4)) + bytes(96)}, "key 'x' appears twice"),
    ],
)
def test_each_bad_member_is_one_line_naming_file_and_key(tmp_path, members, expect):
    text = refusal(tmp_path, members)
    assert expect in text and str(tmp_path / "f.npz") in text


def test_a_non_zip_file_is_one_line(tmp_path):
    (tmp_path / "s.toml").write_text('[suite]\nname = "s"\n[[case]]\nname = "c"\nshape = [2, 3]\ninputs = "f.npz"\n')
    (tmp_path / "f.npz").write_bytes(b"\x00garbage\n" * 10)
    with pytest.raises(UserError) as exc:
        check_npz(suite.load(str(tmp_path / "s.toml")).cases[0])
    assert "cannot read as .npz" in one_line(exc)


INFLATED = 1 << 30
PROBE = """
import json, sys, time
from conformance import suite
from conformance.errors import UserError
from conformance.generate import generate

def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))

case = suite.load(sys.argv[1]).cases[0]
before, t0 = hwm(), time.perf_counter()
try:
    generate(case)
    message = None
except UserError as exc:
    message = str(exc)
print(json.dumps({"seconds": time.perf_counter() - t0, "grew": hwm() - before, "message": message}))
"""


def bomb(path, name: str, header: bytes):
    """An .npz whose member `name` is header + 1 GiB of zeros: a few MB on disk."""
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open(name, "w", force_zip64=True) as f,
    ):
        f.write(header)
        zeros = bytes(64 << 20)
        for _ in range(INFLATED // len(zeros)):
            f.write(zeros)


@pytest.mark.parametrize(
    "name, header, expect",
    [
        ("junk.npy", npy_header((INFLATED // 4,)), "unknown key 'junk'"),  # an extra key
        ("x.npy", npy_header((INFLATED // 4,)), "does not match the case"),  # a known key, its whole size in its header
        ("x.npy", npy_header((2, 3, 4)), f"its header says {HEAD + 96}"),  # a known key whose header claims 96 bytes
    ],
)
def test_a_member_inflating_to_a_gigabyte_is_refused_unread(tmp_path, name, header, expect):
    bomb(tmp_path / "f.npz", name, header)
    assert (tmp_path / "f.npz").stat().st_size < 8 << 20
    (tmp_path / "s.toml").write_text('[suite]\nname = "s"\n[[case]]\nname = "c"\nshape = [2, 3, 4]\ninputs = "f.npz"\n')
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "s.toml")], capture_output=True, text=True, timeout=120
    )
    got = json.loads(run.stdout)
    assert got["message"] is not None and expect in got["message"] and len(got["message"].splitlines()) == 1
    assert got["grew"] < INFLATED // 16, got  # peak resident memory: nowhere near the gigabyte
