"""Per-device tuning of the OpenCL kernels, as data: the first entry whose `match` is a substring of the
device key wins; `default` serves unknown devices. Work-group sizes are fixed per device (a driver that
compiles per launch shape, like PoCL, then compiles each kernel once); chunk sizes set how much of a channel
one work-group reduces (small enough to stay in cache for the second pass, large enough to amortise).

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
"""

DEFAULT = {"apply_ls": 64, "seg": 4096, "chunk": 32768, "chunk_bytes": 128 * 1024, "min_groups": 4,
           "fused_bytes": 2 << 20, "group_bytes": 256 * 1024, "fused_bytes_cl": 512 * 1024, "tile_bytes": 4096,
           "nt_bytes": None, "ahead": 1, "prefetch": False}

TUNING = [
    ("pocl", {"nt_bytes": 16 << 20, "ahead": 4, "prefetch": True}),
    ("intel", {"nt_bytes": 16 << 20, "ahead": 4, "prefetch": True}),
    # Oclgrind checks the kernels, so small cases take the streaming-store branch and the groups one after the
    # other too (it knows no prefetch instruction; a prefetch reads nothing anyway)
    ("oclgrind", {"nt_bytes": 4096, "ahead": 2}),
    ("nvidia", {"apply_ls": 128, "seg": 256, "chunk": 4096, "chunk_bytes": 1 << 20, "min_groups": 16, "fused_bytes": 0,
                "fused_bytes_cl": 0}),
]


def params(device_key: str) -> dict:
    for match, overrides in TUNING:
        if match in (device_key or ""):
            return {**DEFAULT, **overrides}
    return dict(DEFAULT)
