/* The `cpu` kernel family, part 1 of 3: what its forward (cpu_fwd.cl) and backward (cpu_bwd.cl) kernels share.
 * Built after bn_common.h (types, loads and stores, act, compensated sums, the per-channel finishing), in one
 * program with cpu_bwd.cl and cpu_fwd.cl (the host assembles bn_common.h + cpu_*.cl in name order).
 *
 * The family for CPU devices (opencl_tuning.py: `family` is `cpu` for every device that is not a GPU, and for
 * Oclgrind by its entry; `--tune family=...` overrides it for a run). Every kernel has a fixed work-group size (reqd_work_group_size), so a driver that
 * compiles per launch shape (PoCL) compiles each kernel once. The `final` kernels run APPLY_LS work-items per
 * work-group, one per channel; every other kernel runs one work-item per work-group, and each work-item walks
 * contiguous runs 8 values at a time (vload8 / vstore8, several accumulator chains): on CPU devices that is
 * what vectorises and what amortises the cost of a work-group. The host (choose() in
 * conformance/backends/opencl_plan.py) picks the kernels by shape:
 *   channel-first, a channel fits in cache: fused kernels, one work-item per group of channels, statistics
 *                (4 rows read side by side) then elementwise work in one launch;
 *   channel-first training on large data in rows off the 8-value grid (7x7 maps): the fused kernels that
 *                treat a group of channels as a channel-last tile of positions (bn_fused_*_cft);
 *   channel-first, larger: partial (one per chunk k and channel c) -> final (one work-item per channel adds
 *                the K partials) -> elementwise;
 *   channel-last: the same stages on tiles of channels x rows, fused when the tiles fit.
 * Here: the fused channel-first table layout, the channel-first sum walkers (chains4 .. cf_sums), the
 * elementwise kernels' segment walks (ROWS_BEGIN, BLOCKS_BEGIN), the fused channel-first sums (fused_sums), the
 * channel-last table adds (ladd8, ladd), the rows-side-by-side tile sums (tile_sums_rows), the tile kernels'
 * prologue (TILE_BEGIN, store_partials) and the groups of short rows as tiles (SPREAD, CFT_BEGIN).
 */

#include "bn_common.h"

/* A fused channel-first kernel keeps each channel's values in a table entry of FUSED_TAB values, vectors first
 * (so each sits on a multiple of 8): e[0..31] the vectors of a sums_t, e[PLAIN..PLAIN + 15] the plain sums'
 * vectors and e[PLAIN + 16], e[PLAIN + 17] their scalars, e[E_SCALARS..+3] the sums_t's scalars, e[E_SHIFT] the
 * shift (or the mean). */
#define FUSED_TAB 56 /* FUSED_TAB in opencl_plan.py; a multiple of 8 */
#define PLAIN 32
#define E_SCALARS 50
#define E_SHIFT 54

inline void sums_load(__local const acc_t *e, sums_t *r)
{
    r->s1 = LV8(e);
    r->c1 = LV8(e + 8);
    r->s2 = LV8(e + 16);
    r->c2 = LV8(e + 24);
    r->t1 = e[E_SCALARS];
    r->u1 = e[E_SCALARS + 1];
    r->t2 = e[E_SCALARS + 2];
    r->u2 = e[E_SCALARS + 3];
}

inline void sums_store(__local acc_t *e, const sums_t *r)
{
    SV8(r->s1, e);
    SV8(r->c1, e + 8);
    SV8(r->s2, e + 16);
    SV8(r->c2, e + 24);
    e[E_SCALARS] = r->t1;
    e[E_SCALARS + 1] = r->u1;
    e[E_SCALARS + 2] = r->t2;
    e[E_SCALARS + 3] = r->u2;
}

#define ITEM_ATTR __attribute__((reqd_work_group_size(1, 1, 1)))
#define APPLY_ATTR __attribute__((reqd_work_group_size(APPLY_LS, 1, 1)))

