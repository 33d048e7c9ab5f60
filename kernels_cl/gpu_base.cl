/* The gpu family's shared pieces (after bn_common.h; before gpu_fwd.cl and gpu_bwd.cl).
 *
 * Work split. Data are [outer, C, inner]; a channel's m = outer inner values are its "positions" p = o inner + i,
 * at ((o C + c) inner + i). A work-group of WG work-items (a power of two) takes a tile of TW channels (TW a
 * power of two: 1 channel-first, up to the tuning's `lanes` channel-last) and one chunk k of its positions,
 * [k L, min(k L + L, m)). Work-item lid is lane tc = lid % TW (channel c = tile TW + tc) and row tr = lid / TW of
 * RG = WG / TW rows; it takes the positions p = k L + tr, + RG, + 2 RG ... So neighbouring work-items read
 * neighbouring addresses in both layouts: channel-first, neighbouring positions of one channel plane (runs of
 * `inner` values; a row end is crossed by counting, never by a division per value); channel-last (inner == 1),
 * neighbouring channels of one row. Lanes of a tile past C load nothing but still reach every barrier.
 *
 * Reductions: each work-item sums its positions on fresh accumulators, G_BLOCK positions at a time, the block
 * totals joined with their rounding errors kept (Neumaier: kadd / comp of bn_common.h), then a tree in local
 * memory adds the RG rows of each lane pairwise (g_tree2), always in the same order: no atomics, so a device
 * gives the same bits on every run. */

#define G_BLOCK 256 /* positions per fresh accumulator of one work-item */
#define G_SHIFT 64  /* the shift is the mean of the channel's first min(m, G_SHIFT) positions */

/* The work-item's place in its tile: lane, row, rows, channel, chunk [p0, p1). */
#define G_TILE                                                                             \
    const uint lid = get_local_id(0), RG = (uint)get_local_size(0) / TW;                   \
    const uint tc = lid & (TW - 1), tr = lid / TW, c = (uint)get_group_id(0) * TW + tc;    \
    const uint p0 = (uint)get_group_id(1) * L, p1 = min(p0 + L, m);                         \
    const int live = c < C;

/* A walk over positions p, p + step, ...: (o, i) kept by counting. */
typedef struct {
    uint p, o, i, so, si;
} gwalk_t;

inline gwalk_t g_walk(uint p, uint step, uint inner)
{
    gwalk_t w;
    w.p = p;
    w.o = p / inner;
    w.i = p - w.o * inner;
    w.so = step / inner;
    w.si = step - w.so * inner;
    return w;
}

inline size_t g_at(const gwalk_t *w, uint C, uint c, uint inner) { return ((size_t)w->o * C + c) * inner + w->i; }

inline void g_next(gwalk_t *w, uint step, uint inner)
{
    w->p += step;
    w->o += w->so;
    w->i += w->si;
    if (w->i >= inner) {
        w->i -= inner;
        ++w->o;
    }
}

/* The totals of v1 and v2 over the RG rows of each lane, returned to every work-item of the lane; red holds
 * 2 WG values. Called by every work-item of the group (it has barriers). */
inline void g_tree2(__local acc_t *red, uint lid, uint tr, uint TW, uint RG, acc_t *v1, acc_t *v2)
{
    const uint wg = TW * RG;
    red[lid] = *v1;
    red[wg + lid] = *v2;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RG >> 1; s > 0; s >>= 1) {
        if (tr < s) {
            red[lid] += red[lid + s * TW];
            red[wg + lid] += red[wg + lid + s * TW];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    *v1 = red[lid & (TW - 1)];
    *v2 = red[wg + (lid & (TW - 1))];
    barrier(CLK_LOCAL_MEM_FENCE); /* red is free again */
}

/* Sums over this work-item's positions [p, p1) step `step` of channel c: s1 = sum u, s2 = sum u v with
 * v = b - K and u = a - K (a_shifted: the statistics, a = b = x) or u = a act'(z), z = v za + zb (backward:
 * a = dy, b = x, K the mean; act' only in an act program). Written to dx as da u where write_dx (backward
 * normalised with the running statistics: dx = gamma invstd dy act'). */
inline void g_sums(__global const data_t *a, __global const data_t *b, __global data_t *dx, int write_dx,
                   acc_t da, int a_shifted, uint C, uint inner, uint c, uint p, uint p1, uint step, acc_t K, acc_t za,
                   acc_t zb, acc_t *s1, acc_t *s2)
{
    acc_t t1 = 0, q1 = 0, t2 = 0, q2 = 0;
    gwalk_t w = g_walk(p, step, inner);
    while (w.p < p1) {
        acc_t b1 = 0, b2 = 0;
        for (uint n = 0; n < G_BLOCK && w.p < p1; ++n, g_next(&w, step, inner)) {
            const size_t at = g_at(&w, C, c, inner);
            const acc_t v = LOAD(b, at) - K;
            const acc_t u = a_shifted ? v : DACT1(LOAD(a, at), v, za, zb);
            b1 += u;
            b2 += u * v;
            if (write_dx)
                STORE(da * u, dx, at);
        }
        kadd(&t1, &q1, b1);
        kadd(&t2, &q2, b2);
    }
    *s1 = comp(t1, q1);
    *s2 = comp(t2, q2);
}

/* The sum of K values of a channel's partial records part[(k C + c) 2 + j], in order, compensated. */
inline acc_t g_merge(__global const acc_t *part, uint C, uint K, uint c, uint j)
{
    acc_t s = 0, q = 0;
    for (uint k = 0; k < K; ++k)
        kadd(&s, &q, part[((size_t)k * C + c) * 2 + j]);
    return comp(s, q);
}
