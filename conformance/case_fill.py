"""How a case fills its inputs: the Fill kinds, their parameters, and a fill's token in a case id."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UserError

# Fill kinds and their parameters with defaults. Every parameter is a float.
FILL_PARAMS: dict[str, dict[str, float]] = {
    "normal": {"mean": 0.0, "std": 1.0},
    "uniform": {"low": -1.0, "high": 1.0},
    "offset": {"mean": 1.0e4, "std": 0.1},
    "constant": {"mean": 0.0, "std": 1.0},  # one value per channel, drawn from normal(mean, std)
    "exact": {},  # c +- a per channel with dyadic c, a: batch mean c and variance a^2 are exact
    "special": {"fraction": 0.01},  # normal(0, 1) with NaN, +Inf, -Inf at this fraction of elements
}


def parse_float(text: str, source, fieldname) -> float:
    """A number in an id token (a fill parameter, eps, momentum)."""
    try:
        return float(text)
    except ValueError:
        raise UserError(f"not a number: {text!r}", source=source, field=fieldname) from None


@dataclass(frozen=True)
class Fill:
    kind: str = "normal"
    params: tuple[tuple[str, float], ...] = ()

    @staticmethod
    def make(kind: str, params: dict | None = None, *, source: str | None = None, where: str = "fill") -> Fill:
        if kind not in FILL_PARAMS:
            raise UserError(
                f"unknown fill kind {kind!r} (known: {', '.join(FILL_PARAMS)})", source=source, field=f"{where}.kind"
            )
        allowed = FILL_PARAMS[kind]
        merged = dict(allowed)
        for key, value in (params or {}).items():
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                raise UserError(
                    f"unknown parameter {key!r} for fill kind {kind!r} (known: {known})",
                    source=source,
                    field=f"{where}.{key}",
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"must be a finite number, got {value!r}", source=source, field=f"{where}.{key}")
            merged[key] = float(value)
        if kind == "special" and not 0.0 <= merged["fraction"] <= 1.0:
            raise UserError(f"must lie in [0, 1], got {merged['fraction']!r}", source=source, field=f"{where}.fraction")
        if kind in ("normal", "offset", "constant") and merged["std"] < 0:
            raise UserError(f"must be >= 0, got {merged['std']!r}", source=source, field=f"{where}.std")
        if kind == "uniform" and not merged["low"] <= merged["high"]:
            raise UserError(f"low {merged['low']!r} is above high {merged['high']!r}", source=source, field=where)
        return Fill(kind, tuple(sorted(merged.items())))

    def get(self, key: str) -> float:
        return dict(self.params)[key]

    def token(self) -> str:
        return ":".join([self.kind] + [f"{k}={v!r}" for k, v in self.params])

    @staticmethod
    def from_token(token: str, *, source: str | None = None) -> Fill:
        kind, *pairs = token.split(":")
        params = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise UserError(f"bad fill parameter {pair!r} (expected key=value)", source=source, field="fill")
            params[key] = parse_float(value, source, f"fill.{key}")
        return Fill.make(kind, params, source=source)