/* The channel-first sums, one family for both passes: over values of two tensors a and b, s1 = sum u and
 * s2 = sum u v, with v = b - K and u = a - ka, ka = K (a_shifted) or 0. The statistics pass a = b = x and the
 * shift: sum (x - K) and sum (x - K)^2 (the same loads twice, which the compiler merges); the backward pass
 * a = dy, b = x and the mean: sum dy and sum dy (x - mean) (dy - 0 is dy, bit for bit).
 * With an act, the backward pass's u is dy act'(z), z = v za + zb (the channel's za, zb: ZF_ARG, passed through
 * every function of the family; the statistics pass hands ZF_NONE and takes no act'). */
#ifdef ACT
#define ZF_ARG , acc_t za, acc_t zb
#define ZF_PASS , za, zb
#define ZF_NONE , (acc_t)0, (acc_t)0
#define SUM_U8(u, v) (a_shifted ? (u) : DACT8(u, v, za, zb))
#define SUM_U1(u, v) (a_shifted ? (u) : DACT1(u, v, za, zb))
#else
#define ZF_ARG
#define ZF_PASS
#define ZF_NONE
#define SUM_U8(u, v) u
#define SUM_U1(u, v) u
#endif

/* The four dependency chains: chain k (k = 0 .. 3) takes the 8 values at k stride + j step, j < n, and the
 * chains' totals are added pairwise to v1 (sum u) and v2 (sum u v). Four chains, so the loop waits on memory,
 * not on the adds. One run: stride 8, step 32; ROW_STREAMS runs side by side: stride the row stride, step 8. */
inline void chains4(__global const data_t *a, __global const data_t *b, int a_shifted, size_t stride, uint step,
                    uint n, acc_t K, acc8_t *v1, acc8_t *v2 ZF_ARG)
{
    const acc_t ka = a_shifted ? K : (acc_t)0;
    const size_t s2x = 2 * stride, s3x = 3 * stride;
    acc8_t a1 = *v1, a2 = *v2, b1 = 0, b2 = 0, c1 = 0, c2 = 0, e1 = 0, e2 = 0;
    for (uint j = 0, t = 0; j < n; ++j, t += step) {
        const acc8_t ua = SUM_U8(LOAD8(a, t) - ka, LOAD8(b, t) - K),
                     ub = SUM_U8(LOAD8(a, stride + t) - ka, LOAD8(b, stride + t) - K);
        const acc8_t uc = SUM_U8(LOAD8(a, s2x + t) - ka, LOAD8(b, s2x + t) - K),
                     ue = SUM_U8(LOAD8(a, s3x + t) - ka, LOAD8(b, s3x + t) - K);
        a1 += ua;
        a2 += ua * (LOAD8(b, t) - K);
        b1 += ub;
        b2 += ub * (LOAD8(b, stride + t) - K);
        c1 += uc;
        c2 += uc * (LOAD8(b, s2x + t) - K);
        e1 += ue;
        e2 += ue * (LOAD8(b, s3x + t) - K);
    }
    *v1 = (a1 + b1) + (c1 + e1);
    *v2 = (a2 + b2) + (c2 + e2);
}

/* The sums of the len values at a, b added to 8-lane sums (v1, v2) and, for the last len % 8 values, scalar
 * ones (t1, t2). */
inline void sums_into(__global const data_t *a, __global const data_t *b, int a_shifted, uint len, acc_t K,
                      acc8_t *v1, acc8_t *v2, acc_t *t1, acc_t *t2 ZF_ARG)
{
    const acc_t ka = a_shifted ? K : (acc_t)0;
    chains4(a, b, a_shifted, 8, 32, len / 32, K, v1, v2 ZF_PASS);
    acc8_t a1 = *v1, a2 = *v2;
    acc_t s1 = *t1, s2 = *t2;
    uint t = len / 32 * 32;
    for (; t + 8 <= len; t += 8) {
        const acc8_t u = SUM_U8(LOAD8(a, t) - ka, LOAD8(b, t) - K);
        a1 += u;
        a2 += u * (LOAD8(b, t) - K);
    }
    for (; t < len; ++t) {
        const acc_t u = SUM_U1(LOAD(a, t) - ka, LOAD(b, t) - K);
        s1 += u;
        s2 += u * (LOAD(b, t) - K);
    }
    *v1 = a1;
    *v2 = a2;
    *t1 = s1;
    *t2 = s2;
}

