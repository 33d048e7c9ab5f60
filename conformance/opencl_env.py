"""Make OpenCL runtimes installed from PyPI visible to the ICD loader.

Intel's CPU runtime (PyPI package ``intel-opencl-rt``) installs ``libintelocl.so`` under ``sys.prefix/lib``,
but the ``.icd`` file it ships names a path on the build machine, and the ICD loader only reads
``/etc/OpenCL/vendors`` anyway. ``register_runtimes()`` builds a vendors folder of our own, holding a copy of
every system ``.icd`` plus one for the pip-installed runtime, and points ``OCL_ICD_VENDORS`` at it.

It must run before the ICD loader first enumerates platforms, that is before ``pyopencl`` is first used in
the process (calling it before ``import pyopencl`` is the safe rule).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import tempfile
from pathlib import Path

from .files import replace_atomically

SYSTEM_VENDORS = Path("/etc/OpenCL/vendors")
INTEL_LIB = "libintelocl.so"
INTEL_ICD = "intel-cpu.icd"


def _find_intel_runtime() -> Path | None:
    """Absolute path of a pip-installed libintelocl.so, or None."""
    candidate = Path(sys.prefix) / "lib" / INTEL_LIB
    if candidate.is_file():
        return candidate.resolve()
    try:
        files = importlib.metadata.files("intel-opencl-rt") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == INTEL_LIB:
            path = Path(f.locate()).resolve()
            if path.is_file():
                return path
    return None


NOTES: list[str] = []  # what was done that a reader of the report should know (one line each)


def _icd_folder() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "conformance" / "icd"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            return True
    except OSError:
        return False


def prepare_caches() -> None:
    """pyopencl keeps compiled programs under ~/.cache/pyopencl, pytools (which pyopencl uses) its tables under
    ~/.cache/pytools, and this suite its ICD folder under ~/.cache/conformance. Where one of them cannot be
    written, pyopencl fails every build it would cache (it reads os.environ["PYOPENCL_CACHE_FAILURE_FATAL"]
    unguarded: a KeyError). Then the caches go to a private folder under the temporary directory, or, failing
    that, pyopencl's cache is switched off; either way NOTES says so in one line. Call before pyopencl is imported."""
    os.environ.setdefault("PYOPENCL_CACHE_FAILURE_FATAL", "")  # any later cache failure: a warning, not a KeyError
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    if all(_writable(root / sub) for sub in ("pyopencl", "pytools", "conformance")):
        return
    private = Path(tempfile.gettempdir()) / f"conformance-cache-{os.getuid()}"
    try:
        private.mkdir(mode=0o700, exist_ok=True)
        mine = private.stat().st_uid == os.getuid() and not private.is_symlink()
    except OSError:
        mine = False
    if mine and _writable(private / "pyopencl"):
        os.environ["XDG_CACHE_HOME"] = str(private)
        NOTES.append(f"{root} is not writable: the OpenCL caches (pyopencl, pytools, ICD folder) are in {private}")
    else:
        os.environ["PYOPENCL_NO_CACHE"] = "1"
        NOTES.append(
            f"{root} is not writable, nor is {private}: pyopencl's program cache is off (every build compiles)"
        )


def _write_if_changed(path: Path, text: str) -> None:
    """Written atomically (several worker processes may register at once); untouched when already right."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    replace_atomically(path, text)


def register_runtimes() -> str | None:
    """Point OCL_ICD_VENDORS at a folder with the system vendors plus pip-installed runtimes.

    Returns the folder, or None when nothing was done (the user set OCL_ICD_VENDORS, or no pip-installed
    runtime was found, in which case the system vendors are used as they are).
    """
    prepare_caches()
    if os.environ.get("OCL_ICD_VENDORS"):
        return None
    intel = _find_intel_runtime()
    if intel is None:
        return None
    folder = _icd_folder()
    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, str] = {}
    if SYSTEM_VENDORS.is_dir():
        for icd in sorted(SYSTEM_VENDORS.glob("*.icd")):
            try:
                wanted[icd.name] = icd.read_text()
            except OSError:
                continue  # an unreadable vendor file: the system loader would skip it too
    wanted[INTEL_ICD] = f"{intel}\n"
    for name, text in wanted.items():
        _write_if_changed(folder / name, text)
    for stale in folder.glob("*.icd"):  # a vendor removed from the system since the last run
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)
    os.environ["OCL_ICD_VENDORS"] = str(folder)
    return str(folder)
