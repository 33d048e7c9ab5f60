"""Per-device choice and tuning of the OpenCL kernels, as data.

params(key, props, overrides): the kernel family and its parameters for one device. In order, each later one
overriding: the defaults (DEFAULT for the `cpu` family, GPU_DEFAULT for the `gpu` one, and `family` from the
device type: FAMILY_BY_TYPE, `cpu` for anything but a GPU); the first TUNING entry whose `match` is a
substring of the device key; the run's overrides (`conformance run/bench --tune KEY=VALUE`, which reach the
OpenCL workers as the environment variable CONFORMANCE_OPENCL_TUNE, JSON); then what the device's properties
impose (fit(): work-group sizes within the device's limits, no streaming stores where a buffer need not start
on a 64-byte line). Work-group sizes are fixed per device (a driver that compiles per launch shape, like PoCL,
then compiles each kernel once).

    family         `cpu` (kernels_cl/cpu_*.cl, planned by opencl_plan.py) or `gpu` (kernels_cl/gpu_*.cl,
                   planned by opencl_gpu.py)

The `cpu` family (chunk sizes set how much of a channel one work-group reduces: small enough to stay in
cache for the second pass, large enough to amortise):

    apply_ls       work-group size of the kernels with one work-item per channel (power of two)
    seg            elements of a row one elementwise work-item handles
    chunk          elements of one channel one reduction work-item handles (channel-first)
    tile_bytes     channel-last: a work-item's tile is at most this many bytes of each row (W channels)
    chunk_bytes    channel-last: bytes of x one tile's work-item reads (rows * W * itemsize)
    min_groups     work is split until there are at least this many work-groups per compute unit
    fused_bytes    a channel-first channel of at most this many bytes (x, plus dy for backward) is done by one
                   work-item, statistics and elementwise in one launch, while there are min_groups channels per
                   compute unit
    group_bytes    such fused channels are grouped up to this many bytes per work-item (neighbouring channels
                   are one contiguous run per row: long runs for short rows such as 7x7 maps)
    fused_bytes_cl a channel-last tile over all rows of at most this many bytes (x, plus dy) is done by one
                   work-item in one launch, with tiles of at least 8 channels, min_groups per compute unit
    nt_bytes       y and dx are written with streaming (non-temporal) stores when x has at least this many
                   bytes (and the 8-value stores are aligned); None: never (the program is built without them,
                   for devices whose compiler may not know __builtin_nontemporal_store)
    ahead          for x of at least nt_bytes, a work-item of the fused channel-first training kernel takes up to
                   this many groups of channels one after the other (while min_groups work-items per compute
                   unit remain), and while it writes one group's y it prefetches the next group's x
    prefetch       the prefetch is a real instruction (clang's __builtin_prefetch; the program is built with
                   PREFETCH); False: the same walk without it (for compilers that may not know the builtin)

The `gpu` family (its kernels and their use of these: conformance/backends/opencl_gpu.py):
    wg             work-group size of the reduction and elementwise kernels (a power of two, at most the
                   device's maximum work-group size)
    chunks_per_cu  work-groups of partial sums per compute unit: a channel is cut into chunks until the device
                   has this many per unit, so few channels still fill it
    single_launch_max  a problem of at most this many elements runs in a single launch
    lanes          channel-last: at most this many channels side by side in a work-group's tile
    min_per_item   a chunk gives each work-item at least this many positions
    tile_max       a tile of at most this many values (x, plus dy) also runs in a single launch
"""

import json
import os

ENV = "CONFORMANCE_OPENCL_TUNE"  # the run's overrides, JSON {key: value}, read by the OpenCL workers
FAMILIES = ("cpu", "gpu")
FAMILY_BY_TYPE = {"gpu": "gpu"}  # device type (props["device_type"]) -> family; anything else: cpu

DEFAULT = {
    "apply_ls": 64,
    "seg": 4096,
    "chunk": 32768,
    "chunk_bytes": 128 * 1024,
    "min_groups": 4,
    "fused_bytes": 2 << 20,
    "group_bytes": 256 * 1024,
    "fused_bytes_cl": 512 * 1024,
    "tile_bytes": 4096,
    "nt_bytes": None,
    "ahead": 1,
    "prefetch": False,
}