/* sums_into over ROW_STREAMS runs of len values at once, at a, a + stride, ... (and b alike): one dependency
 * chain per run. A channel-first channel is `outer` runs far apart (a row stride of C inner values); reading
 * one run after the other, the hardware prefetcher starts afresh at every run, while several runs read side by
 * side keep as many streams of loads in flight (the statistics pass of 32x64x56x56 float32 in a
 * micro-benchmark: 0.37 -> 0.29 ms on Intel's runtime, 0.78 -> 0.38 ms on PoCL, from cache). */
#define ROW_STREAMS 4
inline void sums_into_rows(__global const data_t *a, __global const data_t *b, int a_shifted, size_t stride,
                           uint len, acc_t K, acc8_t *v1, acc8_t *v2, acc_t *t1, acc_t *t2 ZF_ARG)
{
    const acc_t ka = a_shifted ? K : (acc_t)0;
    const size_t s2x = 2 * stride, s3x = 3 * stride;
    chains4(a, b, a_shifted, stride, 8, len / 8, K, v1, v2 ZF_PASS);
    acc_t s1 = *t1, s2 = *t2;
    for (uint t = len / 8 * 8; t < len; ++t) {
        const acc_t ua = SUM_U1(LOAD(a, t) - ka, LOAD(b, t) - K),
                    ub = SUM_U1(LOAD(a, stride + t) - ka, LOAD(b, stride + t) - K);
        const acc_t uc = SUM_U1(LOAD(a, s2x + t) - ka, LOAD(b, s2x + t) - K),
                    ue = SUM_U1(LOAD(a, s3x + t) - ka, LOAD(b, s3x + t) - K);
        s1 += (ua + ub) + (uc + ue);
        s2 += (ua * (LOAD(b, t) - K) + ub * (LOAD(b, stride + t) - K)) +
              (uc * (LOAD(b, s2x + t) - K) + ue * (LOAD(b, s3x + t) - K));
    }
    *t1 = s1;
    *t2 = s2;
}

/* sums_into over ns runs (1 or ROW_STREAMS) of len values, stride apart. */
inline void sums_into_ns(__global const data_t *a, __global const data_t *b, int a_shifted, size_t stride, uint ns,
                         uint len, acc_t K, acc8_t *v1, acc8_t *v2, acc_t *t1, acc_t *t2 ZF_ARG)
{
    if (ns == ROW_STREAMS)
        sums_into_rows(a, b, a_shifted, stride, len, K, v1, v2, t1, t2 ZF_PASS);
    else
        sums_into(a, b, a_shifted, len, K, v1, v2, t1, t2 ZF_PASS);
}

/* The sums of ns runs (1 or ROW_STREAMS, stride apart) of len values at a + at, b + at into r, a block of at
 * most SUM_BLOCK values of each run on fresh accumulators at a time. */
inline void run_sums(__global const data_t *a, __global const data_t *b, int a_shifted, size_t at, size_t stride,
                     uint ns, uint len, acc_t K, sums_t *r ZF_ARG)
{
    for (uint t = 0; t < len; t += SUM_BLOCK) {
        acc8_t v1 = 0, v2 = 0;
        acc_t t1 = 0, t2 = 0;
        sums_into_ns(a + at + t, b + at + t, a_shifted, stride, ns, min(len - t, (uint)SUM_BLOCK), K, &v1, &v2, &t1,
                     &t2 ZF_PASS);
        kadd8(&r->s1, &r->c1, v1);
        kadd8(&r->s2, &r->c2, v2);
        kadd(&r->t1, &r->u1, t1);
        kadd(&r->t2, &r->u2, t2);
    }
}

