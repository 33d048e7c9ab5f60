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


def _icd_folder() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "conformance" / "icd"


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic write (several worker processes may register at once); untouched when already right."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def register_runtimes() -> str | None:
    """Point OCL_ICD_VENDORS at a folder with the system vendors plus pip-installed runtimes.

    Returns the folder, or None when nothing was done (the user set OCL_ICD_VENDORS, or no pip-installed
    runtime was found, in which case the system vendors are used as they are).
    """
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
