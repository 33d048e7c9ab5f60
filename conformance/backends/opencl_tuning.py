"""Per-device tuning of the OpenCL kernels, as data: the first entry whose `match` is a substring of the
device key wins; `default` serves unknown devices. Work-group sizes are fixed per device (a driver that
compiles per launch shape, like PoCL, then compiles each kernel once); chunk sizes set how much of a channel
one work-group reduces (small enough to stay in cache for the second pass, large enough to amortise).

    reduce_ls      work-group size of the channel-first reductions (power of two)
    apply_ls       work-group size of the elementwise and channel-last kernels (power of two)
    chunk          elements of one channel per reduction work-group (channel-first)
    chunk_bytes    bytes of rows per channel-last reduction work-group (rows * C * itemsize)
    min_groups     reductions are split until there are at least this many work-groups per compute unit
"""

DEFAULT = {"reduce_ls": 256, "apply_ls": 64, "chunk": 16384, "chunk_bytes": 256 * 1024, "min_groups": 4}

TUNING = [
    ("pocl", {}),
    ("intel", {}),
    ("nvidia", {"reduce_ls": 256, "apply_ls": 128, "chunk": 65536, "chunk_bytes": 1 << 20, "min_groups": 8}),
]


def params(device_key: str) -> dict:
    for match, overrides in TUNING:
        if match in (device_key or ""):
            return {**DEFAULT, **overrides}
    return dict(DEFAULT)