/* The sums of channel c over its elements [j0, j1), run by run (a run: the part of one row in range). */
inline void cf_sums(__global const data_t *a, __global const data_t *b, int a_shifted, uint C, uint inner, uint c,
                    uint j0, uint j1, acc_t K, acc_t *s1, acc_t *s2 ZF_ARG)
{
    sums_t r;
    sums_zero(&r);
    uint o = j0 / inner, i = j0 - o * inner;
    for (uint j = j0; j < j1; ++o, i = 0) {
        const uint len = min(inner - i, j1 - j);
        run_sums(a, b, a_shifted, ((size_t)o * C + c) * inner + i, 0, 1, len, K, &r ZF_PASS);
        j += len;
    }
    *s1 += sums_first(&r);
    *s2 += sums_second(&r);
}

/* y = (x - mean) * invstd * gamma + beta, channel-first. fix_gamma != 0: gamma is taken as 1. mean_w and
 * stat_w are the batch mean and invstd (training, is_var == 0) or the running mean and variance (inference,
 * is_var != 0). Work-item g handles the flat elements [g * seg, min((g + 1) * seg, n)), row by row (a row is
 * the `inner` values of one channel), so short rows (7x7 maps) and long ones get the same work per item. */
#define ROWS_BEGIN                                                                          \
    const size_t f1 = min((size_t)(get_global_id(0) + 1) * seg, (size_t)n);                \
    size_t f = (size_t)get_global_id(0) * seg;                                             \
    const size_t row0 = f / inner; /* the only divisions: later rows are counted */        \
    uint w0 = (uint)(f - row0 * inner), cc = (uint)(row0 % C);                              \
    for (; f < f1; w0 = 0, cc = cc + 1 == C ? 0 : cc + 1) {                                \
        const uint len = (uint)min((size_t)(inner - w0), f1 - f);
#define ROWS_END                                                                            \
        f += len;                                                                          \
    }

/* Streaming, the elementwise kernels walk their segment [f, f1) (f a multiple of 8) in aligned blocks of 8
 * values, whatever the row length, since a streaming store must be aligned: a block across the end of a row
 * (rows of at least 8 values: one end per block at most) takes its first `left` lanes with the factors of the
 * row it started in and the others with the next row's. `left`: values of the current row from f on. */
#if defined(DATA_DOUBLE)
typedef long8 lane8_t;
#else
typedef int8 lane8_t;
#endif
#define FIRST_LANES(k) (((lane8_t)(0, 1, 2, 3, 4, 5, 6, 7)) < (lane8_t)(k))
#define MIX(next, cur, first) select((acc8_t)(next), (acc8_t)(cur), (first))
#define BLOCKS_BEGIN                                                                        \
    const size_t f1 = min((size_t)(get_global_id(0) + 1) * seg, (size_t)n);                \
    size_t f = (size_t)get_global_id(0) * seg;                                             \
    const size_t row0 = f / inner;                                                         \
    uint left = inner - (uint)(f - row0 * inner), cc = (uint)(row0 % C), cn = cc + 1 == C ? 0 : cc + 1;

/* Fused kernels: one work-item per group of channels whose values fit in cache, statistics and elementwise
 * work in one launch, so x (and dy) cross the memory bus once.
 * Channel-first: channels [g G, g G + G); row o of the group is one contiguous run of G inner values, and both
 * passes walk the group row by row, the per-channel sums in a local-memory table `tab`. The
 * second pass walks the rows backwards: what the first pass read last is still in cache. Per channel the table
 * keeps vector sums (FUSED_TAB values), so a short row costs no horizontal sum.
 * (The channel-last ones are in the next section.) */

/* Short rows (fewer than SUM_BLOCK values): a run is too short to pay for its own compensated addition, so
 * its sums are added plainly to 2 x 8 lanes and 2 scalars at e + PLAIN, and every SUM_BLOCK / inner rows
 * flush_plain() moves them into the compensated sums. */
