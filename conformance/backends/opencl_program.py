"""The OpenCL backend's programs: the source of a kernel family's program (bn_common.h, then the family's files),
its build options, and the build itself, once per (data type, switches) in the session's cache."""

from __future__ import annotations

import inspect
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from . import opencl_shared

if TYPE_CHECKING:
    from .opencl_session import Session

HEADER = "bn_common.h"  # first in every program; then the family's files, <family>_*.cl in name order
KERNELS = (
    "bn_fused_train_cf",
    "bn_fused_train_cl",
    "bn_fused_train_cft",
    "bn_fused_bwd_cf",
    "bn_fused_bwd_cl",
    "bn_fused_bwd_cft",
    "bn_stats_partial_cf",
    "bn_stats_partial_cl",
    "bn_stats_final",
    "bn_apply",
    "bn_apply_cl",
    "bn_bwd_partial_cf",
    "bn_bwd_partial_cl",
    "bn_bwd_final",
    "bn_bwd_apply",
    "bn_bwd_apply_cl",
)
FUSED_BWD = ("bn_fused_bwd_cf", "bn_fused_bwd_cl", "bn_fused_bwd_cft")  # not in a program with an act
_DTYPE_DEFINES = {"float16": ["-DDATA_HALF"], "float32": [], "float64": ["-DDATA_DOUBLE"]}


def kernels_dir() -> Path:
    override = os.environ.get("CONFORMANCE_KERNELS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "kernels_cl"


def family_files(family: str, folder: Path | None = None) -> list[Path]:
    """The family's source files after the header: <family>_*.cl in kernels_cl, in name order."""
    return sorted((folder or kernels_dir()).glob(f"{family}_*.cl"))


_INCLUDE = re.compile(r'[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$')


def _expand(path: Path, seen: set) -> list[str]:
    """path's lines, each `#include "NAME"` of a file in its folder replaced by that file's lines the first time
    (later times by nothing), with #line markers so that a build log names the file and line it means."""
    seen.add(path.name)
    out = [f'#line 1 "{path.name}"']
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = _INCLUDE.match(line)
        if m and (path.parent / m.group(1)).is_file():
            if m.group(1) not in seen:
                out += _expand(path.parent / m.group(1), seen)
            out.append(f'#line {n + 1} "{path.name}"')
            continue
        out.append(line)
    return out


def program_source(family: str, order: tuple[str, ...] = ()) -> str:
    """The source of the family's program: bn_common.h, then kernels_cl/<family>_*.cl in name order, or those of
    them named in `order` first in that order (a planner's SOURCES); a file's `#include "bn_common.h"` is the
    header already there. Raises RuntimeError when the family has no files."""
    folder = kernels_dir()
    found = family_files(family, folder)
    files = [folder / n for n in order if (folder / n) in found] + [p for p in found if p.name not in order]
    if not files:
        raise RuntimeError(f"no kernel files {family}_*.cl in {folder}")
    seen: set = set()
    lines = []
    for path in (folder / HEADER, *files):
        if path.name not in seen:
            lines += _expand(path, seen)
    return "\n".join(lines) + "\n"


def first_log_line(exc: Exception) -> str:
    """The first error line of the build log in a pyopencl build error: the first line that says 'error',
    else its first non-empty line (Intel's log opens with progress chatter: 'Compilation started')."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    start = next((k + 1 for k, ln in enumerate(lines) if ln.startswith("Build on")), 0)
    log = [ln for ln in lines[start:] if ln and not ln.startswith("(options:") and not ln.startswith("(source saved")]
    for line in log:
        if re.search(r"\berror\b", line, re.IGNORECASE):
            return line
    return log[0] if log else type(exc).__name__


def build_options(session: Session, dtype: str, switches: tuple[str, ...] = ()) -> list[str]:
    """The build options of the program for dtype and the case switches (opencl_shared.defines: () for a case with
    the defaults, whose options are the device's and the dtype's alone)."""
    import pyopencl as cl

    tune = session.tuning
    options = [f"-DAPPLY_LS={tune['apply_ls']}", *_DTYPE_DEFINES[dtype]]
    if tune["nt_bytes"] is not None:
        options.append("-DNT_STORES")
    if tune["prefetch"]:
        options.append("-DPREFETCH")
    if dtype != "float64" and session.device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
        options.append("-cl-fp32-correctly-rounded-divide-sqrt")
    return options + list(switches)


def build(session: Session, dtype: str, switches: tuple[str, ...] = ()):
    """The program of the session's family for dtype and the case switches, built once per session (kept in
    session.cache.programs under (dtype, *switches): a session has one family); raises RuntimeError(first
    build-log line) on failure."""
    import pyopencl as cl

    programs, family = session.cache.programs, session.family
    key = (dtype, *switches)
    if key not in programs:
        files = f"{family}_*.cl"
        source = program_source(family, tuple(getattr(session.planner, "SOURCES", ())))
        options = build_options(session, dtype, switches)
        try:
            with warnings.catch_warnings():  # Intel's compiler always logs remarks; they are no news
                warnings.simplefilter("ignore", cl.CompilerWarning)
                program = cl.Program(session.context, source).build(options=options)
        except cl.Error as exc:
            what = " ".join((dtype, *switches))
            raise RuntimeError(f"OpenCL build of {HEADER} + {files} for {what} failed: {first_log_line(exc)}") from exc
        act = any(d.startswith("-DACT_") for d in switches)
        wanted = KERNELS if family == "cpu" else tuple(getattr(session.planner, "KERNELS", ()))
        missing = [
            name
            for name in wanted
            if name not in program.kernel_names.split(";") and not (family == "cpu" and act and name in FUSED_BWD)
        ]
        if missing:
            raise RuntimeError(f"{files} has no kernel {missing[0]}")
        programs[key] = program
    return programs[key]


def case_switches(session: Session, case) -> tuple[str, ...]:
    """The case's program switches: the planner's defines(case) or defines(session, case) (the cpu family's:
    opencl_shared.defines)."""
    fn = getattr(session.planner, "defines", None) or opencl_shared.defines
    takes = len(inspect.signature(fn).parameters)
    return tuple(fn(session, case) if takes >= 2 else fn(case))


def build_copy(session: Session, streaming: bool):
    """The program of kernels_cl/copy.cl (measure_copy's segment copy), built once per session
    (session.cache.copy_program), with streaming stores where the device's tuning has them."""
    import pyopencl as cl

    if session.cache.copy_program is None:
        src = (kernels_dir() / "copy.cl").read_text()
        with warnings.catch_warnings():  # as for the BatchNorm program: Intel's remarks are no news
            warnings.simplefilter("ignore", cl.CompilerWarning)
            session.cache.copy_program = cl.Program(session.context, src).build(
                options=["-DNT_STORES"] if streaming else []
            )
    return session.cache.copy_program
