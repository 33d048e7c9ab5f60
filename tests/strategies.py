"""Hypothesis strategies shared by the tests: a shape with its channel axis, the profile fields, and cases built
from them (any valid case, for the id round-trip; a case the SUT can run, for the kernels against the oracle)."""

from hypothesis import strategies as st

from conformance.case import DTYPES, FILL_PARAMS, Case, Fill

PROFILE_FIELDS = {
    "running_var": st.sampled_from(["biased", "unbiased"]),
    "stats": st.sampled_from(["var", "invstd"]),
    "momentum_dir": st.sampled_from(["old", "new"]),
}


def shape_and_axis(draw, max_dim: int) -> tuple[tuple[int, ...], int]:
    """A rank 2..5 shape of dimensions 1..max_dim, and a channel axis of it (negative ones included)."""
    rank = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(1, max_dim), min_size=rank, max_size=rank)))
    return shape, draw(st.integers(-rank, rank - 1))


def _profile(draw) -> dict:
    return {k: draw(v) for k, v in PROFILE_FIELDS.items()}


@st.composite
def any_cases(draw) -> Case:
    """Any valid case: every field over its range, an inputs file reference or none."""
    shape, axis = shape_and_axis(draw, 6)
    kind = draw(st.sampled_from([k for k in FILL_PARAMS if k != "exact"]))
    params = {
        k: draw(st.floats(0.0, 1.0) if k in ("fraction", "std") else st.floats(-1e6, 1e6)) for k in FILL_PARAMS[kind]
    }
    if kind == "uniform":
        params["low"], params["high"] = sorted((params["low"], params["high"]))
    inputs = st.builds(
        "{}@{}".format,
        st.text(min_size=1, max_size=20).filter(lambda t: not t.startswith("/")),
        st.text("0123456789abcdef", min_size=16, max_size=16),
    )
    return Case(
        name=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,12}", fullmatch=True)),
        dtype=draw(st.sampled_from(DTYPES)),
        shape=shape,
        axis=axis,
        mode=draw(st.sampled_from(["train", "infer"])),
        backward=draw(st.booleans()),
        fix_gamma=draw(st.booleans()),
        **_profile(draw),
        eps=draw(st.floats(0, 1)),
        momentum=draw(st.floats(0, 1)),
        seed=draw(st.integers(0, 2**63 - 1)),
        fill=Fill.make(kind, params),
        inputs=draw(st.none() | inputs),
        inputs_root=draw(st.none() | st.text(max_size=10)),  # not in the id, not in equality
    )


@st.composite
def runnable_cases(draw) -> Case:
    """A case the SUT runs with backward: small shapes of every rank, every fill (exact only where a channel has
    an even count of values), every dtype, mode and profile, a few momenta."""
    shape, axis = shape_and_axis(draw, 9)
    kind = draw(st.sampled_from(sorted(FILL_PARAMS)))
    count = 1
    for d in shape:
        count *= d
    if kind == "exact" and (count // shape[axis]) % 2:
        kind = "normal"
    return Case(
        name="hyp",
        shape=shape,
        axis=axis,
        dtype=draw(st.sampled_from(["float32", "float64", "float16"])),
        mode=draw(st.sampled_from(["train", "infer"])),
        backward=True,
        fix_gamma=draw(st.booleans()),
        **_profile(draw),
        momentum=draw(st.sampled_from([0.0, 0.1, 0.9, 1.0])),
        seed=draw(st.integers(0, 1000)),
        fill=Fill.make(kind),
    )