inline void run_sums_plain(__global const data_t *a, __global const data_t *b, int a_shifted, size_t at,
                           size_t stride, uint ns, uint len, acc_t K, __local acc_t *p)
{
    acc8_t v1 = LV8(p), v2 = LV8(p + 8);
    acc_t t1 = p[16], t2 = p[17];
    sums_into_ns(a + at, b + at, a_shifted, stride, ns, len, K, &v1, &v2, &t1, &t2 ZF_NONE);
    SV8(v1, p);
    SV8(v2, p + 8);
    p[16] = t1;
    p[17] = t2;
}

inline void flush_plain(__local acc_t *e)
{
    sums_t r;
    sums_load(e, &r);
    kadd8(&r.s1, &r.c1, LV8(e + PLAIN));
    kadd8(&r.s2, &r.c2, LV8(e + PLAIN + 8));
    kadd(&r.t1, &r.u1, e[PLAIN + 16]);
    kadd(&r.t2, &r.u2, e[PLAIN + 17]);
    sums_store(e, &r);
    for (uint k = PLAIN; k < PLAIN + 18; ++k)
        e[k] = 0;
}

/* The first pass of a fused kernel: the sums (as cf_sums: u = a - ka, v = b - K, K the channel's e[E_SHIFT]) of
 * channels c0 .. c0 + g - 1 into their table entries, ROW_STREAMS rows of the group at a time (the last
 * outer % ROW_STREAMS one by one), channel by channel. Short rows' plain sums are flushed before they would hold
 * more than SUM_BLOCK values of one row stream (every step when a step of ROW_STREAMS rows is already more).
 * No act' here (ZF_NONE): an act program uses it for the statistics only (it has no fused backward kernels). */
inline void fused_sums(__global const data_t *a, __global const data_t *b, int a_shifted, uint C, uint inner,
                       uint outer, uint c0, uint g, __local acc_t *tab)
{
    const uint rows = inner >= SUM_BLOCK ? 1 : SUM_BLOCK / inner; /* short rows: rows per flush */
    const size_t stride = (size_t)C * inner;
    uint since = 0; /* rows in the plain sums since the last flush */
    for (uint o = 0, ns; o < outer; o += ns) {
        ns = outer - o >= ROW_STREAMS ? ROW_STREAMS : 1;
        for (uint t = 0; t < g; ++t) {
            __local acc_t *e = tab + t * FUSED_TAB;
            const size_t at = ((size_t)o * C + c0 + t) * inner; /* the channel's run in the first of the ns rows */
            if (inner < SUM_BLOCK) {
                run_sums_plain(a, b, a_shifted, at, stride, ns, inner, e[E_SHIFT], e + PLAIN);
            } else {
                sums_t r;
                sums_load(e, &r);
                run_sums(a, b, a_shifted, at, stride, ns, inner, e[E_SHIFT], &r ZF_NONE);
                sums_store(e, &r);
            }
        }
        since += ns;
        if (inner < SUM_BLOCK && (since + ROW_STREAMS > rows || o + ns == outer)) {
            for (uint t = 0; t < g; ++t)
                flush_plain(tab + t * FUSED_TAB);
            since = 0;
        }
    }
}

/* ---- Channel-last (inner == 1): tiles ---------------------------------------------------------------------
 * Work-item (j, k) covers the tile of channels [j W, min(j W + W, C)) over rows [k chunk, min(k chunk + chunk,
 * outer)); each row of a tile is one contiguous run of w values, walked 8 at a time. The tile's per-channel
 * values (shift or mean, two sums and their two compensations; later the factors) live in a local-memory
 * table `tab` of 5 arrays of Wp = W rounded up to a multiple of 8 values (TILE_TAB in opencl_plan.py; work-groups of one work-item: the table is that
 * work-item's scratch). A fused kernel takes every row of its tile. */