TUNING = [
    ("pocl", {"nt_bytes": 16 << 20, "ahead": 4, "prefetch": True}),
    ("intel", {"nt_bytes": 16 << 20, "ahead": 4, "prefetch": True}),
    # Oclgrind checks the kernels, so small cases take the streaming-store branch and the groups one after the
    # other too (it knows no prefetch instruction; a prefetch reads nothing anyway). It says it is a GPU; it runs
    # the cpu family unless told otherwise (--tune family=gpu, CONFORMANCE_OPENCL_TUNE='{"family": "gpu"}')
    ("oclgrind", {"family": "cpu", "nt_bytes": 4096, "ahead": 2}),
    (
        "nvidia",
        {
            "apply_ls": 128,
            "seg": 256,
            "chunk": 4096,
            "chunk_bytes": 1 << 20,
            "min_groups": 16,
            "fused_bytes": 0,
            "fused_bytes_cl": 0,
        },
    ),
]


GPU_DEFAULT = {
    "wg": 256,
    "chunks_per_cu": 4,
    "single_launch_max": 65536,
    "lanes": 64,
    "min_per_item": 8,
    "tile_max": 1 << 18,
}  # opencl_gpu.DEFAULTS: the same names and values

# the keys of each family's parameters (the `tuning` column of results.csv and bench.csv lists these)
FAMILY_KEYS = {"cpu": tuple(DEFAULT), "gpu": tuple(GPU_DEFAULT)}
POSITIVE = {
    "apply_ls",
    "seg",
    "chunk",
    "chunk_bytes",
    "tile_bytes",
    "min_groups",
    "ahead",
    "wg",
    "chunks_per_cu",
    "lanes",
    "min_per_item",
}


def params(device_key: str, props: dict | None = None, overrides: dict | None = None) -> dict:
    """The family and every parameter for the device with this key and properties (props: see opencl.props();
    None: an unknown device, taken as a CPU), with the run's overrides, fitted to the device."""
    props = props or {}
    out = {"family": FAMILY_BY_TYPE.get(props.get("device_type"), "cpu"), **DEFAULT, **GPU_DEFAULT}
    for match, entry in TUNING:
        if match in (device_key or ""):
            out.update(entry)
            break
    out.update(overrides or {})
    return fit(out, props)


def fit(tune: dict, props: dict) -> dict:
    """What the device imposes on the parameters: work-group sizes within its limits (rounded down to a power of
    two), and no streaming stores where a buffer need not start on a 64-byte line (8-value streaming stores
    must be aligned to their size)."""
    limit = props.get("max_work_group_size")
    for key in ("apply_ls", "wg"):
        size = min(tune[key], limit) if limit else tune[key]
        tune[key] = 1 << (int(size).bit_length() - 1)
    if props.get("mem_base_addr_align", 8 * 64) < 8 * 64:  # bits
        tune["nt_bytes"] = None
    return tune


def compact(tune: dict) -> str:
    """The family's parameters as `k=v;k=v` (the `tuning` column)."""
    return ";".join(f"{k}={tune[k]}" for k in FAMILY_KEYS.get(tune.get("family"), ()) if k in tune)


# ---- overrides (--tune KEY=VALUE) ----------------------------------------------------------------------------
def known_keys() -> list[str]:
    return ["family", *DEFAULT, *GPU_DEFAULT]


def parse_value(text: str):
    """A --tune value: int (16777216, 0x1000), float, bool (true/false), None (none/null), else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (lambda t: int(t, 0), float):
        try:
            return conv(text.strip())
        except ValueError:
            pass
    return text.strip()


def check(key: str, value) -> str | None:
    """Why `key=value` is no tuning entry, or None."""
    if key not in known_keys():
        return f"unknown tuning key {key!r} (known: {', '.join(known_keys())})"
    if key == "family":
        return None if value in FAMILIES else f"family must be one of {', '.join(FAMILIES)}, not {value!r}"
    default = {**DEFAULT, **GPU_DEFAULT}[key]
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"{key} takes true or false, not {value!r}"
    if key == "nt_bytes":  # None: never
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
        return None if ok else f"nt_bytes takes a byte count or none, not {value!r}"
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{key} takes an integer, not {value!r}"
    low = 1 if key in POSITIVE else 0
    return None if value >= low else f"{key} must be at least {low}, not {value}"


def parse_overrides(items) -> dict:
    """{key: value} from KEY=VALUE strings; ValueError(one line naming the item) for a bad one."""
    out = {}
    for item in items or []:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        value = parse_value(text)
        why = check(key, value)
        if why:
            raise ValueError(f"{item!r}: {why}")
        out[key] = value
    return out


def env_overrides() -> dict:
    """The run's overrides as the worker's environment gives them ({} when none); ValueError when malformed."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{ENV} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{ENV} is not a JSON object")
    for key, value in raw.items():
        why = check(key, value)
        if why:
            raise ValueError(f"{ENV}: {why}")
    return raw


def env_for(overrides: dict) -> dict:
    """The worker environment that carries these overrides."""
    return {ENV: json.dumps(overrides, sort_keys=True)} if overrides else {}
