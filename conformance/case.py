"""One BatchNorm problem, fully described: a frozen dataclass whose id round-trips.

The id is the case's canonical name: the case name, then ``key=value`` for every field, in a fixed order
(case_id.py writes and reads that text; case_fill.py holds Fill, a case's input fill).
``Case.from_id(case.id) == case`` for every valid case, so ``conformance run --case ID``
re-runs a case with nothing else to go on. The id is safe as a file name and as a shell word.

A case whose inputs come from an .npz file names it by a path relative to the folder it is resolved against (the
suite file's folder; for a file outside it, the file's own folder) plus a digest of its content, e.g.
``inputs=data%2Fcaptured.npz@0123456789abcdef``: the same suite gives the same ids in every folder and on every
machine, and a changed file is a different case. Where that folder is (``inputs_root``) is not part of the case:
not in its id, not in its equality.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .case_fill import FILL_PARAMS, Fill
from .case_id import DIGEST_HEX, QUIET_DEFAULTS, content_digest, file_stem, format_id, format_value, parse_id
from .errors import UserError

# Public names, those of case_fill (Fill) and case_id (the id text format) that modules import from here included.
__all__ = [
    "ACTS",
    "DIGEST_HEX",
    "DTYPES",
    "FILL_PARAMS",
    "ID_FIELDS",
    "MAX_ELEMENTS",
    "MODES",
    "MOMENTUM_DIR",
    "NORMALIZE_WITH",
    "QUIET_DEFAULTS",
    "RUNNING_VAR",
    "STATS",
    "SUITE_FIELDS",
    "Case",
    "Fill",
    "content_digest",
    "file_stem",
    "profiled",
]

DTYPES = ("float16", "float32", "float64")
MODES = ("train", "infer")
RUNNING_VAR = ("biased", "unbiased")
STATS = ("var", "invstd")
MOMENTUM_DIR = ("old", "new")
NORMALIZE_WITH = ("batch", "running")  # mode's other spelling: train normalises with the batch, infer with the running
ACTS = ("none", "relu", "sigmoid", "tanh")  # applied after the affine step; ReLU is benchdnn's fused-ReLU flag
_FLAGS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=[^,=]+(,[A-Za-z_][A-Za-z0-9_.]*=[^,=]+)*$")

MAX_ELEMENTS = 1 << 28  # 256 Mi elements (1 GiB in float32): beyond this a case is a mistake here
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_INPUTS_RE = re.compile(r"^(?P<file>.+)@(?P<digest>[0-9a-f]{16})$", re.DOTALL)  # relative/path.npz@<16 hex of sha256>


@dataclass(frozen=True)
class Case:
    name: str
    dtype: str = "float32"
    shape: tuple[int, ...] = (2, 3)
    axis: int = 1
    mode: str = "train"
    backward: bool = False
    fix_gamma: bool = False
    update_running: bool | None = None  # None: as mode says (train updates, infer does not); else explicit
    act: str = "none"  # activation applied to the affine output y, forward and backward
    inplace: bool = False  # y written over x (and dx over dy): the caller's x then holds y
    running_var: str = "biased"  # profile: running-variance estimator
    stats: str = "var"  # profile: the extra output, batch variance or inverse std
    momentum_dir: str = "old"  # profile: the momentum the implementation is handed weighs the old or the new value
    eps: float = 1e-5
    momentum: float = 0.9  # canonical: running = momentum * running + (1 - momentum) * batch
    seed: int = 0
    flags: str = ""  # a framework's flag combination ('training=False,use_global_stats=True'): only that one runs
    fill: Fill = field(default_factory=lambda: Fill.make("normal"))
    inputs: str | None = None  # an .npz file with some or all of the inputs: "relative/path.npz@<digest>"
    inputs_root: str | None = field(default=None, compare=False)  # the folder `inputs` is relative to; not in the id

    def __post_init__(self):
        if self.update_running is not None and self.update_running is (self.mode == "train"):
            object.__setattr__(self, "update_running", None)  # what mode says: one spelling, one id
        self.validate()

    # ---- validation -------------------------------------------------------------------------------------
    def validate(self, source: str | None = None) -> None:
        """Raise UserError naming the first field that is not valid (checked in field order, roughly)."""

        def bad(fieldname, message):
            raise UserError(f"{message} [case {self.name!r}]", source=source, field=fieldname)

        self._check_choices(bad)
        self._check_shape(bad)
        self._check_behaviour(bad)
        self._check_numbers(bad)
        if not isinstance(self.flags, str) or (self.flags and not _FLAGS_RE.match(self.flags)):
            bad(
                "flags",
                "must be a framework's flag combination such as 'training=False,use_global_stats=True', "
                f"got {self.flags!r}",
            )
        self._check_fill(bad)
        self._check_inputs(bad)

    def _check_choices(self, bad) -> None:
        """The name, and the fields that take one of a few words: dtype, mode and the profile fields."""
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            bad("name", f"must be letters, digits and _ . + - (not starting with a symbol), got {self.name!r}")
        for fname, choices in (
            ("dtype", DTYPES),
            ("mode", MODES),
            ("running_var", RUNNING_VAR),
            ("stats", STATS),
            ("momentum_dir", MOMENTUM_DIR),
        ):
            value = getattr(self, fname)
            if value not in choices:
                bad(fname, f"must be one of {', '.join(choices)}, got {value!r}")

    def _check_shape(self, bad) -> None:
        """shape: rank >= 2, dimensions >= 1, at most MAX_ELEMENTS; axis within it."""
        if not isinstance(self.shape, tuple) or len(self.shape) < 2:
            bad(
                "shape",
                "needs rank >= 2 (a batch axis and a channel axis), got "
                f"{list(self.shape) if isinstance(self.shape, tuple) else self.shape!r}",
            )
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.shape):
            bad("shape", f"every dimension must be an integer >= 1, got {list(self.shape)!r}")
        if math.prod(self.shape) > MAX_ELEMENTS:
            bad("shape", f"{list(self.shape)!r} has {math.prod(self.shape)} elements, more than {MAX_ELEMENTS}")
        if (
            isinstance(self.axis, bool)
            or not isinstance(self.axis, int)
            or not -len(self.shape) <= self.axis < len(self.shape)
        ):
            bad("axis", f"{self.axis!r} is out of range for shape {list(self.shape)!r}")

    def _check_behaviour(self, bad) -> None:
        """The switches: update_running, act, backward, fix_gamma, inplace."""
        if self.update_running is not None and not isinstance(self.update_running, bool):
            bad("update_running", f"must be true or false, got {self.update_running!r}")
        if self.act not in ACTS:
            bad("act", f"must be one of {', '.join(ACTS)}, got {self.act!r}")
        for fname in ("backward", "fix_gamma", "inplace"):
            if not isinstance(getattr(self, fname), bool):
                bad(fname, f"must be true or false, got {getattr(self, fname)!r}")

    def _check_numbers(self, bad) -> None:
        """eps, momentum and seed: of their type (a bool is not a number here) and in range."""
        if (
            isinstance(self.eps, bool)
            or not isinstance(self.eps, float)
            or not (math.isfinite(self.eps) and self.eps >= 0)
        ):
            bad("eps", f"must be a finite number >= 0, got {self.eps!r}")
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, float) or not 0.0 <= self.momentum <= 1.0:
            bad("momentum", f"must lie in [0, 1], got {self.momentum!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            bad("seed", f"must be an integer in [0, 2^63), got {self.seed!r}")

    def _check_fill(self, bad) -> None:
        """fill: a Fill, and for kind 'exact' an even count (values come in pairs c +- a)."""
        if not isinstance(self.fill, Fill):
            bad("fill", f"must be a Fill, got {self.fill!r}")
        if self.fill.kind == "exact" and self.count % 2:
            bad(
                "fill",
                "kind 'exact' needs an even number of values per channel, "
                f"shape {list(self.shape)!r} axis {self.axis} gives {self.count}",
            )

    def _check_inputs(self, bad) -> None:
        """inputs: 'relative/path.npz@<digest>' or None; inputs_root: a folder or None."""
        if self.inputs is not None:
            found = _INPUTS_RE.match(self.inputs) if isinstance(self.inputs, str) else None
            if not found:
                bad(
                    "inputs",
                    f"must be a relative path to an .npz file, '@' and the {DIGEST_HEX} hex digits of its sha256, "
                    f"got {self.inputs!r}",
                )
            if found["file"].startswith("/"):
                bad(
                    "inputs",
                    "must be relative to the inputs folder (an id is the same on every machine), "
                    f"got {found['file']!r}",
                )
        if self.inputs_root is not None and not isinstance(self.inputs_root, str):
            bad("inputs_root", f"must be a folder, got {self.inputs_root!r}")

    # ---- derived --------------------------------------------------------------------------------------------
    @property
    def channel_axis(self) -> int:
        return self.axis % len(self.shape)

    @property
    def channels(self) -> int:
        return self.shape[self.channel_axis]

    @property
    def outer(self) -> int:
        return math.prod(self.shape[: self.channel_axis])

    @property
    def inner(self) -> int:
        return math.prod(self.shape[self.channel_axis + 1 :])

    @property
    def count(self) -> int:
        """Values per channel: the reduction length m."""
        return self.outer * self.inner

    @property
    def normalize_with(self) -> str:
        """Which statistics normalise: the batch's (mode train) or the running ones (mode infer)."""
        return "batch" if self.mode == "train" else "running"

    @property
    def updates_running(self) -> bool:
        """Whether the running statistics move towards the batch statistics: update_running, else as mode says."""
        return self.mode == "train" if self.update_running is None else self.update_running

    @property
    def batch_stats(self) -> bool:
        """Whether the batch statistics are computed (to normalise with, or to update the running ones)."""
        return self.mode == "train" or self.updates_running

    @property
    def behaviour(self) -> dict:
        """The canonical behaviours this case asks for (what a framework's flag table maps its flags to)."""
        return {
            "normalize_with": self.normalize_with,
            "update_running": self.updates_running,
            "act": self.act,
            "inplace": self.inplace,
        }

    @property
    def features(self) -> tuple[str, ...]:
        """The behaviours beyond mode's two that this case uses, as 'field=value': a backend runs a case only
        when it implements every one (backends declare IMPLEMENTS; default-deny)."""
        out = []
        if self.update_running is not None:
            out.append(f"update_running={format_value('update_running', self.update_running)}")
        if self.act != "none":
            out.append(f"act={self.act}")
        if self.inplace:
            out.append("inplace=1")
        return tuple(out)

    @property
    def param_dtype(self) -> str:
        """dtype of gamma, beta, the statistics and their gradients: float32 for float16 data (mixed precision)."""
        return "float32" if self.dtype == "float16" else self.dtype

    @property
    def outputs(self) -> tuple[str, ...]:
        """What an implementation returns for this case, in report order."""
        out = ("y",) + (("mean", self.stats) if self.batch_stats else ()) + ("running_mean", "running_var")
        if self.inplace:  # the caller's x after the call: y written over it
            out += ("x_after",)
        if self.backward:
            out += ("dx", "dgamma", "dbeta") + (("dy_after",) if self.inplace else ())
        return out

    @property
    def inputs_file(self) -> str | None:
        """The inputs file's path as the id names it: relative to inputs_root, '/' separated."""
        return None if self.inputs is None else self.inputs.rpartition("@")[0]

    @property
    def inputs_digest(self) -> str | None:
        """The 16 hex digits of the sha256 of the inputs file's content that the id names."""
        return None if self.inputs is None else self.inputs.rpartition("@")[2]

    @property
    def inputs_path(self) -> Path | None:
        """Where the inputs file is read from: inputs_file resolved against inputs_root (else the current folder)."""
        return None if self.inputs is None else Path(self.inputs_root or os.curdir, *self.inputs_file.split("/"))

    # ---- id (the text format: case_id) ----------------------------------------------------------------------
    @property
    def id(self) -> str:
        return format_id(self)

    @staticmethod
    def from_id(case_id: str, *, source: str = "--case", inputs_root: str | None = None) -> Case:
        """The case an id names; an inputs file named in it is resolved against inputs_root (a folder), else the
        current folder (taken now)."""
        return parse_id(Case, case_id, source=source, inputs_root=inputs_root)


ID_FIELDS = tuple(f.name for f in fields(Case) if f.compare)  # what an id (and a suite's [[case]]) sets
# What a suite's [[case]] (and a known deviation's case selector) may name: every id field, and normalize_with,
# the suite-file spelling of `mode` (batch: train, running: infer).
SUITE_FIELDS = (*ID_FIELDS, "normalize_with")


def profiled(case: Case, profile) -> Case:
    """The canonical case under a framework's profile (None fields keep the canonical choice)."""
    if profile is None:
        return case
    return replace(
        case,
        momentum_dir=profile.momentum_dir or "old",
        running_var=profile.running_var or "biased",
        stats=profile.stats or case.stats,
    )