/* *s += v (8 channels of a table) with the rounding error kept in *c, and its scalar twin. */
inline void ladd8(__local acc_t *s, __local acc_t *c, acc8_t v)
{
    acc8_t a = LV8(s), k = LV8(c);
    kadd8(&a, &k, v);
    SV8(a, s);
    SV8(k, c);
}

inline void ladd(__local acc_t *s, __local acc_t *c, acc_t v)
{
    acc_t a = *s, k = *c;
    kadd(&a, &k, v);
    *s = a;
    *c = k;
}

/* tile_sums and tile_bwd_sums walking TILE_ROWS rows side by side across the whole tile width, for tiles whose
 * rows are far apart (a group of 7x7 channels: rows C inner values apart): every row is then one sequential
 * stream of loads, where the register slabs walk down a column of rows 128 bytes at a time and leave the
 * prefetcher nothing to follow. Per position of the tile, s1 = sum u and s2 = sum u v, with v = b - k and u = a - k
 * (a_shifted) or u = a: the statistics pass a = b = x and the shift (the same loads twice, which the compiler
 * merges), the backward pass a = dy, b = x and the mean. Each step's TILE_ROWS values of a position are added
 * pairwise and join its sums with compensation. */
#define TILE_ROWS 8
#define ROWS8(p, s, OP) OP(p, 0), OP(p, s), OP(p, 2 * s), OP(p, 3 * s), OP(p, 4 * s), OP(p, 5 * s), OP(p, 6 * s), OP(p, 7 * s)
#define TREE8(f) (((f(0) + f(1)) + (f(2) + f(3))) + ((f(4) + f(5)) + (f(6) + f(7))))
#define U(j) u[j]
#define UV(j) u[j] * v[j]
inline void tile_sums_rows(__global const data_t *a, __global const data_t *b, int a_shifted, uint C, uint c0,
                           uint w, uint r0, uint r1, __local const acc_t *k, __local acc_t *s1, __local acc_t *s2,
                           __local acc_t *q1, __local acc_t *q2)
{
    for (uint t = 0; t < w; ++t)
        s1[t] = s2[t] = q1[t] = q2[t] = 0;
    const size_t S = C;
    uint r = r0;
    for (; r + TILE_ROWS <= r1; r += TILE_ROWS) {
        const size_t at = (size_t)r * C + c0;
        __global const data_t *pa = a + at, *pb = b + at;
        uint t = 0;
        for (; t + 8 <= w; t += 8) {
            const acc8_t k8 = LV8(k + t), ka = a_shifted ? k8 : (acc8_t)0;
#define A8(p, i) LOAD8(p, (i) + t) - ka
#define B8(p, i) LOAD8(p, (i) + t) - k8
            const acc8_t u[8] = {ROWS8(pa, S, A8)}, v[8] = {ROWS8(pb, S, B8)};
            ladd8(s1 + t, q1 + t, TREE8(U));
            ladd8(s2 + t, q2 + t, TREE8(UV));
        }
        for (; t < w; ++t) {
            const acc_t k1 = k[t], ka = a_shifted ? k1 : (acc_t)0;
#define A1(p, i) LOAD(p, (i) + t) - ka
#define B1(p, i) LOAD(p, (i) + t) - k1
            const acc_t u[8] = {ROWS8(pa, S, A1)}, v[8] = {ROWS8(pb, S, B1)};
            ladd(s1 + t, q1 + t, TREE8(U));
            ladd(s2 + t, q2 + t, TREE8(UV));
        }
    }
    for (; r < r1; ++r) { /* the last rows % TILE_ROWS, one by one */
        const size_t at = (size_t)r * C + c0;
        __global const data_t *pa = a + at, *pb = b + at;
        uint t = 0;
        for (; t + 8 <= w; t += 8) {
            const acc8_t k8 = LV8(k + t), ka = a_shifted ? k8 : (acc8_t)0;
            const acc8_t u = A8(pa, 0), v = B8(pb, 0);
            ladd8(s1 + t, q1 + t, u);
            ladd8(s2 + t, q2 + t, u * v);
        }
        for (; t < w; ++t) {
            const acc_t k1 = k[t], ka = a_shifted ? k1 : (acc_t)0;
            const acc_t u = A1(pa, 0), v = B1(pb, 0);
            ladd(s1 + t, q1 + t, u);
            ladd(s2 + t, q2 + t, u * v);
        }
    }
#undef A8
#undef B8
#undef A1
#undef B1
    for (uint t = 0; t < w; ++t) {
        s1[t] = comp(s1[t], q1[t]);
        s2[t] = comp(s2[t], q2[t]);
    }
}
#undef U
#undef UV

/* A tile's channels [c0, c0 + w) and its chunk k of rows [r0, r1). The elementwise passes that follow a pass of
   partial sums take the chunks in reverse (TILE_LAST_FIRST): they begin with the rows the sums read last, those
   most likely still in the cache (with tile_sums' prefetch, 32x64x56x56 float32 NHWC training against both
   without, two runs of 12 interleaved rounds: PoCL 0 and -4 %, Intel -3 and -3 %; little, as this host's shared
   L3 keeps little of one pass for the next). bn_apply_cl serves inference too, with no pass before it: there the
   order makes no difference. */
#define TILE_CHUNK get_global_id(1)
#define TILE_LAST_FIRST (get_global_size(1) - 1 - get_global_id(1))
#define TILE_BEGIN(rows, k)                                                                \
    const uint c0 = get_global_id(0) * W, w = min(W, C - c0), Wp = (W + 7) & ~7u;           \
    const uint r0 = (uint)(k) * chunk, r1 = min(r0 + chunk, (uint)(rows));

/* The tile's two sums (tab at Wp and 2 Wp) into part[(k * C + c) * 2 + {0, 1}], k = the tile's chunk of rows. */
inline void store_partials(__global acc_t *part, uint C, uint c0, uint w, uint W, __local const acc_t *tab)
{
    __global acc_t *q = part + ((size_t)get_global_id(1) * C + c0) * 2;
    for (uint t = 0; t < w; ++t) {
        q[2 * t] = tab[W + t];
        q[2 * t + 1] = tab[2 * W + t];
    }
}

/* ---- Channel-first, short rows, as tiles ------------------------------------------------------------------
 * A group of g channels of short rows (7x7 maps: 49 values) is, row by row, one contiguous run of P = g inner
 * values: the same shape as a channel-last tile of P "positions" over rows C inner values apart. So the tile
 * helpers do the work: per-position sums, TILE_ROWS rows side by side (tile_sums_rows; every position's shift
 * the shift of its channel), added per channel at the end; then the per-position factors (each its channel's)
 * for one flat elementwise pass per row, which can stream its stores. A run of a channel costs no call of its own, so
 * 49-value runs cost what long ones do. One work-item per group; the table holds TILE_TAB arrays of Pp = P
 * rounded up to a multiple of 8 values. */

/* Each position of the group gets its channel's value v(t), t = 0 .. g - 1: tab[t inner + i] = v(t). */
#define SPREAD(tab, g, inner, expr)                                                        \
    for (uint t = 0; t < (g); ++t) {                                                       \
        const acc_t v_ = (expr);                                                           \
        for (uint i = 0; i < (inner); ++i)                                                 \
            (tab)[t * (inner) + i] = v_;                                                   \
    }

/* The sum of channel t's positions in s. */
inline acc_t channel_total(__local const acc_t *s, uint t, uint inner)
{
    acc_t v = 0;
    for (uint i = 0; i < inner; ++i)
        v += s[t * inner + i];
    return v;
}

#define CFT_BEGIN                                                                           \
    __local acc_t *tab = (__local acc_t *)tab8;                                            \
    const uint c0 = get_global_id(0) * G, g = min(G, C - c0), P = g * inner;               \
    const uint Pp = (G * inner + 7) & ~7u, row = C * inner, p0 = c0 * inner;
